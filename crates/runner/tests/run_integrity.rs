//! Runs and results a reader can trust (issue 14): crash-exact resume at every step of the
//! epoch commit, the run lock, clean-up of what a crash leaves, results tied to the
//! checkpoint that produced them, one unit, and inputs refused with one line before anything
//! is written. Crash states are built deterministically: by copying a committed folder over a
//! later one, or by a process that kills itself with SIGKILL at a named commit step.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pixreg_runner::config::ExperimentConfig;
use pixreg_runner::curves::StepScalars;
use pixreg_runner::data::DataSource;
use pixreg_runner::fault::{COMMIT_POINTS, FAULT_ENV};
use pixreg_runner::results::EpochMetrics;
use pixreg_runner::run_dir::{RunDir, RunStatus};
use pixreg_runner::train::{train, TrainOptions};

mod common;

use common::{tiny_config, DATA, SMOKE};

fn options(max_epochs: Option<usize>) -> TrainOptions {
    TrainOptions {
        quiet: true,
        max_epochs,
    }
}

fn data() -> DataSource {
    DataSource::offline(DATA)
}

/// `pixreg` with `args`, without the user's data directory.
fn pixreg(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pixreg"));
    command.args(args).env_remove("PIXREG_DATA_DIR");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run pixreg")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean refusal: exit 2 and exactly one line on stderr containing `needle`.
fn assert_refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected:\n{err}"
    );
    assert!(err.contains(needle), "`{needle}` not in: {err}");
}

/// `pixreg train` of `config` under `runs`.
fn train_binary(config: &Path, runs: &Path, env: &[(&str, &str)]) -> Output {
    pixreg(
        &[
            "train",
            "-q",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            DATA,
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
        env,
    )
}

fn write_config(dir: &Path, config: &ExperimentConfig) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).unwrap();
    path
}

/// Metric lines without the wall times.
fn metrics_without_times(run: &RunDir) -> Vec<EpochMetrics> {
    run.metric_lines(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| EpochMetrics {
            epoch_seconds: None,
            time: None,
            split_seconds: None,
            ..m
        })
        .collect()
}

/// Step lines without the wall times.
fn steps_without_times(run: &RunDir) -> Vec<StepScalars> {
    run.step_lines(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|s| StepScalars {
            step_seconds: 0.0,
            time: 0.0,
            ..s
        })
        .collect()
}

