//! A convolution followed by a training-mode batch norm (and optionally a ReLU) as one candle
//! op, so the convolution's output never becomes a candle tensor of its own.
//!
//! Unfused, candle's backward materialises the gradient of that intermediate tensor through
//! its bookkeeping (a zero tensor plus an add per gradient, each a fresh full-size buffer);
//! here the batch-norm backward hands `dz` straight to the convolution's backward kernels.
//! The arithmetic is exactly that of [`super::conv`] followed by [`super::norm`]'s
//! `BatchNormTrain`.
//!
//! The batch can be split into segments of consecutive images, each normalised with its own
//! batch statistics, as if each had gone through the layer on its own: the pair forward runs
//! its two halves through the network in one pass that way, with one convolution per layer
//! instead of two (fewer, larger kernel calls; one weight gradient instead of two for candle
//! to add up).

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::norm::{self, BatchStats};
use super::{f32_data, uninit_vec};
use crate::conv;
use crate::gemm::Geometry;

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
struct Saved {
    /// The convolution's output (the batch norm's input), `[N, O, OH, OW]`.
    z: Vec<f32>,
    /// The batch statistics of each segment.
    stats: Vec<BatchStats>,
}

/// `bn(conv2d(x, w))` (then `relu` with `relu`) on `(x, w, [γ; β])`, training mode; `[γ; β]`
/// is the batch norm's weight and bias concatenated (`[2·O]`: a custom op takes at most three
/// tensors). Each segment of images (`segments`, image counts in order; one segment: the whole
/// batch) is normalised with its own statistics, which are published in
/// [`ConvBatchNormTrain::stats`] once the op has run.
#[derive(Debug, Clone)]
pub struct ConvBatchNormTrain {
    /// Convolution stride (both directions).
    pub stride: usize,
    /// Convolution zero padding (all four sides).
    pub padding: usize,
    /// Batch-norm variance epsilon.
    pub eps: f64,
    /// Whether a ReLU follows the batch norm.
    pub relu: bool,
    /// Images per batch-norm segment, in order (they must add up to the batch size).
    pub segments: Vec<usize>,
    saved: Arc<OnceLock<Saved>>,
}

impl ConvBatchNormTrain {
    /// A new op (it can be applied once) normalising the images in `segments` (image counts)
    /// separately.
    pub fn new(stride: usize, padding: usize, eps: f64, relu: bool, segments: Vec<usize>) -> Self {
        Self {
            stride,
            padding,
            eps,
            relu,
            segments,
            saved: Arc::new(OnceLock::new()),
        }
    }

    /// The batch statistics of each segment of the convolution's output, once the op has run.
    pub fn stats(&self) -> Option<&[BatchStats]> {
        self.saved.get().map(|s| s.stats.as_slice())
    }
}

/// A conv + batch-norm op's geometry, input, kernel and per-channel pair (two halves).
type ConvOperands<'a> = (Geometry, &'a [f32], &'a [f32], (&'a [f32], &'a [f32]));

/// The geometry of `conv2d(x, w)` with `(stride, padding)` and the data of `(x, w, v)`, the
/// per-channel pair `v` (`[2·O]`, `what`) split into its halves; an error for other shapes.
fn conv_operands<'a>(
    (stride, padding): (usize, usize),
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
    what: &str,
) -> candle_core::Result<ConvOperands<'a>> {
    let g = Geometry::new(l1.dims(), l2.dims(), stride, padding)?;
    if l3.dims() != [2 * g.o] {
        bail!(
            "conv + batch norm: {what} {:?} must be [{}]",
            l3.dims(),
            2 * g.o
        );
    }
    let x = f32_data(s1, l1, "conv2d input")?;
    let w = f32_data(s2, l2, "conv2d weight")?;
    Ok((g, x, w, f32_data(s3, l3, what)?.split_at(g.o)))
}

