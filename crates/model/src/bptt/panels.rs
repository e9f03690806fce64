//! A matrix kept in panels of columns, as the recurrence multiplies by `W_hh` at every
//! step, and the product by it.

use super::real::{GEMM_COLUMNS, Mat, Real, gemm_into};

/// The columns of a panel of [`Panels`]: the width of the kernel below, three AVX-512
/// vectors of `f32`.
pub const PANEL: usize = 48;

/// A `[rows, cols]` matrix stored as panels of `PANEL` columns, each a row-major
/// `[rows, width]` block, one after another: how the recurrence's `W_hh` is kept for the
/// minibatch. A product reads a panel in place (`gemm` too, without packing it), its
/// rows `PANEL` apart instead of `cols` apart (a new 4 KiB page at every step of the
/// sum). `gemm` on one core, 3 runs each, row-major vs panels of 64 columns: `[32, 384] x
/// [384, 1536]` (the large char model's step) 70-77 vs 84-89 GFLOP/s, with 16 rows (its
/// 2-thread share) 71-95 vs 117-121, PTB's `[20, 200] x [200, 800]` 120-124 vs 133-143.
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

/// `c += a b` for a row-major `c [a.rows, b.cols]`, one product per panel of `b`: by the
/// kernel below where it runs (`f32` on a CPU with AVX-512, whole panels, `a` row-major),
/// else by `gemm`. `from_last`: the panels in reverse order, which changes no value (each
/// writes its own columns of `c`). A recurrence alternates it step by step, so that a
/// step first reads the panels the step before read last, still in cache: the large char
/// model's `W_hh` (2.4 MB) does not fit a core's 2 MB L2, and read in one order every step
/// it missed L2 throughout (`[32, 384] x [384, 1536]` on one core, 40 alternating rounds:
/// median 97 -> 108 GFLOP/s; with 16 rows 109 -> 130).
pub fn matmul_panels<T: Real>(c: &mut [T], a: Mat<T>, b: Panels<T>, from_last: bool) {
    let n = b.cols;
    assert_eq!(
        c.len(),
        a.rows * n,
        "the product's [{}, {n}] destination",
        a.rows
    );
    let rows = a.contiguous();
    let count = n.div_ceil(PANEL);
    for i in 0..count {
        let c0 = PANEL * if from_last { count - 1 - i } else { i };
        let c1 = (c0 + PANEL).min(n);
        let panel = &b.data[c0 * b.rows..c1 * b.rows];
        // `c[c0..]`: the panel's columns of `c`, rows `n` apart.
        let c = &mut c[c0..];
        if kernel::product(c, n, &rows, a.rows, a.cols, panel, c1 - c0) {
            continue;
        }
        gemm_into(c, n, a, Mat::row_major(panel, b.rows, c1 - c0), true);
    }
}

/// Whether the step backward multiplies by `W_hh^T` (`[gh, h]`) in panels, by the kernel
/// below, rather than by `gemm` on the row-major tensor: where `gemm` leaves an edge (its
/// widest kernel covers 64 output columns: `h = 200` leaves 8 to a 1-vector kernel) or
/// the matrix is larger than a core's L2 (2 MiB here; the panels' alternating order
/// reuses what is left of them there). `f32`, one core, medians of 30 alternating rounds,
/// `gemm` vs panels: `h = 128` (50 rows, `k = 512`) 99 vs 89 GFLOP/s, `h = 256` (50 and 25
/// rows) 92 vs 86 and 88 vs 80: `gemm`; `h = 200` (20 and 10 rows) 64 vs 84 and 59 vs
/// 102; `h = 384` (32 and 16 rows, 2.4 MB) 78 vs 92 and 68 vs 87; `h = 512` (50 and 25
/// rows) 83 vs 88 and 65 vs 81; `h = 1024` 86 vs 94: panels.
pub(super) fn backward_in_panels<T>(h: usize, gh: usize) -> bool {
    const L2: usize = 2 << 20;
    !h.is_multiple_of(GEMM_COLUMNS) || gh * h * std::mem::size_of::<T>() > L2
}