/// The weights, momentum and best checkpoint of a run's committed state, as bytes.
fn committed_bytes(run: &RunDir) -> Vec<(String, Vec<u8>)> {
    let state = run.state().unwrap().expect("a committed state");
    let files = run.committed_files(&state);
    [files.last.unwrap(), files.optimizer.unwrap(), files.best]
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn assert_same_run(straight: &RunDir, resumed: &RunDir, what: &str) {
    let (a, b) = (committed_bytes(straight), committed_bytes(resumed));
    assert_eq!(
        a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        b.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "{what}: committed files differ"
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{what}: {name} differs from the uninterrupted run");
    }
    assert_eq!(
        metrics_without_times(straight),
        metrics_without_times(resumed),
        "{what}: metrics differ"
    );
    assert_eq!(
        steps_without_times(straight),
        steps_without_times(resumed),
        "{what}: step scalars differ"
    );
    // The event file holds exactly the committed lines: same size as the straight run's
    // (wall times are fixed-width doubles, so only the content can change the length).
    let size = |run: &RunDir| std::fs::metadata(run.events()).map(|m| m.len()).ok();
    assert!(size(straight).is_some(), "{what}: no event file");
    assert_eq!(size(straight), size(resumed), "{what}: event files differ");
    let (s, r) = (
        straight.state().unwrap().unwrap(),
        resumed.state().unwrap().unwrap(),
    );
    assert_eq!(s.sampler, r.sampler, "{what}");
    assert_eq!(s.best_epoch, r.best_epoch, "{what}");
}

/// Only the files the committed state names (plus model.json) are in `checkpoints/`, and no
/// temporary file anywhere.
fn assert_only_committed_files(run: &RunDir) {
    let state = run.state().unwrap().unwrap();
    let files = run.committed_files(&state);
    let mut expected: Vec<PathBuf> = files.last.into_iter().chain(files.optimizer).collect();
    expected.push(files.best);
    expected.push(run.model_json());
    expected.sort();
    expected.dedup();
    let mut found: Vec<PathBuf> = std::fs::read_dir(run.checkpoints())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    for entry in std::fs::read_dir(run.root()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "temporary file {name} left");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_crash_between_the_epoch_files_and_the_commit_resumes_bit_identically() {
    let config = tiny_config(&[]);
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = train(&config, straight_dir.path(), &data(), options(None)).unwrap();
    assert_eq!(straight.state.status, RunStatus::Trained);
    assert_only_committed_files(&straight.run);

    // Epoch 1 committed; a snapshot of the folder; epoch 2 committed on top of it.
    let crashed_dir = tempfile::tempdir().unwrap();
    let first = train(&config, crashed_dir.path(), &data(), options(Some(1))).unwrap();
    let run = first.run.clone();
    drop(first);
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(run.root(), snapshot.path());
    drop(train(&config, crashed_dir.path(), &data(), options(Some(1))).unwrap());
    assert_eq!(run.state().unwrap().unwrap().completed_epochs, 2);
    // The crash of the issue: epoch 2's weights, momentum, best checkpoint and metric line are
    // on disk, its state.json is not (the snapshot's state.json, metrics and epoch-1 files
    // are copied back over the later folder).
    copy_dir(snapshot.path(), run.root());
    assert_eq!(run.state().unwrap().unwrap().completed_epochs, 1);
    assert!(run.last_checkpoint_at(2).is_file() && run.optimizer_at(2).is_file());
    let resumed = train(&config, crashed_dir.path(), &data(), options(None)).unwrap();
    assert_eq!(resumed.state.completed_epochs, 3);
    assert_same_run(&straight.run, &resumed.run, "overlay of epoch 1 on epoch 2");
    assert_only_committed_files(&resumed.run);
}

#[test]
fn kill_9_at_every_step_of_the_epoch_commit_resumes_bit_identically() {
    let config = tiny_config(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &config);
    let id = config.run_id().unwrap();
    let straight_runs = dir.path().join("straight");
    let out = train_binary(&config_path, &straight_runs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let straight = RunDir::new(&straight_runs, &id);
    assert_eq!(
        straight.state().unwrap().unwrap().status,
        RunStatus::Finished
    );

    for point in COMMIT_POINTS {
        let runs = dir.path().join(point);
        let fault = format!("{point}@2");
        let killed = train_binary(&config_path, &runs, &[(FAULT_ENV, fault.as_str())]);
        assert_eq!(
            killed.status.signal(),
            Some(libc_sigkill()),
            "{fault}: expected a SIGKILL, got {:?}: {}",
            killed.status,
            stderr(&killed)
        );
        let run = RunDir::new(&runs, &id);
        let committed = run.state().unwrap().unwrap().completed_epochs;
        let expected = if matches!(point, "state" | "cleanup") {
            2
        } else {
            1
        };
        assert_eq!(committed, expected, "{fault}: committed epochs");
        let resumed = train_binary(&config_path, &runs, &[]);
        assert!(resumed.status.success(), "{fault}: {}", stderr(&resumed));
        assert_eq!(run.state().unwrap().unwrap().status, RunStatus::Finished);
        assert_same_run(&straight, &run, &fault);
        assert_only_committed_files(&run);
    }
}

fn libc_sigkill() -> i32 {
    9
}

#[test]
fn a_second_process_on_the_same_run_is_refused() {
    let config = tiny_config(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &config);
    let runs = dir.path().join("runs");
    let run = RunDir::new(&runs, &config.run_id().unwrap());
    let held = run.lock().unwrap();
    let out = train_binary(&config_path, &runs, &[]);
    assert_refused(&out, "in use by another pixreg process");
    assert!(
        !run.root().exists(),
        "the refused train wrote the run folder"
    );
    drop(held);
    let out = train_binary(&config_path, &runs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _held = run.lock().unwrap();
    let eval = pixreg(
        &[
            "eval",
            "--run",
            run.root().to_str().unwrap(),
            "--data-dir",
            DATA,
        ],
        &[],
    );
    assert_refused(&eval, "in use by another pixreg process");
}

#[test]
fn a_resume_without_its_momentum_or_with_a_truncated_checkpoint_fails_naming_the_file() {
    let config = tiny_config(&[]);
    let runs = tempfile::tempdir().unwrap();
    let run = train(&config, runs.path(), &data(), options(Some(1)))
        .unwrap()
        .run;
    let optimizer = run.optimizer_at(1);
    let saved = std::fs::read(&optimizer).unwrap();
    std::fs::remove_file(&optimizer).unwrap();
    let err = format!(
        "{:#}",
        train(&config, runs.path(), &data(), options(None)).unwrap_err()
    );
    assert!(
        err.contains("optimizer-0001.safetensors") && err.contains("optimizer state"),
        "{err}"
    );
    std::fs::write(&optimizer, saved).unwrap();

    let last = run.last_checkpoint_at(1);
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!(
        "{:#}",
        train(&config, runs.path(), &data(), options(None)).unwrap_err()
    );
    assert!(err.contains("last-0001.safetensors"), "{err}");
    assert!(err.contains("truncated or corrupt"), "{err}");
}

#[test]
fn a_trained_run_is_evaluated_from_its_best_checkpoint_alone() {
    let config = tiny_config(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &config);
    let runs = dir.path().join("runs");
    let trained = train(&config, &runs, &data(), options(None)).unwrap();
    assert_eq!(trained.state.status, RunStatus::Trained);
    let (run, epochs) = (trained.run.clone(), trained.state.completed_epochs);
    drop(trained);
    // What the repository keeps of a run: no last-epoch weights, no momentum buffers.
    std::fs::remove_file(run.last_checkpoint_at(epochs)).unwrap();
    std::fs::remove_file(run.optimizer_at(epochs)).unwrap();
    let out = train_binary(&config_path, &runs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run.state().unwrap().unwrap().status, RunStatus::Finished);
    let results = read_json(&run.results());
    let best = pixreg_runner::provenance::sha256_file(&run.best_checkpoint().unwrap()).unwrap();
    assert_eq!(results["checkpoint_sha256"], best.as_str());
}

#[test]
fn leftovers_of_killed_writes_and_failed_starts_are_cleaned_up() {
    let config = tiny_config(&[]);
    let runs = tempfile::tempdir().unwrap();
    // A failed start (no data here) leaves no run folder.
    let err = train(
        &config,
        runs.path(),
        &DataSource::offline(runs.path()),
        options(None),
    );
    assert!(err.is_err());
    let run = RunDir::new(runs.path(), &config.run_id().unwrap());
    assert!(
        !run.root().exists(),
        "a failed start left {}",
        run.root().display()
    );
    // A folder a killed start left before committing anything is cleared.
    std::fs::create_dir_all(run.checkpoints()).unwrap();
    std::fs::write(run.checkpoints().join("best-0000.safetensors"), b"junk").unwrap();
    drop(train(&config, runs.path(), &data(), options(Some(1))).unwrap());
    // Temporary files of killed writes and files of an uncommitted epoch are removed.
    let junk = [
        run.checkpoints().join(".last-0002.safetensors.tmp-4242"),
        run.root().join(".state.json.tmp-4242"),
        run.last_checkpoint_at(2),
        run.checkpoints().join("best.safetensors"),
    ];
    for path in &junk {
        std::fs::write(path, b"junk").unwrap();
    }
    drop(train(&config, runs.path(), &data(), options(Some(1))).unwrap());
    for path in &junk[..2] {
        assert!(!path.exists(), "{} left", path.display());
    }
    assert_only_committed_files(&run);
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn results_describe_only_the_current_best_checkpoint() {
    let config = tiny_config(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &config);
    let runs = dir.path().join("runs");
    let run = RunDir::new(&runs, &config.run_id().unwrap());
    let run_arg = run.root().to_str().unwrap().to_string();
    let eval = |attacks: &str, extra: &[&str]| {
        let mut args = vec!["eval", "--run", &run_arg, "--data-dir", DATA];
        args.extend(["--attacks", attacks]);
        args.extend(extra);
        pixreg(&args, &[])
    };

    // An unfinished run: refused, unless asked, and then marked provisional.
    drop(train(&config, &runs, &data(), options(Some(1))).unwrap());
    assert_refused(&eval("gaussian", &[]), "still training");
    let out = eval("gaussian", &["--provisional"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = read_json(&run.results());
    assert_eq!(
        results["attacks"]["gaussian"]["provenance"]["provisional"],
        true
    );
    assert_eq!(results["clean"]["provenance"]["provisional"], true);

    // Finishing the run drops the provisional entry instead of showing it beside the final
    // clean accuracy.
    let out = train_binary(&config_path, &runs, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = read_json(&run.results());
    assert!(results["attacks"]["gaussian"].is_null(), "{results}");
    assert_eq!(results["clean"]["provenance"]["provisional"], false);

    // An entry of another checkpoint (a run re-trained in place) is dropped at the next write.
    let out = eval("gaussian", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut results = read_json(&run.results());
    results["attacks"]["gaussian"]["provenance"]["checkpoint_sha256"] = "0".repeat(64).into();
    std::fs::write(run.results(), results.to_string()).unwrap();
    let out = eval("uniform", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let results = read_json(&run.results());
    assert!(results["attacks"]["gaussian"].is_null(), "{results}");
    let uniform = &results["attacks"]["uniform"];
    let clean = results["clean"]["test_acc"].as_f64().unwrap();
    let at_zero = uniform["accuracy"][0].as_f64().unwrap();
    assert!(
        (at_zero - clean).abs() <= 100.0 / 64.0 + 1e-9,
        "uniform at ε = 0 {at_zero} % vs clean {clean} %: not in the same unit or model"
    );

    // eval refuses a config.toml edited to describe another architecture.
    let text = std::fs::read_to_string(run.config()).unwrap();
    std::fs::write(
        run.config(),
        text.replace("base_channels = 4", "base_channels = 16"),
    )
    .unwrap();
    assert_refused(&eval("uniform", &[]), "model.json");
}

#[test]
fn checkpoints_are_readable_by_everyone() {
    let config = tiny_config(&[]);
    let runs = tempfile::tempdir().unwrap();
    let run = train(&config, runs.path(), &data(), options(Some(1)))
        .unwrap()
        .run;
    for path in [
        run.last_checkpoint_at(1),
        run.optimizer_at(1),
        run.best_checkpoint().unwrap(),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{} has mode {mode:o}", path.display());
    }
}

#[test]
fn metric_floats_read_back_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path(), "r");
    run.create().unwrap();
    // Values with long decimal expansions, where a fast float parser is 1 ULP off.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let values: Vec<f64> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f64::from_bits((x >> 12) | 0x3ff0_0000_0000_0000) - 1.0 + 1e-3
        })
        .collect();
    let lines: Vec<EpochMetrics> = values
        .iter()
        .enumerate()
        .map(|(epoch, &v)| {
            serde_json::from_value(serde_json::json!(
                { "epoch": epoch, "valid_loss": v, "test_loss": v, "test_acc": 0.0 }
            ))
            .unwrap()
        })
        .collect();
    run.save_metrics(&lines).unwrap();
    for (line, v) in run.metric_lines(usize::MAX).unwrap().iter().zip(&values) {
        assert_eq!(line.valid_loss.unwrap().to_bits(), v.to_bits());
    }
}

#[test]
fn a_user_target_matrix_is_identified_by_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.safetensors");
    std::fs::write(&targets, b"first version").unwrap();
    let set = format!("regularization.targets=\"{}\"", targets.display());
    let before = tiny_config(&[set.as_str()]).run_id().unwrap();
    assert_eq!(before, tiny_config(&[set.as_str()]).run_id().unwrap());
    std::fs::write(&targets, b"edited in place").unwrap();
    let after = tiny_config(&[set.as_str()]).run_id().unwrap();
    assert_ne!(
        before, after,
        "editing the target file must change the run id"
    );
}

#[test]
fn sizes_that_cannot_fit_are_refused_before_allocating() {
    for set in [
        "model.base_channels=100000",
        "regularization.pairs_per_batch=1000000000",
    ] {
        let err = ExperimentConfig::load(Path::new(SMOKE), &[set.to_string()]).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("needs at least") && err.contains("GiB"),
            "{set}: {err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = pixreg(
            &[
                "train",
                "--config",
                SMOKE,
                "--set",
                set,
                "--data-dir",
                DATA,
                "--runs-dir",
                dir.path().to_str().unwrap(),
            ],
            &[],
        );
        assert_refused(&out, "needs at least");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{set} wrote files"
        );
    }
}

#[test]
fn outputs_never_replace_a_device_a_directory_or_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let images = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/golden/rsa/images.safetensors"
    );
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let target = dir.path().join("target.safetensors");
    std::fs::write(&target, b"keep").unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    for out in [&fifo, &link, &folder] {
        let o = pixreg(
            &[
                "rsa",
                "--images",
                images,
                "--key",
                "gray.images",
                "--threshold",
                "0.8",
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_refused(&o, "refusing to write");
    }
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(folder.is_dir());
}

#[test]
fn errors_stay_on_one_line_and_name_the_true_cause() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[task]\ndataset = \n").unwrap();
    let out = pixreg(
        &[
            "train",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            DATA,
        ],
        &[("RUST_BACKTRACE", "1")],
    );
    assert_refused(&out, "bad.toml");
    let missing = dir.path().join("nope.safetensors");
    let out = pixreg(
        &[
            "predict",
            "--checkpoint",
            missing.to_str().unwrap(),
            "--images",
            "x.safetensors",
            "--out",
            dir.path().join("o.safetensors").to_str().unwrap(),
        ],
        &[("RUST_BACKTRACE", "1")],
    );
    assert_refused(&out, "does not exist");
    assert!(!stderr(&out).contains("--arch"), "{}", stderr(&out));
}

#[test]
fn rsa_says_how_much_the_dense_matrix_needs_and_suggests_no_matrix() {
    let dir = tempfile::tempdir().unwrap();
    // 200 000 images of 4 × 4 pixels: the pixels are 13 MB, the dense matrix 160 GB (more
    // than any machine this runs on).
    let n = 200_000;
    let values: Vec<f32> = (0..n * 16)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let images =
        candle_core::Tensor::from_vec(values, (n, 1, 4, 4), &candle_core::Device::Cpu).unwrap();
    let path = dir.path().join("images.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("images".to_string(), images)]),
        &path,
    )
    .unwrap();
    let out = dir.path().join("out.safetensors");
    let o = pixreg(
        &[
            "rsa",
            "--images",
            path.to_str().unwrap(),
            "--threshold",
            "0.8",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_refused(&o, "--no-matrix");
    assert!(stderr(&o).contains("needs at least"), "{}", stderr(&o));
    assert!(!out.exists());
}
