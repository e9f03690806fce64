#![allow(non_snake_case)] // the book's names: X, Y, H0

//! The `fused` engine: a `Model`'s parameters and minibatch copied to the host, one
//! forward and backward pass of the written-out BPTT kernel (`bptt`), the gradients
//! (in a training step clipped here, on the host) handed back as tensors for the
//! optimizer step.

use std::collections::HashMap;

use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Element, Int, Tensor, TensorData};

use crate::bptt::{self, Cell, Layer, Masks, Mat, Minibatch, Params, Real, RowGrads};
use crate::clip::scale_host;
use crate::model::name_prefixes;
use crate::step::{Gradients, Pass, StepInput};
use crate::{CellKind, Model, ModelConfig, ModelError, ModelKind, RnnModel, State};

/// Whether the fused kernel covers a model: every one-direction model (the scratch
/// model; RNN, GRU and LSTM layers, stacked or not, one-hot or embedding input, dropout,
/// tied or not).
pub fn fused_applies(config: &ModelConfig) -> bool {
    config.kind == ModelKind::Scratch || !config.bidirectional
}

/// `fused_applies` for a built model.
pub fn fused_supported(model: &Model) -> bool {
    fused_applies(&model.config())
}

pub(crate) fn forward_backward(
    model: &Model,
    input: StepInput,
    pass: Pass,
) -> Result<Gradients, ModelError> {
    let params = HostParams::of(model)?;
    let run = Run {
        layout: &Layout::of(model),
        input,
        pass,
    };
    match params.dtype() {
        DType::F64 => Ok(run.go::<f64>(&params)?.into_gradients(model)),
        _ => Ok(run.go::<f32>(&params)?.into_gradients(model)),
    }
}

fn host<T: Real + Element>(data: TensorData) -> Vec<T> {
    data.convert::<T>()
        .try_into_vec::<T>()
        .expect("converted to the element type")
}

