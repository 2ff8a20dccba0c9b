//! A convolution followed by a training-mode batch norm (and optionally a ReLU) as one candle
//! op, so the convolution's output never becomes a candle tensor of its own.
//!
//! Unfused, candle's backward materialises the gradient of that intermediate tensor through
//! its bookkeeping (a zero tensor plus an add per gradient, each a fresh full-size buffer);
//! here the batch-norm backward hands `dz` straight to the convolution's backward kernels.
//! The arithmetic is exactly that of [`super::conv`] followed by [`super::norm`]'s
//! `BatchNormTrain`.

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::conv::{self, Geometry};
use super::f32_data;
use super::norm::{self, BatchStats};

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
struct Saved {
    /// The convolution's output (the batch norm's input), `[N, O, OH, OW]`.
    z: Vec<f32>,
    /// Its batch statistics.
    stats: BatchStats,
}

/// `bn(conv2d(x, w))` (then `relu` with `relu`) on `(x, w, [γ; β])`, training mode; `[γ; β]`
/// is the batch norm's weight and bias concatenated (`[2·O]`: a custom op takes at most three
/// tensors). The batch statistics are published in [`ConvBatchNormTrain::stats`] once the op
/// has run.
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
    saved: Arc<OnceLock<Saved>>,
}

impl ConvBatchNormTrain {
    /// A new op (it can be applied once).
    pub fn new(stride: usize, padding: usize, eps: f64, relu: bool) -> Self {
        Self {
            stride,
            padding,
            eps,
            relu,
            saved: Arc::new(OnceLock::new()),
        }
    }

    /// The batch statistics of the convolution's output, once the op has run.
    pub fn stats(&self) -> Option<&BatchStats> {
        self.saved.get().map(|s| &s.stats)
    }
}

/// The contiguous float32 data of a CPU tensor.
fn tensor_data<'a>(
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
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        if l3.dims() != [2 * g.o] {
            bail!(
                "conv + batch norm: [weight; bias] {:?} must be [{}]",
                l3.dims(),
                2 * g.o
            );
        }
        let hw = g.oh * g.ow;
        if g.n * hw < 2 {
            bail!("batch norm: training mode needs more than one value per channel");
        }
        let x = f32_data(s1, l1, "conv2d input")?;
        let w = f32_data(s2, l2, "conv2d weight")?;
        let (gamma, beta) = f32_data(s3, l3, "batch norm weight and bias")?.split_at(g.o);
        let z = conv::forward(&g, x, w);
        let stats = norm::batch_stats(&z, g.o, hw, self.eps);
        let (alpha, shift) = norm::fold(&stats, gamma, beta);
        let y = norm::channel_affine(&z, &alpha, Some(&shift), self.relu, hw);
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
        let dz = {
            let (g_guard, g_layout) = grad.storage_and_layout();
            let (y_guard, y_layout) = res.storage_and_layout();
            let dy = tensor_data(&g_guard, g_layout, "output gradient")?;
            let relu_out = if self.relu {
                Some(tensor_data(&y_guard, y_layout, "output")?)
            } else {
                None
            };
            norm::batch_norm_backward(&saved.z, dy, relu_out, &saved.stats, &gamma, g.oh * g.ow)
        };
        let (dz, dgamma, dbeta) = dz;
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
