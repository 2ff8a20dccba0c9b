//! Training end to end on real data: a regularized Fashion-MNIST run through the `pixreg`
//! binary, and exact resumption of an interrupted run.

use std::path::Path;
use std::process::Command;

use pixreg_runner::config::ExperimentConfig;
use pixreg_runner::data::DataSource;
use pixreg_runner::run_dir::RunStatus;
use pixreg_runner::train::{train, TrainOptions, TrainOutcome};

mod common;

use common::{tiny_config, DATA, SMOKE};

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn regularized_fashion_mnist_run_learns_and_leaves_a_complete_folder() {
    let runs = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args([
            "train",
            "-q",
            "--config",
            SMOKE,
            "--data-dir",
            DATA,
            "--runs-dir",
        ])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("finished"), "{stdout}");

    // The one folder (beside it: the run's lock file).
    let run = std::fs::read_dir(runs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let state = read_json(&run.join("state.json"));
    let best = format!(
        "checkpoints/best-{:04}.safetensors",
        state["best_epoch"].as_u64().unwrap()
    );
    for file in [
        "config.toml",
        "metrics.jsonl",
        "state.json",
        "results.json",
        "log.txt",
        "checkpoints/optimizer-0002.safetensors",
        "checkpoints/last-0002.safetensors",
        best.as_str(),
        "checkpoints/model.json",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let mut checkpoints: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    checkpoints.sort();
    assert_eq!(
        checkpoints.len(),
        4,
        "only the committed files remain: {checkpoints:?}"
    );
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 3, "epochs 0, 1, 2");
    let test_loss = |e: usize| metrics[e]["test_loss"].as_f64().unwrap();
    assert!(
        test_loss(2) < test_loss(0),
        "test loss must fall: {metrics:?}"
    );
    assert!(
        metrics[2]["train_ce"].as_f64().unwrap() < metrics[1]["train_ce"].as_f64().unwrap(),
        "training loss must fall: {metrics:?}"
    );
    for epoch in [1, 2] {
        let corr = metrics[epoch]["score_target_corr"].as_f64().unwrap();
        assert!(
            corr > 0.0,
            "score/target correlation {corr} in epoch {epoch}"
        );
    }
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "finished");
    let results = read_json(&run.join("results.json"));
    let acc = results["clean"]["test_acc"].as_f64().unwrap();
    assert!(
        acc > 25.0,
        "clean test accuracy {acc} % is not clearly above chance (10 %)"
    );
    let curve = &results["attacks"]["gaussian"];
    assert_eq!(curve["accuracy"].as_array().unwrap().len(), 10);
    assert_eq!(curve["epsilons"][0].as_f64(), Some(0.0));
    // One unit: the curve is in % like the clean accuracy, and at ε = 0 it is the clean
    // accuracy of the same checkpoint.
    let at_zero = curve["accuracy"][0].as_f64().unwrap();
    assert!(
        (at_zero - acc).abs() <= 100.0 / 500.0 + 1e-9,
        "accuracy at ε = 0 {at_zero} % vs clean {acc} %"
    );
    let sha = results["checkpoint_sha256"].as_str().unwrap();
    assert_eq!(
        sha,
        pixreg_runner::provenance::sha256_file(&run.join(&best)).unwrap()
    );
    for entry in [&results["clean"], curve] {
        let p = &entry["provenance"];
        assert_eq!(p["checkpoint_sha256"].as_str(), Some(sha), "{entry}");
        assert_eq!(p["checkpoint"].as_str(), Some(best.as_str()));
        assert_eq!(p["provisional"], false);
        assert_eq!(
            p["pixreg_version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(p["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
        assert!(p["evaluated_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    assert_eq!(results["format"], 2);

    let again = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args([
            "train",
            "-q",
            "--config",
            SMOKE,
            "--data-dir",
            DATA,
            "--runs-dir",
        ])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already finished"));

    // `pixreg eval` adds attacks to the finished run, with [evaluation] overrides only.
    let eval = |set: &str| {
        Command::new(env!("CARGO_BIN_EXE_pixreg"))
            .args([
                "eval",
                "--attacks",
                "pgd-linf",
                "--data-dir",
                DATA,
                "--set",
                set,
            ])
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap()
    };
    let refused = eval("training.epochs=5");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("[evaluation] settings only"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let pgd = eval("evaluation.pgd_images=8");
    assert!(
        pgd.status.success(),
        "{}",
        String::from_utf8_lossy(&pgd.stderr)
    );
    // HopSkipJump on a budget: 2 iterations of 10 gradient queries (foolbox: 64 of 100).
    let hsj = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args(["eval", "--attacks", "hsj", "--data-dir", DATA])
        .args(["--set", "evaluation.boundary_images=2"])
        .args(["--set", "evaluation.boundary_repeats=1"])
        .args(["--set", "evaluation.hsj_steps=2"])
        .args(["--set", "evaluation.hsj_gradient_evals=10"])
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        hsj.status.success(),
        "{}",
        String::from_utf8_lossy(&hsj.stderr)
    );
    let results = read_json(&run.join("results.json"));
    let hsj = &results["attacks"]["hsj"];
    assert_eq!(hsj["settings"]["steps"].as_u64(), Some(2), "{hsj}");
    assert_eq!(hsj["settings"]["initial_gradient_evals"].as_u64(), Some(10));
    let per_image = hsj["queries"].as_f64().unwrap() / hsj["n_images"].as_f64().unwrap();
    assert!(
        per_image < 1000.0,
        "{per_image} queries per image with 2 iterations of ≤ 15 gradient queries"
    );
    assert_eq!(results["attacks"]["pgd-linf"]["n_images"].as_u64(), Some(8));
    // log.txt follows the PGD grid ε by ε (xtask's progress bars read these lines).
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let points = results["attacks"]["pgd-linf"]["epsilons"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        log.contains(&format!("): ε {points}/{points} done")),
        "no per-ε progress in {log}"
    );
    assert!(
        results["attacks"]["gaussian"].is_object(),
        "earlier results are kept"
    );

    let listing = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args(["runs", "--runs-dir"])
        .arg(runs.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("finished") && listing.contains("fashion-mnist-reg-"),
        "{listing}"
    );
    let json = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args([
            "runs",
            "--json",
            "--filter",
            "fashion-mnist-reg",
            "--runs-dir",
        ])
        .arg(runs.path())
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let only = &listed[0];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(only["alpha"].as_f64(), Some(10.0), "{only}");
    assert_eq!(only["threshold"].as_f64(), Some(0.8));
    assert_eq!(only["range"], "all");
    assert_eq!(only["test_acc"], results["clean"]["test_acc"]);
    assert!(only["gaussian"]
        .as_f64()
        .is_some_and(|g| g > 0.0 && g <= 100.0));
    let none = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args(["runs", "--json", "--filter", "no-such-run", "--runs-dir"])
        .arg(runs.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&none.stdout).trim(), "[]");
}

#[test]
fn an_interrupted_run_resumes_to_exactly_the_same_weights() {
    let runs = assert_resumes_exactly(&tiny_config(&[]));
    let (full, resumed) = (&runs.full, &runs.resumed);
    let best = full.run.best_checkpoint().unwrap();
    assert!(
        std::fs::read(&best).unwrap()
            == std::fs::read(resumed.run.best_checkpoint().unwrap()).unwrap(),
        "{} differs between the straight and the resumed run",
        best.display()
    );
    assert_eq!(full.state.sampler, resumed.state.sampler);
    let metrics = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("epoch_seconds");
                o.remove("time");
                o.remove("split_seconds");
                v
            })
            .collect()
    };
    assert_eq!(metrics(full.run.root()), metrics(resumed.run.root()));
    let steps = |run: &pixreg_runner::run_dir::RunDir| {
        let lines = run.step_lines(usize::MAX).unwrap();
        lines
            .into_iter()
            .map(|s| pixreg_runner::curves::StepScalars {
                step_seconds: 0.0,
                time: 0.0,
                ..s
            })
            .collect::<Vec<_>>()
    };
    let full_steps = steps(&full.run);
    assert!(!full_steps.is_empty(), "no step scalars were written");
    assert_eq!(full_steps, steps(&resumed.run));
}

