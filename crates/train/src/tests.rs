//! `train_epoch` against an independent float64 reference: the scratch RNN's forward
//! pass and its backpropagation through time written out as loops (book 8.7.2), the
//! global-norm clip and SGD, over the same minibatches, with the state carried across
//! minibatches or reset before each.

#![allow(clippy::needless_range_loop, clippy::too_many_arguments)] // index loops, as the equations read

use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rnnlm_data::{Sampler, epoch_batches};
use rnnlm_model::tensors::NamedTensors;
use rnnlm_model::{Engine, Model, ModelConfig, ModelKind};

use crate::{RunOptimizer, StateMode, TrainConfig, TrainSection, train_epoch};

const V: usize = 5;
const H: usize = 3;

/// Row-major parameters of the scratch model.
#[derive(Clone)]
struct Params {
    w_xh: Vec<f64>, // [V, H]
    w_hh: Vec<f64>, // [H, H]
    b_h: Vec<f64>,
    w_hq: Vec<f64>, // [H, V]
    b_q: Vec<f64>,
}

impl Params {
    fn slices(&mut self) -> [&mut Vec<f64>; 5] {
        [
            &mut self.w_xh,
            &mut self.w_hh,
            &mut self.b_h,
            &mut self.w_hq,
            &mut self.b_q,
        ]
    }
}

/// One step on a minibatch (`x`, `y` row-major `[B, T]`): returns the summed loss of its
/// tokens and the final state; updates `p` by SGD on the clipped mean-loss gradient.
fn reference_step(
    p: &mut Params,
    x: &[usize],
    y: &[usize],
    b: usize,
    t: usize,
    h0: &[Vec<f64>],
    theta: f64,
    lr: f64,
) -> (f64, Vec<Vec<f64>>) {
    // Forward, keeping every state.
    let mut hs = vec![h0.to_vec()];
    let mut probs = Vec::new();
    let mut loss = 0.0;
    for step in 0..t {
        let prev = hs.last().unwrap().clone();
        let mut next = vec![vec![0.0; H]; b];
        let mut p_step = vec![vec![0.0; V]; b];
        for r in 0..b {
            for j in 0..H {
                let mut z = p.w_xh[x[r * t + step] * H + j] + p.b_h[j];
                for k in 0..H {
                    z += prev[r][k] * p.w_hh[k * H + j];
                }
                next[r][j] = z.tanh();
            }
            let o: Vec<f64> = (0..V)
                .map(|v| p.b_q[v] + (0..H).map(|k| next[r][k] * p.w_hq[k * V + v]).sum::<f64>())
                .collect();
            let max = o.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = o.iter().map(|v| (v - max).exp()).sum();
            p_step[r] = o.iter().map(|v| (v - max).exp() / sum).collect();
            loss -= p_step[r][y[r * t + step]].ln();
        }
        hs.push(next);
        probs.push(p_step);
    }
    // Backward through time: dL/dO_t = (softmax - onehot) / N, dL/dh_t = W_hq dO_t + W_hh dZ_{t+1}.
    let n = (b * t) as f64;
    let mut g = Params {
        w_xh: vec![0.0; V * H],
        w_hh: vec![0.0; H * H],
        b_h: vec![0.0; H],
        w_hq: vec![0.0; H * V],
        b_q: vec![0.0; V],
    };
    let mut dh_next = vec![vec![0.0; H]; b];
    for step in (0..t).rev() {
        for r in 0..b {
            let mut d_o = probs[step][r].clone();
            d_o[y[r * t + step]] -= 1.0;
            d_o.iter_mut().for_each(|v| *v /= n);
            let h = &hs[step + 1][r];
            let mut dh = dh_next[r].clone();
            for k in 0..H {
                for v in 0..V {
                    g.w_hq[k * V + v] += h[k] * d_o[v];
                    dh[k] += p.w_hq[k * V + v] * d_o[v];
                }
            }
            for v in 0..V {
                g.b_q[v] += d_o[v];
            }
            let dz: Vec<f64> = (0..H).map(|j| dh[j] * (1.0 - h[j] * h[j])).collect();
            for j in 0..H {
                g.w_xh[x[r * t + step] * H + j] += dz[j];
                g.b_h[j] += dz[j];
                for k in 0..H {
                    g.w_hh[k * H + j] += hs[step][r][k] * dz[j];
                }
            }
            dh_next[r] = (0..H)
                .map(|k| (0..H).map(|j| p.w_hh[k * H + j] * dz[j]).sum())
                .collect();
        }
    }
    let mut grads = g.clone();
    let norm = grads
        .slices()
        .iter()
        .flat_map(|s| s.iter())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    let scale = if norm > theta { theta / norm } else { 1.0 };
    for (param, grad) in p.slices().into_iter().zip(grads.slices()) {
        for (w, gv) in param.iter_mut().zip(grad.iter()) {
            *w -= lr * scale * gv;
        }
    }
    (loss, hs.pop().unwrap())
}

