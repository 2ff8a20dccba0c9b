//! Training-step and per-op benchmarks (the code behind `cargo xtask bench`).
//!
//! ```text
//! cargo run --release -p pixreg-models --example train_step -- train-step \
//!     --arch resnet18 --base-channels 16 --in-shape 1,32,32 --batch 64 --pairs 16 --steps 10
//! cargo run --release -p pixreg-models --example train_step -- ops
//! ```
//!
//! The last line printed is one JSON object.

use clap::{Parser, Subcommand};
use pixreg_models::bench::{self, TrainStepBench};
use pixreg_models::{Arch, ModelConfig};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Median time and peak RSS of the training step.
    TrainStep {
        #[arg(long, default_value = "resnet18")]
        arch: String,
        #[arg(long, default_value_t = 64)]
        base_channels: usize,
        /// `C,H,W`.
        #[arg(long, default_value = "1,32,32", value_delimiter = ',', num_args = 3)]
        in_shape: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        pairs: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// candle's own ops instead of the fast CPU kernels (the "before").
        #[arg(long)]
        candle_ops: bool,
    },
    /// Per-op times, fast kernels against candle's ops, ResNet18 shapes.
    Ops {
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        base_channels: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::TrainStep {
            arch,
            base_channels,
            in_shape,
            batch,
            pairs,
            steps,
            warmup,
            candle_ops,
        } => {
            let in_shape: [usize; 3] = in_shape
                .try_into()
                .map_err(|v| format!("--in-shape needs C,H,W, got {v:?}"))?;
            let config = ModelConfig::new(arch.parse::<Arch>()?, in_shape, 10, base_channels);
            let report = bench::train_step(&TrainStepBench {
                config,
                batch,
                pairs,
                steps,
                warmup,
                fast_kernels: !candle_ops,
            })?;
            for (i, ms) in report.step_ms.iter().enumerate() {
                println!("step {i}: {ms:.1} ms");
            }
            println!("{}", bench::to_json(&report)?);
        }
        Command::Ops {
            batch,
            base_channels,
            reps,
        } => {
            let timings = bench::ops(batch, 1, 32, base_channels, reps)?;
            println!(
                "{:<34} {:>10} {:>10} {:>10} {:>10}",
                "op", "candle fwd", "fast fwd", "candle f+b", "fast f+b"
            );
            for t in &timings {
                println!(
                    "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                    t.op, t.candle_fwd_ms, t.fast_fwd_ms, t.candle_fwd_bwd_ms, t.fast_fwd_bwd_ms
                );
            }
            println!("{}", bench::to_json(&timings)?);
        }
    }
    Ok(())
}
