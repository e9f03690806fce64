//! The element types the host kernel runs in, and a strided matrix view over host memory.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

use super::pool::{Kind, Pool, PoolKey};

/// `f32` or `f64`: what the kernel needs of a number.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    /// This thread's `kind` buffer pool for the type (`pool.rs`).
    fn pool(kind: Kind) -> PoolKey<Self>;
    /// `1 / (1 + e^-x)` as `(1 + tanh(x / 2)) / 2`, the autodiff engine's formula.
    fn sigmoid(self) -> Self {
        Self::from_f64(0.5) * (self * Self::from_f64(0.5)).tanh() + Self::from_f64(0.5)
    }
    fn recip(self) -> Self {
        Self::ONE / self
    }
    fn max_of(self, other: Self) -> Self {
        if other > self { other } else { self }
    }
    fn min_of(self, other: Self) -> Self {
        if other < self { other } else { self }
    }
    /// `relu`.
    fn max0(self) -> Self {
        if self > Self::ZERO { self } else { Self::ZERO }
    }
}

/// What `f32` and `f64` share: constants, conversions, `ln`.
macro_rules! real_common {
    ($t:ty) => {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        fn from_f64(v: f64) -> Self {
            v as $t
        }
        fn to_f64(self) -> f64 {
            self as f64
        }
        fn ln(self) -> Self {
            <$t>::ln(self)
        }
        fn sqrt(self) -> Self {
            <$t>::sqrt(self)
        }
        fn pool(kind: Kind) -> PoolKey<Self> {
            thread_local! {
                static WORK: RefCell<Pool<$t>> = RefCell::default();
                static GRADS: RefCell<Pool<$t>> = RefCell::default();
            }
            match kind {
                Kind::Work => &WORK,
                Kind::Grads => &GRADS,
            }
        }
    };
}

impl Real for f32 {
    real_common!(f32);
    /// Eigen's rational approximation (as in its `ptanh_float`): within 7 ulp of the exact
    /// value and, unlike libm's `tanhf`, vectorised by the compiler (10x faster here).
    /// Straight-line arithmetic, no branch or select, so the loops that call it vectorise;
    /// below 4e-4, where Eigen returns `x`, it is within 2 ulp of `x` anyway. Its Horner
    /// steps, and `exp`'s, are fused multiply-adds: one instruction each in `widest!`'s
    /// AVX2 and AVX-512 builds where a multiply and an add were two (PTB's step on one
    /// core: the softmax 4.7% -> 3.4%, the LSTM's forward rows 1.2% -> 0.8%).
    #[inline]
    #[allow(clippy::excessive_precision)]
    fn tanh(self) -> Self {
        let x = self.clamp(-9.0, 9.0);
        let x2 = x * x;
        let p = -2.76076847742355e-16_f32;
        let p = p.mul_add(x2, 2.00018790482477e-13);
        let p = p.mul_add(x2, -8.60467152213735e-11);
        let p = p.mul_add(x2, 5.12229709037114e-08);
        let p = p.mul_add(x2, 1.48572235717979e-05);
        let p = p.mul_add(x2, 6.37261928875436e-04);
        let p = p.mul_add(x2, 4.89352455891786e-03);
        let q = 1.19825839466702e-06_f32;
        let q = q.mul_add(x2, 1.18534705686654e-04);
        let q = q.mul_add(x2, 2.26843463243900e-03);
        let q = q.mul_add(x2, 4.89352518554385e-03);
        x * (p / q)
    }

    /// Cephes' `expf`: `e^x = 2^n e^r` with `|r| <= ln(2) / 2` and a degree-5 polynomial
    /// for `e^r`, within 2 ulp for `x` in [-87, 88] (below, `e^-87`: nothing beside a softmax's
    /// largest term);
    /// vectorised, unlike libm's `expf`, and the softmax over a 10,000-word vocabulary
    /// calls it for every logit.
    #[inline]
    #[allow(clippy::excessive_precision)]
    fn exp(self) -> Self {
        let x = self.clamp(-87.0, 88.0);
        // n = round(x / ln 2), by the 1.5 * 2^23 trick (no libm call, no branch).
        let magic = 12_582_912.0_f32;
        let t = x.mul_add(std::f32::consts::LOG2_E, magic);
        let n = t - magic;
        let r = n.mul_add(-0.693_359_375, x);
        let r = n.mul_add(2.121_944_4e-4, r);
        let p = 1.987_569_15e-4_f32;
        let p = p.mul_add(r, 1.398_199_95e-3);
        let p = p.mul_add(r, 8.333_451_9e-3);
        let p = p.mul_add(r, 4.166_579_6e-2);
        let p = p.mul_add(r, 1.666_666_5e-1);
        let p = p.mul_add(r, 5.000_000_1e-1);
        let e_r = (p * r).mul_add(r, r) + 1.0;
        // 2^n from the bits of `t = 1.5 * 2^23 + n`, whose low bits hold n: integer
        // arithmetic that vectorises, where a float-to-int cast would not.
        let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
        e_r * scale
    }
}