#[test]
fn one_epoch_equals_the_float64_bptt_reference_with_and_without_carried_state_on_both_engines() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(3);
    let init = |n: usize, rng: &mut StdRng| -> Vec<f64> {
        (0..n)
            .map(|_| rand::RngExt::random_range(rng, -0.8..0.8))
            .collect()
    };
    let start = Params {
        w_xh: init(V * H, &mut rng),
        w_hh: init(H * H, &mut rng),
        b_h: init(H, &mut rng),
        w_hq: init(H * V, &mut rng),
        b_q: init(V, &mut rng),
    };
    let text: Vec<usize> = (0..60).map(|i| (i * i + 3 * i) % V).collect();
    let mut losses = Vec::new();
    let runs =
        [StateMode::Carry, StateMode::Reset].map(|s| [(s, Engine::Autodiff), (s, Engine::Fused)]);
    for (state, engine) in runs.into_iter().flatten() {
        let t = TrainSection {
            batch_size: 2,
            num_steps: 4,
            sampler: Sampler::Sequential,
            state,
            lr: 0.7,
            theta: 0.5,
            seed: 11,
            ..Default::default()
        };
        let config = TrainConfig {
            train: t.clone(),
            ..Default::default()
        };
        let mut named = NamedTensors::default();
        let p = start.clone();
        for (name, values, shape) in [
            ("W_xh", &p.w_xh, vec![V, H]),
            ("W_hh", &p.w_hh, vec![H, H]),
            ("b_h", &p.b_h, vec![H]),
            ("W_hq", &p.w_hq, vec![H, V]),
            ("b_q", &p.b_q, vec![V]),
        ] {
            named.insert(
                name,
                TensorData::new(
                    values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                    shape,
                ),
            );
        }
        let model = Model::from_named(&ModelConfig::new(ModelKind::Scratch, V, H), &named, &device)
            .unwrap();
        let (_, metrics) = train_epoch(
            model,
            &mut RunOptimizer::new(&t, engine),
            &config,
            t.lr,
            &text,
            &device,
            engine,
            0,
            Default::default(),
            &AtomicBool::new(false),
            None,
        )
        .unwrap();
        let metrics = metrics.done();
        let got = metrics.unwrap().perplexity;

        // The reference sees the same minibatches: the sampler's rng is derived from (seed, epoch).
        let batches = epoch_batches(
            &text,
            2,
            4,
            Sampler::Sequential,
            &mut crate::epoch::epoch_rng(11, 0),
        )
        .unwrap();
        let mut p = start.clone();
        let (mut total, mut count) = (0.0, 0);
        let mut h = vec![vec![0.0; H]; 2];
        for batch in batches.iter() {
            if state == StateMode::Reset {
                h = vec![vec![0.0; H]; 2];
            }
            let (loss, last) = reference_step(&mut p, &batch.x, &batch.y, 2, 4, &h, 0.5, 0.7);
            h = last;
            total += loss;
            count += batch.y.len();
        }
        let want = (total / count as f64).exp();
        assert!(batches.len() > 3);
        assert!(
            (got - want).abs() < 1e-5 * want,
            "{state:?} {engine:?}: train_epoch {got}, reference {want}"
        );
        losses.push(want);
    }
    // Carrying the state across minibatches changes the loss; resetting it is a different run.
    assert!((losses[0] - losses[2]).abs() > 1e-4, "{losses:?}");
}

#[test]
fn schedules_follow_their_definitions() {
    use crate::{Schedule, next_lr};
    // Zaremba et al.: the rate of epoch e is 20 * 0.5^max(e - 4, 0); char-rnn's rule with
    // decay 0.5 after epoch 4 gives the same.
    let t = TrainSection {
        schedule: Schedule::Exponential,
        lr: 20.0,
        lr_decay: 0.5,
        lr_decay_after: 4,
        ..Default::default()
    };
    let mut lr = t.lr;
    for e in 1..=13 {
        assert_eq!(lr, 20.0 * 0.5f64.powi((e - 4).max(0)), "epoch {e}");
        lr = next_lr(&t, lr, e as usize, true);
    }
    // word_language_model: divide by 4 after an epoch that did not improve.
    let t = TrainSection {
        schedule: Schedule::Plateau,
        ..Default::default()
    };
    assert_eq!(next_lr(&t, 20.0, 3, true), 20.0);
    assert_eq!(next_lr(&t, 20.0, 3, false), 5.0);
    // Step: x0.1 after every third epoch.
    let t = TrainSection {
        schedule: Schedule::Step,
        lr_decay: 0.1,
        lr_step: 3,
        ..Default::default()
    };
    let rates: Vec<f64> = (1..=7)
        .scan(1.0, |lr, e| {
            let now = *lr;
            *lr = next_lr(&t, *lr, e, false);
            Some(now)
        })
        .collect();
    let want = [1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01];
    assert!(
        rates.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-15),
        "{rates:?}"
    );
    let none = TrainSection::default();
    assert_eq!(next_lr(&none, 0.3, 50, false), 0.3);
}

