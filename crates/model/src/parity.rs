//! `parity`: one forward/backward/clip/SGD step on a PyTorch fixture's inputs,
//! with every intermediate written out under the fixture's names.

use burn::optim::SgdConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::tensors::NamedTensors;
use crate::{Engine, Model, ModelConfig, ModelError, ModelKind, train_step};

/// Which model the fixture holds, from its tensor names.
pub fn detect_kind(input: &NamedTensors) -> Result<ModelKind, ModelError> {
    if input.tensors.contains_key("W_xh") {
        Ok(ModelKind::Scratch)
    } else if input.tensors.contains_key("weight_ih_l0") {
        Ok(ModelKind::Concise)
    } else {
        Err(ModelError::MissingTensor {
            file: input.file.clone(),
            name: "W_xh (scratch model) or weight_ih_l0 (concise model)".into(),
        })
    }
}

/// Runs one training step on the fixture `input` (parameters, `X`, `Y`, `H0`).
pub fn parity(
    input: &NamedTensors,
    kind: Option<ModelKind>,
    theta: f64,
    lr: f64,
    engine: Engine,
    device: &Device,
) -> Result<NamedTensors, ModelError> {
    let kind = match kind {
        Some(kind) => kind,
        None => detect_kind(input)?,
    };
    let (vocab_size, num_hiddens) = match kind {
        ModelKind::Scratch => {
            let s = input.shape("W_xh")?;
            (s[0], *s.get(1).unwrap_or(&0))
        }
        ModelKind::Concise => {
            let s = input.shape("weight_ih_l0")?;
            (*s.get(1).unwrap_or(&0), s[0])
        }
    };
    let config = ModelConfig::new(kind, vocab_size, num_hiddens);
    let model = Model::from_named(&config, input, device)?;
    let x_shape = input.shape("X")?;
    let [b, t] = x_shape[..] else {
        return Err(ModelError::BadShape {
            file: input.file.clone(),
            name: "X".into(),
            expected: vec![0, 0],
            actual: x_shape,
        });
    };
    let x = Tensor::<2, Int>::from_data(input.get("X", &[b, t])?, device);
    let y = Tensor::<2, Int>::from_data(input.get("Y", &[b, t])?, device);
    let h0 = Tensor::<2>::from_data(input.get("H0", &[b, num_hiddens])?, device);

    let mut optimizer = SgdConfig::new().init();
    let step = train_step(
        model,
        &mut optimizer,
        x,
        y.clone(),
        h0.unsqueeze::<3>(),
        None,
        engine,
        theta,
        lr,
        true,
    )?;

    let mut out = NamedTensors {
        file: "parity output".into(),
        ..Default::default()
    };
    out.metadata
        .insert("model".into(), format!("{kind:?}").to_lowercase());
    out.insert("logits", step.logits.into_data());
    let y_flat: Vec<i64> = y
        .transpose()
        .reshape([t * b])
        .into_data()
        .iter::<i64>()
        .collect();
    out.insert("y", TensorData::new(y_flat, [t * b]));
    out.insert("loss", step.loss.into_data());
    out.insert("H", step.state.reshape([b, num_hiddens]).into_data());
    if let Some(norm) = step.grad_norm {
        out.insert("grad_norm", norm.into_data());
    }
    for (name, g) in step.grads {
        out.insert(format!("grad.{name}"), g);
    }
    for (name, g) in step.clipped_grads {
        out.insert(format!("clipped_grad.{name}"), g);
    }
    for (name, p) in step.model.named_params() {
        out.insert(format!("updated.{name}"), p.data());
    }
    Ok(out)
}

/// The largest violation of `|a - b| <= atol + rtol * |b|` over every tensor `expected`
/// holds, as `(name, index, a, b)`; `None` when all agree. Missing tensors are errors.
pub fn compare(
    actual: &NamedTensors,
    expected: &NamedTensors,
    atol: f64,
    rtol: f64,
) -> Result<Option<(String, usize, f64, f64)>, ModelError> {
    let mut worst: Option<(f64, (String, usize, f64, f64))> = None;
    for (name, want) in &expected.tensors {
        let got = actual.get(name, want.shape())?;
        for (i, (a, b)) in got.iter::<f64>().zip(want.iter::<f64>()).enumerate() {
            let excess = (a - b).abs() - (atol + rtol * b.abs());
            if (excess > 0.0 || a.is_nan()) && worst.as_ref().is_none_or(|w| excess > w.0) {
                worst = Some((excess, (name.clone(), i, a, b)));
            }
        }
    }
    Ok(worst.map(|w| w.1))
}
