//! Direct convolution for few output channels: stride 1, an odd square kernel with "same"
//! padding (`p = (k − 1)/2`), at most [`MAX_OUT_CHANNELS`] output channels, on AVX-512 CPUs;
//! forward (and through it the input gradient, a forward convolution of `dY`) and weight
//! gradient. In ResNet18 at base width 8 these are the stem (7×7, 1 → 8) and the four 3×3
//! convolutions of the first stage (8 → 8) with their input gradients; at base 16 the stem.
//!
//! Why: im2col + GEMM is the wrong shape there. The GEMMs have 8 rows (the output
//! channels), half of `gemm`'s 16-row microkernel, and im2col copies every input value
//! `k²` times (49 for the stem) into a matrix that is then packed again; on a width-8
//! training step im2col and its copies were 17 % of the samples (`perf`), the 8-row
//! microkernel another 6 %. Here each output vector (16 positions of a row) is accumulated
//! in registers straight from shifted loads of a zero-padded copy of the input planes, and
//! the weight gradient from the same loads against `dY`: no column matrix, no packing.
//!
//! Layout: `x` `[N, C, H, W]`, weight `[O, C, k, k]`, output `[N, O, H, W]` (float32,
//! contiguous). Each thread pads one image at a time into a scratch buffer of `C` planes
//! `(H + 2p) × (W + 2p)`; output rows are cut into segments of 16 positions (the last one
//! masked). The sums run in another order than im2col's GEMM, so results differ by rounding
//! (≈ 1e-6 relative; tested against im2col and candle).

use crate::gemm::Geometry;
use crate::norm::Affine;

/// Output channels this module handles: one or two blocks of 8 (the forward kernel's
/// accumulator block).
///
/// Why 16: at 16 channels and more the 3×3 convolutions take the Winograd kernels, and the
/// only other convolution with few output channels in the paper's ResNets is the stem.
pub const MAX_OUT_CHANNELS: usize = 16;

/// Output channels accumulated together in the forward kernel (one vector register each,
/// times two output rows: 16 accumulators).
const OUT_BLOCK: usize = 8;

/// Positions per vector.
const LANES: usize = 16;

/// Whether [`super::conv`] uses this module for `g`: an AVX-512 CPU, stride 1, an odd square
/// kernel with "same" padding, 1 to [`MAX_OUT_CHANNELS`] output channels, and not a
/// geometry the Winograd kernels take.
pub fn suits(g: &Geometry) -> bool {
    supports(g) && available() && !crate::winograd::suits(g)
}

/// The geometries the kernels compute (whatever the CPU).
fn supports(g: &Geometry) -> bool {
    g.stride == 1
        && g.kh == g.kw
        && g.kh % 2 == 1
        && 2 * g.padding + 1 == g.kh
        && (1..=MAX_OUT_CHANNELS).contains(&g.o)
        && g.c > 0
        && g.oh == g.h
        && g.ow == g.w
}

fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `(row, plane)`: the values per row and per plane of an image's padded planes.
fn padded_dims(g: &Geometry) -> (usize, usize) {
    let row = g.w + 2 * g.padding;
    (row, (g.h + 2 * g.padding) * row)
}

/// Values of one image's padded planes.
fn padded_len(g: &Geometry) -> usize {
    g.c * padded_dims(g).1
}

/// The weights as blocks of [`OUT_BLOCK`] output channels, `[block][C][k][k][OUT_BLOCK]`,
/// zero for the channels past `O` (so a kernel broadcasts 8 consecutive values per tap).
fn block_weights(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let taps = g.c * g.kh * g.kw;
    let blocks = g.o.div_ceil(OUT_BLOCK);
    let mut packed = vec![0f32; blocks * taps * OUT_BLOCK];
    for (oc, kernel) in weight.chunks_exact(taps).enumerate() {
        let (b, j) = (oc / OUT_BLOCK, oc % OUT_BLOCK);
        for (t, &v) in kernel.iter().enumerate() {
            packed[(b * taps + t) * OUT_BLOCK + j] = v;
        }
    }
    packed
}

/// Copies image `x_img` (`[C, H, W]`) into `pad` (`C` planes of `(H + 2p) × (W + 2p)`,
/// zero borders).
fn pad_image(g: &Geometry, x_img: &[f32], pad: &mut [f32]) {
    let (p, w) = (g.padding, g.w);
    let (wp, plane) = padded_dims(g);
    pad.fill(0.0);
    for (c, src) in x_img.chunks_exact(g.h * w).enumerate() {
        for (y, row) in src.chunks_exact(w).enumerate() {
            pad[c * plane + (y + p) * wp + p..][..w].copy_from_slice(row);
        }
    }
}

/// Forward convolution into a new `[N, O, H, W]` buffer; geometries the kernels do not
/// compute here (see [`suits`]) go to [`crate::conv::forward_im2col`].
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_then(g, x, weight, None)
}

/// [`forward`], each image's output passed through `epilogue` right after it is written
/// (see [`crate::conv::forward_then`]).
pub fn forward_then(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    epilogue: Option<Affine<'_>>,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if available() && supports(g) {
        return avx512::forward(g, x, weight, epilogue);
    }
    crate::conv::forward_im2col(g, x, weight, epilogue)
}

