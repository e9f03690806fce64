//! One interface over both models: the trainer, generator and parity check use `Model`.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::rnn::{LinearHead, RnnCell, RnnLayer};
use crate::tensors::NamedTensors;
use crate::{ModelError, Nonlinearity, RnnModel, RnnModelScratch, StepGate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Book 8.5: `RNNModelScratch`.
    Scratch,
    /// Book 8.6: `nn.RNN` + `nn.Linear`.
    Concise,
}

/// What a model is; saved as `model.json` beside the weights.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub vocab_size: usize,
    pub num_hiddens: usize,
    #[config(default = 1)]
    pub num_layers: usize,
    #[config(default = false)]
    pub bidirectional: bool,
    #[config(default = "Nonlinearity::Tanh")]
    pub nonlinearity: Nonlinearity,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.vocab_size == 0 || self.num_hiddens == 0 || self.num_layers == 0 {
            return bad(format!(
                "vocab_size ({}), num_hiddens ({}) and num_layers ({}) must be positive",
                self.vocab_size, self.num_hiddens, self.num_layers
            ));
        }
        if self.kind == ModelKind::Scratch
            && (self.num_layers != 1
                || self.bidirectional
                || self.nonlinearity != Nonlinearity::Tanh)
        {
            return bad("the scratch model is one tanh layer, one direction; use model = \"concise\" for more".into());
        }
        Ok(())
    }

    /// A fresh model, initialised from `seed` on the host (the same on every backend).
    pub fn init(&self, seed: u64, device: &Device) -> Result<Model, ModelError> {
        self.validate()?;
        let rng = &mut StdRng::seed_from_u64(seed);
        Ok(match self.kind {
            ModelKind::Scratch => Model::Scratch(RnnModelScratch::new(
                self.vocab_size,
                self.num_hiddens,
                rng,
                device,
            )),
            ModelKind::Concise => Model::Concise(RnnModel::new(
                self.vocab_size,
                self.num_hiddens,
                self.num_layers,
                self.bidirectional,
                self.nonlinearity,
                rng,
                device,
            )),
        })
    }
}

/// Either chapter-8 model behind one interface.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one model per process; boxing would not pay
pub enum Model {
    Scratch(RnnModelScratch),
    Concise(RnnModel),
}

/// A parameter of either rank, by its book or PyTorch name.
pub enum NamedParam<'a> {
    Vector(&'a Param<Tensor<1>>),
    Matrix(&'a Param<Tensor<2>>),
}

impl NamedParam<'_> {
    pub fn id(&self) -> ParamId {
        match self {
            Self::Vector(p) => p.id,
            Self::Matrix(p) => p.id,
        }
    }

    pub fn data(&self) -> TensorData {
        match self {
            Self::Vector(p) => p.val().into_data(),
            Self::Matrix(p) => p.val().into_data(),
        }
    }

    /// The gradient's values, copied out at once: on wgpu the data read back can share
    /// memory with the device buffer, which a later in-place op (the clipping) rewrites.
    pub fn grad(&self, grads: &GradientsParams) -> Option<TensorData> {
        let data = match self {
            Self::Vector(p) => grads.get::<1>(p.id).map(Tensor::into_data),
            Self::Matrix(p) => grads.get::<2>(p.id).map(Tensor::into_data),
        }?;
        let values: Vec<f64> = data.iter::<f64>().collect();
        Some(TensorData::new(values, data.shape().to_vec()).convert_dtype(data.dtype()))
    }
}

impl Model {
    /// Logits `[num_steps * batch_size, vocab_size]` (row `t * batch_size + b`) and the new state.
    pub fn forward(&self, x: Tensor<2, Int>, state: Tensor<3>) -> (Tensor<2>, Tensor<3>) {
        self.forward_gated(x, state, &mut |_, h| h)
    }

    /// `forward` with `gate(t, H_{t-1})` applied to the state entering each step: how
    /// gradients flow back through time (truncation strategies and probes, book 8.7).
    pub fn forward_gated(
        &self,
        x: Tensor<2, Int>,
        state: Tensor<3>,
        gate: StepGate,
    ) -> (Tensor<2>, Tensor<3>) {
        match self {
            Self::Scratch(m) => m.forward(x, state, gate),
            Self::Concise(m) => m.forward(x, state, gate),
        }
    }

