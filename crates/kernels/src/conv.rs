//! 2-D convolution (NCHW input, `[O, C, kh, kw]` weight, no bias, dilation 1, one group) on
//! the CPU: im2col + GEMM forward, GEMM + col2im input gradient, GEMM weight gradient.
//!
//! The batch is processed in groups of images, rayon-parallel, whose
//! im2col matrices sit side by side (`[C·kh·kw, G·OH·OW]`, so the GEMMs of
//! small late-stage feature maps stay wide enough to be efficient). A 1×1 stride-1 unpadded
//! convolution of a single image uses the image itself as its column matrix.
//!
//! 3×3 stride-1 padding-1 convolutions with at least 16 channels (13 of ResNet18's 16 3×3
//! convolutions) run the Winograd kernels of [`super::winograd`] instead, forward, input
//! gradient (a forward convolution with the flipped kernel, as [`Geometry`]'s
//! `input_gradient_as_conv`) and weight gradient; [`forward_im2col`] and [`backward_weight_im2col`] are the im2col versions.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use crate::columns::{col2im_group, im2col_group};
pub use crate::gemm::Geometry;
use crate::gemm::{gemm_parallelism, matmul, DstLayout, Mat};
use crate::norm::Affine;
use crate::{direct, f32_data, par_map, threads, uninit_vec, winograd, with_scratch};

/// Columns (`G·OH·OW`) a group of images aims for in its GEMMs.
const GROUP_COLUMNS: usize = 256;

/// Images per group: enough for about [`GROUP_COLUMNS`] GEMM columns, but at most an equal
/// share of the batch per thread.
fn group_size(g: &Geometry) -> usize {
    let share = g.n.div_ceil(threads()).max(1);
    GROUP_COLUMNS.div_ceil(g.ohw().max(1)).clamp(1, share)
}

/// Output rows per band of a single image: an image with at least 2·[`GROUP_COLUMNS`] output
/// positions is processed in bands of about [`GROUP_COLUMNS`] positions, so its GEMMs have
/// the width that suits `gemm` and its column matrix stays in the L2 cache (64 channels at
/// 32×32 on one core: a 64×256×576 GEMM runs at 167 GFLOP/s, a 64×1024×576 one at 127);
/// smaller images (and pointwise convolutions, whose column matrix is the image) are whole.
fn band_rows(g: &Geometry) -> usize {
    if g.ohw() >= 2 * GROUP_COLUMNS && !g.pointwise() {
        (GROUP_COLUMNS / g.ow.max(1)).clamp(1, g.oh)
    } else {
        g.oh
    }
}

/// The bands `(lo, hi)` of output rows a group of `imgs` images is processed in (all rows at
/// once for several images).
fn bands(g: &Geometry, imgs: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if imgs == 1 { band_rows(g) } else { g.oh }.max(1);
    let oh = g.oh;
    (0..oh)
        .step_by(step)
        .map(move |lo| (lo, (lo + step).min(oh)))
}

/// Copies `imgs` consecutive `[rows, ohw]` blocks into one `[rows, imgs·ohw]` matrix.
fn gather(src: &[f32], rows: usize, ohw: usize, imgs: usize, dst: &mut [f32]) {
    let width = imgs * ohw;
    for i in 0..imgs {
        for r in 0..rows {
            dst[r * width + i * ohw..][..ohw].copy_from_slice(&src[(i * rows + r) * ohw..][..ohw]);
        }
    }
}

/// The column matrix `[C·kh·kw, imgs·(hi−lo)·OW]` of output rows `rows` of a group of images:
/// `x_imgs` itself for one pointwise image (always whole), otherwise written into `col`.
fn group_columns<'a>(
    g: &Geometry,
    x_imgs: &'a [f32],
    imgs: usize,
    rows: (usize, usize),
    col: &'a mut [f32],
) -> &'a [f32] {
    if imgs == 1 && g.pointwise() {
        return x_imgs;
    }
    im2col_group(g, x_imgs, imgs, rows, col);
    &col[..g.k() * imgs * (rows.1 - rows.0) * g.ow]
}

/// Scratch sizes for a group of `group` images: columns (unless pointwise single images; one
/// band for single images) and the `[rows, group·ohw]` staging matrix (only for groups of
/// several images).
fn scratch_sizes(g: &Geometry, group: usize, rows: usize) -> (usize, usize) {
    let cols = if group == 1 && g.pointwise() {
        0
    } else if group == 1 {
        g.k() * band_rows(g) * g.ow
    } else {
        g.k() * group * g.ohw()
    };
    let staging = if group > 1 { rows * group * g.ohw() } else { 0 };
    (cols, staging)
}

