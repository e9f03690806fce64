//! Plain SGD (`p -= lr * g`: Burn's `Sgd` without momentum or weight decay, PyTorch's
//! word_language_model update) on a copy of the parameters the host engine keeps between
//! steps. Through Burn's optimizer every step copies the parameters out of their tensors,
//! turns the gradients into tensors and writes new parameter tensors, all on one thread;
//! here the update runs in place, across the threads, and the model is written back only
//! when it is asked for (validation, a checkpoint, the end of an epoch).

use burn::tensor::{DType, Element, Int, Tensor};
use rayon::prelude::*;

use crate::bptt::{self, Real};
use crate::fused::{HostParams, Run};
use crate::step::{Pass, StepResult};
use crate::{Clipping, Dropout, Model, ModelError, State};

/// A model trained by plain SGD on the host engine.
pub struct HostSgd {
    /// The structure and the parameter values as of the last `model()` write-back.
    model: Model,
    params: HostParams,
    /// The parameters' names in the model's order (the kernel's gradients come in it).
    names: Vec<String>,
}

/// Elements per task of the update: big enough to amortise a task, small enough that
/// the two largest tensors (PTB's embedding and decoder) split evenly.
const CHUNK: usize = 1 << 15;

impl HostSgd {
    /// Takes `model`'s parameters over; an error where the host engine does not cover it.
    pub fn new(model: Model) -> Result<Self, ModelError> {
        let params = HostParams::of(&model)?;
        let names = model.named_params().into_iter().map(|(n, _)| n).collect();
        Ok(Self {
            model,
            params,
            names,
        })
    }

    /// The model with the current parameters (a copy of them).
    pub fn model(&self) -> Model {
        self.model.clone().with_named(self.params.to_named())
    }

    pub fn into_model(self) -> Model {
        self.model.with_named(self.params.into_named())
    }

    /// `train_step` with this optimizer: the host engine's gradients, clipped by
    /// `clipping`, then `p -= lr * g` for every parameter.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        x: Tensor<2, Int>,
        y: Tensor<2, Int>,
        state: State,
        scales: Option<&[f64]>,
        dropout: Option<&mut Dropout>,
        clipping: Clipping,
        lr: f64,
    ) -> Result<StepResult, ModelError> {
        let run = Run {
            model: &self.model,
            x: &x,
            y: &y,
            state,
            scales,
            dropout,
            pass: Pass::Train(clipping),
        };
        let (params, names) = (&mut self.params, &self.names);
        match params.dtype() {
            DType::F64 => update::<f64>(params, names, run, lr),
            _ => update::<f32>(params, names, run, lr),
        }
    }
}

fn update<T: Real + Element>(
    params: &mut HostParams,
    names: &[String],
    run: Run,
    lr: f64,
) -> Result<StepResult, ModelError> {
    let pass = run.go::<T>(params)?;
    // As the clipping then Burn's `Sgd`: `p - (g * scale) * lr`, the rate rounded to the
    // element type; in one pass.
    let lr = T::from_f64(lr);
    let update = |p: &mut [T], g: &[T]| match pass.scale {
        Some(s) => p
            .iter_mut()
            .zip(g)
            .for_each(|(p, &g)| *p = *p - (g * s) * lr),
        None => p.iter_mut().zip(g).for_each(|(p, &g)| *p = *p - g * lr),
    };
    for (name, g) in names.iter().zip(&pass.grads) {
        params
            .get_mut::<T>(name)
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(p, g)| update(p, g));
    }
    bptt::recycle(pass.grads);
    Ok(StepResult::of(pass.rest))
}
