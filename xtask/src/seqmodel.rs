//! `cargo xtask seqmodel`: book section 8.1, with its two figures.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rnnlm_plot::{Chart, Series};
use rnnlm_train::{SineConfig, run_sine};

use crate::backend::DeviceArgs;

#[derive(Debug, Args)]
pub struct SeqmodelArgs {
    /// Config (TOML); the book's settings when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the figures go.
    #[arg(long, default_value = "runs/sine")]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn series(label: impl Into<String>, first_t: usize, values: &[f64]) -> Series {
    Series {
        label: label.into(),
        points: values
            .iter()
            .enumerate()
            .map(|(i, v)| ((first_t + i) as f64, *v))
            .collect(),
    }
}

pub fn run(args: &SeqmodelArgs) -> Result<()> {
    let config: SineConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => SineConfig::default(),
    };
    let (device, _) = args.device.device()?;
    let report = run_sine(&config, &device)?;
    for (epoch, loss) in report.epoch_losses.iter().enumerate() {
        println!("epoch {}, loss: {loss:.6}", epoch + 1);
    }
    for (k, _, mse) in &report.ksteps {
        println!("{k}-step-ahead prediction: mean squared error {mse:.4}");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let tau = config.tau;
    let predictions = Chart {
        title: "data, 1-step and multistep predictions".into(),
        x_label: "time".into(),
        y_label: "x".into(),
        series: vec![
            series("data", 1, &report.x),
            series("1-step preds", tau + 1, &report.onestep),
            series(
                "multistep preds",
                config.n_train + tau + 1,
                &report.multistep[config.n_train + tau..],
            ),
        ],
        ..Default::default()
    };
    let kstep = Chart {
        title: "k-step-ahead predictions".into(),
        x_label: "time".into(),
        y_label: "x".into(),
        series: report
            .ksteps
            .iter()
            .map(|(k, preds, _)| series(format!("{k}-step preds"), tau + k, preds))
            .collect(),
        ..Default::default()
    };
    let (a, b) = (args.out.join("predictions.svg"), args.out.join("kstep.svg"));
    rnnlm_data::atomic_write(&a, predictions.to_svg().as_bytes())?;
    rnnlm_data::atomic_write(&b, kstep.to_svg().as_bytes())?;
    println!("wrote {} and {}", a.display(), b.display());
    Ok(())
}
