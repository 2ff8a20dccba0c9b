//! `cargo xtask bench`: training-step and per-op benchmarks of the CPU path, with the same
//! step run in PyTorch (`tools/bench_train_step.py`) when `torch` is importable.
//!
//! ```text
//! cargo xtask bench train-step --arch resnet18 --base-channels 16 --in-shape 1,32,32 \
//!     --batch 64 --pairs 16 --steps 10 [--pytorch] [--candle-ops] [--device cuda:0]
//! cargo xtask bench ops [--batch 64] [--base-channels 64] [--reps 3]
//! cargo xtask bench epoch --config experiments/… .toml [--set k=v] [--pytorch]
//! ```
//!
//! The last line printed is one JSON object (`median_ms`, `median_cpu_ms`, `peak_rss_mb`, and
//! with `--pytorch` the PyTorch report and the wall-time, CPU-time and RSS ratios). Thread
//! counts follow `RAYON_NUM_THREADS` (pixreg and candle) and `OMP_NUM_THREADS` (PyTorch).
//! Like `pixreg`, the benchmarks keep freed heap memory in the process
//! ([`pixreg_models::kernels::heap`]; `heap` in the JSON says what was done, and
//! `PIXREG_KEEP_MALLOC_DEFAULTS=1` measures glibc's defaults instead) and run candle's own
//! elementwise ops on the calling thread ([`pixreg_models::kernels::candle_pool`];
//! `candle_pool` in the JSON; set `CANDLE_NUM_THREADS` to measure candle's pool).
//! Results are in `docs/performance.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use harness::TrainStepBench;
use pixreg_models::kernels::candle_pool::PoolOutcome;
use pixreg_models::kernels::heap::HeapOutcome;
use pixreg_models::{Arch, ModelConfig};

mod epoch;
mod harness;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// One whole training epoch of a config (data, pairs, steps, evaluation), with its split,
    /// against the official loop's work in PyTorch with `--pytorch`.
    Epoch(epoch::EpochArgs),
    /// Milliseconds per training step (median) and peak RSS of one configuration.
    TrainStep(TrainStepArgs),
    /// Per-op forward and forward+backward times, fast CPU kernels against candle's ops, on
    /// the shapes of ResNet18 (32×32 grayscale input).
    Ops(OpsArgs),
}

/// `cargo xtask bench train-step`.
#[derive(Debug, clap::Args)]
pub struct TrainStepArgs {
    /// Architecture (resnet18, resnet34, resnet50, resnet101).
    #[arg(long, default_value = "resnet18")]
    pub arch: String,
    /// Channels of the stem (64 in the paper).
    #[arg(long, default_value_t = 64)]
    pub base_channels: usize,
    /// Input shape `C,H,W`.
    #[arg(long, default_value = "1,32,32", value_delimiter = ',')]
    pub in_shape: Vec<usize>,
    /// Classification batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Regularization pairs per step (0: classification only).
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Use candle's own CPU ops instead of the fast kernels (the "before").
    #[arg(long)]
    pub candle_ops: bool,
    /// Also run the same step in PyTorch (`tools/bench_train_step.py`, in a child process)
    /// and report the ratio.
    #[arg(long)]
    pub pytorch: bool,
    /// Python interpreter for `--pytorch`.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// `cpu`, or `cuda:N` (xtask built with `--features cuda`); PyTorch runs on the same device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `cargo xtask bench ops`.
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Base channels of the ResNet18 whose layer shapes are timed.
    #[arg(long, default_value_t = 64)]
    pub base_channels: usize,
    /// Timed repetitions per measurement (median reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
}

/// Runs a benchmark command.
pub fn run(cmd: &BenchCommand) -> Result<()> {
    // First, before any thread exists: it sets an environment variable.
    let pool = pixreg_models::kernels::candle_pool::run_candle_ops_on_caller();
    let heap = pixreg_models::kernels::heap::retain_freed_memory();
    // As `pixreg` runs its commands (`on_kernel_pool`).
    pixreg_models::kernels::on_kernel_pool(|| match cmd {
        BenchCommand::TrainStep(args) => train_step(args, heap, pool),
        BenchCommand::Ops(args) => ops(args),
        BenchCommand::Epoch(args) => epoch::epoch(args, &xtask::workspace_root()),
    })
}

