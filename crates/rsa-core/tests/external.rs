//! Bring-your-own target matrices: loading and validation.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rsa_core::{load_similarity_matrix, Error};

fn matrix(values: &[f32], n: usize) -> Tensor {
    Tensor::from_vec(values.to_vec(), (n, n), &Device::Cpu).unwrap()
}

fn valid_3x3() -> Tensor {
    matrix(&[1.0, 0.2, -0.5, 0.2, 1.0, 0.9, -0.5, 0.9, 1.0], 3)
}

fn save_st(dir: &std::path::Path, tensors: &[(&str, Tensor)]) -> std::path::PathBuf {
    let path = dir.join("rsm.safetensors");
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, &path).unwrap();
    path
}

fn reason(err: Error) -> String {
    match err {
        Error::InvalidMatrix { reason, .. } => reason,
        other => panic!("expected InvalidMatrix, got {other}"),
    }
}

#[test]
fn loads_safetensors_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let path = save_st(dir.path(), &[("rsm", valid_3x3())]);
    let m = load_similarity_matrix(&path, None, 3).unwrap();
    assert_eq!(m.dims(), &[3, 3]);
    let m = load_similarity_matrix(&path, Some("rsm"), 3).unwrap();
    assert_eq!(m.to_vec2::<f32>().unwrap()[1][2], 0.9);

    let npy = dir.path().join("rsm.npy");
    valid_3x3()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .write_npy(&npy)
        .unwrap();
    let m = load_similarity_matrix(&npy, None, 3).unwrap();
    assert_eq!(m.dtype(), candle_core::DType::F32);
}

#[test]
fn rejects_bad_matrices_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Tensor, usize, &str)> = vec![
        (matrix(&[1.0, 0.3, 0.2, 1.0], 2), 2, "not symmetric"),
        (matrix(&[1.0, 1.5, 1.5, 1.0], 2), 2, "outside [-1, 1]"),
        (matrix(&[1.0, f32::NAN, f32::NAN, 1.0], 2), 2, "not finite"),
        (valid_3x3(), 4, "4 regularization images"),
        (
            Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            2,
            "square",
        ),
    ];
    for (m, n, expected) in cases {
        let path = save_st(dir.path(), &[("s", m)]);
        let r = reason(load_similarity_matrix(&path, None, n).unwrap_err());
        assert!(r.contains(expected), "`{r}` should mention `{expected}`");
    }
}

#[test]
fn file_level_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.safetensors");
    assert!(reason(load_similarity_matrix(&missing, None, 3).unwrap_err()).contains("not found"));

    let two = save_st(dir.path(), &[("a", valid_3x3()), ("b", valid_3x3())]);
    assert!(reason(load_similarity_matrix(&two, None, 3).unwrap_err()).contains("name one"));
    assert!(
        reason(load_similarity_matrix(&two, Some("c"), 3).unwrap_err()).contains("no tensor `c`")
    );

    let garbage = dir.path().join("bad.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    assert!(reason(load_similarity_matrix(&garbage, None, 3).unwrap_err()).contains("cannot read"));

    let txt = dir.path().join("m.txt");
    std::fs::write(&txt, b"1 0\n0 1\n").unwrap();
    assert!(reason(load_similarity_matrix(&txt, None, 2).unwrap_err()).contains("unsupported"));
}
