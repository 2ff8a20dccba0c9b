//! A ResNet basic block in training mode as one candle op:
//! `relu(bn₁(conv₁(relu(bn₀(conv₀(x))))) + shortcut(x))`, where the shortcut is `x` itself or
//! `bn_s(conv_s(x))` (1×1, the block's stride).
//!
//! Why: built from [`super::conv_bn`] and [`super::norm::AddRelu`] ops, the block has four
//! full-size tensors in candle's graph, and candle 0.11's backward gives every gradient it
//! stores a zero tensor and an add (each a fresh buffer and a full pass), plus one more add
//! where `x` fans out to the convolution and the shortcut. Inside one op, the intermediate
//! gradients go straight from kernel to kernel, the residual ReLU's mask is applied inside the
//! second batch norm's backward, and the shortcut's gradient is added to the input gradient
//! in place: at base width 16 (28×28, one thread) those passes were ≈ 8 % of a training step
//! (`perf`: candle's `binary_map` 5.7 %, `memset` 1.9 %; 2.7 % and 1.3 % with this op, the
//! step 222 → 212–218 ms, and 143–151 → 131–134 ms with two threads). The arithmetic is
//! exactly that of the separate ops, in the same order: the op's results are bit-identical
//! to theirs (tested in `pixreg-models`); only where the block's input has a third consumer
//! (a section's output also feeds the similarity head) does candle now add its gradients in
//! another order.
//!
//! The parameters come as one flat tensor (a custom op takes at most three tensors), in the
//! order [`BasicBlockTrain::param_layout`] gives: `conv₀`, `[γ₀; β₀]`, `conv₁`, `[γ₁; β₁]`
//! and, for a projection shortcut, `conv_s`, `[γ_s; β_s]`.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::norm::{self, BatchStats};
use super::{f32_data, uninit_vec};
use crate::conv;
use crate::conv_bn::{backward_segments, forward_segments, segment_ranges, tensor_data};
use crate::gemm::Geometry;

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
struct Saved {
    /// `conv₀(x)`, the first batch norm's input.
    z0: Vec<f32>,
    stats0: Vec<BatchStats>,
    /// `relu(bn₀(z₀))`, the second convolution's input.
    h1: Vec<f32>,
    /// `conv₁(h₁)`, the second batch norm's input.
    z1: Vec<f32>,
    stats1: Vec<BatchStats>,
    /// `conv_s(x)` and its statistics, for a projection shortcut.
    shortcut: Option<(Vec<f32>, Vec<BatchStats>)>,
}

/// The batch statistics of the block's batch norms, per segment.
#[derive(Debug, Clone, Copy)]
pub struct BlockStats<'a> {
    /// The first batch norm's.
    pub first: &'a [BatchStats],
    /// The second batch norm's.
    pub second: &'a [BatchStats],
    /// The projection shortcut's batch norm's.
    pub shortcut: Option<&'a [BatchStats]>,
}

/// A basic block (two 3×3 convolutions, padding 1, the first with the block's stride) on
/// `(x, params)`, training mode; each segment of images is normalised with its own batch
/// statistics (as [`super::conv_bn::ConvBatchNormTrain`]), published in
/// [`BasicBlockTrain::stats`] once the op has run.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_kernels::block::BasicBlockTrain;
///
/// // 4 → 8 channels with stride 2: a projection shortcut.
/// let op = BasicBlockTrain::new(8, 2, true, 1e-5, vec![2]);
/// let x = Tensor::rand(0f32, 1.0, (2, 4, 6, 6), &Device::Cpu)?;
/// let len: usize = op.param_layout(4).iter().sum();
/// let params = Tensor::rand(0.5f32, 1.0, len, &Device::Cpu)?;
/// let y = x.apply_op2(&params, op.clone())?;
/// assert_eq!(y.dims(), &[2, 8, 3, 3]);
/// assert_eq!(op.stats().unwrap().first[0].mean.len(), 8);
/// // The block ends in a ReLU.
/// assert!(y.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BasicBlockTrain {
    /// Output channels of both convolutions (and of the shortcut).
    pub out_channels: usize,
    /// Stride of the first convolution and of the shortcut.
    pub stride: usize,
    /// Whether the shortcut is a 1×1 convolution + batch norm (else the identity, which needs
    /// stride 1 and as many input as output channels).
    pub projection: bool,
    /// Batch-norm variance epsilon.
    pub eps: f64,
    /// Images per batch-norm segment, in order (they must add up to the batch size).
    pub segments: Vec<usize>,
    saved: Arc<OnceLock<Saved>>,
}

/// A batch norm's weight γ and bias β.
type GammaBeta<'a> = (&'a [f32], &'a [f32]);

