//! The run directory: resolved config, vocab, model config, metrics, plot, log and
//! checkpoints. A checkpoint is a directory written in full, then published by
//! atomically renaming the `LATEST` pointer onto it, so a crash, Ctrl-C or `kill -9`
//! at any moment leaves the previous checkpoint loadable.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Device, Tensor};
use rnnlm_data::{Vocab, atomic_write};
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Engine, Model, ModelConfig, State};
use serde::{Deserialize, Serialize};

use crate::optim::RunOptimizer;
use crate::progress::{Best, EpochMetrics, Progress, RunSummary, curves};
use crate::{TrainConfig, TrainSection};

pub struct Checkpoint {
    pub model: Model,
    pub optimizer: RunOptimizer,
    pub progress: Progress,
    /// The state carried into the next minibatch, for a checkpoint written within an epoch.
    pub state: Option<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// An existing run directory with a checkpoint is an error.
    Refuse,
    /// Replace an existing run directory (never anything else).
    Replace,
    /// Continue from its last checkpoint.
    Resume,
}

/// What `open` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new (or empty) directory.
    Created,
    /// A run directory this program made, emptied: with `--force`, or because it had no
    /// checkpoint to lose.
    Replaced,
    /// A run directory with a checkpoint to continue from.
    Resumed,
    /// `Resume` asked, but the run never reached a checkpoint: it starts from the beginning.
    Restarted,
}

/// `run.json`: how a run computes beyond its config. A resumed run must match it (a
/// different float type or thread count changes the numbers); generate and eval use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The backend's name (`flex`, `ndarray`, `wgpu`, ...).
    pub backend: String,
    /// `f32` or `f64`.
    pub dtype: String,
    /// CPU threads of the backend's pool.
    pub threads: usize,
}

/// A run directory. Opened for training it holds an exclusive lock on `run.lock` (released
/// when dropped, or by the OS when the process dies), so two runs never write one directory.
pub struct RunDir {
    pub path: PathBuf,
    _lock: Option<fs::File>,
}

const LATEST: &str = "LATEST";
const LOCK: &str = "run.lock";
/// A checkpoint written within an epoch keeps the carried state here.
const STATE: &str = "state.safetensors";

/// Everything this program writes in a run directory. `--force` replaces a directory
/// only if it holds a config and checkpoints and nothing outside this list.
const ENTRIES: [&str; 12] = [
    "config.toml",
    "vocab.json",
    "model.json",
    "run.json",
    "metrics.csv",
    "perplexity.svg",
    "log.txt",
    "summary.json",
    "checkpoints",
    "best",
    "bptt.svg",
    LOCK,
];

