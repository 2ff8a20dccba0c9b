//! The AVX-512 input, output and output-gradient transforms: 16 tiles per block of vectors,
//! the same additions and subtractions in the same order as the portable loops (so
//! bit-identical results).
//!
//! Why: the portable loops run blocks of 8 tiles along one tile row (16-lane arrays made LLVM
//! spill the 4×4 blocks), so maps of 16×16 and smaller filled 8, 4 or 2 lanes of a block.
//! Here a block is 16 consecutive tiles of a channel's band in `V`'s order, spanning tile rows
//! and images: all `imgs` planes of a channel are padded side by side, and each input vector
//! of a block is gathered by one masked load per tile-row run it covers (each output vector
//! scattered by one masked store per run).

use super::*;
use std::arch::x86_64::*;

/// Tiles per block, the lanes of a vector.
const BLOCK: usize = 16;

/// Lanes of a block that come from one tile row: lane `l` of `mask` reads padded value
/// `off + l` (plus the offset of the tap's row and column within the plane).
struct Run {
    mask: __mmask16,
    off: isize,
}

/// Lanes `lo..hi` as a mask.
fn lanes(lo: usize, hi: usize) -> __mmask16 {
    ((1u32 << hi) - (1u32 << lo)) as __mmask16
}

/// The runs of each block of 16 tiles of a band (tile rows `rows` of `imgs` images,
/// `tw` tiles per tile row), the same for every channel: block `b`'s are
/// `runs[starts[b]..starts[b + 1]]`. Image `i`'s padded plane starts at `i·plane`, and
/// the runs point at padded row `2ty` (of `row` values), column `tx` of their first tile.
fn block_runs(
    imgs: usize,
    rows: (usize, usize),
    tw: usize,
    plane: usize,
    row: usize,
) -> (Vec<Run>, Vec<usize>) {
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let mut runs = Vec::new();
    let mut starts = vec![0];
    for t0 in (0..t_len).step_by(BLOCK) {
        let n = BLOCK.min(t_len - t0);
        let mut l = 0;
        while l < n {
            let (r, tx) = ((t0 + l) / tw, (t0 + l) % tw);
            let len = (tw - tx).min(n - l);
            let ty = rows.0 + r % band;
            let first = (r / band) * plane + 2 * ty * row + tx;
            runs.push(Run {
                mask: lanes(l, l + len),
                off: first as isize - l as isize,
            });
            l += len;
        }
        starts.push(runs.len());
    }
    (runs, starts)
}

/// [`deinterleave`] in masked vectors: `even[k] = row[2k]`, `odd[k] = row[2k + 1]`, 32 values
/// of `row` at a time. Why: the portable loop vectorised only whole runs of 16 values and left
/// the rest scalar (a 28-value MNIST row: 12 of them), and those stores were ≈ 15 % of the
/// input transform's samples (`perf annotate`, width 16, 28×28). Same values moved: the
/// transforms stay bit-identical to the portable ones.
#[target_feature(enable = "avx512f")]
fn deinterleave_avx512(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let len = row.len();
    let (even, odd) = (&mut even[..len.div_ceil(2)], &mut odd[..len / 2]);
    let pick_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let pick_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for i in (0..len).step_by(2 * BLOCK) {
        let n = (2 * BLOCK).min(len - i);
        let src = row[i..].as_ptr();
        // SAFETY: the masked lanes are row[i..i + n], inside `row`; even[i/2..][..⌈n/2⌉] and
        // odd[i/2..][..⌊n/2⌋] lie inside the slices cut above. Masked-off lanes are not
        // accessed (pointers past the slices are formed with wrapping arithmetic).
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lanes(0, n.min(BLOCK)), src);
            let hi =
                _mm512_maskz_loadu_ps(lanes(0, n.saturating_sub(BLOCK)), src.wrapping_add(BLOCK));
            let e = _mm512_permutex2var_ps(lo, pick_even, hi);
            let o = _mm512_permutex2var_ps(lo, pick_odd, hi);
            let dst_e = even.as_mut_ptr().wrapping_add(i / 2);
            let dst_o = odd.as_mut_ptr().wrapping_add(i / 2);
            _mm512_mask_storeu_ps(dst_e, lanes(0, n.div_ceil(2)), e);
            _mm512_mask_storeu_ps(dst_o, lanes(0, n / 2), o);
        }
    }
}