/// A run trained straight and the same run trained as 1 epoch, then resumed to the end; the
/// temporary folders live as long as this value.
struct StraightAndResumed {
    full: TrainOutcome,
    resumed: TrainOutcome,
    _folders: (tempfile::TempDir, tempfile::TempDir),
}

/// Trains `config` (≥ 2 epochs) straight and as 1 + rest epochs; asserts the interrupted run
/// stopped after one epoch, both finished, and the last checkpoint and optimizer state are
/// byte-identical.
fn assert_resumes_exactly(config: &ExperimentConfig) -> StraightAndResumed {
    let quiet = TrainOptions {
        quiet: true,
        max_epochs: None,
    };
    let straight = tempfile::tempdir().unwrap();
    let full = train(config, straight.path(), &DataSource::offline(DATA), quiet).unwrap();
    assert_eq!(full.state.status, RunStatus::Trained);
    let split = tempfile::tempdir().unwrap();
    let first = train(
        config,
        split.path(),
        &DataSource::offline(DATA),
        TrainOptions {
            quiet: true,
            max_epochs: Some(1),
        },
    )
    .unwrap();
    assert_eq!(first.state.completed_epochs, 1);
    assert_eq!(first.state.status, RunStatus::Running);
    // The outcome holds the run's lock: release it before resuming.
    drop(first);
    let resumed = train(config, split.path(), &DataSource::offline(DATA), quiet).unwrap();
    assert_eq!(resumed.state.completed_epochs, config.training.epochs);
    let epochs = config.training.epochs;
    for (a, b) in [
        (
            full.run.last_checkpoint_at(epochs),
            resumed.run.last_checkpoint_at(epochs),
        ),
        (
            full.run.optimizer_at(epochs),
            resumed.run.optimizer_at(epochs),
        ),
    ] {
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{} differs between the straight and the resumed run",
            a.display()
        );
    }
    StraightAndResumed {
        full,
        resumed,
        _folders: (straight, split),
    }
}

