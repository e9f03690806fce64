//! A recurrent language model laid out as PyTorch's: an optional embedding, an
//! `nn.RNN` / `nn.GRU` / `nn.LSTM` of stacked (and optionally bidirectional) layers, a
//! linear decoder, optionally tied to the embedding. With one-hot input and book names it
//! is the book's 8.6 `RNNModel`; with an embedding it is word_language_model's `RNNModel`.
//!
//! Burn's `burn::nn::{Rnn, Gru, Lstm}` are one layer, batch-first, Xavier-initialised,
//! store each gate as two `Linear`s and (GRU) return no final state; PyTorch parity
//! needs `weight_ih_l0 [G*H, in]`, two biases, stacking and both directions, so the
//! layer is written here over the cells of `cell.rs`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use rand::Rng;

use crate::cell::{CellKind, CellParams};
use crate::dropout::Dropout;
use crate::init::Init;
use crate::{CellState, ModelKind, State, StepGate, time_steps};

/// The first layer's input at each step: token indices (one-hot) or dense vectors.
enum FirstInput<'a> {
    Tokens(&'a [Tensor<1, Int>]),
    Dense(Vec<Tensor<2>>),
}

/// `nn.RNN/GRU/LSTM(input_size, hidden_size, num_layers, bidirectional)`, time-major.
/// Cell `layer * num_directions + direction` holds PyTorch's `*_l{layer}[_reverse]`.
#[derive(Module, Debug)]
pub struct RnnLayer {
    pub cells: Vec<CellParams>,
    #[module(skip)]
    pub bidirectional: bool,
    #[module(skip)]
    pub kind: CellKind,
}

/// How a layer is built: the cell, sizes and initialisation.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub kind: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub init: Init,
    pub forget_bias: Option<f64>,
}

impl RnnLayer {
    pub fn new(spec: &LayerSpec, rng: &mut impl Rng, device: &Device) -> Self {
        let d = if spec.bidirectional { 2 } else { 1 };
        let cells = (0..spec.num_layers * d)
            .map(|i| {
                let input = if i < d {
                    spec.input_size
                } else {
                    d * spec.hidden_size
                };
                CellParams::new(
                    spec.kind,
                    input,
                    spec.hidden_size,
                    &spec.init,
                    spec.forget_bias,
                    rng,
                    device,
                )
            })
            .collect();
        Self {
            cells,
            bidirectional: spec.bidirectional,
            kind: spec.kind,
        }
    }

    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    pub fn num_layers(&self) -> usize {
        self.cells.len() / self.num_directions()
    }

    pub fn hidden_size(&self) -> usize {
        self.cells[0].weight_hh.dims()[1]
    }

    /// PyTorch's name suffix for cell `i`: `l0`, `l0_reverse`, `l1`, ...
    pub fn cell_suffix(&self, i: usize) -> String {
        let d = self.num_directions();
        let reverse = if i % d == 1 { "_reverse" } else { "" };
        format!("l{}{reverse}", i / d)
    }

    /// Zeros `[num_directions * num_layers, batch_size, hidden]` (and `c` for an LSTM).
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        State::zeros(
            self.cells.len(),
            batch_size,
            self.hidden_size(),
            self.kind.has_cell_state(),
            device,
        )
    }

    /// `input [T, B, input_size]` -> `(Y [T, B, D * H], final state)`, as `nn.RNN` etc.
    pub fn forward(&self, input: Tensor<3>, state: State) -> (Tensor<3>, State) {
        let [t, b, n] = input.dims();
        let steps: Vec<Tensor<2>> = (0..t)
            .map(|i| input.clone().narrow(0, i, 1).reshape([b, n]))
            .collect();
        let (ys, h_n) = self.run(FirstInput::Dense(steps), t, state, &mut |_, s| s, None);
        let width = ys[0].dims()[1];
        (Tensor::cat(ys, 0).reshape([t, b, width]), h_n)
    }

    /// Runs every layer over the first layer's per-step inputs, dropping out between
    /// layers when `dropout` is given. Returns each step's `[B, D * H]` output of the
    /// last layer and the final state.
    fn run(
        &self,
        first_input: FirstInput,
        num_steps: usize,
        state: State,
        gate: StepGate,
        mut dropout: Option<&mut Dropout>,
    ) -> (Vec<Tensor<2>>, State) {
        let d = self.num_directions();
        let mut below: Option<Vec<Tensor<2>>> = None;
        let mut finals = Vec::with_capacity(self.cells.len());
        for layer in 0..self.num_layers() {
            if let (Some(xs), Some(drop)) = (below.as_mut(), dropout.as_deref_mut()) {
                for x in xs.iter_mut() {
                    *x = drop.apply(x.clone());
                }
            }
            let mut directions = Vec::with_capacity(d);
            for dir in 0..d {
                let i = layer * d + dir;
                let cell = &self.cells[i];
                let w_ih_t = cell.weight_ih.val().transpose();
                let b_ih = cell.bias_ih.val().unsqueeze::<2>();
                // gi_t = x_t W_ih^T + b_ih; for one-hot x_t a row of (W_ih^T + b_ih).
                let input: Box<dyn Fn(usize) -> Tensor<2>> = match (&below, &first_input) {
                    (None, FirstInput::Tokens(steps)) => {
                        let table = w_ih_t + b_ih;
                        Box::new(move |t| table.clone().select(0, steps[t].clone()))
                    }
                    (Some(xs), _) | (None, FirstInput::Dense(xs)) => {
                        Box::new(move |t| xs[t].clone().matmul(w_ih_t.clone()) + b_ih.clone())
                    }
                };
                let (ys, last) = self.recur(cell, &input, state.cell(i), num_steps, dir == 1, gate);
                directions.push(ys);
                finals.push(last);
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
            State::stack(finals),
        )
    }

    /// The recurrence of one cell over `input(t) = x_t W_ih^T + b_ih`; outputs in time order.
    fn recur(
        &self,
        cell: &CellParams,
        input: &dyn Fn(usize) -> Tensor<2>,
        mut state: CellState,
        num_steps: usize,
        reverse: bool,
        gate: StepGate,
    ) -> (Vec<Tensor<2>>, CellState) {
        let w_hh_t = cell.weight_hh.val().transpose();
        let b_hh = cell.bias_hh.val().unsqueeze::<2>();
        let mut outputs = vec![None; num_steps];
        for s in 0..num_steps {
            let t = if reverse { num_steps - 1 - s } else { s };
            state = self.kind.step(input(t), gate(t, state), &w_hh_t, &b_hh);
            outputs[t] = Some(state.h.clone());
        }
        let outputs = outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        (outputs, state)
    }
}