/// [`interleave`] in masked vectors (the inverse of [`deinterleave_avx512`]):
/// `row[2k] = even[k]`, `row[2k + 1] = odd[k]`, 32 values of `row` at a time.
#[target_feature(enable = "avx512f")]
fn interleave_avx512(even: &[f32], odd: &[f32], row: &mut [f32]) {
    let len = row.len();
    let (even, odd) = (&even[..len.div_ceil(2)], &odd[..len / 2]);
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for i in (0..len).step_by(2 * BLOCK) {
        let n = (2 * BLOCK).min(len - i);
        let dst = row[i..].as_mut_ptr();
        // SAFETY: as in `deinterleave_avx512`, with the roles of the slices exchanged.
        unsafe {
            let e =
                _mm512_maskz_loadu_ps(lanes(0, n.div_ceil(2)), even.as_ptr().wrapping_add(i / 2));
            let o = _mm512_maskz_loadu_ps(lanes(0, n / 2), odd.as_ptr().wrapping_add(i / 2));
            _mm512_mask_storeu_ps(
                dst,
                lanes(0, n.min(BLOCK)),
                _mm512_permutex2var_ps(e, first, o),
            );
            _mm512_mask_storeu_ps(
                dst.wrapping_add(BLOCK),
                lanes(0, n.saturating_sub(BLOCK)),
                _mm512_permutex2var_ps(e, second, o),
            );
        }
    }
}

/// [`transform_input`] (same arguments, `v` written only inside each matrix's `C·T`
/// values).
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_input(
    g: &Geometry,
    x_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    v: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    let (c_n, h, w) = (g.c, g.h, g.w);
    let tw = w.div_ceil(2);
    let half = padded_tiles(tw) + 1;
    let plane = plane_scratch(g);
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    // Image `i`'s padded plane at `i·plane`, laid out as the portable version's; only the
    // interiors are ever written, the borders stay zero.
    let pad = &mut pad[..imgs * plane];
    pad.fill(0.0);
    assert!(
        rows.1 <= h.div_ceil(2) && v.len() >= (POSITIONS - 1) * stride + c_n * t_len,
        "winograd: input transform out of bounds"
    );
    let (runs, starts) = block_runs(imgs, rows, tw, plane, 2 * half);
    let (y0, y1) = ((2 * rows.0).saturating_sub(1), (2 * rows.1 + 1).min(h));
    // Where tap column j of a tile reads in a padded row: e[tx], o[tx], e[tx + 1], o[tx + 1].
    let cols = [0, half, 1, half + 1];
    for c in 0..c_n {
        for img in 0..imgs {
            let src = &x_imgs[(img * c_n + c) * h * w..][..h * w];
            let dst = &mut pad[img * plane..][..plane];
            for y in y0..y1 {
                let (e, o) = dst[(y + 1) * 2 * half..][..2 * half].split_at_mut(half);
                deinterleave_avx512(&src[y * w..][..w], o, &mut e[1..]);
            }
        }
        let base = pad.as_ptr();
        for (b, t0) in (0..t_len).step_by(BLOCK).enumerate() {
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for run in &runs[starts[b]..starts[b + 1]] {
                for (k, dk) in d.iter_mut().enumerate() {
                    for (j, dkj) in dk.iter_mut().enumerate() {
                        let at = run.off + (k * 2 * half + cols[j]) as isize;
                        // SAFETY: lane l of the mask is a tile `(image, tile row ty, tile
                        // column tx)` of the band, reading padded row 2ty + k ≤ 2·⌈H/2⌉ + 1
                        // of its image's plane and column ≤ half + tx + 1 ≤ 2·half − 1 of
                        // that row (tx < ⌈W/2⌉ < half), so `at + l` lies inside `pad`;
                        // masked-off lanes are not read (the pointer is formed with
                        // wrapping arithmetic, as it may point before `pad`).
                        *dkj = unsafe {
                            _mm512_mask_loadu_ps(*dkj, run.mask, base.wrapping_offset(at))
                        };
                    }
                }
            }
            let mut cols_t = d;
            for j in 0..4 {
                cols_t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
                cols_t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
                cols_t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
                cols_t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
            }
            let mask = lanes(0, BLOCK.min(t_len - t0));
            for (i, ci) in cols_t.iter().enumerate() {
                let vi = [
                    _mm512_sub_ps(ci[0], ci[2]),
                    _mm512_add_ps(ci[1], ci[2]),
                    _mm512_sub_ps(ci[2], ci[1]),
                    _mm512_sub_ps(ci[1], ci[3]),
                ];
                for (j, value) in vi.into_iter().enumerate() {
                    let at = (4 * i + j) * stride + c * t_len + t0;
                    // SAFETY: the masked lanes are `at..at + min(16, T − t0)`, inside
                    // matrix 4i + j's `C·T` values (t0 < T, checked against `v` above).
                    unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), mask, value) };
                }
            }
        }
    }
}

