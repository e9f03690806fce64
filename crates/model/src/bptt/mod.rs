#![allow(non_snake_case)] // the book's names: W_xh, W_hh, W_hq, H, O

//! Backpropagation through time written out (book 8.7.2) for a language model of stacked
//! one-direction RNN, GRU or LSTM layers on host memory: forward over the minibatch,
//! softmax cross-entropy, backward. For the book's RNN, with `X_t` one-hot:
//!     H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h),    O_t = H_t W_hq + b_q
//!     dH_t = dO_t W_hq^T + s_{t+1} dA_{t+1} W_hh^T,  dA_t = dH_t * (1 - H_t^2)
//!     dW_hh = sum_t H_{t-1}^T dA_t,  dW_hq = sum_t H_t^T dO_t,  dW_xh[x] += dA_t rows
//! where `s_t` weights the gradient entering the state of step `t-1` (1: plain BPTT,
//! 0: cut, 1/pi: randomized truncation). A gated cell (`cells.rs`) has `G` such
//! pre-activations per step instead of one; a layer above the first reads the outputs of
//! the one below and hands `dA_t W_xh^T` down as their gradient; an embedding's rows
//! replace the one-hot `X_t`; dropout multiplies a layer's input and the last layer's
//! output by masks drawn before the pass.
//!
//! Only `H_{t-1} W_hh` and `dA_t W_hh^T` are sequential: the input projections (a row
//! lookup for one-hot input), the decoder and every weight gradient are one product each
//! over all steps, and the batch rows are independent, so they split across threads with
//! one sum at the end (and the decoder's `dW_hq`, the largest, over all rows at once in
//! blocks of columns). Autodiff records and replays a dozen tensor ops per step instead;
//! both are checked against the PyTorch fixtures and each other.

#[macro_use]
mod widest;
mod cells;
mod decoder;
mod panels;
mod pool;
mod real;
mod rows;
mod transpose;

use std::borrow::Cow;

use pool::{Kind, Pool};

use rayon::prelude::*;

pub use cells::Cell;
use panels::backward_in_panels;
pub use panels::{PANEL, Panels, matmul_panels};
pub use pool::{on_workers, release, set_give_back};
pub use real::{Mat, Real, matmul};
use widest::add_into;
pub use widest::sum_of_squares;

/// One recurrent layer in the book's orientation, `x W_ih` (PyTorch's weights are
/// transposed views); gates stacked in PyTorch's order along the columns.
#[derive(Clone, Copy)]
pub struct Layer<'a, T> {
    pub W_ih: Mat<'a, T>, // [in, G*H]: rows looked up for one-hot input
    pub W_hh: Mat<'a, T>, // [H, G*H]
    pub b_ih: &'a [T],    // [G*H]
    pub b_hh: &'a [T],    // [G*H] (zeros for the book's one-bias RNN)
}

/// The model: an optional embedding, the stacked layers (first to last), the decoder.
#[derive(Clone, Copy)]
pub struct Params<'a, T> {
    pub cell: Cell,
    /// `[V, E]`; `None`: one-hot input.
    pub embedding: Option<Mat<'a, T>>,
    pub layers: &'a [Layer<'a, T>],
    pub W_hq: Mat<'a, T>, // [H, V]
    pub b_q: &'a [T],     // [V]
}

/// Dropout masks already scaled by `1 / (1 - p)`, `[num_steps * batch_size, width]` in
/// the order the autodiff engine draws them (row `t * batch_size + b`).
pub struct Masks<T> {
    /// On layer `l`'s input; layer 0's only with an embedding.
    pub inputs: Vec<Option<Vec<T>>>,
    /// On the last layer's output.
    pub output: Vec<T>,
}

/// One minibatch: token ids `[batch_size, num_steps]` row-major, the state entering it.
pub struct Minibatch<'a, T> {
    pub X: &'a [usize],
    pub Y: &'a [usize],
    pub batch_size: usize,
    pub num_steps: usize,
    pub H0: &'a [T],         // [num_layers, batch_size, H]
    pub C0: Option<&'a [T]>, // the LSTM's memory cell, same shape
    /// `s_t` for each step (the weight of the gradient entering the state of step `t - 1`,
    /// in every layer); `None`: all 1.
    pub state_grad_scales: Option<&'a [f64]>,
    pub masks: Option<&'a Masks<T>>,
    /// Return the logits (else the one `[rows, V]` buffer becomes their gradient in place).
    pub keep_logits: bool,
}

