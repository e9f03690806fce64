//! `train_ch8` / `train_epoch_ch8` (book 8.5.6) as one plain loop: sample an epoch,
//! step through its minibatches (carrying or resetting the state), report perplexity
//! and tokens/s, predict, checkpoint.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rnnlm_data::{Corpus, epoch_batches};
use rnnlm_model::{
    Clipping, Decoding, Dropout, Engine, Model, perplexity_of, predict_ch8, randomized_truncation,
    train_step,
};

use crate::run_dir::{EpochMetrics, Progress, RunDir};
use crate::{Optimizer, StateMode, TrainConfig, TrainSection, Truncation};

/// How much the trainer prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A one-line progress bar on a terminal, else a line per epoch.
    Auto,
    /// Only the prediction lines and the summary.
    Quiet,
}

/// Everything a training run needs; the device is chosen by the caller.
pub struct Session<'a> {
    pub config: &'a TrainConfig,
    pub corpus: &'a Corpus,
    pub device: &'a Device,
    /// How gradients are computed (`TrainConfig::engine` for the chosen backend).
    pub engine: Engine,
    /// Shown in the summary line (`... tokens/sec on flex`).
    pub device_name: &'a str,
    pub run: &'a RunDir,
    pub resume: bool,
    pub output: Output,
    /// Set (by a Ctrl-C handler) to stop after the current minibatch; nothing partial is saved.
    pub stop: &'a AtomicBool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub metrics: Vec<EpochMetrics>,
    pub predictions: Vec<String>,
    /// Perplexity on the held-out tail (`data.holdout > 0`).
    pub heldout_perplexity: Option<f64>,
    pub interrupted: bool,
}

/// Where the training part of a corpus ends: its tail of `holdout` is held out.
pub fn holdout_start(len: usize, holdout: f64) -> usize {
    len - (len as f64 * holdout).round() as usize
}

pub fn new_optimizer(kind: Optimizer) -> ModuleOptimizer {
    match kind {
        Optimizer::Sgd => SgdConfig::new().init(),
        // PyTorch's Adam defaults (Burn's epsilon default is 1e-5).
        Optimizer::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
    }
}

/// The sampler rng of an epoch depends only on the seed and the epoch, so a resumed
/// run draws the same minibatches as an uninterrupted one.
pub(crate) fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The dropout masks of a minibatch depend only on the seed, the epoch and the minibatch.
fn minibatch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut rng = epoch_rng(seed ^ 0xD50F_0D50, epoch);
    rng.next_u64() ^ (batch as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// One epoch of `train_epoch_ch8`: the minibatches of `epoch` (drawn from `t.seed` and
/// the epoch number), a step on each, the state carried or reset per `t.state`.
/// Returns `None` for the metrics when `stop` was set before the epoch finished.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    mut model: Model,
    optimizer: &mut ModuleOptimizer,
    t: &TrainSection,
    corpus: &Corpus,
    device: &Device,
    engine: Engine,
    epoch: usize,
    stop: &AtomicBool,
) -> Result<(Model, Option<EpochMetrics>)> {
    let start = Instant::now();
    let mut rng = epoch_rng(t.seed, epoch);
    let num_steps = match t.truncation {
        Truncation::Full => (corpus.len() - 1) / (t.batch_size + 1),
        _ => t.num_steps,
    };
    let batches = epoch_batches(
        &corpus.indices,
        t.batch_size,
        num_steps,
        t.sampler,
        &mut rng,
    )?;
    let (mut loss_sum, mut tokens) = (0.0, 0usize);
    let mut state = None;
    for (i, batch) in batches.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            return Ok((model, None));
        }
        let (x, y) = batch.to_tensors(device);
        let state_in = match (t.state, state.take()) {
            (StateMode::Carry, Some(s)) => s, // train_step returned it detached: truncated BPTT
            _ => model.begin_state(t.batch_size, device),
        };
        let scales = (t.truncation == Truncation::Randomized)
            .then(|| randomized_truncation(t.truncation_pi, num_steps, &mut rng));
        let mut dropout = Dropout::new(model.dropout(), minibatch_seed(t.seed, epoch, i));
        let step = train_step(
            model,
            optimizer,
            x,
            y,
            state_in,
            scales.as_deref(),
            Some(&mut dropout),
            engine,
            Clipping::norm(t.theta),
            t.lr,
        )?;
        model = step.model;
        state = Some(step.state);
        let batch_loss: f64 = step.token_losses.into_data().iter::<f64>().sum();
        if !batch_loss.is_finite() {
            bail!(
                "loss is {batch_loss} at epoch {}, minibatch {}: training diverged; lower train.lr (now {}) or train.theta (now {})",
                epoch + 1,
                i + 1,
                t.lr,
                t.theta
            );
        }
        loss_sum += batch_loss;
        tokens += batch.y.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    let metrics = EpochMetrics {
        epoch: epoch + 1,
        perplexity: (loss_sum / tokens as f64).exp(),
        tokens_per_sec: tokens as f64 / seconds,
        seconds,
    };
    Ok((model, Some(metrics)))
}

