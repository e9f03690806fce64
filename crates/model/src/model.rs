//! One interface over the models: the trainer, generator and parity check use `Model`.
//! `named_params` is the one place that names a parameter; loading and the host engine
//! look parameters up by those names.

use std::collections::HashMap;
use std::path::Path;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::cell::CellKind;
use crate::dropout::Dropout;
use crate::init::{Init, InitKind};
use crate::rnn::{LayerSpec, RnnSpec};
use crate::tensors::NamedTensors;
use crate::{ModelError, RnnModel, RnnModelScratch, State, StepGate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Book 8.5: `RNNModelScratch` (`W_xh`, `W_hh`, `b_h`, `W_hq`, `b_q`).
    Scratch,
    /// Book 8.6 (and 9.1/9.2 with `cell`): one-hot input, a recurrent layer, a linear head,
    /// under the book's names (`weight_ih_l0`, ..., `linear.weight`, `linear.bias`).
    Concise,
    /// word_language_model's `RNNModel`: embedding (or one-hot), recurrent layers, decoder
    /// (optionally tied), under its `state_dict` names (`encoder.weight`,
    /// `rnn.weight_ih_l0`, ..., `decoder.weight`, `decoder.bias`).
    Lm,
}

/// The most parameters a model may have (16 GiB of f64 weights; gradients and optimizer
/// state take as much again or more).
pub const MAX_PARAMS: usize = 1 << 31;

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
    #[config(default = "CellKind::RnnTanh")]
    pub cell: CellKind,
    /// 0: one-hot input; else the width of an `nn.Embedding` (`lm` only).
    #[config(default = 0)]
    pub embedding_dim: usize,
    /// Dropout on the embedding output, between layers and on the last layer's output.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The decoder reuses the embedding matrix (needs `embedding_dim == num_hiddens`).
    #[config(default = false)]
    pub tied: bool,
    #[config(default = "InitKind::Pytorch")]
    pub init: InitKind,
    #[config(default = 0.1)]
    pub init_range: f64,
    /// An LSTM's forget-gate `bias_ih`, filled with this value (char-rnn: 1).
    #[config(default = "None")]
    pub forget_bias: Option<f64>,
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
            && (self.num_layers != 1 || self.bidirectional || self.cell != CellKind::RnnTanh)
        {
            return bad("the scratch model is one tanh layer, one direction; use model.kind = \"concise\" or \"lm\" for more".into());
        }
        if self.kind != ModelKind::Lm && (self.embedding_dim > 0 || self.tied || self.dropout > 0.0)
        {
            return bad(format!(
                "model.embedding_dim, model.tied and model.dropout belong to model.kind = \"lm\" (the {:?} model takes one-hot input)",
                self.kind
            ).to_lowercase());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "model.dropout = {}: must be a probability in [0, 1)",
                self.dropout
            ));
        }
        if self.tied && (self.embedding_dim != self.num_hiddens || self.bidirectional) {
            return bad(format!(
                "model.tied = true needs model.embedding_dim == model.num_hiddens and one direction (embedding_dim {}, num_hiddens {}, bidirectional {})",
                self.embedding_dim, self.num_hiddens, self.bidirectional
            ));
        }
        if !(self.init_range.is_finite() && self.init_range > 0.0) {
            return bad(format!(
                "model.init_range = {}: must be a positive number",
                self.init_range
            ));
        }
        if let Some(bias) = self.forget_bias
            && !bias.is_finite()
        {
            return bad(format!(
                "model.forget_bias = {bias}: must be a finite number"
            ));
        }
        if self.forget_bias.is_some() && self.cell != CellKind::Lstm {
            return bad("model.forget_bias applies to model.cell = \"lstm\" only".into());
        }
        match self.param_count() {
            Some(n) if n <= MAX_PARAMS => Ok(()),
            n => bad(format!(
                "model.num_hiddens {}, model.num_layers {}, model.embedding_dim {} give {} parameters, more than the {MAX_PARAMS} this tool trains",
                self.num_hiddens,
                self.num_layers,
                self.embedding_dim,
                n.map_or("over 2^64".into(), |n| n.to_string()),
            )),
        }
    }

    /// The parameter count, in checked arithmetic (`None` when it overflows), so a size is
    /// refused before anything is allocated.
    pub fn param_count(&self) -> Option<usize> {
        let (v, h) = (self.vocab_size, self.num_hiddens);
        let sum =
            |terms: &[Option<usize>]| terms.iter().try_fold(0usize, |a, t| a.checked_add((*t)?));
        if self.kind == ModelKind::Scratch {
            return sum(&[
                v.checked_mul(h),
                h.checked_mul(h),
                Some(h),
                h.checked_mul(v),
                Some(v),
            ]);
        }
        let dirs = if self.bidirectional { 2 } else { 1 };
        let g = self.cell.gates();
        let gh = g.checked_mul(h)?;
        let input = if self.embedding_dim > 0 {
            self.embedding_dim
        } else {
            v
        };
        let mut total = if self.embedding_dim > 0 {
            v.checked_mul(self.embedding_dim)?
        } else {
            0
        };
        for layer in 0..self.num_layers.min(1 << 20) {
            let width = if layer == 0 {
                input
            } else {
                h.checked_mul(dirs)?
            };
            let one = sum(&[gh.checked_mul(width), gh.checked_mul(h), gh.checked_mul(2)])?;
            total = total.checked_add(one.checked_mul(dirs)?)?;
        }
        if self.num_layers > 1 << 20 {
            return None;
        }
        let decoder = if self.tied {
            Some(0)
        } else {
            h.checked_mul(dirs)?.checked_mul(v)
        };
        sum(&[Some(total), decoder, Some(v)])
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
            ModelKind::Concise | ModelKind::Lm => {
                let spec = RnnSpec {
                    layer: LayerSpec {
                        kind: self.cell,
                        input_size: self.vocab_size,
                        hidden_size: self.num_hiddens,
                        num_layers: self.num_layers,
                        bidirectional: self.bidirectional,
                        init: Init {
                            kind: self.init,
                            range: self.init_range,
                        },
                        forget_bias: self.forget_bias,
                    },
                    vocab_size: self.vocab_size,
                    embedding_dim: self.embedding_dim,
                    tied: self.tied,
                    dropout: self.dropout,
                    kind: self.kind,
                };
                Model::Rnn(RnnModel::new(&spec, rng, device))
            }
        })
    }
}

