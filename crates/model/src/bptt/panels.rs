//! A matrix kept in panels of columns, as the recurrence multiplies by `W_hh` at every
//! step, and the product by it.

use super::real::{Mat, Real, gemm_into};

/// The columns of a panel of [`Panels`]: a multiple of the widest microkernel's rows
/// (`gemm`'s 64 for f32 with AVX-512).
pub const PANEL: usize = 64;

/// A `[rows, cols]` matrix stored as panels of `PANEL` columns, each a row-major
/// `[rows, width]` block, one after another: how the recurrence's `W_hh` is kept for the
/// minibatch. `gemm` multiplies by a panel without packing it, and reads its rows
/// `PANEL` apart instead of `cols` apart (a new 4 KiB page at every step of the sum).
/// One core here, 3 runs each, row-major vs panels: `[32, 384] x [384, 1536]` (the large
/// char model's step) 70-77 vs 84-89 GFLOP/s, with 16 rows (its 2-thread share) 71-95
/// vs 117-121, PTB's `[20, 200] x [200, 800]` 120-124 vs 133-143.
#[derive(Clone, Copy)]
pub struct Panels<'a, T> {
    data: &'a [T],
    pub rows: usize,
    pub cols: usize,
}

impl<'a, T: Real> Panels<'a, T> {
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "a [{rows}, {cols}] matrix in panels"
        );
        Self { data, rows, cols }
    }

    /// `m` written into `out` in panels.
    pub fn write(m: Mat<T>, out: &mut [T]) {
        assert_eq!(
            out.len(),
            m.rows * m.cols,
            "a [{}, {}] destination",
            m.rows,
            m.cols
        );
        for c0 in (0..m.cols).step_by(PANEL) {
            let c1 = (c0 + PANEL).min(m.cols);
            m.columns(c0, c1)
                .write_row_major(&mut out[c0 * m.rows..c1 * m.rows]);
        }
    }
}

/// `c += a b` for a row-major `c [a.rows, b.cols]`, one product per panel of `b`.
pub fn matmul_panels<T: Real>(c: &mut [T], a: Mat<T>, b: Panels<T>) {
    let n = b.cols;
    assert_eq!(
        c.len(),
        a.rows * n,
        "the product's [{}, {n}] destination",
        a.rows
    );
    for c0 in (0..n).step_by(PANEL) {
        let c1 = (c0 + PANEL).min(n);
        let panel = Mat::row_major(&b.data[c0 * b.rows..c1 * b.rows], b.rows, c1 - c0);
        // `c[c0..]`: the panel's columns of `c`, rows `n` apart.
        gemm_into(&mut c[c0..], n, a, panel, true);
    }
}
