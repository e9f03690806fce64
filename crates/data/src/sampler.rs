//! Minibatches for language models (book section 8.3.4): random sampling and
//! sequential partitioning, with the book's index arithmetic.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// How an epoch is cut into minibatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// `seq_data_iter_random`: random, non-overlapping subsequences.
    Random,
    /// `seq_data_iter_sequential`: row b of batch k+1 continues row b of batch k.
    Sequential,
    /// Sequential from token 0 every epoch, with no random offset: PyTorch
    /// word_language_model's `batchify` and Zaremba et al.'s Lua code.
    Batchify,
}

/// One minibatch: `x` and `y` are `[batch_size, num_steps]` row-major; `y` is `x` shifted by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub x: Vec<usize>,
    pub y: Vec<usize>,
    pub batch_size: usize,
    pub num_steps: usize,
}

impl Batch {
    fn tensor(values: &[usize], shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
        let data: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    /// `(X, Y)` as `Tensor<2, Int>` of shape `[batch_size, num_steps]` on `device`.
    pub fn to_tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
        let shape = [self.batch_size, self.num_steps];
        (
            Self::tensor(&self.x, shape, device),
            Self::tensor(&self.y, shape, device),
        )
    }
}

/// All minibatches of one epoch. The random offset (and, for `Random`, the shuffle)
/// comes from `rng`, so a seeded rng makes the epoch reproducible.
pub fn epoch_batches<'a>(
    corpus: &'a [usize],
    batch_size: usize,
    num_steps: usize,
    sampler: Sampler,
    rng: &mut impl Rng,
) -> Result<Minibatches<'a>, DataError> {
    check_sizes(corpus.len(), batch_size, num_steps)?;
    let starts = match sampler {
        Sampler::Random => random(corpus.len(), batch_size, num_steps, rng),
        Sampler::Sequential => {
            let offset = rng.random_range(0..=num_steps);
            sequential(corpus.len(), batch_size, num_steps, offset)
        }
        Sampler::Batchify => sequential(corpus.len(), batch_size, num_steps, 0),
    };
    Ok(Minibatches {
        corpus,
        batch_size,
        num_steps,
        starts,
    })
}

/// The minibatches of one epoch, each cut from the corpus when asked for (all of the
/// Penn Treebank's at once would hold 15 MB of token ids through the epoch).
#[derive(Debug, Clone)]
pub struct Minibatches<'a> {
    corpus: &'a [usize],
    batch_size: usize,
    num_steps: usize,
    /// Where each row of each minibatch starts in `corpus`, `batch_size` per minibatch.
    starts: Vec<usize>,
}

impl Minibatches<'_> {
    pub fn len(&self) -> usize {
        self.starts.len() / self.batch_size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Minibatch `k` (of `0..len()`).
    pub fn get(&self, k: usize) -> Batch {
        let rows = &self.starts[k * self.batch_size..(k + 1) * self.batch_size];
        let window = |shift: usize| -> Vec<usize> {
            rows.iter()
                .flat_map(|&s| &self.corpus[s + shift..s + shift + self.num_steps])
                .copied()
                .collect()
        };
        Batch {
            x: window(0),
            y: window(1),
            batch_size: self.batch_size,
            num_steps: self.num_steps,
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Batch> + '_ {
        (0..self.len()).map(|k| self.get(k))
    }
}

/// Both samplers yield at least one batch for every offset exactly when this passes:
/// the worst offset drops `num_steps` tokens (sequential) and leaves one for the shift.
fn check_sizes(len: usize, batch_size: usize, num_steps: usize) -> Result<(), DataError> {
    if batch_size == 0 {
        return Err(DataError::invalid("batch_size", 0, "a positive integer"));
    }
    if num_steps == 0 {
        return Err(DataError::invalid("num_steps", 0, "a positive integer"));
    }
    let needed = batch_size * num_steps + num_steps + 1;
    if len < needed {
        return Err(DataError::invalid(
            "batch_size x num_steps",
            format!("{batch_size} x {num_steps}"),
            format!(
                "at most a corpus of {len} tokens allows: batch_size * num_steps + num_steps + 1 <= {len} (needs {needed})"
            ),
        ));
    }
    Ok(())
}

/// `seq_data_iter_random`'s row starts: from a random offset, every `num_steps`-long
/// subsequence once, shuffled, cut into minibatches (the remainder dropped).
fn random(len: usize, batch_size: usize, num_steps: usize, rng: &mut impl Rng) -> Vec<usize> {
    let offset = rng.random_range(0..num_steps);
    let num_subseqs = (len - offset - 1) / num_steps;
    let mut starts: Vec<usize> = (0..num_subseqs).map(|i| offset + i * num_steps).collect();
    starts.shuffle(rng);
    starts.truncate(num_subseqs / batch_size * batch_size);
    starts
}

/// `seq_data_iter_sequential`'s: the corpus from `offset` cut into `batch_size` rows,
/// minibatch `k` reading columns `k * num_steps..` of each.
fn sequential(len: usize, batch_size: usize, num_steps: usize, offset: usize) -> Vec<usize> {
    let row_len = (len - offset - 1) / batch_size;
    let num_batches = row_len / num_steps;
    (0..num_batches)
        .flat_map(|k| (0..batch_size).map(move |b| offset + b * row_len + k * num_steps))
        .collect()
}
