//! The only places where the model calls its heavy kernels.
//!
//! Every convolution and batch normalisation of the network goes through these functions
//! ([`conv2d`], [`batch_norm`], and in training mode the fused [`conv2d_batch_norm_train`]
//! and [`add_relu`]), so faster kernels can replace them without touching the layers. On the
//! CPU (float32, [`kernels::enabled`]) they run the fast kernels of `pixreg-kernels`;
//! elsewhere candle's own ops. The similarity head's centred cosine and channel mean
//! ([`centered_cosine_halves`], [`update_running_mean`]) dispatch the same way, to the pair
//! kernels or to `rsa-core`'s composition.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use pixreg_kernels::{
    self as kernels,
    block::BasicBlockTrain,
    conv::{Conv2dOp, Geometry},
    conv_bn::{ConvBatchNormEval, ConvBatchNormTrain},
    norm::{AddRelu, BatchNormTrain, BatchStats, ChannelAffine, Relu},
    pair::{self, CenteredCosine},
};
use rsa_core::model_side::{self, COSINE_EPS};

/// 2-D convolution without bias, NCHW input, `[out, in, kh, kw]` kernel, no dilation or groups.
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if kernels::applies(&[x, weight]) {
        Geometry::new(x.dims(), weight.dims(), stride, padding)
            .map_err(|e| Error::Input(e.to_string()))?;
        let op = Conv2dOp { stride, padding };
        return Ok(x.contiguous()?.apply_op2(&weight.contiguous()?, op)?);
    }
    Ok(x.conv2d(weight, padding, stride, 1, 1)?)
}

/// A convolution's weight (`[O, C, kh, kw]`), stride and padding (see [`conv2d`]).
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec<'a> {
    /// The kernel.
    pub weight: &'a Tensor,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (all four sides).
    pub padding: usize,
}

/// `batch_norm(conv2d(x, …))` in training mode, followed by a ReLU with `relu`; returns the
/// output and the batch moments of the convolution's output.
///
/// On the CPU one fused kernel ([`kernels::conv_bn::ConvBatchNormTrain`], the same arithmetic
/// as the separate kernels, but the convolution's output never becomes a candle tensor, which
/// saves candle's gradient bookkeeping for it); elsewhere [`conv2d`] then [`batch_norm`] /
/// [`batch_norm_relu`].
pub fn conv2d_batch_norm_train(
    x: &Tensor,
    conv: ConvSpec<'_>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, BatchMoments)> {
    let n = x.dims().first().copied().unwrap_or(0);
    let (y, mut moments) =
        conv2d_batch_norm_train_segments(x, conv, weight, bias, eps, relu, &[n])?;
    let moments = moments
        .pop()
        .ok_or_else(|| Error::Input("batch norm: training mode produced no statistics".into()))?;
    Ok((y, moments))
}

/// [`conv2d_batch_norm_train`] with the batch split into `segments` (image counts, in order,
/// adding up to the batch size), each normalised with its own batch statistics exactly as if
/// it had been a batch of its own; returns the output and each segment's moments.
///
/// Why: several batches that go through the same layers in training mode (the two halves
/// of the pair forward) can share one convolution per layer.
pub fn conv2d_batch_norm_train_segments(
    x: &Tensor,
    conv: ConvSpec<'_>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
    segments: &[usize],
) -> Result<(Tensor, Vec<BatchMoments>)> {
    check_segments_cover(segments, x.dims().first().copied().unwrap_or(0))?;
    if !kernels::applies(&[x, conv.weight, weight, bias]) {
        let z = conv2d(x, conv.weight, conv.stride, conv.padding)?;
        let mut outputs = Vec::with_capacity(segments.len());
        let mut moments = Vec::with_capacity(segments.len());
        let mut start = 0;
        for &k in segments {
            let part = if segments.len() == 1 {
                z.clone()
            } else {
                z.narrow(0, start, k)?
            };
            start += k;
            let (y, m) = batch_norm_then(&part, weight, bias, eps, BatchNormStats::Batch, relu)?;
            outputs.push(y);
            moments.push(m.ok_or_else(|| {
                Error::Input("batch norm: training mode produced no statistics".into())
            })?);
        }
        let y = match outputs.as_slice() {
            [single] => single.clone(),
            _ => Tensor::cat(&outputs, 0)?,
        };
        return Ok((y, moments));
    }
    let g = Geometry::new(x.dims(), conv.weight.dims(), conv.stride, conv.padding)
        .map_err(|e| Error::Input(e.to_string()))?;
    if weight.dims() != [g.o] || bias.dims() != [g.o] {
        return Err(Error::Input(format!(
            "batch norm weight {:?} / bias {:?} must be [{}]",
            weight.dims(),
            bias.dims(),
            g.o
        )));
    }
    check_segment_sizes(segments, [g.n, g.o, g.oh, g.ow])?;
    let op = ConvBatchNormTrain::new(conv.stride, conv.padding, eps, relu, segments.to_vec());
    let gamma_beta = Tensor::cat(&[weight, bias], 0)?;
    let y = x
        .contiguous()?
        .apply_op3(&conv.weight.contiguous()?, &gamma_beta, op.clone())?;
    let stats = op.stats().ok_or_else(|| {
        Error::Input("conv + batch norm: the kernel produced no statistics".into())
    })?;
    Ok((y, moments_of(stats, x.device())?))
}

