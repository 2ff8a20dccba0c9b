//! `pixreg train`, `pixreg eval` and `pixreg runs`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::attack::AttackName;
use crate::config::ExperimentConfig;
use crate::data::load_task_data;
use crate::data::DataSource;
use crate::eval::{evaluate_loaded, evaluate_run};
use crate::results::{AttackReport, CurveResult, RunResults, StoredResults};
use crate::run_dir::{RunDir, RunStatus};
use crate::train::{train, TrainOptions};

/// Arguments of `pixreg train`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    pixreg train --config crates/runner/configs/fashion-mnist-reg-demo.toml --data-dir ../shared/datasets\n  \
    pixreg train --config exp.toml --set training.epochs=2 --set regularization.alpha=4")]
pub struct TrainArgs {
    /// Experiment config (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config value: `section.key=value` (TOML syntax; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Folder holding one subfolder per run.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Data directory (default: $PIXREG_DATA_DIR; required when that is unset: pixreg has no
    /// built-in default, `cargo xtask` defaults to ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download a dataset missing from the data directory from the Hugging Face hub.
    #[arg(long)]
    pub download: bool,
    /// Do not check the data files against the shipped checksums.
    #[arg(long)]
    pub no_verify: bool,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
    /// Train at most this many epochs now; the run stays resumable.
    #[arg(long)]
    pub max_epochs: Option<usize>,
}

/// Arguments of `pixreg eval`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    pixreg eval --run runs/fashion-mnist-reg-0123456789abcdef --attacks gaussian,boundary \\\n      \
    --surrogate runs/fashion-mnist-base-fedcba9876543210")]
pub struct EvalArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Comma-separated attacks: gaussian, uniform, saltpepper, fgsm, boundary,
    /// boundary-converged, hsj, pgd-linf, pgd-l2, corruptions (default: the config's).
    #[arg(long, value_delimiter = ',')]
    pub attacks: Option<Vec<AttackName>>,
    /// Run folder of the unregularized surrogate for transferred FGSM (default: the config's;
    /// without one, FGSM is white-box).
    #[arg(long)]
    pub surrogate: Option<PathBuf>,
    /// Data directory (default: $PIXREG_DATA_DIR; required when that is unset: pixreg has no
    /// built-in default, `cargo xtask` defaults to ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download a dataset missing from the data directory from the Hugging Face hub.
    #[arg(long)]
    pub download: bool,
    /// Do not check the data files against the shipped checksums.
    #[arg(long)]
    pub no_verify: bool,
    /// Override an `[evaluation]` setting of the run's config for this evaluation, e.g.
    /// `--set evaluation.boundary_images=100` (repeatable; other sections would describe a
    /// different model and are refused).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Evaluate a run that is still training: its best checkpoint so far, with every result
    /// marked `"provisional": true` (dropped once the run is trained).
    #[arg(long)]
    pub provisional: bool,
}

/// Arguments of `pixreg runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Folder holding one subfolder per run.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Only runs whose id contains this text (e.g. `fashion-mnist-reg`).
    #[arg(long)]
    pub filter: Option<String>,
    /// One JSON object per run (a JSON array) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `pixreg train`: train, evaluate, mark finished.
pub fn train_command(args: &TrainArgs) -> Result<()> {
    let config = ExperimentConfig::load(&args.config, &args.overrides)?;
    let mut data = DataSource::resolve(args.data_dir.as_deref(), args.download)?;
    if args.no_verify {
        data = data.without_verification();
    }
    let outcome = train(
        &config,
        &args.runs_dir,
        &data,
        TrainOptions {
            quiet: args.quiet,
            max_epochs: args.max_epochs,
        },
    )?;
    let run = &outcome.run;
    if outcome.already_finished {
        println!(
            "run {} is already finished; results in {}",
            run.id(),
            run.results().display()
        );
        return Ok(());
    }
    let mut state = outcome.state.clone();
    if state.status != RunStatus::Trained {
        println!(
            "run {} stopped after epoch {}; run the same command to resume",
            run.id(),
            state.completed_epochs
        );
        return Ok(());
    }
    let surrogate = config.evaluation.surrogate.as_deref();
    let attacks = &config.evaluation.attacks;
    let loaded = match outcome.data {
        Some(loaded) => loaded,
        None => load_task_data(&config, &data)?,
    };
    let results = evaluate_loaded(
        run,
        &outcome.lock,
        &config,
        &loaded,
        attacks,
        surrogate,
        false,
    )?;
    state.status = RunStatus::Finished;
    run.save_state(&state)?;
    println!(
        "run {} finished: best epoch {}, clean test accuracy {:.2} %; results in {}",
        run.id(),
        state.best_epoch,
        results.clean.result.test_acc,
        run.results().display()
    );
    Ok(())
}

/// `pixreg eval`: re-evaluate a saved run.
pub fn eval_command(args: &EvalArgs) -> Result<()> {
    let run = RunDir::open(&args.run)?;
    let stored = ExperimentConfig::load(&run.config(), &[])?;
    let config = ExperimentConfig::load(&run.config(), &args.overrides)?;
    if config.training_toml()? != stored.training_toml()? {
        bail!(
            "pixreg eval --set may change [evaluation] settings only; {:?} would describe another \
             model than run {}",
            args.overrides,
            run.id()
        );
    }
    let mut data = DataSource::resolve(args.data_dir.as_deref(), args.download)?;
    if args.no_verify {
        data = data.without_verification();
    }
    let attacks = match &args.attacks {
        Some(names) => names.iter().map(|&n| config.evaluation.spec(n)).collect(),
        None => config.evaluation.attacks.clone(),
    };
    let surrogate = args
        .surrogate
        .as_deref()
        .or(config.evaluation.surrogate.as_deref());
    let results = evaluate_run(&run, &config, &data, &attacks, surrogate, args.provisional)?;
    print_results(&results);
    Ok(())
}

