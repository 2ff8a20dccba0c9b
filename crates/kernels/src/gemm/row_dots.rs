//! GEMMs whose two operands both run contiguously along the inner dimension, on AVX-512
//! CPUs: `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)` with `lhs` row `i` and `rhs`
//! column `j` each `k` contiguous values, i.e. every output is the dot product of two
//! contiguous rows. These are the Winograd weight-gradient products `dY'·Vᵀ`
//! (`[O × T]·[T × C]`, summed over a band of `T` tiles) of the narrow ResNets.
//!
//! Why: `gemm` packs both operands into panels for every call, transposing `Vᵀ` value by
//! value, and a 16 × 16 output is a fraction of one of its 64 × 6 microkernel blocks; its
//! packing was 5.2 % of a width-16 training step's samples (one thread, `perf record`), for
//! operands that are read straight from their rows here.
//!
//! The kernel: blocks of 4 rows × 4 columns of `dst`, 16 accumulator registers of 16-lane
//! partial sums along `k`: per 16 inner steps four `lhs` and four `rhs` vector loads feed 16
//! fused multiply-adds. At the end of the row each block's 16 vectors are reduced into one
//! (a transpose-and-add tree of 15 additions, [`reduce16`]) whose four quarters are the
//! block's four rows of sums. The sums run in another order than `gemm`'s, so results
//! differ by rounding only.

use std::arch::x86_64::*;

use super::RawProduct;

/// Rows and columns of `dst` this kernel takes: up to this many each.
///
/// Why 32: as [`super::short_k::MAX_K`] (measured together): at 64 channels `gemm`'s packed
/// panels pay for themselves.
pub(crate) const MAX_MN: usize = 32;

/// Rows (and columns) of a block.
const BLOCK: usize = 4;

/// Lanes of a vector.
const LANES: usize = 16;

/// Runs `op` (`lhs` rows and `rhs` columns contiguous: `a_cs = b_rs = 1`).
///
/// # Safety
/// AVX-512F and VL must be available; every element `op` addresses must lie inside its slice
/// and `d_rs ≥ n` (checked by [`super::matmul`]).
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn run(op: &RawProduct) {
    for i in (0..op.m).step_by(BLOCK) {
        for j in (0..op.n).step_by(BLOCK) {
            let (rows, cols) = (BLOCK.min(op.m - i), BLOCK.min(op.n - j));
            // SAFETY: rows i..i + rows of `lhs` and `dst`, columns j..j + cols of `rhs` and
            // `dst` lie inside the slices (the caller's contract).
            unsafe { block(op, (i, rows), (j, cols)) };
        }
    }
}

/// The block of `dst` rows `i..i + rows` × columns `j..j + cols` (each at most 4). Rows and
/// columns past the edge repeat the last one (their sums are computed and not stored).
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn block(op: &RawProduct, (i, rows): (usize, usize), (j, cols): (usize, usize)) {
    let a: [*const f32; BLOCK] =
        std::array::from_fn(|r| op.a.wrapping_add((i + r.min(rows - 1)) * op.a_rs));
    let b: [*const f32; BLOCK] =
        std::array::from_fn(|c| op.b.wrapping_add((j + c.min(cols - 1)) * op.b_cs));
    // acc[4c + r]: the partial sums of dst (i + r, j + c); see `reduce16` for why.
    let mut acc = [_mm512_setzero_ps(); 16];
    let mut p = 0;
    while p < op.k {
        let lanes = LANES.min(op.k - p);
        let mask = ((1u32 << lanes) - 1) as __mmask16;
        // SAFETY: lanes p..p + lanes of an `lhs` row that lies inside its slice.
        let av: [__m512; BLOCK] =
            std::array::from_fn(|r| unsafe { _mm512_maskz_loadu_ps(mask, a[r].wrapping_add(p)) });
        // SAFETY: lanes p..p + lanes of an `rhs` column that lies inside its slice.
        let bv: [__m512; BLOCK] =
            std::array::from_fn(|c| unsafe { _mm512_maskz_loadu_ps(mask, b[c].wrapping_add(p)) });
        for c in 0..BLOCK {
            for r in 0..BLOCK {
                acc[4 * c + r] = _mm512_fmadd_ps(av[r], bv[c], acc[4 * c + r]);
            }
        }
        p += LANES;
    }
    let sums = reduce16(acc);
    let quarters = [
        _mm512_extractf32x4_ps::<0>(sums),
        _mm512_extractf32x4_ps::<1>(sums),
        _mm512_extractf32x4_ps::<2>(sums),
        _mm512_extractf32x4_ps::<3>(sums),
    ];
    let store = ((1u32 << cols) - 1) as __mmask8;
    for (r, &quarter) in quarters.iter().enumerate().take(rows) {
        let d = op.d.wrapping_add((i + r) * op.d_rs + j);
        // SAFETY: columns j..j + cols of dst row i + r (inside `dst`).
        unsafe {
            let value = if op.accumulate {
                _mm_add_ps(_mm_maskz_loadu_ps(store, d), quarter)
            } else {
                quarter
            };
            _mm_mask_storeu_ps(d, store, value);
        }
    }
}

