//! The measurements behind `cargo xtask bench`: the training step of the reference set-up and
//! the per-op times of the heavy kernels, fast path against candle's own ops, with each op's
//! place on this machine's roofline ([`Roofline`]).
//!
//! These are measurements, not tests: run them on an otherwise idle machine.

use std::time::Instant;

use pixreg_models::candle_core::{Device, Tensor, Var};
use rand::distr::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use pixreg_models::kernels;
use pixreg_models::ops::{self, BatchNormStats};
use pixreg_models::{
    Error, ModelConfig, PairBatch, Regularization, ResNet, Result, SgdMomentum, SimilarityLoss,
};

/// One training-step benchmark: the reference step (CE on `batch` images, plus, with
/// `pairs > 0`, the arctanh pair loss on `pairs` pairs with α = 1) and an SGD momentum update.
#[derive(Debug, Clone)]
pub struct TrainStepBench {
    /// The model (10 classes).
    pub config: ModelConfig,
    /// Classification batch size.
    pub batch: usize,
    /// Regularization pairs per step (0: classification only).
    pub pairs: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// Whether the fast CPU kernels are on (off: candle's own ops).
    pub fast_kernels: bool,
    /// Where the step runs. On a CUDA device the fast kernels do not apply (candle's CUDA
    /// ops run) and each step ends with a device synchronisation, so the time is the GPU's.
    pub device: Device,
}

/// What a [`TrainStepBench`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrainStepReport {
    /// Architecture name.
    pub arch: String,
    /// Base channels.
    pub base_channels: usize,
    /// Input shape `[C, H, W]`.
    pub in_shape: [usize; 3],
    /// Classification batch size.
    pub batch: usize,
    /// Pairs per step.
    pub pairs: usize,
    /// Whether the fast CPU kernels were on.
    pub fast_kernels: bool,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Rayon threads (the kernels' pool).
    pub threads: usize,
    /// Every timed step, milliseconds.
    pub step_ms: Vec<f64>,
    /// Median of `step_ms`.
    pub median_ms: f64,
    /// Process CPU time (user + system, all threads) of every timed step, milliseconds
    /// (Linux, 10 ms resolution; empty elsewhere): the work done, whatever the machine's load.
    pub step_cpu_ms: Vec<f64>,
    /// Median of `step_cpu_ms` (`None` where unavailable).
    pub median_cpu_ms: Option<f64>,
    /// Peak resident set size of the process so far (Linux `VmHWM`), MiB; `None` elsewhere.
    pub peak_rss_mb: Option<f64>,
}

fn uniform_tensor(
    rng: &mut ChaCha8Rng,
    shape: &[usize],
    lo: f32,
    hi: f32,
    dev: &Device,
) -> Result<Tensor> {
    let dist =
        Uniform::new(lo, hi).map_err(|e| Error::Config(format!("uniform({lo}, {hi}): {e}")))?;
    let count = shape.iter().product();
    let data: Vec<f32> = (0..count).map(|_| dist.sample(rng)).collect();
    Ok(Tensor::from_vec(data, shape, dev)?)
}

/// The median of some timings (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Peak resident set size of this process in MiB (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) of this process so far in milliseconds (Linux only).
pub fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ = 100 ticks per second.
    Some((utime + stime) * 10.0)
}

/// Runs a training-step benchmark on `bench.device` (switching the fast CPU kernels as asked,
/// and back to their previous state afterwards).
pub fn train_step(bench: &TrainStepBench) -> Result<TrainStepReport> {
    if bench.batch == 0 || bench.steps == 0 {
        return Err(Error::Config("batch and steps must be positive".into()));
    }
    let previous = kernels::enabled();
    kernels::set_enabled(bench.fast_kernels);
    let report = run_train_step(bench);
    kernels::set_enabled(previous);
    report
}