/// Forward convolution into a new `[N, O, OH, OW]` buffer: Winograd where
/// [`winograd::suits`] says it is faster, otherwise im2col + GEMM.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    forward_then(g, x, weight, None)
}

/// [`forward`], each output block passed through `epilogue` (an eval-mode batch norm and
/// ReLU) as soon as it is written: the same values as a separate pass, without the pass.
pub fn forward_then(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    epilogue: Option<Affine<'_>>,
) -> Vec<f32> {
    if winograd::suits(g) {
        return winograd::forward_then(g, x, weight, epilogue);
    }
    if direct::suits(g) {
        return direct::forward_then(g, x, weight, epilogue);
    }
    forward_im2col(g, x, weight, epilogue)
}

/// Forward convolution by im2col + GEMM, into a new `[N, O, OH, OW]` buffer, with an
/// optional epilogue (see [`forward_then`]).
pub fn forward_im2col(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    epilogue: Option<Affine<'_>>,
) -> Vec<f32> {
    let (k, ohw, chw, o) = (g.k(), g.ohw(), g.chw(), g.o);
    if g.n * o * ohw == 0 || chw == 0 {
        return vec![0f32; g.n * o * ohw];
    }
    // SAFETY: the tasks below cover `out` (chunks of whole groups), and each writes all of its
    // chunk before `out` is returned: a group's GEMM (not accumulating) writes every row of
    // its staging matrix, which is then copied to every `[O, OH·OW]` block of the chunk; a
    // single image's bands cover all output rows, each GEMM writing all O rows of its band.
    let mut out = unsafe { uninit_vec(g.n * o * ohw) };
    let group = group_size(g);
    let w_mat = Mat {
        data: weight,
        rs: k,
        cs: 1,
    };
    let tasks: Vec<_> = out
        .chunks_mut(group * o * ohw)
        .zip(x.chunks(group * chw))
        .collect();
    let par = gemm_parallelism(tasks.len());
    let (col_len, tmp_len) = scratch_sizes(g, group, o);
    par_map(tasks, |(out_g, x_g)| {
        with_scratch(col_len, tmp_len, |col, tmp| {
            let imgs = x_g.len() / chw;
            if imgs == 1 {
                for rows in bands(g, 1) {
                    let width = (rows.1 - rows.0) * g.ow;
                    let rhs = Mat {
                        data: group_columns(g, x_g, 1, rows, col),
                        rs: width,
                        cs: 1,
                    };
                    let dst = &mut out_g[rows.0 * g.ow..];
                    let layout = DstLayout::RowMajor(ohw);
                    matmul((o, width, k), dst, layout, false, w_mat, rhs, par);
                }
                if let Some(epilogue) = epilogue {
                    epilogue.apply_planes(out_g, ohw);
                }
                return;
            }
            let width = imgs * ohw;
            let rhs = Mat {
                data: group_columns(g, x_g, imgs, (0, g.oh), col),
                rs: width,
                cs: 1,
            };
            let layout = DstLayout::RowMajor(width);
            matmul((o, width, k), tmp, layout, false, w_mat, rhs, par);
            for i in 0..imgs {
                for oc in 0..o {
                    let plane = &mut out_g[(i * o + oc) * ohw..][..ohw];
                    plane.copy_from_slice(&tmp[oc * width + i * ohw..][..ohw]);
                    if let Some(epilogue) = epilogue {
                        epilogue.apply(plane, oc);
                    }
                }
            }
        })
    });
    out
}