/// `batch_norm(conv2d(x, …))` in evaluation mode (running statistics `mean`, `var`),
/// followed by a ReLU with `relu`: [`conv2d`] then [`batch_norm`] / [`batch_norm_relu`].
///
/// On the CPU, when no tensor needs a gradient, one kernel
/// ([`kernels::conv_bn::ConvBatchNormEval`]) applies the batch norm and the ReLU to the
/// convolution's output as it is written: the same values without the separate pass nor the
/// graph bookkeeping of autograd. Otherwise (a white-box attack's input gradient, say) the
/// separate ops.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_batch_norm_eval(
    x: &Tensor,
    conv: ConvSpec<'_>,
    weight: &Tensor,
    bias: &Tensor,
    (mean, var): (&Tensor, &Tensor),
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let stats = BatchNormStats::Running { mean, var };
    let tensors = [x, conv.weight, weight, bias, mean, var];
    if !kernels::applies(&tensors) || tensors.iter().any(|t| t.track_op()) {
        let z = conv2d(x, conv.weight, conv.stride, conv.padding)?;
        return Ok(batch_norm_then(&z, weight, bias, eps, stats, relu)?.0);
    }
    let g = Geometry::new(x.dims(), conv.weight.dims(), conv.stride, conv.padding)
        .map_err(|e| Error::Input(e.to_string()))?;
    for (what, t) in [
        ("weight", weight),
        ("bias", bias),
        ("mean", mean),
        ("variance", var),
    ] {
        if t.dims() != [g.o] {
            return Err(Error::Input(format!(
                "batch norm {what} {:?} must be [{}]",
                t.dims(),
                g.o
            )));
        }
    }
    let (alpha, beta) = running_affine(weight, bias, mean, var, eps)?;
    let op = ConvBatchNormEval {
        stride: conv.stride,
        padding: conv.padding,
        relu,
    };
    let scale_shift = Tensor::cat(&[&alpha, &beta], 0)?;
    Ok(x.contiguous()?
        .apply_op3_no_bwd(&conv.weight.contiguous()?, &scale_shift, &op)?)
}

/// An error unless `segments` (image counts) cover the batch of `n` images.
fn check_segments_cover(segments: &[usize], n: usize) -> Result<()> {
    if segments.is_empty() || segments.iter().sum::<usize>() != n {
        return Err(Error::Input(format!(
            "batch-norm segments {segments:?} must add up to the batch of {n} images"
        )));
    }
    Ok(())
}

/// An error unless every segment of a convolution output `[N, O, OH, OW]` has more than one
/// value per channel (training-mode batch norm needs a variance).
fn check_segment_sizes(segments: &[usize], output: [usize; 4]) -> Result<()> {
    if segments.iter().any(|&k| k * output[2] * output[3] < 2) {
        return Err(Error::Input(format!(
            "batch norm in training mode needs more than one value per channel, got a \
             convolution output of {output:?} in segments of {segments:?} images"
        )));
    }
    Ok(())
}

