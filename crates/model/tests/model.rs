//! Independent checks of the models in float64 (this test binary configures the flex
//! device for f64 once): the shared PyTorch fixtures at f64 tolerance, finite
//! differences, plain-loop references for relu / stacked / bidirectional layers, a
//! hand-computed step, and the concise model equal to the scratch equations.

use std::path::PathBuf;

use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::*;

fn device() -> Device {
    let mut device = Device::flex();
    // Settings are per process and set once; every test here wants f64.
    let _ = device.configure(FloatDType::F64);
    assert_eq!(
        Tensor::<1>::zeros([1], &device.clone().autodiff()).dtype(),
        DType::F64
    );
    device.autodiff()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

#[test]
fn shared_fixtures_match_pytorch_float64() {
    let device = device();
    for case in [
        "scratch_small",
        "scratch_small_clip",
        "concise_small",
        "concise_small_clip",
    ] {
        let input = NamedTensors::read(&fixtures().join(format!("{case}.safetensors"))).unwrap();
        let expected =
            NamedTensors::read(&fixtures().join(format!("{case}.expected.float64.safetensors")))
                .unwrap();
        for engine in [Engine::Autodiff, Engine::Fused] {
            let out = parity::parity(&input, Some(1.0), Some(1.0), engine, &device).unwrap();
            assert_eq!(out.tensors["logits"].dtype(), DType::F64);
            let worst = parity::compare(&out, &expected, 1e-10, 1e-9).unwrap();
            assert!(worst.is_none(), "{case} {engine:?}: {worst:?}");
        }
        // Every expected tensor was compared (compare errors on a missing one), and the
        // clip cases really clip.
        let norm: f64 = expected.tensors["grad_norm"].iter::<f64>().next().unwrap();
        assert_eq!(case.ends_with("clip"), norm > 1.0, "{case}");
        // The comparison can fail: a step with lr = 2 is caught.
        let off = parity::parity(&input, Some(1.0), Some(2.0), Engine::Fused, &device).unwrap();
        let worst = parity::compare(&off, &expected, 1e-10, 1e-9)
            .unwrap()
            .unwrap();
        assert!(worst.0.starts_with("updated."), "{worst:?}");
    }
}

const LM_CASES: [&str; 5] = [
    "lstm_small",
    "lstm_small_tied_clip",
    "gru_small",
    "gru_onehot_clip",
    "rnn_relu_small",
];

#[test]
fn lm_fixtures_match_pytorch_float64() {
    let device = device();
    let lm = fixtures().join("lm");
    for case in LM_CASES {
        let input = NamedTensors::read(&lm.join(format!("{case}.safetensors"))).unwrap();
        let expected =
            NamedTensors::read(&lm.join(format!("{case}.expected.float64.safetensors"))).unwrap();
        // theta and lr come from the fixture's metadata.
        for engine in [Engine::Autodiff, Engine::Fused] {
            let out = parity::parity(&input, None, None, engine, &device).unwrap();
            let worst = parity::compare(&out, &expected, 1e-10, 1e-9).unwrap();
            assert!(worst.is_none(), "{case} {engine:?}: {worst:?}");
        }
        let norm: f64 = expected.tensors["grad_norm"].iter::<f64>().next().unwrap();
        let theta: f64 = input.metadata["theta"].parse().unwrap();
        assert_eq!(case.ends_with("clip"), norm > theta, "{case}");
        // The comparison can fail: without the fixture's clipping the clip cases differ.
        if case.ends_with("clip") {
            let off = parity::parity(&input, Some(1.0), None, Engine::Autodiff, &device).unwrap();
            let worst = parity::compare(&off, &expected, 1e-10, 1e-9)
                .unwrap()
                .unwrap();
            assert!(worst.0.starts_with("clipped_grad."), "{worst:?}");
        }
    }
}

#[test]
fn lm_fixtures_whose_names_do_not_match_their_metadata_are_errors() {
    let device = device();
    let lm = fixtures().join("lm");
    let err = |input: &NamedTensors| {
        parity::parity(input, None, None, Engine::Autodiff, &device)
            .unwrap_err()
            .to_string()
    };
    let tied = NamedTensors::read(&lm.join("lstm_small_tied_clip.safetensors")).unwrap();
    let mut untied = tied.clone();
    untied.metadata.insert("tied".into(), "false".into());
    assert!(
        err(&untied).contains("`decoder.weight` is missing"),
        "{}",
        err(&untied)
    );
    let mut gru = tied.clone();
    gru.metadata.insert("cell".into(), "gru".into());
    assert!(
        err(&gru).contains("rnn.weight_ih_l0` has shape [32, 8], expected [24, 8]"),
        "{}",
        err(&gru)
    );
    let mut one_layer = NamedTensors::read(&lm.join("lstm_small.safetensors")).unwrap();
    one_layer.metadata.insert("L".into(), "1".into());
    let e = err(&one_layer);
    assert!(
        e.contains("_l1` is not a parameter") && e.contains("1 x lstm"),
        "{e}"
    );
    let mut cell = tied.clone();
    cell.metadata.insert("cell".into(), "transformer".into());
    assert!(
        err(&cell).contains("expected one of rnn_tanh, rnn_relu, gru, lstm"),
        "{}",
        err(&cell)
    );
    let mut no_h = tied;
    no_h.metadata.remove("H");
    assert!(
        err(&no_h).contains("metadata `H` is missing"),
        "{}",
        err(&no_h)
    );
}

/// A random model of the given kind with named parameters drawn from `seed`.
fn random_model(
    config: &ModelConfig,
    seed: u64,
    scale: f64,
    device: &Device,
) -> (Model, NamedTensors) {
    let template = config.init(seed, device).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut named = NamedTensors::default();
    for (name, p) in template.named_params() {
        let shape = p.data().shape().to_vec();
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        named.insert(name, TensorData::new(values, shape));
    }
    (Model::from_named(config, &named, device).unwrap(), named)
}

fn tokens(values: &[i64], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

fn loss_of(model: &Model, x: &Tensor<2, Int>, y: &Tensor<2, Int>, h0: &State) -> f64 {
    let (logits, _) = model.forward(x.clone(), h0.clone());
    cross_entropy(logits, y.clone()).into_scalar::<f64>()
}

#[test]
fn gradients_equal_central_finite_differences() {
    let device = device();
    let configs = [
        ModelConfig::new(ModelKind::Scratch, 5, 4),
        ModelConfig::new(ModelKind::Concise, 5, 3)
            .with_num_layers(2)
            .with_bidirectional(true),
        ModelConfig::new(ModelKind::Concise, 5, 3).with_cell(CellKind::RnnRelu),
        ModelConfig::new(ModelKind::Lm, 5, 3)
            .with_cell(CellKind::Lstm)
            .with_num_layers(2)
            .with_embedding_dim(3)
            .with_tied(true),
        ModelConfig::new(ModelKind::Lm, 5, 3)
            .with_cell(CellKind::Gru)
            .with_bidirectional(true)
            .with_embedding_dim(2),
        ModelConfig::new(ModelKind::Concise, 5, 3).with_cell(CellKind::Gru),
    ];
    let x = tokens(&[0, 3, 1, 4, 2, 2], [2, 3], &device);
    let y = tokens(&[3, 1, 4, 2, 2, 0], [2, 3], &device);
    for config in configs {
        let (model, named) = random_model(&config, 7, 0.8, &device);
        let h0 = model.begin_state(2, &device).map(|t| t.add_scalar(0.1));
        let (logits, _) = model.forward(x.clone(), h0.clone());
        let grads =
            GradientsParams::from_grads(cross_entropy(logits, y.clone()).backward(), &model);
        let eps = 1e-6;
        for (name, p) in model.named_params() {
            let analytic: Vec<f64> = p.grad(&grads).unwrap().iter::<f64>().collect();
            let base = &named.tensors[&name];
            let values: Vec<f64> = base.iter::<f64>().collect();
            for i in 0..values.len() {
                let at = |delta: f64| {
                    let mut changed = named.clone();
                    let mut v = values.clone();
                    v[i] += delta;
                    changed.insert(name.clone(), TensorData::new(v, base.shape().to_vec()));
                    loss_of(
                        &Model::from_named(&config, &changed, &device).unwrap(),
                        &x,
                        &y,
                        &h0,
                    )
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[i]).abs() <= 1e-7 + 1e-6 * numeric.abs(),
                    "{config:?} {name}[{i}]: finite difference {numeric}, autodiff {}",
                    analytic[i]
                );
            }
        }
    }
}

/// `[T][B][features]` (or `[layers][B][H]`) as nested vectors.
type Seq = Vec<Vec<Vec<f64>>>;

/// `nn.RNN` written as plain loops over f64 vectors, straight from PyTorch's documentation.
fn reference_rnn(
    named: &NamedTensors,
    config: &ModelConfig,
    input: &[Vec<Vec<f64>>], // [T][B][in]
    h0: &[Vec<Vec<f64>>],    // [L*D][B][H]
) -> (Seq, Seq) {
    let d = if config.bidirectional { 2 } else { 1 };
    let h = config.num_hiddens;
    let get = |n: &str| -> Vec<f64> { named.tensors[n].iter::<f64>().collect() };
    let act = |v: f64| match config.cell {
        CellKind::RnnRelu => v.max(0.0),
        _ => v.tanh(),
    };
    let (t_len, b_len) = (input.len(), input[0].len());
    let mut layer_in = input.to_vec();
    let mut h_n = Vec::new();
    for layer in 0..config.num_layers {
        let mut out = vec![vec![vec![0.0; d * h]; b_len]; t_len];
        for dir in 0..d {
            let s = format!("l{layer}{}", if dir == 1 { "_reverse" } else { "" });
            let (w_ih, w_hh) = (
                get(&format!("weight_ih_{s}")),
                get(&format!("weight_hh_{s}")),
            );
            let (b_ih, b_hh) = (get(&format!("bias_ih_{s}")), get(&format!("bias_hh_{s}")));
            let n_in = layer_in[0][0].len();
            let mut state = h0[layer * d + dir].clone();
            let order: Vec<usize> = if dir == 1 {
                (0..t_len).rev().collect()
            } else {
                (0..t_len).collect()
            };
            for t in order {
                let mut next = vec![vec![0.0; h]; b_len];
                for b in 0..b_len {
                    for j in 0..h {
                        let mut z = b_ih[j] + b_hh[j];
                        for k in 0..n_in {
                            z += w_ih[j * n_in + k] * layer_in[t][b][k];
                        }
                        for k in 0..h {
                            z += w_hh[j * h + k] * state[b][k];
                        }
                        next[b][j] = act(z);
                        out[t][b][dir * h + j] = next[b][j];
                    }
                }
                state = next;
            }
            h_n.push(state);
        }
        layer_in = out;
    }
    (layer_in, h_n)
}

fn to_nested(data: TensorData, shape: [usize; 3]) -> Seq {
    let v: Vec<f64> = data.iter::<f64>().collect();
    (0..shape[0])
        .map(|i| {
            (0..shape[1])
                .map(|j| v[(i * shape[1] + j) * shape[2]..][..shape[2]].to_vec())
                .collect()
        })
        .collect()
}

#[test]
fn stacked_bidirectional_and_relu_layers_equal_the_plain_loop_reference() {
    let device = device();
    let (t, b, v) = (4, 2, 3);
    for (layers, bidirectional, nonlinearity) in [
        (1, false, CellKind::RnnRelu),
        (3, false, CellKind::RnnTanh),
        (1, true, CellKind::RnnTanh),
        (2, true, CellKind::RnnRelu),
    ] {
        let config = ModelConfig::new(ModelKind::Concise, v, 3)
            .with_num_layers(layers)
            .with_bidirectional(bidirectional)
            .with_cell(nonlinearity);
        let (model, named) = random_model(&config, 11, 0.9, &device);
        let Model::Rnn(m) = &model else {
            unreachable!()
        };
        let mut rng = StdRng::seed_from_u64(3);
        let cells = m.rnn.cells.len();
        let mut rand_vec =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let input = rand_vec(t * b * v);
        let h0 = rand_vec(cells * b * 3);
        let (y, h_n) = m.rnn.forward(
            Tensor::from_data(TensorData::new(input.clone(), [t, b, v]), &device),
            State {
                h: Tensor::from_data(TensorData::new(h0.clone(), [cells, b, 3]), &device),
                c: None,
            },
        );
        let width = y.dims()[2];
        assert_eq!(y.dims(), [t, b, 3 * if bidirectional { 2 } else { 1 }]);
        let (want_y, want_h) = reference_rnn(
            &named,
            &config,
            &to_nested(TensorData::new(input, [t, b, v]), [t, b, v]),
            &to_nested(TensorData::new(h0, [cells, b, 3]), [cells, b, 3]),
        );
        let close = |a: &Seq, b: &Seq| {
            a.iter()
                .flatten()
                .flatten()
                .zip(b.iter().flatten().flatten())
                .all(|(x, y)| (x - y).abs() < 1e-12)
        };
        assert!(
            close(&to_nested(y.into_data(), [t, b, width]), &want_y),
            "{config:?} outputs"
        );
        assert!(
            close(&to_nested(h_n.h.into_data(), [cells, b, 3]), &want_h),
            "{config:?} final state"
        );
    }
}

#[test]
fn one_relu_step_by_hand() {
    // V = 2, H = 1, one token: h = relu(w_ih[x] + b_ih + b_hh + w_hh * h0),
    // logits = [w0 h + c0, w1 h + c1].
    let device = device();
    let config = ModelConfig::new(ModelKind::Concise, 2, 1).with_cell(CellKind::RnnRelu);
    let mut named = NamedTensors::default();
    for (name, values, shape) in [
        ("weight_ih_l0", vec![0.5, -2.0], vec![1, 2]),
        ("weight_hh_l0", vec![3.0], vec![1, 1]),
        ("bias_ih_l0", vec![0.25], vec![1]),
        ("bias_hh_l0", vec![-0.5], vec![1]),
        ("linear.weight", vec![2.0, -1.0], vec![2, 1]),
        ("linear.bias", vec![0.0, 1.0], vec![2]),
    ] {
        named.insert(name, TensorData::new(values, shape));
    }
    let model = Model::from_named(&config, &named, &device).unwrap();
    let h0 = State {
        h: Tensor::from_data(TensorData::new(vec![0.5], [1, 1, 1]), &device),
        c: None,
    };
    // token 1: z = -2 + 0.25 - 0.5 + 1.5 = -0.75 -> relu 0; token 0: z = 0.5 - 0.25 + 1.5 = 1.75.
    for (token, h) in [(1, 0.0), (0, 1.75)] {
        let (logits, state) = model.forward(tokens(&[token], [1, 1], &device), h0.clone());
        let got: Vec<f64> = logits.into_data().iter::<f64>().collect();
        assert_eq!(got, [2.0 * h, 1.0 - h]);
        assert_eq!(state.h.into_scalar::<f64>(), h);
    }
    // Loss for target 0 at h = 1.75: logits [3.5, -0.75], -log softmax[0] = ln(1 + e^-4.25).
    let loss = loss_of(
        &model,
        &tokens(&[0], [1, 1], &device),
        &tokens(&[0], [1, 1], &device),
        &h0,
    );
    assert!((loss - (1.0 + (-4.25f64).exp()).ln()).abs() < 1e-15);
}

#[test]
fn concise_equals_scratch_under_the_parameter_map() {
    let device = device();
    let concise_config = ModelConfig::new(ModelKind::Concise, 6, 4);
    let (concise, named) = random_model(&concise_config, 5, 0.7, &device);
    let t = |n: &str| -> Vec<f64> { named.tensors[n].iter::<f64>().collect() };
    let transpose = |v: Vec<f64>, rows: usize, cols: usize| -> Vec<f64> {
        (0..cols * rows)
            .map(|i| v[(i % rows) * cols + i / rows])
            .collect()
    };
    let mut scratch = NamedTensors::default();
    scratch.insert(
        "W_xh",
        TensorData::new(transpose(t("weight_ih_l0"), 4, 6), [6, 4]),
    );
    scratch.insert(
        "W_hh",
        TensorData::new(transpose(t("weight_hh_l0"), 4, 4), [4, 4]),
    );
    let b_h: Vec<f64> = t("bias_ih_l0")
        .iter()
        .zip(t("bias_hh_l0"))
        .map(|(a, b)| a + b)
        .collect();
    scratch.insert("b_h", TensorData::new(b_h, [4]));
    scratch.insert(
        "W_hq",
        TensorData::new(transpose(t("linear.weight"), 6, 4), [4, 6]),
    );
    scratch.insert("b_q", TensorData::new(t("linear.bias"), [6]));
    let scratch = Model::from_named(
        &ModelConfig::new(ModelKind::Scratch, 6, 4),
        &scratch,
        &device,
    )
    .unwrap();

    let x = tokens(&[5, 0, 3, 3, 1, 2, 4, 0], [2, 4], &device);
    let h0 = State {
        h: Tensor::from_data(
            TensorData::new(vec![0.3, -0.2, 0.1, 0.0, -0.4, 0.2, 0.5, 0.1], [1, 2, 4]),
            &device,
        ),
        c: None,
    };
    let (a, ha) = concise.forward(x.clone(), h0.clone());
    let (b, hb) = scratch.forward(x, h0);
    let diff =
        (a - b).abs().max().into_scalar::<f64>() + (ha.h - hb.h).abs().max().into_scalar::<f64>();
    assert!(diff < 1e-12, "max difference {diff}");
}

#[test]
fn bad_fixtures_are_clear_errors() {
    let device = device();
    let mut input = NamedTensors::read(&fixtures().join("scratch_small.safetensors")).unwrap();
    input.tensors.remove("W_hh");
    let err = parity::parity(&input, Some(1.0), Some(1.0), Engine::Autodiff, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`W_hh` is missing"), "{err}");
    input.insert("W_hh", TensorData::new(vec![0.0f32; 6], [2, 3]));
    let err = parity::parity(&input, Some(1.0), Some(1.0), Engine::Autodiff, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`W_hh` has shape [2, 3], expected [8, 8]"),
        "{err}"
    );
    input.tensors.clear();
    let err = parity::parity(&input, Some(1.0), Some(1.0), Engine::Autodiff, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("W_xh (scratch model) or weight_ih_l0"),
        "{err}"
    );
    let bad = ModelConfig::new(ModelKind::Scratch, 4, 2).with_num_layers(2);
    assert!(
        bad.init(0, &device)
            .unwrap_err()
            .to_string()
            .contains("concise")
    );
}

#[test]
fn predict_warms_up_then_continues() {
    let device = device();
    let (model, _) = random_model(&ModelConfig::new(ModelKind::Scratch, 5, 4), 1, 1.0, &device);
    let greedy = predict(&model, &[1, 2, 3], 6, &Decoding::Greedy, &device).unwrap();
    assert_eq!(&greedy[..3], [1, 2, 3]);
    assert_eq!(greedy.len(), 9);
    // Greedy step by step by hand: argmax of the logits after feeding each token.
    let mut state = model.begin_state(1, &device);
    let mut last = 0;
    for &tok in &greedy[..8] {
        let (logits, s) = model.forward(tokens(&[tok as i64], [1, 1], &device), state);
        state = s;
        last = logits.argmax(1).into_scalar::<i64>() as usize;
    }
    assert_eq!(greedy[8], last);
    let sampler = Decoding::sample(1.0, Some(3), None, 42).unwrap();
    let a = predict(&model, &[1], 20, &sampler, &device).unwrap();
    assert_eq!(
        a,
        predict(&model, &[1], 20, &sampler, &device).unwrap(),
        "a seed repeats"
    );
    assert!(predict(&model, &[], 3, &Decoding::Greedy, &device).is_err());
    assert!(Decoding::sample(0.0, None, None, 1).is_err());
}

fn grads_with(
    model: &Model,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    h0: &State,
    gate: StepGate,
) -> Vec<f64> {
    let (logits, _) = model.forward_with(x.clone(), h0.clone(), gate, None);
    let grads = GradientsParams::from_grads(cross_entropy(logits, y.clone()).backward(), model);
    model
        .named_params()
        .iter()
        .flat_map(|(_, p)| p.grad(&grads).unwrap().iter::<f64>().collect::<Vec<_>>())
        .collect()
}

#[test]
fn randomized_truncation_is_exact_at_pi_1_and_unbiased_on_average() {
    let device = device();
    let (model, _) = random_model(&ModelConfig::new(ModelKind::Scratch, 4, 3), 9, 1.2, &device);
    let x = tokens(&[0, 1, 2, 3, 1, 0], [1, 6], &device);
    let y = tokens(&[1, 2, 3, 1, 0, 2], [1, 6], &device);
    let h0 = model.begin_state(1, &device);
    let full = grads_with(&model, &x, &y, &h0, &mut |_, h| h);
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(
        grads_with(
            &model,
            &x,
            &y,
            &h0,
            &mut scale_gate(Some(&randomized_truncation(1.0, 6, &mut rng)))
        ),
        full
    );
    let draws = 3000;
    let mut mean = vec![0.0; full.len()];
    for _ in 0..draws {
        for (m, g) in mean.iter_mut().zip(grads_with(
            &model,
            &x,
            &y,
            &h0,
            &mut scale_gate(Some(&randomized_truncation(0.7, 6, &mut rng))),
        )) {
            *m += g / draws as f64;
        }
    }
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let diff: Vec<f64> = mean.iter().zip(&full).map(|(a, b)| a - b).collect();
    assert!(
        norm(&diff) < 0.03 * norm(&full),
        "relative error {}",
        norm(&diff) / norm(&full)
    );
    // Truncating every step (regular detach) is biased: the same check fails for it.
    let cut = grads_with(&model, &x, &y, &h0, &mut |_, s: CellState| {
        s.map(Tensor::detach)
    });
    let diff: Vec<f64> = cut.iter().zip(&full).map(|(a, b)| a - b).collect();
    assert!(norm(&diff) > 0.03 * norm(&full));
}

#[test]
fn gradient_norms_through_time_equal_finite_differences() {
    let device = device();
    let (model, _) = random_model(&ModelConfig::new(ModelKind::Concise, 4, 3), 4, 0.9, &device);
    let x = tokens(&[0, 1, 2, 3, 1], [1, 5], &device);
    let y = tokens(&[1, 2, 3, 1, 0], [1, 5], &device);
    let h0 = model.begin_state(1, &device);
    let norms = grad_norms_through_time(&model, x.clone(), y.clone(), h0.clone());
    assert_eq!(norms.len(), 5);
    let eps = 1e-6;
    for (t, norm) in norms.iter().enumerate() {
        let mut squares = 0.0;
        for j in 0..3 {
            let at = |delta: f64| {
                let mut nudge = |step: usize, s: CellState| {
                    if step != t {
                        return s;
                    }
                    let mut v = vec![0.0; 3];
                    v[j] = delta;
                    s.map(|h| {
                        h + Tensor::<2>::from_data(TensorData::new(v.clone(), [1, 3]), &device)
                    })
                };
                let (logits, _) = model.forward_with(x.clone(), h0.clone(), &mut nudge, None);
                cross_entropy(logits, y.clone()).into_scalar::<f64>()
            };
            squares += ((at(eps) - at(-eps)) / (2.0 * eps)).powi(2);
        }
        assert!(
            (squares.sqrt() - norm).abs() < 1e-7,
            "t = {t}: {} vs {norm}",
            squares.sqrt()
        );
    }
}

/// One step's logits, loss, state and every gradient (before and after clipping), with
/// dropout masks drawn from `seed`.
fn step_outputs(
    model: Model,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    h0: &State,
    scales: Option<&[f64]>,
    seed: u64,
    engine: Engine,
) -> Vec<f64> {
    let mut dropout = Dropout::new(model.dropout(), seed);
    let input = StepInput {
        scales,
        dropout: Some(&mut dropout),
        ..StepInput::new(x.clone(), y.clone(), h0.clone())
    };
    let g = gradients(&model, input, engine).unwrap();
    let mut out: Vec<f64> = g.logits.unwrap().into_data().iter::<f64>().collect();
    out.extend(g.token_losses.into_data().iter::<f64>());
    out.extend(g.state.h.into_data().iter::<f64>());
    if let Some(c) = g.state.c {
        out.extend(c.into_data().iter::<f64>());
    }
    let mut read = |grads: &GradientsParams| {
        for (_, p) in model.named_params() {
            out.extend(p.grad(grads).unwrap().iter::<f64>());
        }
    };
    read(&g.grads);
    let (clipped, _) = Clipping::norm(0.5).apply(&model, g.grads);
    read(&clipped);
    let updated = burn::optim::SgdConfig::new()
        .init()
        .step(0.3, model.clone(), clipped);
    for (_, p) in updated.named_params() {
        out.extend(p.data().iter::<f64>());
    }
    // A training step clipping by value, then by norm: the host engine clips on the host.
    let mut dropout = Dropout::new(model.dropout(), seed);
    let clipping = Clipping {
        norm: Some(0.5),
        value: Some(0.05),
    };
    let mut sgd = burn::optim::SgdConfig::new().init();
    let input = StepInput {
        scales,
        dropout: Some(&mut dropout),
        ..StepInput::new(x.clone(), y.clone(), h0.clone())
    };
    let (updated, step) =
        train_step(model.clone(), &mut sgd, input, engine, clipping, 0.3).unwrap();
    out.push(step.grad_norm.unwrap().into_scalar::<f64>());
    for (_, p) in updated.named_params() {
        out.extend(p.data().iter::<f64>());
    }
    if engine == Engine::Fused {
        host_optimizers_equal_burns(&model, x, y, h0, scales, seed, clipping);
    }
    out
}

#[test]
fn host_clipping_equals_clipping_the_tensors() {
    let device = device();
    let config = ModelConfig::new(ModelKind::Lm, 6, 5)
        .with_cell(CellKind::Lstm)
        .with_embedding_dim(4);
    let (model, _) = random_model(&config, 3, 0.9, &device);
    let x = tokens(&[5, 0, 3, 3, 1, 2], [2, 3], &device);
    let y = tokens(&[0, 3, 3, 1, 2, 4], [2, 3], &device);
    let h0 = model.begin_state(2, &device);
    let grads = || {
        let input = StepInput::new(x.clone(), y.clone(), h0.clone());
        gradients(&model, input, Engine::Autodiff).unwrap().grads
    };
    let host = |grads: &GradientsParams| -> Vec<Vec<f64>> {
        let named = model.named_params();
        named
            .iter()
            .map(|(_, p)| p.grad(grads).unwrap().iter::<f64>().collect())
            .collect()
    };
    let raw = host(&grads());
    let largest = raw.iter().flatten().fold(0.0_f64, |m, g| m.max(g.abs()));
    let norm: f64 = raw.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
    // Both rules bite: a value limit below the largest gradient, a norm below the norm.
    for clipping in [
        Clipping::norm(norm / 3.0),
        Clipping {
            norm: None,
            value: Some(largest / 2.0),
        },
        Clipping {
            norm: Some(norm / 4.0),
            value: Some(largest / 3.0),
        },
    ] {
        let (on_tensors, tensor_norm) = clipping.apply(&model, grads());
        let mut on_host = raw.clone();
        let mut slices: Vec<&mut [f64]> = on_host.iter_mut().map(Vec::as_mut_slice).collect();
        let host_norm = clipping.apply_host(&mut slices);
        let expected: Vec<f64> = host(&on_tensors).concat();
        assert!(
            worst_difference(&on_host.concat(), &expected) < 1e-15,
            "{clipping:?}"
        );
        assert!(
            worst_difference(&expected, &raw.concat()) > 1e-3,
            "{clipping:?} bites"
        );
        let tensor_norm = tensor_norm.unwrap().into_scalar::<f64>();
        assert!((host_norm - tensor_norm).abs() < 1e-12 * tensor_norm);
    }
}

/// The host engine's own SGD and Adam over two steps (Adam's second reads the moments of
/// the first) equal, to the last bit, the engine's gradients through Burn's optimizers.
fn host_optimizers_equal_burns(
    model: &Model,
    x: &Tensor<2, Int>,
    y: &Tensor<2, Int>,
    h0: &State,
    scales: Option<&[f64]>,
    seed: u64,
    clipping: Clipping,
) {
    let (beta_1, beta_2, epsilon) = (0.9, 0.999, 1e-8);
    let adam = HostRule::Adam {
        beta_1,
        beta_2,
        epsilon,
    };
    for rule in [HostRule::Sgd, adam] {
        let mut burn = match rule {
            HostRule::Sgd => burn::optim::SgdConfig::new().init(),
            HostRule::Adam { .. } => burn::optim::AdamConfig::new()
                .with_beta_1(beta_1)
                .with_beta_2(beta_2)
                .with_epsilon(epsilon)
                .init(),
        };
        let mut host_optimizer = HostOptimizer::new(rule);
        let mut host = HostTrainer::new(model.clone(), &mut host_optimizer).unwrap();
        let (mut burn_model, mut want, mut got) = (model.clone(), Vec::new(), Vec::new());
        for step in 0..2 {
            let mut dropout = Dropout::new(model.dropout(), seed + step);
            let (x, y, h0) = (x.clone(), y.clone(), h0.clone());
            let input = StepInput {
                scales,
                dropout: Some(&mut dropout),
                ..StepInput::new(x.clone(), y.clone(), h0.clone())
            };
            let (next, s) =
                train_step(burn_model, &mut burn, input, Engine::Fused, clipping, 0.3).unwrap();
            burn_model = next;
            want.push(s.grad_norm.unwrap().into_scalar::<f64>());
            let mut dropout = Dropout::new(model.dropout(), seed + step);
            let input = StepInput {
                scales,
                dropout: Some(&mut dropout),
                ..StepInput::new(x, y, h0)
            };
            let s = host.step(input, clipping, 0.3).unwrap();
            got.push(s.grad_norm.unwrap().into_scalar::<f64>());
        }
        for (_, p) in burn_model.named_params() {
            want.extend(p.data().iter::<f64>());
        }
        for (_, p) in host.into_model().named_params() {
            got.extend(p.data().iter::<f64>());
        }
        assert_eq!(
            got, want,
            "{rule:?}: the host engine's update equals Burn's"
        );
    }
}

fn worst_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fused_engine_equals_autodiff_for_every_model_it_covers() {
    let device = device();
    let lm = |cell: CellKind, layers: usize, embedding: usize, dropout: f64, tied: bool| {
        ModelConfig::new(ModelKind::Lm, 6, 5)
            .with_cell(cell)
            .with_num_layers(layers)
            .with_embedding_dim(embedding)
            .with_dropout(dropout)
            .with_tied(tied)
    };
    use CellKind::{Gru, Lstm, RnnRelu, RnnTanh};
    let configs = [
        ModelConfig::new(ModelKind::Scratch, 6, 5),
        ModelConfig::new(ModelKind::Concise, 6, 5),
        ModelConfig::new(ModelKind::Concise, 6, 5).with_cell(RnnRelu),
        ModelConfig::new(ModelKind::Concise, 6, 5).with_num_layers(3),
        lm(RnnRelu, 2, 0, 0.0, false),
        lm(Lstm, 1, 0, 0.0, false),
        lm(Lstm, 2, 4, 0.3, false),
        lm(Lstm, 3, 5, 0.2, true),
        lm(Gru, 1, 0, 0.0, false),
        lm(Gru, 2, 5, 0.25, true),
        lm(Gru, 3, 3, 0.0, false),
        lm(RnnTanh, 2, 5, 0.4, true),
    ];
    // Token 2 is never an input: the embedding's row 2 gets no gradient, which the host
    // SGD leaves out of its update (`HostGrad::Rows`) and Burn's updates by a zero.
    let x = tokens(
        &[5, 0, 3, 3, 1, 3, 4, 0, 1, 1, 0, 5, 0, 4, 4],
        [3, 5],
        &device,
    );
    let y = tokens(
        &[0, 3, 3, 1, 2, 4, 0, 1, 1, 2, 5, 0, 4, 4, 3],
        [3, 5],
        &device,
    );
    let cut_and_reweighted = [1.0, 1.0 / 0.7, 0.0, 1.0 / 0.7, 1.0];
    // Each fused call after the first runs on buffers an earlier one (of this model or
    // another shape) gave back to the pool (`bptt/pool.rs`).
    for (i, config) in configs.iter().enumerate() {
        let (_, named) = random_model(config, 20 + i as u64, 0.9, &device);
        let fresh = || Model::from_named(config, &named, &device).unwrap();
        // A carried state (h, and c for the LSTM).
        let carried = || {
            Tensor::<3>::random(
                [config.num_layers, 3, 5],
                burn::tensor::Distribution::Uniform(-0.5, 0.5),
                &device,
            )
        };
        let h0 = State {
            h: carried(),
            c: config.cell.has_cell_state().then(carried),
        };
        for scales in [None, Some(&cut_and_reweighted[..])] {
            let a = step_outputs(fresh(), &x, &y, &h0, scales, 7, Engine::Autodiff);
            let b = step_outputs(fresh(), &x, &y, &h0, scales, 7, Engine::Fused);
            let worst = worst_difference(&a, &b);
            assert!(worst < 1e-12, "{config:?} {scales:?}: {worst}");
        }
        // The reweighting is in effect: without it the gradients differ; and so are the
        // masks: another seed gives other outputs.
        let plain = step_outputs(fresh(), &x, &y, &h0, None, 7, Engine::Fused);
        let cut = step_outputs(
            fresh(),
            &x,
            &y,
            &h0,
            Some(&cut_and_reweighted),
            7,
            Engine::Fused,
        );
        assert!(worst_difference(&plain, &cut) > 1e-6, "{config:?}");
        let other_masks = step_outputs(fresh(), &x, &y, &h0, None, 8, Engine::Fused);
        assert_eq!(
            config.dropout > 0.0,
            worst_difference(&plain, &other_masks) > 1e-6
        );
    }
    // What the fused engine refuses, as errors.
    let fused_error = |config: &ModelConfig, y: Tensor<2, Int>| -> String {
        let model = config.init(0, &device).unwrap();
        let h0 = model.begin_state(3, &device);
        let mut optimizer = burn::optim::SgdConfig::new().init();
        let input = StepInput::new(x.clone(), y.clone(), h0);
        let step = train_step(
            model.clone(),
            &mut optimizer,
            input,
            Engine::Fused,
            Clipping::norm(1.0),
            1.0,
        );
        let message = step.err().unwrap().to_string();
        let mut sgd = HostOptimizer::new(HostRule::Sgd);
        let host = HostTrainer::new(model, &mut sgd).and_then(|mut host| {
            let h0 = host.model().begin_state(3, &device);
            host.step(StepInput::new(x.clone(), y, h0), Clipping::norm(1.0), 1.0)
        });
        assert_eq!(
            host.err().unwrap().to_string(),
            message,
            "HostTrainer says the same"
        );
        message
    };
    let bidirectional = ModelConfig::new(ModelKind::Concise, 6, 5).with_bidirectional(true);
    assert!(!fused_supported(&bidirectional.init(0, &device).unwrap()));
    assert!(fused_error(&bidirectional, y).contains("autodiff"));
    let bad = tokens(&[6; 15], [3, 5], &device);
    assert!(fused_error(&configs[0], bad).contains("token id 6 in Y"));
}

#[test]
fn fused_engine_equals_autodiff_over_several_blocks_of_decoder_rows() {
    // 40 x 40 = 1600 target tokens: more than one block of the host engine's decoder (at
    // most 768 rows) in each worker, on up to two threads (one: 534 + 534 + 532, two:
    // 2 x 400 each).
    // Also H = 21 over 70 words: the softmax's 16-lane reductions over whole chunks and
    // 6 more, `gemm`'s edge kernels in the decoder's products, and the host SGD's update
    // of the decoder from its transposed gradient in two tiles (64 rows and 6). H = 75:
    // `dX`'s first 64 columns by `gemm`, its last 11 row by row (4 + 4 + 3); H = 5: all 5
    // row by row, in groups of 4 rows (534 leaves 2).
    let device = device();
    for (vocab, hidden) in [(6, 5), (70, 21), (70, 75)] {
        let config = ModelConfig::new(ModelKind::Lm, vocab, hidden)
            .with_cell(CellKind::Lstm)
            .with_num_layers(2)
            .with_embedding_dim(4)
            .with_dropout(0.3);
        let (_, named) = random_model(&config, 9, 0.9, &device);
        let fresh = || Model::from_named(&config, &named, &device).unwrap();
        let ids = |shift: usize| -> Vec<i64> {
            (0..1600)
                .map(|i| ((i * 7 + shift) % vocab) as i64)
                .collect()
        };
        let (x, y) = (
            tokens(&ids(0), [40, 40], &device),
            tokens(&ids(1), [40, 40], &device),
        );
        let h0 = fresh().begin_state(40, &device);
        let a = step_outputs(fresh(), &x, &y, &h0, None, 7, Engine::Autodiff);
        let b = step_outputs(fresh(), &x, &y, &h0, None, 7, Engine::Fused);
        let worst = worst_difference(&a, &b);
        assert!(worst < 1e-12, "H = {hidden}: {worst}");
    }
}

#[test]
fn the_kernel_splits_batch_rows_across_threads_without_changing_results() {
    use rnnlm_model::bptt::{
        Cell, Layer, Masks, Mat, Minibatch, Params, RowGrads, forward_backward,
    };
    let (v, h, b, t, e) = (7, 6, 5, 4, 3);
    let mut rng = StdRng::seed_from_u64(5);
    let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-0.7..0.7)).collect() };
    for (cell, embedded) in [
        (Cell::Rnn { relu: false }, false),
        (Cell::Gru, false),
        (Cell::Lstm, true),
    ] {
        let gh = cell.gates() * h;
        // Two stacked layers: the first looks rows up (one-hot) or multiplies embeddings.
        let first = if embedded { e } else { v };
        let embedding = draw(v * e);
        let weights = [
            (draw(first * gh), draw(h * gh)),
            (draw(h * gh), draw(h * gh)),
        ];
        let biases = [(draw(gh), draw(gh)), (draw(gh), draw(gh))];
        let (w_hq, b_q, h0, c0) = (draw(h * v), draw(v), draw(2 * b * h), draw(2 * b * h));
        let mask = |width: usize| -> Vec<f64> {
            (0..t * b * width)
                .map(|i| if i % 3 == 0 { 0.0 } else { 1.5 })
                .collect()
        };
        let masks = Masks {
            inputs: vec![embedded.then(|| mask(e)), Some(mask(h))],
            output: mask(h),
        };
        let ids =
            |shift: usize| -> Vec<usize> { (0..b * t).map(|i| (i * 3 + shift) % v).collect() };
        let (x, y) = (ids(0), ids(1));
        let layers: Vec<Layer<f64>> = (0..2)
            .map(|l| Layer {
                W_ih: Mat::row_major(&weights[l].0, if l == 0 { first } else { h }, gh),
                W_hh: Mat::row_major(&weights[l].1, h, gh),
                b_ih: &biases[l].0,
                b_hh: &biases[l].1,
            })
            .collect();
        let params = Params {
            cell,
            embedding: embedded.then(|| Mat::row_major(&embedding, v, e)),
            layers: &layers,
            W_hq: Mat::row_major(&w_hq, h, v),
            b_q: &b_q,
        };
        let scales = [1.0, 0.0, 2.0, 1.0];
        let batch = Minibatch {
            X: &x,
            Y: &y,
            batch_size: b,
            num_steps: t,
            H0: &h0,
            C0: cell.has_cell_state().then_some(&c0[..]),
            state_grad_scales: Some(&scales),
            masks: Some(&masks),
            keep_logits: true,
        };
        let one = forward_backward(params, &batch, 1);
        assert_eq!(one.H.len(), 2 * b * h);
        for threads in [2, 3, 8] {
            let many = forward_backward(params, &batch, threads);
            // The product kernel may block a product of fewer rows differently, so sums
            // can associate differently: equal to rounding.
            let close = |a: &[f64], b: &[f64]| {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-14)
            };
            let (logits, logits_one) = (many.logits.as_deref(), one.logits.as_deref());
            assert!(
                close(logits.unwrap(), logits_one.unwrap()),
                "{cell:?}, {threads} threads"
            );
            assert!(close(&many.token_losses, &one.token_losses));
            assert!(close(&many.H, &one.H));
            assert_eq!(many.C.is_some(), one.C.is_some());
            assert!(close(
                many.C.as_deref().unwrap_or_default(),
                one.C.as_deref().unwrap_or_default()
            ));
            let (g, w) = (&many.grads, &one.grads);
            for (g, w) in g.layers.iter().zip(&w.layers) {
                assert!(close(&g.W_ih, &w.W_ih) && close(&g.W_hh, &w.W_hh));
                assert!(close(&g.b_ih, &w.b_ih) && close(&g.b_hh, &w.b_hh));
            }
            assert!(close(&g.W_hq, &w.W_hq) && close(&g.b_q, &w.b_q));
            let (ge, we) = (g.embedding.as_ref(), w.embedding.as_ref());
            assert_eq!(ge.is_some(), embedded);
            assert_eq!(ge.map(|e| &e.ids), we.map(|e| &e.ids));
            let values = |e: Option<&RowGrads<f64>>| e.map_or(vec![], |e| e.values.clone());
            assert!(close(&values(ge), &values(we)));
        }
    }
}

