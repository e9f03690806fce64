#![allow(non_snake_case)] // the book's names: W_xh, W_hh, W_hq, H, O

//! Backpropagation through time written out (book 8.7.2) for an RNN language model of one
//! or more stacked one-direction layers, on host memory: forward over the minibatch,
//! cross-entropy, backward.
//!
//! Forward, for each step t (`X_t` one-hot, so `X_t W_xh` is a row of `W_xh`):
//!     H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h),    O_t = H_t W_hq + b_q
//! Backward, with `dA_t` the gradient at the pre-activation of step t:
//!     dH_t = dO_t W_hq^T + s_{t+1} dA_{t+1} W_hh^T,  dA_t = dH_t * (1 - H_t^2)
//!     dW_hh = sum_t H_{t-1}^T dA_t,  dW_hq = sum_t H_t^T dO_t,  dW_xh[x] += dA_t rows
//! where `s_t` weights the gradient entering `H_{t-1}` (1: plain BPTT, 0: cut, 1/pi:
//! randomized truncation). A layer above the first reads the outputs `H_t` of the one below
//! instead of `X_t`, and hands `dA_t W_xh^T` down as their gradient.
//! Only `H_{t-1} W_hh` and `dA_t W_hh^T` are sequential; the input projections above the
//! first layer, the output layer and the weight gradients are one product each over all
//! steps, and the batch rows
//! are independent, so they split across threads with one sum at the end. Autodiff
//! records and replays ~10 tensor ops per step instead; both are checked against the
//! PyTorch fixtures.

mod real;

use rayon::prelude::*;

pub use real::{Mat, Real, matmul};

/// One recurrent layer in the book's orientation (`nn.RNN`'s weights are transposed views).
#[derive(Clone, Copy)]
pub struct Layer<'a, T> {
    pub W_xh: Mat<'a, T>, // [V, H] in the first layer (rows looked up), [H, H] above it
    pub W_hh: Mat<'a, T>, // [H, H]
    pub b_h: &'a [T],     // [H]: nn.RNN's bias_ih + bias_hh
}

/// The stacked layers (first to last) and the output layer.
#[derive(Clone, Copy)]
pub struct RnnParams<'a, T> {
    pub layers: &'a [Layer<'a, T>],
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
    pub H0: &'a [T], // [num_layers, batch_size, H]
    /// `s_t` for each step (the weight of the gradient entering `H_{t-1}`, in every layer);
    /// `None`: all 1.
    pub state_grad_scales: Option<&'a [f64]>,
}

/// Gradients of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGrads<T> {
    pub W_xh: Vec<T>,
    pub W_hh: Vec<T>,
    pub b_h: Vec<T>,
}

/// Gradients of the mean cross-entropy, in the parameters' book orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct RnnGrads<T> {
    pub layers: Vec<LayerGrads<T>>,
    pub W_hq: Vec<T>,
    pub b_q: Vec<T>,
}

impl<T: Real> RnnGrads<T> {
    fn zeros(p: &RnnParams<T>) -> Self {
        let zeros = |m: Mat<T>| vec![T::ZERO; m.rows * m.cols];
        Self {
            layers: p
                .layers
                .iter()
                .map(|l| LayerGrads {
                    W_xh: zeros(l.W_xh),
                    W_hh: zeros(l.W_hh),
                    b_h: vec![T::ZERO; l.b_h.len()],
                })
                .collect(),
            W_hq: zeros(p.W_hq),
            b_q: vec![T::ZERO; p.b_q.len()],
        }
    }

