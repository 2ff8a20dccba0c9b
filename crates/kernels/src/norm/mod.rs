//! Batch normalisation and ReLU on NCHW float32 tensors.
//!
//! Training-mode batch norm follows PyTorch's CPU kernel to the rounding: per-channel sums in
//! float64, the mean rounded to float32, the variance summed in float64 from the float32
//! differences `x − mean`, `invstd = 1/sqrt(var + eps)` in float64 rounded to float32, output
//! `x·α + β` with `α = γ·invstd`, `β = bias − mean·α` in float32. Its backward is PyTorch's
//! (float64 sums of `dy` and `(x − mean)·dy`, then one elementwise pass).

use std::sync::{Arc, OnceLock};

mod residual;
mod sums;

use crate::{f32_data, par_map, par_planes, uninit_vec};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
pub use residual::AddRelu;
pub(crate) use residual::{accumulate, channel_affine_add_relu_into};
use sums::{channel_grad_sums, channel_moments, channel_ranges};

/// Minimum number of values per parallel task in the elementwise passes.
const MIN_TASK: usize = 1 << 14;

/// Per-channel statistics of a training-mode batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Batch mean `[C]` (float64 sum, rounded to float32).
    pub mean: Vec<f32>,
    /// `1/sqrt(biased var + eps)` `[C]`.
    pub invstd: Vec<f32>,
    /// Unbiased variance `[C]` (what PyTorch blends into `running_var`).
    pub var_unbiased: Vec<f32>,
}

/// `(N, C, H·W)` of an NCHW shape.
fn nc_hw(dims: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
    match dims {
        &[n, c, h, w] => Ok((n, c, h * w)),
        _ => bail!("batch norm: expected an NCHW tensor, got {dims:?}"),
    }
}

/// `dy` where the ReLU that followed let the value through (`y > 0`), else 0 (PyTorch's
/// `threshold_backward`).
#[inline(always)]
fn masked(dy: f32, y: f32) -> f32 {
    if y > 0.0 {
        dy
    } else {
        0.0
    }
}

/// `max(v, 0)` computed as `v·[v > 0]`, so NaN propagates (as PyTorch's `relu`).
#[inline(always)]
fn relu1(v: f32) -> f32 {
    v * if v > 0.0 { 1.0 } else { 0.0 }
}