#[test]
fn a_matrix_view_made_row_major_is_borrowed_or_copied_exactly() {
    use rnnlm_model::bptt::{Mat, Real};
    use std::borrow::Cow;
    // 70 x 45 crosses the edges of the f64 copy's 32 x 32 tiles and of the f32 one's 8 x 8
    // blocks in both directions; columns 3..44 of the matrix and of its transpose, views
    // whose rows are further apart than their width.
    fn check<T: Real>() {
        let (rows, cols) = (70, 45);
        let data: Vec<T> = (0..rows * cols).map(|i| T::from_f64(i as f64)).collect();
        let m = Mat::row_major(&data, rows, cols);
        assert!(matches!(m.contiguous(), Cow::Borrowed(_)));
        let t = m.t().contiguous();
        assert!(matches!(t, Cow::Owned(_)));
        for r in 0..cols {
            for c in 0..rows {
                assert_eq!(t[r * rows + c].to_f64(), data[c * cols + r].to_f64());
            }
        }
        let part = Mat::row_major(&data, rows, cols)
            .columns(3, 44)
            .t()
            .to_row_major();
        for r in 0..41 {
            for c in 0..rows {
                let (got, want) = (part[r * rows + c], data[c * cols + 3 + r]);
                assert_eq!(got.to_f64(), want.to_f64(), "({r}, {c})");
            }
        }
        // Columns 3..44 as they are: rows contiguous, 45 apart (a panel).
        let panel = m.columns(3, 44).to_row_major();
        for r in 0..rows {
            for c in 0..41 {
                let (got, want) = (panel[r * 41 + c], data[r * cols + 3 + c]);
                assert_eq!(got.to_f64(), want.to_f64(), "panel ({r}, {c})");
            }
        }
    }
    check::<f32>();
    check::<f64>();
}