/// The block's parameters, sliced out of the flat tensor.
struct Params<'a> {
    w0: &'a [f32],
    gb0: GammaBeta<'a>,
    w1: &'a [f32],
    gb1: GammaBeta<'a>,
    shortcut: Option<(&'a [f32], GammaBeta<'a>)>,
}

/// The three convolutions' geometries.
struct Geometries {
    first: Geometry,
    second: Geometry,
    shortcut: Geometry,
}

impl BasicBlockTrain {
    /// A new op (it can be applied once).
    pub fn new(
        out_channels: usize,
        stride: usize,
        projection: bool,
        eps: f64,
        segments: Vec<usize>,
    ) -> Self {
        Self {
            out_channels,
            stride,
            projection,
            eps,
            segments,
            saved: Arc::new(OnceLock::new()),
        }
    }

    /// Lengths of the parameter pieces in the flat tensor, in order, for `in_channels` input
    /// channels: `conv₀` `[O, C, 3, 3]`, `[γ₀; β₀]` `[2·O]`, `conv₁` `[O, O, 3, 3]`,
    /// `[γ₁; β₁]`, then with a projection `conv_s` `[O, C, 1, 1]` and `[γ_s; β_s]`.
    pub fn param_layout(&self, in_channels: usize) -> Vec<usize> {
        let o = self.out_channels;
        let mut pieces = vec![o * in_channels * 9, 2 * o, o * o * 9, 2 * o];
        if self.projection {
            pieces.extend([o * in_channels, 2 * o]);
        }
        pieces
    }

    /// The batch statistics of every batch norm, once the op has run.
    pub fn stats(&self) -> Option<BlockStats<'_>> {
        self.saved.get().map(|s| BlockStats {
            first: &s.stats0,
            second: &s.stats1,
            shortcut: s.shortcut.as_ref().map(|(_, st)| st.as_slice()),
        })
    }

    fn geometries(&self, x_dims: &[usize]) -> candle_core::Result<Geometries> {
        let o = self.out_channels;
        let first = Geometry::new(x_dims, &[o, x_dims[1], 3, 3], self.stride, 1)?;
        let second = Geometry::new(&[first.n, o, first.oh, first.ow], &[o, o, 3, 3], 1, 1)?;
        let shortcut = Geometry::new(x_dims, &[o, x_dims[1], 1, 1], self.stride, 0)?;
        if !self.projection && (self.stride != 1 || first.c != o) {
            bail!(
                "basic block: an identity shortcut needs stride 1 and {o} input channels, got \
                 stride {} and {}",
                self.stride,
                first.c
            );
        }
        if (shortcut.oh, shortcut.ow) != (first.oh, first.ow) {
            bail!("basic block: the shortcut's output does not match the convolutions'");
        }
        Ok(Geometries {
            first,
            second,
            shortcut,
        })
    }

    fn params<'a>(&self, c: usize, flat: &'a [f32]) -> candle_core::Result<Params<'a>> {
        let layout = self.param_layout(c);
        if flat.len() != layout.iter().sum::<usize>() {
            bail!(
                "basic block: {} parameters, expected {} ({layout:?})",
                flat.len(),
                layout.iter().sum::<usize>()
            );
        }
        let mut rest = flat;
        let mut pieces = layout.iter().map(|&len| {
            let (piece, tail) = rest.split_at(len);
            rest = tail;
            piece
        });
        let o = self.out_channels;
        let mut next = || pieces.next().unwrap_or_default();
        let (w0, gb0, w1, gb1) = (next(), next(), next(), next());
        let shortcut = self.projection.then(|| {
            let (ws, gbs) = (next(), next());
            (ws, gbs.split_at(o))
        });
        Ok(Params {
            w0,
            gb0: gb0.split_at(o),
            w1,
            gb1: gb1.split_at(o),
            shortcut,
        })
    }

    fn ranges(&self, g: &Geometry) -> candle_core::Result<Vec<Range<usize>>> {
        let hw = g.oh * g.ow;
        segment_ranges(&self.segments, g.n, g.o * hw, hw)
    }
}

