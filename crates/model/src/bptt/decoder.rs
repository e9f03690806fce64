//! The decoder and its loss for one worker's rows: `O = X W_hq + b_q`, each row's softmax
//! cross-entropy and its gradient `dO`, then `dW_hq`, `db_q` and `dX = dO W_hq^T`, over
//! blocks of rows so that only one block of logits exists at a time.

use super::pool::Pool;
use super::real::prefetch;
use super::{Grads, Mat, Params, Real, matmul};

/// The most rows per block of the decoder's softmax cross-entropy. Blocks are cut equal
/// (900 rows: two of 450, not 768 + 132). Each block packs `W_hq` twice (its forward and
/// `dO W_hq^T` products), and the `[V, r] x [r, H]` weight gradient runs slower the
/// smaller `r`, so one thread's PTB minibatch (700 rows) is one block of 28 MB: its
/// training on one core, two builds at once one per core, 10 rounds of 40 s, 350-row
/// blocks vs one: 7 of 10 rounds faster, median +5% (0.96-1.15x).
const DECODER_ROWS: usize = 768;

/// Lanes of the softmax's row reductions: one AVX-512 vector of `f32`. With eight the
/// compiler computed the exponentials across the accumulators, 8 at a time (the
/// softmax 5.9% -> 7.6% of PTB's step; 4.3% with 16).
const LANES: usize = 16;

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
        for i in 0..r {
            let (o, next) = O[i * v..].split_at_mut(v);
            let next = &next[..next.len().min(v)];
            let max = add_bias_max(o, p.b_q);
            if let Some(all) = &mut logits {
                all[(start + i) * v..(start + i + 1) * v].copy_from_slice(o);
            }
            let y = target(start + i);
            losses[start + i] = softmax_cross_entropy(o, next, max, y, mean, &mut grads.b_q);
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
    /// `o += b`, and the row's largest logit in the same pass: the row arrives from
    /// memory (the product wrote a block larger than L2), so a pass of its own read it
    /// twice (1.8% of PTB's step). The maximum in `LANES` lanes as `exp_lanes` sums.
    fn add_bias_max(o: &mut [T], b: &[T]) -> T {
        let first = o[0] + b[0];
        let mut acc = [first; LANES];
        let (mut chunks, mut bs) = (o.chunks_exact_mut(LANES), b.chunks_exact(LANES));
        for (chunk, b) in (&mut chunks).zip(&mut bs) {
            for ((a, o), &b) in acc.iter_mut().zip(chunk).zip(b) {
                *o += b;
                *a = a.max_of(*o);
            }
        }
        let rest = chunks.into_remainder().iter_mut().zip(bs.remainder());
        let first = rest.fold(acc[0], |a, (o, &b)| {
            *o += b;
            a.max_of(*o)
        });
        acc[1..].iter().fold(first, |a, &b| a.max_of(b))
    }
}

widest! {
    /// One row's cross-entropy `log sum exp(o) - o_y` given its largest logit `max`,
    /// returned, and its gradient times `mean` (the loss is the mean over tokens),
    /// `(softmax(o) - onehot(y)) * mean`, written over the logits `o` and added to `db`
    /// (`b_q`'s gradient, the column sums of `dO`) while the row is in cache: a pass of
    /// its own over the block read 14 MB (PTB) back from memory. Two passes over the
    /// row: `e^(o - max)` with its sum, then the scaling with `db`'s sum. `next`: the
    /// row after this one, to prefetch.
    fn softmax_cross_entropy(o: &mut [T], next: &[T], max: T, y: usize, mean: T, db: &mut [T]) -> T {
        let o_y = o[y] - max;
        let sum = exp_lanes(o, max, next);
        let scale = mean * sum.recip();
        let db_y = db[y];
        db.iter_mut().zip(o.iter_mut()).for_each(|(d, o)| {
            *o = *o * scale;
            *d += *o;
        });
        // The target's term as `(o_y * scale - mean)` rounds, added to `db` once.
        o[y] = o[y] - mean;
        db[y] = db_y + o[y];
        sum.ln() - o_y
    }
}

/// `o = e^(o - max)` while `next` (the next row) is prefetched, returning the sum of the
/// new values, in `LANES` interleaved lanes and then across them (one accumulator would
/// not vectorise: the compiler keeps a float sum in order).
#[inline(always)]
fn exp_lanes<T: Real>(o: &mut [T], max: T, next: &[T]) -> T {
    let mut acc = [T::ZERO; LANES];
    let mut chunks = o.chunks_exact_mut(LANES);
    for (c, chunk) in (&mut chunks).enumerate() {
        // The next row's lines (one per chunk of `f32`) asked for while this row's
        // exponentials are computed: the bias pass over it waited on memory (PTB's step:
        // `add_bias_max` 1.9% -> 1.0%).
        prefetch(next, c * LANES);
        for (a, o) in acc.iter_mut().zip(chunk) {
            *o = (*o - max).exp();
            *a += *o;
        }
    }
    let first = chunks.into_remainder().iter_mut().fold(acc[0], |a, o| {
        *o = (*o - max).exp();
        a + *o
    });
    acc[1..].iter().fold(first, |a, &b| a + b)
}