/// The kernels' per-segment statistics as moments on `device`.
fn moments_of(stats: &[BatchStats], device: &candle_core::Device) -> Result<Vec<BatchMoments>> {
    stats
        .iter()
        .map(|s| {
            Ok(BatchMoments {
                mean: Tensor::from_slice(&s.mean, s.mean.len(), device)?,
                var_unbiased: Tensor::from_slice(&s.var_unbiased, s.var_unbiased.len(), device)?,
            })
        })
        .collect()
}

/// A convolution followed by a batch norm: the convolution and the batch norm's weight and
/// bias (`[O]` each).
#[derive(Debug, Clone, Copy)]
pub struct ConvBnSpec<'a> {
    /// The convolution.
    pub conv: ConvSpec<'a>,
    /// Batch-norm weight γ.
    pub weight: &'a Tensor,
    /// Batch-norm bias β.
    pub bias: &'a Tensor,
}

/// The batch moments of a basic block's batch norms, one per segment each.
#[derive(Debug)]
pub struct BlockMoments {
    /// The first batch norm's.
    pub first: Vec<BatchMoments>,
    /// The second batch norm's.
    pub second: Vec<BatchMoments>,
    /// The projection shortcut's batch norm's.
    pub shortcut: Vec<BatchMoments>,
}

/// A ResNet basic block in training mode, `relu(bn₁(conv₁(relu(bn₀(conv₀(x))))) + s(x))` with
/// `s` the projection `bn_s(conv_s(x))` or the identity, as one CPU kernel
/// ([`kernels::block::BasicBlockTrain`]: the arithmetic of [`conv2d_batch_norm_train_segments`]
/// and [`add_relu`] in the same order, but none of the block's intermediate tensors and
/// gradients passes through candle's graph). Each segment of images is normalised with its
/// own statistics.
///
/// `None` where that kernel does not apply (another device or type, the fast kernels off, or
/// convolutions other than 3×3 / padding 1 with a 1×1 / padding 0 projection of the same
/// stride): the caller composes the block from its layers then.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_models::ops::{basic_block_train_segments, ConvBnSpec, ConvSpec};
///
/// let dev = Device::Cpu;
/// let x = Tensor::rand(0f32, 1.0, (4, 8, 5, 5), &dev)?;
/// let (w0, w1) = (
///     Tensor::rand(-0.1f32, 0.1, (8, 8, 3, 3), &dev)?,
///     Tensor::rand(-0.1f32, 0.1, (8, 8, 3, 3), &dev)?,
/// );
/// let (gamma, beta) = (Tensor::ones(8, candle_core::DType::F32, &dev)?, Tensor::zeros(8, candle_core::DType::F32, &dev)?);
/// let layer = |w| ConvBnSpec {
///     conv: ConvSpec { weight: w, stride: 1, padding: 1 },
///     weight: &gamma,
///     bias: &beta,
/// };
/// // An identity shortcut; the batch in two segments of two images.
/// let (y, moments) = basic_block_train_segments(&x, (layer(&w0), layer(&w1)), None, 1e-5, &[2, 2])?
///     .expect("the fused kernel runs on the CPU");
/// assert_eq!(y.dims(), &[4, 8, 5, 5]);
/// assert_eq!((moments.first.len(), moments.shortcut.len()), (2, 0));
/// # Ok::<(), pixreg_models::Error>(())
/// ```
pub fn basic_block_train_segments(
    x: &Tensor,
    (first, second): (ConvBnSpec<'_>, ConvBnSpec<'_>),
    shortcut: Option<ConvBnSpec<'_>>,
    eps: f64,
    segments: &[usize],
) -> Result<Option<(Tensor, BlockMoments)>> {
    let mut params = Vec::with_capacity(6);
    for part in [Some(&first), Some(&second), shortcut.as_ref()]
        .into_iter()
        .flatten()
    {
        params.extend([part.conv.weight, part.weight, part.bias]);
    }
    if !kernels::applies(&[&[x][..], &params].concat()) {
        return Ok(None);
    }
    let dims4 = |t: &Tensor| t.dims4().ok();
    let (Some((n, c, h, w)), Some((o, c0, 3, 3)), Some((o1, o1c, 3, 3))) = (
        dims4(x),
        dims4(first.conv.weight),
        dims4(second.conv.weight),
    ) else {
        return Ok(None);
    };
    let stride = first.conv.stride;
    let shortcut_fits = match &shortcut {
        Some(s) => {
            dims4(s.conv.weight) == Some((o, c, 1, 1))
                && s.conv.stride == stride
                && s.conv.padding == 0
        }
        None => stride == 1 && c == o,
    };
    let vectors_fit = [&first, &second]
        .into_iter()
        .chain(shortcut.as_ref())
        .all(|p| p.weight.dims() == [o] && p.bias.dims() == [o]);
    if c0 != c
        || (o1, o1c) != (o, o)
        || first.conv.padding != 1
        || (second.conv.stride, second.conv.padding) != (1, 1)
        || !shortcut_fits
        || !vectors_fit
        || h == 0
        || w == 0
    {
        return Ok(None);
    }
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    check_segments_cover(segments, n)?;
    check_segment_sizes(segments, [n, o, oh, ow])?;
    let flat = params
        .iter()
        .map(|t| t.flatten_all())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let flat = Tensor::cat(&flat, 0)?;
    let op = BasicBlockTrain::new(o, stride, shortcut.is_some(), eps, segments.to_vec());
    let y = x.contiguous()?.apply_op2(&flat, op.clone())?;
    let stats = op
        .stats()
        .ok_or_else(|| Error::Input("basic block: the kernel produced no statistics".into()))?;
    let moments = BlockMoments {
        first: moments_of(stats.first, x.device())?,
        second: moments_of(stats.second, x.device())?,
        shortcut: moments_of(stats.shortcut.unwrap_or_default(), x.device())?,
    };
    Ok(Some((y, moments)))
}

