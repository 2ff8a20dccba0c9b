//! The `pixreg` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixreg_runner::{commands, plot, predict, rsa_cmd};

/// pixreg: pixel-similarity regularization of CNNs (Attias, Pehlevan & Obeid, arXiv
/// 2410.03952): similarity targets, training, robustness evaluation, run folders.
///
/// Data come from --data-dir or $PIXREG_DATA_DIR; runs live under --runs-dir (default runs/).
#[derive(Debug, Parser)]
#[command(name = "pixreg", version)]
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
    /// Training curves of one or several runs in one figure (SVG and PNG).
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    // First, before any thread exists: it sets an environment variable.
    let pool = pixreg_models::kernels::candle_pool::run_candle_ops_on_caller();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let heap = pixreg_models::kernels::heap::retain_freed_memory();
    tracing::debug!("heap: {heap}; {pool}");
    // A bug must still end in one line and exit 2, not a multi-line panic report.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{place}: {} (please report it)",
            one_line(&message)
        );
        std::process::exit(2);
    }));
    let cli = Cli::parse();
    // On a pool thread, so that the kernels share their work with the other threads
    // rather than waking them for every call (`on_kernel_pool`).
    let result = pixreg_models::kernels::on_kernel_pool(|| match &cli.command {
        Command::Rsa(args) => rsa_cmd::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Train(args) => commands::train_command(args),
        Command::Eval(args) => commands::eval_command(args),
        Command::Runs(args) => commands::runs_command(args),
        Command::Plot(args) => plot::plot_command(args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

/// `text` on one line: parser errors (TOML, JSON) quote the offending source over several
/// lines, and scripts read the first line of stderr.
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
