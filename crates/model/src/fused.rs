#![allow(non_snake_case)] // the book's names: X, Y, H0

//! The `fused` engine: a `Model`'s parameters and minibatch copied to the host, one
//! forward and backward pass of the written-out BPTT kernel (`bptt`), the gradients
//! handed back as tensors for the usual clipping and optimizer step.

use std::collections::HashMap;

use burn::optim::GradientsParams;
use burn::tensor::{DType, Element, Int, Tensor, TensorData};

use crate::bptt::{self, Layer, Mat, Minibatch, Real, RnnParams};
use crate::model::name_prefixes;
use crate::step::Gradients;
use crate::{CellKind, Model, ModelConfig, ModelError, ModelKind, RnnModel, State};

/// Whether the fused kernel covers a model: the scratch model, or one-direction tanh/relu
/// layers (stacked or not) with one-hot input, an untied decoder and no dropout.
pub fn fused_applies(config: &ModelConfig) -> bool {
    config.kind == ModelKind::Scratch
        || (!config.bidirectional
            && matches!(config.cell, CellKind::RnnTanh | CellKind::RnnRelu)
            && config.embedding_dim == 0
            && !config.tied
            && config.dropout == 0.0)
}

/// `fused_applies` for a built model.
pub fn fused_supported(model: &Model) -> bool {
    fused_applies(&model.config())
}

pub(crate) fn forward_backward(
    model: &Model,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    state: State,
    scales: Option<&[f64]>,
) -> Result<Gradients, ModelError> {
    if !fused_supported(model) {
        return Err(ModelError::Config(
            "train.engine = \"fused\" covers one-direction tanh/relu models with one-hot input, no dropout and no tying; use \"autodiff\"".into(),
        ));
    }
    let params: HashMap<String, TensorData> = model
        .named_params()
        .iter()
        .map(|(name, p)| (name.clone(), p.data()))
        .collect();
    match params.values().next().map(TensorData::dtype) {
        Some(DType::F64) => run::<f64>(model, params, x, y, state.h, scales),
        _ => run::<f32>(model, params, x, y, state.h, scales),
    }
}

fn host<T: Real + Element>(data: TensorData) -> Vec<T> {
    data.convert::<T>()
        .try_into_vec::<T>()
        .expect("converted to the element type")
}

fn tokens(t: &Tensor<2, Int>, vocab_size: usize, what: &str) -> Result<Vec<usize>, ModelError> {
    t.to_data()
        .iter::<i64>()
        .map(|id| {
            usize::try_from(id)
                .ok()
                .filter(|&id| id < vocab_size)
                .ok_or_else(|| {
                    ModelError::Config(format!(
                        "token id {id} in {what} is outside the vocabulary 0..{vocab_size}"
                    ))
                })
        })
        .collect()
}

/// The parameters on the host, by name.
struct HostParams<T>(HashMap<String, Vec<T>>);

impl<T: Real + Element> HostParams<T> {
    fn get(&self, name: &str) -> &[T] {
        &self.0[name]
    }
}

