//! `widest!`: a row loop compiled three times, for AVX-512, for AVX2 and for the
//! baseline (SSE2), and run in the widest the CPU has. The kernel's generic code is
//! built for the baseline, so without this its loops run on 4 lanes.

use super::Real;

/// Defines `fn name<T: Real>(args) -> R` from its body, compiled for each width: the
/// same IEEE operations in the same order (Rust never fuses a multiply and an add; a
/// `mul_add` the body asks for, as `f32`'s `exp` and `tanh` do, is one rounding on every
/// width: an instruction where the CPU has FMA, libm's `fmaf` on the baseline), on 16
/// or 8 lanes instead of 4. Slices passed as separate arguments are known not to
/// overlap, so their loops vectorise; whatever the body calls must be `#[inline]` to be
/// compiled at its width.
macro_rules! widest {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name<T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body<T: Real>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512<T: Real>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2<T: Real>($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

widest! {
    /// `sum x^2` in f64, in eight interleaved lanes, then across them: the compiler keeps a
    /// float reduction in order, so one accumulator would not vectorise.
    pub fn sum_of_squares(x: &[T]) -> f64 {
        let mut acc = [0.0; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (a, &x) in acc.iter_mut().zip(chunk) {
                *a += x.to_f64() * x.to_f64();
            }
        }
        let rest: f64 = rest.iter().map(|&x| x.to_f64() * x.to_f64()).sum();
        acc.iter().sum::<f64>() + rest
    }
}

widest! {
    /// `a += b`, element by element.
    pub(super) fn add_into(a: &mut [T], b: &[T]) {
        a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
    }
}

widest! {
    /// `a *= b`, element by element.
    pub(super) fn mul_into(a: &mut [T], b: &[T]) {
        a.iter_mut().zip(b).for_each(|(a, &b)| *a = *a * b);
    }
}

widest! {
    /// `out = a + b`, element by element.
    pub(super) fn sum_into(out: &mut [T], a: &[T], b: &[T]) {
        out.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = a + b);
    }
}