simd_fn! {
    /// `y = x·alpha[c] + beta[c]` (or `x·alpha[c]`), followed by a ReLU with `relu`, over a
    /// run of whole `hw` planes starting at plane `first`.
    fn affine_run(
        y: &mut [f32],
        x: &[f32],
        first: usize,
        hw: usize,
        alpha: &[f32],
        beta: Option<&[f32]>,
        relu: bool,
    ) {
        let c = alpha.len();
        for (p, (yp, xp)) in y.chunks_mut(hw).zip(x.chunks(hw)).enumerate() {
            let ch = (first + p) % c;
            let a = alpha[ch];
            match (beta, relu) {
                (Some(beta), false) => {
                    let b = beta[ch];
                    for (yv, &xv) in yp.iter_mut().zip(xp) {
                        *yv = xv * a + b;
                    }
                }
                (Some(beta), true) => {
                    let b = beta[ch];
                    for (yv, &xv) in yp.iter_mut().zip(xp) {
                        *yv = relu1(xv * a + b);
                    }
                }
                (None, false) => {
                    for (yv, &xv) in yp.iter_mut().zip(xp) {
                        *yv = xv * a;
                    }
                }
                (None, true) => {
                    for (yv, &xv) in yp.iter_mut().zip(xp) {
                        *yv = relu1(xv * a);
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// The batch-norm input gradient over a run of whole `hw` planes starting at plane
    /// `first`; `coef[c] = (mean, Σdy/M, Σ(x−mean)dy·invstd²/M, invstd·γ)`; with `relu_out`,
    /// `dy` masked by `relu_out > 0` (see [`channel_grad_sums`]).
    fn bn_dx_run(
        dx: &mut [f32],
        x: &[f32],
        dy: &[f32],
        relu_out: Option<&[f32]>,
        first: usize,
        hw: usize,
        coef: &[(f32, f32, f32, f32)],
    ) {
        let c = coef.len();
        for (p, (dxp, (xp, gp))) in dx
            .chunks_mut(hw)
            .zip(x.chunks(hw).zip(dy.chunks(hw)))
            .enumerate()
        {
            let ch = (first + p) % c;
            let (m, grad_mean, k, scale) = coef[ch];
            match relu_out {
                None => {
                    for ((d, &xv), &g) in dxp.iter_mut().zip(xp).zip(gp) {
                        *d = (g - grad_mean - (xv - m) * k) * scale;
                    }
                }
                Some(y) => {
                    let yp = &y[p * hw..(p + 1) * hw];
                    for (((d, &xv), &g), &yv) in dxp.iter_mut().zip(xp).zip(gp).zip(yp) {
                        *d = (masked(g, yv) - grad_mean - (xv - m) * k) * scale;
                    }
                }
            }
        }
    }
}

simd_fn! {
    /// `y = x·[x > 0]`.
    fn relu_run(y: &mut [f32], x: &[f32]) {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv = relu1(xv);
        }
    }
}

simd_fn! {
    /// `dx = dy·[x > 0]`.
    fn relu_backward_run(dx: &mut [f32], x: &[f32], dy: &[f32]) {
        for ((d, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = masked(g, xv);
        }
    }
}

simd_fn! {
    /// `v = v·a + b` (then `·[· > 0]` with `relu`) in place.
    fn affine_in_place_run(v: &mut [f32], a: f32, b: f32, relu: bool) {
        if relu {
            for x in v.iter_mut() {
                *x = relu1(*x * a + b);
            }
        } else {
            for x in v.iter_mut() {
                *x = *x * a + b;
            }
        }
    }
}

/// An eval-mode batch norm, and the ReLU after it with `relu`, applied in place to a
/// convolution's output by the convolution kernel right after it wrote it (while it is in
/// cache): each value `z` of channel `o` becomes `z·alpha[o] + beta[o]`, rounded exactly as
/// [`channel_affine`] rounds it.
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Per-channel scale.
    pub alpha: &'a [f32],
    /// Per-channel shift.
    pub beta: &'a [f32],
    /// Whether a ReLU follows.
    pub relu: bool,
}

impl Affine<'_> {
    /// Applies to `values`, all of channel `o`.
    pub(crate) fn apply(&self, values: &mut [f32], o: usize) {
        affine_in_place_run(values, self.alpha[o], self.beta[o], self.relu);
    }

    /// Applies to whole planes of `plane` values, plane `p` of channel `p % O`.
    pub(crate) fn apply_planes(&self, out: &mut [f32], plane: usize) {
        if plane == 0 {
            return;
        }
        let c = self.alpha.len();
        for (p, values) in out.chunks_mut(plane).enumerate() {
            self.apply(values, p % c);
        }
    }
}

/// The batch statistics of `x` (`[N, C, HW]` flattened), PyTorch's way.
pub fn batch_stats(x: &[f32], c: usize, hw: usize, eps: f64) -> BatchStats {
    let count = (x.len() / c.max(1)) as f64;
    let moments = par_map(channel_ranges(c), |chs| channel_moments(x, c, hw, chs));
    let per_channel: Vec<(f32, f32, f32)> = moments
        .into_iter()
        .flatten()
        .map(|(mean, var_sum)| {
            let invstd = (1.0 / (var_sum / count + eps).sqrt()) as f32;
            let unbiased = (var_sum / (count - 1.0)) as f32;
            (mean, invstd, unbiased)
        })
        .collect();
    BatchStats {
        mean: per_channel.iter().map(|p| p.0).collect(),
        invstd: per_channel.iter().map(|p| p.1).collect(),
        var_unbiased: per_channel.iter().map(|p| p.2).collect(),
    }
}

/// `y = x·alpha[c] + beta[c]` (or `x·alpha[c]` without `beta`), followed by a ReLU with
/// `relu`, over an NCHW buffer.
pub fn channel_affine(
    x: &[f32],
    alpha: &[f32],
    beta: Option<&[f32]>,
    relu: bool,
    hw: usize,
) -> Vec<f32> {
    if hw == 0 || alpha.is_empty() {
        return vec![0f32; x.len()];
    }
    // SAFETY: `channel_affine_into` writes every value of `y`, before `y` is returned.
    let mut y = unsafe { uninit_vec(x.len()) };
    channel_affine_into(x, alpha, beta, relu, hw, &mut y);
    y
}

/// [`channel_affine`] into `y` (as long as `x`; `hw` and `alpha` non-empty), every value
/// written.
pub(crate) fn channel_affine_into(
    x: &[f32],
    alpha: &[f32],
    beta: Option<&[f32]>,
    relu: bool,
    hw: usize,
    y: &mut [f32],
) {
    par_planes(y, hw, MIN_TASK, |first, run| {
        let xs = &x[first * hw..first * hw + run.len()];
        affine_run(run, xs, first, hw, alpha, beta, relu);
    });
}

/// `(α, β) = (γ·invstd, bias − mean·α)` in float32, per channel.
pub(crate) fn fold(stats: &BatchStats, weight: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let alpha: Vec<f32> = weight
        .iter()
        .zip(&stats.invstd)
        .map(|(&w, &s)| w * s)
        .collect();
    let beta = bias
        .iter()
        .zip(stats.mean.iter().zip(&alpha))
        .map(|(&b, (&m, &a))| b - m * a)
        .collect();
    (alpha, beta)
}

/// The training-mode backward: `dx` (NCHW), `dγ`, `dβ`. With `relu_out` (the output of a
/// batch norm fused with a ReLU), `dy` is the gradient of the ReLU's output and is masked by
/// `relu_out > 0` on the fly.
pub fn batch_norm_backward(
    x: &[f32],
    dy: &[f32],
    relu_out: Option<&[f32]>,
    stats: &BatchStats,
    weight: &[f32],
    hw: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = weight.len();
    let mut dx = if hw > 0 && c > 0 {
        // SAFETY: `batch_norm_backward_into` below writes every value of `dx` (from the equally
        // long `x` and `dy`; a shorter `dy` panics on slicing, dropping `dx` unread), before
        // `dx` is returned.
        unsafe { uninit_vec(x.len()) }
    } else {
        vec![0f32; x.len()]
    };
    let (dgamma, dbeta) = batch_norm_backward_into(x, dy, relu_out, stats, weight, hw, &mut dx);
    (dx, dgamma, dbeta)
}

/// [`batch_norm_backward`] writing `dx` into `dx` (as long as `x`; every value written when
/// `hw` and `weight` are non-empty); returns `dγ`, `dβ`.
pub(crate) fn batch_norm_backward_into(
    x: &[f32],
    dy: &[f32],
    relu_out: Option<&[f32]>,
    stats: &BatchStats,
    weight: &[f32],
    hw: usize,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let c = weight.len();
    let count = (x.len() / c.max(1)) as f64;
    let sums: Vec<(f64, f64)> = par_map(channel_ranges(c), |chs| {
        channel_grad_sums(x, dy, relu_out, (c, hw), chs, |ch| stats.mean[ch])
    })
    .concat();
    // Per channel: mean, grad_mean = Σdy/M, k = Σ(x−mean)dy·invstd²/M, scale = invstd·γ.
    let coef: Vec<(f32, f32, f32, f32)> = sums
        .iter()
        .enumerate()
        .map(|(ch, &(sum, dot))| {
            let invstd = stats.invstd[ch] as f64;
            (
                stats.mean[ch],
                (sum / count) as f32,
                (dot * invstd * invstd / count) as f32,
                stats.invstd[ch] * weight[ch],
            )
        })
        .collect();
    if hw > 0 && c > 0 {
        par_planes(dx, hw, MIN_TASK, |first, run| {
            let range = first * hw..first * hw + run.len();
            bn_dx_run(
                run,
                &x[range.clone()],
                &dy[range.clone()],
                relu_out.map(|y| &y[range]),
                first,
                hw,
                &coef,
            );
        });
    }
    let dgamma = sums
        .iter()
        .zip(&stats.invstd)
        .map(|(&(_, dot), &s)| (dot * s as f64) as f32)
        .collect();
    let dbeta = sums.iter().map(|&(sum, _)| sum as f32).collect();
    (dgamma, dbeta)
}

/// Training-mode batch norm on `(x, weight, bias)`, optionally followed by a ReLU in the same
/// pass; the batch statistics it computed are published in `stats` (read them after applying
/// the op).
///
/// The fused ReLU saves a separate ReLU op: a full pass over the tensor forward, one backward,
/// and candle's gradient bookkeeping for the intermediate tensor (a zero tensor and an add).
/// Its backward masks the incoming gradient by `output > 0` inside the batch-norm backward
/// passes, which is exact: the output is positive exactly where the normalised value is.
#[derive(Debug, Clone)]
pub struct BatchNormTrain {
    /// Variance epsilon.
    pub eps: f64,
    /// Whether a ReLU follows the normalisation.
    pub relu: bool,
    /// Filled by the forward pass; used by the backward pass.
    pub stats: Arc<OnceLock<BatchStats>>,
}

impl BatchNormTrain {
    /// A new op with empty statistics (no ReLU).
    pub fn new(eps: f64) -> Self {
        Self {
            eps,
            relu: false,
            stats: Arc::new(OnceLock::new()),
        }
    }

    /// The same op followed by a ReLU.
    pub fn with_relu(self) -> Self {
        Self { relu: true, ..self }
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "pixreg-batch-norm-train"
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
        let (n, c, hw) = nc_hw(l1.dims())?;
        if l2.dims() != [c] || l3.dims() != [c] {
            bail!(
                "batch norm: weight {:?} / bias {:?} must be [{c}]",
                l2.dims(),
                l3.dims()
            );
        }
        if n * hw < 2 {
            bail!("batch norm: training mode needs more than one value per channel");
        }
        let x = f32_data(s1, l1, "batch norm input")?;
        let weight = f32_data(s2, l2, "batch norm weight")?;
        let bias = f32_data(s3, l3, "batch norm bias")?;
        let stats = batch_stats(x, c, hw, self.eps);
        let (alpha, beta) = fold(&stats, weight, bias);
        let y = channel_affine(x, &alpha, Some(&beta), self.relu, hw);
        if self.stats.set(stats).is_err() {
            bail!("batch norm: an op instance can only be applied once");
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.get() else {
            bail!("batch norm backward: the forward pass did not run");
        };
        let (_, c, hw) = nc_hw(x.dims())?;
        let weight_values = weight.to_vec1::<f32>()?;
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let res = res.contiguous()?;
        let (x_guard, x_layout) = x.storage_and_layout();
        let (g_guard, g_layout) = grad.storage_and_layout();
        let (y_guard, y_layout) = res.storage_and_layout();
        let (dx, dgamma, dbeta) = match (&*x_guard, &*g_guard, &*y_guard) {
            (
                candle_core::Storage::Cpu(xs),
                candle_core::Storage::Cpu(gs),
                candle_core::Storage::Cpu(ys),
            ) => {
                let xv = f32_data(xs, x_layout, "batch norm input")?;
                let gv = f32_data(gs, g_layout, "batch norm output gradient")?;
                let relu_out = if self.relu {
                    Some(f32_data(ys, y_layout, "batch norm output")?)
                } else {
                    None
                };
                if gv.len() != xv.len() || relu_out.is_some_and(|y| y.len() != xv.len()) {
                    bail!("batch norm backward: gradient/output do not match the input");
                }
                batch_norm_backward(xv, gv, relu_out, stats, &weight_values, hw)
            }
            _ => bail!("batch norm backward: the fast kernel runs on the CPU only"),
        };
        let device = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), device)?;
        let dgamma = weight
            .track_op()
            .then(|| Tensor::from_vec(dgamma, c, device))
            .transpose()?;
        let dbeta = bias
            .track_op()
            .then(|| Tensor::from_vec(dbeta, c, device))
            .transpose()?;
        Ok((Some(dx), dgamma, dbeta))
    }
}

/// `y = x·alpha[c] + beta[c]` on `(x, alpha, beta)` (eval-mode batch norm with folded
/// statistics), followed by a ReLU in the same pass with `relu`; differentiable in all three.
///
/// Why the ReLU inside: evaluation (noise grids, the Boundary Attack's queries) runs only
/// forward passes, where a separate ReLU is one more full pass per layer: 5.7 % of a width-8
/// Boundary Attack's samples (`perf`, one thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelAffine {
    /// Whether a ReLU follows.
    pub relu: bool,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "pixreg-channel-affine"
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
        let (_, c, hw) = nc_hw(l1.dims())?;
        if l2.dims() != [c] || l3.dims() != [c] {
            bail!(
                "channel affine: scale {:?} / shift {:?} must be [{c}]",
                l2.dims(),
                l3.dims()
            );
        }
        let x = f32_data(s1, l1, "affine input")?;
        let alpha = f32_data(s2, l2, "affine scale")?;
        let beta = f32_data(s3, l3, "affine shift")?;
        Ok((
            CpuStorage::F32(channel_affine(x, alpha, Some(beta), self.relu, hw)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The ReLU's backward first: `dy·[y > 0]`, exact since `y > 0` exactly where the
        // affine's output is.
        let grad = if self.relu {
            res.contiguous()?.apply_op2_no_bwd(&grad, &ReluBackward)?
        } else {
            grad
        };
        let dx = x
            .track_op()
            .then(|| grad.apply_op2_no_bwd(alpha, &ChannelScale))
            .transpose()?;
        let (dalpha, dbeta) = if alpha.track_op() || beta.track_op() {
            let sums = x.contiguous()?.apply_op2_no_bwd(&grad, &ChannelGradSums)?;
            (
                alpha.track_op().then(|| sums.get(0)).transpose()?,
                beta.track_op().then(|| sums.get(1)).transpose()?,
            )
        } else {
            (None, None)
        };
        Ok((dx, dalpha, dbeta))
    }
}

/// `(x, alpha) ↦ x·alpha[c]` (no backward of its own).
#[derive(Debug, Clone, Copy)]
pub struct ChannelScale;

impl CustomOp2 for ChannelScale {
    fn name(&self) -> &'static str {
        "pixreg-channel-scale"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, hw) = nc_hw(l1.dims())?;
        if l2.dims() != [c] {
            bail!("channel scale: scale {:?} must be [{c}]", l2.dims());
        }
        let x = f32_data(s1, l1, "scale input")?;
        let alpha = f32_data(s2, l2, "scale")?;
        Ok((
            CpuStorage::F32(channel_affine(x, alpha, None, false, hw)),
            l1.shape().clone(),
        ))
    }
}

/// `(x, dy) ↦ [[Σ x·dy], [Σ dy]]` per channel, `[2, C]` (float64 sums; no backward).
#[derive(Debug, Clone, Copy)]
pub struct ChannelGradSums;

impl CustomOp2 for ChannelGradSums {
    fn name(&self) -> &'static str {
        "pixreg-channel-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, hw) = nc_hw(l1.dims())?;
        if l1.dims() != l2.dims() {
            bail!("channel sums: {:?} vs {:?}", l1.dims(), l2.dims());
        }
        let x = f32_data(s1, l1, "input")?;
        let dy = f32_data(s2, l2, "gradient")?;
        let sums: Vec<(f64, f64)> = par_map(channel_ranges(c), |chs| {
            channel_grad_sums(x, dy, None, (c, hw), chs, |_| 0.0)
        })
        .concat();
        let mut out: Vec<f32> = sums.iter().map(|&(_, dot)| dot as f32).collect();
        out.extend(sums.iter().map(|&(sum, _)| sum as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// ReLU `max(x, 0)` (computed as `x·[x > 0]`, so NaN propagates); backward `dy·[x > 0]`
/// (gradient 0 at exactly 0, as PyTorch).
#[derive(Debug, Clone, Copy)]
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "pixreg-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, "relu input")?;
        // SAFETY: `par_planes` hands out all of `y` in runs, and `relu_run` writes every value
        // of its run (from the equally long run of `x`), before `y` is returned.
        let mut y = unsafe { uninit_vec(x.len()) };
        par_planes(&mut y, 1, MIN_TASK, |first, run| {
            relu_run(run, &x[first..first + run.len()]);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &ReluBackward)?,
        ))
    }
}

/// `(x, dy) ↦ dy·[x > 0]` (no backward of its own).
#[derive(Debug, Clone, Copy)]
pub struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "pixreg-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("relu backward: {:?} vs {:?}", l1.dims(), l2.dims());
        }
        let x = f32_data(s1, l1, "relu input")?;
        let dy = f32_data(s2, l2, "relu output gradient")?;
        // SAFETY: `x` and `dy` have the same dims (checked above), `par_planes` hands out all of
        // `dx` in runs, and `relu_backward_run` writes every value of its run, before `dx` is
        // returned.
        let mut dx = unsafe { uninit_vec(x.len()) };
        par_planes(&mut dx, 1, MIN_TASK, |first, run| {
            let range = first..first + run.len();
            relu_backward_run(run, &x[range.clone()], &dy[range]);
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
