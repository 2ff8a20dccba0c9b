//! Winograd F(2×2, 3×3) convolution for 3×3, stride-1, padding-1 geometries (ResNet's
//! "same" 3×3 convolutions): forward, input gradient and weight gradient. The input gradient
//! of such a convolution is itself one, the forward convolution of `dY` with the flipped,
//! transposed kernel, whose transformed weights are a permutation of the forward's
//! ([`backward_input`]).
//!
//! Why: the im2col GEMMs already run near the core's peak, so the remaining lever is fewer
//! multiplications. Each 2×2 block of outputs ("tile") is computed from its 4×4 input tile
//! as `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`: 16 products per input/output channel pair instead of
//! 36, i.e. 16 GEMMs `[O × C]·[C × T]` over a band of `T` tiles in place of one
//! `[O × 9C]·[9C × 4T]` GEMM (2.25× fewer flops), plus cheap linear transforms of the
//! input tiles, the weights and the output tiles.
//!
//! The weight gradient is the adjoint of the same identity,
//! `dW = Gᵀ[Σₜ (A dYₜ Aᵀ) ⊙ (Bᵀ dₜ B)]G`: the same input transform, a transform of the 2×2
//! `dY` tiles, 16 GEMMs `[O × T]·[T × C]` accumulated over the batch and one inverse
//! transform of the `[O × C]` sums.
//!
//! Layouts (all row-major float32): transformed input `V` as 16 matrices `[C × T]`,
//! transformed weights `U` as 16 matrices `[O × C]`, GEMM results as 16 matrices `[O × T]`;
//! tile `t` of a band is `(image, tile row, tile column)` in row-major order, so the
//! transforms read and write contiguous runs along a tile row. Tiles that overhang an odd
//! map read zeros (the padding) and their outputs outside the map are dropped.
//!
//! Transformed values are sums of up to 16 inputs (exact coefficients ±1, ±½), so the results
//! differ from im2col's by rounding only (≈ 1e-6 relative; tested against im2col and candle).

mod transform;

use crate::gemm::{gemm_parallelism, matmul, DstLayout, Geometry, Mat};
use crate::norm::Affine;
use crate::{par_map, threads, uninit_vec, with_scratch};
use transform::{plane_scratch, transform_input, transform_output, transform_output_grad, LANES};

/// Tiles a band aims for (the `n` of its forward GEMMs, the `k` of its weight-gradient
/// GEMMs), as [`super::conv`]'s `GROUP_COLUMNS` for im2col. 128 was the best of 64–1024 on
/// one core (64 images; 64→64 at 32×32 weight gradient 33 ms against 36 at 256 and 40 at 512
/// tiles, 512→512 at 4×4 forward 26 ms against 27–33; the forwards at 32×32 to 8×8 within
/// 1 ms of each other).
const BAND_TILES: usize = 128;

/// Positions of the 4×4 transformed tile (the number of GEMMs per band).
const POSITIONS: usize = 16;

/// Whether `g` is a convolution this module computes: 3×3 kernel, stride 1, padding 1.
pub fn supports(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.oh == g.h && g.ow == g.w
}

/// Whether [`super::conv`] uses this module for `g` (its forward, input gradient and weight
/// gradient): supported geometries with at least 16 input and output channels.
///
/// Why 16: below it the transforms, whose cost grows with `C + O` where the GEMMs' grows with
/// `C·O`, outweigh the saved multiplications. Measured on one core, 64 images, forward and
/// weight gradient (ms, Winograd against im2col): 8 channels at 32×32 1.6/1.5 against
/// 1.4/2.5, 4 channels 0.7/0.6 against 0.5/0.5; 16 channels at 16×16 1.0/1.2 against 1.0/1.1,
/// at 32×32 3.8/4.2 against 4.0/4.7; 64 channels at 32×32 29/35 against 42/41, 512 channels at
/// 4×4 25/24 against 35/38 (see `experiments/results/perf/2026-11-rounds.md`).
pub fn suits(g: &Geometry) -> bool {
    supports(g) && g.c.min(g.o) >= 16
}