/// Any of the models behind one interface.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one model per process; boxing would not pay
pub enum Model {
    Scratch(RnnModelScratch),
    /// The concise or lm model (its `kind` decides its parameter names).
    Rnn(RnnModel),
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

    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::Vector(p) => p.dims().to_vec(),
            Self::Matrix(p) => p.dims().to_vec(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Self::Vector(p) => p.val().device(),
            Self::Matrix(p) => p.val().device(),
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

/// The prefixes of a concise or lm model's parameter names, `(rnn, head)`:
/// `{rnn}weight_ih_l0`, ..., `{head}.weight`, `{head}.bias`.
pub(crate) fn name_prefixes(kind: ModelKind) -> (&'static str, &'static str) {
    match kind {
        ModelKind::Lm => ("rnn.", "decoder"),
        _ => ("", "linear"),
    }
}

/// Replaces parameters by id with given values (loading named tensors).
struct Replace<'a> {
    values: HashMap<ParamId, TensorData>,
    device: &'a Device,
}

impl ModuleMapper for Replace<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        match self.values.remove(&param.id) {
            // The same parameter (id, trainability) with new values.
            Some(data) => param.map(|old| {
                let trainable = old.is_require_grad();
                Tensor::from_data(data, self.device).set_require_grad(trainable)
            }),
            None => param,
        }
    }
}

impl Model {
    /// Logits `[num_steps * batch_size, vocab_size]` (row `t * batch_size + b`) and the
    /// new state; no dropout (evaluation).
    pub fn forward(&self, x: Tensor<2, Int>, state: State) -> (Tensor<2>, State) {
        self.forward_with(x, state, &mut |_, s| s, None)
    }

    /// `forward` with `gate(t, state_{t-1})` applied to the state entering each step (how
    /// gradients flow back through time: truncation strategies and probes, book 8.7)
    /// and `dropout` drawing training masks (`None`: none).
    pub fn forward_with(
        &self,
        x: Tensor<2, Int>,
        state: State,
        gate: StepGate,
        dropout: Option<&mut Dropout>,
    ) -> (Tensor<2>, State) {
        match self {
            Self::Scratch(m) => {
                let (logits, h) = m.forward(x, state.h, &mut |t, h| {
                    gate(t, crate::CellState { h, c: None }).h
                });
                (logits, State { h, c: None })
            }
            Self::Rnn(m) => m.forward(x, state, gate, dropout),
        }
    }

