//! Book section 8.1: fit an MLP to a noisy sine wave from its last `tau` values, then
//! predict one step ahead, many steps ahead (feeding predictions back), and k steps ahead.

use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rnnlm_data::{autoregressive_features, sine_series};
use rnnlm_model::SineMlp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SineConfig {
    /// Length of the series, `t = 1..=T`.
    pub len: usize,
    pub noise_std: f64,
    /// Embedding dimension: the model sees `x_{t-tau} .. x_{t-1}`.
    pub tau: usize,
    /// The first `n_train` pairs train the model.
    pub n_train: usize,
    pub batch_size: usize,
    pub num_hiddens: usize,
    pub lr: f64,
    pub num_epochs: usize,
    pub seed: u64,
    /// Horizons of the k-step-ahead predictions (the largest is the book's `max_steps`).
    pub steps: Vec<usize>,
}

impl Default for SineConfig {
    fn default() -> Self {
        Self {
            len: 1000,
            noise_std: 0.2,
            tau: 4,
            n_train: 600,
            batch_size: 16,
            num_hiddens: 10,
            lr: 0.01,
            num_epochs: 5,
            seed: 0,
            steps: vec![1, 4, 16, 64],
        }
    }
}

/// Everything the book plots and prints.
pub struct SineReport {
    pub x: Vec<f64>,
    /// `evaluate_loss` on the training pairs after each epoch.
    pub epoch_losses: Vec<f64>,
    /// One-step-ahead predictions of `x_{tau+1} .. x_T` (time `tau + 1 + i` for entry `i`).
    pub onestep: Vec<f64>,
    /// `x` up to `n_train + tau`, then the model's own predictions fed back.
    pub multistep: Vec<f64>,
    /// Per horizon k: predictions for times `tau + k + i` (1-based `t`), and their MSE.
    pub ksteps: Vec<(usize, Vec<f64>, f64)>,
}

fn matrix(rows: &[Vec<f64>], device: &Device) -> Tensor<2> {
    let cols = rows.first().map_or(0, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), cols]), device)
}

fn predict(net: &SineMlp, rows: &[Vec<f64>], device: &Device) -> Vec<f64> {
    net.forward(matrix(rows, device).detach())
        .into_data()
        .iter::<f64>()
        .collect()
}

fn mse(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(p, y)| (p - y).powi(2)).sum::<f64>() / a.len() as f64
}

pub fn run_sine(config: &SineConfig, device: &Device) -> Result<SineReport> {
    let c = config;
    let max_steps = c.steps.iter().copied().max().unwrap_or(1);
    if c.tau == 0
        || c.batch_size == 0
        || c.steps.contains(&0)
        || c.n_train == 0
        || c.n_train + c.tau + max_steps > c.len
    {
        bail!(
            "sine config: need tau, batch_size, steps > 0 and n_train + tau + max(steps) <= len ({c:?})"
        );
    }
    let mut rng = StdRng::seed_from_u64(c.seed);
    let x = sine_series(c.len, c.noise_std, &mut rng);
    let (features, labels) = autoregressive_features(&x, c.tau);

    device.seed(c.seed);
    let mut net = SineMlp::new(c.tau, c.num_hiddens, device);
    let mut optimizer = AdamConfig::new().with_epsilon(1e-8).init();
    let train: Vec<usize> = (0..c.n_train).collect();
    let mut epoch_losses = Vec::new();
    for _ in 0..c.num_epochs {
        let mut order = train.clone();
        order.shuffle(&mut rng);
        for chunk in order.chunks(c.batch_size) {
            let rows: Vec<Vec<f64>> = chunk.iter().map(|&i| features[i].clone()).collect();
            let y: Vec<f64> = chunk.iter().map(|&i| labels[i]).collect();
            let y = Tensor::<2>::from_data(TensorData::new(y, [chunk.len(), 1]), device);
            // The book's `l.sum().backward()` over `MSELoss(reduction='none')`.
            let loss = (net.forward(matrix(&rows, device)) - y).square().sum();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optimizer.step(c.lr, net, grads);
        }
        let pred = predict(&net, &features[..c.n_train], device);
        epoch_losses.push(mse(&pred, &labels[..c.n_train]));
    }

    let onestep = predict(&net, &features, device);
    let mut multistep = x[..c.n_train + c.tau].to_vec();
    for i in c.n_train + c.tau..c.len {
        let next = predict(&net, &[multistep[i - c.tau..i].to_vec()], device)[0];
        multistep.push(next);
    }
    // The book's k-step table: columns 0..tau are observations, column tau + k - 1 is the
    // k-step-ahead prediction for the row's time index + tau + k - 1.
    let rows = c.len - c.tau - max_steps + 1;
    let mut table: Vec<Vec<f64>> = (0..rows).map(|r| x[r..r + c.tau].to_vec()).collect();
    for col in c.tau..c.tau + max_steps {
        let inputs: Vec<Vec<f64>> = table
            .iter()
            .map(|row| row[col - c.tau..col].to_vec())
            .collect();
        for (row, p) in table.iter_mut().zip(predict(&net, &inputs, device)) {
            row.push(p);
        }
    }
    let ksteps = c
        .steps
        .iter()
        .map(|&k| {
            let col = c.tau + k - 1;
            let preds: Vec<f64> = table.iter().map(|row| row[col]).collect();
            let truth = &x[col..col + rows];
            let err = mse(&preds, truth);
            (k, preds, err)
        })
        .collect();
    Ok(SineReport {
        x,
        epoch_losses,
        onestep,
        multistep,
        ksteps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_run_lands_in_the_book_range_and_k1_is_one_step() {
        let device = Device::flex().autodiff();
        let config = SineConfig::default();
        let r = run_sine(&config, &device).unwrap();
        // The book prints 0.0768 .. 0.0517 for epochs 1-5; the noise floor is 0.2^2 = 0.04.
        assert_eq!(r.epoch_losses.len(), 5);
        assert!(
            r.epoch_losses.iter().all(|l| (0.04..0.1).contains(l)),
            "{:?}",
            r.epoch_losses
        );
        assert_eq!(r.onestep.len(), 996);
        assert_eq!(r.multistep.len(), 1000);
        assert_eq!(&r.multistep[..604], &r.x[..604]);
        let (k, preds, mse1) = &r.ksteps[0];
        assert_eq!(*k, 1);
        assert_eq!(preds[..], r.onestep[..preds.len()]);
        // Errors grow with the horizon.
        let errors: Vec<f64> = r.ksteps.iter().map(|s| s.2).collect();
        assert!(errors.windows(2).all(|w| w[0] < w[1]), "{errors:?}");
        assert!(*mse1 < 0.07);
    }
}
