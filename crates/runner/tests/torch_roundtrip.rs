//! pixreg → PyTorch: `tools/pixreg_to_torch.py` rebuilds the official ResNet from a checkpoint
//! that `pixreg train` wrote, loads it strictly and gives the logits `pixreg predict` gives on
//! 100 test images. Runs where a Python with torch and safetensors is found ($PIXREG_PYTHON,
//! else `python3`); skipped with the reason printed otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use pixreg_runner::data::load_task_data;
use pixreg_runner::data::DataSource;
use pixreg_runner::train::{train, TrainOptions};

mod common;

use common::{python_with, run_ok, tiny_config, DATA};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tools/pixreg_to_torch.py"
);

fn read_logits(path: &Path) -> Vec<Vec<f32>> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    tensors["logits"].to_vec2().unwrap()
}

#[test]
fn the_shipped_script_loads_a_checkpoint_into_pytorch_with_the_same_logits() {
    let Some(python) = python_with("torch, safetensors") else {
        eprintln!("skipped: no Python with torch and safetensors (set PIXREG_PYTHON to one)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&["training.epochs=1", "task.test_limit=100"]);
    let source = DataSource::offline(DATA);
    let outcome = train(
        &config,
        dir.path(),
        &source,
        TrainOptions {
            quiet: true,
            max_epochs: None,
        },
    )
    .unwrap();
    let checkpoint = outcome.run.best_checkpoint().unwrap();
    let metadata = pixreg_models::checkpoint::read_metadata(&checkpoint).unwrap();
    for key in [
        "arch",
        "base_channels",
        "in_shape",
        "num_classes",
        "input_scaling",
        "pixreg_version",
        "git_commit",
    ] {
        assert!(
            metadata.contains_key(key),
            "checkpoint metadata lacks {key}"
        );
    }
    // The script needs nothing but the checkpoint: model.json is moved away.
    let alone = dir.path().join("alone.safetensors");
    std::fs::copy(&checkpoint, &alone).unwrap();

    let data = load_task_data(&config, &source).unwrap();
    let scale = data.model_scale().unwrap();
    let batch = data
        .test_batcher(100, scale, &Device::Cpu)
        .unwrap()
        .epoch(0)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(batch.images.dim(0).unwrap(), 100);
    let images = dir.path().join("images.safetensors");
    let tensors: HashMap<String, Tensor> = [("images".to_string(), batch.images)].into();
    candle_core::safetensors::save(&tensors, &images).unwrap();

    let ours = dir.path().join("pixreg.safetensors");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_pixreg"))
            .args(["predict", "--checkpoint"])
            .arg(&alone)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(&ours),
    );
    let theirs = dir.path().join("torch.safetensors");
    run_ok(
        Command::new(&python)
            .arg(SCRIPT)
            .arg("--checkpoint")
            .arg(&alone)
            .arg("--images")
            .arg(&images)
            .arg("--out")
            .arg(&theirs),
    );
    let (a, b) = (read_logits(&ours), read_logits(&theirs));
    assert_eq!(a.len(), 100);
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("largest pixreg − PyTorch logit difference: {worst:e}");
    assert!(worst <= 1e-4, "pixreg and PyTorch logits differ by {worst}");

    // Importable too: load() returns the module in eval mode with the recorded scaling.
    let probe = run_ok(
        Command::new(&python)
            .arg("-c")
            .arg(
                "import sys; sys.path.insert(0, sys.argv[1]); from pixreg_to_torch import load; \
                 m = load(sys.argv[2]); print(m.training, m.input_scaling['scale'])",
            )
            .arg(Path::new(SCRIPT).parent().unwrap())
            .arg(&alone),
    );
    let printed = String::from_utf8_lossy(&probe.stdout);
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(fields[0], "False", "not in eval mode");
    assert_eq!(fields[1].parse::<f32>().unwrap(), scale.scale);
}
