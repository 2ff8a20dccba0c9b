//! GEMMs with a short inner dimension and a right-hand side of contiguous rows, on AVX-512
//! CPUs: `dst (m×n, row-major) = [dst +] lhs (m×k, any strides) · rhs (k×n, row-major)`,
//! straight from the operands, with no packing. These are the Winograd products `U·V`
//! (`[O × C]·[C × T]`) of the 16- to 64-channel convolutions of the narrow ResNets, and the
//! im2col products of the 1×1 shortcut convolutions.
//!
//! Why: `gemm` copies both operands into panels before its microkernel runs and picks its
//! blocking per call; at `k = 16` that work is not repaid. On a width-16 training step (one
//! thread, 28×28) its packing routine alone was 5.2 % of the samples and its microkernels
//! 26 % (`perf record`), for products whose right-hand side rows are already contiguous and
//! whose left-hand side (the transformed weights, 1–16 KB) stays in L1.
//!
//! The kernel: blocks of [`ROWS`] rows × [`COLS`] columns of `dst` in 16 accumulator
//! registers; for each of the `k` inner steps two (masked) vector loads of the `rhs` row and
//! one broadcast per `lhs` row. Column blocks run outermost, so a `k × 32` panel of `rhs`
//! (2 KB at `k = 16`) is read from L1 by every row block. Each value of `dst` is one fused
//! multiply-add chain over `p = 0..k` in order (then added to `dst` when accumulating), so
//! results differ from `gemm`'s by rounding only.

use std::arch::x86_64::*;

use super::RawProduct;

/// Inner dimensions this kernel takes: up to this many (see [`super::matmul`]).
///
/// Why 32: with this kernel and [`super::row_dots`] for products of up to 64 channels, one
/// thread (`cargo xtask bench ops`, ms forward + backward): 16 → 16 at 32×32 18.5 → 17.6,
/// 32 → 32 at 16×16 10.5 → 9.5, but 64 → 64 at 8×8 7.6 → 7.9, and whole width-32/64 steps
/// 2–3 % slower; up to 32 channels the width-64 step is unchanged (2384–2436 ms against
/// 2392–2427 ms, alternating runs).
pub(crate) const MAX_K: usize = 32;

/// Rows of `dst` per block (one broadcast each per inner step).
const ROWS: usize = 8;

/// Columns of `dst` per block (two vectors).
const COLS: usize = 32;

/// Lanes of a vector.
const LANES: usize = 16;

/// Lanes `0..len` (`len ≤ 16`) as a mask.
fn mask(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// Runs `op` (`rhs` columns contiguous: `b_cs = 1`).
///
/// # Safety
/// AVX-512F must be available; every element `op` addresses must lie inside its slice and
/// `d_rs ≥ n` (checked by [`super::matmul`]).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(op: &RawProduct) {
    let (m, n) = (op.m, op.n);
    for j in (0..n).step_by(COLS) {
        let width = COLS.min(n - j);
        let masks = (mask(width.min(LANES)), mask(width.saturating_sub(LANES)));
        let mut i = 0;
        while i < m {
            let rows = ROWS.min(m - i);
            // SAFETY: rows i..i + rows and columns j..j + width lie inside the operands
            // (the caller's contract); the block reads and writes nothing else.
            unsafe {
                match rows {
                    8 => block::<8>(op, i, j, masks),
                    7 => block::<7>(op, i, j, masks),
                    6 => block::<6>(op, i, j, masks),
                    5 => block::<5>(op, i, j, masks),
                    4 => block::<4>(op, i, j, masks),
                    3 => block::<3>(op, i, j, masks),
                    2 => block::<2>(op, i, j, masks),
                    _ => block::<1>(op, i, j, masks),
                }
            }
            i += rows;
        }
    }
}

/// `R` rows from `i` × the (masked) 32 columns from `j` of `dst`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block<const R: usize>(
    op: &RawProduct,
    i: usize,
    j: usize,
    (m0, m1): (__mmask16, __mmask16),
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // Pointers to masked-off lanes may lie past the slices: formed with wrapping arithmetic,
    // never dereferenced (masked lanes are not accessed).
    let a = op.a.wrapping_add(i * op.a_rs);
    let b = op.b.wrapping_add(j);
    for p in 0..op.k {
        let bp = b.wrapping_add(p * op.b_rs);
        // SAFETY: lanes of `m0`/`m1` are columns j..j + width of `rhs` row p (in bounds).
        let (b0, b1) = unsafe {
            (
                _mm512_maskz_loadu_ps(m0, bp),
                _mm512_maskz_loadu_ps(m1, bp.wrapping_add(LANES)),
            )
        };
        let ap = a.wrapping_add(p * op.a_cs);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: element (i + r, p) of `lhs` (in bounds).
            let av = _mm512_set1_ps(unsafe { *ap.wrapping_add(r * op.a_rs) });
            acc_r[0] = _mm512_fmadd_ps(av, b0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(av, b1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let dr = op.d.wrapping_add((i + r) * op.d_rs + j);
        let dr1 = dr.wrapping_add(LANES);
        let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
        // SAFETY: lanes of `m0`/`m1` are columns j..j + width of `dst` row i + r (in bounds).
        unsafe {
            if op.accumulate {
                v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, dr), v0);
                v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, dr1), v1);
            }
            _mm512_mask_storeu_ps(dr, m0, v0);
            _mm512_mask_storeu_ps(dr1, m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Mat;

    /// The kernel against a float64 triple loop, on shapes with row and column tails, both
    /// strides of the left-hand side, a `dst` wider than `n`, with and without accumulation.
    #[test]
    fn matches_the_reference_product() {
        if !crate::has_avx512() {
            return;
        }
        for &(m, n, k) in &[
            (16, 128, 16),
            (7, 33, 5),
            (1, 1, 1),
            (9, 17, 64),
            (24, 40, 3),
        ] {
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    let value = |s: usize| ((s * 7919 % 211) as f32 - 105.0) / 37.0;
                    let a: Vec<f32> = (0..m * k).map(value).collect();
                    let (a_rs, a_cs) = if transposed { (1, m) } else { (k, 1) };
                    let (b_rs, d_rs) = (n + 3, n + 5);
                    let b: Vec<f32> = (0..k * b_rs).map(|s| value(s + 11)).collect();
                    let start: Vec<f32> = (0..m * d_rs).map(|s| value(s + 29)).collect();
                    let mut d = start.clone();
                    let lhs = Mat {
                        data: &a,
                        rs: a_rs,
                        cs: a_cs,
                    };
                    let rhs = Mat {
                        data: &b,
                        rs: b_rs,
                        cs: 1,
                    };
                    let product = RawProduct::new((m, n, k), &mut d, d_rs, accumulate, lhs, rhs);
                    // SAFETY: AVX-512 checked above; the shapes fit the slices.
                    unsafe { run(&product) };
                    for i in 0..m {
                        for jj in 0..d_rs {
                            let got = d[i * d_rs + jj];
                            if jj >= n {
                                assert_eq!(got, start[i * d_rs + jj], "wrote past n");
                                continue;
                            }
                            let mut want: f64 = (0..k)
                                .map(|p| a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + jj] as f64)
                                .sum();
                            if accumulate {
                                want += start[i * d_rs + jj] as f64;
                            }
                            assert!(
                                (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                                "{m}×{n}×{k} t{transposed} acc{accumulate} ({i}, {jj}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
