//! `grad_clipping` (book 8.5.5): scale all gradients together so their global L2 norm
//! is at most `theta`. Burn's `GradientClipping::Norm` clips each tensor on its own,
//! which is a different rule.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use rayon::prelude::*;

use crate::bptt::{Real, sum_of_squares};

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

struct ClampValues<'a> {
    grads: &'a mut GradientsParams,
    limit: f64,
}

impl ModuleVisitor for ClampValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register(param.id, g.clamp(-self.limit, self.limit));
        }
    }
}

/// How gradients are clipped before the update: each value into `[-value, value]`
/// (char-rnn's `grad_clip`), then all together to global norm `norm` (the book's `theta`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Clipping {
    pub norm: Option<f64>,
    pub value: Option<f64>,
}

impl Clipping {
    /// The book's `grad_clipping(theta)`.
    pub fn norm(theta: f64) -> Self {
        Self {
            norm: Some(theta),
            value: None,
        }
    }

    /// Clips `grads`; returns them and their global norm before any norm clipping.
    pub fn apply<M: Module>(
        &self,
        module: &M,
        mut grads: GradientsParams,
    ) -> (GradientsParams, Option<Tensor<1>>) {
        if let Some(limit) = self.value {
            module.visit(&mut ClampValues {
                grads: &mut grads,
                limit,
            });
        }
        match self.norm {
            Some(theta) => grad_clipping(module, grads, theta),
            None => {
                let norm = grad_norm(module, &grads);
                (grads, norm)
            }
        }
    }

    /// `apply` for gradients held on the host (the fused engine clips before they become
    /// tensors): the same rule, the norm summed in f64. Returns the norm before any norm
    /// clipping.
    pub fn apply_host<T: Real>(&self, grads: &mut [&mut [T]]) -> f64 {
        let (norm, factor) = self.clip_host(grads);
        if let Some(factor) = factor {
            scale_host(grads, factor);
        }
        norm
    }

    /// `apply_host` but for the norm's factor, returned for the caller to multiply by (as
    /// `scale_host` does; an optimizer can fold it into its update): the norm before any
    /// norm clipping and `Some(theta / norm)` where that is below 1.
    pub fn clip_host<T: Real>(&self, grads: &mut [&mut [T]]) -> (f64, Option<T>) {
        // Across the threads; the norm's terms summed in order, so that it rounds alike in
        // every run and at every thread count.
        if let Some(limit) = self.value {
            let (lo, hi) = (T::from_f64(-limit), T::from_f64(limit));
            grads.par_iter_mut().for_each(|g| {
                g.iter_mut().for_each(|g| *g = g.max_of(lo).min_of(hi));
            });
        }
        // In chunks of a fixed size, so that PTB's 8 MB decoder gradient is not one
        // thread's task while the others wait.
        let squares: Vec<f64> = (grads.par_iter())
            .flat_map(|g| g.par_chunks(NORM_CHUNK).map(sum_of_squares))
            .collect();
        let norm = squares.iter().sum::<f64>().sqrt();
        // As `grad_clipping`: the factor rounded to the gradients' type first.
        let factor = self
            .norm
            .map(|theta| T::from_f64(theta) / T::from_f64(norm))
            .filter(|&factor| factor < T::ONE);
        (norm, factor)
    }
}

/// Elements per term of the host norm's sum.
const NORM_CHUNK: usize = 1 << 16;

/// `g *= factor` for every gradient, across the threads.
pub(crate) fn scale_host<T: Real>(grads: &mut [&mut [T]], factor: T) {
    grads.par_iter_mut().for_each(|g| {
        g.iter_mut().for_each(|g| *g = *g * factor);
    });
}
