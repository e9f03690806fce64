//! The decoder and its loss for one worker's rows: `O = X W_hq + b_q`, each row's softmax
//! cross-entropy and its gradient `dO`, then `dW_hq`, `db_q` and `dX = dO W_hq^T`, over
//! blocks of rows so that only one block of logits exists at a time.

use super::pool::Pool;
use super::widest::lanes;
use super::{Grads, Mat, Params, Real, matmul};

/// The most rows per block of the decoder's softmax cross-entropy. Blocks are cut equal
/// (PTB's 700 rows: two of 350, not 256 + 256 + 188): each block packs `W_hq` twice, and
/// the `[V, r] x [r, H]` weight gradient runs slower the smaller `r` (90 GFLOP/s for the
/// three products at 256 rows, 94.5 at 350, on the host whose product rate is 105).
const DECODER_ROWS: usize = 384;

pub(super) struct Decoded<T> {
    /// `O`, `[rows, V]`, when asked for.
    pub logits: Option<Vec<T>>,
    /// Each row's cross-entropy.
    pub losses: Vec<T>,
    /// The gradient reaching the decoder's input, `[rows, H]` (a buffer from the pool).
    pub dX: Vec<T>,
}

/// `X` is `[rows, H]`, `target(r)` row `r`'s next token, `mean` the factor of each row's
/// loss in the minibatch's; `grads.W_hq` and `grads.b_q` receive the decoder's gradients.
pub(super) fn decode<T: Real>(
    p: &Params<T>,
    X: &[T],
    target: impl Fn(usize) -> usize,
    mean: T,
    keep_logits: bool,
    grads: &mut Grads<T>,
    pool: &mut Pool<T>,
) -> Decoded<T> {
    let (v, h) = (p.W_hq.cols, p.W_hq.rows);
    let tn = X.len() / h.max(1);
    // O = X W_hq + b_q, softmax cross-entropy, and dO of the mean in the same buffer,
    // over blocks of rows: one `[rows, V]` buffer, not `[T*n, V]` (28 MB for PTB), while
    // each product still spans enough rows to run near the kernel's rate.
    let mut logits = keep_logits.then(|| vec![T::ZERO; tn * v]);
    let mut losses = vec![T::ZERO; tn];
    let mut dX = pool.any(tn * h);
    let rows = tn.div_ceil(tn.div_ceil(DECODER_ROWS).max(1));
    let mut O = pool.any(rows * v);
    for start in (0..tn).step_by(rows.max(1)) {
        let r = rows.min(tn - start);
        let (O, X) = (
            &mut O[..r * v],
            Mat::row_major(&X[start * h..(start + r) * h], r, h),
        );
        // The bias added row by row while the row is in cache, not written over the
        // whole block for the product to read back (28 MB a PTB minibatch).
        matmul(O, X, p.W_hq, false);
        for (i, o) in O.chunks_exact_mut(v).enumerate() {
            add_row(o, p.b_q);
            if let Some(all) = &mut logits {
                all[(start + i) * v..(start + i + 1) * v].copy_from_slice(o);
            }
            losses[start + i] = softmax_cross_entropy(o, target(start + i), mean, &mut grads.b_q);
        }
        let dO = Mat::row_major(O, r, v);
        matmul(&mut grads.W_hq, X.t(), dO, start > 0);
        matmul(&mut dX[start * h..(start + r) * h], dO, p.W_hq.t(), false);
    }
    if tn == 0 {
        grads.W_hq.fill(T::ZERO);
    }
    pool.give(O);
    Decoded { logits, losses, dX }
}

widest! {
    /// `o += b`.
    fn add_row(o: &mut [T], b: &[T]) {
        o.iter_mut().zip(b).for_each(|(o, &b)| *o += b);
    }
}

widest! {
    /// One row's cross-entropy `log sum exp(o) - o_y`, returned, and its gradient times
    /// `mean` (the loss is the mean over tokens), `(softmax(o) - onehot(y)) * mean`,
    /// written over the logits `o` and added to `db` (`b_q`'s gradient, the column sums of
    /// `dO`) while the row is in cache: a pass of its own over the block read 14 MB
    /// (PTB) back from memory, 2.7% of the step.
    fn softmax_cross_entropy(o: &mut [T], y: usize, mean: T, db: &mut [T]) -> T {
        let max = lanes(o, o[0], T::max_of);
        let o_y = o[y] - max;
        o.iter_mut().for_each(|o| *o = (*o - max).exp());
        let sum = lanes(o, T::ZERO, |a, b| a + b);
        let scale = mean * sum.recip();
        o.iter_mut().for_each(|o| *o = *o * scale);
        o[y] = o[y] - mean;
        db.iter_mut().zip(&*o).for_each(|(d, &o)| *d += o);
        sum.ln() - o_y
    }
}