fn run_train_step(bench: &TrainStepBench) -> Result<TrainStepReport> {
    let dev = &bench.device;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut model = ResNet::new(&bench.config, 0, dev)?;
    model.set_training(true);
    let [c, h, w] = bench.config.in_shape;
    let images = uniform_tensor(&mut rng, &[bench.batch, c, h, w], -1.0, 1.0, dev)?;
    let classes = bench.config.num_classes as u32;
    let labels: Vec<u32> = (0..bench.batch as u32).map(|i| i % classes).collect();
    let labels = Tensor::new(labels, dev)?;
    let pair_a = uniform_tensor(&mut rng, &[bench.pairs.max(1), c, h, w], -1.0, 1.0, dev)?;
    let pair_b = uniform_tensor(&mut rng, &[bench.pairs.max(1), c, h, w], -1.0, 1.0, dev)?;
    let targets = uniform_tensor(&mut rng, &[bench.pairs.max(1)], 0.0, 0.9, dev)?;
    let mut opt = SgdMomentum::new(model.named_parameters(), 0.01, 0.9, 0.0);
    let mut step_ms = Vec::with_capacity(bench.steps);
    let mut step_cpu_ms = Vec::with_capacity(bench.steps);
    // As `pixreg train` holds it over an epoch's steps.
    let _spinning = kernels::SpinningThreads::start();
    for step in 0..bench.warmup + bench.steps {
        let start = Instant::now();
        let cpu_start = process_cpu_ms();
        let reg = (bench.pairs > 0).then_some(Regularization {
            pairs: PairBatch {
                a: &pair_a,
                b: &pair_b,
                targets: &targets,
            },
            alpha: 1.0,
            criterion: SimilarityLoss::ArctanhSquare,
        });
        let out = model.training_step_loss(&images, &labels, reg)?;
        let grads = out.loss.backward()?;
        opt.step(&grads)?;
        drop(grads);
        dev.synchronize()?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if step >= bench.warmup {
            step_ms.push(ms);
            if let (Some(a), Some(b)) = (cpu_start, process_cpu_ms()) {
                step_cpu_ms.push(b - a);
            }
        }
    }
    Ok(TrainStepReport {
        arch: bench.config.arch.name().to_string(),
        base_channels: bench.config.base_channels,
        in_shape: bench.config.in_shape,
        batch: bench.batch,
        pairs: bench.pairs,
        fast_kernels: bench.fast_kernels,
        device: device_name(dev),
        threads: kernels::threads(),
        median_ms: median(&step_ms),
        step_ms,
        median_cpu_ms: (!step_cpu_ms.is_empty()).then(|| median(&step_cpu_ms)),
        step_cpu_ms,
        peak_rss_mb: peak_rss_mb(),
    })
}

fn device_name(dev: &Device) -> String {
    match dev.location() {
        pixreg_models::candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        pixreg_models::candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        pixreg_models::candle_core::DeviceLocation::Cpu => "cpu".to_string(),
    }
}

/// One line of the per-op benchmark: an op on one shape, forward and forward + backward,
/// fast kernels against candle's ops (median milliseconds).
#[derive(Debug, Clone, Serialize)]
pub struct OpTiming {
    /// What ran, e.g. `conv3x3 s1 64→64 @32x32`.
    pub op: String,
    /// Input shape.
    pub input: Vec<usize>,
    /// candle's forward.
    pub candle_fwd_ms: f64,
    /// candle's forward + backward (autograd of `Σ y·g`).
    pub candle_fwd_bwd_ms: f64,
    /// Fast kernels' forward.
    pub fast_fwd_ms: f64,
    /// Fast kernels' forward + backward.
    pub fast_fwd_bwd_ms: f64,
    /// Floating-point operations of the forward pass (a multiply-add counts 2).
    pub flops_fwd: f64,
    /// Bytes the forward pass must move at least: its input, parameters and output, once.
    pub bytes_fwd: f64,
}

/// The forward + backward pass does about three times the forward's work and traffic: the
/// output, the input gradient and the weight gradient each cost one forward (exact for a
/// convolution's FLOPs, an estimate for the traffic and for the elementwise ops).
pub const BACKWARD_FACTOR: f64 = 3.0;

/// This machine's limits, measured in the same run as the ops: the f32 matrix-product
/// throughput of a square product too large for the caches to matter (candle's CPU matmul,
/// i.e. the `gemm` crate the fast kernels use, on the benchmark's threads), and the copy
/// bandwidth of buffers far larger than the last-level cache.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Roofline {
    /// GFLOP/s of the large product (the practical FMA peak).
    pub peak_gflops: f64,
    /// GB/s of a parallel copy (bytes read + bytes written, per second).
    pub bandwidth_gbs: f64,
    /// Threads both used.
    pub threads: usize,
}