/// Gradients of one layer, the weights' in the book's orientation (`W_ih` `[in, G*H]`,
/// `W_hh` `[H, G*H]`) however they are stored: `gemm` multiplies `X^T dG` faster than
/// `dG^T X` into PyTorch's `[G*H, in]` (one core, medians of 30 alternating rounds: the
/// large char model's `[384, 2048] x [2048, 1536]` 110 vs 102 GFLOP/s, PTB's `[200, 700]
/// x [700, 800]` 90 vs 78). A model stored as PyTorch's reads them transposed after the
/// workers' sum (`fused::HostGrad::Transposed`), where each worker used to transpose its
/// own (PTB, two threads, 8 alternating rounds of 30 s: 5,464 vs 5,352 minibatches).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGrads<T> {
    pub W_ih: Vec<T>,
    pub W_hh: Vec<T>,
    pub b_ih: Vec<T>,
    pub b_hh: Vec<T>,
}

/// A gradient that is zero but in some rows: the embedding's, whose rows outside the
/// minibatch's input tokens get nothing (PTB: ~400 of 10,000 a minibatch).
#[derive(Debug, Clone, PartialEq)]
pub struct RowGrads<T> {
    /// The rows that may be nonzero, ascending.
    pub ids: Vec<usize>,
    /// `[ids.len(), cols]`: row `i` is the gradient's row `ids[i]`.
    pub values: Vec<T>,
}

impl<T: Real> RowGrads<T> {
    /// Each row that may be nonzero: its index and its values.
    pub fn rows(&self) -> impl Iterator<Item = (usize, &[T])> {
        let cols = self.values.len() / self.ids.len().max(1);
        self.ids
            .iter()
            .copied()
            .zip(self.values.chunks_exact(cols.max(1)))
    }

    /// `dense += self` for a whole gradient `dense`.
    pub fn add_to(&self, dense: &mut [T]) {
        for (id, row) in self.rows() {
            add_into(&mut dense[id * row.len()..(id + 1) * row.len()], row);
        }
    }

    /// The whole gradient, `len` elements, in a buffer from this thread's pool.
    pub fn to_dense(&self, len: usize) -> Vec<T> {
        let mut dense = pool::with_pool(Kind::Grads, |pool| pool.zeros(len));
        for (id, row) in self.rows() {
            dense[id * row.len()..(id + 1) * row.len()].copy_from_slice(row);
        }
        dense
    }
}

/// Gradients of the mean cross-entropy.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads<T> {
    pub embedding: Option<RowGrads<T>>,
    pub layers: Vec<LayerGrads<T>>,
    /// `dW_hq`, `[H, V]`, the book's orientation: `gemm` multiplies `X^T dO` into it
    /// faster than `dO^T X` into PyTorch's `[V, H]` (PTB's 350-row blocks on one core,
    /// alternating: 101-133 vs 81-99 GFLOP/s, the `[V, H]` output's 200 columns leaving
    /// `gemm` an edge), so a model stored as PyTorch's transposes it once a minibatch.
    pub W_hq: Vec<T>,
    pub b_q: Vec<T>,
}

impl<T: Real> Grads<T> {
    /// Buffers for one worker's gradients, from `pool`: zeros where the worker adds
    /// into them (the biases), of any value where a product writes them whole; no
    /// embedding (`rows::Buffers::embedded`) and no `W_hq` (`decoder::weight_grad`).
    fn for_worker(p: &Params<T>, pool: &mut Pool<T>) -> Self {
        let mut whole = |m: Mat<T>| pool.any(m.rows * m.cols);
        let layers: Vec<_> = (p.layers.iter())
            .map(|l| (whole(l.W_ih), whole(l.W_hh)))
            .collect();
        Self {
            embedding: None,
            layers: layers
                .into_iter()
                .zip(p.layers)
                .map(|((W_ih, W_hh), l)| LayerGrads {
                    W_ih,
                    W_hh,
                    b_ih: pool.zeros(l.b_ih.len()),
                    b_hh: pool.zeros(l.b_hh.len()),
                })
                .collect(),
            W_hq: Vec::new(),
            b_q: pool.zeros(p.b_q.len()),
        }
    }

    /// Every buffer back to `pool`.
    fn give(self, pool: &mut Pool<T>) {
        let layers = self.layers.into_iter();
        layers
            .flat_map(|l| [l.W_ih, l.W_hh, l.b_ih, l.b_hh])
            .chain(self.embedding.map(|e| e.values))
            .chain([self.W_hq, self.b_q])
            .for_each(|b| pool.give(b));
    }

