#![allow(non_snake_case)] // the book's names: W_xh, W_hh, W_hq, H, O

//! Backpropagation through time written out (book 8.7.2) for a one-layer, one-direction
//! RNN language model, on host memory: forward over the minibatch, cross-entropy, backward.
//!
//! Forward, for each step t (`X_t` one-hot, so `X_t W_xh` is a row of `W_xh`):
//!     H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h),    O_t = H_t W_hq + b_q
//! Backward, with `dA_t` the gradient at the pre-activation of step t:
//!     dH_t = dO_t W_hq^T + s_{t+1} dA_{t+1} W_hh^T,  dA_t = dH_t * (1 - H_t^2)
//!     dW_hh = sum_t H_{t-1}^T dA_t,  dW_hq = sum_t H_t^T dO_t,  dW_xh[x] += dA_t rows
//! where `s_t` weights the gradient entering `H_{t-1}` (1: plain BPTT, 0: cut, 1/pi:
//! randomized truncation). Only `H_{t-1} W_hh` and `dA_t W_hh^T` are sequential; the output
//! layer and the weight gradients are one product each over all steps, and the batch rows
//! are independent, so they split across threads with one sum at the end. Autodiff
//! records and replays ~10 tensor ops per step instead; both are checked against the
//! PyTorch fixtures.

mod real;

use rayon::prelude::*;

pub use real::{Mat, Real, matmul};

/// The parameters in the book's orientation (`nn.RNN`'s are transposed views of them).
#[derive(Clone, Copy)]
pub struct RnnParams<'a, T> {
    pub W_xh: Mat<'a, T>, // [V, H]
    pub W_hh: Mat<'a, T>, // [H, H]
    pub b_h: &'a [T],     // [H]: nn.RNN's bias_ih + bias_hh
    pub W_hq: Mat<'a, T>, // [H, V]
    pub b_q: &'a [T],     // [V]
    pub relu: bool,
}

/// One minibatch: token ids `[batch_size, num_steps]` row-major, the state entering it.
pub struct Minibatch<'a, T> {
    pub X: &'a [usize],
    pub Y: &'a [usize],
    pub batch_size: usize,
    pub num_steps: usize,
    pub H0: &'a [T], // [batch_size, H]
    /// `s_t` for each step (the weight of the gradient entering `H_{t-1}`); `None`: all 1.
    pub state_grad_scales: Option<&'a [f64]>,
}

/// Gradients of the mean cross-entropy, in the parameters' book orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct RnnGrads<T> {
    pub W_xh: Vec<T>,
    pub W_hh: Vec<T>,
    pub b_h: Vec<T>,
    pub W_hq: Vec<T>,
    pub b_q: Vec<T>,
}

impl<T: Real> RnnGrads<T> {
    fn zeros(v: usize, h: usize) -> Self {
        Self {
            W_xh: vec![T::ZERO; v * h],
            W_hh: vec![T::ZERO; h * h],
            b_h: vec![T::ZERO; h],
            W_hq: vec![T::ZERO; h * v],
            b_q: vec![T::ZERO; v],
        }
    }

    fn add(&mut self, other: &Self) {
        let pairs = [
            (&mut self.W_xh, &other.W_xh),
            (&mut self.W_hh, &other.W_hh),
            (&mut self.b_h, &other.b_h),
            (&mut self.W_hq, &other.W_hq),
            (&mut self.b_q, &other.b_q),
        ];
        for (a, b) in pairs {
            a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
        }
    }
}

/// What one forward and backward pass gives.
pub struct Bptt<T> {
    /// `[num_steps * batch_size, V]`, row `t * batch_size + b` (the book's order).
    pub logits: Vec<T>,
    /// Cross-entropy of each target token, in the same row order.
    pub token_losses: Vec<T>,
    /// `H` after the last step, `[batch_size, H]`.
    pub state: Vec<T>,
    pub grads: RnnGrads<T>,
}

