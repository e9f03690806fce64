//! `cargo xtask runs [DIR]`: the run directories under DIR as a table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rnnlm_train::{RunDir, RunSummary};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The directory holding run directories.
    #[arg(default_value = "runs")]
    pub dir: PathBuf,
}

pub fn run(args: &RunsArgs) -> Result<()> {
    let entries = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot list {}", args.dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    paths.sort();
    println!("| run | model | data | epochs | best valid ppl (epoch) | test ppl | tokens/s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for path in paths {
        let run = RunDir::existing(&path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let row = |cells: &[String]| println!("| {name} | {} |", cells.join(" | "));
        let config = match run.read_config() {
            Ok(c) => c,
            Err(e) => {
                row(&[format!("unreadable config: {e:#}")]);
                continue;
            }
        };
        let data = config
            .data
            .train
            .as_ref()
            .map_or(config.data.dataset.clone(), |p| p.display().to_string());
        let metrics = run.read_metrics().unwrap_or_default();
        let epochs = metrics.last().map_or(0, |m| m.epoch);
        let summary: Option<RunSummary> = std::fs::read_to_string(run.file("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let best = metrics
            .iter()
            .filter_map(|m| Some((m.valid_perplexity?, m.epoch)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        let mut speeds: Vec<f64> = metrics.iter().map(|m| m.tokens_per_sec).collect();
        speeds.sort_by(f64::total_cmp);
        row(&[
            config.model.kind_name(),
            format!("{data} ({:?})", config.data.token).to_lowercase(),
            format!(
                "{epochs} / {}{}",
                config.train.num_epochs,
                if summary.is_some() {
                    ""
                } else {
                    " (running or stopped)"
                }
            ),
            best.map_or("-".into(), |(v, e)| format!("{v:.2} ({e})")),
            fmt(summary.and_then(|s| s.test_perplexity)),
            speeds
                .get(speeds.len() / 2)
                .map_or("-".into(), |v| format!("{:.1}k", v / 1000.0)),
        ]);
    }
    Ok(())
}