/// The recurrent step's product by a panel, in tiles of 8 rows by the panel's 48 columns:
/// 24 vector accumulators, and a step's 32 (or, split over two threads, 16) batch rows
/// are whole tiles, where `gemm`'s 6-row tiles leave a 2-row edge for its slowest
/// kernel. The large char model's step `[32, 384] x [384, 1536]` on one core, `gemm` on
/// panels of 64 columns vs this, 9 runs each: 109-135 vs 113-141 GFLOP/s; its training
/// +5.3% (median of 5 alternating runs). The step backward, `dA_t W_hh^T`, `[32, 1536] x
/// [1536, 384]`: `gemm` on PyTorch's row-major tensor 86, this 93, this with the panels'
/// order alternating 96 GFLOP/s (medians of 40 alternating rounds). The last panel, when
/// narrower, in masked vectors: left to `gemm`, the 32 columns over 2 x 48 of the small
/// char model's step backward (`[50, 512] x [512, 128]`) made the product 13% slower
/// than `gemm` on the whole.
#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::any::TypeId;
    use std::arch::x86_64::*;

    use super::PANEL;

    /// Rows of a tile.
    const ROWS: usize = 8;

    /// `c += a panel` (`c` rows `ldc` apart, `a` `[m, k]` row-major, the panel `[k,
    /// width]`, `width <= PANEL`) where `T` is `f32` and the CPU has AVX-512; `false`
    /// (nothing done) elsewhere.
    pub fn product<T: 'static>(
        c: &mut [T],
        ldc: usize,
        a: &[T],
        m: usize,
        k: usize,
        panel: &[T],
        width: usize,
    ) -> bool {
        if TypeId::of::<T>() != TypeId::of::<f32>() || !is_x86_feature_detected!("avx512f") {
            return false;
        }
        assert!(a.len() == m * k && panel.len() == k * width && (1..=PANEL).contains(&width));
        assert!(m == 0 || (m - 1) * ldc + width <= c.len());
        let (c, a, b) = (
            c.as_mut_ptr().cast::<f32>(),
            a.as_ptr().cast::<f32>(),
            panel.as_ptr().cast::<f32>(),
        );
        // The lanes of the last vector that are columns of the panel (a masked load in
        // the inner loop only where some are not: 1-2% slower than a plain one).
        let last: __mmask16 = match width % 16 {
            0 => 0xffff,
            w => (1 << w) - 1,
        };
        let partial = last != 0xffff;
        let o = Operands {
            k,
            a,
            b,
            ldb: width,
            c,
            ldc,
            last,
        };
        // SAFETY: `T` is `f32`; the asserts keep every row of `a`, `c` and the panel that
        // a tile addresses in bounds (the last vector masked to `width`); the CPU has
        // AVX-512.
        unsafe {
            match (width.div_ceil(16), partial) {
                (1, false) => tiles::<1, false>(m, o),
                (2, false) => tiles::<2, false>(m, o),
                (3, false) => tiles::<3, false>(m, o),
                (1, true) => tiles::<1, true>(m, o),
                (2, true) => tiles::<2, true>(m, o),
                _ => tiles::<3, true>(m, o),
            }
        }
        true
    }

    /// What a tile multiplies: `a` (rows `k` apart) by the panel `b` (rows `ldb` apart) into
    /// `c` (rows `ldc` apart), the last vector's lanes `last`.
    #[derive(Clone, Copy)]
    struct Operands {
        k: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        last: __mmask16,
    }

    impl Operands {
        /// The same from row `r` of `a` and `c` on.
        ///
        /// SAFETY: row `r` is within `a` and `c`.
        #[inline(always)]
        unsafe fn at_row(self, r: usize) -> Self {
            // SAFETY: as the caller promises.
            unsafe {
                Self {
                    a: self.a.add(r * self.k),
                    c: self.c.add(r * self.ldc),
                    ..self
                }
            }
        }
    }

    /// The `m` rows in as few tiles as `ROWS` allows, of equal sizes (10 rows: 5 + 5, not
    /// 8 + 2, whose 6 accumulators wait on their fused multiply-adds' latency), `V`
    /// vectors wide (the last masked if `PARTIAL`).
    #[inline(always)]
    unsafe fn tiles<const V: usize, const PARTIAL: bool>(m: usize, o: Operands) {
        let count = m.div_ceil(ROWS);
        for i in 0..count {
            let (r, end) = (i * m / count, (i + 1) * m / count);
            // SAFETY: as `product`'s; rows `r..end` are within `a` and `c`.
            unsafe {
                let o = o.at_row(r);
                match end - r {
                    1 => tile::<1, V, PARTIAL>(o),
                    2 => tile::<2, V, PARTIAL>(o),
                    3 => tile::<3, V, PARTIAL>(o),
                    4 => tile::<4, V, PARTIAL>(o),
                    5 => tile::<5, V, PARTIAL>(o),
                    6 => tile::<6, V, PARTIAL>(o),
                    7 => tile::<7, V, PARTIAL>(o),
                    _ => tile::<ROWS, V, PARTIAL>(o),
                }
            }
        }
    }

    /// `c[r, j] += sum_l a[r, l] b[l, j]` for `R` rows and `V` vectors of columns, the
    /// last masked if `PARTIAL`, the sum in order of `l`, fused multiply-adds.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize, const PARTIAL: bool>(o: Operands) {
        let Operands {
            k,
            a,
            b,
            ldb,
            c,
            ldc,
            last,
        } = o;
        let masked = |j: usize| PARTIAL && j + 1 == V;
        // SAFETY (every pointer below): within the bounds `product` asserted; masked
        // lanes are neither read nor written.
        let load = |j: usize, p: *const f32| unsafe {
            match masked(j) {
                true => _mm512_maskz_loadu_ps(last, p),
                false => _mm512_loadu_ps(p),
            }
        };
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for (r, acc) in acc.iter_mut().enumerate() {
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = load(j, c.add(r * ldc + 16 * j));
                }
            }
            for l in 0..k {
                let mut row = [_mm512_setzero_ps(); V];
                for (j, row) in row.iter_mut().enumerate() {
                    *row = load(j, b.add(l * ldb + 16 * j));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * k + l));
                    for (acc, &row) in acc.iter_mut().zip(&row) {
                        *acc = _mm512_fmadd_ps(x, row, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (j, &acc) in acc.iter().enumerate() {
                    match masked(j) {
                        true => _mm512_mask_storeu_ps(c.add(r * ldc + 16 * j), last, acc),
                        false => _mm512_storeu_ps(c.add(r * ldc + 16 * j), acc),
                    }
                }
            }
        }
    }
}

/// No kernel of this project's own off x86-64: `gemm` multiplies.
#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    pub fn product<T>(
        _: &mut [T],
        _: usize,
        _: &[T],
        _: usize,
        _: usize,
        _: &[T],
        _: usize,
    ) -> bool {
        false
    }
}