/// `nn.Linear(in, out)` in PyTorch's layout, `y = x W^T + b`; without a weight of its
/// own when tied to the embedding.
#[derive(Module, Debug)]
pub struct LinearHead {
    pub weight: Option<Param<Tensor<2>>>, // [out, in]
    pub bias: Param<Tensor<1>>,           // [out]
}

/// What an `RnnModel` is made of.
pub struct RnnSpec {
    pub layer: LayerSpec,
    pub vocab_size: usize,
    /// 0: one-hot input (the book, char-rnn); else an `nn.Embedding(V, E)`.
    pub embedding_dim: usize,
    pub tied: bool,
    pub dropout: f64,
    /// `concise` or `lm`: which names the parameters go by.
    pub kind: ModelKind,
}

/// The language model: `encoder -> rnn -> decoder`, dropout as word_language_model
/// applies it (embedding output, between layers, last layer's output; training only).
#[derive(Module, Debug)]
pub struct RnnModel {
    pub encoder: Option<Param<Tensor<2>>>, // [V, E]
    pub rnn: RnnLayer,
    pub decoder: LinearHead,
    #[module(skip)]
    pub dropout: f64,
    #[module(skip)]
    pub kind: ModelKind,
}

impl RnnModel {
    /// Draws the parameters in PyTorch's module order: encoder, rnn, decoder.
    pub fn new(spec: &RnnSpec, rng: &mut impl Rng, device: &Device) -> Self {
        let (v, e) = (spec.vocab_size, spec.embedding_dim);
        let init = spec.layer.init;
        let encoder = (e > 0).then(|| init.embedding([v, e], rng, device));
        let input_size = if e > 0 { e } else { v };
        let rnn = RnnLayer::new(
            &LayerSpec {
                input_size,
                ..spec.layer.clone()
            },
            rng,
            device,
        );
        let width = spec.layer.hidden_size * rnn.num_directions();
        let bound = 1.0 / (width as f64).sqrt();
        let weight = (!spec.tied).then(|| init.weight([v, width], bound, rng, device));
        let decoder = LinearHead {
            weight,
            bias: init.bias([v], bound, rng, device),
        };
        Self {
            encoder,
            rnn,
            decoder,
            dropout: spec.dropout,
            kind: spec.kind,
        }
    }

    pub fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        self.rnn.begin_state(batch_size, device)
    }

    /// The decoder's weight `[V, D * H]`: its own, or the embedding when tied.
    pub fn decoder_weight(&self) -> Tensor<2> {
        match (&self.decoder.weight, &self.encoder) {
            (Some(w), _) | (None, Some(w)) => w.val(),
            (None, None) => unreachable!("a tied decoder has an encoder (checked at build)"),
        }
    }

    /// `inputs [B, T]` token indices -> logits `[T * B, V]` (row `t * B + b`) and the state.
    /// `dropout` (training) draws the masks; `None` evaluates.
    pub fn forward(
        &self,
        inputs: Tensor<2, Int>,
        state: State,
        gate: StepGate,
        mut dropout: Option<&mut Dropout>,
    ) -> (Tensor<2>, State) {
        let num_steps = inputs.dims()[1];
        let steps = time_steps(inputs);
        let first = match &self.encoder {
            None => FirstInput::Tokens(&steps),
            Some(table) => FirstInput::Dense(
                steps
                    .iter()
                    .map(|x_t| {
                        let e = table.val().select(0, x_t.clone());
                        match dropout.as_deref_mut() {
                            Some(drop) => drop.apply(e),
                            None => e,
                        }
                    })
                    .collect(),
            ),
        };
        let (ys, state) = self
            .rnn
            .run(first, num_steps, state, gate, dropout.as_deref_mut());
        let mut y = Tensor::cat(ys, 0);
        if let Some(drop) = dropout {
            y = drop.apply(y);
        }
        let logits =
            y.matmul(self.decoder_weight().transpose()) + self.decoder.bias.val().unsqueeze::<2>();
        (logits, state)
    }
}
