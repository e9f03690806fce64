//! Inverted dropout with masks drawn on the host from a seeded rng: a run that resumes
//! at a minibatch draws the same masks as one that never stopped, on every backend.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`,
/// as `nn.Dropout` in training mode.
pub struct Dropout {
    p: f64,
    rng: StdRng,
}

impl Dropout {
    /// Masks for one minibatch, drawn from `seed` (the trainer derives it from the run's
    /// seed, the epoch and the minibatch).
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            p,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn apply(&mut self, x: Tensor<2>) -> Tensor<2> {
        if self.p == 0.0 {
            return x;
        }
        let [rows, cols] = x.dims();
        let mask = TensorData::new(self.mask(rows * cols), [rows, cols]);
        let mask = Tensor::<2>::from_data(mask, &x.device());
        x * mask
    }

    /// The next `len` mask values, `0` or `1 / (1 - p)` (what `apply` multiplies by, in
    /// row-major order; the host engine draws through here too).
    pub fn mask(&mut self, len: usize) -> Vec<f32> {
        let keep = (1.0 / (1.0 - self.p)) as f32;
        (0..len)
            .map(|_| {
                if self.rng.random::<f64>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect()
    }
}