impl CustomOp2 for BasicBlockTrain {
    fn name(&self) -> &'static str {
        "pixreg-basic-block-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.dims().len() != 4 {
            bail!("basic block: input {:?} must be [N, C, H, W]", l1.dims());
        }
        let geo = self.geometries(l1.dims())?;
        let x = f32_data(s1, l1, "basic block input")?;
        let p = self.params(geo.first.c, f32_data(s2, l2, "basic block parameters")?)?;
        let ranges = self.ranges(&geo.first)?;
        let hw = geo.first.oh * geo.first.ow;
        let (z0, h1, stats0) =
            forward_segments(&geo.first, x, p.w0, p.gb0, &ranges, self.eps, true);
        let z1 = conv::forward(&geo.second, &h1, p.w1);
        let shortcut = p
            .shortcut
            .map(|(ws, gbs)| forward_segments(&geo.shortcut, x, ws, gbs, &ranges, self.eps, false));
        let skip = shortcut.as_ref().map_or(x, |(_, s, _)| s.as_slice());
        // SAFETY: the segments cover `y` (`segment_ranges`), and
        // `channel_affine_add_relu_into` writes every value of its segment (`hw` and `O`
        // positive: each segment has ≥ 2 values per channel), before `y` is returned.
        let mut y = unsafe { uninit_vec(z1.len()) };
        let mut stats1 = Vec::with_capacity(ranges.len());
        for range in &ranges {
            let seg_stats = norm::batch_stats(&z1[range.clone()], self.out_channels, hw, self.eps);
            let (alpha, beta) = norm::fold(&seg_stats, p.gb1.0, p.gb1.1);
            norm::channel_affine_add_relu_into(
                &z1[range.clone()],
                (&alpha, &beta),
                &skip[range.clone()],
                hw,
                &mut y[range.clone()],
            );
            stats1.push(seg_stats);
        }
        let saved = Saved {
            z0,
            stats0,
            h1,
            z1,
            stats1,
            shortcut: shortcut.map(|(zs, _, stats)| (zs, stats)),
        };
        if self.saved.set(saved).is_err() {
            bail!("basic block: an op instance can only be applied once");
        }
        let g = &geo.first;
        Ok((CpuStorage::F32(y), Shape::from(vec![g.n, g.o, g.oh, g.ow])))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else {
            bail!("basic block backward: the forward pass did not run");
        };
        let geo = self.geometries(x.dims())?;
        let (track_x, track_params) = (x.track_op(), params.track_op());
        let (x, params) = (x.contiguous()?, params.contiguous()?);
        let (grad, res) = (grad.contiguous()?, res.contiguous()?);
        if grad.dims() != res.dims() || grad.elem_count() != saved.z1.len() {
            bail!(
                "basic block backward: gradient {:?} does not match the output",
                grad.dims()
            );
        }
        let ranges = self.ranges(&geo.first)?;
        if ranges.len() != saved.stats0.len() {
            bail!("basic block backward: the segments changed since the forward pass");
        }
        let hw = geo.first.oh * geo.first.ow;
        let (x_guard, x_layout) = x.storage_and_layout();
        let (p_guard, p_layout) = params.storage_and_layout();
        let (g_guard, g_layout) = grad.storage_and_layout();
        let (y_guard, y_layout) = res.storage_and_layout();
        let xv = tensor_data(&x_guard, x_layout, "basic block input")?;
        let p = self.params(
            geo.first.c,
            tensor_data(&p_guard, p_layout, "basic block parameters")?,
        )?;
        let dy = tensor_data(&g_guard, g_layout, "output gradient")?;
        let y = tensor_data(&y_guard, y_layout, "output")?;

        // The residual ReLU's mask `y > 0` applies to both branches' gradients.
        let (dz1, dg1, db1) = backward_segments(
            &saved.z1,
            dy,
            Some(y),
            (&saved.stats1, p.gb1.0),
            hw,
            &ranges,
        );
        let dh1 = conv::backward_input(&geo.second, &dz1, p.w1);
        let dw1 = conv::backward_weight(&geo.second, &saved.h1, &dz1);
        drop(dz1);
        let (dz0, dg0, db0) = backward_segments(
            &saved.z0,
            &dh1,
            Some(&saved.h1),
            (&saved.stats0, p.gb0.0),
            hw,
            &ranges,
        );
        drop(dh1);
        let dw0 = conv::backward_weight(&geo.first, xv, &dz0);
        let mut dx = track_x.then(|| conv::backward_input(&geo.first, &dz0, p.w0));
        drop(dz0);
        let mut dparams = [dw0, dg0, db0, dw1, dg1, db1].concat();
        match (p.shortcut, &saved.shortcut) {
            (Some((ws, (gamma_s, _))), Some((zs, stats_s))) => {
                let (dzs, dgs, dbs) =
                    backward_segments(zs, dy, Some(y), (stats_s, gamma_s), hw, &ranges);
                dparams.extend(conv::backward_weight(&geo.shortcut, xv, &dzs));
                dparams.extend(dgs);
                dparams.extend(dbs);
                if let Some(dx) = &mut dx {
                    let dxs = conv::backward_input(&geo.shortcut, &dzs, ws);
                    norm::accumulate(dx, &dxs, None);
                }
            }
            (None, None) => {
                if let Some(dx) = &mut dx {
                    norm::accumulate(dx, dy, Some(y));
                }
            }
            _ => bail!("basic block backward: the shortcut changed since the forward pass"),
        }
        let device = x.device();
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, x.shape(), device))
            .transpose()?;
        let dparams = if track_params {
            Some(Tensor::from_vec(dparams, params.shape(), device)?)
        } else {
            None
        };
        Ok((dx, dparams))
    }
}
