//! `pixreg rsa` end to end: outputs against the official code's golden files, the spec's
//! selection percentages on real data, and clean failures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

fn pixreg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pixreg"))
        .args(args)
        .env_remove("PIXREG_DATA_DIR")
        .output()
        .expect("run pixreg")
}

fn golden(file: &str) -> String {
    format!("{SHARED}/golden/rsa/{file}")
}

fn load(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).expect("read output")
}

fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn writes_similarity_targets_and_pairs_matching_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(&dir, "gray.safetensors");
    let images = golden("images.safetensors");
    let o = pixreg(&[
        "rsa",
        "--images",
        &images,
        "--key",
        "gray.images",
        "--threshold",
        "0.8",
        "--range",
        "high",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("N = 64 images"), "{stdout}");

    let written = load(&out);
    let expected_pairs = &load(Path::new(&golden("pairs.safetensors")))["gray.high.thresh_0.8"];
    let pairs = &written["pairs"];
    assert_eq!(pairs.dtype(), candle_core::DType::I64);
    assert_eq!(
        pairs.to_vec2::<i64>().unwrap(),
        expected_pairs.to_vec2::<i64>().unwrap()
    );
    let s = &written["similarity"];
    let expected_s = &load(Path::new(&golden("similarity.safetensors")))["gray.s"];
    let diff = (s - expected_s).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    let targets: Vec<f32> = written["targets"].to_vec1().unwrap();
    assert_eq!(targets.len(), pairs.dim(0).unwrap());
    assert!(targets.iter().all(|&t| t == 1.0 || t == -1.0));
}

#[test]
fn no_matrix_omits_the_similarity() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(&dir, "rgb.safetensors");
    let images = golden("images.safetensors");
    let o = pixreg(&[
        "rsa",
        "--images",
        &images,
        "--key",
        "rgb.images",
        "--threshold",
        "0.8",
        "--range",
        "double",
        "--double-threshold",
        "0.2",
        "--no-matrix",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written = load(&out);
    assert!(!written.contains_key("similarity"));
    let expected = &load(Path::new(&golden("pairs.safetensors")))["rgb.double.thresh_0.8_0.2"];
    assert_eq!(
        written["pairs"].to_vec2::<i64>().unwrap(),
        expected.to_vec2::<i64>().unwrap()
    );
}

/// The reference-training spec (§5.4) lists the share of pairs beyond the threshold for the
/// first 5000 training images, computed independently in float64.
#[test]
fn dataset_input_reproduces_the_spec_selection_percentages() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(&dir, "mnist.safetensors");
    let data = format!("{SHARED}/datasets");
    for (dataset, th, range, percent) in [
        ("mnist", "0.4", "high", 3.109 + 0.205),
        ("mnist", "0.2", "low", 76.46),
        ("fashion-mnist", "0.8", "high", 0.734 + 0.0002),
    ] {
        let o = pixreg(&[
            "rsa",
            "--dataset",
            dataset,
            "--count",
            "5000",
            "--data-dir",
            &data,
            "--threshold",
            th,
            "--range",
            range,
            "--no-matrix",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let n_pairs = load(&out)["targets"].dim(0).unwrap() as f64;
        let got = 100.0 * n_pairs / 12_497_500.0;
        assert!(
            (got - percent).abs() < 0.006,
            "{dataset} {range} Th {th}: {got:.4} % vs spec {percent:.4} %"
        );
    }
}

#[test]
fn bad_input_fails_with_exit_code_2_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(&dir, "never.safetensors");
    let images = golden("images.safetensors");
    let nan_file = dir.path().join("nan.safetensors");
    let nan = Tensor::from_vec(vec![f32::NAN; 2 * 4], (2, 4), &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("images".to_string(), nan)]),
        &nan_file,
    )
    .unwrap();
    let rank3 = dir.path().join("rank3.safetensors");
    let t = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("images".to_string(), t)]),
        &rank3,
    )
    .unwrap();
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--images", "missing.safetensors", "--threshold", "0.5"],
            "does not exist",
        ),
        (
            vec!["--images", &images, "--threshold", "0.5"],
            "no tensor `images`",
        ),
        (
            vec![
                "--images",
                &images,
                "--key",
                "gray.images",
                "--threshold",
                "1.5",
            ],
            "threshold",
        ),
        (
            vec![
                "--images",
                &images,
                "--key",
                "gray.images",
                "--threshold",
                "0.5",
                "--range",
                "mid",
            ],
            "unknown pair range",
        ),
        (
            vec!["--images", nan_file.to_str().unwrap(), "--threshold", "0.5"],
            "non-finite",
        ),
        (
            vec!["--images", rank3.to_str().unwrap(), "--threshold", "0.5"],
            "shape",
        ),
        (
            vec!["--dataset", "svhn", "--count", "10", "--threshold", "0.5"],
            "svhn",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["rsa"];
        full.extend(args.iter().copied());
        full.extend(["--out", o]);
        let res = pixreg(&full);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{full:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{full:?}: `{stderr}` lacks `{expected}`"
        );
        assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
        assert!(!out.exists(), "{full:?} left an output file");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }
}
