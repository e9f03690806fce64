//! An `nn.RNN`-style layer with PyTorch's parameterisation and a linear head (book 8.6).
//!
//! Burn's own `burn::nn::Rnn` is one layer, batch-first, Xavier-initialised and names its
//! weights differently; PyTorch parity needs `weight_ih_l0 [H, in]`, two biases,
//! `U(-1/sqrt(H), 1/sqrt(H))` init, stacking and both directions, so the layer is written here.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{StepGate, init, time_steps};

/// The recurrence's activation, as `nn.RNN(nonlinearity=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    #[default]
    Tanh,
    Relu,
}

impl Nonlinearity {
    fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Tanh => x.tanh(),
            Self::Relu => burn::tensor::activation::relu(x),
        }
    }
}

/// The first layer's input at each step: token indices (one-hot) or dense vectors.
enum FirstInput<'a> {
    Tokens(&'a [Tensor<1, Int>]),
    Dense(&'a [Tensor<2>]),
}

/// `t -> x_t W_ih^T + b` over per-step inputs.
fn dense_input<'a>(
    xs: &'a [Tensor<2>],
    w_ih_t: Tensor<2>,
    biases: Tensor<2>,
) -> Box<dyn Fn(usize) -> Tensor<2> + 'a> {
    Box::new(move |t| xs[t].clone().matmul(w_ih_t.clone()) + biases.clone())
}

/// One direction of one layer: `h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`.
#[derive(Module, Debug)]
pub struct RnnCell {
    pub weight_ih: Param<Tensor<2>>, // [hidden, input]
    pub weight_hh: Param<Tensor<2>>, // [hidden, hidden]
    pub bias_ih: Param<Tensor<1>>,
    pub bias_hh: Param<Tensor<1>>,
}

impl RnnCell {
    fn new(input: usize, hidden: usize, rng: &mut impl Rng, device: &Device) -> Self {
        let k = 1.0 / (hidden as f64).sqrt();
        Self {
            weight_ih: init::uniform([hidden, input], k, rng, device),
            weight_hh: init::uniform([hidden, hidden], k, rng, device),
            bias_ih: init::uniform([hidden], k, rng, device),
            bias_hh: init::uniform([hidden], k, rng, device),
        }
    }
}

/// `nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bidirectional)`, time-major.
/// Cell `layer * num_directions + direction` holds PyTorch's `*_l{layer}[_reverse]`.
#[derive(Module, Debug)]
pub struct RnnLayer {
    pub cells: Vec<RnnCell>,
    pub bidirectional: bool,
    #[module(skip)]
    pub nonlinearity: Nonlinearity,
}