/// What batch normalisation normalises with.
#[derive(Debug, Clone, Copy)]
pub enum BatchNormStats<'a> {
    /// Training mode: the statistics of the batch itself (biased variance); they are returned
    /// so the caller can update its running statistics.
    Batch,
    /// Evaluation mode: the given running statistics, shape `[C]`.
    Running {
        /// Running mean `[C]`.
        mean: &'a Tensor,
        /// Running variance `[C]`.
        var: &'a Tensor,
    },
}

/// Per-channel statistics of a training-mode batch, detached from the graph.
#[derive(Debug, Clone)]
pub struct BatchMoments {
    /// Mean over (N, H, W), shape `[C]`.
    pub mean: Tensor,
    /// Unbiased variance over (N, H, W), shape `[C]` (the one PyTorch puts in `running_var`).
    pub var_unbiased: Tensor,
}

/// PyTorch `F.batch_norm` on NCHW input: `y = x·α + β` per channel, with `α = γ·invstd`,
/// `invstd = 1 / sqrt(var + eps)` and `β = bias − mean·α` (the order of PyTorch's CPU kernel).
///
/// With [`BatchNormStats::Batch`] the mean and biased variance of `x` over (N, H, W) are used
/// (and differentiated through) and the detached moments are returned.
///
/// On the CPU the training mode is one fused kernel ([`kernels::norm::BatchNormTrain`], same
/// rounding) and the evaluation mode a per-channel affine kernel; elsewhere
/// [`batch_norm_composite`].
pub fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    stats: BatchNormStats<'_>,
) -> Result<(Tensor, Option<BatchMoments>)> {
    batch_norm_then(x, weight, bias, eps, stats, false)
}

/// `relu(batch_norm(…))`: on the CPU in training mode one fused kernel (the ReLU applied in the
/// normalising pass, its backward folded into the batch-norm backward); elsewhere the two ops.
pub fn batch_norm_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    stats: BatchNormStats<'_>,
) -> Result<(Tensor, Option<BatchMoments>)> {
    batch_norm_then(x, weight, bias, eps, stats, true)
}

