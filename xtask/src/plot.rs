//! `cargo xtask plot`: the perplexity curves of several runs in one figure.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rnnlm_plot::{Chart, Series};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.csv).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "perplexity")]
    pub title: String,
    /// Logarithmic perplexity axis.
    #[arg(long)]
    pub log: bool,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let mut series = Vec::new();
    for run in &args.runs {
        let path = run.join("metrics.csv");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let points = text
            .lines()
            .skip(1)
            .map(|line| {
                let mut cols = line.split(',');
                let epoch: f64 = cols.next().unwrap_or("").parse()?;
                let ppl: f64 = cols.next().unwrap_or("").parse()?;
                Ok((epoch, ppl))
            })
            .collect::<Result<Vec<_>, std::num::ParseFloatError>>()
            .with_context(|| format!("{}: expected epoch,perplexity,... rows", path.display()))?;
        let label = run.file_name().map_or_else(
            || run.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        series.push(Series { label, points });
    }
    let chart = Chart {
        title: args.title.clone(),
        x_label: "epoch".into(),
        y_label: "perplexity".into(),
        log_y: args.log,
        series,
        ..Default::default()
    };
    chart.save(&args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
