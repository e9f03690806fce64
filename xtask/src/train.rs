//! `cargo xtask train` and `cargo xtask generate`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use rnnlm_model::{Decoding, predict_ch8};
use rnnlm_train::{Existing, Output, RunDir, Session, TrainConfig, check_corpus};

use crate::backend::DeviceArgs;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML); not needed with --resume DIR.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory (default runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out (or DIR) from its last checkpoint.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    pub resume: Option<Option<PathBuf>>,
    /// Replace an existing run directory.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Override train.num_epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override train.lr.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Override train.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override any key: --set model.num_hiddens=256 (repeatable, dotted names).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Override data.data_dir (a mirror directory of dataset files).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Train on your own UTF-8 text file (sets data.train).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Only print predictions and the summary.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl TrainArgs {
    fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        if let Some(e) = self.epochs {
            o.push(format!("train.num_epochs={e}"));
        }
        if let Some(lr) = self.lr {
            o.push(format!("train.lr={lr}"));
        }
        if let Some(s) = self.seed {
            o.push(format!("train.seed={s}"));
        }
        if let Some(d) = &self.data_dir {
            o.push(format!("data.data_dir={}", toml_string(d)));
        }
        if let Some(c) = &self.corpus {
            o.push(format!("data.train={}", toml_string(c)));
        }
        o
    }

    /// The run directory and its config: from --config, or from the run itself on resume.
    fn resolve(&self) -> Result<(PathBuf, TrainConfig, Existing)> {
        let explicit = self.resume.clone().flatten().or_else(|| self.out.clone());
        if self.resume.is_some() {
            let dir = match (&explicit, &self.config) {
                (Some(dir), _) => dir.clone(),
                (None, Some(config)) => default_run_dir(config),
                (None, None) => bail!("--resume needs a run directory: --resume runs/NAME"),
            };
            let run_config = dir.join("config.toml");
            if !run_config.exists() {
                bail!(
                    "cannot resume {}: it has no config.toml (was it made by `cargo xtask train`?)",
                    dir.display()
                );
            }
            let text = std::fs::read_to_string(&run_config)?;
            let config = TrainConfig::parse(&text, &self.overrides())
                .with_context(|| format!("invalid config {}", run_config.display()))?;
            return Ok((dir, config, Existing::Resume));
        }
        let Some(path) = &self.config else {
            bail!("give --config configs/NAME.toml (or --resume runs/NAME)");
        };
        let config = TrainConfig::load(path, &self.overrides())?;
        let dir = explicit.unwrap_or_else(|| default_run_dir(path));
        let existing = if self.force {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        Ok((dir, config, existing))
    }
}

fn toml_string(path: &Path) -> String {
    toml_escape(&path.display().to_string())
}