/// [`batch_norm`], followed by a ReLU with `relu`.
fn batch_norm_then(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    stats: BatchNormStats<'_>,
    relu: bool,
) -> Result<(Tensor, Option<BatchMoments>)> {
    if !kernels::applies(&[x, weight, bias]) {
        let (y, moments) = batch_norm_composite(x, weight, bias, eps, stats)?;
        let y = if relu { self::relu(&y)? } else { y };
        return Ok((y, moments));
    }
    let (_, c, _, _) = check_batch_norm(x, stats)?;
    match stats {
        BatchNormStats::Batch => {
            let op = BatchNormTrain::new(eps);
            let op = if relu { op.with_relu() } else { op };
            let computed = op.stats.clone();
            let y = x
                .contiguous()?
                .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
            let stats = computed.get().ok_or_else(|| {
                Error::Input("batch norm: the kernel produced no statistics".into())
            })?;
            let moments = BatchMoments {
                mean: Tensor::from_slice(&stats.mean, c, x.device())?,
                var_unbiased: Tensor::from_slice(&stats.var_unbiased, c, x.device())?,
            };
            Ok((y, Some(moments)))
        }
        BatchNormStats::Running { mean, var } => {
            let (alpha, beta) = running_affine(weight, bias, mean, var, eps)?;
            let y = x
                .contiguous()?
                .apply_op3(&alpha, &beta, ChannelAffine { relu })?;
            Ok((y, None))
        }
    }
}

/// The dims of a batch-norm input, checked for the mode (training needs more than one value
/// per channel).
fn check_batch_norm(x: &Tensor, stats: BatchNormStats<'_>) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = x.dims4()?;
    if matches!(stats, BatchNormStats::Batch) && n * h * w < 2 {
        return Err(Error::Input(format!(
            "batch norm in training mode needs more than one value per channel, got input {:?}",
            x.dims()
        )));
    }
    Ok((n, c, h, w))
}

/// Eval-mode `(α, β)`: `α = γ·invstd`, `β = bias − mean·α`, invstd computed in float64.
fn running_affine(
    weight: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let invstd = (var.to_dtype(DType::F64)? + eps)?
        .sqrt()?
        .recip()?
        .to_dtype(weight.dtype())?;
    let alpha = (weight * invstd)?;
    let beta = (bias - (mean * &alpha)?)?;
    Ok((alpha, beta))
}

/// [`batch_norm`] composed of candle ops (the path off the CPU, and the reference the fast
/// kernels are tested against).
pub fn batch_norm_composite(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    stats: BatchNormStats<'_>,
) -> Result<(Tensor, Option<BatchMoments>)> {
    let (n, c, h, w) = check_batch_norm(x, stats)?;
    let (alpha, beta, moments) = match stats {
        BatchNormStats::Batch => {
            let count = n * h * w;
            // As PyTorch's CPU kernel: sums accumulated in float64, the mean rounded to the
            // input dtype, the variance summed from (x − mean)², invstd computed in float64.
            // [C, N*H*W] so both reductions run over the last, contiguous dimension.
            let flat = x.transpose(0, 1)?.reshape((c, count))?;
            let mean = flat
                .to_dtype(DType::F64)?
                .mean_keepdim(D::Minus1)?
                .to_dtype(x.dtype())?;
            let var_sum = flat
                .broadcast_sub(&mean)?
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_keepdim(D::Minus1)?;
            let invstd = ((&var_sum / count as f64)? + eps)?
                .sqrt()?
                .recip()?
                .to_dtype(x.dtype())?;
            let var_unbiased = (var_sum.detach() / (count - 1) as f64)?.to_dtype(x.dtype())?;
            let moments = BatchMoments {
                mean: mean.detach().flatten_all()?,
                var_unbiased: var_unbiased.flatten_all()?,
            };
            let alpha = (weight * invstd.flatten_all()?)?;
            let beta = (bias - (mean.flatten_all()? * &alpha)?)?;
            (alpha, beta, Some(moments))
        }
        BatchNormStats::Running { mean, var } => {
            let (alpha, beta) = running_affine(weight, bias, mean, var, eps)?;
            (alpha, beta, None)
        }
    };
    let y = x
        .broadcast_mul(&alpha.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    Ok((y, moments))
}

/// ReLU with PyTorch's gradient: `max(x, 0)`, derivative 1 where `x > 0` and 0 elsewhere
/// (candle's own `relu` passes the gradient through at exactly 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if kernels::applies(&[x]) {
        return Ok(x.contiguous()?.apply_op1(Relu)?);
    }
    let mask = x.gt(0f64)?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// `relu(a + b)` (the end of a residual block): on the CPU one fused kernel
