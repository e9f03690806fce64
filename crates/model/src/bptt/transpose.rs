//! Transposing copies of `f32` matrices in 8 x 8 blocks moved through AVX registers: the
//! element loop left the compiler a scalar load and store per element (PTB's `[H, V]`
//! decoder gradient, 2M elements, took 4.2% of a minibatch that way).

/// `out[r * cols + c] = src[c * ld + r]` for `r < rows`, `c < cols` (the row-major copy of
/// the transpose of the `[cols, rows]` matrix in `src`, rows `ld` apart) where `T` is
/// `f32` and the CPU has AVX; `false` (nothing done) elsewhere.
#[cfg(target_arch = "x86_64")]
pub(super) fn transpose<T: 'static>(
    src: &[T],
    ld: usize,
    rows: usize,
    cols: usize,
    out: &mut [T],
) -> bool {
    use std::any::TypeId;
    if TypeId::of::<T>() != TypeId::of::<f32>() || !is_x86_feature_detected!("avx") {
        return false;
    }
    assert_eq!(out.len(), rows * cols, "a [{rows}, {cols}] destination");
    assert!(cols == 0 || rows == 0 || (cols - 1) * ld + rows <= src.len());
    let (src, out) = (src.as_ptr().cast::<f32>(), out.as_mut_ptr().cast::<f32>());
    let (whole_r, whole_c) = (rows / 8 * 8, cols / 8 * 8);
    // SAFETY: `T` is `f32`; the asserts keep every block's rows in bounds; the CPU has AVX.
    unsafe {
        // Tiles of 8 x 8 blocks, whose rows in and out stay in the L1 cache between
        // blocks: a strip of blocks at a time wrote half cache lines far apart.
        const TILE: usize = 64;
        for r1 in (0..whole_r).step_by(TILE) {
            for c1 in (0..whole_c).step_by(TILE) {
                for r0 in (r1..(r1 + TILE).min(whole_r)).step_by(8) {
                    for c0 in (c1..(c1 + TILE).min(whole_c)).step_by(8) {
                        block(src.add(c0 * ld + r0), ld, out.add(r0 * cols + c0), cols);
                    }
                }
            }
        }
        let at = |r: usize, c: usize| *src.add(c * ld + r);
        for r in 0..rows {
            let edge = if r < whole_r { whole_c } else { 0 };
            for c in edge..cols {
                *out.add(r * cols + c) = at(r, c);
            }
        }
    }
    true
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn transpose<T>(_: &[T], _: usize, _: usize, _: usize, _: &mut [T]) -> bool {
    false
}

/// One 8 x 8 block: 8 rows of `src` (`ld` apart) in, their columns as 8 rows of `out`
/// (`ldo` apart).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block(src: *const f32, ld: usize, out: *mut f32, ldo: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller keeps the 8 rows of 8 of both in bounds.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.add(j * ld)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let columns = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (i, column) in columns.into_iter().enumerate() {
            _mm256_storeu_ps(out.add(i * ldo), column);
        }
    }
}
