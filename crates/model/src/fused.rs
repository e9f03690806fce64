#![allow(non_snake_case)] // the book's names: X, Y, H0

//! The `fused` engine: a `Model`'s parameters and minibatch copied to the host, one
//! forward and backward pass of the written-out BPTT kernel (`bptt`), the gradients
//! handed back as tensors for the usual clipping and optimizer step.

use burn::optim::GradientsParams;
use burn::tensor::{DType, Element, Int, Tensor, TensorData};

use crate::bptt::{self, Layer, Mat, Minibatch, Real, RnnParams};
use crate::{Model, ModelError, Nonlinearity};

/// A forward and backward pass done outside the autodiff graph.
pub(crate) struct Fused {
    pub grads: GradientsParams,
    pub logits: Tensor<2>,
    pub token_losses: Tensor<1>,
    pub state: Tensor<3>,
}

/// Whether the fused kernel covers `model`: one direction (stacked layers are fine).
pub fn fused_supported(model: &Model) -> bool {
    match model {
        Model::Scratch(_) => true,
        Model::Concise(m) => !m.rnn.bidirectional,
    }
}

pub(crate) fn forward_backward(
    model: &Model,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    state: Tensor<3>,
    scales: Option<&[f64]>,
) -> Result<Fused, ModelError> {
    if !fused_supported(model) {
        return Err(ModelError::Config(
            "train.engine = \"fused\" covers one-direction models; use \"autodiff\" for bidirectional ones".into(),
        ));
    }
    let param_data: Vec<TensorData> = model.named_params().iter().map(|(_, p)| p.data()).collect();
    match param_data[0].dtype() {
        DType::F64 => run::<f64>(model, param_data, x, y, state, scales),
        _ => run::<f32>(model, param_data, x, y, state, scales),
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

fn run<T: Real + Element>(
    model: &Model,
    param_data: Vec<TensorData>,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    state: Tensor<3>,
    scales: Option<&[f64]>,
) -> Result<Fused, ModelError> {
    let device = x.device();
    let [batch_size, num_steps] = x.dims();
    let values: Vec<Vec<T>> = param_data.into_iter().map(host).collect();
    let (v, h) = match model {
        Model::Scratch(m) => (m.W_xh.dims()[0], m.num_hiddens()),
        Model::Concise(m) => (m.linear.weight.dims()[0], m.rnn.hidden_size()),
    };
    let depth = match model {
        Model::Scratch(_) => 1,
        Model::Concise(m) => m.rnn.num_layers(),
    };
    // Scratch: W_xh, W_hh, b_h, W_hq, b_q. Concise: per layer weight_ih [H, in],
    // weight_hh, bias_ih, bias_hh; then linear.weight [V, H], linear.bias.
    let biases: Vec<Vec<T>> = match model {
        Model::Scratch(_) => vec![values[2].clone()],
        Model::Concise(_) => (0..depth)
            .map(|l| {
                values[4 * l + 2]
                    .iter()
                    .zip(&values[4 * l + 3])
                    .map(|(&a, &b)| a + b)
                    .collect()
            })
            .collect(),
    };
    let layers: Vec<Layer<T>> = match model {
        Model::Scratch(_) => vec![Layer {
            W_xh: Mat::row_major(&values[0], v, h),
            W_hh: Mat::row_major(&values[1], h, h),
            b_h: &biases[0],
        }],
        Model::Concise(_) => (0..depth)
            .map(|l| {
                let input = if l == 0 { v } else { h };
                Layer {
                    W_xh: Mat::row_major(&values[4 * l], h, input).t(),
                    W_hh: Mat::row_major(&values[4 * l + 1], h, h).t(),
                    b_h: &biases[l],
                }
            })
            .collect(),
    };
    let params = match model {
        Model::Scratch(_) => RnnParams {
            layers: &layers,
            W_hq: Mat::row_major(&values[3], h, v),
            b_q: &values[4],
            relu: false,
        },
        Model::Concise(m) => RnnParams {
            layers: &layers,
            W_hq: Mat::row_major(&values[4 * depth], v, h).t(),
            b_q: &values[4 * depth + 1],
            relu: m.rnn.nonlinearity == Nonlinearity::Relu,
        },
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

    let g = out.grads;
    let transposed = |m: &[T], rows, cols| Mat::row_major(m, rows, cols).t().to_row_major();
    let per_param: Vec<(Vec<T>, Vec<usize>)> = match model {
        Model::Scratch(_) => {
            let first = g
                .layers
                .into_iter()
                .next()
                .expect("the scratch model has one layer");
            vec![
                (first.W_xh, vec![v, h]),
                (first.W_hh, vec![h, h]),
                (first.b_h, vec![h]),
                (g.W_hq, vec![h, v]),
                (g.b_q, vec![v]),
            ]
        }
        Model::Concise(_) => {
            let mut out = Vec::with_capacity(4 * depth + 2);
            for (l, layer) in g.layers.iter().enumerate() {
                let input = if l == 0 { v } else { h };
                out.push((transposed(&layer.W_xh, input, h), vec![h, input]));
                out.push((transposed(&layer.W_hh, h, h), vec![h, h]));
                out.push((layer.b_h.clone(), vec![h]));
                out.push((layer.b_h.clone(), vec![h]));
            }
            out.push((transposed(&g.W_hq, h, v), vec![v, h]));
            out.push((g.b_q, vec![v]));
            out
        }
    };
    let inner = device.clone().inner();
    let mut grads = GradientsParams::new();
    for ((_, param), (values, shape)) in model.named_params().iter().zip(per_param) {
        let data = TensorData::new(values, shape);
        match data.shape().len() {
            1 => grads.register(param.id(), Tensor::<1>::from_data(data, &inner)),
            _ => grads.register(param.id(), Tensor::<2>::from_data(data, &inner)),
        }
    }
    let rows = num_steps * batch_size;
    Ok(Fused {
        grads,
        logits: Tensor::from_data(TensorData::new(out.logits, [rows, v]), &device),
        token_losses: Tensor::from_data(TensorData::new(out.token_losses, [rows]), &device),
        state: Tensor::from_data(TensorData::new(out.state, [depth, batch_size, h]), &device),
    })
}