/// `Aᵀ m` of a 4-vector of vectors, as [`at`].
#[inline]
#[target_feature(enable = "avx512f")]
fn atv(m: [__m512; 4]) -> [__m512; 2] {
    [
        _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]),
        _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]),
    ]
}

/// [`transform_output`] (same arguments, `m` read only inside each matrix's `O·T` values).
/// The tiles' 2×2 outputs are stored into per-image planes in `rows_buf`, each output row
/// split into its even and odd columns (`rw` each, as the output-gradient transform's
/// `pad`), by one masked store per tile-row run, and each row then interleaved into the
/// output.
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output(
    g: &Geometry,
    m: &[f32],
    stride: usize,
    imgs: usize,
    rows: (usize, usize),
    out_imgs: &mut [f32],
    rows_buf: &mut [f32],
) {
    let (o_n, oh, ow) = (g.o, g.oh, g.ow);
    let tw = ow.div_ceil(2);
    let rw = padded_tiles(tw);
    let plane = 2 * oh.div_ceil(2) * 2 * rw;
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let buf = &mut rows_buf[..imgs * plane];
    assert!(
        rows.1 <= oh.div_ceil(2) && m.len() >= (POSITIONS - 1) * stride + o_n * t_len,
        "winograd: output transform out of bounds"
    );
    let (runs, starts) = block_runs(imgs, rows, tw, plane, 2 * rw);
    for oc in 0..o_n {
        let base = buf.as_mut_ptr();
        for (b, t0) in (0..t_len).step_by(BLOCK).enumerate() {
            let mask = lanes(0, BLOCK.min(t_len - t0));
            let mut mv = [[_mm512_setzero_ps(); 4]; 4];
            for (i, mi) in mv.iter_mut().enumerate() {
                for (j, mij) in mi.iter_mut().enumerate() {
                    let at = (4 * i + j) * stride + oc * t_len + t0;
                    // SAFETY: the masked lanes are `at..at + min(16, T − t0)`, inside
                    // matrix 4i + j's `O·T` values (t0 < T, checked against `m` above).
                    *mij = unsafe { _mm512_maskz_loadu_ps(mask, m.as_ptr().add(at)) };
                }
            }
            // Aᵀ over i (per column j), then A over j.
            let s: [[__m512; 2]; 4] =
                std::array::from_fn(|j| atv([mv[0][j], mv[1][j], mv[2][j], mv[3][j]]));
            let y: [[__m512; 2]; 2] =
                std::array::from_fn(|r| atv([s[0][r], s[1][r], s[2][r], s[3][r]]));
            for (r, y) in y.iter().enumerate() {
                for run in &runs[starts[b]..starts[b + 1]] {
                    for (c, &value) in y.iter().enumerate() {
                        let at = run.off + (r * 2 * rw + c * rw) as isize;
                        // SAFETY: lane l of the mask is a tile `(image, tile row ty, tile
                        // column tx)` of the band, writing row 2ty + r < 2·⌈OH/2⌉ of its
                        // image's plane and column ≤ rw + tx < 2·rw of that row
                        // (tx < ⌈OW/2⌉ ≤ rw), so `at + l` lies inside `buf`; masked-off
                        // lanes are not written (the pointer is formed with wrapping
                        // arithmetic, as it may point before `buf`).
                        unsafe { _mm512_mask_storeu_ps(base.wrapping_offset(at), run.mask, value) };
                    }
                }
            }
        }
        for img in 0..imgs {
            let src = &buf[img * plane..][..plane];
            let dst = &mut out_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            for y in 2 * rows.0..(2 * rows.1).min(oh) {
                let (even, odd) = src[y * 2 * rw..][..2 * rw].split_at(rw);
                interleave_avx512(even, odd, &mut dst[y * ow..][..ow]);
            }
        }
    }
}

