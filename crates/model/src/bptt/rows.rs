//! One worker's share of `forward_backward`: batch rows `lo..hi` at every step. Local row
//! `t * n + i` is batch row `lo + i` at step `t` (global row `t * batch_size + lo + i`).

use std::ops::Range;

use super::cells::{Grads as StepGrads, Saved, Step};
use super::decoder::{self, Decoded};
use super::pool::Pool;
use super::widest::{add_into, mul_into, sum_into};
use super::{
    Grads, Mat, Minibatch, Panels, Params, Prepared, Real, add_column_sums, matmul, matmul_panels,
    token_at,
};

pub(super) struct Part<T> {
    pub logits: Option<Vec<T>>,
    pub losses: Vec<T>,
    /// The final state of each layer, `[num_layers, n, H]`.
    pub H: Vec<T>,
    pub C: Option<Vec<T>>,
    pub buffers: Buffers<T>,
}

/// The caller's buffers, which a worker fills and hands back in its `Part` (buffers of
/// its own pool that left it every minibatch would be allocated afresh every minibatch).
pub(super) struct Buffers<T> {
    /// The gradients of every weight but the embedding's and `W_hq`'s.
    pub grads: Grads<T>,
    /// The gradient reaching the embedded rows (with an embedding), `[T*n, E]` in local
    /// row order: added into the embedding's gradient once, after all workers, instead
    /// of into a `[V, E]` buffer per worker.
    pub embedded: Vec<T>,
    /// The decoder's input `[T*n, H]` and `dO` `[T*n, V]`, for `dW_hq` over all the
    /// workers' rows at once (`decoder::weight_grad`).
    pub decoder_input: Vec<T>,
    pub dO: Vec<T>,
}

/// What the forward pass of one layer keeps for its backward pass.
struct Kept<T> {
    /// The layer's input `[T*n, in]` after dropout; empty for one-hot input.
    X: Vec<T>,
    /// Activated gates `[T*n, G*H]`; the backward pass overwrites them with their gradient.
    G: Vec<T>,
    /// `H_{-1}` (the state entering the minibatch), `H_0`, ..., `H_{T-1}`; `C` alike.
    H: Vec<T>,
    C: Vec<T>,
    /// `cells::Step::extra` of every step, `[T*n, H]`.
    E: Vec<T>,
}

impl<T> Kept<T> {
    fn buffers(self) -> [Vec<T>; 5] {
        [self.X, self.G, self.H, self.C, self.E]
    }
}

/// `x *= mask` for this worker's rows: `x` is `[steps*n, width]` in local order, the mask
/// `[steps*B, width]` in global order (read in place: a copy per worker cost as much
/// memory as the masks themselves).
fn times<T: Real>(
    x: &mut [T],
    mask: Option<&[T]>,
    steps: usize,
    batch: usize,
    range: &Range<usize>,
) {
    let Some(mask) = mask else { return };
    let block = x.len() / steps.max(1); // one step's rows
    let width = block / range.len().max(1);
    for (t, x) in x.chunks_exact_mut(block.max(1)).enumerate() {
        let m = &mask[(t * batch + range.start) * width..][..block];
        mul_into(x, m);
    }
}

