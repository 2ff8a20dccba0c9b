//! Reading one run's value of one column from its folder (`results.json`, `metrics.jsonl`,
//! `state.json`), with every check that keeps a stale or mismatched value out of a table:
//! the provenance of each entry against the best checkpoint, the noise grids' ε = 0 point
//! against the clean accuracy.

use std::path::Path;

use pixreg_runner::attack::AttackName;
use pixreg_runner::results::{
    AttackResult, CorruptionResult, CurveResult, EpochMetrics, Evaluated, ResultShape, RunResults,
    StoredResults, RESULTS_FORMAT,
};
use serde_json::Value;

use crate::catalogue::{attack_of, BAND_COLUMNS, BAND_SEVERITY};
use crate::exec::Paths;

/// One run's value of one column, with the number of test images behind it (attacks).
pub(super) struct RunValue {
    pub value: ColumnValue,
    pub n_images: Option<usize>,
}

/// A number, or an accuracy curve.
pub(super) enum ColumnValue {
    Scalar(f64),
    Curve(CurveResult),
}

impl RunValue {
    fn scalar(x: f64) -> Self {
        Self {
            value: ColumnValue::Scalar(x),
            n_images: None,
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The `results.json` of a run, if it describes the run's current best checkpoint: format
/// [`RESULTS_FORMAT`], the sha256 of the best
/// checkpoint named by `state.json`, and not provisional. Anything else is a reason, never a number.
pub fn current_results(dir: &Path) -> std::result::Result<RunResults, String> {
    let path = dir.join("results.json");
    let results = match RunResults::load(&path).map_err(|e| format!("{e:#}"))? {
        StoredResults::Missing => return Err(format!("no results.json in {}", dir.display())),
        StoredResults::OtherFormat(f) => {
            return Err(format!(
                "stale: {} is of format {f}, not {RESULTS_FORMAT} (format 1 predates \
                 provenance); re-evaluate the run",
                path.display()
            ))
        }
        StoredResults::Current(results) => *results,
    };
    let best = pixreg_runner::run_dir::RunDir::open(dir)
        .and_then(|run| run.best_checkpoint())
        .map_err(|e| format!("{e:#}"))?;
    let sha = pixreg_runner::provenance::sha256_file(&best).map_err(|e| format!("{e:#}"))?;
    if results.checkpoint_sha256 != sha {
        return Err(format!(
            "stale: {} evaluated another checkpoint than {}",
            path.display(),
            best.display()
        ));
    }
    Ok(results)
}

/// Checks that a result entry comes from the run's current checkpoint (`sha`) and is final.
fn check_provenance<T>(
    entry: &Evaluated<T>,
    sha: &str,
    what: &str,
) -> std::result::Result<(), String> {
    if entry.provenance.checkpoint_sha256 != sha {
        return Err(format!("flagged: {what} comes from another checkpoint"));
    }
    if entry.provenance.provisional {
        return Err(format!(
            "flagged: {what} is provisional (run still training)"
        ));
    }
    Ok(())
}

/// The invariant of every accuracy curve: at ε = 0 nothing is perturbed, so its accuracy is
/// the clean accuracy of the same checkpoint (within one image, for the rounding of %).
/// PGD evaluates a prefix of the test set (`evaluation.pgd_images`), so it is exempt when it
/// attacked fewer images than the noise grids (which attack the whole test set).
fn check_zero_epsilon(
    results: &RunResults,
    curve: &CurveResult,
    column: &str,
    id: &str,
) -> std::result::Result<(), String> {
    let clean = results.clean.result.test_acc;
    let Some(k) = curve.epsilons.iter().position(|&e| e == 0.0) else {
        return Ok(());
    };
    let whole_test_set = results
        .attacks
        .get(AttackName::Gaussian)
        .map(|g| g.result.n_images());
    if column.starts_with("pgd") && whole_test_set != Some(curve.n_images) {
        return Ok(());
    }
    let n = curve.n_images as f64;
    let one_image = if n > 0.0 { 100.0 / n } else { 0.0 };
    if (curve.accuracy[k] - clean).abs() > one_image + 1e-9 {
        return Err(format!(
            "flagged: {column} accuracy at ε = 0 is {:.2} % but clean accuracy is {clean:.2} % \
             (run {id}): the two come from different models or inputs",
            curve.accuracy[k]
        ));
    }
    Ok(())
}

/// Reads one column of a finished run, checking its provenance and invariants.
pub(super) fn run_value(
    paths: &Paths,
    id: &str,
    column: &str,
) -> std::result::Result<RunValue, String> {
    let dir = paths.run_dir(id);
    match column {
        "train_seconds" | "epoch_seconds" | "peak_rss_mib" | "targets_seconds" => {
            return run_cost(&dir, column)
        }
        "clean" => {
            let results = current_results(&dir)?;
            check_provenance(&results.clean, &results.checkpoint_sha256, "clean accuracy")?;
            return Ok(RunValue::scalar(results.clean.result.test_acc));
        }
        _ => {}
    }
    let attack = attack_of(column).ok_or_else(|| format!("unknown column {column}"))?;
    let results = current_results(&dir)?;
    let absent = || format!("{column} was not evaluated for run {id}");
    let entry = results.attacks.get(attack).ok_or_else(absent)?;
    check_provenance(entry, &results.checkpoint_sha256, column)?;
    let n_images = Some(entry.result.n_images());
    let value = attack_value(&results, entry, attack, column, id)?;
    Ok(RunValue { value, n_images })
}

/// The number of one attack's column.
fn attack_value(
    results: &RunResults,
    entry: &AttackResult,
    attack: AttackName,
    column: &str,
    id: &str,
) -> std::result::Result<ColumnValue, String> {
    let absent = || format!("{column} was not evaluated for run {id}");
    match attack.result_shape() {
        ResultShape::Curve => {
            let curve = entry.result.as_curve().ok_or_else(absent)?;
            if curve.epsilons.is_empty() || curve.epsilons.len() != curve.accuracy.len() {
                return Err(absent());
            }
            check_zero_epsilon(results, curve, column, id)?;
            Ok(ColumnValue::Curve(curve.clone()))
        }
        ResultShape::Decision => {
            let decision = entry.result.as_decision().ok_or_else(absent)?;
            if decision.mean_of_medians.is_nan() {
                return Err(format!(
                    "no successful attack (success rate {:.0} %)",
                    decision.success_rate
                ));
            }
            Ok(ColumnValue::Scalar(decision.mean_of_medians))
        }
        ResultShape::Corruptions => {
            let corruptions = entry.result.as_corruptions().ok_or_else(absent)?;
            if column == "corruptions" {
                Ok(ColumnValue::Scalar(corruptions.mean_corrupted_accuracy))
            } else {
                band_value(corruptions, column, id)
            }
        }
    }
}

/// The cost columns of a run, from `state.json` and `metrics.jsonl`.
fn run_cost(dir: &Path, column: &str) -> std::result::Result<RunValue, String> {
    if column == "epoch_seconds" {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl"))
            .map_err(|_| format!("no metrics.jsonl in {}", dir.display()))?;
        let times: Vec<f64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<EpochMetrics>(l).ok())
            .filter_map(|m| m.epoch_seconds)
            .collect();
        if times.is_empty() {
            return Err(format!("no timed epoch in {}", dir.display()));
        }
        return Ok(RunValue::scalar(
            times.iter().sum::<f64>() / times.len() as f64,
        ));
    }
    let state = read_json(&dir.join("state.json"))
        .ok_or_else(|| format!("no state.json in {}", dir.display()))?;
    if let Some(v) = state[column].as_f64() {
        return Ok(RunValue::scalar(v));
    }
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap_or_default();
    Err(
        if column == "targets_seconds" && !config.contains("[regularization]") {
            "n/a (no regularizer)".into()
        } else {
            format!("not recorded in {}", dir.join("state.json").display())
        },
    )
}

/// A band column (`corruptions-low`, …) of a run: the band's mean accuracy at
/// [`BAND_SEVERITY`] in the `by_band` list of its `corruptions` entry.
fn band_value(
    corruptions: &CorruptionResult,
    column: &str,
    id: &str,
) -> std::result::Result<ColumnValue, String> {
    let band = BAND_COLUMNS
        .iter()
        .find(|(name, _)| *name == column)
        .map(|(_, band)| *band);
    corruptions
        .by_band
        .iter()
        .find(|e| Some(e.band) == band && e.severity == BAND_SEVERITY)
        .map(|e| ColumnValue::Scalar(e.accuracy))
        .ok_or_else(|| format!("{column}: no severity-{BAND_SEVERITY} band accuracy for run {id}"))
}
