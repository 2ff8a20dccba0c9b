//! What the training tests share: the shipped data, the smoke config and a tiny run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pixreg_runner::config::ExperimentConfig;

/// The shipped datasets (`../shared/datasets` beside the checkout).
#[allow(dead_code)] // shared by some of the test crates that include this module
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets");

/// A regularized Fashion-MNIST smoke config.
#[allow(dead_code)] // shared by some of the test crates that include this module
pub const SMOKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/fashion-mnist-reg-smoke.toml"
);

/// A regularized run of 3 epochs on 96 images at width 4, small enough to train a dozen
/// times in a test; `extra` overrides are applied last.
#[allow(dead_code)] // shared by some of the test crates that include this module
pub fn tiny_config(extra: &[&str]) -> ExperimentConfig {
    let overrides: Vec<String> = [
        "task.train_limit=96",
        "task.test_limit=64",
        "model.base_channels=4",
        "regularization.n_images=200",
        "regularization.range=\"high\"",
        "regularization.threshold=0.4",
        "training.epochs=3",
        "evaluation.attacks=[]",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    ExperimentConfig::load(Path::new(SMOKE), &overrides).unwrap()
}

/// Runs `command` and asserts it succeeded, with its stderr in the failure message.
#[allow(dead_code)] // shared by some of the test crates that include this module
pub fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("start the command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Python that can import `modules` (e.g. `"torch, safetensors"`): `$PIXREG_PYTHON`, else
/// `python3`; `None` when it cannot.
#[allow(dead_code)] // shared by some of the test crates that include this module
pub fn python_with(modules: &str) -> Option<String> {
    let python = std::env::var("PIXREG_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// The committed run folders, sorted: each folder of `experiments/runs/` that holds a
/// `config.toml`, and those one level down (the `quick` runs in `experiments/runs/quick/`).
#[allow(dead_code)] // shared by some of the test crates that include this module
pub fn committed_runs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/runs");
    let is_run = |p: &PathBuf| p.join("config.toml").is_file();
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect()
    };
    let mut runs = Vec::new();
    for dir in entries(&root) {
        if is_run(&dir) {
            runs.push(dir);
        } else {
            runs.extend(entries(&dir).into_iter().filter(is_run));
        }
    }
    runs.sort();
    runs
}
