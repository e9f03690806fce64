//! `cargo xtask bptt-report`: the gradient reaching the state at each step of one
//! minibatch, for a trained model, untrained ones, tanh and relu (book 8.7).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rnnlm_data::epoch_batches;
use rnnlm_model::{CellKind, ModelConfig, ModelKind, grad_norms_through_time};
use rnnlm_plot::{Chart, Series};
use rnnlm_train::RunDir;

use crate::backend::DeviceArgs;

#[derive(Debug, Args)]
pub struct BpttArgs {
    /// Run directory written by `cargo xtask train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The figure (default: bptt.svg in the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: &BpttArgs) -> Result<()> {
    let run = RunDir::existing(&args.checkpoint)?;
    let device = crate::train::run_device(&run, &args.device)?;
    let (config, _, model_config, trained) = run.load_trained(&device)?;
    if model_config.num_layers != 1 || model_config.bidirectional {
        bail!(
            "bptt-report measures one-layer, one-direction models; {} has {:?}",
            args.checkpoint.display(),
            model_config
        );
    }
    let corpus = config.data.load_corpus()?;
    let t = &config.train;
    let mut rng = StdRng::seed_from_u64(t.seed);
    let batch = epoch_batches(
        &corpus.indices,
        t.batch_size,
        t.num_steps,
        t.sampler,
        &mut rng,
    )?
    .get(0);
    let (x, y) = batch.to_tensors(&device);

    let concise = |cell| {
        ModelConfig::new(
            ModelKind::Concise,
            model_config.vocab_size,
            model_config.num_hiddens,
        )
        .with_cell(cell)
    };
    let models = [
        ("trained".to_string(), trained),
        (
            format!("untrained {:?}", model_config.kind).to_lowercase(),
            model_config.init(t.seed, &device)?,
        ),
        (
            "untrained concise tanh".into(),
            concise(CellKind::RnnTanh).init(t.seed, &device)?,
        ),
        (
            "untrained concise relu".into(),
            concise(CellKind::RnnRelu).init(t.seed, &device)?,
        ),
    ];
    let mut series = Vec::new();
    println!("||dL/dH_t|| entering step t of the first minibatch (t = 0 is the initial state):");
    for (name, model) in &models {
        let norms = grad_norms_through_time(
            model,
            x.clone(),
            y.clone(),
            model.begin_state(t.batch_size, &device),
        );
        let show: Vec<String> = norms.iter().map(|n| format!("{n:.2e}")).collect();
        println!("  {name}: {}", show.join(" "));
        series.push(Series {
            label: name.clone(),
            points: norms
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64, *n))
                .collect(),
        });
    }
    let chart = Chart {
        title: "gradient through time".into(),
        x_label: "time step t".into(),
        y_label: "||dL/dH_t||".into(),
        log_y: true,
        series,
        ..Default::default()
    };
    let out = args.out.clone().unwrap_or_else(|| run.file("bptt.svg"));
    rnnlm_data::atomic_write(&out, chart.to_svg().as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}