    /// The zero state `[layers * directions, batch_size, num_hiddens]`.
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> Tensor<3> {
        match self {
            Self::Scratch(m) => m.begin_state(batch_size, device),
            Self::Concise(m) => m.begin_state(batch_size, device),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Scratch(m) => m.W_xh.dims()[0],
            Self::Concise(m) => m.linear.bias.dims()[0],
        }
    }

    /// Every parameter under the book's (scratch) or PyTorch's (concise) name.
    pub fn named_params(&self) -> Vec<(String, NamedParam<'_>)> {
        use NamedParam::{Matrix, Vector};
        match self {
            Self::Scratch(m) => vec![
                ("W_xh".into(), Matrix(&m.W_xh)),
                ("W_hh".into(), Matrix(&m.W_hh)),
                ("b_h".into(), Vector(&m.b_h)),
                ("W_hq".into(), Matrix(&m.W_hq)),
                ("b_q".into(), Vector(&m.b_q)),
            ],
            Self::Concise(m) => {
                let mut out = Vec::new();
                for (i, cell) in m.rnn.cells.iter().enumerate() {
                    let s = m.rnn.cell_suffix(i);
                    out.push((format!("weight_ih_{s}"), Matrix(&cell.weight_ih)));
                    out.push((format!("weight_hh_{s}"), Matrix(&cell.weight_hh)));
                    out.push((format!("bias_ih_{s}"), Vector(&cell.bias_ih)));
                    out.push((format!("bias_hh_{s}"), Vector(&cell.bias_hh)));
                }
                out.push(("linear.weight".into(), Matrix(&m.linear.weight)));
                out.push(("linear.bias".into(), Vector(&m.linear.bias)));
                out
            }
        }
    }

    /// Builds the model `config` describes from named tensors (a fixture or an export),
    /// checking every name and shape.
    pub fn from_named(
        config: &ModelConfig,
        tensors: &NamedTensors,
        device: &Device,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let (v, h) = (config.vocab_size, config.num_hiddens);
        let mat = |name: &str, shape: [usize; 2]| -> Result<Param<Tensor<2>>, ModelError> {
            Ok(Param::from_tensor(Tensor::from_data(
                tensors.get(name, &shape)?,
                device,
            )))
        };
        let vec = |name: &str, len: usize| -> Result<Param<Tensor<1>>, ModelError> {
            Ok(Param::from_tensor(Tensor::from_data(
                tensors.get(name, &[len])?,
                device,
            )))
        };
        Ok(match config.kind {
            ModelKind::Scratch => Self::Scratch(RnnModelScratch {
                W_xh: mat("W_xh", [v, h])?,
                W_hh: mat("W_hh", [h, h])?,
                b_h: vec("b_h", h)?,
                W_hq: mat("W_hq", [h, v])?,
                b_q: vec("b_q", v)?,
            }),
            ModelKind::Concise => {
                let d = if config.bidirectional { 2 } else { 1 };
                let mut cells = Vec::new();
                for i in 0..config.num_layers * d {
                    let reverse = if i % d == 1 { "_reverse" } else { "" };
                    let s = format!("l{}{reverse}", i / d);
                    let input = if i < d { v } else { d * h };
                    cells.push(RnnCell {
                        weight_ih: mat(&format!("weight_ih_{s}"), [h, input])?,
                        weight_hh: mat(&format!("weight_hh_{s}"), [h, h])?,
                        bias_ih: vec(&format!("bias_ih_{s}"), h)?,
                        bias_hh: vec(&format!("bias_hh_{s}"), h)?,
                    });
                }
                Self::Concise(RnnModel {
                    rnn: RnnLayer {
                        cells,
                        bidirectional: config.bidirectional,
                        nonlinearity: config.nonlinearity,
                    },
                    linear: LinearHead {
                        weight: mat("linear.weight", [v, d * h])?,
                        bias: vec("linear.bias", v)?,
                    },
                })
            }
        })
    }

    /// Writes `model.bpk` (Burn's burnpack record) atomically into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("model.bpk");
        let err = |reason: String| ModelError::Write {
            path: path.clone(),
            reason,
        };
        let bytes = self
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| err(e.to_string()))?;
        crate::tensors::atomic_write(&path, &bytes).map_err(|e| err(e.to_string()))
    }

    /// Loads `model.bpk` from `dir` into a model built from `config`.
    pub fn load(config: &ModelConfig, dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let path = dir.join("model.bpk");
        let err = |reason: String| ModelError::Read {
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        let record =
            burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| err(e.to_string()))?;
        config
            .init(0, device)?
            .try_load_record(record)
            .map_err(|e| err(format!("does not match {config:?}: {e}")))
    }
}
