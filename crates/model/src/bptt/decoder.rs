//! The decoder and its loss for one worker's rows: `O = X W_hq + b_q`, each row's softmax
//! cross-entropy and its gradient `dO` written over `O`, `db_q` and `dX = dO W_hq^T`, over
//! blocks of rows; then, once every worker is done, `dW_hq = X^T dO` over all workers'
//! rows in blocks of columns across the threads (`weight_grad`).

use rayon::prelude::*;

use super::pool::Pool;
use super::real::{GEMM_COLUMNS, column_blocks, gemm_into, prefetch};
use super::{Grads, Mat, Params, Real, matmul};

/// The most rows per block of the decoder's forward and `dO W_hq^T` products. Blocks are
/// cut equal (900 rows: two of 450, not 768 + 132). Each block packs `W_hq` twice, so one
/// thread's PTB minibatch (700 rows) is one block: its training on one core, two builds
/// at once one per core, 10 rounds of 40 s, 350-row blocks vs one: 7 of 10 rounds
/// faster, median +5% (0.96-1.15x).
const DECODER_ROWS: usize = 768;

/// Lanes of the softmax's row reductions: one AVX-512 vector of `f32`. With eight the
/// compiler computed the exponentials across the accumulators, 8 at a time (the
/// softmax 5.9% -> 7.6% of PTB's step; 4.3% with 16).
const LANES: usize = 16;

/// The rows of `dO` and the columns of `dX` that `edge_dots` multiplies at once: 16 vector
/// accumulators, each chunk of a `W_hq` row read once for four rows. (3 x 8 spilled
/// accumulators to the stack: 2.0% of PTB's step where 4 x 4 takes 1.2-1.4%.)
const EDGE_ROWS: usize = 4;
const EDGE_COLS: usize = 4;

/// The columns of `dX` left after `gemm`'s widest kernel, where they are few enough
/// (`h = 200`: 8 of them) that `gemm` hands them to its one-vector kernel (3.3% of PTB's
/// step for 4% of `dX`'s products): computed by `edge_dots` while the rows of `dO` are in
/// cache, that kernel's share 3.3% -> 0.5%, `edge_dots` 1.2%. Only where `edge_dots`
/// has its AVX-512 kernel, and in `f64` (the tests' type, checked against the autodiff
/// engine to 1e-12) through `dot`: vectorised dots cost more than `gemm`'s edge (PTB's
/// step, `f32` forced that way: 5.0% against 3.3%), so other `f32` builds keep `gemm`.
fn dx_edge<T: 'static>(h: usize) -> usize {
    use std::any::TypeId;
    let by_rows = edge_kernel::<T>() || TypeId::of::<T>() == TypeId::of::<f64>();
    match h % GEMM_COLUMNS {
        e if by_rows && e <= 16 => e,
        _ => 0,
    }
}

/// Whether `edge_dots` runs in AVX-512 registers: `f32` on a CPU that has them.
fn edge_kernel<T: 'static>() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        return std::arch::is_x86_feature_detected!("avx512f");
    }
    false
}

pub(super) struct Decoded<T> {
    /// `O`, `[rows, V]`, when asked for.
    pub logits: Option<Vec<T>>,
    /// Each row's cross-entropy.
    pub losses: Vec<T>,
    /// The gradient reaching the decoder's input, `[rows, H]` (a buffer from the pool).
    pub dX: Vec<T>,
}

