//! The host engine's own optimizers: plain SGD (`p -= lr * g`, word_language_model's
//! update) and Adam, with Burn's arithmetic, on a copy of the parameters the engine keeps
//! between steps. Through Burn's optimizer every step copies the parameters out of their
//! tensors, turns the gradients into tensors and builds new parameter and moment tensors
//! one operation at a time on one thread; here each parameter is updated in one pass, in
//! place, across the threads, and the model is written back only when it is asked for
//! (validation, a checkpoint, the end of an epoch).

use std::collections::HashMap;

use burn::tensor::{DType, Device, Element, TensorData};
use rayon::prelude::*;

use crate::bptt::{self, Mat, Real};
use crate::fused::{HostGrad, HostParams, Layout, Run};
use crate::step::{Pass, StepInput, StepResult};
use crate::tensors::NamedTensors;
use crate::{Clipping, Model, ModelConfig, ModelError, State};

/// An update rule the host engine carries out. The constants are Burn's `f32` config
/// values: its arithmetic rounds them to `f32` first, and so does this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostRule {
    /// `p - g * lr`: Burn's `Sgd` without momentum or weight decay.
    Sgd,
    /// Burn's `Adam` without weight decay or AMSGrad: `m = b1 m + (1 - b1) g`,
    /// `v = b2 v + (1 - b2) g^2`, `p -= lr * m * c / (sqrt(v) + eps * sqrt(1 - b2^t))`
    /// with `c = sqrt(1 - b2^t) / (1 - b1^t)`.
    Adam {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
}

/// A host optimizer's state between steps: Adam's step count and moments by parameter
/// name (PyTorch's `step`, `exp_avg`, `exp_avg_sq`), in the parameters' element type.
#[derive(Debug, Clone)]
pub struct HostOptimizer {
    pub rule: HostRule,
    /// Updates made so far.
    step: u64,
    exp_avg: HashMap<String, TensorData>,
    exp_avg_sq: HashMap<String, TensorData>,
}

const STEP: &str = "step";
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";

impl HostOptimizer {
    pub fn new(rule: HostRule) -> Self {
        Self {
            rule,
            step: 0,
            exp_avg: HashMap::new(),
            exp_avg_sq: HashMap::new(),
        }
    }

    /// The state as named tensors (`step`, `exp_avg.<parameter>`, `exp_avg_sq.<parameter>`),
    /// for a checkpoint.
    pub fn to_named(&self) -> NamedTensors {
        let mut out = NamedTensors::default();
        out.insert(STEP, TensorData::new(vec![self.step as i64], [1]));
        for (prefix, slots) in [(EXP_AVG, &self.exp_avg), (EXP_AVG_SQ, &self.exp_avg_sq)] {
            for (name, data) in slots {
                out.insert(format!("{prefix}{name}"), data.clone());
            }
        }
        out
    }

    /// The state `to_named` wrote, for `rule`.
    pub fn from_named(rule: HostRule, tensors: &NamedTensors) -> Result<Self, ModelError> {
        let step = tensors.get(STEP, &[1])?;
        let step = step.iter::<i64>().next().unwrap_or(-1);
        let step = u64::try_from(step).map_err(|_| {
            ModelError::Config(format!(
                "{}: `{STEP}` is {step}, expected a count of updates",
                tensors.file
            ))
        })?;
        let mut out = Self::new(rule);
        out.step = step;
        for (name, data) in &tensors.tensors {
            if let Some(param) = name.strip_prefix(EXP_AVG) {
                out.exp_avg.insert(param.to_string(), data.clone());
            } else if let Some(param) = name.strip_prefix(EXP_AVG_SQ) {
                out.exp_avg_sq.insert(param.to_string(), data.clone());
            }
        }
        Ok(out)
    }

    /// Zero moments for every parameter of `params` that has none yet (Adam's first step
    /// from zeros equals Burn's from no state: `0 * b1 + x = x` exactly).
    fn ready(&mut self, params: &HostParams) -> Result<(), ModelError> {
        if !matches!(self.rule, HostRule::Adam { .. }) {
            return Ok(());
        }
        for slots in [&mut self.exp_avg, &mut self.exp_avg_sq] {
            for (name, data) in params.iter() {
                let zeros = || {
                    let n = data.shape().iter().product();
                    TensorData::new(vec![0.0_f64; n], data.shape().clone())
                        .convert_dtype(data.dtype())
                };
                let slot = slots.entry(name.clone()).or_insert_with(zeros);
                if slot.shape() != data.shape() {
                    return Err(ModelError::Config(format!(
                        "the optimizer state of `{name}` has shape {:?}, the parameter {:?}",
                        slot.shape(),
                        data.shape()
                    )));
                }
                if slot.dtype() != data.dtype() {
                    *slot = slot.clone().convert_dtype(data.dtype());
                }
            }
        }
        Ok(())
    }
}