impl Roofline {
    /// Measures both limits (about two seconds).
    pub fn measure(reps: usize) -> Result<Self> {
        use rayon::prelude::*;
        let cpu = &Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // 1024³: 2.1 GFLOP, 4 MiB per operand: large enough that packing overhead is small.
        let n = 1024;
        let a = uniform_tensor(&mut rng, &[n, n], -1.0, 1.0, cpu)?;
        let b = uniform_tensor(&mut rng, &[n, n], -1.0, 1.0, cpu)?;
        let ms = time_ms(reps.max(3), || a.matmul(&b).map(drop).map_err(Error::from))?;
        let peak_gflops = 2.0 * (n as f64).powi(3) / (ms * 1e6);
        // 256 MiB each way: far beyond any cache of this class of machine.
        let len = 64 << 20;
        let src = vec![1f32; len];
        let mut dst = vec![0f32; len];
        let chunk = 1 << 16;
        let ms = time_ms(reps.max(3), || {
            dst.par_chunks_mut(chunk)
                .zip(src.par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s));
            Ok(())
        })?;
        let bandwidth_gbs = 2.0 * (len * 4) as f64 / (ms * 1e6);
        Ok(Self {
            peak_gflops,
            bandwidth_gbs,
            threads: kernels::threads(),
        })
    }

    /// How close an op's forward + backward is to the bound that applies to it: achieved
    /// FLOP/s over min(peak, intensity × bandwidth), i.e. the larger of the compute and the
    /// traffic fractions. Returns (GFLOP/s, GB/s, fraction). FLOPs are the direct
    /// convolution's, so a Winograd convolution (3×3 stride 1, ≥ 16 channels), which does
    /// fewer, shows its effective rate and can pass 100 %.
    pub fn place(&self, op: &OpTiming) -> (f64, f64, f64) {
        let seconds = op.fast_fwd_bwd_ms / 1e3;
        let gflops = BACKWARD_FACTOR * op.flops_fwd / seconds / 1e9;
        let gbs = BACKWARD_FACTOR * op.bytes_fwd / seconds / 1e9;
        let fraction = (gflops / self.peak_gflops).max(gbs / self.bandwidth_gbs);
        (gflops, gbs, fraction)
    }
}

enum BenchOp {
    Conv {
        stride: usize,
        padding: usize,
    },
    BatchNorm,
    Relu,
    /// A 3×3 stride-1 conv, training-mode batch norm and ReLU as the network runs them (one
    /// fused op on the CPU); `b` is both the batch norm's weight and bias.
    ConvBnReluFused,
    /// The same as three separate ops (conv, then batch norm + ReLU).
    ConvBnReluSeparate,
}

fn run_op(op: &BenchOp, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match *op {
        BenchOp::Conv { stride, padding } => ops::conv2d(x, w, stride, padding),
        BenchOp::BatchNorm => Ok(ops::batch_norm(x, w, b, 1e-5, BatchNormStats::Batch)?.0),
        BenchOp::Relu => ops::relu(x),
        BenchOp::ConvBnReluFused => {
            let conv = ops::ConvSpec {
                weight: w,
                stride: 1,
                padding: 1,
            };
            Ok(ops::conv2d_batch_norm_train(x, conv, b, b, 1e-5, true)?.0)
        }
        BenchOp::ConvBnReluSeparate => {
            let z = ops::conv2d(x, w, 1, 1)?;
            Ok(ops::batch_norm_relu(&z, b, b, 1e-5, BatchNormStats::Batch)?.0)
        }
    }
}

/// Median milliseconds of `reps` runs of `f`, after one warm-up run.
fn time_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&times))
}

fn time_op(op: &BenchOp, x: &Var, w: &Var, b: &Var, reps: usize) -> Result<(f64, f64)> {
    let fwd = time_ms(reps, || {
        run_op(op, x.as_tensor(), w.as_tensor(), b.as_tensor()).map(drop)
    })?;
    let probe = run_op(op, x.as_tensor(), w.as_tensor(), b.as_tensor())?;
    let g = Tensor::ones_like(&probe)?;
    let fwd_bwd = time_ms(reps, || {
        let y = run_op(op, x.as_tensor(), w.as_tensor(), b.as_tensor())?;
        (y * &g)?.sum_all()?.backward()?;
        Ok(())
    })?;
    Ok((fwd, fwd_bwd))
}