/// `X` is `[rows, H]`, `target(r)` row `r`'s next token, `mean` the factor of each row's
/// loss in the minibatch's; `O` (`[rows, V]`) receives `dO`, `grads.b_q` its column sums.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode<T: Real>(
    p: &Params<T>,
    X: &[T],
    target: impl Fn(usize) -> usize,
    mean: T,
    keep_logits: bool,
    O: &mut [T],
    grads: &mut Grads<T>,
    pool: &mut Pool<T>,
) -> Decoded<T> {
    let (v, h) = (p.W_hq.cols, p.W_hq.rows);
    let tn = X.len() / h.max(1);
    assert_eq!(O.len(), tn * v, "dO is [rows, V]");
    // O = X W_hq + b_q, softmax cross-entropy, and dO of the mean in the same buffer, kept
    // for `weight_grad`: the one `[T*B, V]` buffer of the minibatch across the workers.
    let mut logits = keep_logits.then(|| vec![T::ZERO; tn * v]);
    let mut losses = vec![T::ZERO; tn];
    let mut dX = pool.any(tn * h);
    let rows = tn.div_ceil(tn.div_ceil(DECODER_ROWS).max(1));
    // `W_hq`'s last `edge` rows, `[_, V]` row-major, zero rows up to whole groups.
    let edge = dx_edge::<T>(h);
    let main = h - edge;
    let W_edge = (edge > 0).then(|| {
        let mut w = pool.zeros(edge.next_multiple_of(EDGE_COLS) * v);
        (p.W_hq.t().columns(main, h).t()).write_row_major(&mut w[..edge * v]);
        w
    });
    for start in (0..tn).step_by(rows.max(1)) {
        let r = rows.min(tn - start);
        let (O, X) = (
            &mut O[start * v..(start + r) * v],
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
            if let Some(w) = &W_edge
                && (i + 1 == r || (i + 1) % EDGE_ROWS == 0)
            {
                let first = i - i % EDGE_ROWS;
                let dX = &mut dX[(start + first) * h..(start + i + 1) * h];
                edge_columns(&O[first * v..(i + 1) * v], w, edge, h, &mut dX[main..]);
            }
        }
        let dO = Mat::row_major(O, r, v);
        let dX = &mut dX[start * h..(start + r) * h];
        gemm_into(dX, h, dO, p.W_hq.t().columns(0, main), false);
    }
    if let Some(w) = W_edge {
        pool.give(w);
    }
    Decoded { logits, losses, dX }
}

/// `dW = sum_c X_c^T dO_c` (`[H, V]`) over the workers' decoder inputs `X_c` (`[rows, H]`)
/// and `dO_c` (`[rows, V]`), in blocks of columns, one per thread: each thread packs its
/// columns of every `dO_c` once, and no worker's `[H, V]` gradient is summed after (8 MB
/// for PTB: the sums after the workers took 0.82 ms of a 47.3 ms two-thread step with
/// it, 0.36 ms without).
pub(super) fn weight_grad<T: Real>(dW: &mut [T], parts: &[(Mat<T>, Mat<T>)], threads: usize) {
    let Some(&(_, first)) = parts.first() else {
        return;
    };
    let v = first.cols;
    // Bounds on whole `gemm` kernel widths, so that only the last block has an edge.
    let blocks = threads.clamp(1, v.div_ceil(GEMM_COLUMNS).max(1));
    let bounds: Vec<usize> = (0..=blocks)
        .map(|i| (i * v / blocks).next_multiple_of(GEMM_COLUMNS).min(v))
        .collect();
    column_blocks(dW, v, &bounds)
        .into_par_iter()
        .for_each(|mut block| {
            let cols = block.cols.clone();
            for (c, (X, dO)) in parts.iter().enumerate() {
                block.matmul(X.t(), dO.columns(cols.start, cols.end), c > 0);
            }
        });
}

/// Columns `main..h` of `dX = dO W_hq^T` for up to `EDGE_ROWS` rows of `dO` (`[_, V]`):
/// `w` holds those columns' rows of `W_hq`, `[_, V]`, padded with zero rows to a multiple
/// of `EDGE_COLS`; `dX` starts at the first row's column `main`, rows `h` apart.
fn edge_columns<T: Real>(dO: &[T], w: &[T], edge: usize, h: usize, dX: &mut [T]) {
    let v = w.len() / edge.next_multiple_of(EDGE_COLS);
    let row = |r: usize| &dO[(r * v).min(dO.len() - v)..][..v];
    let mut out = [T::ZERO; EDGE_ROWS * EDGE_COLS];
    for (g, w) in w.chunks_exact(EDGE_COLS * v).enumerate() {
        // Missing rows repeat the last one; their sums are not written.
        edge_dots(std::array::from_fn(row), w, &mut out);
        for (r, x) in dX.chunks_mut(h).enumerate() {
            let cols = (g * EDGE_COLS..edge.min((g + 1) * EDGE_COLS)).take(x.len());
            for (j, c) in cols.enumerate() {
                x[c] = out[r * EDGE_COLS + j];
            }
        }
    }
}

