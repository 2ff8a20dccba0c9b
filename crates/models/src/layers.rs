//! Layers with PyTorch's parameters, buffers, state-dict names and default initialisation.

use candle_core::{DType, Device, Tensor, Var};
use rand::distr::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::ops;

/// BatchNorm epsilon (PyTorch default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm running-statistics momentum (PyTorch default).
pub const BN_MOMENTUM: f64 = 0.1;

/// How new parameters are filled.
pub(crate) enum Init {
    /// PyTorch's default initialisation, from a seeded ChaCha8 stream.
    PyTorch(Box<ChaCha8Rng>),
    /// Zeros everywhere (BN weights and variances still 1): a skeleton to load a checkpoint into.
    Skeleton,
}

impl Init {
    pub(crate) fn seeded(seed: u64) -> Self {
        Init::PyTorch(Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// `U(−bound, bound)` of the given shape, bound = 1/√fan_in: PyTorch's
    /// `kaiming_uniform_(a=√5)` for conv/linear weights and its linear-bias init.
    fn uniform_fan_in(&mut self, shape: &[usize], fan_in: usize, dev: &Device) -> Result<Var> {
        let count: usize = shape.iter().product();
        let data = match self {
            Init::PyTorch(rng) => {
                let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                let dist = Uniform::new(-bound, bound)
                    .map_err(|e| Error::Config(format!("initialisation bound {bound}: {e}")))?;
                (0..count)
                    .map(|_| dist.sample(rng.as_mut()) as f32)
                    .collect()
            }
            Init::Skeleton => vec![0f32; count],
        };
        Ok(Var::from_tensor(&Tensor::from_vec(data, shape, dev)?)?)
    }
}

/// A named trainable parameter or buffer, as it appears in a PyTorch `state_dict`.
pub(crate) enum StateMut<'a> {
    /// A parameter (set in place).
    Param(&'a Var),
    /// A float buffer (replaced).
    Buffer(&'a mut Tensor),
    /// An int64 counter (`num_batches_tracked`).
    Counter(&'a mut i64),
}

/// `nn.Conv2d(in, out, k, stride, padding, bias=False)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub(crate) fn new(
        init: &mut Init,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dev: &Device,
    ) -> Result<Self> {
        let weight = init.uniform_fan_in(&[out_c, in_c, k, k], in_c * k * k, dev)?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    /// Applies the convolution (through [`ops::conv2d`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, self.weight.as_tensor(), self.stride, self.padding)
    }

    pub(crate) fn state<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, StateMut<'a>)>) {
        out.push((format!("{prefix}.weight"), StateMut::Param(&self.weight)));
    }
}

/// `nn.BatchNorm2d(C)` with PyTorch semantics (eps 1e-5, momentum 0.1, affine, tracked stats).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Var,
    bias: Var,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: i64,
    tracking: Tracking,
}

/// How a training-mode pass blends its batch moments into the running statistics.
#[derive(Debug, Clone, Copy)]
enum Tracking {
    /// PyTorch's momentum 0.1, each batch counted in `num_batches_tracked`.
    Exponential,
    /// The plain average of the batches seen since the recalibration began (PyTorch's
    /// `momentum=None`); `counter` is `num_batches_tracked` as it was then, restored at the end.
    Cumulative { batches: u64, counter: i64 },
}

impl BatchNorm2d {
    pub(crate) fn new(channels: usize, dev: &Device) -> Result<Self> {
        Ok(Self {
            weight: Var::ones(channels, DType::F32, dev)?,
            bias: Var::zeros(channels, DType::F32, dev)?,
            running_mean: Tensor::zeros(channels, DType::F32, dev)?,
            running_var: Tensor::ones(channels, DType::F32, dev)?,
            num_batches_tracked: 0,
            tracking: Tracking::Exponential,
        })
    }

