//! Training curves of a real (tiny) run: `steps.jsonl`, the TensorBoard event file read back
//! by TensorBoard's own reader, and `pixreg plot`'s SVG and PNG.

use std::path::Path;
use std::process::Command;

use pixreg_runner::data::DataSource;
use pixreg_runner::run_dir::RunDir;
use pixreg_runner::train::{train, TrainOptions};

mod common;

use common::{python_with, run_ok, tiny_config, DATA};

/// A trained tiny run (2 epochs of 2 steps, a step line every step) in a temporary folder.
fn trained_run() -> (tempfile::TempDir, RunDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&["training.epochs=2", "training.display_every=1"]);
    let outcome = train(
        &config,
        dir.path(),
        &DataSource::offline(DATA),
        TrainOptions {
            quiet: true,
            max_epochs: None,
        },
    )
    .unwrap();
    (dir, outcome.run.clone())
}

#[test]
fn every_logged_step_is_committed_with_its_epoch() {
    let (_dir, run) = trained_run();
    let steps = run.step_lines(usize::MAX).unwrap();
    let per_epoch = steps[0].steps_per_epoch;
    assert!(per_epoch >= 1);
    assert_eq!(
        steps.len(),
        2 * per_epoch,
        "display_every = 1 logs every step"
    );
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s.global_step(), k as u64 + 1);
        assert!(s.ce.is_finite() && s.reg.is_some_and(f64::is_finite));
        assert!(s.lr > 0.0 && s.step_seconds > 0.0 && s.time > 1.6e9);
    }
}

#[test]
fn tensorboard_reads_the_event_file() {
    let Some(python) = python_with("tensorboard") else {
        eprintln!(
            "skipped: no Python with tensorboard (pip install tensorboard, or set PIXREG_PYTHON)"
        );
        return;
    };
    let (_dir, run) = trained_run();
    let steps = run.step_lines(usize::MAX).unwrap();
    let metrics = run.metric_lines(usize::MAX).unwrap();
    // TensorBoard's own loader: it checks both CRCs of every record and parses each Event.
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
print(json.dumps(out))
"#;
    let out = run_ok(Command::new(&python).args(["-c", script]).arg(run.events()));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ce = read["train/ce"].as_array().expect("train/ce scalars");
    assert_eq!(ce.len(), steps.len());
    for (point, s) in ce.iter().zip(&steps) {
        assert_eq!(point[0].as_u64(), Some(s.global_step()));
        assert_eq!(point[1].as_f64().unwrap() as f32, s.ce as f32);
    }
    let test_acc = read["epoch/test_acc"].as_array().expect("epoch/test_acc");
    assert_eq!(test_acc.len(), metrics.len());
    let per_epoch = steps[0].steps_per_epoch as u64;
    for (point, m) in test_acc.iter().zip(&metrics) {
        assert_eq!(point[0].as_u64(), Some(m.epoch as u64 * per_epoch));
        assert_eq!(point[1].as_f64().unwrap() as f32, m.test_acc as f32);
    }
    assert!(read.get("epoch/time").is_none());
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn pixreg_plot_draws_every_panel_as_svg_and_png() {
    let (dir, run) = trained_run();
    let out = dir.path().join("figures");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_pixreg"))
            .arg("plot")
            .arg(run.root())
            .arg("--out")
            .arg(&out),
    );
    let svg = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    for panel in [
        "training cross-entropy",
        "regularizer loss",
        "score–target correlation",
        "accuracy (%)",
        "learning rate",
    ] {
        assert!(svg.contains(panel), "no {panel} panel");
    }
    assert!(svg.contains(&run.id()), "the legend names the run");
    let png = std::fs::read(out.join("curves.png")).unwrap();
    let (w, h) = png_size(&png);
    assert!(svg.contains(&format!("width=\"{w}\"")) && svg.contains(&format!("height=\"{h}\"")));
}

#[test]
fn pixreg_plot_refuses_a_folder_that_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .arg("plot")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("figures"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a run folder"), "{stderr}");
    assert!(!Path::new(&dir.path().join("figures")).exists());
}