impl Session<'_> {
    fn say(&self, line: &str) -> Result<()> {
        println!("{line}");
        self.run.log(line)
    }

    fn predictions(&self, model: &Model) -> Result<Vec<String>> {
        let t = &self.config.train;
        t.prefixes
            .iter()
            .map(|prefix| {
                let p = predict_ch8(
                    prefix,
                    t.num_preds,
                    model,
                    &self.corpus.vocab,
                    self.corpus.token,
                    &Decoding::Greedy,
                    self.device,
                )?;
                Ok(p.text)
            })
            .collect()
    }

    pub fn train(&self) -> Result<Summary> {
        let (config, t) = (self.config, &self.config.train);
        let model_config = config.model_config(self.corpus.vocab.len());
        let (mut model, mut optimizer, mut progress) = if self.resume {
            let c =
                self.run
                    .load_checkpoint(&model_config, new_optimizer(t.optimizer), self.device)?;
            (c.model, c.optimizer, c.progress)
        } else {
            self.run
                .write_header(config, &self.corpus.vocab, &model_config)?;
            let progress = Progress {
                epoch: 0,
                metrics: Vec::new(),
            };
            (
                model_config.init(t.seed, self.device)?,
                new_optimizer(t.optimizer),
                progress,
            )
        };
        let title = self
            .run
            .path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let bar = self.output == Output::Auto && std::io::stderr().is_terminal();
        let mut interrupted = false;

        let cut = holdout_start(self.corpus.len(), config.data.holdout);
        let train_part = Corpus {
            indices: self.corpus.indices[..cut].to_vec(),
            vocab: self.corpus.vocab.clone(),
            token: self.corpus.token,
        };
        for epoch in progress.epoch..t.num_epochs {
            let (trained, outcome) = train_epoch(
                model,
                &mut optimizer,
                t,
                &train_part,
                self.device,
                self.engine,
                epoch,
                self.stop,
            )
            .with_context(|| {
                format!(
                    "the last good checkpoint (epoch {}) is kept in {}",
                    progress.epoch,
                    self.run.path.display()
                )
            })?;
            model = trained;
            let Some(m) = outcome else {
                interrupted = true;
                break;
            };
            progress.metrics.push(m);
            progress.epoch = epoch + 1;
            self.run.write_metrics(&progress.metrics, &title)?;
            let line = format!(
                "epoch {}, perplexity {:.3}, {:.1} tokens/sec",
                m.epoch, m.perplexity, m.tokens_per_sec
            );
            if bar {
                eprint!("\r\x1b[K{line} [{}/{}]", m.epoch, t.num_epochs);
                let _ = std::io::stderr().flush();
            } else if self.output == Output::Auto {
                println!("{line}");
            }
            if m.epoch.is_multiple_of(t.predict_every) {
                if bar {
                    eprintln!();
                }
                self.run.log(&line)?;
                if self.output == Output::Quiet {
                    println!("{line}");
                }
                for p in self.predictions(&model)? {
                    self.say(&format!(" - {p}"))?;
                }
            }
            if m.epoch.is_multiple_of(t.checkpoint_every) || m.epoch == t.num_epochs {
                self.run.save_checkpoint(&model, &optimizer, &progress)?;
            }
        }
        if bar {
            eprintln!();
        }
        if interrupted {
            let line = format!(
                "interrupted; the last checkpoint is in {} (continue with --resume)",
                self.run.path.display()
            );
            self.say(&line)?;
            return Ok(Summary {
                metrics: progress.metrics,
                predictions: Vec::new(),
                heldout_perplexity: None,
                interrupted,
            });
        }
        let predictions = self.predictions(&model)?;
        if let Some(last) = progress.metrics.last() {
            let recent = &progress.metrics[progress.metrics.len().saturating_sub(10)..];
            let speed = recent.iter().map(|m| m.tokens_per_sec).sum::<f64>() / recent.len() as f64;
            self.say(&format!(
                "perplexity {:.1}, {:.1} tokens/sec on {}",
                last.perplexity, speed, self.device_name
            ))?;
        }
        for p in &predictions {
            self.say(p)?;
        }
        let heldout_perplexity = (cut < self.corpus.len()).then(|| {
            // The tail is scored from the last training token on, as the n-gram baseline is.
            perplexity_of(
                &model,
                &self.corpus.indices[cut - 1..],
                t.num_steps,
                self.device,
            )
        });
        if let Some(ppl) = heldout_perplexity {
            self.say(&format!(
                "held-out perplexity {ppl:.3} on the last {} tokens",
                self.corpus.len() - cut
            ))?;
        }
        Ok(Summary {
            metrics: progress.metrics,
            predictions,
            heldout_perplexity,
            interrupted,
        })
    }
}