/// Forward and backward over `batch` with its rows split across `threads` workers
/// (rayon's pool). The result depends on `threads` only through the order of one sum.
pub fn forward_backward<T: Real>(p: RnnParams<T>, batch: &Minibatch<T>, threads: usize) -> Bptt<T> {
    let (v, h) = (p.W_xh.rows, p.W_hh.rows);
    let (b, steps) = (batch.batch_size, batch.num_steps);
    assert_eq!(batch.X.len(), b * steps, "X is [batch_size, num_steps]");
    assert_eq!(batch.Y.len(), b * steps, "Y is [batch_size, num_steps]");
    assert_eq!(batch.H0.len(), b * h, "H0 is [batch_size, num_hiddens]");
    // `X_t W_xh + b_h` for every token: one row lookup per step.
    let mut table = vec![T::ZERO; v * h];
    for (x, row) in table.chunks_exact_mut(h).enumerate() {
        for (j, e) in row.iter_mut().enumerate() {
            *e = p.W_xh.at(x, j) + p.b_h[j];
        }
    }
    // The two per-step products read W_hh and W_hh^T; contiguous copies pack faster.
    let (W_hh, W_hh_T) = (p.W_hh.to_row_major(), p.W_hh.t().to_row_major());
    let p = RnnParams {
        W_hh: Mat::row_major(&W_hh, h, h),
        ..p
    };
    let W_hh_T = Mat::row_major(&W_hh_T, h, h);
    let mean = T::from_f64(1.0 / (b * steps).max(1) as f64);
    let chunks = threads.clamp(1, b.max(1));
    let bounds = |c: usize| c * b / chunks;
    let parts: Vec<Part<T>> = (0..chunks)
        .into_par_iter()
        .map(|c| rows(&p, W_hh_T, &table, batch, bounds(c)..bounds(c + 1), mean))
        .collect();

    let mut out = Bptt {
        logits: vec![T::ZERO; steps * b * v],
        token_losses: vec![T::ZERO; steps * b],
        state: Vec::with_capacity(b * h),
        grads: RnnGrads::zeros(v, h),
    };
    for (c, part) in parts.iter().enumerate() {
        let (lo, n) = (bounds(c), bounds(c + 1) - bounds(c));
        for t in 0..steps {
            let (global, local) = (t * b + lo, t * n);
            out.logits[global * v..(global + n) * v]
                .copy_from_slice(&part.logits[local * v..(local + n) * v]);
            out.token_losses[global..global + n].copy_from_slice(&part.losses[local..local + n]);
        }
        out.state.extend_from_slice(&part.state);
        out.grads.add(&part.grads);
    }
    out
}

/// One worker's share: batch rows `lo..hi`, all steps. Local row `t * n + i` is batch row
/// `lo + i` at step `t`.
struct Part<T> {
    logits: Vec<T>,
    losses: Vec<T>,
    state: Vec<T>,
    grads: RnnGrads<T>,
}