/// Gradient with respect to the input, `[N, C, H, W]`, from the output gradient `dy`.
pub fn backward_input(g: &Geometry, dy: &[f32], weight: &[f32]) -> Vec<f32> {
    if winograd::suits(g) {
        return winograd::backward_input(g, dy, weight);
    }
    if let Some(gt) = g.input_gradient_as_conv() {
        return forward(&gt, dy, &flip_transpose(g, weight));
    }
    let (k, ohw, chw, o) = (g.k(), g.ohw(), g.chw(), g.o);
    if g.n * chw == 0 || ohw == 0 || o == 0 {
        return vec![0f32; g.n * chw];
    }
    let group = group_size(g);
    let direct = group == 1 && g.pointwise();
    // SAFETY: the tasks below cover `dx` (chunks of whole groups), and each writes all of its
    // chunk before `dx` is returned: for pointwise single images the GEMM (not accumulating,
    // O ≥ 1) writes the whole image `[C, H·W]` (`H·W = OH·OW` for a pointwise geometry);
    // otherwise the task zeroes its chunk before col2im accumulates into it.
    let mut dx = unsafe { uninit_vec(g.n * chw) };
    // Wᵀ: element (r, oc) at oc·k + r.
    let wt = Mat {
        data: weight,
        rs: 1,
        cs: k,
    };
    let tasks: Vec<_> = dx
        .chunks_mut(group * chw)
        .zip(dy.chunks(group * o * ohw))
        .collect();
    let par = gemm_parallelism(tasks.len());
    let (dcol_len, dyt_len) = scratch_sizes(g, group, o);
    par_map(tasks, |(dx_g, dy_g)| {
        with_scratch(dcol_len, dyt_len, |dcol, dyt| {
            let imgs = dx_g.len() / chw;
            if !direct {
                // Zeroed here rather than at allocation: the group's images are then in the
                // cache when col2im accumulates into them.
                dx_g.fill(0.0);
            }
            if direct {
                let rhs = Mat {
                    data: dy_g,
                    rs: ohw,
                    cs: 1,
                };
                let layout = DstLayout::RowMajor(ohw);
                matmul((k, ohw, o), dx_g, layout, false, wt, rhs, par);
            } else if imgs == 1 {
                for rows in bands(g, 1) {
                    let width = (rows.1 - rows.0) * g.ow;
                    // The band's columns of dY: a block of the image's [O, OH·OW] matrix.
                    let rhs = Mat {
                        data: &dy_g[rows.0 * g.ow..],
                        rs: ohw,
                        cs: 1,
                    };
                    let layout = DstLayout::RowMajor(width);
                    matmul((k, width, o), dcol, layout, false, wt, rhs, par);
                    col2im_group(g, &mut dcol[..k * width], 1, rows, dx_g);
                }
            } else {
                let width = imgs * ohw;
                gather(dy_g, o, ohw, imgs, dyt);
                let rhs = Mat {
                    data: &dyt[..o * width],
                    rs: width,
                    cs: 1,
                };
                let layout = DstLayout::RowMajor(width);
                matmul((k, width, o), dcol, layout, false, wt, rhs, par);
                col2im_group(g, dcol, imgs, (0, g.oh), dx_g);
            }
        })
    });
    dx
}

/// Gradient with respect to the weight, `[O, C, kh, kw]`, summed over the batch: Winograd
/// where [`winograd::suits`] says it is faster, otherwise GEMMs over im2col matrices.
pub fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if winograd::suits(g) {
        return winograd::backward_weight(g, x, dy);
    }
    if direct::suits(g) {
        return direct::backward_weight(g, x, dy);
    }
    backward_weight_im2col(g, x, dy)
}

/// Gradient with respect to the weight, `[O, C, kh, kw]`, summed over the batch, by GEMMs
/// `dY·colᵀ` over im2col matrices.
pub fn backward_weight_im2col(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (k, ohw, chw, o) = (g.k(), g.ohw(), g.chw(), g.o);
    if g.n == 0 || chw == 0 || ohw == 0 {
        return vec![0f32; o * k];
    }
    // One task per thread, each accumulating its share of the batch into its own dW.
    let per = g.n.div_ceil(threads()).max(1);
    let group = group_size(g);
    let tasks: Vec<_> = x.chunks(per * chw).zip(dy.chunks(per * o * ohw)).collect();
    let par = gemm_parallelism(tasks.len());
    let (col_len, dyt_len) = scratch_sizes(g, group, o);
    let layout = weight_grad_layout(g);
    let partials = par_map(tasks, |(x_chunk, dy_chunk)| {
        // SAFETY: the chunk holds at least one image, and its first GEMM (`accumulate` false)
        // writes all of `dw` (every (O, C·kh·kw) element) before the later ones read it.
        let mut dw = unsafe { uninit_vec(o * k) };
        with_scratch(col_len, dyt_len, |col, dyt| {
            let mut accumulate = false;
            for (x_g, dy_g) in x_chunk
                .chunks(group * chw)
                .zip(dy_chunk.chunks(group * o * ohw))
            {
                let imgs = x_g.len() / chw;
                for rows in bands(g, imgs) {
                    let width = imgs * (rows.1 - rows.0) * g.ow;
                    let lhs = if imgs == 1 {
                        // The band's columns of dY: a block of the image's [O, OH·OW] matrix.
                        Mat {
                            data: &dy_g[rows.0 * g.ow..],
                            rs: ohw,
                            cs: 1,
                        }
                    } else {
                        gather(dy_g, o, ohw, imgs, dyt);
                        Mat {
                            data: &dyt[..o * width],
                            rs: width,
                            cs: 1,
                        }
                    };
                    // colᵀ: element (p, r) at r·width + p.
                    let rhs = Mat {
                        data: group_columns(g, x_g, imgs, rows, col),
                        rs: 1,
                        cs: width,
                    };
                    matmul((o, k, width), &mut dw, layout, accumulate, lhs, rhs, par);
                    accumulate = true;
                }
            }
        });
        dw
    });
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; o * k]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(&part) {
            *t += p;
        }
    }
    match layout {
        DstLayout::RowMajor(_) => total,
        DstLayout::ColMajor => transpose(&total, k, o),
    }
}

