//! Robustness evaluation of a trained run with `pixreg-attacks`: clean accuracy, the paper's
//! noise grids, (transferred) FGSM, the Boundary Attack under the paper protocol and converged,
//! HopSkipJump, PGD and common corruptions. Results are merged into the run's `results.json`.
//!
//! # `results.json` (format [`RESULTS_FORMAT`])
//! ```text
//! { "format": 2, "run": id, "checkpoint": "checkpoints/best-0007.safetensors",
//!   "checkpoint_sha256": hex, "best_epoch": 7, "train_seconds": s,
//!   "clean":   { "test_loss", "test_acc" (%), "provenance" },
//!   "attacks": { name: { ...the attack's report, accuracies in %..., "provenance" } } }
//! ```
//! Every entry's `provenance` ([`Provenance`]) names the checkpoint it evaluated by sha256,
//! the pixreg version and git commit, the time, and whether the run was still training
//! (`provisional`). Entries of any other checkpoint, of an older format, or provisional ones
//! once the run is trained, are dropped when the file is next written: a results file only
//! ever describes the run's current best checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use pixreg_attacks::{
    global_bounds, BoundaryAttack, CorruptionEval, DecisionAttack, DecisionProtocol, Fgsm,
    FnClassifier, HopSkipJump, NoiseAttack, NoiseKind, Pgd, Task,
};
use pixreg_models::{ModelConfig, ResNet};
use serde_json::{json, Value};

use pixreg_datasets::ClassificationData;

use crate::config::{parse_device, EvaluationConfig, ExperimentConfig};
use crate::data::DataSource;
use crate::output::write_text;
use crate::provenance::{sha256_file, Provenance};
use crate::run_dir::{RunDir, RunLock, RunState, RunStatus};
use crate::train::{evaluate, load_task_data};

/// Attack names accepted by `--attacks` and `evaluation.attacks`.
pub const ATTACKS: [&str; 10] = [
    "gaussian",
    "uniform",
    "saltpepper",
    "fgsm",
    "boundary",
    "boundary-converged",
    "hsj",
    "pgd-linf",
    "pgd-l2",
    "corruptions",
];

/// Version of the `results.json` layout (see the module docs). Format 1 (pixreg 0.1) had
/// fractions in attack curves and no provenance.
pub const RESULTS_FORMAT: u64 = 2;

/// Keys of attack reports that hold accuracies (or success rates) as fractions in
/// `pixreg-attacks` and are written to `results.json` in %.
const FRACTION_KEYS: [&str; 5] = [
    "accuracy",
    "robust_accuracy",
    "clean_accuracy",
    "mean_corrupted_accuracy",
    "success_rate",
];

/// `value` with every fraction of [`FRACTION_KEYS`] (at any depth) turned into %.
fn in_percent(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if FRACTION_KEYS.contains(&k.as_str()) {
                        scale_numbers(v, 100.0)
                    } else {
                        in_percent(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(in_percent).collect()),
        other => other,
    }
}

fn scale_numbers(value: Value, factor: f64) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or(Value::Number(n), |x| json!(x * factor)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| scale_numbers(v, factor))
                .collect(),
        ),
        other => other,
    }
}

/// Steps of the converged Boundary Attack (enough for the step-size adaptation to act).
pub const CONVERGED_BOUNDARY_STEPS: usize = 5000;

/// Checks attack names, so a typo fails before a long training run.
pub fn validate_attacks(names: &[String]) -> Result<()> {
    for name in names {
        if !ATTACKS.contains(&name.as_str()) {
            bail!(
                "unknown attack `{name}`; expected one of {}",
                ATTACKS.join(", ")
            );
        }
    }
    Ok(())
}

/// Progress within one long attack (the repeats of a decision attack, the ε of a PGD grid):
/// one line per finished part in log.txt, with the elapsed time and an ETA from it, also on
/// the terminal when stderr is one (xtask's children write to files: their bars read the log).
struct AttackProgress<'a> {
    run: &'a RunDir,
    prefix: String,
    unit: &'static str,
    done: usize,
    started: std::time::Instant,
    terminal: bool,
}

