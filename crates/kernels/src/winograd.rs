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

use super::{par_map, threads, uninit_vec, with_scratch};
use crate::gemm::{gemm_parallelism, matmul, DstLayout, Geometry, Mat};

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

/// Tiles the transforms handle at once, one per lane of a fixed-size array (so that the
/// compiler turns each transform step into a few vector instructions: loops over the 2–16
/// tiles of a tile row are too short for its loop vectoriser).
const LANES: usize = 8;

/// One value per tile of a block.
type Lanes = [f32; LANES];

// The helpers below are plain loops over fixed-size arrays, not `array::from_fn`/`map`:
// those were left as calls inside the AVX-512 versions of the transforms (measured: a fifth
// of the forward time).

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    let mut r = a;
    for l in 0..LANES {
        r[l] += b[l];
    }
    r
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    let mut r = a;
    for l in 0..LANES {
        r[l] -= b[l];
    }
    r
}

#[inline(always)]
fn neg(a: Lanes) -> Lanes {
    let mut r = a;
    for v in &mut r {
        *v = -*v;
    }
    r
}

/// `Bᵀ d` of a 4-vector, `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
#[inline(always)]
fn bt(d: [Lanes; 4]) -> [Lanes; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `Aᵀ m` of a 4-vector, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`.
#[inline(always)]
fn at(m: [Lanes; 4]) -> [Lanes; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `A y` of a 2-vector (`A` the transpose of [`at`]'s `Aᵀ`).
#[inline(always)]
fn a2(y: [Lanes; 2]) -> [Lanes; 4] {
    [y[0], add(y[0], y[1]), sub(y[0], y[1]), neg(y[1])]
}

/// Applies [`bt`] to the columns and then to the rows of a 4×4 block (`Bᵀ d B`).
#[inline(always)]
fn bt2(d: [[Lanes; 4]; 4]) -> [[Lanes; 4]; 4] {
    let mut cols = d;
    for j in 0..4 {
        let c = bt([d[0][j], d[1][j], d[2][j], d[3][j]]);
        for i in 0..4 {
            cols[i][j] = c[i];
        }
    }
    let mut v = cols;
    for i in 0..4 {
        v[i] = bt(cols[i]);
    }
    v
}

/// Tiles of a tile row rounded up to whole blocks of [`LANES`]: the length of each half of a
/// row in the transforms' deinterleaved planes, so that every block reads fixed-size runs.
fn padded_tiles(tw: usize) -> usize {
    tw.div_ceil(LANES) * LANES
}

/// Scratch values of one image's padded, deinterleaved plane (a task's `pad` holds one per
/// image of its group, see [`transform_input`]), also enough for the output rows of
/// [`transform_output`] and the planes of [`transform_output_grad`].
fn plane_scratch(g: &Geometry) -> usize {
    let (th, half) = (g.oh.div_ceil(2), padded_tiles(g.ow.div_ceil(2)) + 1);
    (2 * th + 2) * 2 * half
}

/// `even[k] = row[2k]`, `odd[k] = row[2k + 1]` for the values of `row`.
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let half = row.len() / 2;
    let (even, odd) = (&mut even[..row.len().div_ceil(2)], &mut odd[..half]);
    for ((pair, e), o) in row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
    if row.len() % 2 == 1 {
        even[half] = row[row.len() - 1];
    }
}

/// `row[2k] = even[k]`, `row[2k + 1] = odd[k]` for the values of `row`.
#[inline(always)]
fn interleave(even: &[f32], odd: &[f32], row: &mut [f32]) {
    let half = row.len() / 2;
    let (even, odd) = (&even[..row.len().div_ceil(2)], &odd[..half]);
    for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e;
        pair[1] = o;
    }
    if row.len() % 2 == 1 {
        row[2 * half] = even[half];
    }
}

/// `run[..LANES]` as a block.
#[inline(always)]
fn load(run: &[f32]) -> Lanes {
    let mut r = [0f32; LANES];
    r.copy_from_slice(&run[..LANES]);
    r
}

/// [`transform_input`] without explicit SIMD: blocks of [`LANES`] tiles along a tile row,
/// each `(channel, image)` plane padded on its own into `pad`. Writes up to `LANES − 1`
/// values past the end of a matrix row (`stride ≥ C·T + LANES`: the next block, the next row
/// or the slack takes them). The fallback for CPUs without AVX-512 (and the reference the
/// AVX-512 version is tested against).
fn transform_input_portable(
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
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    // Only the interior is ever written: the border stays zero.
    let pad = &mut pad[..(2 * h.div_ceil(2) + 2) * 2 * half];
    pad.fill(0.0);
    let (y0, y1) = ((2 * rows.0).saturating_sub(1), (2 * rows.1 + 1).min(h));
    for c in 0..c_n {
        for img in 0..imgs {
            let plane = &x_imgs[(img * c_n + c) * h * w..][..h * w];
            for y in y0..y1 {
                let (e, o) = pad[(y + 1) * 2 * half..][..2 * half].split_at_mut(half);
                deinterleave(&plane[y * w..][..w], o, &mut e[1..]);
            }
            for ty in rows.0..rows.1 {
                let t_row = c * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    // d[k][j]: padded row 2ty + k, padded column 2(tx0 + l) + j.
                    let mut d = [[[0f32; LANES]; 4]; 4];
                    for (k, dk) in d.iter_mut().enumerate() {
                        let (e, o) = pad[(2 * ty + k) * 2 * half..][..2 * half].split_at(half);
                        *dk = [
                            load(&e[tx0..]),
                            load(&o[tx0..]),
                            load(&e[tx0 + 1..]),
                            load(&o[tx0 + 1..]),
                        ];
                    }
                    for (i, vi) in bt2(d).into_iter().enumerate() {
                        for (j, value) in vi.into_iter().enumerate() {
                            v[(4 * i + j) * stride + t_row + tx0..][..LANES]
                                .copy_from_slice(&value);
                        }
                    }
                }
            }
        }
    }
}

/// `V = Bᵀ d B` of the input tiles of tile rows `rows` of `imgs` images (`x_imgs`, NCHW),
/// into 16 matrices `[C × T]` at `v[ξ·stride..]` (`stride ≥ C·T + LANES`), `Bᵀ` as in
/// [`bt`]. The tile of output tile `(ty, tx)` covers input rows `2ty − 1 ..= 2ty + 2` and
/// columns `2tx − 1 ..= 2tx + 2`. Each plane is first copied into `pad` with a zero border,
/// each padded row `q` (input row `q − 1`) split into its even and odd padded columns
/// (`e[k]` = column `2k − 1`, `o[k]` = column `2k`), so that the four columns of the tiles of
/// a block are the contiguous runs `e[tx..]`, `o[tx..]`, `e[tx + 1..]`, `o[tx + 1..]`; `pad`
/// holds [`plane_scratch`] values per image.
fn transform_input(
    g: &Geometry,
    x_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    v: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_input(g, x_imgs, imgs, rows, v, stride, pad) };
    }
    transform_input_portable(g, x_imgs, imgs, rows, v, stride, pad)
}

/// The AVX-512 input, output and output-gradient transforms: 16 tiles per block of vectors,
/// the same additions and subtractions in the same order as the portable loops (so
/// bit-identical results).
///
/// Why: the portable loops run blocks of 8 tiles along one tile row (16-lane arrays made LLVM
/// spill the 4×4 blocks), so maps of 16×16 and smaller filled 8, 4 or 2 lanes of a block.
/// Here a block is 16 consecutive tiles of a channel's band in `V`'s order, spanning tile rows
/// and images: all `imgs` planes of a channel are padded side by side, and each input vector
/// of a block is gathered by one masked load per tile-row run it covers (each output vector
/// scattered by one masked store per run).
#[cfg(target_arch = "x86_64")]
mod avx512 {
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
                    deinterleave(&src[y * w..][..w], o, &mut e[1..]);
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
                            unsafe {
                                _mm512_mask_storeu_ps(base.wrapping_offset(at), run.mask, value)
                            };
                        }
                    }
                }
            }
            for img in 0..imgs {
                let src = &buf[img * plane..][..plane];
                let dst = &mut out_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
                for y in 2 * rows.0..(2 * rows.1).min(oh) {
                    let (even, odd) = src[y * 2 * rw..][..2 * rw].split_at(rw);
                    interleave(even, odd, &mut dst[y * ow..][..ow]);
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
                    deinterleave(&src[y * ow..][..ow], even, odd);
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
}

/// [`transform_output`] without explicit SIMD: blocks of [`LANES`] tiles along a tile row,
/// each output row assembled in `rows_buf` (reads up to `LANES − 1` values past the end of a
/// matrix row: `stride ≥ O·T + LANES`). The fallback for CPUs without AVX-512 (and the
/// reference the AVX-512 version is tested against).
fn transform_output_portable(
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
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let rows_buf = &mut rows_buf[..4 * rw];
    for oc in 0..o_n {
        for img in 0..imgs {
            let plane = &mut out_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            for ty in rows.0..rows.1 {
                let t_row = oc * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    let mut mv = [[[0f32; LANES]; 4]; 4];
                    for (i, mi) in mv.iter_mut().enumerate() {
                        for (j, mij) in mi.iter_mut().enumerate() {
                            let src = &m[(4 * i + j) * stride + t_row + tx0..][..LANES];
                            mij.copy_from_slice(src);
                        }
                    }
                    // Aᵀ over i (per column j), then A over j.
                    let mut s = [[[0f32; LANES]; 2]; 4];
                    for (j, sj) in s.iter_mut().enumerate() {
                        *sj = at([mv[0][j], mv[1][j], mv[2][j], mv[3][j]]);
                    }
                    for r in 0..2 {
                        let [y0, y1] = at([s[0][r], s[1][r], s[2][r], s[3][r]]);
                        rows_buf[2 * r * rw + tx0..][..LANES].copy_from_slice(&y0);
                        rows_buf[(2 * r + 1) * rw + tx0..][..LANES].copy_from_slice(&y1);
                    }
                }
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy < oh {
                        let (even, odd) = rows_buf[2 * r * rw..][..2 * rw].split_at(rw);
                        interleave(even, odd, &mut plane[oy * ow..][..ow]);
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` of the GEMM results (16 matrices `[O × T]` at `m[ξ·stride..]`,
/// `stride ≥ O·T + LANES`) of tile rows
/// `rows` of `imgs` images, into their `[O, OH, OW]` outputs (`out_imgs`), `Aᵀ` as in
/// [`at`]; the even and odd columns of each output row are assembled in `rows_buf` and
/// its `OW` values interleaved into the output, so outputs outside the map are dropped; `rows_buf` holds
/// [`plane_scratch`] values per image.
fn transform_output(
    g: &Geometry,
    m: &[f32],
    stride: usize,
    imgs: usize,
    rows: (usize, usize),
    out_imgs: &mut [f32],
    rows_buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_output(g, m, stride, imgs, rows, out_imgs, rows_buf) };
    }
    transform_output_portable(g, m, stride, imgs, rows, out_imgs, rows_buf)
}