#[test]
fn defended_runs_perturb_their_batches_resume_exactly_and_record_their_cost() {
    let mut plain = tiny_config(&[]);
    plain.training.epochs = 2;
    let quiet = TrainOptions {
        quiet: true,
        max_epochs: None,
    };
    let undefended = tempfile::tempdir().unwrap();
    let reference = train(&plain, undefended.path(), &DataSource::offline(DATA), quiet).unwrap();
    let reference_weights = std::fs::read(reference.run.last_checkpoint_at(2)).unwrap();

    for (defense, logged) in [
        (
            "training.noise_augmentation={std=0.2, fraction=0.5}",
            "Gaussian-noise augmentation",
        ),
        (
            "training.adversarial={attack=\"fgsm\", epsilon=0.1}",
            "FGSM adversarial training",
        ),
        (
            "training.adversarial={attack=\"pgd\", epsilon=0.1, steps=2}",
            "PGD adversarial training",
        ),
    ] {
        let text = toml::to_string(&plain).unwrap();
        let config = ExperimentConfig::from_toml(&text, &[defense.to_string()]).unwrap();
        let runs = assert_resumes_exactly(&config);
        let root = runs.full.run.root();
        let log = std::fs::read_to_string(root.join("log.txt")).unwrap();
        assert!(
            log.contains(logged),
            "{defense}: log lacks `{logged}`:\n{log}"
        );
        for line in log.lines() {
            let stamp = line.split(' ').next().unwrap_or_default();
            assert!(
                humantime::parse_rfc3339(stamp).is_ok(),
                "log line without an RFC 3339 timestamp: {line}"
            );
        }
        let weights = std::fs::read(runs.full.run.last_checkpoint_at(2)).unwrap();
        assert!(
            weights != reference_weights,
            "{defense}: same weights as without the defense"
        );
        let state = read_json(&root.join("state.json"));
        assert!(state["targets_seconds"].as_f64().is_some_and(|s| s > 0.0));
        if Path::new("/proc/self/status").is_file() {
            assert!(state["peak_rss_mib"].as_f64().is_some_and(|m| m > 10.0));
        }
    }
}