/// How the batch is cut into bands of tiles.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Tile columns per image, `⌈OW/2⌉`.
    tw: usize,
    /// Tile rows per image, `⌈OH/2⌉`.
    th: usize,
    /// Images per task: enough for about [`BAND_TILES`] tiles, at most an equal share of the
    /// batch per thread.
    group: usize,
    /// Tile rows per band of a single image (all of them unless an image has at least
    /// 2·[`BAND_TILES`] tiles, so that large maps keep their scratch matrices in L2).
    band_rows: usize,
}

impl Tiling {
    fn new(g: &Geometry) -> Self {
        let (tw, th) = (g.ow.div_ceil(2), g.oh.div_ceil(2));
        let per_image = (tw * th).max(1);
        let share = g.n.div_ceil(threads()).max(1);
        let group = BAND_TILES.div_ceil(per_image).clamp(1, share);
        let band_rows = if per_image >= 2 * BAND_TILES {
            (BAND_TILES / tw.max(1)).clamp(1, th)
        } else {
            th
        };
        Self {
            tw,
            th,
            group,
            band_rows,
        }
    }

    /// The bands `(lo, hi)` of tile rows a group of `imgs` images is processed in.
    fn bands(&self, imgs: usize) -> impl Iterator<Item = (usize, usize)> {
        let step = if imgs == 1 { self.band_rows } else { self.th }.max(1);
        let th = self.th;
        (0..th)
            .step_by(step)
            .map(move |lo| (lo, (lo + step).min(th)))
    }

    /// Tiles of the largest band.
    fn max_tiles(&self) -> usize {
        if self.group == 1 {
            self.band_rows * self.tw
        } else {
            self.group * self.th * self.tw
        }
    }
}

/// `(o, c)` pairs the weight transforms handle at once: their 16 transformed values go to a
/// small block first and then to the 16 matrices as runs. Why: the matrices lie `O·C`
/// values apart, a power of two, so writing (or reading) them one pair at a time puts the
/// 16 streams in the same cache set, which thrashed L1. 512 → 512 channels, one thread:
/// 14.7 ms per transform a pair at a time, 1.7 ms in blocks of 64 (32 and 128 no better);
/// the inverse transform with its sum of two partials 10.5 → 2.7 ms.
const PAIR_BLOCK: usize = 64;

/// `(o, c)` pairs per task of the weight transforms: a few tasks per thread, none so small
/// that scheduling it costs more than its ≈ 50 flops per pair.
fn pair_chunk(oc_n: usize) -> usize {
    oc_n.div_ceil(4 * threads()).max(2048)
}

/// `U = G g Gᵀ` of every `[O, C, 3, 3]` kernel, as 16 matrices `[O × C]`, with
/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
///
/// In parallel over runs of `(o, c)` pairs, each task writing its run of all 16 matrices:
/// run on one thread this was ≈ 5 % of a two-thread base-64 training step, during which the
/// other thread waited.
fn transform_weights(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let oc_n = g.o * g.c;
    let chunk = pair_chunk(oc_n);
    // SAFETY: the tasks below cover all pairs, and each writes position ξ of each of its
    // pairs, i.e. all 16·O·C values.
    let mut u = unsafe { uninit_vec(POSITIONS * oc_n) };
    if oc_n == 0 {
        return u;
    }
    let mut runs: Vec<Vec<&mut [f32]>> = (0..oc_n.div_ceil(chunk))
        .map(|_| Vec::with_capacity(POSITIONS))
        .collect();
    for matrix in u.chunks_mut(oc_n) {
        for (run, part) in runs.iter_mut().zip(matrix.chunks_mut(chunk)) {
            run.push(part);
        }
    }
    let tasks: Vec<_> = runs.into_iter().zip(weight.chunks(9 * chunk)).collect();
    let gmul = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    par_map(tasks, |(mut run, kernels)| {
        let mut block = [[0f32; PAIR_BLOCK]; POSITIONS];
        for (b, block_kernels) in kernels.chunks(9 * PAIR_BLOCK).enumerate() {
            let pairs = block_kernels.len() / 9;
            for (pair, k) in block_kernels.chunks_exact(9).take(PAIR_BLOCK).enumerate() {
                let cols: [[f32; 4]; 3] = [
                    gmul(k[0], k[3], k[6]),
                    gmul(k[1], k[4], k[7]),
                    gmul(k[2], k[5], k[8]),
                ];
                for i in 0..4 {
                    let row = gmul(cols[0][i], cols[1][i], cols[2][i]);
                    for (j, &value) in row.iter().enumerate() {
                        block[4 * i + j][pair] = value;
                    }
                }
            }
            for (dst, values) in run.iter_mut().zip(&block) {
                dst[b * PAIR_BLOCK..][..pairs].copy_from_slice(&values[..pairs]);
            }
        }
    });
    u
}