impl Real for f64 {
    real_common!(f64);
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

/// A read-only `[rows, cols]` matrix in host memory; element `(r, c)` at `r * rs + c * cs`,
/// so a transpose is a view, not a copy.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: Real> Mat<'a, T> {
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a [{rows}, {cols}] matrix");
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `c0..c1`, as a view.
    pub fn columns(self, c0: usize, c1: usize) -> Self {
        assert!(
            c0 <= c1 && c1 <= self.cols,
            "columns {c0}..{c1} of {}",
            self.cols
        );
        Self {
            data: &self.data[(c0 * self.cs).min(self.data.len())..],
            cols: c1 - c0,
            ..self
        }
    }

    /// Asks for the view's cache lines in L2, one request per line along its contiguous
    /// direction (nothing for a view contiguous in neither): a strided read of many rows,
    /// which the hardware's prefetchers do not follow, asked for ahead of its use.
    pub fn prefetch(&self) {
        let (outer, inner, step) = match (self.rs, self.cs) {
            (1, cs) => (self.cols, self.rows, cs),
            (rs, 1) => (self.rows, self.cols, rs),
            _ => return,
        };
        let line = (64 / std::mem::size_of::<T>()).max(1);
        for o in 0..outer {
            let last = inner.checked_sub(1).map(|l| o * step + l);
            (0..inner)
                .step_by(line)
                .map(|i| o * step + i)
                .chain(last)
                .for_each(|i| prefetch(self.data, i));
        }
    }

    pub fn at(&self, r: usize, c: usize) -> T {
        self.data[r * self.rs + c * self.cs]
    }

    /// The matrix row-major: borrowed where it already is, else a copy (products read
    /// contiguous rows faster than strided ones).
    pub fn contiguous(&self) -> Cow<'a, [T]> {
        self.contiguous_with(|len| vec![T::ZERO; len])
    }

    /// `contiguous`, a copy going into a buffer of `len` elements from `buffer`.
    pub fn contiguous_with(&self, buffer: impl FnOnce(usize) -> Vec<T>) -> Cow<'a, [T]> {
        if self.cs == 1 && self.rs == self.cols {
            return Cow::Borrowed(&self.data[..self.rows * self.cols]);
        }
        let mut out = buffer(self.rows * self.cols);
        self.write_row_major(&mut out);
        Cow::Owned(out)
    }

    /// The matrix written row-major into `out`.
    pub fn write_row_major(&self, out: &mut [T]) {
        let (rows, cols) = (self.rows, self.cols);
        assert_eq!(out.len(), rows * cols, "a [{rows}, {cols}] destination");
        if self.rs == 1 && super::transpose::transpose(self.data, self.cs, rows, cols, out) {
            return;
        }
        if self.cs == 1 {
            // Rows already contiguous (a range of a row-major matrix's columns: a panel).
            for (r, out) in out.chunks_exact_mut(cols.max(1)).enumerate() {
                out.copy_from_slice(&self.data[r * self.rs..][..cols]);
            }
            return;
        }
        // In 32 x 32 tiles: a transpose read row by row would touch a new cache line for
        // every element. (8 x 8 blocks moved through registers were no faster: the
        // weights do not fit the cache, and the memory traffic is the cost.)
        const TILE: usize = 32;
        for r0 in (0..rows).step_by(TILE) {
            for c0 in (0..cols).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in c0..(c0 + TILE).min(cols) {
                        out[r * cols + c] = self.at(r, c);
                    }
                }
            }
        }
    }

    /// A row-major copy.
    pub fn to_row_major(&self) -> Vec<T> {
        self.contiguous().into_owned()
    }
}

/// `c = a b` (`accumulate`: `c += a b`) for a row-major `c [a.rows, b.cols]`.
pub fn matmul<T: Real>(c: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    assert_eq!(
        c.len(),
        a.rows * b.cols,
        "the product's [{}, {}] destination",
        a.rows,
        b.cols
    );
    gemm_into(c, b.cols, a, b, accumulate);
}