fn train_step(args: &TrainStepArgs, heap: HeapOutcome, pool: PoolOutcome) -> Result<()> {
    let in_shape: [usize; 3] = args
        .in_shape
        .clone()
        .try_into()
        .map_err(|v| anyhow::anyhow!("--in-shape needs C,H,W, got {v:?}"))?;
    let arch: Arch = args.arch.parse()?;
    let config = ModelConfig::new(arch, in_shape, 10, args.base_channels);
    let report = harness::train_step(&TrainStepBench {
        config,
        batch: args.batch,
        pairs: args.pairs,
        steps: args.steps,
        warmup: args.warmup,
        fast_kernels: !args.candle_ops,
        device: pixreg_models::device::open_device(&args.device)?,
    })?;
    for (i, ms) in report.step_ms.iter().enumerate() {
        println!("pixreg step {i}: {ms:.1} ms");
    }
    let mut json = harness::to_json(&report)?;
    json["heap"] = heap.to_string().into();
    json["candle_pool"] = pool.to_string().into();
    if args.pytorch {
        let torch = pytorch(args)?;
        if let Some(torch) = torch {
            let torch_ms = torch["median_ms"]
                .as_f64()
                .context("PyTorch report lacks median_ms")?;
            let torch_rss = torch["peak_rss_mb"].as_f64();
            json["ratio_vs_pytorch"] = (report.median_ms / torch_ms).into();
            if let (Some(ours), Some(theirs)) =
                (report.median_cpu_ms, torch["median_cpu_ms"].as_f64())
            {
                json["cpu_ratio_vs_pytorch"] = (ours / theirs).into();
            }
            if let (Some(ours), Some(theirs)) = (report.peak_rss_mb, torch_rss) {
                json["rss_ratio_vs_pytorch"] = (ours / theirs).into();
            }
            json["pytorch"] = torch;
        } else {
            json["pytorch"] = serde_json::Value::Null;
        }
    }
    println!("{json}");
    Ok(())
}

/// Runs `tools/bench_train_step.py` with the same settings; `None` when torch is missing.
fn pytorch(args: &TrainStepArgs) -> Result<Option<serde_json::Value>> {
    // The repository root is an ancestor of this crate's manifest directory.
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tools").join("bench_train_step.py"))
        .find(|path| path.is_file())
        .context("tools/bench_train_step.py not found above the crate directory")?;
    let shape = args
        .in_shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let script_args: Vec<String> = [
        ("--arch", args.arch.clone()),
        ("--base-channels", args.base_channels.to_string()),
        ("--in-shape", shape),
        ("--batch", args.batch.to_string()),
        ("--pairs", args.pairs.to_string()),
        ("--steps", args.steps.to_string()),
        ("--warmup", args.warmup.to_string()),
        ("--device", args.device.clone()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let Some((stdout, report)) = run_pytorch(&args.python, &script, &script_args)? else {
        return Ok(None);
    };
    for line in stdout.lines().filter(|l| l.starts_with("step")) {
        println!("pytorch {line}");
    }
    Ok(Some(report))
}

/// Runs a PyTorch benchmark script of `tools/` with `args`: its stdout and the JSON object of
/// its last line, or `None` (with a message) when the script exits 2 because torch is not
/// importable.
fn run_pytorch(
    python: &str,
    script: &Path,
    args: &[String],
) -> Result<Option<(String, serde_json::Value)>> {
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(2) && stderr.contains("not importable") {
        eprintln!("torch is not importable: PyTorch comparison skipped");
        return Ok(None);
    }
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            stderr.trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let last = stdout
        .lines()
        .last()
        .with_context(|| format!("{} printed nothing", script.display()))?
        .to_string();
    let report = serde_json::from_str(&last)
        .with_context(|| format!("the last line of {} is not JSON: {last}", script.display()))?;
    Ok(Some((stdout, report)))
}

fn ops(args: &OpsArgs) -> Result<()> {
    let roofline = harness::Roofline::measure(args.reps)?;
    println!(
        "machine: {:.1} GFLOP/s (f32 1024³ matmul), {:.1} GB/s (copy), {} thread(s)",
        roofline.peak_gflops, roofline.bandwidth_gbs, roofline.threads
    );
    let timings = harness::ops(args.batch, 1, 32, args.base_channels, args.reps)?;
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>7}",
        "op (ms, median)",
        "candle fwd",
        "fast fwd",
        "candle f+b",
        "fast f+b",
        "GFLOP/s",
        "GB/s",
        "of bound"
    );
    let mut placed = Vec::new();
    for t in &timings {
        let (gflops, gbs, fraction) = roofline.place(t);
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.1} {:>7.1} {:>6.0} %",
            t.op,
            t.candle_fwd_ms,
            t.fast_fwd_ms,
            t.candle_fwd_bwd_ms,
            t.fast_fwd_bwd_ms,
            gflops,
            gbs,
            100.0 * fraction
        );
        let mut json = harness::to_json(t)?;
        json["fast_fwd_bwd_gflops"] = gflops.into();
        json["fast_fwd_bwd_gbs"] = gbs.into();
        json["fraction_of_bound"] = fraction.into();
        placed.push(json);
    }
    println!(
        "{}",
        serde_json::json!({ "roofline": harness::to_json(&roofline)?, "ops": placed })
    );
    Ok(())
}