/// Value ranges of `segments` (image counts) in an `[N, O, OH, OW]` buffer of `plane` =
/// `O·OH·OW` values per image; an error unless they cover the `n` images, each with more than
/// one value per channel.
pub(crate) fn segment_ranges(
    segments: &[usize],
    n: usize,
    plane: usize,
    hw: usize,
) -> candle_core::Result<Vec<std::ops::Range<usize>>> {
    if segments.iter().sum::<usize>() != n {
        bail!("conv + batch norm: segments {segments:?} do not add up to the batch of {n}");
    }
    if segments.iter().any(|&k| k * hw < 2) {
        bail!("batch norm: training mode needs more than one value per channel in every segment");
    }
    let mut start = 0;
    Ok(segments
        .iter()
        .map(|&k| {
            let range = start * plane..(start + k) * plane;
            start += k;
            range
        })
        .collect())
}

/// `z = conv2d(x, w)`, then each segment of `z` batch-normalised with its own statistics (and
/// a ReLU with `relu`) into `y`: `(z, y, statistics per segment)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_segments(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    ranges: &[std::ops::Range<usize>],
    eps: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<BatchStats>) {
    let hw = g.oh * g.ow;
    let z = conv::forward(g, x, w);
    // SAFETY: the segments cover `y` (`segment_ranges`), and `channel_affine_into` writes
    // every value of its segment (`hw` and `O` are positive: each segment has ≥ 2 values per
    // channel), before `y` is returned.
    let mut y = unsafe { uninit_vec(z.len()) };
    let mut stats = Vec::with_capacity(ranges.len());
    for range in ranges {
        let seg_stats = norm::batch_stats(&z[range.clone()], g.o, hw, eps);
        let (alpha, shift) = norm::fold(&seg_stats, gamma, beta);
        norm::channel_affine_into(
            &z[range.clone()],
            &alpha,
            Some(&shift),
            relu,
            hw,
            &mut y[range.clone()],
        );
        stats.push(seg_stats);
    }
    (z, y, stats)
}

/// The batch-norm backward of every segment: `(dz, dγ, dβ)` from the normalised input `z`,
/// the output gradient `dy` (masked by `relu_out > 0` when a ReLU followed) and each
/// segment's statistics; `dγ`, `dβ` summed over the segments in order.
pub(crate) fn backward_segments(
    z: &[f32],
    dy: &[f32],
    relu_out: Option<&[f32]>,
    (stats, gamma): (&[BatchStats], &[f32]),
    hw: usize,
    ranges: &[std::ops::Range<usize>],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let o = gamma.len();
    // SAFETY: the segments cover `dz`, and `batch_norm_backward_into` writes every value of
    // its segment (`hw`, `O` positive), before `dz` is read.
    let mut dz = unsafe { uninit_vec(z.len()) };
    let (mut dgamma, mut dbeta) = (vec![0f32; o], vec![0f32; o]);
    for (range, stats) in ranges.iter().zip(stats) {
        let (dg, db) = norm::batch_norm_backward_into(
            &z[range.clone()],
            &dy[range.clone()],
            relu_out.map(|y| &y[range.clone()]),
            stats,
            gamma,
            hw,
            &mut dz[range.clone()],
        );
        for (total, part) in dgamma.iter_mut().zip(dg).chain(dbeta.iter_mut().zip(db)) {
            *total += part;
        }
    }
    (dz, dgamma, dbeta)
}

/// The contiguous float32 data of a CPU tensor.
pub(crate) fn tensor_data<'a>(
    guard: &'a candle_core::Storage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match guard {
        candle_core::Storage::Cpu(s) => f32_data(s, layout, what),
        _ => bail!("conv + batch norm: the fast kernel runs on the CPU only ({what})"),
    }
}

