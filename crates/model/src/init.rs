//! Parameter initialisation drawn on the host from a seeded rng, so a seed gives
//! the same model on every backend.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

/// How a model's parameters are drawn (`model.init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// The book's `get_params`: weights `N(0, 0.01)`, biases zero.
    Book,
    /// Every parameter `U(-init_range, init_range)` (Zaremba et al. 0.1, char-rnn 0.08).
    Uniform,
    /// PyTorch's defaults: recurrent and linear `U(-1/sqrt(fan), 1/sqrt(fan))`, embedding `N(0, 1)`.
    #[default]
    Pytorch,
}

/// An `InitKind` with its range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Init {
    pub kind: InitKind,
    pub range: f64,
}

impl Init {
    /// A weight; `bound` is PyTorch's default bound for it.
    pub fn weight<const D: usize>(
        &self,
        shape: [usize; D],
        bound: f64,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Param<Tensor<D>> {
        let n = shape.iter().product();
        let values = match self.kind {
            InitKind::Book => normal_values(n, 0.01, rng),
            InitKind::Uniform => uniform_values(n, self.range, rng),
            InitKind::Pytorch => uniform_values(n, bound, rng),
        };
        param(values, shape, device)
    }

    pub fn bias_values(&self, n: usize, bound: f64, rng: &mut impl Rng) -> Vec<f32> {
        match self.kind {
            InitKind::Book => vec![0.0; n],
            InitKind::Uniform => uniform_values(n, self.range, rng),
            InitKind::Pytorch => uniform_values(n, bound, rng),
        }
    }

    pub fn bias(
        &self,
        shape: [usize; 1],
        bound: f64,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Param<Tensor<1>> {
        param(self.bias_values(shape[0], bound, rng), shape, device)
    }

    /// An embedding table `[V, E]` (`nn.Embedding`'s default is `N(0, 1)`).
    pub fn embedding(
        &self,
        shape: [usize; 2],
        rng: &mut impl Rng,
        device: &Device,
    ) -> Param<Tensor<2>> {
        let n = shape.iter().product();
        let values = match self.kind {
            InitKind::Book => normal_values(n, 0.01, rng),
            InitKind::Uniform => uniform_values(n, self.range, rng),
            InitKind::Pytorch => normal_values(n, 1.0, rng),
        };
        param(values, shape, device)
    }
}

pub(crate) fn param<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

fn normal_values(n: usize, std: f64, rng: &mut impl Rng) -> Vec<f32> {
    (0..n)
        .map(|_| (rnnlm_data::standard_normal(rng) * std) as f32)
        .collect()
}

fn uniform_values(n: usize, bound: f64, rng: &mut impl Rng) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

/// `torch.randn(shape) * std`.
pub fn normal<const D: usize>(
    shape: [usize; D],
    std: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    param(
        normal_values(shape.iter().product(), std, rng),
        shape,
        device,
    )
}

pub fn zeros<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}