/// Forward convolution of a [`supports`] geometry into a new `[N, O, OH, OW]` buffer.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_then(g, x, weight, None)
}

/// [`forward`], each band's outputs passed through `epilogue` right after its output
/// transform wrote them (see [`crate::conv::forward_then`]).
pub fn forward_then(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    epilogue: Option<Affine<'_>>,
) -> Vec<f32> {
    let u = transform_weights(g, weight);
    let u_len = g.o * g.c;
    let u = |xi| Mat {
        data: &u[xi * u_len..][..u_len],
        rs: g.c,
        cs: 1,
    };
    convolve(g, x, u, epilogue)
}

/// The permutation of a transformed tile's rows (and columns) that flipping a 3×3 kernel
/// induces: `G J = P G` for the reversal `J` of the three taps, `P` swapping rows 0 and 3 of
/// `G` (its rows 1 and 2 are palindromes), so `G (J g J) Gᵀ = P (G g Gᵀ) Pᵀ`.
const FLIP: [usize; 4] = [3, 1, 2, 0];

/// Input gradient `[N, C, H, W]` of a [`supports`] geometry `g`, from the output gradient
/// `dy` (`[N, O, OH, OW]`): the forward convolution of `dy` with the flipped, transposed
/// kernel (padding 1 again), whose transformed matrices are those of the forward's kernel
/// permuted and transposed, `U'[i][j] = U[p(i)][p(j)]ᵀ` with `p` = `FLIP`.
///
/// Why: the GEMMs read the transpose through its strides, so the flipped kernel is neither
/// built nor transformed (the flip and the second weight transform were ≈ 4 % of a base-64
/// training step).
pub fn backward_input(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    let u = transform_weights(g, weight);
    let u_len = g.o * g.c;
    let gt = Geometry {
        c: g.o,
        o: g.c,
        ..*g
    };
    let ut = |xi: usize| {
        let src = 4 * FLIP[xi / 4] + FLIP[xi % 4];
        // Uᵀ: element (c, o) of `[C × O]` at o·C + c.
        Mat {
            data: &u[src * u_len..][..u_len],
            rs: 1,
            cs: g.c,
        }
    };
    convolve(&gt, dy, ut, None)
}