/// A compact table of `results.json`.
fn print_results(results: &RunResults) {
    println!(
        "run {}  clean test accuracy {:.2} %",
        results.run, results.clean.result.test_acc
    );
    for (name, entry) in results.attacks.iter() {
        let name = name.as_str();
        match &entry.result {
            AttackReport::Curve(c) => {
                let cells: Vec<String> = c
                    .epsilons
                    .iter()
                    .zip(&c.accuracy)
                    .map(|(e, a)| format!("{e:.3}:{a:.1}"))
                    .collect();
                println!("  {name:<20} {}", cells.join("  "));
            }
            AttackReport::Decision(d) => println!(
                "  {name:<20} median per-pixel squared L2 {:.6} (success {:.1} %, {:.0} queries \
                 in {:.1} s)",
                d.mean_of_medians, d.success_rate, d.queries, d.wall_seconds
            ),
            AttackReport::Corruptions(c) => println!(
                "  {name:<20} mean corrupted accuracy {:.1} %",
                c.mean_corrupted_accuracy
            ),
        }
    }
}

/// `pixreg runs`: one line (or JSON object) per run folder.
pub fn runs_command(args: &RunsArgs) -> Result<()> {
    let runs = list_runs(&args.runs_dir, args.filter.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs in {}", args.runs_dir.display());
        return Ok(());
    }
    println!(
        "{:<40} {:<9} {:>6} {:>4} {:>5} {:>4} {:<5} {:>8} {:>9} {:>10} {:>8}",
        "run",
        "status",
        "epochs",
        "best",
        "alpha",
        "Th",
        "range",
        "test acc",
        "gaussian",
        "boundary",
        "train s"
    );
    let num =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
    let count = |v: Option<usize>| v.map_or("-".to_string(), |x| x.to_string());
    for r in &runs {
        println!(
            "{:<40} {:<9} {:>6} {:>4} {:>5} {:>4} {:<5} {:>8} {:>9} {:>10} {:>8}",
            r.run,
            r.status,
            count(r.completed_epochs),
            count(r.best_epoch),
            num(r.alpha, 1),
            num(r.threshold, 2),
            r.range.as_deref().unwrap_or("-"),
            num(r.test_acc, 2),
            num(r.gaussian, 1),
            r.boundary.map_or("-".to_string(), |x| format!("{x:.3e}")),
            num(r.train_seconds, 0),
        );
    }
    Ok(())
}

/// One line of `pixreg runs` (an object of `pixreg runs --json`); `null` where a run has none.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run: String,
    /// `new`, `running`, `trained` or `finished`.
    pub status: String,
    /// Epochs committed.
    pub completed_epochs: Option<usize>,
    /// The best checkpoint's epoch.
    pub best_epoch: Option<usize>,
    /// Regularization strength.
    pub alpha: Option<f64>,
    /// Target threshold `Th`.
    pub threshold: Option<f64>,
    /// Pair range.
    pub range: Option<String>,
    /// Clean test accuracy (%).
    pub test_acc: Option<f64>,
    /// Mean Gaussian-noise accuracy (%) over ε > 0.
    pub gaussian: Option<f64>,
    /// Boundary Attack mean of medians.
    pub boundary: Option<f64>,
    /// Training wall time.
    pub train_seconds: Option<f64>,
}

/// One summary per run under `runs_dir` whose id contains `filter`, sorted by id.
pub fn list_runs(runs_dir: &Path, filter: Option<&str>) -> Result<Vec<RunSummary>> {
    if !runs_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .with_context(|| format!("cannot list {}", runs_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    entries.sort();
    let mut runs = Vec::new();
    for path in entries {
        let run = RunDir::open(&path)?;
        if filter.is_some_and(|f| !run.id().contains(f)) {
            continue;
        }
        let state = run.state()?;
        // A results file of an older format has no summary numbers.
        let results = match RunResults::load(&run.results()) {
            Ok(StoredResults::Current(results)) => Some(*results),
            _ => None,
        };
        let config = ExperimentConfig::load(&run.config(), &[]).ok();
        let reg = config.as_ref().and_then(|c| c.regularization.as_ref());
        let status = state.as_ref().map_or("new".to_string(), |s| {
            format!("{:?}", s.status).to_lowercase()
        });
        let attack = |name| results.as_ref().and_then(|r| r.attacks.get(name));
        runs.push(RunSummary {
            run: run.id(),
            status,
            completed_epochs: state.as_ref().map(|s| s.completed_epochs),
            best_epoch: state.as_ref().map(|s| s.best_epoch),
            alpha: reg.map(|r| r.alpha),
            threshold: reg.map(|r| r.threshold),
            range: reg.map(|r| r.range.name().to_string()),
            test_acc: results.as_ref().map(|r| r.clean.result.test_acc),
            gaussian: attack(AttackName::Gaussian)
                .and_then(|e| e.result.as_curve())
                .and_then(CurveResult::grid_mean),
            boundary: attack(AttackName::Boundary)
                .and_then(|e| e.result.as_decision())
                .map(|d| d.mean_of_medians)
                .filter(|m| !m.is_nan()),
            train_seconds: state.as_ref().map(|s| s.train_seconds),
        });
    }
    Ok(runs)
}
