//! `grad_clipping` (book 8.5.5): scale all gradients together so their global L2 norm
//! is at most `theta`. Burn's `GradientClipping::Norm` clips each tensor on its own,
//! which is a different rule.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SumOfSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SumOfSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: Tensor<1>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let factor = self.factor.clone().reshape([1; D]);
            self.grads.register(param.id, g * factor);
        }
    }
}

/// The global L2 norm of all of `module`'s gradients, as a one-element tensor.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut visitor = SumOfSquares { grads, total: None };
    module.visit(&mut visitor);
    visitor.total.map(Tensor::sqrt)
}

/// `g *= theta / ||g||` for every gradient when `||g|| > theta`. Returns the clipped
/// gradients and the norm before clipping. Stays on the device: the factor is
/// `min(1, theta / ||g||)`, which is exactly 1 when no clipping is needed.
pub fn grad_clipping<M: Module>(
    module: &M,
    mut grads: GradientsParams,
    theta: f64,
) -> (GradientsParams, Option<Tensor<1>>) {
    let Some(norm) = grad_norm(module, &grads) else {
        return (grads, None);
    };
    let factor = (Tensor::full([1], theta, &norm.device()) / norm.clone()).clamp_max(1.0);
    module.visit(&mut Scale {
        grads: &mut grads,
        factor,
    });
    (grads, Some(norm))
}