/// Forward convolution of a [`supports`] geometry into a new `[N, O, OH, OW]` buffer, with
/// `u(ξ)` the transformed weights of position ξ as an `[O × C]` matrix, and `epilogue`
/// applied to each band's outputs once written.
fn convolve<'u>(
    g: &Geometry,
    x: &[f32],
    u: impl Fn(usize) -> Mat<'u> + Sync,
    epilogue: Option<Affine<'_>>,
) -> Vec<f32> {
    let (ohw, chw, o) = (g.oh * g.ow, g.c * g.h * g.w, g.o);
    if g.n * o * ohw == 0 || chw == 0 {
        return vec![0f32; g.n * o * ohw];
    }
    let tiling = Tiling::new(g);
    // SAFETY: the tasks below cover `out` (chunks of whole groups of images); each task's
    // bands cover all tile rows of its images, and the output transform of a band writes
    // every output of its tile rows (both rows of each tile that lie inside the map, all
    // `OW` columns) before `out` is returned.
    let mut out = unsafe { uninit_vec(g.n * o * ohw) };
    let tasks: Vec<_> = out
        .chunks_mut(tiling.group * o * ohw)
        .zip(x.chunks(tiling.group * chw))
        .collect();
    let par = gemm_parallelism(tasks.len());
    let t_max = tiling.max_tiles();
    let (v_stride, m_stride) = (g.c * t_max + LANES, o * t_max + LANES);
    par_map(tasks, |(out_g, x_g)| {
        let imgs = x_g.len() / chw;
        let mut pad = vec![0f32; tiling.group * plane_scratch(g)];
        with_scratch(POSITIONS * v_stride, POSITIONS * m_stride, |v, m| {
            for rows in tiling.bands(imgs) {
                let t_len = imgs * (rows.1 - rows.0) * tiling.tw;
                transform_input(g, x_g, imgs, rows, v, v_stride, &mut pad);
                for xi in 0..POSITIONS {
                    let rhs = Mat {
                        data: &v[xi * v_stride..][..g.c * t_len],
                        rs: t_len,
                        cs: 1,
                    };
                    let dst = &mut m[xi * m_stride..][..o * t_len];
                    let layout = DstLayout::RowMajor(t_len);
                    matmul((o, t_len, g.c), dst, layout, false, u(xi), rhs, par);
                }
                transform_output(g, m, m_stride, imgs, rows, out_g, &mut pad);
                if let Some(epilogue) = epilogue {
                    // The band's output rows of every plane of the group, still in cache.
                    let (r0, r1) = (2 * rows.0 * g.ow, (2 * rows.1).min(g.oh) * g.ow);
                    for (p, plane) in out_g.chunks_mut(ohw).enumerate() {
                        epilogue.apply(&mut plane[r0..r1], p % o);
                    }
                }
            }
        })
    });
    out
}

/// `dW = Gᵀ M G` of the summed products `M = Σ partials` (each 16 matrices `[O × C]`, summed
/// in order), as `[O, C, 3, 3]`, in parallel over runs of `(o, c)` pairs: the sum and the
/// transform in one pass, with no thread left waiting for a serial reduction.
fn inverse_transform_weights(g: &Geometry, partials: &[Vec<f32>]) -> Vec<f32> {
    let oc_n = g.o * g.c;
    let chunk = pair_chunk(oc_n);
    // SAFETY: the tasks cover `dw` and write the 9 taps of every pair of their run.
    let mut dw = unsafe { uninit_vec(9 * oc_n) };
    let gt = |v: [f32; 4]| {
        [
            v[0] + 0.5 * (v[1] + v[2]),
            0.5 * (v[1] - v[2]),
            0.5 * (v[1] + v[2]) + v[3],
        ]
    };
    let tasks: Vec<_> = dw.chunks_mut(9 * chunk).enumerate().collect();
    par_map(tasks, |(run, taps_run)| {
        let mut block = [[0f32; PAIR_BLOCK]; POSITIONS];
        for (b, block_taps) in taps_run.chunks_mut(9 * PAIR_BLOCK).enumerate() {
            let first = run * chunk + b * PAIR_BLOCK;
            let pairs = block_taps.len() / 9;
            for (xi, values) in block.iter_mut().enumerate() {
                let values = &mut values[..pairs];
                let mut parts = partials.iter();
                if let Some(part) = parts.next() {
                    values.copy_from_slice(&part[xi * oc_n + first..][..pairs]);
                }
                for part in parts {
                    for (v, p) in values.iter_mut().zip(&part[xi * oc_n + first..][..pairs]) {
                        *v += p;
                    }
                }
            }
            for (pair, taps) in block_taps.chunks_exact_mut(9).take(PAIR_BLOCK).enumerate() {
                let cols: [[f32; 3]; 4] =
                    std::array::from_fn(|j| gt(std::array::from_fn(|i| block[4 * i + j][pair])));
                for r in 0..3 {
                    let row = gt(std::array::from_fn(|j| cols[j][r]));
                    taps[3 * r..3 * r + 3].copy_from_slice(&row);
                }
            }
        }
    });
    dw
}

