//! The loss and one training step shared by the trainer and the parity check.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

use serde::{Deserialize, Serialize};

use crate::{CellState, Clipping, Dropout, Model, ModelError, State, fused};

/// Cross-entropy of each row of logits `[T * B, V]` against `Y [B, T]` read as
/// `Y.T.reshape(-1)`: a `[T * B]` tensor.
pub fn token_losses(logits: Tensor<2>, y: Tensor<2, Int>) -> Tensor<1> {
    let [b, t] = y.dims();
    let targets = y.transpose().reshape([t * b, 1]);
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    -log_probs.gather(1, targets).reshape([t * b])
}

/// Mean cross-entropy (`nn.CrossEntropyLoss()`), the loss the book minimises.
pub fn cross_entropy(logits: Tensor<2>, y: Tensor<2, Int>) -> Tensor<1> {
    token_losses(logits, y).mean()
}

/// A forward and backward pass: the gradients of the mean cross-entropy and what the
/// forward computed.
pub struct Gradients {
    pub grads: GradientsParams,
    /// `None` where the training step did not ask for them (the host engine turns its
    /// one `[rows, V]` buffer into their gradient).
    pub logits: Option<Tensor<2>>,
    /// The loss of every target token.
    pub token_losses: Tensor<1>,
    pub state: State,
    /// `Some(norm before clipping)` where the engine clipped the gradients already (the
    /// host engine does in a training step, before they become tensors).
    pub clipped: Option<Tensor<1>>,
}

/// What a pass is for: to look at (`gradients`: the logits kept, nothing clipped) or to
/// train on (`train_step`: no logits; the host engine clips as it hands the gradients
/// over).
#[derive(Clone, Copy)]
pub(crate) enum Pass {
    Inspect,
    Train(Clipping),
}

/// What one update did, for logging.
pub struct StepResult {
    pub loss: Tensor<1>,
    /// The loss of every target token (detached), for reports that sum them on the host:
    /// a parallel device-side mean may associate differently from run to run.
    pub token_losses: Tensor<1>,
    pub state: State,
    pub grad_norm: Option<Tensor<1>>,
}

impl StepResult {
    /// What a training pass did, its gradients clipped (`clipped`: the norm before).
    pub(crate) fn of(g: Gradients) -> Self {
        Self {
            loss: g.token_losses.clone().mean().detach(),
            token_losses: g.token_losses.detach(),
            state: g.state.detach(),
            grad_norm: g.clipped,
        }
    }
}

/// How a training step computes its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Burn's autodiff over the model's forward: any model, any backend.
    Autodiff,
    /// The written-out BPTT kernel on the host (`bptt`): every one-direction model
    /// (RNN, GRU, LSTM; embeddings, dropout, tying); faster on CPU backends.
    Fused,
}

/// The gate of `scales` (see `randomized_truncation`): `s_t` weights the gradient entering
/// the state at step `t` while leaving its value as it is.
pub fn scale_gate(scales: Option<&[f64]>) -> impl FnMut(usize, CellState) -> CellState + '_ {
    move |t, state| {
        let s = scales.map_or(1.0, |s| s[t]);
        state.map(|h| match s {
            1.0 => h,
            0.0 => h.detach(),
            s => h.clone().mul_scalar(s) + h.detach().mul_scalar(1.0 - s),
        })
    }
}

/// What a forward and backward pass reads: a minibatch's tokens `x` and targets `y`
/// (`[batch_size, num_steps]`), the state entering it, `scales` weighting the gradient
/// through each step's incoming state (`None` for plain BPTT) and `dropout` drawing the
/// masks (`None`: no dropout).
pub struct StepInput<'a> {
    pub x: Tensor<2, Int>,
    pub y: Tensor<2, Int>,
    pub state: State,
    pub scales: Option<&'a [f64]>,
    pub dropout: Option<&'a mut Dropout>,
}

impl StepInput<'_> {
    /// Plain BPTT without dropout.
    pub fn new(x: Tensor<2, Int>, y: Tensor<2, Int>, state: State) -> Self {
        Self {
            x,
            y,
            state,
            scales: None,
            dropout: None,
        }
    }
}

/// Forward and backward over `input`.
pub fn gradients(model: &Model, input: StepInput, engine: Engine) -> Result<Gradients, ModelError> {
    gradients_for(model, input, engine, Pass::Inspect)
}

