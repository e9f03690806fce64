//! `cargo xtask plot`: the training and validation curves of several runs in one figure.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rnnlm_plot::{Chart, Series};
use rnnlm_train::RunDir;

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
        let metrics = RunDir { path: path.clone() }.read_metrics()?;
        // Rows within an epoch sit at their fraction of it.
        let per_epoch = metrics
            .iter()
            .filter(|m| m.epoch == 1)
            .map(|m| m.step)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let x = |m: &rnnlm_train::EpochMetrics| {
            if args.time {
                m.seconds
            } else {
                m.step as f64 / per_epoch
            }
        };
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        series.push(Series {
            label: label.clone(),
            points: metrics.iter().map(|m| (x(m), y(m.perplexity))).collect(),
        });
        let valid: Vec<(f64, f64)> = metrics
            .iter()
            .filter_map(|m| Some((x(m), y(m.valid_perplexity?))))
            .collect();
        if !valid.is_empty() {
            series.push(Series {
                label: format!("{label} (valid)"),
                points: valid,
            });
        }
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
    chart.save(&args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