/// `A y` of a 2-vector of vectors, as [`a2`] (negation by flipping the sign bit, as
/// float negation does).
#[inline]
#[target_feature(enable = "avx512f")]
fn a2v(y0: __m512, y1: __m512) -> [__m512; 4] {
    let sign = _mm512_set1_epi32(i32::MIN);
    let neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(y1), sign));
    [y0, _mm512_add_ps(y0, y1), _mm512_sub_ps(y0, y1), neg]
}

/// [`transform_output_grad`] (same arguments, `d` written only inside each matrix's
/// `O·T` values).
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transform_output_grad(
    g: &Geometry,
    dy_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    d: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    let (o_n, oh, ow) = (g.o, g.oh, g.ow);
    let tw = ow.div_ceil(2);
    let rw = padded_tiles(tw);
    let plane = 2 * oh.div_ceil(2) * 2 * rw;
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    // Image `i`'s plane at `i·plane`, laid out as the portable version's (zero outside
    // the map).
    let pad = &mut pad[..imgs * plane];
    pad.fill(0.0);
    assert!(
        rows.1 <= oh.div_ceil(2) && d.len() >= (POSITIONS - 1) * stride + o_n * t_len,
        "winograd: output-gradient transform out of bounds"
    );
    let (runs, starts) = block_runs(imgs, rows, tw, plane, 2 * rw);
    let (y0, y1) = (2 * rows.0, (2 * rows.1).min(oh));
    for oc in 0..o_n {
        for img in 0..imgs {
            let src = &dy_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            let dst = &mut pad[img * plane..][..plane];
            for y in y0..y1 {
                let (even, odd) = dst[y * 2 * rw..][..2 * rw].split_at_mut(rw);
                deinterleave_avx512(&src[y * ow..][..ow], even, odd);
            }
        }
        let base = pad.as_ptr();
        for (b, t0) in (0..t_len).step_by(BLOCK).enumerate() {
            // dy[r][c]: output row 2ty + r, column 2tx + c.
            let mut dy = [[_mm512_setzero_ps(); 2]; 2];
            for run in &runs[starts[b]..starts[b + 1]] {
                for (r, dyr) in dy.iter_mut().enumerate() {
                    for (c, dyrc) in dyr.iter_mut().enumerate() {
                        let at = run.off + (r * 2 * rw + c * rw) as isize;
                        // SAFETY: lane l of the mask is a tile `(image, tile row ty, tile
                        // column tx)` of the band, reading row 2ty + r < 2·⌈OH/2⌉ of its
                        // image's plane and column ≤ rw + tx < 2·rw of that row
                        // (tx < ⌈OW/2⌉ ≤ rw), so `at + l` lies inside `pad`; masked-off
                        // lanes are not read (the pointer is formed with wrapping
                        // arithmetic, as it may point before `pad`).
                        *dyrc = unsafe {
                            _mm512_mask_loadu_ps(*dyrc, run.mask, base.wrapping_offset(at))
                        };
                    }
                }
            }
            // A over r (per column c), then Aᵀ over c.
            let cols = [a2v(dy[0][0], dy[1][0]), a2v(dy[0][1], dy[1][1])];
            let mask = lanes(0, BLOCK.min(t_len - t0));
            for (i, (c0, c1)) in cols[0].into_iter().zip(cols[1]).enumerate() {
                for (j, value) in a2v(c0, c1).into_iter().enumerate() {
                    let at = (4 * i + j) * stride + oc * t_len + t0;
                    // SAFETY: the masked lanes are `at..at + min(16, T − t0)`, inside
                    // matrix 4i + j's `O·T` values (t0 < T, checked against `d` above).
                    unsafe { _mm512_mask_storeu_ps(d.as_mut_ptr().add(at), mask, value) };
                }
            }
        }
    }
}