    fn add(&mut self, other: &Self) {
        let layers = self.layers.iter_mut().zip(&other.layers);
        let pairs = layers
            .flat_map(|(a, b)| {
                [
                    (&mut a.W_xh, &b.W_xh),
                    (&mut a.W_hh, &b.W_hh),
                    (&mut a.b_h, &b.b_h),
                ]
            })
            .chain([(&mut self.W_hq, &other.W_hq), (&mut self.b_q, &other.b_q)]);
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
    /// `H` after the last step, `[num_layers, batch_size, H]`.
    pub state: Vec<T>,
    pub grads: RnnGrads<T>,
}

/// A layer's weights as the products read them: contiguous row-major copies of the
/// matrices and their transposes (packing contiguous rows is faster than strided ones).
struct Prepared<T> {
    W_hh: Vec<T>,
    W_hh_T: Vec<T>,
    /// `(W_xh, W_xh^T)` above the first layer; the first layer looks rows up instead.
    W_xh: Option<(Vec<T>, Vec<T>)>,
}

/// Forward and backward over `batch` with its rows split across `threads` workers
/// (rayon's pool). The result depends on `threads` only through the order of one sum.
pub fn forward_backward<T: Real>(p: RnnParams<T>, batch: &Minibatch<T>, threads: usize) -> Bptt<T> {
    let (v, h, depth) = (p.W_hq.cols, p.W_hq.rows, p.layers.len());
    let (b, steps) = (batch.batch_size, batch.num_steps);
    assert!(depth > 0, "at least one layer");
    assert_eq!(batch.X.len(), b * steps, "X is [batch_size, num_steps]");
    assert_eq!(batch.Y.len(), b * steps, "Y is [batch_size, num_steps]");
    assert_eq!(
        batch.H0.len(),
        depth * b * h,
        "H0 is [num_layers, batch_size, num_hiddens]"
    );
    // `X_t W_xh + b_h` of the first layer for every token: one row lookup per step.
    let first = &p.layers[0];
    let mut table = vec![T::ZERO; v * h];
    for (x, row) in table.chunks_exact_mut(h).enumerate() {
        for (j, e) in row.iter_mut().enumerate() {
            *e = first.W_xh.at(x, j) + first.b_h[j];
        }
    }
    let prepared: Vec<Prepared<T>> = p
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| Prepared {
            W_hh: layer.W_hh.to_row_major(),
            W_hh_T: layer.W_hh.t().to_row_major(),
            W_xh: (l > 0).then(|| (layer.W_xh.to_row_major(), layer.W_xh.t().to_row_major())),
        })
        .collect();
    let mean = T::from_f64(1.0 / (b * steps).max(1) as f64);
    let chunks = threads.clamp(1, b.max(1));
    let bounds = |c: usize| c * b / chunks;
    let parts: Vec<Part<T>> = (0..chunks)
        .into_par_iter()
        .map(|c| rows(&p, &prepared, &table, batch, bounds(c)..bounds(c + 1), mean))
        .collect();

    let mut out = Bptt {
        logits: vec![T::ZERO; steps * b * v],
        token_losses: vec![T::ZERO; steps * b],
        state: vec![T::ZERO; depth * b * h],
        grads: RnnGrads::zeros(&p),
    };
    for (c, part) in parts.iter().enumerate() {
        let (lo, n) = (bounds(c), bounds(c + 1) - bounds(c));
        for t in 0..steps {
            let (global, local) = (t * b + lo, t * n);
            out.logits[global * v..(global + n) * v]
                .copy_from_slice(&part.logits[local * v..(local + n) * v]);
            out.token_losses[global..global + n].copy_from_slice(&part.losses[local..local + n]);
        }
        for (l, state) in part.states.iter().enumerate() {
            let at = (l * b + lo) * h;
            out.state[at..at + n * h].copy_from_slice(state);
        }
        out.grads.add(&part.grads);
    }
    out
}

/// One worker's share: batch rows `lo..hi`, all steps. Local row `t * n + i` is batch row
/// `lo + i` at step `t`.
struct Part<T> {
    logits: Vec<T>,
    losses: Vec<T>,
    states: Vec<Vec<T>>,
    grads: RnnGrads<T>,
}

