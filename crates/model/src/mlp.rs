//! The autoregressive MLP of book section 8.1: `Linear(tau, 10) -> ReLU -> Linear(10, 1)`,
//! Xavier-uniform weights (`init_weights`).

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};

#[derive(Module, Debug)]
pub struct SineMlp {
    hidden: Linear,
    activation: Relu,
    output: Linear,
}

impl SineMlp {
    pub fn new(tau: usize, num_hiddens: usize, device: &Device) -> Self {
        let xavier = Initializer::XavierUniform { gain: 1.0 };
        Self {
            hidden: LinearConfig::new(tau, num_hiddens)
                .with_initializer(xavier.clone())
                .init(device),
            activation: Relu::new(),
            output: LinearConfig::new(num_hiddens, 1)
                .with_initializer(xavier)
                .init(device),
        }
    }

    /// `[batch, tau] -> [batch, 1]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}