/// Weight gradient `[O, C, k, k]`, summed over the batch; geometries the kernels do not
/// compute here go to [`crate::conv::backward_weight_im2col`].
pub fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if available() && supports(g) {
        return avx512::backward_weight(g, x, dy);
    }
    crate::conv::backward_weight_im2col(g, x, dy)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{
        block_weights, pad_image, padded_dims, padded_len, Affine, Geometry, LANES, OUT_BLOCK,
    };
    use crate::{par_map, threads, uninit_vec, with_scratch};

    /// Output channels per block of the weight-gradient kernel, and kernel taps per pass:
    /// 4 × 4 accumulators, 4 `dY` vectors and one input vector stay in registers, two
    /// multiply-adds per load.
    const GRAD_OUT: usize = 4;
    const GRAD_TAPS: usize = 4;

    /// The mask of the first `len` lanes.
    fn mask(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }

    /// Segments `(x0, mask)` of an output row of `w` positions: 16 from `x0`, the last
    /// one masked to what is left.
    fn segments(w: usize) -> impl Iterator<Item = (usize, __mmask16)> {
        (0..w)
            .step_by(LANES)
            .map(move |x0| (x0, mask(LANES.min(w - x0))))
    }

    pub(super) fn forward(
        g: &Geometry,
        x: &[f32],
        weight: &[f32],
        epilogue: Option<Affine<'_>>,
    ) -> Vec<f32> {
        let (chw, ohw) = (g.chw(), g.ohw());
        let out_len = g.n * g.o * ohw;
        if out_len == 0 {
            return Vec::new();
        }
        let packed = block_weights(g, weight);
        // SAFETY: the tasks cover `out` in whole images, and for each image every block of
        // output channels writes every (row, segment) of each of its channels below O.
        let mut out = unsafe { uninit_vec(out_len) };
        let per = g.n.div_ceil(4 * threads()).max(1);
        let tasks: Vec<_> = out
            .chunks_mut(per * g.o * ohw)
            .zip(x.chunks(per * chw))
            .collect();
        par_map(tasks, |(out_t, x_t)| {
            with_scratch(padded_len(g), 0, |pad, _| {
                for (x_img, out_img) in x_t.chunks_exact(chw).zip(out_t.chunks_exact_mut(g.o * ohw))
                {
                    pad_image(g, x_img, pad);
                    // SAFETY: AVX-512F was detected (`available`); the slices have the
                    // geometry's sizes.
                    unsafe { forward_image(g, pad, &packed, out_img) };
                    if let Some(epilogue) = epilogue {
                        epilogue.apply_planes(out_img, ohw);
                    }
                }
            })
        });
        out
    }

    /// One image: `pad` its padded planes, `out` its `[O, H, W]` output.
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_image(g: &Geometry, pad: &[f32], packed: &[f32], out: &mut [f32]) {
        let taps = g.c * g.kh * g.kw;
        for (b, wb) in packed.chunks_exact(taps * OUT_BLOCK).enumerate() {
            let o0 = b * OUT_BLOCK;
            let outs = OUT_BLOCK.min(g.o - o0);
            let mut y = 0;
            while y < g.oh {
                let rows = if y + 1 < g.oh { 2 } else { 1 };
                for (x0, m) in segments(g.ow) {
                    // SAFETY: AVX-512F is enabled here; rows y..y + rows exist.
                    unsafe {
                        if rows == 2 {
                            forward_segment::<2>(g, pad, wb, (y, x0, m), out, o0, outs);
                        } else {
                            forward_segment::<1>(g, pad, wb, (y, x0, m), out, o0, outs);
                        }
                    }
                }
                y += rows;
            }
        }
    }

    /// Rows `y..y + R`, positions `x0..` (lanes of `m`) of the output channels
    /// `o0..o0 + outs` of one block (`wb`, `[C][k][k][OUT_BLOCK]`), into `out` (`[O, H, W]`).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn forward_segment<const R: usize>(
        g: &Geometry,
        pad: &[f32],
        wb: &[f32],
        (y, x0, m): (usize, usize, __mmask16),
        out: &mut [f32],
        o0: usize,
        outs: usize,
    ) {
        let k = g.kh;
        let (wp, plane) = padded_dims(g);
        let mut acc = [[_mm512_setzero_ps(); OUT_BLOCK]; R];
        for c in 0..g.c {
            for ky in 0..k {
                let row = c * plane + (y + ky) * wp + x0;
                for kx in 0..k {
                    let w = &wb[((c * k + ky) * k + kx) * OUT_BLOCK..][..OUT_BLOCK];
                    let mut xv = [_mm512_setzero_ps(); R];
                    for (r, v) in xv.iter_mut().enumerate() {
                        // SAFETY: row y + r + ky < H + 2p and the masked lanes read columns
                        // x0 + kx .. x0 + kx + len ≤ W + 2p of the padded plane.
                        *v = unsafe {
                            _mm512_maskz_loadu_ps(m, pad.as_ptr().add(row + r * wp + kx))
                        };
                    }
                    for (j, &wj) in w.iter().enumerate() {
                        let wv = _mm512_set1_ps(wj);
                        for r in 0..R {
                            acc[r][j] = _mm512_fmadd_ps(xv[r], wv, acc[r][j]);
                        }
                    }
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (j, &v) in acc_r.iter().enumerate().take(outs) {
                let dst = out[((o0 + j) * g.oh + y + r) * g.ow + x0..].as_mut_ptr();
                // SAFETY: lanes of `m` are positions x0.. < OW of row y + r < OH.
                unsafe { _mm512_mask_storeu_ps(dst, m, v) };
            }
        }
    }

    pub(super) fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let (chw, ohw) = (g.chw(), g.ohw());
        let dw_len = g.o * g.c * g.kh * g.kw;
        if g.n == 0 || ohw == 0 {
            return vec![0f32; dw_len];
        }
        // One task per thread, each summing its share of the batch in vector partials
        // (16 lanes per weight), reduced once at the end.
        let per = g.n.div_ceil(threads()).max(1);
        let tasks: Vec<_> = x
            .chunks(per * chw)
            .zip(dy.chunks(per * g.o * ohw))
            .collect();
        let partials = par_map(tasks, |(x_t, dy_t)| {
            let mut sums = vec![0f32; dw_len * LANES];
            with_scratch(padded_len(g), 0, |pad, _| {
                for (x_img, dy_img) in x_t.chunks_exact(chw).zip(dy_t.chunks_exact(g.o * ohw)) {
                    pad_image(g, x_img, pad);
                    // SAFETY: AVX-512F was detected (`available`); the slices have the
                    // geometry's sizes.
                    unsafe { weight_grad_image(g, pad, dy_img, &mut sums) };
                }
            });
            sums
        });
        let mut dw = vec![0f32; dw_len];
        for sums in &partials {
            for (d, lanes) in dw.iter_mut().zip(sums.chunks_exact(LANES)) {
                *d += lanes.iter().sum::<f32>();
            }
        }
        dw
    }

    /// Adds one image's weight gradient, lane by lane, to `sums` (`[O, C, k, k]` × 16 lanes).
    #[target_feature(enable = "avx512f")]
    unsafe fn weight_grad_image(g: &Geometry, pad: &[f32], dy: &[f32], sums: &mut [f32]) {
        let k = g.kh;
        for o0 in (0..g.o).step_by(GRAD_OUT) {
            let outs = GRAD_OUT.min(g.o - o0);
            for c in 0..g.c {
                for ky in 0..k {
                    for kx0 in (0..k).step_by(GRAD_TAPS) {
                        let taps = GRAD_TAPS.min(k - kx0);
                        // SAFETY: AVX-512F is enabled here; the indices are in range.
                        let acc = unsafe { grad_vectors(g, pad, dy, o0, outs, c, ky, kx0, taps) };
                        for (t, acc_t) in acc.iter().enumerate().take(taps) {
                            for (j, &v) in acc_t.iter().enumerate().take(outs) {
                                let at = ((((o0 + j) * g.c + c) * k + ky) * k + kx0 + t) * LANES;
                                let s = sums[at..].as_mut_ptr();
                                // SAFETY: `sums` holds 16 lanes for every weight.
                                unsafe {
                                    _mm512_storeu_ps(s, _mm512_add_ps(_mm512_loadu_ps(s), v))
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// `Σ dY[o0 + j] · x[c](shifted by (ky, kx0 + t))` over all output positions, as 16-lane
    /// partial sums `[t][j]`, for `t < taps`, `j < outs`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn grad_vectors(
        g: &Geometry,
        pad: &[f32],
        dy: &[f32],
        o0: usize,
        outs: usize,
        c: usize,
        ky: usize,
        kx0: usize,
        taps: usize,
    ) -> [[__m512; GRAD_OUT]; GRAD_TAPS] {
        let (wp, plane) = padded_dims(g);
        let ohw = g.ohw();
        let mut acc = [[_mm512_setzero_ps(); GRAD_OUT]; GRAD_TAPS];
        for y in 0..g.oh {
            let row = c * plane + (y + ky) * wp + kx0;
            for (x0, m) in segments(g.ow) {
                let mut dv = [_mm512_setzero_ps(); GRAD_OUT];
                for (j, v) in dv.iter_mut().enumerate().take(outs) {
                    // SAFETY: lanes of `m` are positions x0.. < OW of row y of channel o0 + j.
                    *v = unsafe {
                        _mm512_maskz_loadu_ps(m, dy.as_ptr().add((o0 + j) * ohw + y * g.ow + x0))
                    };
                }
                for (t, acc_t) in acc.iter_mut().enumerate().take(taps) {
                    // SAFETY: row y + ky < H + 2p, columns x0 + kx0 + t .. + len ≤ W + 2p.
                    let xv = unsafe { _mm512_maskz_loadu_ps(m, pad.as_ptr().add(row + x0 + t)) };
                    for (a, &d) in acc_t.iter_mut().zip(&dv) {
                        *a = _mm512_fmadd_ps(xv, d, *a);
                    }
                }
            }
        }
        acc
    }
}