/// A model trained on the host engine by a `HostOptimizer`. It holds the parameters on
/// the host only (the model's tensors are dropped: PTB's would be 19 MB more).
pub struct HostTrainer<'a> {
    layout: Layout,
    config: ModelConfig,
    device: Device,
    params: HostParams,
    optimizer: &'a mut HostOptimizer,
}

/// Elements per task of an update: big enough to amortise a task, small enough that
/// the two largest tensors (PTB's embedding and decoder) split evenly.
const CHUNK: usize = 1 << 15;

/// Rows of a parameter SGD updates from one tile of its transposed gradient (PTB's
/// decoder: `[64, 200]`, 51 KB).
const TILE_ROWS: usize = 64;

impl<'a> HostTrainer<'a> {
    /// Takes `model`'s parameters over; an error where the host engine does not cover it.
    pub fn new(model: Model, optimizer: &'a mut HostOptimizer) -> Result<Self, ModelError> {
        let params = HostParams::of(&model)?;
        optimizer.ready(&params)?;
        let device = match model.named_params().first() {
            Some((_, p)) => p.device(),
            None => Device::default(),
        };
        Ok(Self {
            layout: Layout::of(&model),
            config: model.config(),
            device,
            params,
            optimizer,
        })
    }

    /// The model with the current parameters (a copy of them).
    pub fn model(&self) -> Model {
        self.built().with_named(self.params.to_named())
    }

    pub fn into_model(self) -> Model {
        self.built().with_named(self.params.into_named())
    }

    /// A model of this structure, its values to be replaced.
    fn built(&self) -> Model {
        (self.config.init(0, &self.device)).expect("the config of a built model builds")
    }

    /// The zero state `Model::begin_state` gives.
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        self.layout.begin_state(batch_size, device)
    }

    /// The dropout probability training applies.
    pub fn dropout(&self) -> f64 {
        self.layout.dropout()
    }

    /// `train_step` with this optimizer: the host engine's gradients, clipped by
    /// `clipping`, then the update at rate `lr` for every parameter.
    pub fn step(
        &mut self,
        input: StepInput,
        clipping: Clipping,
        lr: f64,
    ) -> Result<StepResult, ModelError> {
        let run = Run {
            layout: &self.layout,
            input,
            pass: Pass::Train(clipping),
        };
        let (params, names, opt) = (&mut self.params, self.layout.order(), &mut *self.optimizer);
        match params.dtype() {
            DType::F64 => update::<f64>(params, names, opt, run, lr),
            _ => update::<f32>(params, names, opt, run, lr),
        }
    }
}

