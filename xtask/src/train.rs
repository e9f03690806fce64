//! `cargo xtask train` and `cargo xtask generate`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use rnnlm_model::{
    Decoding, Model, generate as generate_tokens, prefix_tokens, token_text, unknown_tokens,
};
use rnnlm_train::{Existing, Opened, Output, RunDir, Session, TrainConfig, check_corpus};

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
    #[arg(long, allow_negative_numbers = true, value_parser = positive_number)]
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
    /// The flags as `--set` overrides (paths made absolute, so a resume from elsewhere
    /// finds them).
    fn overrides(&self) -> Result<Vec<String>> {
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
        let absolute = |p: &Path| {
            std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
        };
        if let Some(d) = &self.data_dir {
            o.push(format!("data.data_dir={}", toml_string(&absolute(d)?)));
        }
        if let Some(c) = &self.corpus {
            o.push(format!("data.train={}", toml_string(&absolute(c)?)));
        }
        Ok(o)
    }

    /// The run directory and its config: from --config, or from the run itself on resume,
    /// where only `TrainConfig::RESUMABLE` keys may change (and are recorded).
    fn resolve(&self) -> Result<(PathBuf, TrainConfig, Existing)> {
        let explicit = self.resume.clone().flatten().or_else(|| self.out.clone());
        let overrides = self.overrides()?;
        if self.resume.is_some() {
            let dir = match (&explicit, &self.config) {
                (Some(dir), _) => dir.clone(),
                (None, Some(config)) => default_run_dir(config),
                (None, None) => bail!("--resume needs a run directory: --resume runs/NAME"),
            };
            let run = RunDir::existing(&dir).context("cannot resume")?;
            let saved = run.read_config()?;
            let config = match &self.config {
                // A config given again may differ only where the overrides may.
                Some(path) => TrainConfig::load(path, &overrides)?,
                None => TrainConfig::parse(&saved.to_toml(), &overrides)
                    .context("invalid flags or --set overrides")?,
            };
            let fixed: Vec<String> = saved
                .changed_keys(&config)
                .into_iter()
                .filter(|k| !TrainConfig::RESUMABLE.contains(&k.as_str()))
                .collect();
            if !fixed.is_empty() {
                bail!(
                    "a resumed run keeps its config, but {} would change (only {} may); start a new run for that",
                    fixed.join(", "),
                    TrainConfig::RESUMABLE.join(", ")
                );
            }
            return Ok((dir, config, Existing::Resume));
        }
        let Some(path) = &self.config else {
            bail!("give --config configs/NAME.toml (or --resume runs/NAME)");
        };
        let mut config = TrainConfig::load(path, &overrides)?;
        config.data.absolutize()?;
        let dir = explicit.unwrap_or_else(|| default_run_dir(path));
        let existing = if self.force {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        Ok((dir, config, existing))
    }
}

fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s} is not a positive finite number")),
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
    let device_args = match existing {
        Existing::Resume => args
            .device
            .for_resume(RunDir::existing(&dir)?.read_info()?.as_ref(), &dir)?,
        _ => args.device.clone(),
    };
    let (device, device_name) = device_args.device()?;
    let engine = config.engine(device_args.backend.computes_on_host());
    let device_name = format!("{device_name}, {engine:?} engine").to_lowercase();
    let corpus = config.data.load_corpus()?;
    check_corpus(&config, &corpus)?;
    config.model_config(corpus.vocab.len()).validate()?;
    let (run, opened) = RunDir::open(&dir, existing)?;
    match opened {
        Opened::Resumed => {
            run.check_resumable(&config, &corpus.vocab)?;
            let saved = run.read_config()?;
            for key in saved.changed_keys(&config) {
                run.log(&format!(
                    "resumed with a new {key} (recorded in config.toml)"
                ))?;
                println!("resuming with a new {key} (recorded in config.toml)");
            }
            run.write_config(&config)?;
        }
        Opened::Restarted => println!(
            "{} has no checkpoint yet: starting it from the beginning",
            dir.display()
        ),
        Opened::Replaced if existing != Existing::Replace => {
            println!("replacing {}: it holds no checkpoint", dir.display())
        }
        _ => {}
    }
    if opened != Opened::Resumed {
        run.write_info(&device_args.info())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130); // a second Ctrl-C: checkpoints are written atomically, so leave now
        }
        eprintln!("\nstopping after this minibatch (Ctrl-C again to quit at once)");
    })?;
    let held_out: String = [("valid", &corpus.valid), ("test", &corpus.test)]
        .iter()
        .filter(|(_, split)| !split.is_empty())
        .map(|(name, split)| format!(", {name} {}", split.len()))
        .collect();
    println!(
        "training {} on {} ({} training tokens{held_out}, vocab {}) -> {}",
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
        resume: opened == Opened::Resumed,
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
    /// Text to warm up on (characters, or words for a word-level run); empty: start of a
    /// line (`<eos>` for words, a line break for characters).
    #[arg(long, default_value = "", conflicts_with = "prime_file")]
    pub prefix: String,
    /// Read the prefix from a UTF-8 file instead.
    #[arg(long)]
    pub prime_file: Option<PathBuf>,
    /// Tokens to generate (characters or words).
    #[arg(long, default_value_t = 50)]
    pub num_preds: usize,
    /// Sample from softmax(logits / T) instead of the book's greedy argmax.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Sample only among the K most likely tokens (implies sampling).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probability reaches P (nucleus).
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed of the sampler (sample i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Independent samples, one after another.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Which weights: `best` (the default when the run has them) or `latest`.
    #[arg(long)]
    pub weights: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The device for reading a run: its own float type and threads unless flags say otherwise.
pub fn run_device(run: &RunDir, args: &DeviceArgs) -> Result<burn::tensor::Device> {
    Ok(args.for_run(run.read_info()?.as_ref())?.device()?.0)
}

/// The weights `--weights` names: `best/`, or the last checkpoint.
fn weights_dir(run: &RunDir, weights: Option<&str>) -> Result<PathBuf> {
    match weights {
        None => run.best_or_latest(),
        Some("best") => Ok(run.file("best")),
        Some("latest") => run.latest_checkpoint(),
        Some(other) => bail!("--weights {other}: expected `best` or `latest`"),
    }
}

/// Streams each sample to stdout token by token; Ctrl-C ends it cleanly.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    use std::io::Write;
    let run = RunDir::existing(&args.checkpoint)
        .with_context(|| format!("cannot open checkpoint {}", args.checkpoint.display()))?;
    let device = run_device(&run, &args.device)?;
    let (config, vocab, model_config, _) = run.load_trained(&device)?;
    let model = Model::load(
        &model_config,
        &weights_dir(&run, args.weights.as_deref())?,
        &device,
    )?;
    let prefix = match &args.prime_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --prime-file {}", path.display()))?,
        None => args.prefix.clone(),
    };
    let kind = config.data.token;
    let tokens = prefix_tokens(&prefix, kind, &vocab);
    let unknown = unknown_tokens(&tokens, &vocab);
    if !unknown.is_empty() {
        eprintln!("warning: not in the vocabulary, read as <unk>: {unknown:?}");
    }
    let indices: Vec<usize> = tokens.iter().map(|t| vocab.index(t)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    let sampling = args.temperature.is_some() || args.top_k.is_some() || args.top_p.is_some();
    let mut out = std::io::stdout().lock();
    for i in 0..args.num_samples {
        let decoding = if sampling {
            Decoding::sample(
                args.temperature.unwrap_or(1.0),
                args.top_k,
                args.top_p,
                args.seed.wrapping_add(i as u64),
            )?
        } else {
            Decoding::Greedy
        };
        if i > 0 {
            writeln!(out, "\n---")?;
        }
        write!(out, "{prefix}")?;
        let mut line_start = prefix.is_empty() || prefix.ends_with('\n');
        let mut failed = None;
        generate_tokens(
            &model,
            &indices,
            args.num_preds,
            &decoding,
            &device,
            &mut |t| {
                let token = vocab.to_token(t);
                let text = token_text(token, kind, line_start);
                line_start = text.ends_with('\n');
                if let Err(e) = write!(out, "{text}").and_then(|()| out.flush()) {
                    failed = Some(e);
                }
                failed.is_none() && !stop.load(Ordering::SeqCst)
            },
        )?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    writeln!(out)?;
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
    /// Read the text as this many rows side by side, each from a zero state (1: one
    /// stream, as Zaremba et al.'s code scores the test split) [default: the run's
    /// train.eval_batch_size].
    #[arg(long)]
    pub rows: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Perplexity of a run's model on one of its splits or another text, scored as the run
/// scores its validation and test splits (`train.eval_batch_size` rows, `num_steps` chunks).
pub fn eval(args: &EvalArgs) -> Result<()> {
    let run = RunDir::existing(&args.checkpoint)?;
    let device = run_device(&run, &args.device)?;
    let (mut config, vocab, model_config, _) = run.load_trained(&device)?;
    let weights = weights_dir(&run, args.weights.as_deref())?;
    let model = Model::load(&model_config, &weights, &device)?;
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
    if args.rows == Some(0) {
        bail!("--rows 0: give at least one row");
    }
    let rows = args
        .rows
        .unwrap_or(config.train.eval_batch_size)
        .min(tokens.len() / 2)
        .max(1);
    let ppl = rnnlm_model::perplexity_of(&model, &tokens, rows, config.train.num_steps, &device)?;
    println!(
        "{split} perplexity {ppl:.3} over {} tokens ({} weights, {rows} row{})",
        tokens.len(),
        weights.display(),
        if rows == 1 { "" } else { "s" }
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run directory written by `cargo xtask train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Which weights: `best` (the default when the run has them) or `latest`.
    #[arg(long)]
    pub weights: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Writes a run's model under its PyTorch `state_dict` names, vocab and config in the metadata.
pub fn export(args: &ExportArgs) -> Result<()> {
    let run = RunDir::existing(&args.checkpoint)?;
    let device = run_device(&run, &args.device)?;
    let (_, vocab, model_config, _) = run.load_trained(&device)?;
    let weights = weights_dir(&run, args.weights.as_deref())?;
    let model = Model::load(&model_config, &weights, &device)?;
    let tensors = rnnlm_train::interchange::export(&model, &model_config, &vocab)?;
    tensors.write(&args.out)?;
    println!(
        "wrote {} ({} tensors, {} parameters, from {})",
        args.out.display(),
        tensors.tensors.len(),
        model.num_params(),
        weights.display()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A safetensors file: an export, or a PyTorch `state_dict` with `fixtures/lm`-style
    /// metadata (`cell`, `V`, `H`, `L`, `E`, `input`, `tied`).
    #[arg(long)]
    pub safetensors: PathBuf,
    /// The vocabulary: a `vocab.json`, or a text file with one token per line in index
    /// order, `<unk>` first [default: the file's own, for an export].
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// The run directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Data and training settings for fine-tuning with `train --resume` (the model
    /// section comes from the file) [default: every key's default].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Replace an existing run directory.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Makes a run directory from a safetensors model (e.g. one trained in PyTorch).
pub fn import(args: &ImportArgs) -> Result<()> {
    use rnnlm_data::Vocab;
    use rnnlm_model::tensors::NamedTensors;
    use rnnlm_train::interchange;
    let (device, _) = args.device.device()?;
    let tensors = NamedTensors::read(&args.safetensors)?;
    let vocab = match &args.vocab {
        Some(path) if path.extension().is_some_and(|e| e == "json") => Vocab::load(path)?,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --vocab {}", path.display()))?;
            Vocab::from_tokens(text.lines().map(str::to_string).collect())
                .map_err(|e| anyhow::anyhow!("--vocab {}: {e}", path.display()))?
        }
        None => interchange::imported_vocab(&tensors)?.with_context(|| {
            format!(
                "{} carries no vocabulary; give --vocab",
                args.safetensors.display()
            )
        })?,
    };
    let base = match &args.config {
        Some(path) => TrainConfig::load(path, &[])?,
        None => TrainConfig::default(),
    };
    // Check everything before the run directory is made.
    let (model_config, _) = interchange::imported_model(&tensors, &vocab, &device)?;
    let existing = if args.force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    let (run, _) = RunDir::open(&args.out, existing)?;
    run.write_info(&args.device.info())?;
    interchange::import(&tensors, &vocab, &base, &run, &device)?;
    println!(
        "imported {} into {} ({:?} {} x {}, vocab {})",
        args.safetensors.display(),
        args.out.display(),
        model_config.cell,
        model_config.num_layers,
        model_config.num_hiddens,
        vocab.len()
    );
    Ok(())
}
