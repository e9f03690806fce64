//! `train_ch8` / `train_epoch_ch8` (book 8.5.6) grown into a language-model trainer: sample
//! an epoch, step through its minibatches (carrying or resetting the state), evaluate on
//! the validation split, keep the best model, follow the learning-rate schedule, stop
//! early, checkpoint, and score the test split at the end.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use rnnlm_data::Corpus;
use rnnlm_model::{Decoding, Engine, Model, perplexity_of, predict_ch8};

use crate::epoch::{EpochOutcome, EpochStart, EpochTrain, train_epoch};
use crate::optim::RunOptimizer;
use crate::progress::{Best, EpochMetrics, Interrupted, Progress, RunSummary};
use crate::run_dir::RunDir;
use crate::{Schedule, TrainConfig, TrainSection, Truncation};

/// How often a line reports progress within an epoch when there is no progress bar.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// Set (by a Ctrl-C handler) to stop after the current minibatch, where a checkpoint is
    /// written.
    pub stop: &'a AtomicBool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub metrics: Vec<EpochMetrics>,
    pub predictions: Vec<String>,
    pub run: Option<RunSummary>,
    pub interrupted: bool,
}

/// The learning rate after epoch `epoch` (1-based) ended at `lr`; `improved`: whether the
/// epoch lowered the best validation perplexity.
pub fn next_lr(t: &TrainSection, lr: f64, epoch: usize, improved: bool) -> f64 {
    match t.schedule {
        Schedule::None => lr,
        Schedule::Plateau if improved => lr,
        Schedule::Plateau => lr / t.lr_factor,
        Schedule::Exponential if epoch >= t.lr_decay_after => lr * t.lr_decay,
        Schedule::Step if epoch.is_multiple_of(t.lr_step) => lr * t.lr_decay,
        Schedule::Exponential | Schedule::Step => lr,
    }
}

/// Checks, before anything is written, that every split can be used: the training split
/// holds at least one minibatch, the validation and test splits two tokens per
/// evaluation row.
pub fn check_corpus(config: &TrainConfig, corpus: &Corpus) -> Result<()> {
    let t = &config.train;
    let need = t
        .batch_size
        .checked_mul(t.num_steps)
        .and_then(|n| n.checked_add(1))
        .with_context(|| {
            format!(
                "train.batch_size {} x train.num_steps {} overflows",
                t.batch_size, t.num_steps
            )
        })?;
    if t.truncation != Truncation::Full && corpus.len() < need {
        bail!(
            "the training split has {} tokens, fewer than one minibatch needs (train.batch_size {} x train.num_steps {} + 1 = {need}); use more text or smaller minibatches",
            corpus.len(),
            t.batch_size,
            t.num_steps
        );
    }
    for (name, split) in [("validation", &corpus.valid), ("test", &corpus.test)] {
        if !split.is_empty() && split.len() < 2 * t.eval_batch_size {
            bail!(
                "the {name} split has {} tokens, fewer than two for each of train.eval_batch_size = {} rows; lower it or give the split more text",
                split.len(),
                t.eval_batch_size
            );
        }
    }
    Ok(())
}