fn toml_escape(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn default_run_dir(config: &Path) -> PathBuf {
    let name = config
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(name)
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (dir, config, existing) = args.resolve()?;
    let (device, device_name) = args.device.device()?;
    let engine = config.engine(args.device.backend.computes_on_host());
    let device_name = format!("{device_name}, {engine:?} engine").to_lowercase();
    let corpus = config.data.load_corpus()?;
    check_corpus(&config, &corpus)?;
    let run = RunDir::open(&dir, existing)?;
    if existing == Existing::Resume {
        let saved = run.read_vocab()?;
        if saved != corpus.vocab {
            bail!(
                "the corpus now gives a different vocabulary ({} tokens) from the run's {} ({} tokens); resume with the same data settings",
                corpus.vocab.len(),
                run.file("vocab.json").display(),
                saved.len()
            );
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // a second Ctrl-C: checkpoints are written atomically, so leave now
        }
        eprintln!("\nstopping after this minibatch (Ctrl-C again to quit at once)");
    })?;
    println!(
        "training {} on {} ({} tokens, vocab {}) -> {}",
        config.model.kind_name(),
        device_name,
        corpus.len(),
        corpus.vocab.len(),
        dir.display()
    );
    let summary = Session {
        config: &config,
        corpus: &corpus,
        device: &device,
        engine,
        device_name: &device_name,
        run: &run,
        resume: existing == Existing::Resume,
        output: if args.quiet {
            Output::Quiet
        } else {
            Output::Auto
        },
        stop: &stop,
    }
    .train()?;
    if summary.interrupted {
        std::process::exit(130);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Run directory written by `cargo xtask train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to warm up on (characters, or words for a word-level run).
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value_t = 50)]
    pub num_preds: usize,
    /// Sample from softmax(logits / T) instead of the book's greedy argmax.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample only among the K most likely tokens (implies sampling).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let run = RunDir::open(&args.checkpoint, Existing::Resume)
        .with_context(|| format!("cannot open checkpoint {}", args.checkpoint.display()))?;
    let (device, _) = args.device.device()?;
    let (config, vocab, _, model) = run.load_trained(&device)?;
    let decoding = match (args.temperature, args.top_k) {
        (None, None) => Decoding::Greedy,
        (t, k) => Decoding::sample(t.unwrap_or(1.0), k, args.seed)?,
    };
    let p = predict_ch8(
        &args.prefix,
        args.num_preds,
        &model,
        &vocab,
        config.data.token,
        &decoding,
        &device,
    )?;
    if !p.unknown.is_empty() {
        eprintln!(
            "warning: not in the vocabulary, read as <unk>: {:?}",
            p.unknown
        );
    }
    println!("{}", p.text);
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory written by `cargo xtask train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// `train`, `valid`, `test`, or a UTF-8 file (read with the run's data settings)
    /// [default: test, else valid, else train].
    #[arg(long)]
    pub split: Option<String>,
    /// Which weights: `best` (lowest validation perplexity; the default when the run has
    /// them) or `latest` (the last checkpoint).
    #[arg(long)]
    pub weights: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Perplexity of a run's model on one of its splits or another text, scored as the run
/// scores its validation and test splits (`train.eval_batch_size` rows, `num_steps` chunks).
pub fn eval(args: &EvalArgs) -> Result<()> {
    let run = RunDir::open(&args.checkpoint, Existing::Resume)?;
    let (device, _) = args.device.device()?;
    let (mut config, vocab, model_config, _) = run.load_trained(&device)?;
    let weights = match args.weights.as_deref() {
        None => run.best_or_latest()?,
        Some("best") => run.file("best"),
        Some("latest") => run.latest_checkpoint()?,
        Some(other) => bail!("--weights {other}: expected `best` or `latest`"),
    };
    let model = rnnlm_model::Model::load(&model_config, &weights, &device)?;
    let split = match &args.split {
        Some(s) => s.clone(),
        None => {
            let c = config.data.load_corpus()?;
            let default = [("test", &c.test), ("valid", &c.valid)]
                .into_iter()
                .find(|(_, s)| !s.is_empty());
            default.map_or("train", |(name, _)| name).to_string()
        }
    };
    let tokens = match split.as_str() {
        "train" | "valid" | "test" => {
            let c = config.data.load_corpus()?;
            if c.vocab != vocab {
                bail!(
                    "the run's data settings now give a different vocabulary from {}",
                    run.file("vocab.json").display()
                );
            }
            match split.as_str() {
                "train" => c.indices,
                "valid" => c.valid,
                _ => c.test,
            }
        }
        file => {
            // The whole file, mapped through the run's vocab (unseen tokens are <unk>).
            let d = &mut config.data;
            (d.train, d.valid, d.test) = (Some(PathBuf::from(file)), None, None);
            (d.max_tokens, d.valid_fraction, d.test_fraction) = (0, 0.0, 0.0);
            let c = d.load_corpus()?;
            c.indices
                .iter()
                .map(|&i| vocab.index(c.vocab.to_token(i)))
                .collect()
        }
    };
    if tokens.len() < 2 {
        bail!(
            "the {split} text has {} tokens; perplexity needs at least two",
            tokens.len()
        );
    }
    let rows = config.train.eval_batch_size.min(tokens.len() / 2).max(1);
    let ppl = rnnlm_model::perplexity_of(&model, &tokens, rows, config.train.num_steps, &device)?;
    println!(
        "{split} perplexity {ppl:.3} over {} tokens ({} weights, {rows} rows)",
        tokens.len(),
        weights.display()
    );
    Ok(())
}