/// A row-major `[rows, cols]` gradient transposed into a buffer of the kernel's pool
/// (fresh memory every minibatch would cost page faults), the original given back to it.
fn transposed<T: Real>(m: Vec<T>, rows: usize, cols: usize) -> Vec<T> {
    let mut t = bptt::buffer(m.len());
    Mat::row_major(&m, rows, cols).t().write_row_major(&mut t);
    bptt::recycle([m]);
    t
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

/// A model's parameters on the host, by name, all in one element type (the model's).
pub(crate) struct HostParams(HashMap<String, TensorData>);

impl HostParams {
    /// Copies `model`'s parameters out of their tensors.
    pub(crate) fn of(model: &Model) -> Result<Self, ModelError> {
        if !fused_supported(model) {
            return Err(ModelError::Config(
                "train.engine = \"fused\" covers one-direction models; use \"autodiff\"".into(),
            ));
        }
        let params: HashMap<String, TensorData> = model
            .named_params()
            .iter()
            .map(|(name, p)| (name.clone(), p.data()))
            .collect();
        let dtype = match params.values().next().map(TensorData::dtype) {
            Some(DType::F64) => DType::F64,
            _ => DType::F32,
        };
        let converted = params
            .into_iter()
            .map(|(name, data)| (name, data.convert_dtype(dtype)));
        Ok(Self(converted.collect()))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &TensorData)> {
        self.0.iter()
    }

    pub(crate) fn dtype(&self) -> DType {
        self.0.values().next().map_or(DType::F32, TensorData::dtype)
    }

    fn get<T: Element>(&self, name: &str) -> &[T] {
        self.0[name].as_slice::<T>().expect("in the element type")
    }

    pub(crate) fn get_mut<T: Element>(&mut self, name: &str) -> &mut [T] {
        self.0
            .get_mut(name)
            .expect("a parameter of the model")
            .as_mut_slice::<T>()
            .expect("in the element type")
    }

    /// The values of every parameter, by name (copies).
    pub(crate) fn to_named(&self) -> HashMap<String, TensorData> {
        self.0.clone()
    }

    pub(crate) fn into_named(self) -> HashMap<String, TensorData> {
        self.0
    }
}

/// One parameter's gradient on the host: whole, or the rows of it that can be nonzero
/// (the embedding's: an optimizer that moves only what has a gradient, SGD, updates
/// those alone), or its transpose (the decoder's and the layers' weights', which the
/// kernel multiplies in the book's orientation: SGD reads them transposed tile by tile,
/// where a transposed copy was 8 MB written and read back a PTB minibatch).
pub(crate) enum HostGrad<T> {
    Whole(Vec<T>),
    Rows(RowGrads<T>),
    /// Row-major `[cols, rows]` for a `[rows, cols]` parameter.
    Transposed {
        values: Vec<T>,
        rows: usize,
    },
}

impl<T: Real> HostGrad<T> {
    /// Every value that can be nonzero, for the clipping and its norm.
    pub(crate) fn values_mut(&mut self) -> &mut [T] {
        match self {
            Self::Whole(v) => v,
            Self::Rows(r) => &mut r.values,
            Self::Transposed { values, .. } => values,
        }
    }

    /// The whole gradient of a parameter of `len` elements.
    pub(crate) fn into_whole(self, len: usize) -> Vec<T> {
        match self {
            Self::Whole(v) => v,
            Self::Rows(r) => {
                let whole = r.to_dense(len);
                bptt::recycle([r.values]);
                whole
            }
            Self::Transposed { values, rows } => {
                let cols = values.len() / rows.max(1);
                transposed(values, cols, rows)
            }
        }
    }
}

/// What a pass of the kernel hands back: the gradients on the host in the model's
/// parameter order, beside the rest of `Gradients` (its `grads` not yet filled).
pub(crate) struct HostPass<T> {
    pub(crate) grads: Vec<HostGrad<T>>,
    /// The norm clipping's factor, which `grads` are still to be multiplied by.
    pub(crate) scale: Option<T>,
    pub(crate) rest: Gradients,
}

impl<T: Real + Element> HostPass<T> {
    /// The gradients as tensors under their parameters' ids, for an optimizer.
    fn into_gradients(mut self, model: &Model) -> Gradients {
        if let Some(factor) = self.scale {
            let mut all: Vec<&mut [T]> = self.grads.iter_mut().map(HostGrad::values_mut).collect();
            scale_host(&mut all, factor);
        }
        let inner = self.rest.token_losses.device().inner();
        let mut rest = self.rest;
        for ((_, param), grad) in model.named_params().iter().zip(self.grads) {
            let shape = param.shape();
            let data = TensorData::new(grad.into_whole(shape.iter().product()), shape);
            match data.shape().len() {
                1 => rest
                    .grads
                    .register(param.id(), Tensor::<1>::from_data(data, &inner)),
                _ => rest
                    .grads
                    .register(param.id(), Tensor::<2>::from_data(data, &inner)),
            }
        }
        rest
    }
}

/// What the kernel needs to know of a model besides its parameter values.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    cell: Cell,
    depth: usize,
    h: usize,
    v: usize,
    dropout: f64,
    names: Names,
    /// Every parameter's name in the model's order (`Model::named_params`).
    order: Vec<String>,
}

impl Layout {
    pub(crate) fn of(model: &Model) -> Self {
        let (cell, depth, h) = match model {
            Model::Scratch(m) => (Cell::Rnn { relu: false }, 1, m.num_hiddens()),
            Model::Rnn(m) => (
                match m.rnn.kind {
                    CellKind::RnnTanh => Cell::Rnn { relu: false },
                    CellKind::RnnRelu => Cell::Rnn { relu: true },
                    CellKind::Gru => Cell::Gru,
                    CellKind::Lstm => Cell::Lstm,
                },
                m.rnn.num_layers(),
                m.rnn.hidden_size(),
            ),
        };
        Self {
            cell,
            depth,
            h,
            v: model.vocab_size(),
            dropout: model.dropout(),
            names: Names::of(model),
            order: model.named_params().into_iter().map(|(n, _)| n).collect(),
        }
    }

    /// The parameters' names in the model's order.
    pub(crate) fn order(&self) -> &[String] {
        &self.order
    }

    /// The zero state `Model::begin_state` gives.
    pub(crate) fn begin_state(&self, batch_size: usize, device: &Device) -> State {
        let (cells, with_c) = (self.depth, self.cell.has_cell_state());
        State::zeros(cells, batch_size, self.h, with_c, device)
    }

    pub(crate) fn dropout(&self) -> f64 {
        self.dropout
    }
}

