//! One epoch of training (`train_epoch_ch8`, book 8.5.6): the epoch's minibatches drawn
//! from the seed, a step on each with the state carried or reset, from the first
//! minibatch or from where a Ctrl-C checkpoint stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rnnlm_data::epoch_batches;
use rnnlm_model::{
    Clipping, Dropout, Engine, HostTrainer, Model, State, StepInput, StepResult,
    randomized_truncation, train_step,
};
use serde::{Deserialize, Serialize};

use crate::optim::RunOptimizer;
use crate::progress::PartialEpoch;
use crate::{StateMode, TrainConfig, TrainSection, Truncation};

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

/// The training part of an epoch, or of its first `minibatches` minibatches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochTrain {
    pub perplexity: f64,
    pub minibatches: usize,
    /// Minibatches in the whole epoch.
    pub of: usize,
    pub tokens_per_sec: f64,
    /// The mean loss of the last minibatch.
    pub last_loss: f64,
}

/// Called after every minibatch with the model (written out when called: the host
/// engine's SGD keeps the parameters elsewhere) and the epoch's training so far (a
/// progress bar, validation every `train.eval_every` minibatches); its time is not
/// counted as training time.
pub type MinibatchHook<'a> = &'a mut dyn FnMut(&dyn Fn() -> Model, EpochTrain) -> Result<()>;

/// The minibatch count of one epoch (the sampler's and `train.truncation`'s).
fn epoch_steps(t: &TrainSection, len: usize) -> usize {
    match t.truncation {
        Truncation::Full => (len - 1) / (t.batch_size + 1),
        _ => t.num_steps,
    }
}

/// Where an epoch starts: at its first minibatch (`Default`), or where a Ctrl-C stopped it.
#[derive(Debug, Clone, Default)]
pub struct EpochStart {
    pub done: Option<PartialEpoch>,
    /// The state carried into the next minibatch.
    pub state: Option<State>,
}

/// How `train_epoch` ended.
#[derive(Debug, Clone)]
pub enum EpochOutcome {
    Done(EpochTrain),
    /// `stop` was set: the epoch so far, to continue from.
    Stopped(Box<EpochStart>),
}

impl EpochOutcome {
    pub fn done(self) -> Option<EpochTrain> {
        match self {
            Self::Done(train) => Some(train),
            Self::Stopped(_) => None,
        }
    }
}