fn rows<T: Real>(
    p: &RnnParams<T>,
    W_hh_T: Mat<T>,
    table: &[T],
    batch: &Minibatch<T>,
    range: std::ops::Range<usize>,
    mean: T,
) -> Part<T> {
    let (v, h, steps) = (p.W_xh.rows, p.W_hh.rows, batch.num_steps);
    let (lo, n) = (range.start, range.len());
    let token = |ids: &[usize], t: usize, i: usize| ids[(lo + i) * steps + t];
    let block = n * h; // one step's [n, H]

    // Hs holds H_{-1} (the state entering the minibatch), H_0, ..., H_{T-1}.
    let mut Hs = vec![T::ZERO; (steps + 1) * block];
    Hs[..block].copy_from_slice(&batch.H0[lo * h..(lo + n) * h]);
    for t in 0..steps {
        let (before, after) = Hs.split_at_mut((t + 1) * block);
        let (H_prev, A) = (&before[t * block..], &mut after[..block]);
        for (i, a) in A.chunks_exact_mut(h).enumerate() {
            let x = token(batch.X, t, i);
            a.copy_from_slice(&table[x * h..(x + 1) * h]);
        }
        matmul(A, Mat::row_major(H_prev, n, h), p.W_hh, true);
        if p.relu {
            A.iter_mut()
                .for_each(|a| *a = if *a > T::ZERO { *a } else { T::ZERO });
        } else {
            A.iter_mut().for_each(|a| *a = a.tanh());
        }
    }
    let (H_in, H_out) = (
        Mat::row_major(&Hs[..steps * block], steps * n, h),
        Mat::row_major(&Hs[block..], steps * n, h),
    );

    // O = H W_hq + b_q over all steps at once; softmax cross-entropy; dO of the mean.
    let mut O = vec![T::ZERO; steps * n * v];
    O.chunks_exact_mut(v)
        .for_each(|row| row.copy_from_slice(p.b_q));
    matmul(&mut O, H_out, p.W_hq, true);
    let mut dO = vec![T::ZERO; O.len()];
    let mut losses = vec![T::ZERO; steps * n];
    for (r, (o, d)) in O.chunks_exact(v).zip(dO.chunks_exact_mut(v)).enumerate() {
        let y = token(batch.Y, r / n, r % n);
        let max = o
            .iter()
            .copied()
            .fold(o[0], |m, x| if x > m { x } else { m });
        let sum = o.iter().fold(T::ZERO, |s, &x| s + (x - max).exp());
        let log_z = max + sum.ln();
        losses[r] = log_z - o[y];
        for (j, (d, &x)) in d.iter_mut().zip(o).enumerate() {
            let p = (x - log_z).exp();
            *d = (if j == y { p - T::ONE } else { p }) * mean;
        }
    }
    let mut grads = RnnGrads::zeros(v, h);
    let dO_mat = Mat::row_major(&dO, steps * n, v);
    matmul(&mut grads.W_hq, H_out.t(), dO_mat, false);
    column_sums(&mut grads.b_q, &dO);

    // dA starts as dO W_hq^T (the output's share of dH) and is finished step by step.
    let mut dA = vec![T::ZERO; steps * block];
    matmul(&mut dA, dO_mat, p.W_hq.t(), false);
    let mut dH_next = vec![T::ZERO; block]; // the recurrence's share of dH_t
    for t in (0..steps).rev() {
        let (dA_t, H_t) = (
            &mut dA[t * block..(t + 1) * block],
            &Hs[(t + 1) * block..(t + 2) * block],
        );
        for ((d, &from_next), &h_t) in dA_t.iter_mut().zip(&dH_next).zip(H_t) {
            let slope = if p.relu {
                if h_t > T::ZERO { T::ONE } else { T::ZERO }
            } else {
                T::ONE - h_t * h_t
            };
            *d = (*d + from_next) * slope;
        }
        if t == 0 {
            break; // the state entering the minibatch is not trained
        }
        let s = batch.state_grad_scales.map_or(1.0, |s| s[t]);
        if s == 0.0 {
            dH_next.fill(T::ZERO);
        } else {
            matmul(&mut dH_next, Mat::row_major(dA_t, n, h), W_hh_T, false);
            if s != 1.0 {
                let s = T::from_f64(s);
                dH_next.iter_mut().for_each(|d| *d = *d * s);
            }
        }
    }
    let dA_mat = Mat::row_major(&dA, steps * n, h);
    matmul(&mut grads.W_hh, H_in.t(), dA_mat, false);
    column_sums(&mut grads.b_h, &dA);
    for (r, dA_row) in dA.chunks_exact(h).enumerate() {
        let x = token(batch.X, r / n, r % n);
        let row = &mut grads.W_xh[x * h..(x + 1) * h];
        row.iter_mut().zip(dA_row).for_each(|(g, &d)| *g += d);
    }
    Part {
        logits: O,
        losses,
        state: Hs[steps * block..].to_vec(),
        grads,
    }
}

/// `sums[j] = sum_r m[r, j]` for a row-major `m` with `sums.len()` columns.
fn column_sums<T: Real>(sums: &mut [T], m: &[T]) {
    sums.fill(T::ZERO);
    for row in m.chunks_exact(sums.len()) {
        sums.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
    }
}