/// One call of the kernel: its inputs beside the model's layout.
pub(crate) struct Run<'a> {
    pub(crate) layout: &'a Layout,
    pub(crate) input: StepInput<'a>,
    pub(crate) pass: Pass,
}

impl Run<'_> {
    pub(crate) fn go<T: Real + Element>(self, p: &HostParams) -> Result<HostPass<T>, ModelError> {
        let (layout, input) = (self.layout, self.input);
        let device = input.x.device();
        let [batch_size, num_steps] = input.x.dims();
        let (cell, depth, h, v, names) =
            (layout.cell, layout.depth, layout.h, layout.v, &layout.names);
        let gh = cell.gates() * h;
        let e = names.embedding.as_ref().map(|n| p.get::<T>(n).len() / v);
        let first_input = e.unwrap_or(v);
        // PyTorch stores `[out, in]`, the transpose of the book's `x W`.
        let orient = |name: &str, rows, cols| {
            if names.transposed {
                Mat::row_major(p.get::<T>(name), cols, rows).t()
            } else {
                Mat::row_major(p.get::<T>(name), rows, cols)
            }
        };
        let no_bias = vec![T::ZERO; gh];
        let layers: Vec<Layer<T>> = (0..depth)
            .map(|l| Layer {
                W_ih: orient(&names.W_ih[l], if l == 0 { first_input } else { h }, gh),
                W_hh: orient(&names.W_hh[l], h, gh),
                b_ih: p.get::<T>(&names.b_ih[l]),
                b_hh: names.b_hh.as_ref().map_or(&no_bias, |b| p.get::<T>(&b[l])),
            })
            .collect();
        let embedding = names
            .embedding
            .as_ref()
            .map(|n| Mat::row_major(p.get::<T>(n), v, first_input));
        let W_hq = match &names.W_hq {
            Some(name) => orient(name, h, v),
            None => embedding.expect("a tied decoder has an embedding").t(),
        };
        let params = Params {
            cell,
            embedding,
            layers: &layers,
            W_hq,
            b_q: p.get::<T>(&names.b_q),
        };
        // The masks in the order the autodiff engine draws them: embedding, the inputs of
        // the layers above the first, the last layer's output.
        let rows = num_steps * batch_size;
        let masks = input.dropout.filter(|_| layout.dropout > 0.0).map(|drop| {
            let mut draw = |width: usize| -> Vec<T> {
                let mut mask = bptt::buffer(rows * width);
                drop.fill(&mut mask);
                mask
            };
            let mut inputs = vec![e.map(&mut draw)];
            inputs.extend((1..depth).map(|_| Some(draw(h))));
            Masks {
                inputs,
                output: draw(h),
            }
        });
        let (X, Y) = (tokens(&input.x, v, "X")?, tokens(&input.y, v, "Y")?);
        let H0 = host::<T>(input.state.h.into_data());
        let C0 = input.state.c.map(|c| host::<T>(c.into_data()));
        let batch = Minibatch {
            X: &X,
            Y: &Y,
            batch_size,
            num_steps,
            H0: &H0,
            C0: C0.as_deref(),
            state_grad_scales: input.scales,
            masks: masks.as_ref(),
            keep_logits: matches!(self.pass, Pass::Inspect),
        };
        let out = bptt::forward_backward(params, &batch, rayon::current_num_threads());
        if let Some(m) = masks {
            bptt::recycle(m.inputs.into_iter().flatten().chain([m.output]));
        }

        // Gradients back under the parameters' names, the weights' in the book's
        // orientation.
        let g = out.grads;
        use HostGrad::{Rows, Transposed, Whole};
        let mut by_name: HashMap<String, HostGrad<T>> = HashMap::new();
        let mut put = |name: &String, g: HostGrad<T>| by_name.insert(name.clone(), g);
        // A weight's gradient `[in, out]`, the book's: PyTorch's `[out, in]` transposed.
        let book = |values: Vec<T>, out: usize| match names.transposed {
            true => Transposed { values, rows: out },
            false => Whole(values),
        };
        for (l, layer) in g.layers.into_iter().enumerate() {
            put(&names.W_ih[l], book(layer.W_ih, gh));
            put(&names.W_hh[l], book(layer.W_hh, gh));
            put(&names.b_ih[l], Whole(layer.b_ih));
            if let Some(b_hh) = &names.b_hh {
                put(&b_hh[l], Whole(layer.b_hh));
            }
        }
        match (&names.W_hq, &names.embedding, g.embedding) {
            (Some(name), _, embedding) => {
                put(name, book(g.W_hq, v));
                if let (Some(name), Some(grad)) = (&names.embedding, embedding) {
                    put(name, Rows(grad));
                }
            }
            // Tied: the embedding's gradient from both of its uses, its rows added to the
            // decoder's.
            (None, Some(name), Some(rows)) => {
                let mut grad = transposed(g.W_hq, h, v);
                rows.add_to(&mut grad);
                bptt::recycle([rows.values]);
                put(name, Whole(grad));
            }
            (None, ..) => unreachable!("a tied decoder has an embedding"),
        }
        put(&names.b_q, Whole(g.b_q));
        // In the model's parameter order, so that the norm sums in the same order every run.
        let mut values: Vec<HostGrad<T>> = (layout.order.iter())
            .map(|name| {
                by_name
                    .remove(name)
                    .expect("the kernel computes a gradient for every parameter")
            })
            .collect();
        let (clipped, scale) = match self.pass {
            Pass::Train(clipping) => {
                let mut all: Vec<&mut [T]> = values.iter_mut().map(HostGrad::values_mut).collect();
                let (norm, scale) = clipping.clip_host(&mut all);
                let norm = TensorData::new(vec![T::from_f64(norm)], [1]);
                (Some(Tensor::from_data(norm, &device)), scale)
            }
            Pass::Inspect => (None, None),
        };
        let state =
            |s: Vec<T>| Tensor::from_data(TensorData::new(s, [depth, batch_size, h]), &device);
        Ok(HostPass {
            grads: values,
            scale,
            rest: Gradients {
                grads: GradientsParams::new(),
                logits: out
                    .logits
                    .map(|l| Tensor::from_data(TensorData::new(l, [rows, v]), &device)),
                token_losses: Tensor::from_data(TensorData::new(out.token_losses, [rows]), &device),
                state: State {
                    h: state(out.H),
                    c: out.C.map(state),
                },
                clipped,
            },
        })
    }
}