/// How the weight-gradient GEMMs store `dW` (`O×C·kh·kw`): column-major (`dWᵀ`, transposed
/// once at the end) when `O` is small, where `gemm` would otherwise spend a large share of the
/// time packing the column matrix (measured on one core: 64→64 3×3 at 32×32, 68 → 42 ms for
/// 64 images; 128→128 at 16×16, 45 → 36 ms); row-major for wide layers and tiny kernels,
/// where the packing is cheap and the final transpose is not (512→512 at 4×4: 41 → 52 ms).
fn weight_grad_layout(g: &Geometry) -> DstLayout {
    if g.o <= 128 && g.k() >= 64 {
        DstLayout::ColMajor
    } else {
        DstLayout::RowMajor(g.k())
    }
}

/// The kernel `[C, O, kh, kw]` of [`Geometry::input_gradient_as_conv`]: `weight`
/// (`[O, C, kh, kw]`) with input and output channels swapped and each tap flipped in both
/// directions.
fn flip_transpose(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let taps = g.kh * g.kw;
    let mut flipped = vec![0f32; weight.len()];
    for (oc, per_out) in weight.chunks_exact(g.c * taps).enumerate() {
        for (c, kernel) in per_out.chunks_exact(taps).enumerate() {
            let dst = &mut flipped[(c * g.o + oc) * taps..][..taps];
            for (d, &v) in dst.iter_mut().zip(kernel.iter().rev()) {
                *d = v;
            }
        }
    }
    flipped
}

/// The transpose `[cols, rows]` of a row-major `[rows, cols]` matrix.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    if src.len() != rows * cols {
        return vec![0f32; rows * cols];
    }
    // SAFETY: the loop below writes element (c, r) for every r < rows, c < cols, since `src`
    // has exactly `rows` rows of `cols` values (checked above), before `dst` is returned.
    let mut dst = unsafe { uninit_vec(rows * cols) };
    for (r, row) in src.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
    dst
}

/// The convolution as a candle op on `(x, weight)`; its backward runs
/// [`ConvBackwardInput`] and [`ConvBackwardWeight`].
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (all four sides).
    pub padding: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "pixreg-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = f32_data(s1, l1, "conv2d input")?;
        let w = f32_data(s2, l2, "conv2d weight")?;
        Ok((
            CpuStorage::F32(forward(&g, x, w)),
            Shape::from(g.output_dims().to_vec()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), weight.dims(), self.stride, self.padding)?;
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &ConvBackwardInput(g))?)
        } else {
            None
        };
        let dw = if weight.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &ConvBackwardWeight(g))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(dy, weight) ↦ dx` of a convolution with the given geometry (no backward of its own).
#[derive(Debug, Clone, Copy)]
pub struct ConvBackwardInput(pub Geometry);

impl CustomOp2 for ConvBackwardInput {
    fn name(&self) -> &'static str {
        "pixreg-conv2d-backward-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        if l1.dims() != g.output_dims() || l2.dims() != [g.o, g.c, g.kh, g.kw] {
            bail!(
                "conv2d backward: gradient {:?} / weight {:?} do not match {g:?}",
                l1.dims(),
                l2.dims()
            );
        }
        let dy = f32_data(s1, l1, "conv2d output gradient")?;
        let w = f32_data(s2, l2, "conv2d weight")?;
        Ok((
            CpuStorage::F32(backward_input(g, dy, w)),
            Shape::from((g.n, g.c, g.h, g.w)),
        ))
    }
}

/// `(x, dy) ↦ dweight` of a convolution with the given geometry (no backward of its own).
#[derive(Debug, Clone, Copy)]
pub struct ConvBackwardWeight(pub Geometry);

impl CustomOp2 for ConvBackwardWeight {
    fn name(&self) -> &'static str {
        "pixreg-conv2d-backward-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.0;
        if l1.dims() != [g.n, g.c, g.h, g.w] || l2.dims() != g.output_dims() {
            bail!(
                "conv2d backward: input {:?} / gradient {:?} do not match {g:?}",
                l1.dims(),
                l2.dims()
            );
        }
        let x = f32_data(s1, l1, "conv2d input")?;
        let dy = f32_data(s2, l2, "conv2d output gradient")?;
        Ok((
            CpuStorage::F32(backward_weight(g, x, dy)),
            Shape::from((g.o, g.c, g.kh, g.kw)),
        ))
    }
}