/// One epoch of `train_epoch_ch8` on `tokens` at learning rate `lr`: the minibatches of
/// `epoch` (drawn from `t.seed` and the epoch number), a step on each, the state carried
/// or reset per `t.state`, from `start` on. Stops before the next minibatch when `stop`
/// is set. The host engine's own optimizer (`RunOptimizer::Host`) updates the parameters
/// on the host.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    model: Model,
    optimizer: &mut RunOptimizer,
    config: &TrainConfig,
    lr: f64,
    tokens: &[usize],
    device: &Device,
    engine: Engine,
    epoch: usize,
    start: EpochStart,
    stop: &AtomicBool,
    mut hook: Option<MinibatchHook>,
) -> Result<(Model, EpochOutcome)> {
    let t = &config.train;
    let mut rng = epoch_rng(t.seed, epoch);
    let num_steps = epoch_steps(t, tokens.len());
    let batches = epoch_batches(tokens, t.batch_size, num_steps, t.sampler, &mut rng)?;
    let mut sums = start.done.unwrap_or(PartialEpoch {
        minibatches: 0,
        loss_sum: 0.0,
        tokens: 0,
        seconds: 0.0,
        last_loss: f64::NAN,
    });
    let so_far = |p: &PartialEpoch| EpochTrain {
        perplexity: (p.loss_sum / p.tokens as f64).exp(),
        minibatches: p.minibatches,
        of: batches.len(),
        tokens_per_sec: p.tokens as f64 / p.seconds,
        last_loss: p.last_loss,
    };
    let mut state = start.state;
    let mut trainer = match optimizer {
        RunOptimizer::Host(_) if engine != Engine::Fused => {
            bail!("the host engine's optimizer needs train.engine = \"fused\" (a CPU backend)")
        }
        RunOptimizer::Host(o) => Trainer::Host(HostTrainer::new(model, o)?),
        RunOptimizer::Burn(optimizer) => Trainer::Burn {
            model: Some(model),
            optimizer,
            engine,
        },
    };
    if engine == Engine::Fused {
        // What building the trainer left behind (a host trainer drops the model's tensors)
        // goes back before the engine's buffers fill.
        rnnlm_model::bptt::release();
    }
    for (i, batch) in batches.iter().enumerate() {
        // Drawn for every minibatch, trained or skipped, so a continued epoch draws alike.
        let scales = (t.truncation == Truncation::Randomized)
            .then(|| randomized_truncation(t.truncation_pi, num_steps, &mut rng));
        if i < sums.minibatches {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            let start = EpochStart {
                done: Some(sums),
                state,
            };
            return Ok((trainer.into_model(), EpochOutcome::Stopped(Box::new(start))));
        }
        let began = Instant::now();
        let (x, y) = batch.to_tensors(device);
        let state_in = match (t.state, state.take()) {
            (StateMode::Carry, Some(s)) => s, // train_step returned it detached: truncated BPTT
            _ => trainer.begin_state(t.batch_size, device),
        };
        let mut dropout = Dropout::new(trainer.dropout(), minibatch_seed(t.seed, epoch, i));
        let (scales, clipping) = (scales.as_deref(), config.clipping());
        let input = StepInput {
            x,
            y,
            state: state_in,
            scales,
            dropout: Some(&mut dropout),
        };
        let step = match engine {
            // The host engine's step on one of rayon's workers (`on_workers`).
            Engine::Fused => rnnlm_model::bptt::on_workers(|| trainer.step(input, clipping, lr))?,
            Engine::Autodiff => trainer.step(input, clipping, lr)?,
        };
        state = Some(step.state);
        let batch_loss: f64 = step.token_losses.into_data().iter::<f64>().sum();
        // A mean loss beyond ~709 nats is an infinite perplexity: diverged as surely as NaN.
        if !(batch_loss / batch.y.len() as f64).exp().is_finite() {
            bail!(
                "loss is {batch_loss} at epoch {}, minibatch {}: training diverged; lower train.lr (now {lr}) or train.theta (now {})",
                epoch + 1,
                i + 1,
                t.theta
            );
        }
        sums = PartialEpoch {
            minibatches: i + 1,
            loss_sum: sums.loss_sum + batch_loss,
            tokens: sums.tokens + batch.y.len(),
            seconds: sums.seconds + began.elapsed().as_secs_f64(),
            last_loss: batch_loss / batch.y.len() as f64,
        };
        if let Some(hook) = hook.as_mut() {
            hook(&|| trainer.model(), so_far(&sums))?;
        }
    }
    if engine == Engine::Fused {
        // The model built next and the evaluation after an epoch reuse the host engine's
        // memory (PTB: its peak RSS otherwise stacks Burn's `[rows, V]` tensors on the
        // engine's buffers).
        rnnlm_model::bptt::release();
    }
    let model = trainer.into_model();
    Ok((model, EpochOutcome::Done(so_far(&sums))))
}

/// The model being trained and what updates it: Burn's optimizer over the gradients of
/// `engine`, or the host engine's own.
enum Trainer<'a> {
    Burn {
        /// `None` only within `step`.
        model: Option<Model>,
        optimizer: &'a mut ModuleOptimizer,
        engine: Engine,
    },
    Host(HostTrainer<'a>),
}

impl Trainer<'_> {
    fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        match self {
            Self::Burn { model, .. } => model
                .as_ref()
                .expect("a model")
                .begin_state(batch_size, device),
            Self::Host(h) => h.begin_state(batch_size, device),
        }
    }

    fn dropout(&self) -> f64 {
        match self {
            Self::Burn { model, .. } => model.as_ref().expect("a model").dropout(),
            Self::Host(h) => h.dropout(),
        }
    }

    fn step(&mut self, input: StepInput, clipping: Clipping, lr: f64) -> Result<StepResult> {
        Ok(match self {
            Self::Burn {
                model,
                optimizer,
                engine,
            } => {
                let current = model.take().expect("a model");
                let (next, step) = train_step(current, optimizer, input, *engine, clipping, lr)?;
                *model = Some(next);
                step
            }
            Self::Host(h) => h.step(input, clipping, lr)?,
        })
    }

    /// The model as trained so far.
    fn model(&self) -> Model {
        match self {
            Self::Burn { model, .. } => model.clone().expect("a model"),
            Self::Host(h) => h.model(),
        }
    }

    fn into_model(self) -> Model {
        match self {
            Self::Burn { model, .. } => model.expect("a model"),
            Self::Host(h) => h.into_model(),
        }
    }
}