/// Every `fixtures/lm` input is a PyTorch `state_dict` with metadata: imported into a run
/// directory and loaded back, the model gives the fixture's logits (float32 tolerance),
/// and an export of that run holds the same tensors under the same names.
#[test]
fn imported_pytorch_state_dicts_give_the_fixtures_logits_and_export_back_unchanged() {
    use burn::tensor::{Int, Tensor};
    use rnnlm_data::Vocab;
    use rnnlm_model::State;

    use crate::interchange::{export, import};
    use crate::{Existing, RunDir};

    let device = Device::flex().autodiff();
    let lm =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/lm");
    for case in [
        "lstm_small",
        "lstm_small_tied_clip",
        "gru_small",
        "gru_onehot_clip",
        "rnn_relu_small",
    ] {
        let input = NamedTensors::read(&lm.join(format!("{case}.safetensors"))).unwrap();
        let expected =
            NamedTensors::read(&lm.join(format!("{case}.expected.float32.safetensors"))).unwrap();
        let v: usize = input.metadata["V"].parse().unwrap();
        let tokens = std::iter::once("<unk>".to_string())
            .chain((1..v).map(|i| format!("w{i}")))
            .collect();
        let vocab = Vocab::from_tokens(tokens).unwrap();
        let dir = std::env::temp_dir().join(format!("rnnlm-import-{case}-{}", std::process::id()));
        let (run, _) = RunDir::open(&dir, Existing::Replace).unwrap();
        let config = import(&input, &vocab, &TrainConfig::default(), &run, &device).unwrap();
        let (_, loaded_vocab, loaded_config, model) = run.load_trained(&device).unwrap();
        assert_eq!((loaded_vocab, &loaded_config), (vocab.clone(), &config));

        let [b, t] = input.shape("X").unwrap()[..] else {
            unreachable!()
        };
        let x = Tensor::<2, Int>::from_data(input.get("X", &[b, t]).unwrap(), &device);
        let state_of = |name: &str| {
            let shape = input.shape(name).unwrap();
            Tensor::<3>::from_data(input.get(name, &shape).unwrap(), &device)
        };
        let state = State {
            h: state_of("H0"),
            c: input.tensors.contains_key("C0").then(|| state_of("C0")),
        };
        let (logits, _) = model.forward(x, state);
        let mut got = NamedTensors::default();
        got.insert("logits", logits.into_data());
        let mut want = NamedTensors::default();
        want.insert("logits", expected.tensors["logits"].clone());
        let worst = rnnlm_model::parity::compare(&got, &want, 1e-5, 1e-4).unwrap();
        assert!(worst.is_none(), "{case}: {worst:?}");

        let exported = export(&model, &config, &vocab).unwrap();
        for (name, data) in &exported.tensors {
            assert_eq!(data, &input.tensors[name], "{case}: {name}");
        }
        let params = input
            .tensors
            .keys()
            .filter(|n| !["X", "Y", "H0", "C0"].contains(&n.as_str()))
            .count();
        assert_eq!(exported.tensors.len(), params, "{case}");
        for key in ["cell", "V", "H", "L", "E", "input", "tied"] {
            assert_eq!(exported.metadata[key], input.metadata[key], "{case}: {key}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_checkpoint_stopped_as_an_epoch_begins_reads_back() {
    // No minibatch trained yet: the last loss is NaN, which JSON writes as `null`.
    let mut progress = crate::Progress::new(0.1);
    progress.interrupted = Some(crate::Interrupted {
        train: crate::PartialEpoch {
            minibatches: 0,
            loss_sum: 0.0,
            tokens: 0,
            seconds: 0.0,
            last_loss: f64::NAN,
        },
        best_before: Some(25.7),
    });
    let text = serde_json::to_string(&progress).unwrap();
    assert!(text.contains("\"last_loss\":null"), "{text}");
    let back: crate::Progress = serde_json::from_str(&text).unwrap();
    let train = back.interrupted.unwrap().train;
    assert!(train.last_loss.is_nan());
    assert_eq!((train.minibatches, train.tokens), (0, 0));
}

#[test]
fn a_run_killed_before_it_wrote_its_config_leaves_a_directory_a_new_run_takes() {
    use crate::{Existing, Opened, RunDir};

    let dir = std::env::temp_dir().join(format!("rnnlm-killed-early-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // What `open` leaves behind when the process dies before the run writes its config
    // (the kill -9 soak hit this): the lock file and an empty checkpoints/.
    drop(RunDir::open(&dir, Existing::Refuse).unwrap());
    let (_, opened) = RunDir::open(&dir, Existing::Refuse).unwrap();
    assert!(opened == Opened::Created);
    std::fs::remove_dir_all(&dir).unwrap();
}