    /// Training mode: normalises with the batch statistics and updates the running statistics
    /// (`r ← 0.9·r + 0.1·batch`, unbiased variance) and the batch counter.
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        let (y, moments) = ops::batch_norm(
            x,
            self.weight.as_tensor(),
            self.bias.as_tensor(),
            BN_EPS,
            ops::BatchNormStats::Batch,
        )?;
        if let Some(m) = moments {
            self.track(m)?;
        }
        self.num_batches_tracked += 1;
        Ok(y)
    }

    /// Training mode applied to `conv(x)` (then a ReLU with `relu`), convolution and batch
    /// norm fused into one kernel on the CPU ([`ops::conv2d_batch_norm_train_segments`]); each
    /// segment of `segments` (image counts, in order, adding up to the batch) is normalised
    /// with its own statistics and updates the running statistics and the batch counter in
    /// turn, exactly as if the segments had gone through [`BatchNorm2d::forward_train`] one
    /// after the other.
    pub fn forward_train_conv(
        &mut self,
        conv: &Conv2d,
        x: &Tensor,
        relu: bool,
        segments: &[usize],
    ) -> Result<Tensor> {
        let spec = ops::ConvSpec {
            weight: conv.weight.as_tensor(),
            stride: conv.stride,
            padding: conv.padding,
        };
        let (y, moments) = ops::conv2d_batch_norm_train_segments(
            x,
            spec,
            self.weight.as_tensor(),
            self.bias.as_tensor(),
            BN_EPS,
            relu,
            segments,
        )?;
        self.track_all(moments)?;
        Ok(y)
    }

    /// `relu?(self(conv(x)))` in evaluation mode with every parameter detached, for callers
    /// that need no parameter gradient ([`ops::conv2d_batch_norm_eval`]: one pass on the CPU
    /// when `x` needs no gradient either).
    pub(crate) fn forward_conv_inference(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        relu: bool,
    ) -> Result<Tensor> {
        let w = conv.weight.as_tensor().detach();
        let spec = ops::ConvSpec {
            weight: &w,
            stride: conv.stride,
            padding: conv.padding,
        };
        let (gamma, beta) = (
            self.weight.as_tensor().detach(),
            self.bias.as_tensor().detach(),
        );
        let stats = (&self.running_mean, &self.running_var);
        ops::conv2d_batch_norm_eval(x, spec, &gamma, &beta, stats, BN_EPS, relu)
    }

    /// This layer as the batch norm of a fused convolution + batch norm (`conv`'s kernel and
    /// geometry, this layer's weight and bias), for [`ops::basic_block_train_segments`].
    pub(crate) fn spec<'a>(&'a self, conv: &'a Conv2d) -> ops::ConvBnSpec<'a> {
        ops::ConvBnSpec {
            conv: ops::ConvSpec {
                weight: conv.weight.as_tensor(),
                stride: conv.stride,
                padding: conv.padding,
            },
            weight: self.weight.as_tensor(),
            bias: self.bias.as_tensor(),
        }
    }

    /// Blends the moments of each segment of a training-mode pass into the running
    /// statistics, in order, one tracked batch each.
    pub(crate) fn track_all(&mut self, moments: Vec<ops::BatchMoments>) -> Result<()> {
        for m in moments {
            self.track(m)?;
            self.num_batches_tracked += 1;
        }
        Ok(())
    }

    /// From now on, training-mode passes replace the running statistics by the average of
    /// their batch moments (see [`crate::resnet::BnRecalibration`]).
    pub(crate) fn begin_recalibration(&mut self) {
        self.tracking = Tracking::Cumulative {
            batches: 0,
            counter: self.num_batches_tracked,
        };
    }

    /// Back to PyTorch's momentum, the batch counter as it was before the recalibration.
    pub(crate) fn end_recalibration(&mut self) {
        if let Tracking::Cumulative { counter, .. } = self.tracking {
            self.num_batches_tracked = counter;
        }
        self.tracking = Tracking::Exponential;
    }

    /// Blends batch moments into the running statistics (`r ← 0.9·r + 0.1·batch`, or the
    /// running average of the batches while recalibrating).
    fn track(&mut self, m: ops::BatchMoments) -> Result<()> {
        let factor = match &mut self.tracking {
            Tracking::Exponential => BN_MOMENTUM,
            Tracking::Cumulative { batches, .. } => {
                *batches += 1;
                if *batches == 1 {
                    // The first batch replaces the old statistics outright (0·r would turn an
                    // infinite running variance into NaN).
                    self.running_mean = m.mean.detach();
                    self.running_var = m.var_unbiased.detach();
                    return Ok(());
                }
                1.0 / *batches as f64
            }
        };
        self.running_mean = ((&self.running_mean * (1.0 - factor))? + (m.mean * factor)?)?.detach();
        self.running_var =
            ((&self.running_var * (1.0 - factor))? + (m.var_unbiased * factor)?)?.detach();
        Ok(())
    }

    /// Evaluation mode: normalises with the running statistics; changes nothing.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.eval_then(x, false)
    }

    /// `relu(forward_eval(x))`, the ReLU applied in the normalising pass on the CPU.
    pub fn forward_eval_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.eval_then(x, true)
    }

    fn eval_then(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let stats = ops::BatchNormStats::Running {
            mean: &self.running_mean,
            var: &self.running_var,
        };
        let (weight, bias) = (self.weight.as_tensor(), self.bias.as_tensor());
        let (y, _) = if relu {
            ops::batch_norm_relu(x, weight, bias, BN_EPS, stats)?
        } else {
            ops::batch_norm(x, weight, bias, BN_EPS, stats)?
        };
        Ok(y)
    }

    /// Either mode.
    pub fn forward_t(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    pub(crate) fn state<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, StateMut<'a>)>) {
        out.push((format!("{prefix}.weight"), StateMut::Param(&self.weight)));
        out.push((format!("{prefix}.bias"), StateMut::Param(&self.bias)));
        out.push((
            format!("{prefix}.running_mean"),
            StateMut::Buffer(&mut self.running_mean),
        ));
        out.push((
            format!("{prefix}.running_var"),
            StateMut::Buffer(&mut self.running_var),
        ));
        out.push((
            format!("{prefix}.num_batches_tracked"),
            StateMut::Counter(&mut self.num_batches_tracked),
        ));
    }
}

/// `nn.Linear(in, out)` with bias.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    pub(crate) fn new(init: &mut Init, in_f: usize, out_f: usize, dev: &Device) -> Result<Self> {
        let weight = init.uniform_fan_in(&[out_f, in_f], in_f, dev)?;
        let bias = init.uniform_fan_in(&[out_f], in_f, dev)?;
        Ok(Self { weight, bias })
    }

    /// `x · Wᵀ + b` (through [`ops::linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, self.weight.as_tensor(), self.bias.as_tensor())
    }

    /// [`Linear::forward`] with the parameters detached (no gradient reaches them).
    pub(crate) fn forward_detached(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(
            x,
            &self.weight.as_tensor().detach(),
            &self.bias.as_tensor().detach(),
        )
    }

    pub(crate) fn state<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, StateMut<'a>)>) {
        out.push((format!("{prefix}.weight"), StateMut::Param(&self.weight)));
        out.push((format!("{prefix}.bias"), StateMut::Param(&self.bias)));
    }
}
