//! Robustness evaluation of a trained run with `pixreg-attacks`: clean accuracy, the paper's
//! noise grids, (transferred) FGSM, the Boundary Attack under the paper protocol and converged,
//! HopSkipJump, PGD and common corruptions. Results are merged into the run's `results.json`.

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
use crate::run_dir::RunDir;
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

fn attack_task(dataset: &str) -> Result<Task> {
    Ok(match dataset {
        "mnist" => Task::Mnist,
        "fashion-mnist" => Task::FashionMnist,
        "cifar10" | "cifar10-jpeg" => Task::Cifar10,
        "cifar100" => Task::Cifar100,
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

fn load_model(run: &RunDir, device: &Device) -> Result<ResNet> {
    let config = ModelConfig::load_json(run.model_json())?;
    ResNet::load(run.best_checkpoint(), &config, device)
        .with_context(|| format!("loading the best checkpoint of {}", run.root().display()))
}

/// Evaluates a run's best checkpoint with `attacks` and merges the results into its
/// `results.json`; returns the merged results.
pub fn evaluate_run(
    run: &RunDir,
    config: &ExperimentConfig,
    data_source: &DataSource,
    attacks: &[String],
    surrogate: Option<&Path>,
) -> Result<Value> {
    validate_attacks(attacks)?;
    let data = load_task_data(config, data_source)?;
    evaluate_loaded(run, config, &data, attacks, surrogate)
}

/// [`evaluate_run`] on the task's data already in memory (the end of `pixreg train`, which
/// has just loaded it).
pub fn evaluate_loaded(
    run: &RunDir,
    config: &ExperimentConfig,
    data: &ClassificationData,
    attacks: &[String],
    surrogate: Option<&Path>,
) -> Result<Value> {
    validate_attacks(attacks)?;
    let device = parse_device(&config.device)?;
    let model = load_model(run, &device)?;
    let task = attack_task(&config.task.dataset)?;
    let seed = config.training.seed;
    let mut results: Value = if run.results().is_file() {
        serde_json::from_str(&std::fs::read_to_string(run.results())?)
            .with_context(|| format!("{} is corrupt", run.results().display()))?
    } else {
        json!({})
    };
    let state = run.state()?;
    results["run"] = json!(run.id());
    results["best_epoch"] = json!(state.as_ref().map(|s| s.best_epoch));
    results["train_seconds"] = json!(state.as_ref().map(|s| s.train_seconds));

    let scale = data.model_scale()?;
    let (loss, acc) = evaluate(&model, &data.test_batcher(256, scale, &device)?)?;
    results["clean"] = json!({ "test_loss": loss, "test_acc": acc });

    let (x, labels) = test_tensor(data, &device)?;
    let bounds = global_bounds(&x)?;
    let clf = FnClassifier::new(
        |t: &Tensor| model.forward_eval(t).map_err(candle_core::Error::wrap),
        bounds,
    );
    if results.get("attacks").is_none() {
        results["attacks"] = json!({});
    }
    for name in attacks {
        let started = std::time::Instant::now();
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
                    let sur_model = load_model(&sur_run, &device)?;
                    let sur = FnClassifier::new(
                        |t: &Tensor| sur_model.forward_eval(t).map_err(candle_core::Error::wrap),
                        bounds,
                    );
                    let mut v = serde_json::to_value(
                        Fgsm::paper(task).run_transferred(&sur, &clf, &x, &labels)?,
                    )?;
                    v["surrogate"] = json!(sur_run.id());
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
                let report = protocol.run(&clf, &x)?;
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
                serde_json::to_value(pgd.run_grid(
                    &clf,
                    &x.narrow(0, 0, n)?,
                    &labels[..n],
                    &grid,
                    seed,
                )?)?
            }
            "corruptions" => {
                serde_json::to_value(CorruptionEval::default().run(&clf, &x, &labels, seed)?)?
            }
            other => bail!("unknown attack `{other}`"),
        };
        tracing::info!(attack = %name, seconds = started.elapsed().as_secs_f64(), "attack done");
        results["attacks"][name] = value;
    }
    write_text(&run.results(), &serde_json::to_string_pretty(&results)?)?;
    Ok(results)
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