fn rows<T: Real>(
    p: &RnnParams<T>,
    prepared: &[Prepared<T>],
    table: &[T],
    batch: &Minibatch<T>,
    range: std::ops::Range<usize>,
    mean: T,
) -> Part<T> {
    let (v, h, steps) = (p.W_hq.cols, p.W_hq.rows, batch.num_steps);
    let (lo, n) = (range.start, range.len());
    let token = |ids: &[usize], t: usize, i: usize| ids[(lo + i) * steps + t];
    let block = n * h; // one step's [n, H]
    let tn = steps * n; // rows over all steps

    // Hs[l] holds layer l's H_{-1} (the state entering the minibatch), H_0, ..., H_{T-1}.
    let mut Hs: Vec<Vec<T>> = Vec::with_capacity(p.layers.len());
    for (l, (layer, w)) in p.layers.iter().zip(prepared).enumerate() {
        let mut H = vec![T::ZERO; (steps + 1) * block];
        let state = (l * batch.batch_size + lo) * h;
        H[..block].copy_from_slice(&batch.H0[state..state + block]);
        // Every step's input projection first, then the recurrence adds H_{t-1} W_hh.
        match (&w.W_xh, Hs.last()) {
            (Some((W_xh, _)), Some(below)) => {
                H[block..]
                    .chunks_exact_mut(h)
                    .for_each(|row| row.copy_from_slice(layer.b_h));
                matmul(
                    &mut H[block..],
                    Mat::row_major(&below[block..], tn, h),
                    Mat::row_major(W_xh, h, h),
                    true,
                );
            }
            _ => {
                for (r, a) in H[block..].chunks_exact_mut(h).enumerate() {
                    let x = token(batch.X, r / n, r % n);
                    a.copy_from_slice(&table[x * h..(x + 1) * h]);
                }
            }
        }
        for t in 0..steps {
            let (before, after) = H.split_at_mut((t + 1) * block);
            let (H_prev, A) = (&before[t * block..], &mut after[..block]);
            matmul(
                A,
                Mat::row_major(H_prev, n, h),
                Mat::row_major(&w.W_hh, h, h),
                true,
            );
            if p.relu {
                A.iter_mut()
                    .for_each(|a| *a = if *a > T::ZERO { *a } else { T::ZERO });
            } else {
                A.iter_mut().for_each(|a| *a = a.tanh());
            }
        }
        Hs.push(H);
    }
    let top = &Hs[Hs.len() - 1];

    // O = H W_hq + b_q over all steps at once; softmax cross-entropy; dO of the mean.
    let mut O = vec![T::ZERO; steps * n * v];
    O.chunks_exact_mut(v)
        .for_each(|row| row.copy_from_slice(p.b_q));
    matmul(&mut O, Mat::row_major(&top[block..], tn, h), p.W_hq, true);
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
    let mut grads = RnnGrads::zeros(p);
    let dO_mat = Mat::row_major(&dO, steps * n, v);
    matmul(
        &mut grads.W_hq,
        Mat::row_major(&top[block..], tn, h).t(),
        dO_mat,
        false,
    );
    column_sums(&mut grads.b_q, &dO);

    // dA starts as the gradient reaching the layer's outputs from above (dO W_hq^T for
    // the last layer) and is finished step by step.
    let mut dA = vec![T::ZERO; steps * block];
    matmul(&mut dA, dO_mat, p.W_hq.t(), false);
    for l in (0..p.layers.len()).rev() {
        let (H, w, g) = (&Hs[l], &prepared[l], &mut grads.layers[l]);
        let W_hh_T = Mat::row_major(&w.W_hh_T, h, h);
        let mut dH_next = vec![T::ZERO; block]; // the recurrence's share of dH_t
        for t in (0..steps).rev() {
            let (dA_t, H_t) = (
                &mut dA[t * block..(t + 1) * block],
                &H[(t + 1) * block..(t + 2) * block],
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
        let dA_mat = Mat::row_major(&dA, tn, h);
        matmul(
            &mut g.W_hh,
            Mat::row_major(&H[..steps * block], tn, h).t(),
            dA_mat,
            false,
        );
        column_sums(&mut g.b_h, &dA);
        match (&w.W_xh, l.checked_sub(1)) {
            (Some((_, W_xh_T)), Some(below)) => {
                let X_mat = Mat::row_major(&Hs[below][block..], tn, h);
                matmul(&mut g.W_xh, X_mat.t(), dA_mat, false);
                let mut dX = vec![T::ZERO; steps * block];
                matmul(&mut dX, dA_mat, Mat::row_major(W_xh_T, h, h), false);
                dA = dX;
            }
            _ => {
                for (r, dA_row) in dA.chunks_exact(h).enumerate() {
                    let x = token(batch.X, r / n, r % n);
                    let row = &mut g.W_xh[x * h..(x + 1) * h];
                    row.iter_mut().zip(dA_row).for_each(|(g, &d)| *g += d);
                }
            }
        }
    }
    Part {
        logits: O,
        losses,
        states: Hs.iter().map(|H| H[steps * block..].to_vec()).collect(),
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