pub(super) fn run<T: Real>(
    p: &Params<T>,
    prepared: &[Prepared<'_, T>],
    batch: &Minibatch<T>,
    range: Range<usize>,
    mean: T,
    mut buffers: Buffers<T>,
    pool: &mut Pool<T>,
) -> Part<T> {
    let Buffers {
        grads,
        embedded,
        decoder_input,
        dO,
    } = &mut buffers;
    let (h, steps, cell) = (p.W_hq.rows, batch.num_steps, p.cell);
    let (gh, depth) = (cell.gates() * h, p.layers.len());
    let (lo, n) = (range.start, range.len());
    let token = |ids: &[usize], r: usize| token_at(ids, steps, range.clone(), r);
    let block = n * h; // one step's [n, H]
    let tn = steps * n; // rows over all steps
    // Layer `l`'s input mask, and the output's at `depth`.
    let mask = |l: usize| -> Option<&[T]> {
        let m = batch.masks?;
        if l == depth {
            Some(&m.output)
        } else {
            m.inputs[l].as_deref()
        }
    };
    let times = |x: &mut [T], l: usize| times(x, mask(l), steps, batch.batch_size, &range);

    // Forward, layer by layer.
    let mut X = match p.embedding {
        Some(E) => {
            let mut X = pool.any(tn * E.cols);
            for (r, row) in X.chunks_exact_mut(E.cols).enumerate() {
                let x = token(batch.X, r);
                row.iter_mut()
                    .enumerate()
                    .for_each(|(j, e)| *e = E.at(x, j));
            }
            times(&mut X, 0);
            X
        }
        None => Vec::new(),
    };
    let mut kept: Vec<Kept<T>> = Vec::with_capacity(depth);
    for (l, (layer, w)) in p.layers.iter().zip(prepared).enumerate() {
        // Every step's input projection first (for one-hot input, a step's rows looked up
        // as the step begins, so the recurrence finds them in cache); the recurrence adds
        // `H_{t-1} W_hh`.
        let mut G = pool.any(tn * gh);
        let one_hot = X.is_empty();
        if !one_hot {
            G.chunks_exact_mut(gh)
                .for_each(|row| row.copy_from_slice(&w.bias));
            let width = X.len() / tn;
            matmul(
                &mut G,
                Mat::row_major(&X, tn, width),
                Mat::row_major(&w.W_ih, width, gh),
                true,
            );
        }
        let state = (l * batch.batch_size + lo) * h;
        // The state entering the minibatch, then every step's (the cells write each).
        let mut entering = |s: &[T]| {
            let mut all = pool.any((steps + 1) * block);
            all[..block].copy_from_slice(&s[state..state + block]);
            all
        };
        let mut H = entering(batch.H0);
        let mut C = batch.C0.map_or_else(Vec::new, entering);
        let mut E = pool.zeros(if cell.has_extra() { tn * h } else { 0 });
        let mut gh_t = pool.any(if cell.separate_hidden_gates() {
            n * gh
        } else {
            0
        });
        let W_hh = Panels::new(&w.W_hh, h, gh);
        for t in 0..steps {
            let G_t = &mut G[t * n * gh..(t + 1) * n * gh];
            if one_hot {
                for (i, row) in G_t.chunks_exact_mut(gh).enumerate() {
                    let x = token(batch.X, t * n + i);
                    row.copy_from_slice(&w.W_ih[x * gh..(x + 1) * gh]);
                }
            }
            let (before, after) = H.split_at_mut((t + 1) * block);
            let h_prev = &before[t * block..];
            if cell.separate_hidden_gates() {
                gh_t.chunks_exact_mut(gh)
                    .for_each(|row| row.copy_from_slice(layer.b_hh));
                matmul_panels(&mut gh_t, Mat::row_major(h_prev, n, h), W_hh, t % 2 == 1);
            } else {
                matmul_panels(G_t, Mat::row_major(h_prev, n, h), W_hh, t % 2 == 1);
            }
            let (c_prev, c) = if C.is_empty() {
                (&[][..], &mut [][..])
            } else {
                let (before, after) = C.split_at_mut((t + 1) * block);
                (&before[t * block..], &mut after[..block])
            };
            let extra = if E.is_empty() {
                &mut [][..]
            } else {
                &mut E[t * block..(t + 1) * block]
            };
            let step = Step {
                h_prev,
                c_prev,
                h: &mut after[..block],
                c,
                extra,
            };
            cell.forward(h, G_t, &gh_t, step);
        }
        pool.give(gh_t);
        // The last layer's output into the caller's buffer: the decoder's input.
        let mut next = match l + 1 < depth {
            true => pool.any(tn * h),
            false => std::mem::take(decoder_input),
        };
        next.copy_from_slice(&H[block..]);
        if l + 1 < depth {
            times(&mut next, l + 1);
        }
        kept.push(Kept {
            X: std::mem::replace(&mut X, next),
            G,
            H,
            C,
            E,
        });
    }
    // `X` is now the decoder's input: the last layer's outputs after dropout.
    times(&mut X, depth);

    let Decoded {
        logits,
        losses,
        dX: mut dY,
    } = decoder::decode(
        p,
        &X,
        |r| token(batch.Y, r),
        mean,
        batch.keep_logits,
        dO,
        grads,
        pool,
    );
    times(&mut dY, depth);

    // Backward, layer by layer from the top: `dY` is the gradient reaching the layer's
    // outputs from above; the recurrence adds what reaches them from the next step.
    let separate = cell.separate_hidden_gates();
    for l in (0..depth).rev() {
        let (k, w, g) = (&mut kept[l], &prepared[l], &mut grads.layers[l]);
        // The gates' gradient, written over the gates step by step (`cells.rs`).
        let dG = &mut k.G;
        let mut dGH = pool.zeros(if separate { tn * gh } else { 0 });
        let mut dh_next = pool.zeros(block);
        let mut dc = pool.zeros(if k.C.is_empty() { 0 } else { block });
        let mut dh = pool.any(block);
        for t in (0..steps).rev() {
            let rows = t * block..(t + 1) * block;
            sum_into(&mut dh, &dY[rows.clone()], &dh_next);
            let gates = t * n * gh..(t + 1) * n * gh;
            let saved = Saved {
                h_prev: &k.H[t * block..(t + 1) * block],
                c_prev: if k.C.is_empty() {
                    &[]
                } else {
                    &k.C[t * block..(t + 1) * block]
                },
                h: &k.H[(t + 1) * block..(t + 2) * block],
                c: if k.C.is_empty() {
                    &[]
                } else {
                    &k.C[(t + 1) * block..(t + 2) * block]
                },
                extra: if k.E.is_empty() { &[] } else { &k.E[rows] },
            };
            let step = StepGrads {
                dh: &dh,
                dc: &mut dc,
                dgh: if separate {
                    &mut dGH[gates.clone()]
                } else {
                    &mut []
                },
                dh_prev: &mut dh_next,
            };
            cell.backward(h, &mut dG[gates.clone()], saved, step);
            // The bias gradients while the step's gate gradients are in cache.
            add_column_sums(&mut g.b_ih, &dG[gates.clone()]);
            if separate {
                add_column_sums(&mut g.b_hh, &dGH[gates.clone()]);
            }
            if t == 0 {
                break; // the state entering the minibatch is not trained
            }
            let s = batch.state_grad_scales.map_or(1.0, |s| s[t]);
            if s == 0.0 {
                dh_next.fill(T::ZERO);
                dc.fill(T::ZERO);
                continue;
            }
            let dgh_t = if separate { &dGH[gates] } else { &dG[gates] };
            w.W_hh_T
                .multiply(&mut dh_next, Mat::row_major(dgh_t, n, gh), t);
            if s != 1.0 {
                let s = T::from_f64(s);
                dh_next
                    .iter_mut()
                    .chain(dc.iter_mut())
                    .for_each(|d| *d = *d * s);
            }
        }
        let dG = &k.G;
        let dGH_or_dG = if separate { &dGH } else { dG };
        let H_prev = Mat::row_major(&k.H[..tn * h], tn, h);
        let dA = Mat::row_major(dGH_or_dG, tn, gh);
        matmul(&mut g.W_hh, H_prev.t(), dA, false);
        if !separate {
            g.b_hh.copy_from_slice(&g.b_ih); // `b_hh` enters where `b_ih` does
        }
        if k.X.is_empty() {
            // Rows of `[V, G*H]` looked up forward, so added to backward in that layout.
            g.W_ih.fill(T::ZERO);
            for (r, d) in dG.chunks_exact(gh).enumerate() {
                let x = token(batch.X, r);
                add_into(&mut g.W_ih[x * gh..(x + 1) * gh], d);
            }
        } else {
            let dG = Mat::row_major(dG, tn, gh);
            let width = k.X.len() / tn;
            matmul(&mut g.W_ih, Mat::row_major(&k.X, tn, width).t(), dG, false);
            // The first layer's into the caller's buffer: it leaves this thread, and a
            // buffer of this pool's that left every minibatch made the pool hand the next
            // request of its size a `[rows, V]` block, then allocate that block afresh
            // (14 MB and a memset a PTB minibatch).
            let mut dX = match l {
                0 => std::mem::take(embedded),
                _ => pool.any(tn * width),
            };
            assert_eq!(dX.len(), tn * width, "the embedded rows' gradient buffer");
            matmul(&mut dX, dG, Mat::row_major(&w.W_ih_T, gh, width), false);
            times(&mut dX, l);
            match l {
                0 => *embedded = dX,
                _ => pool.give(std::mem::replace(&mut dY, dX)),
            }
        }
        [dGH, dh_next, dc, dh]
            .into_iter()
            .for_each(|b| pool.give(b));
    }
    *decoder_input = X;
    let last = |s: &[T]| s[steps * block..].to_vec();
    let part = Part {
        logits,
        losses,
        H: kept.iter().flat_map(|k| last(&k.H)).collect(),
        C: (!kept[0].C.is_empty()).then(|| kept.iter().flat_map(|k| last(&k.C)).collect()),
        buffers,
    };
    let kept = kept.into_iter().flat_map(Kept::buffers);
    kept.chain([dY]).for_each(|b| pool.give(b));
    part
}