/// `gradients` for `pass`.
fn gradients_for(
    model: &Model,
    input: StepInput,
    engine: Engine,
    pass: Pass,
) -> Result<Gradients, ModelError> {
    match engine {
        Engine::Autodiff => {
            let StepInput {
                x,
                y,
                state,
                scales,
                dropout,
            } = input;
            let (logits, state) = model.forward_with(x, state, &mut scale_gate(scales), dropout);
            let token_losses = token_losses(logits.clone(), y);
            let grads = GradientsParams::from_grads(token_losses.clone().mean().backward(), model);
            Ok(Gradients {
                grads,
                logits: matches!(pass, Pass::Inspect).then_some(logits),
                token_losses,
                state,
                clipped: None,
            })
        }
        Engine::Fused => fused::forward_backward(model, input, pass),
    }
}

/// `gradients`, clipping (`clipping`), `optimizer.step(lr)`: the updated model and what
/// the step did.
pub fn train_step(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    input: StepInput,
    engine: Engine,
    clipping: Clipping,
    lr: f64,
) -> Result<(Model, StepResult), ModelError> {
    let mut g = gradients_for(&model, input, engine, Pass::Train(clipping))?;
    let mut grads = std::mem::replace(&mut g.grads, GradientsParams::new());
    if g.clipped.is_none() {
        (grads, g.clipped) = clipping.apply(&model, grads);
    }
    let model = optimizer.step(lr, model, grads);
    Ok((model, StepResult::of(g)))
}

/// Perplexity of `tokens` read as word_language_model's `evaluate`: cut into `batch_size`
/// contiguous rows (the remainder dropped), each row read left to right from a zero state
/// in chunks of `num_steps` with the state carried, every token after a row's first
/// predicted from all before it. No dropout. Sums the losses on the host in f64.
pub fn perplexity_of(
    model: &Model,
    tokens: &[usize],
    batch_size: usize,
    num_steps: usize,
    device: &Device,
) -> Result<f64, ModelError> {
    let row_len = tokens.len() / batch_size.max(1);
    if row_len < 2 || num_steps == 0 {
        return Err(ModelError::InvalidValue {
            key: "tokens",
            value: format!("{} tokens in {batch_size} rows", tokens.len()),
            expected: "at least two tokens per row (use fewer rows or more text)".into(),
        });
    }
    // Off the autodiff device: nothing is recorded for a backward pass.
    let (model, device) = (&model.valid(), &device.clone().without_autodiff());
    let mut state = model.begin_state(batch_size, device);
    let (mut nll, mut count) = (0.0, 0usize);
    for start in (0..row_len - 1).step_by(num_steps) {
        let len = num_steps.min(row_len - 1 - start);
        let rows = |shift: usize| -> Tensor<2, Int> {
            let data: Vec<i64> = (0..batch_size)
                .flat_map(|r| &tokens[r * row_len + start + shift..][..len])
                .map(|&t| t as i64)
                .collect();
            Tensor::from_data(TensorData::new(data, [batch_size, len]), device)
        };
        let (logits, next) = model.forward(rows(0), state);
        state = next.detach();
        nll += token_losses(logits, rows(1))
            .into_data()
            .iter::<f64>()
            .sum::<f64>();
        count += len * batch_size;
    }
    Ok((nll / count as f64).exp())
}

/// `||dL/dH_t||` for the state entering each step `t = 0..num_steps` of one minibatch
/// (`L` the mean cross-entropy): the gradient that reaches `H_t` from the steps after it,
/// measured by adding a zero leaf to `h` at each step (book 8.7's picture of
/// vanishing and exploding gradients). One-layer, one-direction models.
pub fn grad_norms_through_time(
    model: &Model,
    x: Tensor<2, Int>,
    y: Tensor<2, Int>,
    state: State,
) -> Vec<f64> {
    let device = x.device();
    let mut probes: Vec<Tensor<2>> = Vec::new();
    let mut probe = |_: usize, s: CellState| {
        let leaf = Tensor::<2>::zeros(s.h.dims(), &device).require_grad();
        probes.push(leaf.clone());
        CellState {
            h: s.h + leaf,
            c: s.c,
        }
    };
    let (logits, _) = model.forward_with(x, state, &mut probe, None);
    let grads = cross_entropy(logits, y).backward();
    probes
        .iter()
        .map(|p| {
            p.grad(&grads)
                .map_or(0.0, |g| g.square().sum().sqrt().into_scalar::<f64>())
        })
        .collect()
}

/// Randomized truncation (Tallec & Ollivier 2017, book 8.7): at each of `num_steps` steps
/// the gradient continues into the previous state with probability `pi`, scaled by `1 / pi`
/// so its expectation is the full gradient, and stops otherwise. Returns the weights `s_t`
/// for `train_step` (`1 / pi` or 0), drawn in step order.
pub fn randomized_truncation<R: rand::Rng>(pi: f64, num_steps: usize, rng: &mut R) -> Vec<f64> {
    use rand::RngExt;
    (0..num_steps)
        .map(|_| {
            if rng.random::<f64>() < pi {
                1.0 / pi
            } else {
                0.0
            }
        })
        .collect()
}