fn run<T: Real + Element>(
    model: &Model,
    params: HashMap<String, TensorData>,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    state: Tensor<3>,
    scales: Option<&[f64]>,
) -> Result<Gradients, ModelError> {
    let device = x.device();
    let [batch_size, num_steps] = x.dims();
    let p = HostParams::<T>(params.into_iter().map(|(n, d)| (n, host(d))).collect());
    let v = model.vocab_size();
    // The layers in the book's orientation: nn.RNN's weights are transposed views, and its
    // two biases one sum.
    let (names, depth, h, relu) = match model {
        Model::Scratch(m) => (Names::scratch(), 1, m.num_hiddens(), false),
        Model::Rnn(m) => (
            Names::rnn(m),
            m.rnn.num_layers(),
            m.rnn.hidden_size(),
            m.rnn.kind == CellKind::RnnRelu,
        ),
    };
    let biases: Vec<Vec<T>> = (0..depth)
        .map(|l| match &names.b_hh {
            None => p.get(&names.b_h[l]).to_vec(),
            Some(b_hh) => p
                .get(&names.b_h[l])
                .iter()
                .zip(p.get(&b_hh[l]))
                .map(|(&a, &b)| a + b)
                .collect(),
        })
        .collect();
    let orient = |name: &str, rows, cols| {
        if names.transposed {
            Mat::row_major(p.get(name), cols, rows).t()
        } else {
            Mat::row_major(p.get(name), rows, cols)
        }
    };
    let layers: Vec<Layer<T>> = (0..depth)
        .map(|l| Layer {
            W_xh: orient(&names.W_xh[l], if l == 0 { v } else { h }, h),
            W_hh: orient(&names.W_hh[l], h, h),
            b_h: &biases[l],
        })
        .collect();
    let params = RnnParams {
        layers: &layers,
        W_hq: orient(&names.W_hq, h, v),
        b_q: p.get(&names.b_q),
        relu,
    };
    let (X, Y) = (tokens(x, v, "X")?, tokens(y, v, "Y")?);
    let H0 = host::<T>(state.into_data());
    let batch = Minibatch {
        X: &X,
        Y: &Y,
        batch_size,
        num_steps,
        H0: &H0,
        state_grad_scales: scales,
    };
    let out = bptt::forward_backward(params, &batch, rayon::current_num_threads());

    // Gradients back under the parameters' names, in their stored orientation.
    let g = out.grads;
    let stored = |m: Vec<T>, rows, cols| -> Vec<T> {
        if names.transposed {
            Mat::row_major(&m, rows, cols).t().to_row_major()
        } else {
            m
        }
    };
    let mut by_name: HashMap<String, Vec<T>> = HashMap::new();
    for (l, layer) in g.layers.into_iter().enumerate() {
        let input = if l == 0 { v } else { h };
        by_name.insert(names.W_xh[l].clone(), stored(layer.W_xh, input, h));
        by_name.insert(names.W_hh[l].clone(), stored(layer.W_hh, h, h));
        if let Some(b_hh) = &names.b_hh {
            by_name.insert(b_hh[l].clone(), layer.b_h.clone());
        }
        by_name.insert(names.b_h[l].clone(), layer.b_h);
    }
    by_name.insert(names.W_hq.clone(), stored(g.W_hq, h, v));
    by_name.insert(names.b_q.clone(), g.b_q);
    let inner = device.clone().inner();
    let mut grads = GradientsParams::new();
    for (name, param) in model.named_params() {
        let values = by_name
            .remove(&name)
            .expect("the kernel computes a gradient for every parameter");
        let data = TensorData::new(values, param.shape());
        match data.shape().len() {
            1 => grads.register(param.id(), Tensor::<1>::from_data(data, &inner)),
            _ => grads.register(param.id(), Tensor::<2>::from_data(data, &inner)),
        }
    }
    let rows = num_steps * batch_size;
    Ok(Gradients {
        grads,
        logits: Tensor::from_data(TensorData::new(out.logits, [rows, v]), &device),
        token_losses: Tensor::from_data(TensorData::new(out.token_losses, [rows]), &device),
        state: State {
            h: Tensor::from_data(TensorData::new(out.state, [depth, batch_size, h]), &device),
            c: None,
        },
    })
}

/// Which named parameters play the kernel's `W_xh`, `W_hh`, `b_h` (per layer), `W_hq`, `b_q`.
#[allow(non_snake_case)]
struct Names {
    W_xh: Vec<String>,
    W_hh: Vec<String>,
    b_h: Vec<String>,
    /// nn.RNN's second bias, added to `b_h`; `None` for the scratch model.
    b_hh: Option<Vec<String>>,
    W_hq: String,
    b_q: String,
    /// Stored as PyTorch stores them (`[out, in]`), the transpose of the book's.
    transposed: bool,
}

impl Names {
    fn scratch() -> Self {
        Self {
            W_xh: vec!["W_xh".into()],
            W_hh: vec!["W_hh".into()],
            b_h: vec!["b_h".into()],
            b_hh: None,
            W_hq: "W_hq".into(),
            b_q: "b_q".into(),
            transposed: false,
        }
    }

    /// A concise model's names (`[rnn.]weight_ih_l{k}`, ..., `linear|decoder.weight`).
    fn rnn(model: &RnnModel) -> Self {
        let (rnn, head) = name_prefixes(model.kind);
        let per_layer = |what: &str| -> Vec<String> {
            (0..model.rnn.num_layers())
                .map(|l| format!("{rnn}{what}_l{l}"))
                .collect()
        };
        Self {
            W_xh: per_layer("weight_ih"),
            W_hh: per_layer("weight_hh"),
            b_h: per_layer("bias_ih"),
            b_hh: Some(per_layer("bias_hh")),
            W_hq: format!("{head}.weight"),
            b_q: format!("{head}.bias"),
            transposed: true,
        }
    }
}