/// The lane sums of 16 vectors as one vector: quarter `q` holds the sums of `v[q]`,
/// `v[4 + q]`, `v[8 + q]`, `v[12 + q]` in that order. Four levels, each pairing vectors and
/// adding the two halves of every partial sum after moving them into place (8, 4, 2, then
/// 1 partial per input vector): 128-bit blocks across vectors, then lanes within blocks.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: [__m512; 16]) -> __m512 {
    // Level 1: [x.q0, x.q1, y.q0, y.q1] + [x.q2, x.q3, y.q2, y.q3]: 8 partials of x, then of y.
    let l1 = |x, y| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
        )
    };
    // Level 2: blocks 0, 2 | 0, 2 plus 1, 3 | 1, 3: 4 partials each of x's two and y's two.
    let l2 = |x, y| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    };
    // Level 3: within each block, lanes 0, 1 of x, 0, 1 of y plus lanes 2, 3 of each.
    let l3 = |x, y| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(x, y),
            _mm512_shuffle_ps::<0b11_10_11_10>(x, y),
        )
    };
    // Level 4: lanes 0, 2 of x, 0, 2 of y plus lanes 1, 3 of each.
    let l4 = |x, y| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(x, y),
            _mm512_shuffle_ps::<0b11_01_11_01>(x, y),
        )
    };
    let w: [__m512; 8] = std::array::from_fn(|k| l1(v[2 * k], v[2 * k + 1]));
    let x: [__m512; 4] = std::array::from_fn(|k| l2(w[2 * k], w[2 * k + 1]));
    let y = [l3(x[0], x[1]), l3(x[2], x[3])];
    l4(y[0], y[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Mat;

    /// The lane order `reduce16` documents.
    #[test]
    fn reduce16_puts_each_sum_in_its_lane() {
        if !crate::has_avx512() {
            return;
        }
        let sums: Vec<f32> = (0..16).map(|s| 1000.0 * s as f32).collect();
        // Vector s holds lanes summing to sums[s] (lane l: sums[s]/16 + l − 7.5).
        let vectors: [__m512; 16] = std::array::from_fn(|s| {
            let lanes: [f32; 16] = std::array::from_fn(|l| sums[s] / 16.0 + l as f32 - 7.5);
            // SAFETY: AVX-512 checked above; 16 values.
            unsafe { _mm512_loadu_ps(lanes.as_ptr()) }
        });
        let mut out = [0f32; 16];
        // SAFETY: AVX-512 checked above; 16 values.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), reduce16(vectors)) };
        for q in 0..4 {
            for e in 0..4 {
                assert_eq!(out[4 * q + e], sums[4 * e + q], "lane {}", 4 * q + e);
            }
        }
    }

    /// The kernel against a float64 loop, on shapes with row, column and inner tails, a
    /// `dst` wider than `n`, with and without accumulation.
    #[test]
    fn matches_the_reference_product() {
        if !crate::has_avx512() {
            return;
        }
        for &(m, n, k) in &[
            (16, 16, 128),
            (5, 7, 33),
            (1, 1, 1),
            (4, 9, 16),
            (13, 3, 300),
        ] {
            for accumulate in [false, true] {
                let value = |s: usize| ((s * 7919 % 211) as f32 - 105.0) / 37.0;
                let (a_rs, b_cs, d_rs) = (k + 2, k + 5, n + 3);
                let a: Vec<f32> = (0..m * a_rs).map(value).collect();
                let b: Vec<f32> = (0..n * b_cs).map(|s| value(s + 13)).collect();
                let start: Vec<f32> = (0..m * d_rs).map(|s| value(s + 31)).collect();
                let mut d = start.clone();
                let lhs = Mat {
                    data: &a,
                    rs: a_rs,
                    cs: 1,
                };
                let rhs = Mat {
                    data: &b,
                    rs: 1,
                    cs: b_cs,
                };
                let product = RawProduct::new((m, n, k), &mut d, d_rs, accumulate, lhs, rhs);
                // SAFETY: AVX-512 checked above; the shapes fit the slices.
                unsafe { run(&product) };
                for i in 0..m {
                    for j in 0..d_rs {
                        let got = d[i * d_rs + j];
                        if j >= n {
                            assert_eq!(got, start[i * d_rs + j], "wrote past n");
                            continue;
                        }
                        let mut want: f64 = (0..k)
                            .map(|p| a[i * a_rs + p] as f64 * b[j * b_cs + p] as f64)
                            .sum();
                        if accumulate {
                            want += start[i * d_rs + j] as f64;
                        }
                        assert!(
                            (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                            "{m}×{n}×{k} acc{accumulate} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