/// Weight gradient `[O, C, 3, 3]` of a [`supports`] geometry, summed over the batch.
pub fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ohw, chw, o) = (g.oh * g.ow, g.c * g.h * g.w, g.o);
    let oc_n = o * g.c;
    if g.n == 0 || chw == 0 || ohw == 0 || o == 0 {
        return vec![0f32; 9 * oc_n];
    }
    let tiling = Tiling::new(g);
    // One task per thread, each accumulating its share of the batch into its own sums.
    let per = g.n.div_ceil(threads()).max(1);
    let tasks: Vec<_> = x.chunks(per * chw).zip(dy.chunks(per * o * ohw)).collect();
    let par = gemm_parallelism(tasks.len());
    let t_max = tiling.max_tiles();
    let (v_stride, d_stride) = (g.c * t_max + LANES, o * t_max + LANES);
    let partials = par_map(tasks, |(x_chunk, dy_chunk)| {
        // SAFETY: the chunk holds at least one image, so its first band's 16 GEMMs
        // (`accumulate` false) write every value of `acc` before later ones read it.
        let mut acc = unsafe { uninit_vec(POSITIONS * oc_n) };
        let mut pad = vec![0f32; tiling.group * plane_scratch(g)];
        with_scratch(POSITIONS * v_stride, POSITIONS * d_stride, |v, dt| {
            let mut accumulate = false;
            for (x_g, dy_g) in x_chunk
                .chunks(tiling.group * chw)
                .zip(dy_chunk.chunks(tiling.group * o * ohw))
            {
                let imgs = x_g.len() / chw;
                for rows in tiling.bands(imgs) {
                    let t_len = imgs * (rows.1 - rows.0) * tiling.tw;
                    transform_input(g, x_g, imgs, rows, v, v_stride, &mut pad);
                    transform_output_grad(g, dy_g, imgs, rows, dt, d_stride, &mut pad);
                    for xi in 0..POSITIONS {
                        let lhs = Mat {
                            data: &dt[xi * d_stride..][..o * t_len],
                            rs: t_len,
                            cs: 1,
                        };
                        // Vᵀ: element (t, c) at c·T + t.
                        let rhs = Mat {
                            data: &v[xi * v_stride..][..g.c * t_len],
                            rs: 1,
                            cs: t_len,
                        };
                        let dst = &mut acc[xi * oc_n..][..oc_n];
                        let layout = DstLayout::RowMajor(g.c);
                        matmul((o, g.c, t_len), dst, layout, accumulate, lhs, rhs, par);
                    }
                    accumulate = true;
                }
            }
        });
        acc
    });
    inverse_transform_weights(g, &partials)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity [`backward_input`] rests on: the transformed flipped, transposed kernel
    /// is the forward's transformed kernel with rows and columns of each tile permuted by
    /// [`FLIP`] and the channel matrices transposed (equal up to the order of the additions).
    #[test]
    fn flipped_kernel_transforms_to_the_permuted_transpose() {
        let (o_n, c_n) = (3, 5);
        let weight: Vec<f32> = (0..o_n * c_n * 9)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut flipped = vec![0f32; weight.len()];
        for o in 0..o_n {
            for c in 0..c_n {
                for tap in 0..9 {
                    flipped[(c * o_n + o) * 9 + 8 - tap] = weight[(o * c_n + c) * 9 + tap];
                }
            }
        }
        let g = Geometry::new(&[1, c_n, 4, 4], &[o_n, c_n, 3, 3], 1, 1).unwrap();
        let gt = Geometry::new(&[1, o_n, 4, 4], &[c_n, o_n, 3, 3], 1, 1).unwrap();
        let (u, u_flipped) = (
            transform_weights(&g, &weight),
            transform_weights(&gt, &flipped),
        );
        for i in 0..4 {
            for j in 0..4 {
                let src = 4 * FLIP[i] + FLIP[j];
                for c in 0..c_n {
                    for o in 0..o_n {
                        let want = u_flipped[((4 * i + j) * c_n + c) * o_n + o];
                        let got = u[(src * o_n + o) * c_n + c];
                        assert!((want - got).abs() <= 1e-6 * want.abs().max(1.0), "{i} {j}");
                    }
                }
            }
        }
    }
}