/// Per-op times for the shapes of ResNet18 base `base` on `batch` images of `size`×`size`
/// with `in_channels` channels: every distinct convolution, a batch norm, a ReLU, and the
/// first section's conv → batch norm → ReLU as one fused op and as separate ops.
pub fn ops(
    batch: usize,
    in_channels: usize,
    size: usize,
    base: usize,
    reps: usize,
) -> Result<Vec<OpTiming>> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // (label, in channels, out channels, kernel, stride, padding, input size)
    let s = size;
    let convs = [
        ("stem conv7x7 s1", in_channels, base, 7, 1, 3, s),
        ("conv3x3 s1", base, base, 3, 1, 1, s),
        ("conv3x3 s2", base, 2 * base, 3, 2, 1, s),
        ("conv1x1 s2", base, 2 * base, 1, 2, 0, s),
        ("conv3x3 s1", 2 * base, 2 * base, 3, 1, 1, s / 2),
        ("conv3x3 s1", 4 * base, 4 * base, 3, 1, 1, s / 4),
        ("conv3x3 s1", 8 * base, 8 * base, 3, 1, 1, s / 8),
    ];
    let mut out = Vec::new();
    let mut measure = |label: String,
                       op: BenchOp,
                       x_shape: [usize; 4],
                       w_shape: &[usize],
                       (flops_fwd, bytes_fwd): (f64, f64)|
     -> Result<()> {
        let cpu = &Device::Cpu;
        let x = Var::from_tensor(&uniform_tensor(&mut rng, &x_shape, -1.0, 1.0, cpu)?)?;
        let w = Var::from_tensor(&uniform_tensor(&mut rng, w_shape, -0.1, 0.1, cpu)?)?;
        let b = Var::from_tensor(&uniform_tensor(&mut rng, &[x_shape[1]], -0.1, 0.1, cpu)?)?;
        let previous = kernels::enabled();
        kernels::set_enabled(false);
        let candle = time_op(&op, &x, &w, &b, reps);
        kernels::set_enabled(true);
        let fast = time_op(&op, &x, &w, &b, reps);
        kernels::set_enabled(previous);
        let (candle_fwd_ms, candle_fwd_bwd_ms) = candle?;
        let (fast_fwd_ms, fast_fwd_bwd_ms) = fast?;
        out.push(OpTiming {
            op: label,
            input: x_shape.to_vec(),
            candle_fwd_ms,
            candle_fwd_bwd_ms,
            fast_fwd_ms,
            fast_fwd_bwd_ms,
            flops_fwd,
            bytes_fwd,
        });
        Ok(())
    };
    // FLOPs and minimal bytes of a convolution's forward (f32).
    let conv_cost =
        |n: usize, ci: usize, co: usize, k: usize, stride: usize, pad: usize, hw: usize| {
            let out = (hw + 2 * pad - k) / stride + 1;
            let flops = 2.0 * (n * co * out * out * ci * k * k) as f64;
            let bytes = 4.0 * (n * ci * hw * hw + co * ci * k * k + n * co * out * out) as f64;
            (flops, bytes)
        };
    // Batch norm in training mode: mean, variance, normalise and scale (about 8 FLOPs an
    // element), reading the input twice and writing the output once.
    let elements = (batch * base * s * s) as f64;
    let bn_cost = (8.0 * elements, 12.0 * elements);
    for (name, ci, co, k, stride, padding, hw) in convs {
        measure(
            format!("{name} {ci}->{co} @{hw}x{hw}"),
            BenchOp::Conv { stride, padding },
            [batch, ci, hw, hw],
            &[co, ci, k, k],
            conv_cost(batch, ci, co, k, stride, padding, hw),
        )?;
    }
    measure(
        format!("batch_norm train {base}ch @{s}x{s}"),
        BenchOp::BatchNorm,
        [batch, base, s, s],
        &[base],
        bn_cost,
    )?;
    measure(
        format!("relu {base}ch @{s}x{s}"),
        BenchOp::Relu,
        [batch, base, s, s],
        &[base],
        (elements, 8.0 * elements),
    )?;
    for (label, op) in [
        ("fused", BenchOp::ConvBnReluFused),
        ("separate", BenchOp::ConvBnReluSeparate),
    ] {
        let (conv_flops, conv_bytes) = conv_cost(batch, base, base, 3, 1, 1, s);
        measure(
            format!("conv3x3+bn+relu {label} {base}->{base} @{s}x{s}"),
            op,
            [batch, base, s, s],
            &[base, base, 3, 3],
            // Fused, the conv output never goes to memory; the bound counts it once anyway.
            (conv_flops + bn_cost.0 + elements, conv_bytes),
        )?;
    }
    Ok(out)
}

/// Converts a value to `serde_json::Value` (for the benchmark's JSON lines).
pub fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Config(format!("benchmark report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_is_placed_against_the_nearer_of_its_two_bounds() {
        let roofline = Roofline {
            peak_gflops: 100.0,
            bandwidth_gbs: 10.0,
            threads: 1,
        };
        let op = |flops_fwd: f64, bytes_fwd: f64| OpTiming {
            op: String::new(),
            input: Vec::new(),
            candle_fwd_ms: 0.0,
            candle_fwd_bwd_ms: 0.0,
            fast_fwd_ms: 0.0,
            // 3 forward passes' work in 3 ms: the forward's rate.
            fast_fwd_bwd_ms: 3.0,
            flops_fwd,
            bytes_fwd,
        };
        // 50 GFLOP/s, 0.1 GB/s: compute-bound at half the peak.
        let (gflops, gbs, fraction) = roofline.place(&op(5e7, 1e5));
        assert!((gflops - 50.0).abs() < 1e-9 && (gbs - 0.1).abs() < 1e-9);
        assert!((fraction - 0.5).abs() < 1e-9);
        // 1 GFLOP/s, 8 GB/s: memory-bound at 80 % of the bandwidth.
        let (_, _, fraction) = roofline.place(&op(1e6, 8e6));
        assert!((fraction - 0.8).abs() < 1e-9);
    }
}
