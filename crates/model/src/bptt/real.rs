//! The element types the host kernel runs in, and a strided matrix view over host memory.

use std::ops::{Add, AddAssign, Div, Mul, Sub};

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
    fn tanh(self) -> Self;
    /// `1 / (1 + e^-x)` as `(1 + tanh(x / 2)) / 2`, the autodiff engine's formula.
    fn sigmoid(self) -> Self {
        Self::from_f64(0.5) * (self * Self::from_f64(0.5)).tanh() + Self::from_f64(0.5)
    }
    fn recip(self) -> Self {
        Self::ONE / self
    }
    /// `relu`.
    fn max0(self) -> Self {
        if self > Self::ZERO { self } else { Self::ZERO }
    }
    /// `C = alpha A B + beta C` (`A [m, k]`, `B [k, n]`, `C [m, n]`) with element strides.
    ///
    /// # Safety
    /// Every element the strides address must lie inside its allocation.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        beta: Self,
        c: (*mut Self, isize, isize),
    );
}

/// What `f32` and `f64` share: constants, conversions, `exp`, `ln`, and the product.
macro_rules! real_common {
    ($t:ty, $gemm:path) => {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        fn from_f64(v: f64) -> Self {
            v as $t
        }
        fn to_f64(self) -> f64 {
            self as f64
        }
        fn exp(self) -> Self {
            <$t>::exp(self)
        }
        fn ln(self) -> Self {
            <$t>::ln(self)
        }
        unsafe fn gemm(
            m: usize,
            k: usize,
            n: usize,
            a: (*const Self, isize, isize),
            b: (*const Self, isize, isize),
            beta: Self,
            c: (*mut Self, isize, isize),
        ) {
            // SAFETY: the caller's contract.
            unsafe {
                $gemm(
                    m, k, n, 1.0, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2,
                )
            }
        }
    };
}

impl Real for f32 {
    real_common!(f32, matrixmultiply::sgemm);
    /// Eigen's rational approximation (as in its `ptanh_float`): within 7 ulp of the exact
    /// value and, unlike libm's `tanhf`, vectorised by the compiler (10x faster here).
    #[allow(clippy::excessive_precision)]
    fn tanh(self) -> Self {
        let x = self.clamp(-9.0, 9.0);
        let x2 = x * x;
        let p = [
            2.00018790482477e-13,
            -8.60467152213735e-11,
            5.12229709037114e-08,
            1.48572235717979e-05,
            6.37261928875436e-04,
            4.89352455891786e-03,
        ]
        .iter()
        .fold(-2.76076847742355e-16_f32, |acc, &c| acc * x2 + c);
        let q = [
            1.18534705686654e-04,
            2.26843463243900e-03,
            4.89352518554385e-03,
        ]
        .iter()
        .fold(1.19825839466702e-06_f32, |acc, &c| acc * x2 + c);
        // Below 4e-4, tanh(x) rounds to x; a select rather than an early return keeps the
        // loop over a whole activation vectorised.
        if self.abs() < 0.0004 { self } else { x * p / q }
    }
}

impl Real for f64 {
    real_common!(f64, matrixmultiply::dgemm);
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

    pub fn at(&self, r: usize, c: usize) -> T {
        self.data[r * self.rs + c * self.cs]
    }

    /// A row-major copy: products read contiguous rows faster than strided ones.
    pub fn to_row_major(&self) -> Vec<T> {
        if self.cs == 1 && self.rs == self.cols {
            return self.data[..self.rows * self.cols].to_vec();
        }
        (0..self.rows)
            .flat_map(|r| (0..self.cols).map(move |c| self.at(r, c)))
            .collect()
    }
}

/// `c = a b` (`accumulate`: `c += a b`) for a row-major `c [a.rows, b.cols]`.
pub fn matmul<T: Real>(c: &mut [T], a: Mat<T>, b: Mat<T>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions of a product");
    assert_eq!(c.len(), m * n, "the product's [{m}, {n}] destination");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::ZERO);
        }
        return;
    }
    for x in [&a, &b] {
        let last = (x.rows - 1) * x.rs + (x.cols - 1) * x.cs;
        assert!(last < x.data.len(), "a matrix view past its data");
    }
    let beta = if accumulate { T::ONE } else { T::ZERO };
    let s = |v: usize| v as isize;
    // SAFETY: the asserts above keep every addressed element inside `a`, `b` and `c`.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            (a.data.as_ptr(), s(a.rs), s(a.cs)),
            (b.data.as_ptr(), s(b.rs), s(b.cs)),
            beta,
            (c.as_mut_ptr(), s(n), 1),
        )
    }
}
