//! Inverted dropout with masks drawn on the host from a seeded rng: a run that resumes
//! at a minibatch draws the same masks as one that never stopped, on every backend.

use burn::tensor::{Tensor, TensorData};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::bptt::Real;

/// Mask values drawn per task when a mask is drawn in parallel.
const CHUNK: usize = 1 << 14;

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`,
/// as `nn.Dropout` in training mode.
pub struct Dropout {
    p: f64,
    /// The stream's seed for ChaCha8 (named, not `StdRng`, so that the stream can be
    /// entered anywhere), and how many of its 32-bit words the masks so far used.
    seed: u64,
    used: u128,
}

impl Dropout {
    /// Masks for one minibatch, drawn from `seed` (the trainer derives it from the run's
    /// seed, the epoch and the minibatch).
    pub fn new(p: f64, seed: u64) -> Self {
        Self { p, seed, used: 0 }
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
    /// row-major order).
    pub fn mask(&mut self, len: usize) -> Vec<f32> {
        let mut mask = vec![0.0; len];
        self.fill(&mut mask);
        mask
    }

    /// `mask(out.len())` written into `out` in the caller's element type (the host engine
    /// draws its masks here, straight into its buffers).
    pub fn fill<T: Real>(&mut self, out: &mut [T]) {
        let keep = T::from_f64((1.0 / (1.0 - self.p)) as f32 as f64);
        // One 32-bit word `u` per value, dropped where `u * 2^-32 < p`, which for an
        // integer `u` holds exactly when `u < ceil(p * 2^32)`. (A word, not a `u64` as
        // `random::<f64>()` takes, and ChaCha8, not StdRng's ChaCha12: the keystream was
        // 2.7% of the large char model's step; p is still resolved to 2^-32.)
        let below = (self.p * (1u64 << 32) as f64).ceil() as u64;
        // In chunks across the threads, each drawn from its own place in the one stream:
        // the values of drawing them one after another. The keystream comes in blocks
        // into a buffer, then one loop compares.
        let seed = self.seed;
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_word_pos(self.used + (i * CHUNK) as u128);
                let mut bytes = [0u8; 4 * DRAWS];
                for piece in chunk.chunks_mut(DRAWS) {
                    let bytes = &mut bytes[..4 * piece.len()];
                    rng.fill_bytes(bytes);
                    keep_unless_below(piece, bytes, below, keep);
                }
            });
        self.used += out.len() as u128;
    }
}

/// Draws per keystream buffer.
const DRAWS: usize = 512;

widest! {
    /// `out[i] = 0` where the `i`-th little-endian `u32` of `bytes` is below `below`,
    /// else `keep`.
    fn keep_unless_below(out: &mut [T], bytes: &[u8], below: u64, keep: T) {
        for (m, u) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            let u = u32::from_le_bytes(u.try_into().expect("4 bytes"));
            *m = if u64::from(u) < below { T::ZERO } else { keep };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_equal_the_streams_words_compared_with_p_as_fractions() {
        // Three masks, the first two shorter and the last longer than a chunk: the next
        // mask goes on where the last one ended in the stream.
        let lens = [CHUNK / 3, CHUNK + 5, 2 * CHUNK + 17];
        for p in [0.0, 0.1, 0.2, 0.25, 1.0 / 3.0, 0.5, 0.9] {
            let mut dropout = Dropout::new(p, 7);
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let keep = (1.0 / (1.0 - p)) as f32;
            for len in lens {
                // The word as a fraction of 2^32 (exact in f64) against p.
                let fraction = |u: u32| f64::from(u) / 4_294_967_296.0;
                let expected: Vec<f32> = (0..len)
                    .map(|_| {
                        if fraction(rng.next_u32()) < p {
                            0.0
                        } else {
                            keep
                        }
                    })
                    .collect();
                assert_eq!(dropout.mask(len), expected, "p = {p}, {len} values");
            }
        }
    }
}
