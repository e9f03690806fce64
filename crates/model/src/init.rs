//! Parameter initialisation drawn on the host from a seeded rng, so a seed gives
//! the same model on every backend.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, RngExt};

fn param<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// `torch.randn(shape) * std`.
pub fn normal<const D: usize>(
    shape: [usize; D],
    std: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|_| (rnnlm_data::standard_normal(rng) * std) as f32)
        .collect();
    param(values, shape, device)
}

/// `U(-bound, bound)`: PyTorch's default for `nn.RNN` (bound `1/sqrt(hidden)`) and
/// `nn.Linear` (bound `1/sqrt(fan_in)`).
pub fn uniform<const D: usize>(
    shape: [usize; D],
    bound: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    param(values, shape, device)
}

pub fn zeros<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}