/// Output columns (a row-major `c`'s) of `gemm`'s widest `f32` kernel on AVX-512, 4
/// vectors of 16: a width that is not a multiple leaves the rest to a narrower kernel.
pub(super) const GEMM_COLUMNS: usize = 64;

/// `c = a b` (`accumulate`: `c += a b`) where `c`'s rows are `c_rs` apart.
pub(super) fn gemm_into<T: Real>(c: &mut [T], c_rs: usize, a: Mat<T>, b: Mat<T>, accumulate: bool) {
    let (m, n) = (a.rows, b.cols);
    assert!(
        m == 0 || n == 0 || (n <= c_rs && (m - 1) * c_rs + n <= c.len()),
        "the product's [{m}, {n}] destination"
    );
    // SAFETY: the assert keeps every element of the destination inside `c`.
    unsafe { gemm_raw(c.as_mut_ptr(), c_rs, a, b, accumulate) }
}

/// `gemm_into` through a pointer.
///
/// SAFETY: `c` addresses `[a.rows, b.cols]` elements with rows `c_rs` apart, which no
/// one else reads or writes meanwhile.
unsafe fn gemm_raw<T: Real>(c: *mut T, c_rs: usize, a: Mat<T>, b: Mat<T>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions of a product");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                // SAFETY: row `r` of the destination (the caller's promise).
                unsafe { std::slice::from_raw_parts_mut(c.add(r * c_rs), n) }.fill(T::ZERO);
            }
        }
        return;
    }
    for x in [&a, &b] {
        let last = (x.rows - 1) * x.rs + (x.cols - 1) * x.cs;
        assert!(last < x.data.len(), "a matrix view past its data");
    }
    let s = |v: usize| v as isize;
    // SAFETY: the assert above keeps every element read inside `a` and `b`, the caller
    // every element written. `gemm` (faer's, which Burn's flex backend multiplies with
    // too) computes `dst = alpha dst + beta lhs rhs` with column and row strides,
    // reading `dst` only when asked to.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            s(c_rs),
            accumulate,
            a.data.as_ptr(),
            s(a.cs),
            s(a.rs),
            b.data.as_ptr(),
            s(b.cs),
            s(b.rs),
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Columns `c0..c1` of a row-major matrix, which one thread writes while others write
/// the rest of each row (`column_blocks`).
pub(super) struct ColumnBlock<'a, T> {
    first: *mut T,
    rows: usize,
    rs: usize,
    pub cols: std::ops::Range<usize>,
    _matrix: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a block is the only handle on its elements (`column_blocks` cuts them apart).
unsafe impl<T: Send> Send for ColumnBlock<'_, T> {}

/// The row-major `c` (`[_, cols]`) cut into the column blocks between consecutive
/// `bounds` (ascending, the first 0, the last `cols`).
pub(super) fn column_blocks<'a, T: Real>(
    c: &'a mut [T],
    cols: usize,
    bounds: &[usize],
) -> Vec<ColumnBlock<'a, T>> {
    let (len, rows) = (c.len(), c.len() / cols.max(1));
    assert_eq!(len, rows * cols, "a matrix of {cols} columns");
    assert!(bounds.first() == Some(&0) && bounds.last() == Some(&cols));
    assert!(bounds.is_sorted(), "ascending column bounds");
    let first = c.as_mut_ptr();
    (bounds.windows(2))
        .map(|w| ColumnBlock {
            // SAFETY: `w[0] <= cols`, so at most one past the end of `c`.
            first: unsafe { first.add(w[0].min(len)) },
            rows,
            rs: cols,
            cols: w[0]..w[1],
            _matrix: std::marker::PhantomData,
        })
        .collect()
}

impl<T: Real> ColumnBlock<'_, T> {
    /// `block = a b` (`accumulate`: `block += a b`).
    pub fn matmul(&mut self, a: Mat<T>, b: Mat<T>, accumulate: bool) {
        assert!(
            a.rows == self.rows && b.cols == self.cols.len(),
            "a [{}, {}] block",
            self.rows,
            self.cols.len()
        );
        // SAFETY: the block's elements, which only this handle addresses.
        unsafe { gemm_raw(self.first, self.rs, a, b, accumulate) }
    }
}

/// Asks for the cache line of `x[i]` in L2 (nothing past `x`'s end).
#[inline(always)]
pub(super) fn prefetch<T>(x: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if i < x.len() {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        // SAFETY: a prefetch reads nothing; the address is inside `x`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(x.as_ptr().add(i).cast::<i8>()) };
    }
}