impl RnnLayer {
    pub fn new(
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bidirectional: bool,
        nonlinearity: Nonlinearity,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Self {
        let d = if bidirectional { 2 } else { 1 };
        let cells = (0..num_layers * d)
            .map(|i| {
                let input = if i < d { input_size } else { d * hidden_size };
                RnnCell::new(input, hidden_size, rng, device)
            })
            .collect();
        Self {
            cells,
            bidirectional,
            nonlinearity,
        }
    }

    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    pub fn num_layers(&self) -> usize {
        self.cells.len() / self.num_directions()
    }

    pub fn hidden_size(&self) -> usize {
        self.cells[0].weight_hh.dims()[0]
    }

    /// PyTorch's name suffix for cell `i`: `l0`, `l0_reverse`, `l1`, ...
    pub fn cell_suffix(&self, i: usize) -> String {
        let d = self.num_directions();
        let reverse = if i % d == 1 { "_reverse" } else { "" };
        format!("l{}{reverse}", i / d)
    }

    /// `input [T, B, input_size]`, `state [D * num_layers, B, H]` ->
    /// `(Y [T, B, D * H], H_n [D * num_layers, B, H])`.
    pub fn forward(&self, input: Tensor<3>, state: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [t, b, n] = input.dims();
        let steps: Vec<Tensor<2>> = (0..t)
            .map(|i| input.clone().narrow(0, i, 1).reshape([b, n]))
            .collect();
        let (ys, h_n) = self.run(FirstInput::Dense(&steps), t, b, state, &mut |_, h| h);
        let width = ys[0].dims()[1];
        (Tensor::cat(ys, 0).reshape([t, b, width]), h_n)
    }

    /// `forward(one_hot(tokens))` for `tokens [B, T]`, with the first layer's one-hot
    /// product done as a row lookup in `W_ih^T`. Returns `Y` as `[T * B, D * H]`.
    /// `gate(t, h_{t-1})` shapes the gradient flowing back through time (book 8.7).
    pub fn forward_tokens(
        &self,
        tokens: Tensor<2, Int>,
        state: Tensor<3>,
        gate: StepGate,
    ) -> (Tensor<2>, Tensor<3>) {
        let [b, t] = tokens.dims();
        let steps = time_steps(tokens);
        let (ys, h_n) = self.run(FirstInput::Tokens(&steps), t, b, state, gate);
        (Tensor::cat(ys, 0), h_n)
    }

    /// Runs every layer over the first layer's per-step inputs. Returns each step's
    /// `[B, D * H]` output of the last layer and the final states.
    fn run(
        &self,
        first_input: FirstInput,
        num_steps: usize,
        batch_size: usize,
        state: Tensor<3>,
        gate: StepGate,
    ) -> (Vec<Tensor<2>>, Tensor<3>) {
        let (d, h) = (self.num_directions(), self.hidden_size());
        let mut below: Option<Vec<Tensor<2>>> = None;
        let mut finals = Vec::with_capacity(self.cells.len());
        for layer in 0..self.num_layers() {
            let mut directions = Vec::with_capacity(d);
            for dir in 0..d {
                let i = layer * d + dir;
                let cell = &self.cells[i];
                let w_ih_t = cell.weight_ih.val().transpose();
                let biases = (cell.bias_ih.val() + cell.bias_hh.val()).unsqueeze::<2>();
                // x_t W_ih^T + b_ih + b_hh; for one-hot x_t a row of (W_ih^T + b_ih + b_hh).
                let input: Box<dyn Fn(usize) -> Tensor<2>> = match (&below, &first_input) {
                    (None, FirstInput::Tokens(steps)) => {
                        let table = w_ih_t + biases;
                        Box::new(move |t| table.clone().select(0, steps[t].clone()))
                    }
                    (Some(xs), _) => dense_input(xs, w_ih_t, biases),
                    (None, FirstInput::Dense(xs)) => dense_input(xs, w_ih_t, biases),
                };
                let h0 = state.clone().narrow(0, i, 1).reshape([batch_size, h]);
                let (ys, h_last) = self.recur(
                    &input,
                    h0,
                    cell.weight_hh.val().transpose(),
                    num_steps,
                    dir == 1,
                    gate,
                );
                directions.push(ys);
                finals.push(h_last.unsqueeze::<3>());
            }
            below = Some(if d == 1 {
                directions.pop().expect("one direction")
            } else {
                let (forward, backward) = (&directions[0], &directions[1]);
                (0..num_steps)
                    .map(|t| Tensor::cat(vec![forward[t].clone(), backward[t].clone()], 1))
                    .collect()
            });
        }
        (
            below.expect("a layer has at least one cell"),
            Tensor::cat(finals, 0),
        )
    }

    /// The recurrence over `input(t) = x_t W_ih^T + b`; outputs in time order.
    fn recur(
        &self,
        input: &dyn Fn(usize) -> Tensor<2>,
        mut h: Tensor<2>,
        w_hh_t: Tensor<2>,
        num_steps: usize,
        reverse: bool,
        gate: StepGate,
    ) -> (Vec<Tensor<2>>, Tensor<2>) {
        let mut outputs = vec![None; num_steps];
        for s in 0..num_steps {
            let t = if reverse { num_steps - 1 - s } else { s };
            h = self
                .nonlinearity
                .apply(input(t) + gate(t, h).matmul(w_hh_t.clone()));
            outputs[t] = Some(h.clone());
        }
        let outputs = outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        (outputs, h)
    }
}

/// `nn.Linear(in, out)` in PyTorch's layout: `y = x W^T + b`.
#[derive(Module, Debug)]
pub struct LinearHead {
    pub weight: Param<Tensor<2>>, // [out, in]
    pub bias: Param<Tensor<1>>,   // [out]
}

impl LinearHead {
    fn new(input: usize, output: usize, rng: &mut impl Rng, device: &Device) -> Self {
        let k = 1.0 / (input as f64).sqrt();
        Self {
            weight: init::uniform([output, input], k, rng, device),
            bias: init::uniform([output], k, rng, device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze::<2>()
    }
}

/// `RNNModel` (book 8.6): the recurrent layer plus a linear head over its outputs.
#[derive(Module, Debug)]
pub struct RnnModel {
    pub rnn: RnnLayer,
    pub linear: LinearHead,
}

impl RnnModel {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vocab_size: usize,
        num_hiddens: usize,
        num_layers: usize,
        bidirectional: bool,
        nonlinearity: Nonlinearity,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Self {
        let rnn = RnnLayer::new(
            vocab_size,
            num_hiddens,
            num_layers,
            bidirectional,
            nonlinearity,
            rng,
            device,
        );
        let linear = LinearHead::new(num_hiddens * rnn.num_directions(), vocab_size, rng, device);
        Self { rnn, linear }
    }

    /// Zeros `[num_directions * num_layers, batch_size, num_hiddens]`.
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> Tensor<3> {
        Tensor::zeros(
            [self.rnn.cells.len(), batch_size, self.rnn.hidden_size()],
            device,
        )
    }

    /// `inputs [B, T]` token indices -> logits `[T * B, V]` (row `t * B + b`) and the state.
    pub fn forward(
        &self,
        inputs: Tensor<2, Int>,
        state: Tensor<3>,
        gate: StepGate,
    ) -> (Tensor<2>, Tensor<3>) {
        let (y, state) = self.rnn.forward_tokens(inputs, state, gate);
        (self.linear.forward(y), state)
    }
}