/// Forward convolution of a [`supports`] geometry into a new `[N, O, OH, OW]` buffer.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let u = transform_weights(g, weight);
    let u_len = g.o * g.c;
    convolve(g, x, |xi| Mat {
        data: &u[xi * u_len..][..u_len],
        rs: g.c,
        cs: 1,
    })
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
    convolve(&gt, dy, |xi| {
        let src = 4 * FLIP[xi / 4] + FLIP[xi % 4];
        // Uᵀ: element (c, o) of `[C × O]` at o·C + c.
        Mat {
            data: &u[src * u_len..][..u_len],
            rs: 1,
            cs: g.c,
        }
    })
}

/// Forward convolution of a [`supports`] geometry into a new `[N, O, OH, OW]` buffer, with
/// `u(ξ)` the transformed weights of position ξ as an `[O × C]` matrix.
fn convolve<'u>(g: &Geometry, x: &[f32], u: impl Fn(usize) -> Mat<'u> + Sync) -> Vec<f32> {
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
            }
        })
    });
    out
}

/// [`transform_output_grad`] without explicit SIMD: blocks of [`LANES`] tiles along a tile
/// row, each `(channel, image)` plane on its own in `pad`. The fallback for CPUs without
/// AVX-512 (and the reference the AVX-512 version is tested against).
fn transform_output_grad_portable(
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
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let pad = &mut pad[..2 * oh.div_ceil(2) * 2 * rw];
    pad.fill(0.0);
    let (y0, y1) = (2 * rows.0, (2 * rows.1).min(oh));
    for oc in 0..o_n {
        for img in 0..imgs {
            let plane = &dy_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            for y in y0..y1 {
                let (even, odd) = pad[y * 2 * rw..][..2 * rw].split_at_mut(rw);
                deinterleave(&plane[y * ow..][..ow], even, odd);
            }
            for ty in rows.0..rows.1 {
                let t_row = oc * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    // dy[r][c]: output row 2ty + r, column 2(tx0 + l) + c.
                    let mut dy = [[[0f32; LANES]; 2]; 2];
                    for (r, dyr) in dy.iter_mut().enumerate() {
                        let (even, odd) = pad[(2 * ty + r) * 2 * rw..][..2 * rw].split_at(rw);
                        *dyr = [load(&even[tx0..]), load(&odd[tx0..])];
                    }
                    // A over r (per column c), then Aᵀ over c.
                    let cols = [a2([dy[0][0], dy[1][0]]), a2([dy[0][1], dy[1][1]])];
                    for i in 0..4 {
                        for (j, value) in a2([cols[0][i], cols[1][i]]).into_iter().enumerate() {
                            d[(4 * i + j) * stride + t_row + tx0..][..LANES]
                                .copy_from_slice(&value);
                        }
                    }
                }
            }
        }
    }
}