impl CustomOp3 for ConvBatchNormTrain {
    fn name(&self) -> &'static str {
        "pixreg-conv2d-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let conv = (self.stride, self.padding);
        let what = "batch norm weight and bias";
        let (g, x, w, gamma_beta) = conv_operands(conv, (s1, l1), (s2, l2), (s3, l3), what)?;
        let hw = g.oh * g.ow;
        let ranges = segment_ranges(&self.segments, g.n, g.o * hw, hw)?;
        let (z, y, stats) = forward_segments(&g, x, w, gamma_beta, &ranges, self.eps, self.relu);
        if self.saved.set(Saved { z, stats }).is_err() {
            bail!("conv + batch norm: an op instance can only be applied once");
        }
        Ok((CpuStorage::F32(y), Shape::from(vec![g.n, g.o, g.oh, g.ow])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gamma_beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else {
            bail!("conv + batch norm backward: the forward pass did not run");
        };
        let g = Geometry::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let (track_x, track_w) = (x.track_op(), w.track_op());
        let gamma = gamma_beta.narrow(0, 0, g.o)?.to_vec1::<f32>()?;
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let (grad, res) = (grad.contiguous()?, res.contiguous()?);
        if grad.dims() != res.dims() || grad.elem_count() != saved.z.len() {
            bail!(
                "conv + batch norm backward: gradient {:?} does not match the output",
                grad.dims()
            );
        }
        let hw = g.oh * g.ow;
        let ranges = segment_ranges(&self.segments, g.n, g.o * hw, hw)?;
        if ranges.len() != saved.stats.len() {
            bail!("conv + batch norm backward: the segments changed since the forward pass");
        }
        let (dz, dgamma, dbeta) = {
            let (g_guard, g_layout) = grad.storage_and_layout();
            let (y_guard, y_layout) = res.storage_and_layout();
            let dy = tensor_data(&g_guard, g_layout, "output gradient")?;
            let relu_out = if self.relu {
                Some(tensor_data(&y_guard, y_layout, "output")?)
            } else {
                None
            };
            backward_segments(&saved.z, dy, relu_out, (&saved.stats, &gamma), hw, &ranges)
        };
        let device = x.device();
        let dgb = if gamma_beta.track_op() {
            let mut both = dgamma;
            both.extend(dbeta);
            Some(Tensor::from_vec(both, 2 * g.o, device)?)
        } else {
            None
        };
        let (x_guard, x_layout) = x.storage_and_layout();
        let (w_guard, w_layout) = w.storage_and_layout();
        let xv = tensor_data(&x_guard, x_layout, "conv2d input")?;
        let wv = tensor_data(&w_guard, w_layout, "conv2d weight")?;
        let dx = if track_x {
            let dx = conv::backward_input(&g, &dz, wv);
            Some(Tensor::from_vec(dx, x.shape(), device)?)
        } else {
            None
        };
        let dw = if track_w {
            let dw = conv::backward_weight(&g, xv, &dz);
            Some(Tensor::from_vec(dw, w.shape(), device)?)
        } else {
            None
        };
        Ok((dx, dw, dgb))
    }
}

/// `relu?(bn_eval(conv2d(x, w)))` on `(x, w, [α; β])` with the batch norm folded into the
/// per-channel `(α, β)` of its running statistics: forward only (apply it with
/// `apply_op3_no_bwd`, to tensors that need no gradient). The convolution kernels apply the
/// affine and the ReLU to each block of their output as soon as they wrote it
/// ([`conv::forward_then`]), so the values equal those of the separate passes and the
/// output is written once.
///
/// Why: evaluation (clean accuracy, noise grids, corruptions, the Boundary Attack's queries)
/// is forward passes only; the separate affine pass was 12.5 % of a width-16 corruption
/// evaluation's samples (`perf`, one thread).
#[derive(Debug, Clone, Copy)]
pub struct ConvBatchNormEval {
    /// Convolution stride (both directions).
    pub stride: usize,
    /// Convolution zero padding (all four sides).
    pub padding: usize,
    /// Whether a ReLU follows the batch norm.
    pub relu: bool,
}

impl CustomOp3 for ConvBatchNormEval {
    fn name(&self) -> &'static str {
        "pixreg-conv2d-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let conv = (self.stride, self.padding);
        let what = "batch norm scale and shift";
        let (g, x, w, (alpha, beta)) = conv_operands(conv, (s1, l1), (s2, l2), (s3, l3), what)?;
        let epilogue = norm::Affine {
            alpha,
            beta,
            relu: self.relu,
        };
        let y = conv::forward_then(&g, x, w, Some(epilogue));
        Ok((CpuStorage::F32(y), Shape::from(vec![g.n, g.o, g.oh, g.ow])))
    }
}