#[test]
fn a_product_by_a_matrix_in_panels_equals_the_sum_by_hand() {
    use rnnlm_model::bptt::{Mat, PANEL, Panels, Real, matmul_panels};
    // 19 rows: two whole tiles of the f32 kernel and a part; 118, 56 and 32 columns:
    // whole panels and a last one of 22 (two vectors, the second masked), 8 (one, masked)
    // or 32 (two whole); the source stored transposed, as PyTorch's `W_hh` is. Small
    // integers, so every sum is exact in f32 and f64 whatever the order.
    fn check<T: Real>(g: usize) {
        let (n, k) = (19, 70);
        let int = |i: usize, m: usize| T::from_f64((i % m) as f64 - (m / 2) as f64);
        let stored: Vec<T> = (0..g * k).map(|i| int(i, 13)).collect();
        let w = Mat::row_major(&stored, g, k).t(); // [k, g]
        let mut panels = vec![T::ZERO; k * g];
        Panels::write(w, &mut panels);
        let a: Vec<T> = (0..n * k).map(|i| int(i, 7)).collect();
        for from_last in [false, true] {
            let mut c: Vec<T> = (0..n * g).map(|i| T::from_f64(i as f64)).collect();
            let b = Panels::new(&panels, k, g);
            matmul_panels(&mut c, Mat::row_major(&a, n, k), b, from_last);
            for i in 0..n {
                for j in 0..g {
                    let sum: f64 = (0..k)
                        .map(|l| a[i * k + l].to_f64() * stored[j * k + l].to_f64())
                        .sum();
                    let at = format!("({i}, {j}), from the last panel: {from_last}");
                    assert_eq!(c[i * g + j].to_f64(), (i * g + j) as f64 + sum, "{at}");
                }
            }
        }
    }
    for g in [2 * PANEL + 22, PANEL + 8, 32] {
        check::<f32>(g);
        check::<f64>(g);
    }
}

