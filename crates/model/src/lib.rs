//! The two recurrent language models of Dive into Deep Learning chapter 8, written once
//! for every Burn backend (the `Device` picks it): the RNN from scratch (8.5,
//! `scratch.rs`: `H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)`) and an `nn.RNN`-style layer
//! with a linear head (8.6, `rnn.rs`); global-norm gradient clipping (`clip.rs`),
//! `predict_ch8` (`predict.rs`), and the PyTorch parity step (`parity.rs`).

mod clip;
mod error;
mod init;
mod mlp;
mod model;
pub mod parity;
mod predict;
mod rnn;
mod scratch;
mod step;
pub mod tensors;

pub use clip::{grad_clipping, grad_norm};

/// `gate(t, H_{t-1})`: what the state entering step `t` becomes. The identity gives
/// ordinary backprop through the minibatch; a detach cuts the gradient there, a rescale
/// reweights it (randomized truncation), an added zero leaf measures it (book 8.7).
pub type StepGate<'a> =
    &'a mut dyn FnMut(usize, burn::tensor::Tensor<2>) -> burn::tensor::Tensor<2>;
pub use error::ModelError;
pub use mlp::SineMlp;
pub use model::{Model, ModelConfig, ModelKind, NamedParam};
pub use predict::{Decoding, Prediction, predict, predict_ch8, sample};
pub use rnn::{LinearHead, Nonlinearity, RnnCell, RnnLayer, RnnModel};
pub use scratch::RnnModelScratch;
pub use step::{
    StepResult, cross_entropy, grad_norms_through_time, perplexity_of, randomized_truncation,
    token_losses, train_step,
};
