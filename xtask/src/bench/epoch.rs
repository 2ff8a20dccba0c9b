//! `cargo xtask bench epoch --config FILE [--pytorch]`: one whole training epoch of a real
//! config (data, pair sampling, steps, validation and test evaluation), pixreg's own loop in
//! this process and, with `--pytorch`, the official loop's work in `tools/bench_epoch.py`,
//! with each side's split of the epoch and the ratio pixreg / PyTorch.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use pixreg_runner::config::{ExperimentConfig, TargetSource};
use pixreg_runner::data::load_task_data;
use pixreg_runner::data::DataSource;
use pixreg_runner::train::{model_config, train, TrainOptions};
use serde_json::{json, Value};

/// `cargo xtask bench epoch`.
#[derive(Debug, clap::Args)]
pub struct EpochArgs {
    /// Experiment config (TOML), as given to `pixreg train`.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config value: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Data directory (default: $PIXREG_DATA_DIR, else ../shared/datasets beside the repo).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also run the epoch in PyTorch (`tools/bench_epoch.py`) and report the ratio.
    #[arg(long)]
    pub pytorch: bool,
    /// Python interpreter for `--pytorch`.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

/// The split keys both sides report, in display order.
const SPLIT: [&str; 6] = [
    "data",
    "pairs",
    "forward",
    "backward",
    "optimizer",
    "evaluation",
];

/// Runs the benchmark; prints both splits, then one JSON object as the last line.
pub fn epoch(args: &EpochArgs, root: &Path) -> Result<()> {
    let config = ExperimentConfig::load(&args.config, &args.overrides)?;
    let data_dir = xtask::resolve_data_dir(root, args.data_dir.as_deref())?;
    let source = DataSource::offline(&data_dir);
    let runs = tempfile::tempdir().context("creating a temporary runs folder")?;
    // Epoch 1 of a fresh run: the untrained model's evaluation (epoch 0) and the target
    // preparation happen before it and are reported apart.
    let outcome = train(
        &config,
        runs.path(),
        &source,
        TrainOptions {
            quiet: true,
            max_epochs: Some(1),
        },
    )?;
    let line = outcome
        .run
        .metric_lines(1)?
        .pop()
        .filter(|l| l.epoch == 1)
        .context("the run committed no first epoch")?;
    let ours = json!({
        "epoch_seconds": line.epoch_seconds,
        "split_seconds": line.split_seconds,
        "targets_seconds": outcome.state.targets_seconds,
        "peak_rss_mb": super::harness::peak_rss_mb(),
        "threads": rayon::current_num_threads(),
    });
    print_split("pixreg", &ours);
    let mut report = json!({ "config": args.config.display().to_string(), "pixreg": ours });
    if args.pytorch {
        match pytorch_epoch(args, &config, &source, &data_dir, root)? {
            Some(torch) => {
                print_split("pytorch", &torch);
                let ratio = report["pixreg"]["epoch_seconds"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    / torch["epoch_seconds"].as_f64().unwrap_or(f64::NAN);
                println!("epoch ratio pixreg / PyTorch: {ratio:.2}");
                report["ratio_vs_pytorch"] = json!(ratio);
                if let (Some(a), Some(b)) = (
                    report["pixreg"]["peak_rss_mb"].as_f64(),
                    torch["peak_rss_mb"].as_f64(),
                ) {
                    report["rss_ratio_vs_pytorch"] = json!(a / b);
                }
                report["pytorch"] = torch;
            }
            None => report["pytorch"] = Value::Null,
        }
    }
    println!("{report}");
    Ok(())
}

fn print_split(who: &str, side: &Value) {
    let total = side["epoch_seconds"].as_f64().unwrap_or(f64::NAN);
    let parts: Vec<String> = SPLIT
        .iter()
        .map(|k| {
            let s = side["split_seconds"][k].as_f64().unwrap_or(0.0);
            format!("{k} {s:.2} s")
        })
        .collect();
    println!("{who}: epoch {total:.2} s = {}", parts.join(", "));
}

/// Runs `tools/bench_epoch.py` on the same work; `None` when torch is missing.
fn pytorch_epoch(
    args: &EpochArgs,
    config: &ExperimentConfig,
    source: &DataSource,
    data_dir: &Path,
    root: &Path,
) -> Result<Option<Value>> {
    let data = load_task_data(config, source)?;
    let model = model_config(config, &data)?;
    let scale = data.model_scale()?;
    let t = &config.training;
    let reg = config.regularization.as_ref();
    let spec = json!({
        "dataset": config.task.dataset.as_str(),
        "data_dir": data_dir,
        "n_train": data.split.train.len(),
        "n_valid": data.split.valid.len(),
        "n_test": data.test_set.n,
        "batch": t.batch_size,
        "lr": t.lr_at(0),
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
        "seed": t.seed,
        "eval_train": t.eval_train,
        "arch": model.arch.name(),
        "base_channels": model.base_channels,
        "in_shape": model.in_shape,
        "scale": scale.scale,
        "offset": scale.offset,
        "alpha": reg.map_or(0.0, |r| r.alpha),
        "threshold": reg.map_or(0.0, |r| r.threshold),
        "range": reg.map_or("all", |r| r.range.name()),
        "n_images": reg.map_or(0, |r| r.n_images),
        "pairs": reg.map_or(0, |r| r.pairs_per_batch),
    });
    let own_images =
        |r: &pixreg_runner::config::RegularizationConfig| r.source == config.task.dataset;
    let arctanh = pixreg_runner::config::SimilarityLoss::ArctanhSquare;
    if reg.is_some_and(|r| r.loss != arctanh || r.targets != TargetSource::Pixel || !own_images(r))
    {
        bail!(
            "the PyTorch epoch covers pixel targets of the task's own images with the arctanh loss"
        );
    }
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string())?;
    let script = root.join("tools").join("bench_epoch.py");
    let spec_arg = vec!["--spec".to_string(), spec_path.display().to_string()];
    Ok(super::run_pytorch(&args.python, &script, &spec_arg)?.map(|(_, report)| report))
}