#[test]
fn the_float32_tanh_is_within_8_ulp_everywhere() {
    use rnnlm_model::bptt::Real;
    let mut worst: f64 = 0.0;
    // Every 97th float32 from -20 to 20, and the small-argument cutoff's neighbours.
    let bits = (0..(20f32).to_bits()).step_by(97);
    for x in bits
        .map(f32::from_bits)
        .flat_map(|x| [x, -x])
        .chain([0.0004, 0.000_399_9])
    {
        let exact = (x as f64).tanh();
        let ulp =
            f32::from_bits((exact.abs() as f32).to_bits() + 1) as f64 - (exact.abs() as f32) as f64;
        worst =
            worst.max((<f32 as Real>::tanh(x) as f64 - exact).abs() / ulp.max(f64::MIN_POSITIVE));
    }
    assert!(worst <= 8.0, "worst error {worst} ulp");
}

#[test]
fn the_float32_exp_is_within_2_ulp_where_a_softmax_reads_it() {
    use rnnlm_model::bptt::Real;
    let mut worst: f64 = 0.0;
    let bits = (0..(87f32).to_bits()).step_by(89);
    for x in bits.map(f32::from_bits).flat_map(|x| [x, -x]) {
        let exact = (x as f64).exp();
        let ulp = f32::from_bits((exact as f32).to_bits() + 1) as f64 - (exact as f32) as f64;
        worst = worst.max((<f32 as Real>::exp(x) as f64 - exact).abs() / ulp);
    }
    assert!(worst <= 2.0, "worst error {worst} ulp");
    // Far below, nothing beside a softmax's largest term (e^0 = 1).
    assert!(<f32 as Real>::exp(-1000.0) < 1e-37);
}

