//! Recurrent language models, written once for every Burn backend (the `Device` picks
//! it): the book's RNN from scratch (8.5, `scratch.rs`:
//! `H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)`), and PyTorch-layout models of RNN, GRU and
//! LSTM cells (`cell.rs`) with one-hot or embedding input, stacked layers, dropout and a
//! tied decoder (`rnn.rs`; the book's 8.6 model is one of them). Gradient clipping
//! (`clip.rs`), generation (`predict.rs`), the training step (`step.rs`) with two engines
//! (Burn's autodiff, or backpropagation through time written out as in 8.7.2: `bptt/`,
//! `fused.rs`), and the PyTorch parity step (`parity.rs`).

#[macro_use] // `widest!`, for the dropout masks too
pub mod bptt;
mod cell;
mod clip;
mod dropout;
mod error;
mod fused;
mod host_optim;
mod init;
mod mlp;
mod model;
pub mod parity;
mod predict;
mod rnn;
mod scratch;
mod state;
mod step;
pub mod tensors;

pub use clip::{Clipping, grad_clipping, grad_norm};

/// `gate(t, state_{t-1})`: what the state entering step `t` becomes. The identity gives
/// ordinary backprop through the minibatch; a detach cuts the gradient there, a rescale
/// reweights it (randomized truncation), an added zero leaf measures it (book 8.7).
pub type StepGate<'a> = &'a mut dyn FnMut(usize, CellState) -> CellState;
pub use cell::{CellKind, CellParams};
pub use dropout::Dropout;
pub use error::ModelError;
pub use fused::{fused_applies, fused_supported};
pub use host_optim::{HostOptimizer, HostRule, HostTrainer};
pub use init::InitKind;
pub use mlp::SineMlp;
pub use model::{Model, ModelConfig, ModelKind, NamedParam};
pub use predict::{
    Decoding, Prediction, generate, predict, predict_ch8, prefix_tokens, sample,
    sampling_distribution, token_text, unknown_tokens,
};
pub use rnn::{LayerSpec, LinearHead, RnnLayer, RnnModel, RnnSpec};
pub use scratch::RnnModelScratch;
pub use state::{CellState, State};
pub use step::{
    Engine, Gradients, StepInput, StepResult, cross_entropy, grad_norms_through_time, gradients,
    perplexity_of, randomized_truncation, scale_gate, token_losses, train_step,
};

/// The token indices `X_t` of each step of a `[batch_size, num_steps]` minibatch.
/// Each step reads its own `[batch_size]` slice, so no step's gradient touches the
/// activations of the others (slicing one big tensor per step would make every
/// step's backward pass write a whole-minibatch zero tensor).
pub(crate) fn time_steps(
    x: burn::tensor::Tensor<2, burn::tensor::Int>,
) -> Vec<burn::tensor::Tensor<1, burn::tensor::Int>> {
    let [batch_size, num_steps] = x.dims();
    let time_major = x.transpose();
    (0..num_steps)
        .map(|t| time_major.clone().narrow(0, t, 1).reshape([batch_size]))
        .collect()
}
