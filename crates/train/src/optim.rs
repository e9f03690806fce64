//! The optimizer of a run and how a checkpoint keeps it: Burn's (`optim.bpk`), or, on the
//! host engine for the rules it carries out (plain SGD, Adam), the engine's own
//! (`optim-host.safetensors`: PyTorch's `step`, `exp_avg`, `exp_avg_sq`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig,
};
use burn::tensor::Bytes;
use rnnlm_data::atomic_write;
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Engine, HostOptimizer, HostRule};

use crate::{Optimizer, TrainSection};

/// Adam's `beta_1`, `beta_2` (PyTorch's and Burn's defaults) and `epsilon` (PyTorch's;
/// Burn's default is 1e-5), for Burn's optimizer and the host engine's alike.
const ADAM: (f32, f32, f32) = (0.9, 0.999, 1e-8);

const BURN_FILE: &str = "optim.bpk";
const HOST_FILE: &str = "optim-host.safetensors";

/// A run's optimizer.
pub enum RunOptimizer {
    Burn(ModuleOptimizer),
    Host(HostOptimizer),
}

/// The update `t` asks for where the host engine carries it out itself: SGD and Adam
/// without momentum or weight decay.
pub fn host_rule(t: &TrainSection) -> Option<HostRule> {
    let plain = t.momentum == 0.0 && t.weight_decay == 0.0;
    let (beta_1, beta_2, epsilon) = ADAM;
    match t.optimizer {
        Optimizer::Sgd if plain => Some(HostRule::Sgd),
        Optimizer::Adam if plain => Some(HostRule::Adam {
            beta_1,
            beta_2,
            epsilon,
        }),
        _ => None,
    }
}

/// Burn's optimizer for what `t` asks for, with PyTorch's defaults where Burn's differ.
pub fn burn_optimizer(t: &TrainSection) -> ModuleOptimizer {
    let decay = (t.weight_decay > 0.0).then(|| WeightDecayConfig::new(t.weight_decay as f32));
    let (beta_1, beta_2, epsilon) = ADAM;
    match t.optimizer {
        Optimizer::Sgd => SgdConfig::new()
            .with_weight_decay(decay)
            .with_momentum((t.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(t.momentum)
                    .with_dampening(0.0)
            }))
            .init(),
        Optimizer::Adam => AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(decay)
            .init(),
        Optimizer::Adamw => AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(if t.weight_decay > 0.0 {
                t.weight_decay as f32
            } else {
                0.01
            })
            .init(),
        Optimizer::Rmsprop => RmsPropConfig::new()
            .with_alpha(t.alpha as f32)
            .with_momentum(0.0)
            .with_epsilon(1e-8)
            .with_weight_decay(decay)
            .init(),
        Optimizer::Adagrad => AdaGradConfig::new()
            .with_epsilon(1e-10)
            .with_weight_decay(decay)
            .init(),
    }
}

impl RunOptimizer {
    /// The optimizer a new run of `t` on `engine` starts with: the host engine's own where
    /// it carries the rule out, Burn's otherwise.
    pub fn new(t: &TrainSection, engine: Engine) -> Self {
        match host_rule(t).filter(|_| engine == Engine::Fused) {
            Some(rule) => Self::Host(HostOptimizer::new(rule)),
            None => Self::Burn(burn_optimizer(t)),
        }
    }

    /// Writes the state into checkpoint directory `dir`, through a temp file and a rename.
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Self::Burn(o) => {
                let bytes = o
                    .into_bytes()
                    .map_err(|e| anyhow::anyhow!("cannot serialize the optimizer: {e}"))?;
                atomic_write(&dir.join(BURN_FILE), &bytes)?;
            }
            Self::Host(o) => o.to_named().write(&dir.join(HOST_FILE))?,
        }
        Ok(())
    }

    /// The optimizer of the checkpoint in `dir`, continued by a run of `t` on `engine`.
    /// A Burn optimizer with no state yet (an imported model's, plain SGD's) becomes the
    /// host engine's where `new` would pick that.
    pub fn load(t: &TrainSection, engine: Engine, dir: &Path) -> Result<Self> {
        let host = dir.join(HOST_FILE);
        if host.exists() {
            let Some(rule) = host_rule(t).filter(|_| engine == Engine::Fused) else {
                bail!(
                    "{} holds the host engine's optimizer state, which only the host engine continues: resume on a CPU backend (--backend flex or ndarray)",
                    host.display()
                );
            };
            return Ok(Self::Host(HostOptimizer::from_named(
                rule,
                &NamedTensors::read(&host)?,
            )?));
        }
        let path = dir.join(BURN_FILE);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let optimizer = burn_optimizer(t)
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| anyhow::anyhow!("invalid {}: {e}", path.display()))?;
        Ok(match Self::new(t, engine) {
            host @ Self::Host(_) if optimizer.to_record().is_empty() => host,
            _ => Self::Burn(optimizer),
        })
    }
}