    fn empty() -> Self {
        Self {
            embedding: None,
            layers: Vec::new(),
            W_hq: Vec::new(),
            b_q: Vec::new(),
        }
    }

    /// `self += other` for a worker's gradients (which hold no embedding's or `W_hq`'s).
    fn add(&mut self, other: &Self) {
        let layers = self.layers.iter_mut().zip(&other.layers);
        let pairs = layers
            .flat_map(|(a, b)| {
                [
                    (&mut a.W_ih, &b.W_ih),
                    (&mut a.W_hh, &b.W_hh),
                    (&mut a.b_ih, &b.b_ih),
                    (&mut a.b_hh, &b.b_hh),
                ]
            })
            .chain([(&mut self.b_q, &other.b_q)]);
        // Across the threads, each in chunks, so that no one gradient is one thread's task.
        let pairs: Vec<_> = pairs.collect();
        pairs.into_par_iter().for_each(|(a, b)| {
            a.par_chunks_mut(1 << 16)
                .zip(b.par_chunks(1 << 16))
                .for_each(|(a, b)| add_into(a, b));
        });
    }
}

/// What one forward and backward pass gives.
pub struct Bptt<T> {
    /// `[num_steps * batch_size, V]`, row `t * batch_size + b` (the book's order), when
    /// asked for.
    pub logits: Option<Vec<T>>,
    /// Cross-entropy of each target token, in the same row order.
    pub token_losses: Vec<T>,
    /// The state after the last step, `[num_layers, batch_size, H]`.
    pub H: Vec<T>,
    pub C: Option<Vec<T>>,
    pub grads: Grads<T>,
}

/// A layer's weights as the products read them: `W_hh` in panels, `W_hh^T` in panels
/// where that is faster (`Back`), `W_ih` and its transpose row-major (packing contiguous rows is faster than strided ones), borrowed
/// where the parameter already is (PyTorch's `[G*H, in]` is the book's `W^T`), else
/// copied.
struct Prepared<'a, T: Clone> {
    /// `W_hh` in panels (`real::Panels`), for the product at every step forward.
    W_hh: Vec<T>,
    /// `W_hh^T`, for the product at every step backward.
    W_hh_T: Back<'a, T>,
    /// `(W_ih, W_ih^T)`; for one-hot input the lookup table `W_ih + bias` instead.
    W_ih: Cow<'a, [T]>,
    W_ih_T: Cow<'a, [T]>,
    /// What every row of the input projection starts from: `b_ih + b_hh`, or `b_ih` for
    /// a cell that adds `b_hh` inside a gate (GRU). One vector a minibatch, where adding
    /// `b_hh` to the projection took a pass over `[T*n, G*H]` a layer.
    bias: Vec<T>,
}

impl<'a, T: Real> Prepared<'a, T> {
    /// The copies in buffers from `pool` (every minibatch needs the same ones).
    fn new(layer: &Layer<'a, T>, cell: Cell, one_hot: bool, pool: &mut Pool<T>) -> Self {
        let mut bias = pool.any(layer.b_ih.len());
        bias.copy_from_slice(layer.b_ih);
        if !cell.separate_hidden_gates() {
            add_into(&mut bias, layer.b_hh);
        }
        let W_ih = if one_hot {
            // `x W_ih + bias` for every token x: one row lookup per step.
            let mut table = pool.any(layer.W_ih.rows * layer.W_ih.cols);
            layer.W_ih.write_row_major(&mut table);
            for row in table.chunks_exact_mut(bias.len()) {
                add_into(row, &bias);
            }
            Cow::Owned(table)
        } else {
            layer.W_ih.contiguous_with(|len| pool.any(len))
        };
        let mut W_hh = pool.any(layer.W_hh.rows * layer.W_hh.cols);
        Panels::write(layer.W_hh, &mut W_hh);
        let W_hh_T = if backward_in_panels::<T>(layer.W_hh.rows, layer.W_hh.cols) {
            let mut panels = pool.any(layer.W_hh.rows * layer.W_hh.cols);
            Panels::write(layer.W_hh.t(), &mut panels);
            Back::Panels(panels)
        } else {
            Back::RowMajor(layer.W_hh.t().contiguous_with(|len| pool.any(len)))
        };
        let mut copy = |m: Mat<'a, T>| m.contiguous_with(|len| pool.any(len));
        Self {
            W_hh,
            W_hh_T,
            W_ih,
            W_ih_T: if one_hot {
                Cow::Borrowed(&[][..])
            } else {
                copy(layer.W_ih.t())
            },
            bias,
        }
    }