/// Which named parameters play the kernel's parts: the embedding, each layer's `W_ih`,
/// `W_hh`, `b_ih`, `b_hh`, the decoder's `W_hq` (`None`: tied) and `b_q`.
#[allow(non_snake_case)]
#[derive(Debug, Clone)]
struct Names {
    embedding: Option<String>,
    W_ih: Vec<String>,
    W_hh: Vec<String>,
    b_ih: Vec<String>,
    /// PyTorch's second bias; `None` for the scratch model.
    b_hh: Option<Vec<String>>,
    W_hq: Option<String>,
    b_q: String,
    /// Stored as PyTorch stores them (`[out, in]`), the transpose of the book's.
    transposed: bool,
}

impl Names {
    fn of(model: &Model) -> Self {
        match model {
            Model::Scratch(_) => Self {
                embedding: None,
                W_ih: vec!["W_xh".into()],
                W_hh: vec!["W_hh".into()],
                b_ih: vec!["b_h".into()],
                b_hh: None,
                W_hq: Some("W_hq".into()),
                b_q: "b_q".into(),
                transposed: false,
            },
            Model::Rnn(m) => Self::rnn(m),
        }
    }

    /// A concise or lm model's names (`[rnn.]weight_ih_l{k}`, ..., `linear|decoder.weight`).
    fn rnn(model: &RnnModel) -> Self {
        let (rnn, head) = name_prefixes(model.kind);
        let per_layer = |what: &str| -> Vec<String> {
            (0..model.rnn.num_layers())
                .map(|l| format!("{rnn}{what}_l{l}"))
                .collect()
        };
        Self {
            embedding: model.encoder.is_some().then(|| "encoder.weight".into()),
            W_ih: per_layer("weight_ih"),
            W_hh: per_layer("weight_hh"),
            b_ih: per_layer("bias_ih"),
            b_hh: Some(per_layer("bias_hh")),
            W_hq: model
                .decoder
                .weight
                .is_some()
                .then(|| format!("{head}.weight")),
            b_q: format!("{head}.bias"),
            transposed: true,
        }
    }
}
