//! `cargo bench -p rnnlm-model`: one training step (forward, backward, global-norm clip,
//! SGD update; autodiff and fused engines) of both models at the book's sizes (B=32, T=35, V=28; H=512 scratch,
//! H=256 concise), and the recurrence alone (forward without gradients).

use burn::tensor::{Device, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use rnnlm_model::{Clipping, Engine, ModelConfig, ModelKind, StepInput, train_step};

fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let tokens = |shift: i64| -> Tensor<2, Int> {
        let data: Vec<i64> = (0..32 * 35).map(|i| (i * 7 + shift) % 28).collect();
        Tensor::from_data(TensorData::new(data, [32, 35]), device)
    };
    (tokens(0), tokens(1))
}

fn bench(c: &mut Criterion) {
    for (name, kind, hidden) in [
        ("scratch H=512", ModelKind::Scratch, 512),
        ("concise H=256", ModelKind::Concise, 256),
    ] {
        let device = Device::flex().autodiff();
        let config = ModelConfig::new(kind, 28, hidden);
        let (x, y) = batch(&device);
        for engine in [Engine::Autodiff, Engine::Fused] {
            let mut model = Some(config.init(0, &device).unwrap());
            let mut optimizer = burn::optim::SgdConfig::new().init();
            c.bench_function(&format!("train step ({engine:?}), {name}"), |b| {
                b.iter(|| {
                    let m = model.take().unwrap();
                    let state = m.begin_state(32, &device);
                    let input = StepInput::new(x.clone(), y.clone(), state);
                    let (next, step) =
                        train_step(m, &mut optimizer, input, engine, Clipping::norm(1.0), 1.0)
                            .unwrap();
                    let _ = step.loss.into_scalar::<f32>();
                    model = Some(next);
                })
            });
        }
        let plain = Device::flex();
        let inference = config.init(0, &plain).unwrap();
        let (x, _) = batch(&plain);
        c.bench_function(&format!("recurrence (forward, no autodiff), {name}"), |b| {
            b.iter(|| {
                let (logits, _) = inference.forward(x.clone(), inference.begin_state(32, &plain));
                let _ = logits.into_data();
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
