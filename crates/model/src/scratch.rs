#![allow(non_snake_case)] // the book's names: W_xh, W_hh, W_hq, X, H, O

//! The RNN from scratch (book section 8.5): `get_params`, `init_rnn_state`, `rnn`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::Rng;

use crate::{init, time_steps};

/// `RNNModelScratch`: one hidden layer, one-hot inputs, a linear output.
#[derive(Module, Debug)]
pub struct RnnModelScratch {
    pub W_xh: Param<Tensor<2>>, // [vocab_size, num_hiddens]
    pub W_hh: Param<Tensor<2>>, // [num_hiddens, num_hiddens]
    pub b_h: Param<Tensor<1>>,  // [num_hiddens]
    pub W_hq: Param<Tensor<2>>, // [num_hiddens, vocab_size]
    pub b_q: Param<Tensor<1>>,  // [vocab_size]
}

impl RnnModelScratch {
    /// `get_params`: weights `N(0, 1) * 0.01`, biases zero.
    pub fn new(vocab_size: usize, num_hiddens: usize, rng: &mut impl Rng, device: &Device) -> Self {
        let (v, h) = (vocab_size, num_hiddens);
        Self {
            W_xh: init::normal([v, h], 0.01, rng, device),
            W_hh: init::normal([h, h], 0.01, rng, device),
            b_h: init::zeros([h], device),
            W_hq: init::normal([h, v], 0.01, rng, device),
            b_q: init::zeros([v], device),
        }
    }

    pub fn num_hiddens(&self) -> usize {
        self.W_hh.dims()[0]
    }

    /// `init_rnn_state`: zeros `[1, batch_size, num_hiddens]` (one layer).
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> Tensor<3> {
        Tensor::zeros([1, batch_size, self.num_hiddens()], device)
    }

    /// `rnn`: `X` is `[batch_size, num_steps]` token indices; returns logits
    /// `[num_steps * batch_size, vocab_size]` (row `t * batch_size + b`) and the final state.
    ///
    /// For each step t:
    ///     H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)
    ///     O_t = H_t W_hq + b_q
    /// `X_t` is one-hot, so `X_t W_xh + b_h` is a row lookup in `W_xh + b_h` (its gradient
    /// a scatter-add into the rows); `H_t W_hq` is one product over all steps after the loop.
    /// `gate(t, H_{t-1})` decides how gradients flow back through time into the previous
    /// state (identity, truncation, a probe: book 8.7).
    pub fn forward(
        &self,
        X: Tensor<2, Int>,
        state: Tensor<3>,
        gate: &mut dyn FnMut(usize, Tensor<2>) -> Tensor<2>,
    ) -> (Tensor<2>, Tensor<3>) {
        let [batch_size, num_steps] = X.dims();
        let W_xh_b = self.W_xh.val() + self.b_h.val().unsqueeze::<2>();
        let W_hh = self.W_hh.val();
        let mut H = state.reshape([batch_size, self.num_hiddens()]);
        let mut outputs = Vec::with_capacity(num_steps);
        for (t, X_t) in time_steps(X).into_iter().enumerate() {
            H = (W_xh_b.clone().select(0, X_t) + gate(t, H).matmul(W_hh.clone())).tanh();
            outputs.push(H.clone());
        }
        let O = Tensor::cat(outputs, 0).matmul(self.W_hq.val()) + self.b_q.val().unsqueeze::<2>();
        (O, H.unsqueeze::<3>())
    }
}
