//! `parity`: one forward/backward/clip/SGD step on a PyTorch fixture's inputs,
//! with every intermediate written out under the fixture's names.

use burn::optim::SgdConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::tensors::NamedTensors;
use crate::{
    CellKind, Clipping, Engine, Model, ModelConfig, ModelError, ModelKind, State, StepInput,
    gradients,
};

/// What a fixture holds: the model and the step's settings.
#[derive(Debug, Clone)]
pub struct FixtureSpec {
    pub config: ModelConfig,
    /// From the fixture's metadata (lm fixtures); `None`: the caller's choice.
    pub theta: Option<f64>,
    pub lr: Option<f64>,
}

/// Which model a fixture holds: from its metadata (`cell`, `V`, `H`, `L`, `E`, `input`,
/// `tied`: the `fixtures/lm` format), else from its tensor names (the chapter-8 fixtures).
pub fn fixture_spec(input: &NamedTensors) -> Result<FixtureSpec, ModelError> {
    let meta = &input.metadata;
    let bad = |what: String| ModelError::Config(format!("{}: {what}", input.file));
    if let Some(cell) = meta.get("cell") {
        let cell = CellKind::parse(cell).ok_or_else(|| {
            bad(format!(
                "metadata cell = {cell:?}: expected one of rnn_tanh, rnn_relu, gru, lstm"
            ))
        })?;
        let get = |key: &str| -> Result<&str, ModelError> {
            meta.get(key)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("metadata `{key}` is missing")))
        };
        let num = |key: &str| -> Result<usize, ModelError> {
            let v = get(key)?;
            v.parse()
                .map_err(|_| bad(format!("metadata {key} = {v:?}: expected a count")))
        };
        let float = |key: &str| -> Result<Option<f64>, ModelError> {
            meta.get(key)
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad(format!("metadata {key} = {v:?}: expected a number")))
                })
                .transpose()
        };
        let one_hot = match get("input")? {
            "one_hot" => true,
            "embedding" => false,
            other => {
                return Err(bad(format!(
                    "metadata input = {other:?}: expected embedding or one_hot"
                )));
            }
        };
        let tied = match get("tied")? {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(format!(
                    "metadata tied = {other:?}: expected true or false"
                )));
            }
        };
        let config = ModelConfig::new(ModelKind::Lm, num("V")?, num("H")?)
            .with_num_layers(num("L")?)
            .with_cell(cell)
            .with_embedding_dim(if one_hot { 0 } else { num("E")? })
            .with_tied(tied);
        config.validate().map_err(|e| bad(e.to_string()))?;
        return Ok(FixtureSpec {
            config,
            theta: float("theta")?,
            lr: float("lr")?,
        });
    }
    let (kind, name) = if input.tensors.contains_key("W_xh") {
        (ModelKind::Scratch, "W_xh")
    } else if input.tensors.contains_key("weight_ih_l0") {
        (ModelKind::Concise, "weight_ih_l0")
    } else {
        return Err(ModelError::MissingTensor {
            file: input.file.clone(),
            name: "W_xh (scratch model) or weight_ih_l0 (concise model), or `cell` metadata (fixtures/lm)".into(),
        });
    };
    let s = input.shape(name)?;
    let (v, h) = match (kind, &s[..]) {
        (ModelKind::Scratch, [v, h]) => (*v, *h),
        (_, [h, v]) => (*v, *h),
        _ => {
            return Err(ModelError::BadShape {
                file: input.file.clone(),
                name: name.into(),
                expected: vec![0, 0],
                actual: s,
            });
        }
    };
    Ok(FixtureSpec {
        config: ModelConfig::new(kind, v, h),
        theta: None,
        lr: None,
    })
}

fn reshaped(data: TensorData, shape: Vec<usize>) -> TensorData {
    let (bytes, _, dtype) = data.into_parts();
    TensorData::from_bytes(bytes, shape, dtype)
}