    /// The copies back to `pool`.
    fn give(self, pool: &mut Pool<T>) {
        pool.give(self.W_hh);
        pool.give(self.bias);
        let W_hh_T = match self.W_hh_T {
            Back::Panels(w) => Cow::Owned(w),
            Back::RowMajor(w) => w,
        };
        for w in [W_hh_T, self.W_ih, self.W_ih_T] {
            if let Cow::Owned(w) = w {
                pool.give(w);
            }
        }
    }
}

/// `W_hh^T` (`[G*H, H]`) as the step backward multiplies by it.
enum Back<'a, T: Clone> {
    /// In panels, by the project's kernel, alternating their order step by step.
    Panels(Vec<T>),
    /// Row-major (PyTorch's tensor in place), by `gemm`.
    RowMajor(Cow<'a, [T]>),
}

impl<T: Real> Back<'_, T> {
    /// `dh += dA W_hh^T` at step `t`.
    fn multiply(&self, dh: &mut [T], dA: Mat<T>, t: usize) {
        let h = dh.len() / dA.rows.max(1);
        match self {
            Back::Panels(w) => matmul_panels(dh, dA, Panels::new(w, dA.cols, h), t % 2 == 1),
            Back::RowMajor(w) => matmul(dh, dA, Mat::row_major(w, dA.cols, h), true),
        }
    }
}