impl<'a> AttackProgress<'a> {
    fn new(run: &'a RunDir, attack: &str, (k, n): (usize, usize), unit: &'static str) -> Self {
        use std::io::IsTerminal;
        Self {
            run,
            prefix: format!("evaluating {attack} ({}/{n})", k + 1),
            unit,
            done: 0,
            started: std::time::Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One more of `total` parts is done.
    fn done(&mut self, total: usize) -> pixreg_attacks::Result<()> {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = elapsed / self.done as f64 * total.saturating_sub(self.done) as f64;
        let line = format!(
            "{}: {} {}/{total} done after {elapsed:.1} s, ETA {left:.0} s",
            self.prefix, self.unit, self.done
        );
        if self.terminal {
            eprintln!("{line}");
        }
        self.run
            .log(&line)
            .map_err(|e| pixreg_attacks::AttackError::Progress(format!("{e:#}")))
    }
}

/// The attack protocol (ε grids, Boundary Attack indices) of a task: the JPEG CIFAR-10 copy
/// is attacked as CIFAR-10.
fn attack_task(dataset: pixreg_datasets::DatasetName) -> Result<Task> {
    use pixreg_datasets::DatasetName;
    Ok(match dataset {
        DatasetName::Mnist => Task::Mnist,
        DatasetName::FashionMnist => Task::FashionMnist,
        DatasetName::Cifar10 | DatasetName::Cifar10Jpeg => Task::Cifar10,
        DatasetName::Cifar100 => Task::Cifar100,
        other => bail!("no attack protocol for dataset {other}"),
    })
}

/// ε grid of the PGD L∞ column, in unit scale: the customary budgets, up to 0.3 for MNIST-type
/// tasks and up to 8/255 for CIFAR.
fn pgd_linf_grid(task: Task) -> Vec<f64> {
    match task {
        Task::Mnist | Task::FashionMnist => vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.3],
        Task::Cifar10 | Task::Cifar100 => {
            vec![0.0, 1.0 / 255.0, 2.0 / 255.0, 4.0 / 255.0, 8.0 / 255.0]
        }
    }
}

/// L2 budgets (unit scale): MNIST up to 2.0, CIFAR up to 0.5, the customary ranges.
fn pgd_l2_grid(task: Task) -> Vec<f64> {
    match task {
        Task::Mnist | Task::FashionMnist => vec![0.0, 0.5, 1.0, 1.5, 2.0],
        Task::Cifar10 | Task::Cifar100 => vec![0.0, 0.125, 0.25, 0.5],
    }
}

/// The test set at model scale, with its labels.
fn test_tensor(
    data: &pixreg_datasets::ClassificationData,
    device: &Device,
) -> Result<(Tensor, Vec<u32>)> {
    let set = &data.test_set;
    let all: Vec<usize> = (0..set.n).collect();
    let scale = data.model_scale()?;
    let x = set
        .tensor(&all, device)?
        .affine(f64::from(scale.scale), f64::from(scale.offset))?;
    Ok((x, set.labels.clone()))
}

/// The committed best checkpoint of a run and its model.
fn load_best(run: &RunDir, device: &Device) -> Result<(std::path::PathBuf, ResNet)> {
    let config = ModelConfig::load_json(run.model_json())?;
    let path = run.best_checkpoint()?;
    let model = ResNet::load(&path, &config, device)
        .with_context(|| format!("loading the best checkpoint of {}", run.root().display()))?;
    Ok((path, model))
}

/// The state of a run that may be evaluated: trained, or (with `provisional`) still training.
/// Migrates a pixreg 0.1 folder.
fn evaluable_state(run: &RunDir, provisional: bool) -> Result<RunState> {
    let mut state = run.state()?.with_context(|| {
        format!(
            "{} has no committed epoch (no state.json); train it first",
            run.root().display()
        )
    })?;
    if state.status == RunStatus::Running {
        if !provisional {
            bail!(
                "{} is still training (epoch {} committed); its best checkpoint may change: \
                 finish it, or pass --provisional to evaluate the best checkpoint so far",
                run.root().display(),
                state.completed_epochs
            );
        }
    } else {
        run.migrate_legacy(&mut state)?;
    }
    Ok(state)
}

/// Checks that `config.toml` describes the architecture in `checkpoints/model.json`.
pub fn check_model_matches(run: &RunDir, config: &ExperimentConfig) -> Result<()> {
    let model = ModelConfig::load_json(run.model_json())?;
    let arch = config.model.arch;
    let rgb_channels = if config.task.rgb { 3 } else { 1 };
    if model.arch != arch
        || model.base_channels != config.model.base_channels
        || model.in_shape[0] != rgb_channels
    {
        bail!(
            "{} says {} width {} with {} input channel(s) but {} describes {} width {} with {}: \
             the folder was edited; restore config.toml or retrain",
            run.config().display(),
            config.model.arch,
            config.model.base_channels,
            rgb_channels,
            run.model_json().display(),
            model.arch,
            model.base_channels,
            model.in_shape[0]
        );
    }
    Ok(())
}

/// Evaluates a run's best checkpoint with `attacks` under the run's lock and merges the
/// results into its `results.json`; returns the merged results. A run still training is
/// refused unless `provisional`, and its results are then marked provisional.
pub fn evaluate_run(
    run: &RunDir,
    config: &ExperimentConfig,
    data_source: &DataSource,
    attacks: &[String],
    surrogate: Option<&Path>,
    provisional: bool,
) -> Result<Value> {
    validate_attacks(attacks)?;
    let lock = run.lock()?;
    evaluable_state(run, provisional)?;
    let data = load_task_data(config, data_source)?;
    evaluate_loaded(run, &lock, config, &data, attacks, surrogate, provisional)
}

/// [`evaluate_run`] on the task's data already in memory, with the run's lock already held
/// (the end of `pixreg train`, which has just trained under it and loaded the data).
pub fn evaluate_loaded(
    run: &RunDir,
    _lock: &RunLock,
    config: &ExperimentConfig,
    data: &ClassificationData,
    attacks: &[String],
    surrogate: Option<&Path>,
    provisional: bool,
) -> Result<Value> {
    validate_attacks(attacks)?;
    check_model_matches(run, config)?;
    let state = evaluable_state(run, provisional)?;
    let provisional = state.status == RunStatus::Running;
    let device = parse_device(&config.device)?;
    let (checkpoint, model) = load_best(run, &device)?;
    let sha = sha256_file(&checkpoint)?;
    let relative = checkpoint
        .strip_prefix(run.root())
        .unwrap_or(&checkpoint)
        .display()
        .to_string();
    let provenance = || {
        serde_json::to_value(Provenance::now(
            &relative,
            &sha,
            state.best_epoch,
            provisional,
        ))
    };
    let task = attack_task(config.task.dataset)?;
    let seed = config.training.seed;
    let mut results = current_results(run, &sha, provisional)?;
    results["format"] = json!(RESULTS_FORMAT);
    results["run"] = json!(run.id());
    results["checkpoint"] = json!(relative);
    results["checkpoint_sha256"] = json!(sha);
    results["best_epoch"] = json!(state.best_epoch);
    results["train_seconds"] = json!(state.train_seconds);

    let scale = data.model_scale()?;
    let (loss, acc) = evaluate(&model, &data.test_batcher(256, scale, &device)?)?;
    results["clean"] = json!({ "test_loss": loss, "test_acc": acc, "provenance": provenance()? });

    let (x, labels) = test_tensor(data, &device)?;
    let bounds = global_bounds(&x)?;
    let clf = FnClassifier::new(
        |t: &Tensor| model.forward_eval(t).map_err(candle_core::Error::wrap),
        bounds,
    );
    for (k, name) in attacks.iter().enumerate() {
        let started = std::time::Instant::now();
        // One line per attack in log.txt: `tail -f` (and xtask's progress bars) follow them.
        run.log(&format!("evaluating {name} ({}/{})", k + 1, attacks.len()))?;
        let value = match name.as_str() {
            "gaussian" | "uniform" | "saltpepper" => {
                let kind = match name.as_str() {
                    "gaussian" => NoiseKind::Gaussian,
                    "uniform" => NoiseKind::Uniform,
                    _ => NoiseKind::SaltPepper,
                };
                serde_json::to_value(NoiseAttack::paper(task, kind).run(&clf, &x, &labels, seed)?)?
            }
            "fgsm" => match surrogate {
                Some(dir) => {
                    let sur_run = RunDir::open(dir)?;
                    let (sur_checkpoint, sur_model) = load_best(&sur_run, &device)?;
                    let sur = FnClassifier::new(
                        |t: &Tensor| sur_model.forward_eval(t).map_err(candle_core::Error::wrap),
                        bounds,
                    );
                    let mut v = serde_json::to_value(
                        Fgsm::paper(task).run_transferred(&sur, &clf, &x, &labels)?,
                    )?;
                    v["surrogate"] = json!(sur_run.id());
                    v["surrogate_checkpoint_sha256"] = json!(sha256_file(&sur_checkpoint)?);
                    v
                }
                None => serde_json::to_value(Fgsm::paper(task).run_white_box(&clf, &x, &labels)?)?,
            },
            "boundary" | "boundary-converged" | "hsj" => {
                let mut protocol = DecisionProtocol::paper(seed);
                protocol.n_images = config.evaluation.boundary_images.min(x.dim(0)?);
                protocol.repeats = config.evaluation.boundary_repeats;
                protocol.attack = match name.as_str() {
                    "boundary" => DecisionAttack::Boundary(BoundaryAttack::paper()),
                    "boundary-converged" => DecisionAttack::Boundary(BoundaryAttack::converged(
                        CONVERGED_BOUNDARY_STEPS,
                    )),
                    _ => DecisionAttack::HopSkipJump(hop_skip_jump(&config.evaluation)),
                };
                let mut progress = AttackProgress::new(run, name, (k, attacks.len()), "repeat");
                let repeats = protocol.repeats;
                let report = protocol.run_observed(&clf, &x, &mut |_| progress.done(repeats))?;
                let settings = match &protocol.attack {
                    DecisionAttack::HopSkipJump(h) => json!({
                        "steps": h.steps,
                        "initial_gradient_evals": h.initial_gradient_eval_steps,
                    }),
                    _ => serde_json::Value::Null,
                };
                let n_images = report.indices.len() as f64;
                let queries: f64 = report
                    .repeats
                    .iter()
                    .map(|r| r.mean_queries * n_images)
                    .sum();
                let mut v = json!({
                    "queries": queries,
                    "queries_per_second": queries / report.wall_seconds,
                    "mean_of_medians": report.mean_of_medians,
                    "medians": report.medians,
                    "success_rate": report.success_rate,
                    "n_images": report.indices.len(),
                    "repeats": report.repeats,
                    "wall_seconds": report.wall_seconds,
                });
                if !settings.is_null() {
                    v["settings"] = settings;
                }
                v
            }
            "pgd-linf" | "pgd-l2" => {
                let n = config
                    .evaluation
                    .pgd_images
                    .unwrap_or(labels.len())
                    .min(labels.len());
                let (pgd, grid) = if name == "pgd-linf" {
                    (Pgd::linf(0.0), pgd_linf_grid(task))
                } else {
                    (Pgd::l2(0.0), pgd_l2_grid(task))
                };
                let mut progress = AttackProgress::new(run, name, (k, attacks.len()), "ε");
                let points = grid.len();
                serde_json::to_value(pgd.run_grid_observed(
                    &clf,
                    &x.narrow(0, 0, n)?,
                    &labels[..n],
                    &grid,
                    seed,
                    &mut |_, _| progress.done(points),
                )?)?
            }
            "corruptions" => {
                serde_json::to_value(CorruptionEval::default().run(&clf, &x, &labels, seed)?)?
            }
            other => bail!("unknown attack `{other}`"),
        };
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(attack = %name, seconds, "attack done");
        run.log(&format!("evaluated {name} in {seconds:.1} s"))?;
        let mut value = in_percent(value);
        value["provenance"] = provenance()?;
        results["attacks"][name] = value;
    }
    write_text(&run.results(), &serde_json::to_string_pretty(&results)?)?;
    Ok(results)
}

/// The stored results of the checkpoint with digest `sha`: every entry of another checkpoint,
/// of an older format, or provisional when this evaluation is not, is dropped (and logged).
fn current_results(run: &RunDir, sha: &str, provisional: bool) -> Result<Value> {
    let path = run.results();
    let mut kept = json!({ "attacks": {} });
    if !path.is_file() {
        return Ok(kept);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let stored: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))?;
    let valid = |entry: &Value| {
        stored["format"].as_u64() == Some(RESULTS_FORMAT)
            && entry["provenance"]["checkpoint_sha256"].as_str() == Some(sha)
            && (provisional || entry["provenance"]["provisional"] == json!(false))
    };
    if let Some(attacks) = stored["attacks"].as_object() {
        for (name, entry) in attacks {
            if valid(entry) {
                kept["attacks"][name] = entry.clone();
            } else {
                tracing::warn!(
                    attack = %name,
                    "dropping a stored result of another checkpoint or format from {}",
                    path.display()
                );
            }
        }
    }
    Ok(kept)
}

/// The HopSkipJump of an `[evaluation]` section: foolbox's defaults, with `hsj_steps` and
/// `hsj_gradient_evals` where given.
fn hop_skip_jump(evaluation: &EvaluationConfig) -> HopSkipJump {
    let defaults = HopSkipJump::default();
    HopSkipJump {
        steps: evaluation.hsj_steps.unwrap_or(defaults.steps),
        initial_gradient_eval_steps: evaluation
            .hsj_gradient_evals
            .unwrap_or(defaults.initial_gradient_eval_steps),
        ..defaults
    }
}