/// `A dY Aᵀ` of the 2×2 output-gradient tiles of tile rows `rows` of `imgs` images
/// (`dy_imgs`, `[O, OH, OW]` each), into 16 matrices `[O × T]` at `d[ξ·stride..]`
/// (`stride ≥ O·T + LANES`, as in [`transform_input`]), `A` as in [`a2`]; gradients
/// outside the map are zero (each plane is first copied into `pad`, zero outside the
/// map, each row split into its even and odd columns, whole blocks wide); `pad` holds [`plane_scratch`] values per image.
fn transform_output_grad(
    g: &Geometry,
    dy_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    d: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_output_grad(g, dy_imgs, imgs, rows, d, stride, pad) };
    }
    transform_output_grad_portable(g, dy_imgs, imgs, rows, d, stride, pad)
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

    /// Whether the `len` values of each of the 16 matrices at `a[ξ·stride..]` and
    /// `b[ξ·stride..]` have the same bits.
    fn same_matrices(a: &[f32], b: &[f32], stride: usize, len: usize) -> bool {
        (0..POSITIONS).all(|xi| {
            let (a, b) = (&a[xi * stride..][..len], &b[xi * stride..][..len]);
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
        })
    }

    /// The AVX-512 input, output and output-gradient transforms write the same bits as the
    /// portable ones, for maps whose tile rows fill 1–16 lanes or spill over blocks, groups of images
    /// and bands of rows.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_transforms_are_bit_identical_to_the_portable_ones() {
        if !super::super::has_avx512() {
            return;
        }
        let shapes = [
            (3, 2, 5, 6),
            (2, 3, 7, 9),
            (5, 4, 2, 3),
            (3, 1, 1, 17),
            (3, 3, 20, 19),
            (1, 2, 40, 37),
            (6, 5, 4, 4),
            (40, 2, 8, 8),
            (20, 3, 16, 16),
            (2, 2, 32, 32),
            (1, 2, 70, 66),
        ];
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1009) as f32 / 37.0 - 13.0)
                .collect()
        };
        for (n, c, h, w) in shapes {
            let o = c + 1;
            let g = Geometry::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            let (x, dy) = (values(n * c * h * w, 1), values(n * o * h * w, 2));
            let tiling = Tiling::new(&g);
            let stride = c.max(o) * tiling.max_tiles() + LANES;
            let mut pad = vec![0f32; tiling.group * plane_scratch(&g)];
            let groups = x
                .chunks(tiling.group * c * h * w)
                .zip(dy.chunks(tiling.group * o * h * w));
            for (x_g, dy_g) in groups {
                let imgs = x_g.len() / (c * h * w);
                for rows in tiling.bands(imgs) {
                    let t_len = imgs * (rows.1 - rows.0) * tiling.tw;
                    let case = format!("{:?} {rows:?}", (n, c, h, w));
                    let (mut want, mut got) = (vec![7.0; 16 * stride], vec![-3.0; 16 * stride]);
                    transform_input_portable(&g, x_g, imgs, rows, &mut want, stride, &mut pad);
                    // SAFETY: AVX-512 was detected above.
                    unsafe {
                        avx512::transform_input(&g, x_g, imgs, rows, &mut got, stride, &mut pad)
                    };
                    assert!(
                        same_matrices(&want, &got, stride, c * t_len),
                        "input {case}"
                    );
                    transform_output_grad_portable(
                        &g, dy_g, imgs, rows, &mut want, stride, &mut pad,
                    );
                    // SAFETY: as above.
                    unsafe {
                        avx512::transform_output_grad(
                            &g, dy_g, imgs, rows, &mut got, stride, &mut pad,
                        )
                    };
                    assert!(same_matrices(&want, &got, stride, o * t_len), "dY {case}");
                    let products = values(16 * stride, 3);
                    let (mut want, mut got) =
                        (vec![5.0; imgs * o * h * w], vec![5.0; imgs * o * h * w]);
                    transform_output_portable(
                        &g, &products, stride, imgs, rows, &mut want, &mut pad,
                    );
                    // SAFETY: as above.
                    unsafe {
                        avx512::transform_output(
                            &g, &products, stride, imgs, rows, &mut got, &mut pad,
                        )
                    };
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "output {case}");
                }
            }
        }
    }

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
