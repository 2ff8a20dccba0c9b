//! Reading one run's value of one column from its folder (`results.json`, `metrics.jsonl`,
//! `state.json`), with every check that keeps a stale or mismatched value out of a table:
//! the provenance of each entry against the best checkpoint, the noise grids' ε = 0 point
//! against the clean accuracy.

use std::path::Path;

use serde_json::Value;

use super::CURVE_COLUMNS;
use crate::catalogue::{attack_of, BAND_COLUMNS, BAND_SEVERITY};
use crate::exec::Paths;

/// One run's value of one column.
pub(super) enum RunValue {
    Scalar(f64),
    Curve(Vec<f64>, Vec<f64>),
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The `results.json` of a run, if it describes the run's current best checkpoint: format
/// [`pixreg_runner::eval::RESULTS_FORMAT`], the sha256 of the best checkpoint named by
/// `state.json`, and not provisional. Anything else is a reason, never a number.
pub fn current_results(dir: &Path) -> std::result::Result<Value, String> {
    let results = read_json(&dir.join("results.json"))
        .ok_or_else(|| format!("no results.json in {}", dir.display()))?;
    if results["format"].as_u64() != Some(pixreg_runner::eval::RESULTS_FORMAT) {
        return Err(format!(
            "stale: {} predates provenance (format 1); re-evaluate the run",
            dir.join("results.json").display()
        ));
    }
    let best = pixreg_runner::run_dir::RunDir::open(dir)
        .and_then(|run| run.best_checkpoint())
        .map_err(|e| format!("{e:#}"))?;
    let sha = pixreg_runner::provenance::sha256_file(&best).map_err(|e| format!("{e:#}"))?;
    if results["checkpoint_sha256"].as_str() != Some(sha.as_str()) {
        return Err(format!(
            "stale: {} evaluated another checkpoint than {}",
            dir.join("results.json").display(),
            best.display()
        ));
    }
    Ok(results)
}

/// Checks that a result entry comes from the run's current checkpoint (`sha`) and is final.
fn check_provenance(entry: &Value, sha: &str, what: &str) -> std::result::Result<(), String> {
    let provenance = &entry["provenance"];
    if provenance["checkpoint_sha256"].as_str() != Some(sha) {
        return Err(format!("flagged: {what} comes from another checkpoint"));
    }
    if provenance["provisional"] != Value::Bool(false) {
        return Err(format!(
            "flagged: {what} is provisional (run still training)"
        ));
    }
    Ok(())
}

/// The invariant of every accuracy curve: at ε = 0 nothing is perturbed, so its accuracy is
/// the clean accuracy of the same checkpoint (within one image, for the rounding of %).
/// PGD evaluates a prefix of the test set (`evaluation.pgd_images`), so it is exempt when it
/// attacked fewer images.
fn check_zero_epsilon(
    results: &Value,
    attack: &Value,
    eps: &[f64],
    acc: &[f64],
    column: &str,
    id: &str,
) -> std::result::Result<(), String> {
    let (Some(clean), Some(k)) = (
        results["clean"]["test_acc"].as_f64(),
        eps.iter().position(|&e| e == 0.0),
    ) else {
        return Ok(());
    };
    let n = attack["n_images"].as_f64().unwrap_or(f64::NAN);
    if column.starts_with("pgd") && attack["n_images"] != results["clean"]["n_images"] {
        return Ok(());
    }
    let one_image = if n > 0.0 { 100.0 / n } else { 0.0 };
    if (acc[k] - clean).abs() > one_image + 1e-9 {
        return Err(format!(
            "flagged: {column} accuracy at ε = 0 is {:.2} % but clean accuracy is {clean:.2} % \
             (run {id}): the two come from different models or inputs",
            acc[k]
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
    let needs_results = !matches!(
        column,
        "train_seconds" | "epoch_seconds" | "peak_rss_mib" | "targets_seconds"
    );
    let results = if needs_results {
        current_results(&dir)?
    } else {
        Value::Null
    };
    let sha = results["checkpoint_sha256"].as_str().unwrap_or_default();
    let key = attack_of(column).map_or(column.to_string(), |a| a.to_string());
    let attack = &results["attacks"][key.as_str()];
    let absent = || format!("{column} was not evaluated for run {id}");
    if needs_results && column != "clean" && !attack.is_null() {
        check_provenance(attack, sha, column)?;
    }
    match column {
        "clean" => {
            check_provenance(&results["clean"], sha, "clean accuracy")?;
            results["clean"]["test_acc"]
                .as_f64()
                .map(RunValue::Scalar)
                .ok_or_else(absent)
        }
        c if CURVE_COLUMNS.contains(&c) => {
            let eps: Option<Vec<f64>> = attack["epsilons"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect());
            let acc: Option<Vec<f64>> = attack["accuracy"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect());
            match (eps, acc) {
                (Some(e), Some(a)) if e.len() == a.len() && !e.is_empty() => {
                    check_zero_epsilon(&results, attack, &e, &a, column, id)?;
                    Ok(RunValue::Curve(e, a))
                }
                _ => Err(absent()),
            }
        }
        "boundary" | "boundary-converged" | "hsj" => {
            if attack.is_null() {
                return Err(absent());
            }
            attack["mean_of_medians"]
                .as_f64()
                .map(RunValue::Scalar)
                .ok_or_else(|| {
                    format!(
                        "no successful attack (success rate {:.0} %)",
                        attack["success_rate"].as_f64().unwrap_or(0.0)
                    )
                })
        }
        "corruptions" => attack["mean_corrupted_accuracy"]
            .as_f64()
            .map(RunValue::Scalar)
            .ok_or_else(absent),
        c if BAND_COLUMNS.iter().any(|(name, _)| *name == c) => band_value(attack, c, id),
        "train_seconds" => read_json(&dir.join("state.json"))
            .and_then(|s| s["train_seconds"].as_f64())
            .map(RunValue::Scalar)
            .ok_or_else(|| format!("no state.json in {}", dir.display())),
        "epoch_seconds" => {
            let text = std::fs::read_to_string(dir.join("metrics.jsonl"))
                .map_err(|_| format!("no metrics.jsonl in {}", dir.display()))?;
            let times: Vec<f64> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["epoch_seconds"].as_f64())
                .collect();
            if times.is_empty() {
                return Err(format!("no timed epoch in {}", dir.display()));
            }
            Ok(RunValue::Scalar(
                times.iter().sum::<f64>() / times.len() as f64,
            ))
        }
        "peak_rss_mib" | "targets_seconds" => {
            let state = read_json(&dir.join("state.json"))
                .ok_or_else(|| format!("no state.json in {}", dir.display()))?;
            if let Some(v) = state[column].as_f64() {
                return Ok(RunValue::Scalar(v));
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
        other => Err(format!("unknown column {other}")),
    }
}

/// Mean accuracy over the grid without its ε = 0 point (which is clean accuracy).
pub(super) fn grid_mean(eps: &[f64], acc: &[f64]) -> f64 {
    let points: Vec<f64> = eps
        .iter()
        .zip(acc)
        .filter(|(e, _)| **e > 0.0)
        .map(|(_, a)| *a)
        .collect();
    if points.is_empty() {
        acc.iter().sum::<f64>() / acc.len() as f64
    } else {
        points.iter().sum::<f64>() / points.len() as f64
    }
}

/// A band column (`corruptions-low`, …) of a run: the band's mean accuracy at
/// [`BAND_SEVERITY`] in the `by_band` list of its `corruptions` entry.
fn band_value(
    corruptions: &Value,
    column: &str,
    id: &str,
) -> std::result::Result<RunValue, String> {
    let band = BAND_COLUMNS
        .iter()
        .find(|(name, _)| *name == column)
        .map(|(_, band)| band.as_str());
    corruptions["by_band"]
        .as_array()
        .and_then(|entries| {
            entries.iter().find(|e| {
                e["band"].as_str() == band
                    && e["severity"].as_u64() == Some(u64::from(BAND_SEVERITY))
            })
        })
        .and_then(|e| e["accuracy"].as_f64())
        .map(RunValue::Scalar)
        .ok_or_else(|| format!("{column}: no severity-{BAND_SEVERITY} band accuracy for run {id}"))
}