/// An io error with the path it concerns.
fn at(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> anyhow::Error {
    let message = format!("cannot {what} {}", path.display());
    move |e| anyhow::Error::new(e).context(message)
}

impl RunDir {
    /// Opens a run directory for training as `existing` asks, locked. Nothing but a run
    /// directory this program made (config, checkpoints, no foreign files) is ever
    /// deleted, and never the current directory or one above it.
    pub fn open(path: &Path, existing: Existing) -> Result<(Self, Opened)> {
        if path.exists() && !path.is_dir() {
            bail!("{} is a file, not a run directory", path.display());
        }
        let entries: Vec<String> = match fs::read_dir(path) {
            Ok(dir) => dir
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<std::io::Result<_>>()
                .map_err(at(path, "read"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(at(path, "read")(e)),
        };
        let is_run = path.join("config.toml").is_file() && path.join("checkpoints").is_dir();
        let has_checkpoint = path.join("checkpoints").join(LATEST).is_file();
        // What `open` makes before a run writes its config: a run killed right then left
        // nothing to resume, and its directory is as good as empty.
        let nothing_yet = |e: &String| {
            e == LOCK
                || (e == "checkpoints"
                    && fs::read_dir(path.join(e)).is_ok_and(|mut d| d.next().is_none()))
        };
        let opened = match (entries.iter().all(nothing_yet), existing) {
            (true, Existing::Resume) => bail!(
                "cannot resume: {} holds no run (start one with --config)",
                path.display()
            ),
            (true, _) => Opened::Created,
            (false, _) if !is_run => bail!(
                "{} is not empty and is not a run directory (no config.toml and checkpoints/); choose another --out (--force only replaces run directories)",
                path.display()
            ),
            (false, Existing::Resume) if has_checkpoint => Opened::Resumed,
            (false, Existing::Resume) => Opened::Restarted,
            (false, Existing::Refuse) if has_checkpoint => bail!(
                "run directory {} already exists; pass --resume to continue it or --force to replace it",
                path.display()
            ),
            (false, _) => Opened::Replaced,
        };
        fs::create_dir_all(path).map_err(at(path, "create"))?;
        let run = Self {
            path: path.to_path_buf(),
            _lock: Some(lock(path)?),
        };
        if opened == Opened::Replaced {
            run.empty(&entries)?;
        }
        let checkpoints = run.file("checkpoints");
        fs::create_dir_all(&checkpoints).map_err(at(&checkpoints, "create"))?;
        Ok((run, opened))
    }

    /// Deletes what this program wrote, after checking that nothing else is there and
    /// that the directory is not the current one or above it.
    fn empty(&self, entries: &[String]) -> Result<()> {
        let foreign: Vec<&String> = entries
            .iter()
            .filter(|e| !ENTRIES.contains(&e.as_str()))
            .collect();
        if !foreign.is_empty() {
            bail!(
                "will not replace {}: it holds files that rnnlm does not write ({}); move them or choose another --out",
                self.path.display(),
                foreign
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let here = std::env::current_dir()
            .and_then(|d| d.canonicalize())
            .map_err(|e| anyhow::anyhow!("cannot resolve the current directory: {e}"))?;
        let dir = self
            .path
            .canonicalize()
            .map_err(at(&self.path, "resolve"))?;
        if here.starts_with(&dir) {
            bail!(
                "will not replace {}: it is the current directory or one above it",
                self.path.display()
            );
        }
        for entry in entries.iter().filter(|e| e.as_str() != LOCK) {
            let path = self.file(entry);
            if path.is_dir() {
                fs::remove_dir_all(&path).map_err(at(&path, "remove"))?;
            } else {
                fs::remove_file(&path).map_err(at(&path, "remove"))?;
            }
        }
        Ok(())
    }

    pub fn write_info(&self, info: &RunInfo) -> Result<()> {
        atomic_write(
            &self.file("run.json"),
            serde_json::to_string_pretty(info)?.as_bytes(),
        )?;
        Ok(())
    }

    /// `run.json`; `None` for runs made before it was recorded.
    pub fn read_info(&self) -> Result<Option<RunInfo>> {
        let path = self.file("run.json");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("invalid {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&path, "read")(e)),
        }
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
            _lock: None,
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
        self.write_config(config)?;
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

    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        atomic_write(&self.file("config.toml"), config.to_toml().as_bytes())?;
        Ok(())
    }

    /// Before a resume: the corpus still gives the run's vocabulary, and `model.json` is
    /// the model the config describes (not edited since).
    pub fn check_resumable(&self, config: &TrainConfig, vocab: &Vocab) -> Result<()> {
        let saved = self.read_vocab()?;
        if saved != *vocab {
            bail!(
                "the corpus now gives a different vocabulary ({} tokens) from the run's {} ({} tokens); resume with the same data settings",
                vocab.len(),
                self.file("vocab.json").display(),
                saved.len()
            );
        }
        if self.read_model_config()? != config.model_config(vocab.len()) {
            bail!(
                "{} does not match the [model] section of {} (was it edited?); the checkpoint was trained as the config says",
                self.file("model.json").display(),
                self.file("config.toml").display()
            );
        }
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
        fs::create_dir_all(&dir).map_err(at(&dir, "create"))?;
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
        let path = self.file("log.txt");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(at(&path, "write"))
    }

    /// Writes `checkpoints/epoch-N/` in full, then points `LATEST` at it and removes older ones.
    pub fn save_checkpoint(
        &self,
        model: &Model,
        optimizer: &RunOptimizer,
        progress: &Progress,
        state: Option<&State>,
    ) -> Result<()> {
        let dirs = self.file("checkpoints");
        let name = match progress.interrupted {
            Some(i) => format!("epoch-{:06}-{:06}", progress.epoch, i.train.minibatches),
            None => format!("epoch-{:06}", progress.epoch),
        };
        let dir = dirs.join(&name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(at(&dir, "remove"))?;
        }
        let write = || -> Result<()> {
            fs::create_dir_all(&dir).map_err(at(&dir, "create"))?;
            model.save(&dir)?;
            optimizer.save(&dir)?;
            atomic_write(
                &dir.join("progress.json"),
                serde_json::to_string(progress)?.as_bytes(),
            )?;
            if let Some(state) = state {
                let mut tensors = NamedTensors::default();
                tensors.insert("h", state.h.to_data());
                if let Some(c) = &state.c {
                    tensors.insert("c", c.to_data());
                }
                tensors.write(&dir.join(STATE))?;
            }
            sync_dir(&dir)
        };
        if let Err(e) = write() {
            // Not published: LATEST still names the last whole checkpoint. Free the space.
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        atomic_write(&dirs.join(LATEST), name.as_bytes())?;
        sync_dir(&dirs)?;
        for entry in fs::read_dir(&dirs).map_err(at(&dirs, "read"))? {
            let old = entry.map_err(at(&dirs, "read"))?.path();
            if old.is_dir() && old.file_name() != Some(name.as_ref()) {
                fs::remove_dir_all(&old).map_err(at(&old, "remove"))?;
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
        t: &TrainSection,
        engine: Engine,
        device: &Device,
    ) -> Result<Checkpoint> {
        let dir = self.latest_checkpoint()?;
        let model = Model::load(model_config, &dir, device)?;
        let optimizer = RunOptimizer::load(t, engine, &dir)?;
        let progress_path = dir.join("progress.json");
        let text = fs::read_to_string(&progress_path)
            .with_context(|| format!("cannot read {}", progress_path.display()))?;
        let progress = serde_json::from_str(&text)
            .with_context(|| format!("invalid {}", progress_path.display()))?;
        let state_path = dir.join(STATE);
        let state = if state_path.exists() {
            let tensors = NamedTensors::read(&state_path)?;
            let dtype = DType::from(device.settings().float_dtype);
            let part = |name: &str| -> Result<Tensor<3>> {
                let shape = tensors.shape(name)?;
                let data = tensors.get(name, &shape)?.convert_dtype(dtype);
                Ok(Tensor::from_data(data, device))
            };
            let c = match tensors.tensors.contains_key("c") {
                true => Some(part("c")?),
                false => None,
            };
            Some(State { h: part("h")?, c })
        } else {
            None
        };
        Ok(Checkpoint {
            model,
            optimizer,
            progress,
            state,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(at(dir, "sync"))
}

/// Takes the run's lock, or says that another process holds it.
fn lock(dir: &Path) -> Result<fs::File> {
    let path = dir.join(LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(at(&path, "create"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "{} is in use by another rnnlm process (it holds {}); wait for it to end",
            dir.display(),
            path.display()
        ),
        Err(fs::TryLockError::Error(e)) => Err(at(&path, "lock")(e)),
    }
}