fn update<T: Real + Element>(
    params: &mut HostParams,
    names: &[String],
    opt: &mut HostOptimizer,
    run: Run,
    lr: f64,
) -> Result<StepResult, ModelError> {
    let pass = run.go::<T>(params)?;
    opt.step += 1;
    // The clipping's factor folded in: `g * scale` as the clipping rounds it.
    let scale = pass.scale;
    let lr = T::from_f64(lr);
    let mut buffers = Vec::with_capacity(pass.grads.len());
    for (name, g) in names.iter().zip(pass.grads) {
        let p = params.get_mut::<T>(name);
        let g = match (opt.rule, g) {
            // The rows without a gradient: `p - (0 * scale) * lr` is `p`, so they are
            // left as they are (PTB: 9,600 of the embedding's 10,000 rows a minibatch).
            (HostRule::Sgd, HostGrad::Rows(rows)) => {
                for (id, g) in rows.rows() {
                    sgd(&mut p[id * g.len()..(id + 1) * g.len()], g, scale, lr);
                }
                buffers.push(rows.values);
                continue;
            }
            // `g^T` a tile of rows of `p` at a time, transposed into a buffer in cache.
            (HostRule::Sgd, HostGrad::Transposed { values, rows }) => {
                let cols = p.len() / rows.max(1);
                let g = Mat::row_major(&values, cols, rows);
                (p.par_chunks_mut((TILE_ROWS * cols).max(1)).enumerate()).for_each_init(
                    || vec![T::ZERO; TILE_ROWS * cols],
                    |tile, (i, p)| {
                        let r0 = i * TILE_ROWS;
                        // The next tile's lines, one per `g` row, asked for now: this
                        // one's waited on memory (strided rows the hardware misses).
                        let next = (r0 + TILE_ROWS).min(rows);
                        g.columns(next, (next + TILE_ROWS).min(rows)).prefetch();
                        let tile = &mut tile[..p.len()];
                        g.columns(r0, r0 + p.len() / cols).t().write_row_major(tile);
                        sgd(p, tile, scale, lr);
                    },
                );
                buffers.push(values);
                continue;
            }
            (_, g) => g.into_whole(p.len()),
        };
        let p = p.par_chunks_mut(CHUNK);
        match opt.rule {
            HostRule::Sgd => p
                .zip(g.par_chunks(CHUNK))
                .for_each(|(p, g)| sgd(p, g, scale, lr)),
            HostRule::Adam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let k = AdamStep::<T>::at(opt.step, beta_1, beta_2, epsilon);
                let m = slot_mut::<T>(&mut opt.exp_avg, name).par_chunks_mut(CHUNK);
                let v = slot_mut::<T>(&mut opt.exp_avg_sq, name).par_chunks_mut(CHUNK);
                p.zip(m)
                    .zip(v)
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(((p, m), v), g)| adam(p, m, v, g, k, scale, lr));
            }
        }
        buffers.push(g);
    }
    bptt::recycle(buffers);
    Ok(StepResult::of(pass.rest))
}

widest! {
    /// `p -= (g * scale) * lr`: SGD's update of a chunk, the gradient clipped by `scale`.
    fn sgd(p: &mut [T], g: &[T], scale: Option<T>, lr: T) {
        match scale {
            Some(s) => p.iter_mut().zip(g).for_each(|(p, &g)| *p = *p - (g * s) * lr),
            None => p.iter_mut().zip(g).for_each(|(p, &g)| *p = *p - g * lr),
        }
    }
}

widest! {
    /// Adam's update of a chunk (`AdamStep::apply`), the gradient clipped by `scale`.
    fn adam(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], k: AdamStep<T>, scale: Option<T>, lr: T) {
        let elements = p.iter_mut().zip(m).zip(v).zip(g);
        match scale {
            Some(s) => elements.for_each(|(((p, m), v), &g)| k.apply(p, m, v, g * s, lr)),
            None => elements.for_each(|(((p, m), v), &g)| k.apply(p, m, v, g, lr)),
        }
    }
}

fn slot_mut<'s, T: Element>(slots: &'s mut HashMap<String, TensorData>, name: &str) -> &'s mut [T] {
    slots
        .get_mut(name)
        .and_then(|d| d.as_mut_slice::<T>().ok())
        .expect("moments made ready in the parameters' type")
}

/// Adam's constants at step `t` in the parameters' type, computed in `f32` as Burn
/// computes them.
#[derive(Clone, Copy)]
struct AdamStep<T> {
    beta_1: T,
    beta_2: T,
    one_minus_beta_1: T,
    one_minus_beta_2: T,
    /// `sqrt(1 - b2^t) / (1 - b1^t)`
    combined: T,
    /// `eps * sqrt(1 - b2^t)`
    epsilon: T,
}

impl<T: Real> AdamStep<T> {
    fn at(t: u64, beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let bias_correction2_sqrt = (1.0 - beta_2.powi(t)).sqrt();
        let c = |x: f32| T::from_f64(f64::from(x));
        Self {
            beta_1: c(beta_1),
            beta_2: c(beta_2),
            one_minus_beta_1: c(1.0 - beta_1),
            one_minus_beta_2: c(1.0 - beta_2),
            combined: c(bias_correction2_sqrt / (1.0 - beta_1.powi(t))),
            epsilon: c(epsilon * bias_correction2_sqrt),
        }
    }

    /// One element's update, each operation rounded as Burn's tensor ops round it.
    #[inline(always)]
    fn apply(&self, p: &mut T, m: &mut T, v: &mut T, g: T, lr: T) {
        *m = *m * self.beta_1 + g * self.one_minus_beta_1;
        *v = *v * self.beta_2 + (g * g) * self.one_minus_beta_2;
        let delta = (*m * self.combined) / (v.sqrt() + self.epsilon);
        *p = *p - delta * lr;
    }
}