#[test]
fn photos_of_another_size_regularize_a_task() {
    // Tiny-ImageNet photos become 36×64 regularization images (the reference's ImageNet
    // preprocessing) for a 28×28 task: the pair forward takes them as they are.
    let config = tiny_config(&[
        "regularization.source=\"tiny-imagenet\"",
        "regularization.alpha=4.0",
        "training.epochs=1",
    ]);
    let runs = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        quiet: true,
        max_epochs: None,
    };
    let outcome = train(&config, runs.path(), &DataSource::offline(DATA), options)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(outcome.state.status, RunStatus::Trained);
    let steps = std::fs::read_to_string(outcome.run.root().join("steps.jsonl")).unwrap();
    assert!(
        steps.contains("\"reg\""),
        "no similarity loss logged: {steps}"
    );
}

#[test]
fn bn_recalibration_changes_only_the_running_statistics_and_resumes_exactly() {
    let plain = tiny_config(&[]);
    let config = tiny_config(&["training.bn_recalibration_images=64"]);
    assert!(toml::to_string(&config)
        .unwrap()
        .contains("bn_recalibration_images = 64"));
    assert!(!toml::to_string(&plain)
        .unwrap()
        .contains("bn_recalibration_images"));
    let too_many = tiny_config(&["training.bn_recalibration_images=128"]);
    let empty = tempfile::tempdir().unwrap();
    let quiet = TrainOptions {
        quiet: true,
        max_epochs: None,
    };
    let err = train(&too_many, empty.path(), &DataSource::offline(DATA), quiet).unwrap_err();
    assert!(
        format!("{err:#}").contains("exceeds the 96 training images"),
        "{err:#}"
    );
    let folder = empty.path().join(too_many.run_id().unwrap());
    assert!(!folder.exists(), "{} was left behind", folder.display());
    let runs = assert_resumes_exactly(&config);
    let quiet = TrainOptions {
        quiet: true,
        max_epochs: None,
    };
    let folder = tempfile::tempdir().unwrap();
    let reference = train(&plain, folder.path(), &DataSource::offline(DATA), quiet).unwrap();
    let epochs = plain.training.epochs;
    let load = |run: &pixreg_runner::run_dir::RunDir| {
        candle_core::safetensors::load(run.last_checkpoint_at(epochs), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (recalibrated, exponential) = (load(&runs.full.run), load(&reference.run));
    assert_eq!(recalibrated.len(), exponential.len());
    let mut statistics = 0;
    for (name, tensor) in &exponential {
        let values = |t: &candle_core::Tensor| -> Vec<f32> {
            t.to_dtype(candle_core::DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (a, b) = (values(tensor), values(&recalibrated[name]));
        if (name.starts_with("core.") && name.ends_with("running_mean"))
            || name.ends_with("running_var")
        {
            assert_ne!(a, b, "{name}: the statistics were not re-estimated");
            statistics += 1;
        } else {
            // Weights, batch counters and the similarity head's means: the recalibration
            // draws its own batches and leaves the training as it was.
            assert_eq!(a, b, "{name} changed");
        }
    }
    assert_eq!(statistics, 2 * 20, "ResNet18: 20 batch norms");
}