    /// The zero state `[layers * directions, batch_size, num_hiddens]` (and `c` for an LSTM).
    pub fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        match self {
            Self::Scratch(m) => State {
                h: m.begin_state(batch_size, device),
                c: None,
            },
            Self::Rnn(m) => m.begin_state(batch_size, device),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Scratch(m) => m.W_xh.dims()[0],
            Self::Rnn(m) => m.decoder.bias.dims()[0],
        }
    }

    /// The config of this model (its initialisation settings aside).
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::Scratch(m) => {
                ModelConfig::new(ModelKind::Scratch, self.vocab_size(), m.num_hiddens())
            }
            Self::Rnn(m) => ModelConfig::new(m.kind, self.vocab_size(), m.rnn.hidden_size())
                .with_num_layers(m.rnn.num_layers())
                .with_bidirectional(m.rnn.bidirectional)
                .with_cell(m.rnn.kind)
                .with_embedding_dim(m.encoder.as_ref().map_or(0, |e| e.dims()[1]))
                .with_tied(m.decoder.weight.is_none())
                .with_dropout(m.dropout),
        }
    }

    /// The dropout probability training applies (0 for the book's models).
    pub fn dropout(&self) -> f64 {
        match self {
            Self::Scratch(_) => 0.0,
            Self::Rnn(m) => m.dropout,
        }
    }

    /// The number of trainable values.
    pub fn num_params(&self) -> usize {
        self.named_params()
            .iter()
            .map(|(_, p)| p.shape().iter().product::<usize>())
            .sum()
    }

    /// Every parameter under its book (scratch, concise) or PyTorch `state_dict` (lm) name.
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
            Self::Rnn(m) => {
                let (rnn, head) = name_prefixes(m.kind);
                let mut out = Vec::new();
                if let Some(e) = &m.encoder {
                    out.push(("encoder.weight".into(), Matrix(e)));
                }
                for (i, cell) in m.rnn.cells.iter().enumerate() {
                    let s = m.rnn.cell_suffix(i);
                    out.push((format!("{rnn}weight_ih_{s}"), Matrix(&cell.weight_ih)));
                    out.push((format!("{rnn}weight_hh_{s}"), Matrix(&cell.weight_hh)));
                    out.push((format!("{rnn}bias_ih_{s}"), Vector(&cell.bias_ih)));
                    out.push((format!("{rnn}bias_hh_{s}"), Vector(&cell.bias_hh)));
                }
                if let Some(w) = &m.decoder.weight {
                    out.push((format!("{head}.weight"), Matrix(w)));
                }
                out.push((format!("{head}.bias"), Vector(&m.decoder.bias)));
                out
            }
        }
    }

    /// Builds the model `config` describes from named tensors (a fixture or an export),
    /// checking every name and shape against `named_params`.
    pub fn from_named(
        config: &ModelConfig,
        tensors: &NamedTensors,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let template = config.init(0, device)?;
        let mut values = HashMap::new();
        for (name, p) in template.named_params() {
            values.insert(p.id(), tensors.get(&name, &p.shape())?);
        }
        Ok(template.map(&mut Replace { values, device }))
    }

    /// The same model with the parameters `values` names given new values (the others kept).
    pub(crate) fn with_named(self, mut values: HashMap<String, TensorData>) -> Self {
        let device = match self.named_params().first() {
            Some((_, p)) => p.device(),
            None => return self,
        };
        let values = self
            .named_params()
            .iter()
            .filter_map(|(name, p)| values.remove(name).map(|data| (p.id(), data)))
            .collect();
        self.map(&mut Replace {
            values,
            device: &device,
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
        rnnlm_data::atomic_write(&path, &bytes).map_err(|e| err(e.reason()))
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
        let model = config
            .init(0, device)?
            .try_load_record(record)
            .map_err(|e| err(format!("does not match {config:?}: {e}")))?;
        Ok(model.in_float_type_of(device))
    }

    /// The parameters in `device`'s float type: a checkpoint written in f64 is read on an
    /// f32 device (and back) instead of mixing the two in one product.
    fn in_float_type_of(self, device: &Device) -> Self {
        let dtype = burn::tensor::DType::from(device.settings().float_dtype);
        let values: HashMap<ParamId, TensorData> = self
            .named_params()
            .iter()
            .map(|(_, p)| (p.id(), p.data()))
            .filter(|(_, data)| data.dtype() != dtype)
            .map(|(id, data)| (id, data.convert_dtype(dtype)))
            .collect();
        if values.is_empty() {
            return self;
        }
        self.map(&mut Replace { values, device })
    }
}