/// A terminal's progress bar for one epoch: minibatches, loss, tokens/s, ETA.
fn progress_bar(epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}}, ETA {{eta}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
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

    /// Perplexity on a held-out split (`None` when the corpus has none).
    fn score(&self, model: &Model, split: &[usize]) -> Result<Option<f64>> {
        if split.is_empty() {
            return Ok(None);
        }
        let t = &self.config.train;
        Ok(Some(perplexity_of(
            model,
            split,
            t.eval_batch_size,
            t.num_steps,
            self.device,
        )?))
    }

    /// Validation after `step` minibatches: a metrics row, and `best/` when it improved.
    fn validate(
        &self,
        model: &Model,
        progress: &mut Progress,
        row: EpochMetrics,
    ) -> Result<EpochMetrics> {
        let valid = self.score(model, &self.corpus.valid)?;
        if let Some(v) = valid
            && progress.best.is_none_or(|b| v < b.valid_perplexity)
        {
            let best = Best {
                epoch: row.epoch,
                step: row.step,
                valid_perplexity: v,
            };
            self.run.save_best(model, &best)?;
            progress.best = Some(best);
        }
        Ok(EpochMetrics {
            valid_perplexity: valid,
            ..row
        })
    }

    /// What a stopped run leaves, said truthfully.
    /// `saved`: the epochs completed at the last checkpoint, and the minibatches into the
    /// next one for a checkpoint written at a Ctrl-C.
    fn kept(&self, saved: Option<(usize, usize)>) -> String {
        let dir = self.run.path.display();
        match saved {
            Some((epoch, 0)) => {
                format!("the checkpoint of epoch {epoch} is kept in {dir} (continue with --resume)")
            }
            Some((epoch, minibatches)) => format!(
                "the checkpoint after {minibatches} minibatches of epoch {} is kept in {dir} (continue with --resume)",
                epoch + 1
            ),
            None => format!(
                "no epoch reached a checkpoint, so nothing is kept in {} (the same command starts it again)",
                self.run.path.display()
            ),
        }
    }

    pub fn train(&self) -> Result<Summary> {
        let (config, t) = (self.config, &self.config.train);
        check_corpus(config, self.corpus)?;
        let model_config = config.model_config(self.corpus.vocab.len());
        let mut carried = None;
        let (mut model, mut optimizer, mut progress) = if self.resume {
            let c = self
                .run
                .load_checkpoint(&model_config, t, self.engine, self.device)?;
            carried = c.state;
            (c.model, c.optimizer, c.progress)
        } else {
            self.run
                .write_header(config, &self.corpus.vocab, &model_config)?;
            (
                model_config.init(t.seed, self.device)?,
                RunOptimizer::new(t, self.engine),
                Progress::new(t.lr),
            )
        };
        let title = self
            .run
            .path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let terminal = self.output == Output::Auto && std::io::stderr().is_terminal();
        let mut interrupted = false;
        // The epoch of the last checkpoint on disk, for messages that say what is kept.
        let mut saved = self.resume.then(|| {
            let within = progress.interrupted.map_or(0, |i| i.train.minibatches);
            (progress.epoch, within)
        });
        // Without a terminal's progress bar, a line now and then within long epochs.
        let mut reported = Instant::now();

        for epoch in progress.epoch..t.num_epochs {
            let started = Instant::now();
            let lr = progress.lr;
            // An epoch a Ctrl-C checkpoint stopped continues where it was.
            let resumed = progress.interrupted.take();
            let best_before = match resumed {
                Some(r) => r.best_before,
                None => progress.best.map(|b| b.valid_perplexity),
            };
            let start = EpochStart {
                done: resumed.map(|r| r.train),
                state: carried.take(),
            };
            let elapsed = progress.seconds;
            let first_step = progress.step;
            let bar = terminal.then(|| progress_bar(epoch + 1, t.num_epochs));
            let validates = !self.corpus.valid.is_empty() && t.eval_every > 0;
            let mut hook = |m: &dyn Fn() -> Model, train: EpochTrain| -> Result<()> {
                if let Some(bar) = &bar {
                    bar.set_length(train.of as u64);
                    bar.set_position(train.minibatches as u64);
                    bar.set_message(format!(
                        "loss {:.3}, {:.1}k tokens/s",
                        train.last_loss,
                        train.tokens_per_sec / 1e3
                    ));
                } else if self.output == Output::Auto && reported.elapsed() >= REPORT_EVERY {
                    reported = Instant::now();
                    println!(
                        "epoch {}: {}/{} minibatches, loss {:.3}, {:.1}k tokens/s",
                        epoch + 1,
                        train.minibatches,
                        train.of,
                        train.last_loss,
                        train.tokens_per_sec / 1e3
                    );
                }
                if !(validates
                    && train.minibatches.is_multiple_of(t.eval_every)
                    && train.minibatches < train.of)
                {
                    return Ok(());
                }
                let row = EpochMetrics {
                    epoch: epoch + 1,
                    step: first_step + train.minibatches,
                    perplexity: train.perplexity,
                    valid_perplexity: None,
                    lr,
                    tokens_per_sec: train.tokens_per_sec,
                    seconds: elapsed + started.elapsed().as_secs_f64(),
                };
                let row = self.validate(&m(), &mut progress, row)?;
                progress.metrics.push(row);
                self.run.write_metrics(&progress.metrics, &title)
            };
            let (trained, outcome) = train_epoch(
                model,
                &mut optimizer,
                config,
                lr,
                &self.corpus.indices,
                self.device,
                self.engine,
                epoch,
                start,
                self.stop,
                Some(&mut hook),
            )
            .with_context(|| self.kept(saved))?;
            model = trained;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let train = match outcome {
                EpochOutcome::Done(train) => train,
                EpochOutcome::Stopped(at) => {
                    // A checkpoint at the stop: the resumed run continues this epoch.
                    let done = at.done.expect("a stopped epoch says how far it got");
                    progress.seconds += started.elapsed().as_secs_f64();
                    progress.interrupted = Some(Interrupted {
                        train: done,
                        best_before,
                    });
                    self.run
                        .save_checkpoint(&model, &optimizer, &progress, at.state.as_ref())
                        .with_context(|| {
                            format!(
                                "the checkpoint at the stop was not written; {}",
                                self.kept(saved)
                            )
                        })?;
                    interrupted = true;
                    self.say(&format!(
                        "interrupted in epoch {} after {} minibatches; checkpoint saved in {} (continue with --resume)",
                        epoch + 1,
                        done.minibatches,
                        self.run.path.display()
                    ))?;
                    break;
                }
            };
            progress.step += train.minibatches;
            let row = EpochMetrics {
                epoch: epoch + 1,
                step: progress.step,
                perplexity: train.perplexity,
                valid_perplexity: None,
                lr,
                tokens_per_sec: train.tokens_per_sec,
                seconds: 0.0,
            };
            let mut m = self.validate(&model, &mut progress, row)?;
            let improved = match (progress.best, best_before) {
                (Some(b), Some(before)) => b.valid_perplexity < before,
                (best, _) => best.is_some(),
            };
            progress.epochs_without_improvement = if improved {
                0
            } else {
                progress.epochs_without_improvement + 1
            };
            progress.lr = next_lr(t, lr, epoch + 1, improved);
            progress.seconds += started.elapsed().as_secs_f64();
            m.seconds = progress.seconds;
            progress.metrics.push(m);
            progress.epoch = epoch + 1;
            self.run.write_metrics(&progress.metrics, &title)?;
            let valid = m
                .valid_perplexity
                .map_or(String::new(), |v| format!(", valid {v:.3}"));
            let line = format!(
                "epoch {}, perplexity {:.3}{valid}, {:.1} tokens/sec",
                m.epoch, m.perplexity, m.tokens_per_sec
            );
            if self.output == Output::Auto {
                println!("{line}");
            }
            let early_stop = t.patience > 0 && progress.epochs_without_improvement >= t.patience;
            if m.epoch.is_multiple_of(t.predict_every) {
                self.run.log(&line)?;
                if self.output == Output::Quiet {
                    println!("{line}");
                }
                for p in self.predictions(&model)? {
                    self.say(&format!(" - {p}"))?;
                }
            }
            if m.epoch.is_multiple_of(t.checkpoint_every) || m.epoch == t.num_epochs || early_stop {
                self.run
                    .save_checkpoint(&model, &optimizer, &progress, None)
                    .with_context(|| {
                        format!(
                            "the checkpoint of epoch {} was not written; {}",
                            progress.epoch,
                            self.kept(saved)
                        )
                    })?;
                saved = Some((progress.epoch, 0));
            }
            if early_stop {
                self.say(&format!(
                    "stopping early: no better validation perplexity for {} epochs (train.patience)",
                    t.patience
                ))?;
                break;
            }
        }
        if interrupted {
            return Ok(Summary {
                metrics: progress.metrics,
                predictions: Vec::new(),
                run: None,
                interrupted,
            });
        }
        let predictions = self.predictions(&model)?;
        let epoch_rows: Vec<&EpochMetrics> = progress
            .metrics
            .iter()
            .filter(|m| {
                progress
                    .metrics
                    .iter()
                    .all(|n| n.epoch != m.epoch || n.step <= m.step)
            })
            .collect();
        let speed = median(epoch_rows.iter().map(|m| m.tokens_per_sec).collect());
        if let Some(last) = epoch_rows.last() {
            self.say(&format!(
                "perplexity {:.1}, {:.1} tokens/sec on {}",
                last.perplexity,
                speed.unwrap_or(0.0),
                self.device_name
            ))?;
        }
        for p in &predictions {
            self.say(p)?;
        }
        // The test split is scored with the best model by validation (else the last one).
        let test_perplexity = if self.corpus.test.is_empty() {
            None
        } else {
            let scored = match progress.best {
                Some(_) => Model::load(&model_config, &self.run.file("best"), self.device)?,
                None => model.clone(),
            };
            self.score(&scored, &self.corpus.test)?
        };
        if let Some(b) = progress.best {
            self.say(&format!(
                "best validation perplexity {:.3} at epoch {}",
                b.valid_perplexity, b.epoch
            ))?;
        }
        if let Some(ppl) = test_perplexity {
            self.say(&format!(
                "test perplexity {ppl:.3} on {} tokens",
                self.corpus.test.len()
            ))?;
        }
        let summary = RunSummary {
            epochs_completed: progress.epoch,
            train_perplexity: epoch_rows.last().map(|m| m.perplexity),
            valid_perplexity: epoch_rows.last().and_then(|m| m.valid_perplexity),
            best_valid_perplexity: progress.best.map(|b| b.valid_perplexity),
            best_epoch: progress.best.map(|b| b.epoch),
            test_perplexity,
            tokens_per_sec: speed,
            parameters: model.num_params(),
            wall_seconds: progress.seconds,
        };
        self.run.write_summary(&summary)?;
        Ok(Summary {
            metrics: progress.metrics,
            predictions,
            run: Some(summary),
            interrupted,
        })
    }
}
