//! `cargo xtask plot`: the training and validation curves of several runs in one figure.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rnnlm_plot::Chart;
use rnnlm_train::{RunDir, curves};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.csv).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "perplexity")]
    pub title: String,
    /// Logarithmic y axis.
    #[arg(long)]
    pub log: bool,
    /// Loss in nats per token (`ln perplexity`) instead of perplexity.
    #[arg(long)]
    pub nats: bool,
    /// Seconds since the run began on the x axis instead of epochs.
    #[arg(long)]
    pub time: bool,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let mut series = Vec::new();
    let y = |ppl: f64| if args.nats { ppl.ln() } else { ppl };
    for path in &args.runs {
        let metrics = RunDir::existing(path)?.read_metrics()?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        series.extend(curves(&metrics, &format!("{name} "), &y, args.time));
    }
    let chart = Chart {
        title: args.title.clone(),
        x_label: if args.time { "seconds" } else { "epoch" }.into(),
        y_label: if args.nats {
            "loss (nats per token)"
        } else {
            "perplexity"
        }
        .into(),
        log_y: args.log,
        series,
        ..Default::default()
    };
    rnnlm_data::atomic_write(&args.out, chart.to_svg().as_bytes())?;
    println!("wrote {}", args.out.display());
    Ok(())
}
