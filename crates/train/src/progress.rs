//! What a run records as it goes: the rows of `metrics.csv` (one definition of its
//! columns), the best model so far, a checkpoint's progress, and `summary.json`.

use serde::{Deserialize, Serialize};

/// One row of `metrics.csv`: the end of an epoch, or a validation within one
/// (`train.eval_every`). The fields are the columns, in this order (written and read
/// with `csv` and serde).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch the row belongs to (1-based).
    pub epoch: usize,
    /// Minibatches trained since the run began.
    pub step: usize,
    /// Training perplexity over the epoch's minibatches so far.
    pub perplexity: f64,
    /// On the whole validation split; `None` when the corpus has none.
    pub valid_perplexity: Option<f64>,
    /// The learning rate these minibatches used.
    pub lr: f64,
    /// Training tokens over training time (evaluation excluded).
    pub tokens_per_sec: f64,
    /// Wall-clock seconds since the run began (resumed runs continue the count).
    pub seconds: f64,
}

/// The training and validation curves of `metrics` (labelled `{label}train`,
/// `{label}valid`), `y` applied to each perplexity, against epochs (rows within an epoch
/// at their fraction of it) or, with `time`, against seconds.
pub fn curves(
    metrics: &[EpochMetrics],
    label: &str,
    y: &dyn Fn(f64) -> f64,
    time: bool,
) -> Vec<rnnlm_plot::Series> {
    let per_epoch = metrics
        .iter()
        .filter(|m| m.epoch == 1)
        .map(|m| m.step)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |m: &EpochMetrics| {
        if time {
            m.seconds
        } else {
            m.step as f64 / per_epoch
        }
    };
    let mut series = vec![rnnlm_plot::Series {
        label: format!("{label}train"),
        points: metrics.iter().map(|m| (x(m), y(m.perplexity))).collect(),
    }];
    let valid: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| Some((x(m), y(m.valid_perplexity?))))
        .collect();
    if !valid.is_empty() {
        series.push(rnnlm_plot::Series {
            label: format!("{label}valid"),
            points: valid,
        });
    }
    series
}

/// The lowest validation perplexity so far, kept in `best/`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub epoch: usize,
    pub step: usize,
    pub valid_perplexity: f64,
}

/// What a checkpoint restores besides the weights and the optimizer state: everything
/// that makes a resumed run equal an uninterrupted one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    /// Completed epochs; the next epoch's sampler rng is derived from `train.seed` and this.
    pub epoch: usize,
    pub step: usize,
    pub metrics: Vec<EpochMetrics>,
    /// The learning rate of the next epoch (the schedule's state).
    pub lr: f64,
    pub best: Option<Best>,
    /// Epochs since the validation perplexity last improved (for `train.patience`).
    pub epochs_without_improvement: usize,
    pub seconds: f64,
    /// Set when the checkpoint was written at a Ctrl-C within epoch `epoch + 1`.
    #[serde(default)]
    pub interrupted: Option<Interrupted>,
}

/// The running sums of an epoch's training so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Minibatches trained (the next one is this index).
    pub minibatches: usize,
    pub loss_sum: f64,
    pub tokens: usize,
    /// Training time (evaluation excluded).
    pub seconds: f64,
    /// The mean loss of the last minibatch: NaN before the first, which JSON writes as
    /// `null` (a Ctrl-C as an epoch begins) and is read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub last_loss: f64,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Where a Ctrl-C stopped an epoch: enough to continue it exactly (with the carried state,
/// saved beside the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interrupted {
    pub train: PartialEpoch,
    /// The best validation perplexity when the epoch began (the schedule compares with it).
    pub best_before: Option<f64>,
}

impl Progress {
    pub fn new(lr: f64) -> Self {
        Self {
            epoch: 0,
            step: 0,
            metrics: Vec::new(),
            lr,
            best: None,
            epochs_without_improvement: 0,
            seconds: 0.0,
            interrupted: None,
        }
    }
}

/// `summary.json`: how a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub epochs_completed: usize,
    pub train_perplexity: Option<f64>,
    pub valid_perplexity: Option<f64>,
    pub best_valid_perplexity: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The best model's (the last model's without a validation split).
    pub test_perplexity: Option<f64>,
    /// Median over epochs.
    pub tokens_per_sec: Option<f64>,
    pub parameters: usize,
    pub wall_seconds: f64,
}