#[test]
fn dropout_zeroes_p_of_the_values_scales_the_rest_and_repeats_with_its_seed() {
    let device = device();
    let ones = || Tensor::<2>::ones([200, 100], &device);
    let p = 0.3;
    let values: Vec<f64> = Dropout::new(p, 5)
        .apply(ones())
        .into_data()
        .iter::<f64>()
        .collect();
    let zeros = values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64;
    // 20,000 draws: the zero fraction's standard deviation is sqrt(p (1 - p) / n) = 0.0032.
    assert!((zeros - p).abs() < 0.015, "zero fraction {zeros}");
    let kept = 1.0 / (1.0 - p);
    assert!(values.iter().all(|&v| v == 0.0 || (v - kept).abs() < 1e-6));
    let again: Vec<f64> = Dropout::new(p, 5)
        .apply(ones())
        .into_data()
        .iter::<f64>()
        .collect();
    assert_eq!(values, again);
    // In a model: evaluation (no masks) is deterministic, training draws differ by seed.
    let config = ModelConfig::new(ModelKind::Lm, 7, 6)
        .with_cell(CellKind::Lstm)
        .with_num_layers(2)
        .with_embedding_dim(6)
        .with_tied(true)
        .with_dropout(0.5);
    let model = config.init(3, &device).unwrap();
    let x = tokens(&[1, 2, 3, 4, 5, 6], [2, 3], &device);
    let run = |dropout: Option<&mut Dropout>| -> Vec<f64> {
        let state = model.begin_state(2, &device);
        let (logits, _) = model.forward_with(x.clone(), state, &mut |_, s| s, dropout);
        logits.into_data().iter::<f64>().collect()
    };
    let plain = run(None);
    assert_eq!(plain, run(None));
    assert_eq!(plain, run(Some(&mut Dropout::new(0.0, 9))));
    assert_ne!(plain, run(Some(&mut Dropout::new(0.5, 9))));
    assert_eq!(
        run(Some(&mut Dropout::new(0.5, 9))),
        run(Some(&mut Dropout::new(0.5, 9)))
    );
}

