//! Robustness evaluation of a trained run with `pixreg-attacks`: clean accuracy, the paper's
//! noise grids, (transferred) FGSM, the Boundary Attack under the paper protocol and converged,
//! HopSkipJump, PGD and common corruptions. Results are merged into the run's `results.json`.
//!
//! Results are typed ([`crate::results::RunResults`], whose docs show the file). Entries of
//! any other checkpoint, of an older format, or provisional ones once the run is trained,
//! are dropped when the file is next written: a results file only ever describes the run's
//! current best checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use pixreg_attacks::{global_bounds, FnClassifier};
use pixreg_models::{ModelConfig, ResNet};

use pixreg_datasets::ClassificationData;

use crate::attack::{AttackRun, AttackSpec};
use crate::config::{parse_device, ExperimentConfig};
use crate::data::load_task_data;
use crate::data::DataSource;
use crate::provenance::{sha256_file, Provenance};
use crate::results::{
    AttackResults, CleanResult, Evaluated, RunResults, StoredResults, RESULTS_FORMAT,
};
use crate::run_dir::{RunDir, RunLock, RunState, RunStatus};

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
pub(crate) fn load_best(run: &RunDir, device: &Device) -> Result<(std::path::PathBuf, ResNet)> {
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
    attacks: &[AttackSpec],
    surrogate: Option<&Path>,
    provisional: bool,
) -> Result<RunResults> {
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
    attacks: &[AttackSpec],
    surrogate: Option<&Path>,
    provisional: bool,
) -> Result<RunResults> {
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
    let provenance = || Provenance::now(&relative, &sha, state.best_epoch, provisional);
    let task = config.task.attack_task()?;
    let scale = data.model_scale()?;
    let (test_loss, test_acc) = evaluate(&model, &data.test_batcher(256, scale, &device)?)?;
    let mut results = RunResults {
        format: RESULTS_FORMAT,
        run: run.id(),
        checkpoint: relative.clone(),
        checkpoint_sha256: sha.clone(),
        best_epoch: state.best_epoch,
        train_seconds: state.train_seconds,
        clean: Evaluated {
            result: CleanResult {
                test_loss,
                test_acc,
            },
            provenance: provenance(),
        },
        attacks: current_attacks(run, &sha, provisional)?,
    };

    let (x, labels) = test_tensor(data, &device)?;
    let bounds = global_bounds(&x)?;
    let clf = FnClassifier::new(
        |t: &Tensor| model.forward_inference(t).map_err(candle_core::Error::wrap),
        bounds,
    );
    for (k, spec) in attacks.iter().enumerate() {
        let name = spec.name();
        let started = std::time::Instant::now();
        // One line per attack in log.txt: `tail -f` (and xtask's progress bars) follow them.
        run.log(&format!("evaluating {name} ({}/{})", k + 1, attacks.len()))?;
        let attack_run = AttackRun {
            run,
            model: &clf,
            images: &x,
            labels: &labels,
            task,
            evaluation: &config.evaluation,
            seed: config.training.seed,
            surrogate,
            device: &device,
            position: (k, attacks.len()),
        };
        let report = {
            let _spinning = pixreg_models::kernels::SpinningThreads::start();
            attack_run.report(spec)?
        };
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(attack = %name, seconds, "attack done");
        run.log(&format!("evaluated {name} in {seconds:.1} s"))?;
        // The provenance is taken when the attack has ended, as its `evaluated_at` says.
        let provenance = provenance();
        results.attacks.insert(
            name,
            Evaluated {
                result: report,
                provenance,
            },
        );
    }
    results.write(&run.results())?;
    Ok(results)
}

/// The stored attack entries of the checkpoint with digest `sha`: every entry of another
/// checkpoint, of an older format, or provisional when this evaluation is not, is dropped
/// (and logged).
fn current_attacks(run: &RunDir, sha: &str, provisional: bool) -> Result<AttackResults> {
    let path = run.results();
    let mut kept = match RunResults::load(&path)? {
        StoredResults::Missing => return Ok(AttackResults::default()),
        StoredResults::OtherFormat(format) => {
            tracing::warn!(
                "dropping the results of format {format} in {}",
                path.display()
            );
            return Ok(AttackResults::default());
        }
        StoredResults::Current(stored) => stored.attacks,
    };
    kept.retain(|name, entry| {
        let valid = entry.is_current_for(sha, provisional);
        if !valid {
            tracing::warn!(
                attack = %name,
                "dropping a stored result of another checkpoint from {}",
                path.display()
            );
        }
        valid
    });
    Ok(kept)
}

/// Mean CE loss and accuracy (%) of the model in eval mode over every batch.
pub fn evaluate(model: &ResNet, batches: &pixreg_datasets::Batcher<'_>) -> Result<(f64, f64)> {
    let (mut loss_sum, mut correct, mut count) = (0f64, 0usize, 0usize);
    let _spinning = pixreg_models::kernels::SpinningThreads::start();
    for batch in batches.epoch(0) {
        let batch = batch?;
        let logits = model.forward_inference(&batch.images)?;
        let n = batch.indices.len();
        let ce = pixreg_models::cross_entropy(&logits, &batch.labels)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        loss_sum += ce * n as f64;
        let predicted: Vec<u32> = logits.argmax(1)?.to_vec1()?;
        let labels: Vec<u32> = batch.labels.to_dtype(DType::U32)?.to_vec1()?;
        correct += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
        count += n;
    }
    if count == 0 {
        bail!("cannot evaluate on an empty set");
    }
    Ok((
        loss_sum / count as f64,
        100.0 * correct as f64 / count as f64,
    ))
}
