//! The run directory: resolved config, vocab, model config, metrics, plot, log and
//! checkpoints. A checkpoint is a directory written in full, then published by
//! atomically renaming the `LATEST` pointer onto it, so a crash, Ctrl-C or `kill -9`
//! at any moment leaves the previous checkpoint loadable.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Device};
use rnnlm_data::{Vocab, atomic_write};
use rnnlm_model::{Model, ModelConfig};

use crate::TrainConfig;
use crate::progress::{Best, EpochMetrics, Progress, RunSummary, curves};

pub struct Checkpoint {
    pub model: Model,
    pub optimizer: ModuleOptimizer,
    pub progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// An existing run directory is an error.
    Refuse,
    /// Delete it and start again.
    Replace,
    /// Continue from its last checkpoint.
    Resume,
}

pub struct RunDir {
    pub path: PathBuf,
}

const LATEST: &str = "LATEST";

impl RunDir {
    /// Opens (or creates) a run directory according to `existing`.
    pub fn open(path: &Path, existing: Existing) -> Result<Self> {
        let run = Self {
            path: path.to_path_buf(),
        };
        let exists = path.exists()
            && fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true);
        match (exists, existing) {
            (true, Existing::Refuse) => bail!(
                "run directory {} already exists; pass --resume to continue it or --force to replace it",
                path.display()
            ),
            (true, Existing::Replace) => fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?,
            (false, Existing::Resume) => bail!(
                "cannot resume: run directory {} does not exist",
                path.display()
            ),
            _ => {}
        }
        fs::create_dir_all(path.join("checkpoints"))
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(run)
    }

    /// An existing run directory, for commands that only read it (generate, eval,
    /// export, bptt-report): nothing is created or written.
    pub fn existing(path: &Path) -> Result<Self> {
        let config = path.join("config.toml");
        if !config.is_file() {
            bail!(
                "{} is not a run directory: it has no config.toml (runs are made by `cargo xtask train` or `import`)",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes what a generator needs besides the weights: config, vocab, model config.
    pub fn write_header(
        &self,
        config: &TrainConfig,
        vocab: &Vocab,
        model: &ModelConfig,
    ) -> Result<()> {
        atomic_write(&self.file("config.toml"), config.to_toml().as_bytes())?;
        atomic_write(
            &self.file("vocab.json"),
            serde_json::to_string(vocab)?.as_bytes(),
        )?;
        atomic_write(
            &self.file("model.json"),
            serde_json::to_string_pretty(model)?.as_bytes(),
        )?;
        Ok(())
    }

    pub fn read_config(&self) -> Result<TrainConfig> {
        TrainConfig::load(&self.file("config.toml"), &[])
    }

    pub fn read_vocab(&self) -> Result<Vocab> {
        Ok(Vocab::load(&self.file("vocab.json"))?)
    }

    pub fn read_model_config(&self) -> Result<ModelConfig> {
        let path = self.file("model.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// The run's config, vocab, model config and the model of its last checkpoint,
    /// checked against each other.
    pub fn load_trained(
        &self,
        device: &Device,
    ) -> Result<(TrainConfig, Vocab, ModelConfig, Model)> {
        let config = self.read_config()?;
        let vocab = self.read_vocab()?;
        let model_config = self.read_model_config()?;
        if model_config.vocab_size != vocab.len() {
            bail!(
                "{} says vocab_size {}, but {} holds {} tokens",
                self.file("model.json").display(),
                model_config.vocab_size,
                self.file("vocab.json").display(),
                vocab.len()
            );
        }
        let model = Model::load(&model_config, &self.latest_checkpoint()?, device)?;
        Ok((config, vocab, model_config, model))
    }

    /// Rewrites `metrics.csv` and `perplexity.svg` from all rows so far.
    pub fn write_metrics(&self, metrics: &[EpochMetrics], title: &str) -> Result<()> {
        let path = self.file("metrics.csv");
        let mut csv = csv::Writer::from_writer(Vec::new());
        for m in metrics {
            csv.serialize(m)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let bytes = csv
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        atomic_write(&path, &bytes)?;
        let series = curves(metrics, "", &|ppl| ppl, false);
        let chart = rnnlm_plot::Chart {
            title: title.to_string(),
            x_label: "epoch".into(),
            y_label: "perplexity".into(),
            series,
            ..Default::default()
        };
        atomic_write(&self.file("perplexity.svg"), chart.to_svg().as_bytes())?;
        Ok(())
    }

    /// Reads `metrics.csv` back (the columns found by their names in the header).
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>> {
        let path = self.file("metrics.csv");
        let mut reader = csv::Reader::from_path(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        reader
            .deserialize()
            .map(|row| row.with_context(|| format!("invalid {}", path.display())))
            .collect()
    }

    /// Writes the model with the lowest validation perplexity into `best/`.
    pub fn save_best(&self, model: &Model, best: &Best) -> Result<()> {
        let dir = self.file("best");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        model.save(&dir)?;
        atomic_write(
            &dir.join("best.json"),
            serde_json::to_string(best)?.as_bytes(),
        )?;
        Ok(())
    }

    /// The `best/` model when the run has one, else the last checkpoint's.
    pub fn best_or_latest(&self) -> Result<PathBuf> {
        let best = self.file("best");
        if best.join("model.bpk").exists() {
            Ok(best)
        } else {
            self.latest_checkpoint()
        }
    }

    pub fn write_summary(&self, summary: &RunSummary) -> Result<()> {
        atomic_write(
            &self.file("summary.json"),
            serde_json::to_string_pretty(summary)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Appends a line to `log.txt`.
    pub fn log(&self, line: &str) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("log.txt"))?;
        writeln!(f, "{line}")?;
        Ok(())
    }

    /// Writes `checkpoints/epoch-N/` in full, then points `LATEST` at it and removes older ones.
    pub fn save_checkpoint(
        &self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
    ) -> Result<()> {
        let dirs = self.file("checkpoints");
        let name = format!("epoch-{:06}", progress.epoch);
        let dir = dirs.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        model.save(&dir)?;
        let optim = optimizer
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialize the optimizer: {e}"))?;
        atomic_write(&dir.join("optim.bpk"), &optim)?;
        atomic_write(
            &dir.join("progress.json"),
            serde_json::to_string(progress)?.as_bytes(),
        )?;
        sync_dir(&dir)?;
        atomic_write(&dirs.join(LATEST), name.as_bytes())?;
        sync_dir(&dirs)?;
        for entry in fs::read_dir(&dirs)? {
            let entry = entry?;
            let old = entry.file_name();
            if entry.path().is_dir() && old != name.as_str() {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// The directory `LATEST` names.
    pub fn latest_checkpoint(&self) -> Result<PathBuf> {
        let pointer = self.file("checkpoints").join(LATEST);
        let name = fs::read_to_string(&pointer).with_context(|| {
            format!(
                "no checkpoint in {}: cannot read {}",
                self.path.display(),
                pointer.display()
            )
        })?;
        Ok(self.file("checkpoints").join(name.trim()))
    }

    pub fn load_checkpoint(
        &self,
        model_config: &ModelConfig,
        optimizer: ModuleOptimizer,
        device: &Device,
    ) -> Result<Checkpoint> {
        let dir = self.latest_checkpoint()?;
        let model = Model::load(model_config, &dir, device)?;
        let optim_path = dir.join("optim.bpk");
        let bytes = fs::read(&optim_path)
            .with_context(|| format!("cannot read {}", optim_path.display()))?;
        let optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| anyhow::anyhow!("invalid {}: {e}", optim_path.display()))?;
        let progress_path = dir.join("progress.json");
        let text = fs::read_to_string(&progress_path)
            .with_context(|| format!("cannot read {}", progress_path.display()))?;
        let progress = serde_json::from_str(&text)
            .with_context(|| format!("invalid {}", progress_path.display()))?;
        Ok(Checkpoint {
            model,
            optimizer,
            progress,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}