/// The size check counts what `init` allocates, and refuses sizes that overflow or
/// exceed `MAX_PARAMS` before allocating anything.
#[test]
fn parameter_counts_are_checked_before_allocation() {
    let device = device();
    let lm = |cell, layers, e, tied, bi| {
        ModelConfig::new(ModelKind::Lm, 11, 6)
            .with_cell(cell)
            .with_num_layers(layers)
            .with_embedding_dim(e)
            .with_tied(tied)
            .with_bidirectional(bi)
    };
    for config in [
        ModelConfig::new(ModelKind::Scratch, 11, 6),
        ModelConfig::new(ModelKind::Concise, 11, 6).with_cell(CellKind::Gru),
        lm(CellKind::Lstm, 2, 6, true, false),
        lm(CellKind::Lstm, 3, 4, false, false),
        lm(CellKind::RnnRelu, 2, 0, false, true),
    ] {
        let model = config.init(0, &device).unwrap();
        assert_eq!(config.param_count(), Some(model.num_params()), "{config:?}");
    }
    // word_language_model's 2 x 200 LSTM on PTB, counted by hand:
    // encoder 2,000,000, two layers of 4*200*(200+200) + 2*800 = 321,600, decoder 2,010,000.
    let ptb = ModelConfig::new(ModelKind::Lm, 10_000, 200)
        .with_cell(CellKind::Lstm)
        .with_num_layers(2)
        .with_embedding_dim(200);
    assert_eq!(ptb.param_count(), Some(2_000_000 + 2 * 321_600 + 2_010_000));
    for h in [1 << 62, 1 << 20] {
        let err = ModelConfig::new(ModelKind::Scratch, 100, h)
            .init(0, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("this tool trains"), "{err}");
    }
}