/// Forward and backward over `batch` with its rows split across `threads` workers
/// (rayon's pool). The result depends on `threads` only through rounding: the order of
/// the sum over workers, and how the product kernel blocks a product of fewer rows.
pub fn forward_backward<T: Real>(p: Params<T>, batch: &Minibatch<T>, threads: usize) -> Bptt<T> {
    let (v, h, depth) = (p.W_hq.cols, p.W_hq.rows, p.layers.len());
    let (b, steps) = (batch.batch_size, batch.num_steps);
    assert!(depth > 0, "at least one layer");
    assert_eq!(batch.X.len(), b * steps, "X is [batch_size, num_steps]");
    assert_eq!(batch.Y.len(), b * steps, "Y is [batch_size, num_steps]");
    let state_len = depth * b * h;
    assert_eq!(
        batch.H0.len(),
        state_len,
        "H0 is [num_layers, batch_size, H]"
    );
    assert_eq!(
        batch.C0.map(<[T]>::len),
        p.cell.has_cell_state().then_some(state_len)
    );
    let prepared: Vec<Prepared<'_, T>> = pool::with_pool(Kind::Grads, |pool| {
        (p.layers.iter().enumerate())
            .map(|(l, layer)| Prepared::new(layer, p.cell, l == 0 && p.embedding.is_none(), pool))
            .collect()
    });
    let mean = T::from_f64(1.0 / (b * steps).max(1) as f64);
    let chunks = threads.clamp(1, b.max(1));
    let bounds = |c: usize| c * b / chunks;
    // The workers' gradient buffers come from this thread's pool and go back to it (a
    // worker's own pool would depend on which thread rayon gives which share); the
    // first worker's become the result.
    let embedded = |c: usize| {
        p.embedding
            .map_or(0, |E| (bounds(c + 1) - bounds(c)) * steps * E.cols)
    };
    let buffers: Vec<rows::Buffers<T>> = pool::with_pool(Kind::Grads, |pool| {
        (0..chunks)
            .map(|c| {
                let tn = (bounds(c + 1) - bounds(c)) * steps;
                rows::Buffers {
                    grads: Grads::for_worker(&p, pool),
                    embedded: pool.any(embedded(c)),
                    decoder_input: pool.any(tn * h),
                    dO: pool.any(tn * v),
                }
            })
            .collect()
    });
    let mut parts: Vec<rows::Part<T>> = buffers
        .into_par_iter()
        .enumerate()
        .map(|(c, buffers)| {
            let rows = bounds(c)..bounds(c + 1);
            let run =
                |pool: &mut Pool<T>| rows::run(&p, &prepared, batch, rows, mean, buffers, pool);
            pool::with_pool(Kind::Work, run)
        })
        .collect();
    let mut W_hq = pool::with_pool(Kind::Grads, |pool| pool.any(h * v));
    let decoded: Vec<_> = (parts.iter().map(|part| &part.buffers))
        .map(|b| {
            let rows = b.decoder_input.len() / h;
            let X = Mat::row_major(&b.decoder_input, rows, h);
            (X, Mat::row_major(&b.dO, rows, v))
        })
        .collect();
    decoder::weight_grad(&mut W_hq, &decoded, threads);
    let mut grads = std::mem::replace(&mut parts[0].buffers.grads, Grads::empty());
    grads.W_hq = W_hq;
    // The embedding's gradient: the rows of the input tokens, every worker's added in
    // worker and row order.
    grads.embedding = p.embedding.map(|E| {
        let mut ids = batch.X.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut values = pool::with_pool(Kind::Grads, |pool| pool.zeros(ids.len() * E.cols));
        for (c, part) in parts.iter().enumerate() {
            let (lo, n) = (bounds(c), bounds(c + 1) - bounds(c));
            for (r, d) in part.buffers.embedded.chunks_exact(E.cols).enumerate() {
                let x = token_at(batch.X, steps, lo..lo + n, r);
                let i = ids.binary_search(&x).expect("an input token");
                add_into(&mut values[i * E.cols..(i + 1) * E.cols], d);
            }
        }
        RowGrads { ids, values }
    });

    let mut out = Bptt {
        logits: batch.keep_logits.then(|| vec![T::ZERO; steps * b * v]),
        token_losses: vec![T::ZERO; steps * b],
        H: vec![T::ZERO; state_len],
        C: p.cell.has_cell_state().then(|| vec![T::ZERO; state_len]),
        grads: Grads::empty(),
    };
    for (c, part) in parts.iter().enumerate() {
        let (lo, n) = (bounds(c), bounds(c + 1) - bounds(c));
        for t in 0..steps {
            let (global, local) = (t * b + lo, t * n);
            if let (Some(all), Some(mine)) = (&mut out.logits, &part.logits) {
                all[global * v..(global + n) * v]
                    .copy_from_slice(&mine[local * v..(local + n) * v]);
            }
            out.token_losses[global..global + n].copy_from_slice(&part.losses[local..local + n]);
        }
        for l in 0..depth {
            let at = (l * b + lo) * h;
            let mine = l * n * h..(l + 1) * n * h;
            out.H[at..at + n * h].copy_from_slice(&part.H[mine.clone()]);
            if let (Some(all), Some(c)) = (&mut out.C, &part.C) {
                all[at..at + n * h].copy_from_slice(&c[mine]);
            }
        }
        if c > 0 {
            grads.add(&part.buffers.grads);
        }
    }
    pool::with_pool(Kind::Grads, |pool| {
        // The first part's gradients are the result (`Grads::empty` left in its place).
        for part in parts {
            let b = part.buffers;
            [b.embedded, b.decoder_input, b.dO]
                .into_iter()
                .for_each(|buffer| pool.give(buffer));
            b.grads.give(pool);
        }
        prepared.into_iter().for_each(|w| w.give(pool));
    });
    out.grads = grads;
    out
}

/// `len` elements of unspecified value from this thread's pool, for a caller that writes
/// every one and hands the buffer back with `recycle` (the dropout masks).
pub fn buffer<T: Real>(len: usize) -> Vec<T> {
    pool::with_pool(Kind::Grads, |pool| pool.any(len))
}

/// Buffers a caller is done with (gradients, `buffer`'s), kept for the next
/// `forward_backward` on this thread (which would otherwise take fresh memory for them:
/// page faults, the kernel zeroing every page).
pub fn recycle<T: Real>(buffers: impl IntoIterator<Item = Vec<T>>) {
    pool::with_pool(Kind::Grads, |pool| {
        buffers.into_iter().for_each(|b| pool.give(b))
    });
}

/// The id at a worker's local row `r` for its batch rows `rows`: row `t * n + i` is batch
/// row `rows.start + i` at step `t`, in ids `[batch_size, steps]`.
fn token_at(ids: &[usize], steps: usize, rows: std::ops::Range<usize>, r: usize) -> usize {
    let n = rows.len();
    ids[(rows.start + r % n) * steps + r / n]
}

widest! {
    /// `sums[j] += sum_r m[r, j]` for a row-major `m` with `sums.len()` columns.
    fn add_column_sums(sums: &mut [T], m: &[T]) {
        for row in m.chunks_exact(sums.len()) {
            sums.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
        }
    }
}