/// Every model parameter the fixture holds must be one the model has: a name that
/// belongs to the parameter namespaces but is not the model's is a mismatch with the metadata.
fn check_names(input: &NamedTensors, model: &Model) -> Result<(), ModelError> {
    let names: Vec<String> = model.named_params().into_iter().map(|(n, _)| n).collect();
    let inputs = ["X", "Y", "H0", "C0"];
    for name in input.tensors.keys() {
        if !inputs.contains(&name.as_str()) && !names.contains(name) {
            return Err(ModelError::Config(format!(
                "{}: tensor `{name}` is not a parameter of the model its metadata describes ({}); expected {}",
                input.file,
                describe(model),
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn describe(model: &Model) -> String {
    match model {
        Model::Scratch(_) => "scratch".into(),
        Model::Rnn(m) => format!(
            "{} x {}, {}, {}",
            m.rnn.num_layers(),
            m.rnn.kind.name(),
            if m.encoder.is_some() {
                "embedding"
            } else {
                "one-hot"
            },
            if m.decoder.weight.is_none() {
                "tied"
            } else {
                "untied"
            }
        ),
    }
}

/// Runs one training step on the fixture `input` (parameters, `X`, `Y`, `H0`, `C0`):
/// forward and backward, global-norm clipping to `theta`, SGD with `lr`. The fixture's
/// own `theta` and `lr` (metadata) apply where the caller gives none.
pub fn parity(
    input: &NamedTensors,
    theta: Option<f64>,
    lr: Option<f64>,
    engine: Engine,
    device: &Device,
) -> Result<NamedTensors, ModelError> {
    let spec = fixture_spec(input)?;
    let (theta, lr) = (
        theta.or(spec.theta).unwrap_or(1.0),
        lr.or(spec.lr).unwrap_or(1.0),
    );
    let config = &spec.config;
    let model = Model::from_named(config, input, device)?;
    check_names(input, &model)?;
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
    let cells = model.begin_state(b, device).h.dims()[0];
    let h = config.num_hiddens;
    // The chapter-8 fixtures hold one layer's `[B, H]`; the lm ones `[L, B, H]`.
    let legacy = config.kind != ModelKind::Lm;
    let state_shape = if legacy {
        vec![b, h]
    } else {
        vec![cells, b, h]
    };
    let read_state = |name: &str| -> Result<Tensor<3>, ModelError> {
        let data = input.get(name, &state_shape)?;
        Ok(Tensor::<3>::from_data(
            reshaped(data, vec![cells, b, h]),
            device,
        ))
    };
    let state = State {
        h: read_state("H0")?,
        c: config
            .cell
            .has_cell_state()
            .then(|| read_state("C0"))
            .transpose()?,
    };

    let g = gradients(&model, StepInput::new(x, y.clone(), state), engine)?;
    let read = |grads: &burn::optim::GradientsParams| -> Vec<(String, TensorData)> {
        let named = model.named_params().into_iter();
        named
            .filter_map(|(name, p)| Some((name, p.grad(grads)?)))
            .collect()
    };
    let grads = read(&g.grads);
    let (clipped, grad_norm) = Clipping::norm(theta).apply(&model, g.grads);
    let clipped_grads = read(&clipped);
    let updated = SgdConfig::new().init().step(lr, model, clipped);

    let mut out = NamedTensors {
        file: "parity output".into(),
        ..Default::default()
    };
    out.metadata
        .insert("model".into(), format!("{:?}", config.kind).to_lowercase());
    let logits = g.logits.expect("gradients keeps the logits");
    out.insert("logits", logits.into_data());
    let y_flat: Vec<i64> = y
        .transpose()
        .reshape([t * b])
        .into_data()
        .iter::<i64>()
        .collect();
    out.insert("y", TensorData::new(y_flat, [t * b]));
    out.insert("loss", g.token_losses.mean().into_data());
    let write_state = |s: Tensor<3>| reshaped(s.into_data(), state_shape.clone());
    out.insert("H", write_state(g.state.h));
    if let Some(c) = g.state.c {
        out.insert("C", write_state(c));
    }
    if let Some(norm) = grad_norm {
        out.insert("grad_norm", norm.into_data());
    }
    for (name, g) in grads {
        out.insert(format!("grad.{name}"), g);
    }
    for (name, g) in clipped_grads {
        out.insert(format!("clipped_grad.{name}"), g);
    }
    for (name, p) in updated.named_params() {
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