/// Bytes of a real file, then damaged: cut short, bytes overwritten, or the safetensors
/// header's length field set to `header_len`.
fn damaged(good: &[u8], cut: usize, flips: &[(usize, u8)], header_len: Option<u64>) -> Vec<u8> {
    let mut bytes = good[..cut.min(good.len())].to_vec();
    for &(at, value) in flips {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = value;
        }
    }
    if let Some(n) = header_len
        && bytes.len() >= 8
    {
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    bytes
}

mod readers {
    use super::*;
    use proptest::prelude::*;

    fn temp(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        std::env::temp_dir().join(format!("rnnlm-readers-{tag}-{}-{n}", std::process::id()))
    }

    fn small_lm() -> ModelConfig {
        ModelConfig::new(ModelKind::Lm, 7, 4)
            .with_cell(CellKind::Lstm)
            .with_embedding_dim(3)
    }

    proptest! {
        // A damaged safetensors file (truncated, overwritten, a header length that asks
        // for terabytes) reads as an error naming the file, or as tensors that a model
        // then accepts or rejects by name and shape; never a panic or a huge allocation.
        #[test]
        fn safetensors_reader_survives_damage(
            cut in 0usize..4000, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            header_len in prop::option::of(prop_oneof![Just(u64::MAX), Just(1u64 << 40), 0u64..5000]),
        ) {
            let device = device();
            let model = small_lm().init(1, &device).unwrap();
            let mut good = NamedTensors::default();
            for (name, p) in model.named_params() {
                good.insert(name, p.data());
            }
            let path = temp("st");
            good.write(&path).unwrap();
            let bytes = damaged(&std::fs::read(&path).unwrap(), cut, &flips, header_len);
            std::fs::write(&path, &bytes).unwrap();
            match NamedTensors::read(&path) {
                Ok(tensors) => {
                    let _ = Model::from_named(&small_lm(), &tensors, &device);
                }
                Err(e) => prop_assert!(e.to_string().contains("rnnlm-readers-st"), "{}", e),
            }
            std::fs::remove_file(&path).unwrap();
        }

        // A damaged checkpoint (`model.bpk`) loads as an error naming it, or as a model.
        #[test]
        fn checkpoint_reader_survives_damage(
            cut in 0usize..2000, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        ) {
            let device = device();
            let dir = temp("bpk");
            std::fs::create_dir_all(&dir).unwrap();
            small_lm().init(1, &device).unwrap().save(&dir).unwrap();
            let file = dir.join("model.bpk");
            let bytes = damaged(&std::fs::read(&file).unwrap(), cut, &flips, None);
            std::fs::write(&file, &bytes).unwrap();
            if let Err(e) = Model::load(&small_lm(), &dir, &device) {
                prop_assert!(e.to_string().contains("model.bpk"), "{}", e);
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
