//! The loss and one training step shared by the trainer and the parity check.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};

use serde::{Deserialize, Serialize};

use crate::{Model, ModelError, fused, grad_clipping};

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

/// What one update did, for logging and the parity check.
pub struct StepResult {
    pub model: Model,
    pub loss: Tensor<1>,
    /// The loss of every target token (detached), for reports that sum them on the host:
    /// a parallel device-side mean may associate differently from run to run.
    pub token_losses: Tensor<1>,
    pub logits: Tensor<2>,
    pub state: Tensor<3>,
    pub grad_norm: Option<Tensor<1>>,
    /// With `keep_grads`: every gradient by parameter name, before and after clipping.
    pub grads: Vec<(String, TensorData)>,
    pub clipped_grads: Vec<(String, TensorData)>,
}

/// How a training step computes its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Burn's autodiff over the model's forward: any model, any backend.
    Autodiff,
    /// The written-out BPTT kernel on the host (`bptt`): one-direction models, stacked or not;
    /// several times faster on CPU backends.
    Fused,
}

/// The gate of `scales` (see `randomized_truncation`): `s_t` weights the gradient entering
/// `H_{t-1}` at step `t` while leaving its value as it is.
pub fn scale_gate(scales: Option<&[f64]>) -> impl FnMut(usize, Tensor<2>) -> Tensor<2> + '_ {
    move |t, h| match scales.map_or(1.0, |s| s[t]) {
        1.0 => h,
        0.0 => h.detach(),
        s => h.clone().mul_scalar(s) + h.detach().mul_scalar(1.0 - s),
    }
}

/// Forward, backward (with `scales` weighting the gradient through each step's incoming
/// state, `None` for plain BPTT), `grad_clipping(theta)`, `optimizer.step(lr)`.
/// `keep_grads` keeps a copy of the unclipped gradients (the parity check reads them).
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    model: Model,
    optimizer: &mut ModuleOptimizer,
    x: Tensor<2, Int>,
    y: Tensor<2, Int>,
    state: Tensor<3>,
    scales: Option<&[f64]>,
    engine: Engine,
    theta: f64,
    lr: f64,
    keep_grads: bool,
) -> Result<StepResult, ModelError> {
    let (grads, logits, losses, state) = match engine {
        Engine::Autodiff => {
            let (logits, state) = model.forward_gated(x, state, &mut scale_gate(scales));
            let losses = token_losses(logits.clone(), y);
            let grads = GradientsParams::from_grads(losses.clone().mean().backward(), &model);
            (grads, logits, losses, state)
        }
        Engine::Fused => {
            let f = fused::forward_backward(&model, &x, &y, state, scales)?;
            (f.grads, f.logits, f.token_losses, f.state)
        }
    };
    let read = |g: &GradientsParams| -> Vec<(String, TensorData)> {
        if !keep_grads {
            return Vec::new();
        }
        let named = model.named_params().into_iter();
        named
            .filter_map(|(name, p)| Some((name, p.grad(g)?)))
            .collect()
    };
    let kept = read(&grads);
    let (clipped, grad_norm) = grad_clipping(&model, grads, theta);
    let clipped_grads = read(&clipped);
    let model = optimizer.step(lr, model, clipped);
    Ok(StepResult {
        model,
        loss: losses.clone().mean().detach(),
        token_losses: losses.detach(),
        logits: logits.detach(),
        state: state.detach(),
        grad_norm,
        grads: kept,
        clipped_grads,
    })
}

/// Perplexity of `tokens[1..]` read left to right from a zero state, each token
/// predicted from all before it (one row, `num_steps` tokens per forward, state carried).
pub fn perplexity_of(model: &Model, tokens: &[usize], num_steps: usize, device: &Device) -> f64 {
    let mut state = model.begin_state(1, device);
    let (mut nll, mut count) = (0.0, 0usize);
    for start in (0..tokens.len().saturating_sub(1)).step_by(num_steps.max(1)) {
        let end = (start + num_steps).min(tokens.len() - 1);
        let row = |from: usize| -> Tensor<2, Int> {
            let data: Vec<i64> = tokens[from..from + end - start]
                .iter()
                .map(|&t| t as i64)
                .collect();
            Tensor::from_data(TensorData::new(data, [1, end - start]), device)
        };
        let (logits, next) = model.forward(row(start), state);
        state = next.detach();
        nll += token_losses(logits, row(start + 1))
            .into_data()
            .iter::<f64>()
            .sum::<f64>();
        count += end - start;
    }
    (nll / count as f64).exp()
}

/// `||dL/dH_t||` for the state entering each step `t = 0..num_steps` of one minibatch
/// (`L` the mean cross-entropy): the gradient that reaches `H_t` from the steps after it,
/// measured by adding a zero leaf to the state at each step (book 8.7's picture of
/// vanishing and exploding gradients). One-layer, one-direction models.
pub fn grad_norms_through_time(
    model: &Model,
    x: Tensor<2, Int>,
    y: Tensor<2, Int>,
    state: Tensor<3>,
) -> Vec<f64> {
    let device = x.device();
    let mut probes: Vec<Tensor<2>> = Vec::new();
    let mut probe = |_: usize, h: Tensor<2>| {
        let leaf = Tensor::<2>::zeros(h.dims(), &device).require_grad();
        probes.push(leaf.clone());
        h + leaf
    };
    let (logits, _) = model.forward_gated(x, state, &mut probe);
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
