//! The recurrent cells, with PyTorch's packing and equations exactly: `nn.RNN`
//! (tanh / relu), `nn.GRU` and `nn.LSTM`. Each direction of each layer holds
//! `weight_ih [G*H, in]`, `weight_hh [G*H, H]`, `bias_ih`, `bias_hh [G*H]`, the `G` gates
//! stacked in PyTorch's order (LSTM `i, f, g, o`; GRU `r, z, n`).

use burn::module::{Module, Param};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::CellState;
use crate::init::Init;

/// Which recurrence a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// `h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)` (`nn.RNN`, the book's 8.6).
    #[default]
    RnnTanh,
    /// The same with `relu`.
    RnnRelu,
    /// `nn.GRU`.
    Gru,
    /// `nn.LSTM`.
    Lstm,
}

impl CellKind {
    pub const ALL: [CellKind; 4] = [Self::RnnTanh, Self::RnnRelu, Self::Gru, Self::Lstm];

    /// Gates stacked in the weights: `G`.
    pub fn gates(self) -> usize {
        match self {
            Self::RnnTanh | Self::RnnRelu => 1,
            Self::Gru => 3,
            Self::Lstm => 4,
        }
    }

    /// Whether the state has a memory cell `c` beside `h`.
    pub fn has_cell_state(self) -> bool {
        self == Self::Lstm
    }

    /// The config and fixture name: `rnn_tanh`, `rnn_relu`, `gru`, `lstm`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RnnTanh => "rnn_tanh",
            Self::RnnRelu => "rnn_relu",
            Self::Gru => "gru",
            Self::Lstm => "lstm",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// One step from `gi = x_t W_ih^T + b_ih` (`[B, G*H]`, computed outside so a whole
    /// minibatch's can be one product or a row lookup) and the previous state.
    pub fn step(
        self,
        gi: Tensor<2>,
        state: CellState,
        w_hh_t: &Tensor<2>,
        b_hh: &Tensor<2>,
    ) -> CellState {
        let CellState { h, c } = state;
        let gh = h.clone().matmul(w_hh_t.clone()) + b_hh.clone();
        match self {
            // h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)
            Self::RnnTanh => CellState {
                h: (gi + gh).tanh(),
                c: None,
            },
            Self::RnnRelu => CellState {
                h: relu(gi + gh),
                c: None,
            },
            Self::Gru => {
                let [i_r, i_z, i_n] = split3(gi);
                let [h_r, h_z, h_n] = split3(gh);
                let r = sigmoid(i_r + h_r);
                let z = sigmoid(i_z + h_z);
                // b_hn sits inside the reset: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
                let n = (i_n + r * h_n).tanh();
                // h_t = (1 - z) * n + z * h_{t-1}
                let h = n.clone() - z.clone() * n + z * h;
                CellState { h, c: None }
            }
            Self::Lstm => {
                let [i, f, g, o] = split4(gi + gh);
                let (i, f, g, o) = (sigmoid(i), sigmoid(f), g.tanh(), sigmoid(o));
                let c = c.expect("an LSTM state has a memory cell");
                // c_t = f_t * c_{t-1} + i_t * g_t,  h_t = o_t * tanh(c_t)
                let c = f * c + i * g;
                let h = o * c.clone().tanh();
                CellState { h, c: Some(c) }
            }
        }
    }
}

/// `1 / (1 + e^-x)`, as `(1 + tanh(x / 2)) / 2`. Burn's default `sigmoid` (what ndarray
/// uses) computes in float32 whatever the tensor's dtype, which float64 parity catches.
fn sigmoid(x: Tensor<2>) -> Tensor<2> {
    x.mul_scalar(0.5).tanh().mul_scalar(0.5).add_scalar(0.5)
}

fn split3(x: Tensor<2>) -> [Tensor<2>; 3] {
    let v = x.chunk(3, 1);
    let mut it = v.into_iter();
    std::array::from_fn(|_| it.next().expect("three gates"))
}

fn split4(x: Tensor<2>) -> [Tensor<2>; 4] {
    let v = x.chunk(4, 1);
    let mut it = v.into_iter();
    std::array::from_fn(|_| it.next().expect("four gates"))
}

/// The parameters of one direction of one layer, PyTorch's `*_l{k}[_reverse]`.
#[derive(Module, Debug)]
pub struct CellParams {
    pub weight_ih: Param<Tensor<2>>, // [G*H, input]
    pub weight_hh: Param<Tensor<2>>, // [G*H, H]
    pub bias_ih: Param<Tensor<1>>,   // [G*H]
    pub bias_hh: Param<Tensor<1>>,   // [G*H]
}

impl CellParams {
    /// `init` draws every tensor (PyTorch's default: `U(-1/sqrt(H), 1/sqrt(H))`); an LSTM's
    /// `forget_bias`, when given, fills the forget gate's `bias_ih` (char-rnn sets 1).
    pub fn new(
        kind: CellKind,
        input: usize,
        hidden: usize,
        init: &Init,
        forget_bias: Option<f64>,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Self {
        let gh = kind.gates() * hidden;
        let default = 1.0 / (hidden as f64).sqrt();
        let weight_ih = init.weight([gh, input], default, rng, device);
        let weight_hh = init.weight([gh, hidden], default, rng, device);
        let mut bias_ih = init.bias_values(gh, default, rng);
        let bias_hh = init.bias([gh], default, rng, device);
        if let (CellKind::Lstm, Some(value)) = (kind, forget_bias) {
            bias_ih[hidden..2 * hidden].fill(value as f32);
        }
        Self {
            weight_ih,
            weight_hh,
            bias_ih: crate::init::param(bias_ih, [gh], device),
            bias_hh,
        }
    }
}
