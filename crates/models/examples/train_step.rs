//! The benchmarks of `cargo xtask bench`, runnable from this crate (the same code: the
//! command module of xtask is compiled in).
//!
//! ```text
//! cargo run --release -p pixreg-models --example train_step -- train-step \
//!     --arch resnet18 --base-channels 16 --in-shape 1,32,32 --batch 64 --pairs 16 --steps 10
//! cargo run --release -p pixreg-models --example train_step -- ops
//! ```
//!
//! The last line printed is one JSON object.

#[path = "../../../xtask/src/bench.rs"]
mod bench;

use clap::Parser;

/// Benchmarks of the CPU training path.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: bench::BenchCommand,
}

fn main() -> anyhow::Result<()> {
    bench::run(&Cli::parse().command)
}