/// ([`kernels::norm::AddRelu`]), elsewhere the two ops. `a` and `b` must have the same shape.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        return Err(Error::Input(format!(
            "add + relu: shapes differ, {:?} vs {:?}",
            a.dims(),
            b.dims()
        )));
    }
    if kernels::applies(&[a, b]) {
        return Ok(a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)?);
    }
    relu(&(a + b)?)
}

/// `F.avg_pool2d(x, k)` with PyTorch's floor mode: trailing rows/columns that do not fill a
/// window are dropped before pooling (so the backward pass leaves them at zero).
pub fn avg_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (hk, wk) = ((h / k) * k, (w / k) * k);
    let x = if hk != h || wk != w {
        x.narrow(2, 0, hk)?.narrow(3, 0, wk)?
    } else {
        x.clone()
    };
    Ok(x.avg_pool2d(k)?)
}

/// `F.linear`: `x · Wᵀ + b` for `x: [N, in]`, `W: [out, in]`, `b: [out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&weight.t()?)?.broadcast_add(bias)?)
}

/// Checks that a tensor is float32, the only dtype the model computes in.
pub(crate) fn ensure_f32(x: &Tensor, what: &str) -> Result<()> {
    if x.dtype() != DType::F32 {
        return Err(Error::Input(format!(
            "{what} must be float32, got {:?}",
            x.dtype()
        )));
    }
    Ok(())
}

/// Per-channel mean of `a` and `b` together (`[k, C, ...]` each), detached `[C]`
/// (`rsa_core::model_side::batch_channel_mean`; on the CPU one parallel pass).
pub fn batch_channel_mean(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if kernels::applies(&[a, b]) && a.dims() == b.dims() && a.rank() >= 2 {
        return Ok(pair::channel_mean(a, b)?);
    }
    Ok(model_side::batch_channel_mean(a, b)?)
}

/// One running-mean step of the similarity head from the two halves of a pair batch
/// (`rsa_core::model_side::update_running_mean`).
pub fn update_running_mean(running: &Tensor, a: &Tensor, b: &Tensor, beta: f64) -> Result<Tensor> {
    Ok(model_side::running_mean_step(
        running,
        &batch_channel_mean(a, b)?,
        beta,
    )?)
}

/// The `[C]` mean a pair kernel centres with, checked against the features' channels.
fn pair_kernel_mean(features: &Tensor, mean: &Tensor) -> Result<Tensor> {
    let channels = features.dim(1)?;
    if mean.dims() != [channels] {
        return Err(Error::Input(format!(
            "the mean has shape {:?} but the features have {channels} channels",
            mean.dims()
        )));
    }
    Ok(mean.detach().contiguous()?)
}

/// Centred cosine of each pair `(a_i, b_i)` (`rsa_core::model_side::centered_cosine`), `[k]`.
///
/// On the CPU in float32 one fused kernel with its own backward pass (one pass over the
/// features each way, in parallel over pairs); elsewhere the candle composition, which the
/// kernel is tested against (`tests/pair_kernels.rs`).
pub fn centered_cosine(a: &Tensor, b: &Tensor, mean: &Tensor) -> Result<Tensor> {
    if kernels::applies(&[a, b, mean]) && a.rank() >= 2 && a.dims() == b.dims() {
        let mean = pair_kernel_mean(a, mean)?;
        let op = CenteredCosine::new(COSINE_EPS);
        return Ok(a.contiguous()?.apply_op3(&b.contiguous()?, &mean, op)?);
    }
    Ok(model_side::centered_cosine(a, b, mean)?)
}

/// [`centered_cosine`] of the two halves of one batch of feature maps `[2k, C, ...]` (rows `i`
/// and `k + i` are pair `i`), `[k]`.
///
/// Why a halves form: a model that runs both sides of its pairs through the network in one
/// pass gets their features as one tensor; splitting it with `narrow` would make candle's
/// backward pass build a zero-padded full-size gradient for each half and add them up.
pub fn centered_cosine_halves(pairs: &Tensor, mean: &Tensor) -> Result<Tensor> {
    model_side::pair_halves(pairs)?;
    if kernels::applies(&[pairs, mean]) {
        let mean = pair_kernel_mean(pairs, mean)?;
        let op = CenteredCosine::new(COSINE_EPS);
        return Ok(pairs.contiguous()?.apply_op2(&mean, op)?);
    }
    Ok(model_side::centered_cosine_halves(pairs, mean)?)
}