/// `out[r * EDGE_COLS + j] = sum_k o_r[k] w_j[k]` for the rows `o_r` and the rows of `w`
/// (`[EDGE_COLS, len]`), `f32` on AVX-512 in vector registers; elsewhere (`f64`, other
/// CPUs) one sum at a time.
fn edge_dots<T: Real>(o: [&[T]; EDGE_ROWS], w: &[T], out: &mut [T; EDGE_ROWS * EDGE_COLS]) {
    let len = o[0].len();
    assert!(o.iter().all(|o| o.len() == len) && w.len() == EDGE_COLS * len);
    #[cfg(target_arch = "x86_64")]
    if edge_kernel::<T>() {
        let f = |x: &[T]| x.as_ptr().cast::<f32>();
        let out = (out as *mut [T; EDGE_ROWS * EDGE_COLS]).cast::<[f32; EDGE_ROWS * EDGE_COLS]>();
        // SAFETY: `T` is `f32`; the assert above bounds every row read; the CPU has AVX-512.
        unsafe { edge_dots_avx512(o.map(f), f(w), len, &mut *out) };
        return;
    }
    for (r, o) in o.iter().enumerate() {
        for (j, w) in w.chunks_exact(len).enumerate() {
            out[r * EDGE_COLS + j] = dot(o, w);
        }
    }
}

widest! {
    /// `sum_k o[k] w[k]` in `LANES` interleaved lanes, then across them: `edge_dots`
    /// where its AVX-512 kernel does not apply, vectorised (an `f32` build without
    /// AVX-512 must not fall to scalar code where `gemm`'s edge kernel was vectors).
    fn dot(o: &[T], w: &[T]) -> T {
        let mut acc = [T::ZERO; LANES];
        let (os, ws) = (o.chunks_exact(LANES), w.chunks_exact(LANES));
        let rest = (os.remainder().iter().zip(ws.remainder())).fold(T::ZERO, |a, (&o, &w)| a + o * w);
        for (o, w) in os.zip(ws) {
            for ((a, &o), &w) in acc.iter_mut().zip(o).zip(w) {
                *a += o * w;
            }
        }
        acc.iter().fold(rest, |a, &b| a + b)
    }
}

/// `edge_dots` for `f32` in AVX-512 registers, the last chunk masked.
///
/// SAFETY: the rows `o` hold `len` values and `w` `EDGE_COLS * len`; the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn edge_dots_avx512(
    o: [*const f32; EDGE_ROWS],
    w: *const f32,
    len: usize,
    out: &mut [f32; EDGE_ROWS * EDGE_COLS],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); EDGE_ROWS]; EDGE_COLS];
    let mut k = 0;
    while k < len {
        let mask: __mmask16 = if len - k >= 16 {
            0xffff
        } else {
            (1 << (len - k)) - 1
        };
        // SAFETY: lanes past `len` are masked off; the rest are in bounds.
        unsafe {
            let a = o.map(|o| _mm512_maskz_loadu_ps(mask, o.add(k)));
            for (j, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_maskz_loadu_ps(mask, w.add(j * len + k));
                for (acc, &a) in acc.iter_mut().zip(&a) {
                    *acc = _mm512_fmadd_ps(a, b, *acc);
                }
            }
        }
        k += 16;
    }
    for (j, acc) in acc.iter().enumerate() {
        for (r, &acc) in acc.iter().enumerate() {
            out[r * EDGE_COLS + j] = _mm512_reduce_add_ps(acc);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_dots_in_f32_equal_the_sums_in_f64() {
        // Lengths of whole 16-lane chunks and with a masked last chunk; values that do not
        // cancel, so f32 sums of up to 1,000 products are within 1e-5 of the exact ones.
        for len in [16, 37, 1000] {
            let value = |i: usize| ((i * 7919 % 1013) as f32 / 1013.0) + 0.1;
            let o: Vec<Vec<f32>> = (0..EDGE_ROWS)
                .map(|r| (0..len).map(|k| value(r * len + k)).collect())
                .collect();
            let w: Vec<f32> = (0..EDGE_COLS * len).map(|i| value(i + 5000)).collect();
            let mut out = [0.0f32; EDGE_ROWS * EDGE_COLS];
            edge_dots(std::array::from_fn(|r| &o[r][..]), &w, &mut out);
            for r in 0..EDGE_ROWS {
                for j in 0..EDGE_COLS {
                    let exact: f64 = (0..len)
                        .map(|k| f64::from(o[r][k]) * f64::from(w[j * len + k]))
                        .sum();
                    let got = f64::from(out[r * EDGE_COLS + j]);
                    assert!(
                        (got - exact).abs() <= 1e-5 * exact,
                        "{len}: {got} vs {exact}"
                    );
                }
            }
        }
    }
}
