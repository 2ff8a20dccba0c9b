//! The typed `results.json` and `metrics.jsonl` read every file the committed runs hold and
//! write them back byte for byte: the types are the files' contract, not a second reading
//! of them.

use std::path::{Path, PathBuf};

mod common;

use pixreg_runner::attack::{AttackName, AttackSpec};
use pixreg_runner::config::ExperimentConfig;
use pixreg_runner::results::{EpochMetrics, ResultShape, RunResults, StoredResults};

fn committed_runs() -> Vec<PathBuf> {
    let runs = common::committed_runs();
    assert!(
        runs.len() >= 10,
        "expected the committed runs in experiments/runs"
    );
    runs
}

#[test]
fn every_committed_results_file_round_trips_byte_for_byte() {
    let mut read = 0;
    for run in committed_runs() {
        let path = run.join("results.json");
        let StoredResults::Current(results) = RunResults::load(&path).unwrap() else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, entry) in results.attacks.iter() {
            let shape_matches = match name.result_shape() {
                ResultShape::Curve => entry.result.as_curve().is_some(),
                ResultShape::Decision => entry.result.as_decision().is_some(),
                ResultShape::Corruptions => entry.result.as_corruptions().is_some(),
            };
            assert!(shape_matches, "{name} in {}", path.display());
        }
        let value = serde_json::to_value(&results).unwrap();
        let again = serde_json::to_string_pretty(&value).unwrap();
        assert_eq!(again.trim_end(), text.trim_end(), "{}", path.display());
        read += 1;
    }
    assert!(read >= 10, "only {read} results files read");
}

#[test]
fn every_committed_metric_line_round_trips_byte_for_byte() {
    let mut lines = 0;
    for run in committed_runs() {
        let path = run.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            let metrics: EpochMetrics = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            assert_eq!(
                serde_json::to_string(&metrics).unwrap(),
                line,
                "{}",
                path.display()
            );
            lines += 1;
        }
    }
    assert!(lines >= 100, "only {lines} metric lines read");
}

#[test]
fn a_failed_decision_attack_reads_back_as_nan() {
    let path = committed_runs()
        .into_iter()
        .map(|r| r.join("results.json"))
        .find(|p| matches!(RunResults::load(p), Ok(StoredResults::Current(_))))
        .unwrap();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value["attacks"]["boundary"] = serde_json::json!({
        "queries": 0.0, "queries_per_second": null, "mean_of_medians": null,
        "medians": [null], "success_rate": 0.0, "n_images": 2, "wall_seconds": 0.0,
        "repeats": [{ "median": null, "successes": 0, "failures": 2,
                      "distances": [null, null], "mean_queries": 0.0, "wall_seconds": 0.0 }],
        "provenance": value["clean"]["provenance"].clone(),
    });
    let results: RunResults = serde_json::from_value(value).unwrap();
    let boundary = results.attacks.get(AttackName::Boundary).unwrap();
    let decision = boundary.result.as_decision().unwrap();
    assert!(decision.mean_of_medians.is_nan() && decision.medians[0].is_nan());
    assert!(decision.repeats[0].median.is_nan());
}

#[test]
fn an_entry_of_the_wrong_shape_names_the_file_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    let source = committed_runs()
        .into_iter()
        .map(|r| r.join("results.json"))
        .find(|p| matches!(RunResults::load(p), Ok(StoredResults::Current(_))))
        .unwrap();
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source).unwrap()).unwrap();
    value["attacks"]["gaussian"] = serde_json::json!({ "mean_of_medians": 0.1 });
    std::fs::write(&path, value.to_string()).unwrap();
    let err = format!("{:#}", RunResults::load(&path).unwrap_err());
    assert!(
        err.contains("is corrupt") && err.contains("missing field"),
        "{err}"
    );
}

/// Attacks listed by name are written back as names (configs of committed runs read as
/// before); one with parameters as a table; bad parameters are refused with the key.
#[test]
fn attack_specs_are_names_or_tables_and_bad_parameters_name_the_key() {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/fashion-mnist-baseline-demo.toml"),
    )
    .unwrap();
    let set = |value: &str| vec![format!("evaluation.attacks={value}")];
    let config = ExperimentConfig::from_toml(
        &base,
        &set(r#"["gaussian", { attack = "hsj", steps = 20 }, { attack = "boundary" }]"#),
    )
    .unwrap();
    let names: Vec<AttackName> = config
        .evaluation
        .attacks
        .iter()
        .map(AttackSpec::name)
        .collect();
    assert_eq!(
        names,
        [AttackName::Gaussian, AttackName::Hsj, AttackName::Boundary]
    );
    assert!(config.evaluation.attacks[2].is_preset());
    let written = toml::to_string(&config.evaluation).unwrap();
    assert!(
        written.contains(r#""gaussian""#) && written.contains(r#"attack = "hsj""#),
        "{written}"
    );
    assert!(
        written.contains(r#""boundary""#),
        "a preset is written as its name: {written}"
    );
    let again = ExperimentConfig::from_toml(&toml::to_string(&config).unwrap(), &[]).unwrap();
    assert_eq!(again.evaluation.attacks, config.evaluation.attacks);

    for (value, expected) in [
        (
            r#"[{ attack = "hsj", steps = 0 }]"#,
            "`steps` must be positive",
        ),
        (
            r#"[{ attack = "saltpepper", epsilons = [0.5, 1.5] }]"#,
            "at most 1",
        ),
        (r#"[{ attack = "corruptions", severities = [6] }]"#, "1..=5"),
        (
            r#"["gaussian", { attack = "gaussian", epsilons = [0.1] }]"#,
            "twice",
        ),
        (
            r#"[{ attack = "boundary", stpes = 3 }]"#,
            "unknown field `stpes`",
        ),
        (r#"[{ attack = "gausian" }]"#, "unknown variant `gausian`"),
    ] {
        let err = format!(
            "{:#}",
            ExperimentConfig::from_toml(&base, &set(value)).unwrap_err()
        );
        assert!(err.contains(expected), "{value}: {err}");
        assert!(err.contains("evaluation.attacks"), "{value}: {err}");
    }
}

/// The config of every committed run reads with today's types and hashes to the run's folder
/// name: a change of the config types that moved a run id would orphan every committed run.
#[test]
fn every_committed_config_still_names_its_run() {
    for run in committed_runs() {
        let config = ExperimentConfig::load(&run.join("config.toml"), &[])
            .unwrap_or_else(|e| panic!("{}: {e:#}", run.display()));
        let folder = run.file_name().unwrap().to_str().unwrap();
        assert_eq!(config.run_id().unwrap(), folder);
    }
}

#[test]
fn results_of_older_formats_are_recognised_not_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    assert_eq!(RunResults::load(&path).unwrap(), StoredResults::Missing);
    // Format 1 (pixreg 0.1) had no `format` key and fractions in its curves.
    std::fs::write(&path, r#"{"gaussian": {"accuracy": [0.5]}}"#).unwrap();
    assert_eq!(
        RunResults::load(&path).unwrap(),
        StoredResults::OtherFormat(1)
    );
    std::fs::write(&path, r#"{"format": 1, "attacks": {}}"#).unwrap();
    assert_eq!(
        RunResults::load(&path).unwrap(),
        StoredResults::OtherFormat(1)
    );
    std::fs::write(&path, r#"{"format": "two"}"#).unwrap();
    let err = format!("{:#}", RunResults::load(&path).unwrap_err());
    assert!(
        err.contains("is corrupt") && err.contains("format"),
        "{err}"
    );
}
