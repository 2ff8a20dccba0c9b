//! What the training tests share: the shipped data, the smoke config and a tiny run.

use std::path::Path;

use pixreg_runner::config::ExperimentConfig;

/// The shipped datasets (`../shared/datasets` beside the checkout).
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets");

/// A regularized Fashion-MNIST smoke config.
pub const SMOKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/fashion-mnist-reg-smoke.toml"
);

/// A regularized run of 3 epochs on 96 images at width 4, small enough to train a dozen
/// times in a test; `extra` overrides are applied last.
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
