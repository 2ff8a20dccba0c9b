//! The `pixreg` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixreg_runner::{commands, predict, rsa_cmd};

/// Pixel-similarity regularization of CNNs (Attias, Pehlevan & Obeid): targets, training,
/// evaluation.
#[derive(Debug, Parser)]
#[command(name = "pixreg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pixel similarity matrix, thresholded targets and selected pairs of a set of images.
    Rsa(rsa_cmd::RsaArgs),
    /// Logits (and pair similarity scores) of a checkpoint on images from a safetensors file.
    Predict(predict::PredictArgs),
    /// Train (or resume) the experiment of a config; evaluates it at the end.
    Train(commands::TrainArgs),
    /// Re-evaluate a saved run with attacks.
    Eval(commands::EvalArgs),
    /// List runs with their status and headline metrics.
    Runs(commands::RunsArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let heap = pixreg_models::heap::retain_freed_memory();
    tracing::debug!("heap: {heap}");
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Rsa(args) => rsa_cmd::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Train(args) => commands::train_command(args),
        Command::Eval(args) => commands::eval_command(args),
        Command::Runs(args) => commands::runs_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
