//! Bring-your-own similarity targets: an `[N, N]` matrix from a file, e.g. a neural
//! representational-similarity matrix as in Li et al. (2019), instead of pixel similarity.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// Largest asymmetry `|S_ij − S_ji|` accepted in a user matrix.
pub const SYMMETRY_TOLERANCE: f32 = 1e-5;

/// Largest overshoot of `|S_ij|` beyond 1 accepted (rounding in the producer's float32).
pub const RANGE_TOLERANCE: f32 = 1e-6;

/// Loads and validates a similarity matrix from `.safetensors` (tensor `key`, or the file's only
/// tensor) or `.npy`.
///
/// The matrix must be square with `expected_n` rows (the number of regularization images),
/// finite, symmetric within [`SYMMETRY_TOLERANCE`] and within `[−1, 1]` (±[`RANGE_TOLERANCE`]).
/// The result is f32 on the CPU.
pub fn load_similarity_matrix(path: &Path, key: Option<&str>, expected_n: usize) -> Result<Tensor> {
    let shown = path.display().to_string();
    let invalid = |reason: String| Error::InvalidMatrix {
        path: shown.clone(),
        reason,
    };
    if !path.is_file() {
        return Err(invalid("file not found".into()));
    }
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let matrix = match extension {
        "npy" => Tensor::read_npy(path).map_err(|e| invalid(format!("cannot read .npy: {e}")))?,
        "safetensors" => {
            let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| invalid(format!("cannot read safetensors: {e}")))?;
            match key {
                Some(k) => tensors.remove(k).ok_or_else(|| {
                    let mut names: Vec<_> = tensors.keys().cloned().collect();
                    names.sort();
                    invalid(format!("no tensor `{k}` (tensors: {})", names.join(", ")))
                })?,
                None if tensors.len() == 1 => tensors
                    .into_values()
                    .next()
                    .ok_or_else(|| invalid("the file holds no tensor".into()))?,
                None => {
                    let mut names: Vec<_> = tensors.keys().cloned().collect();
                    names.sort();
                    return Err(invalid(format!(
                        "the file holds {} tensors ({}); name one with a key",
                        names.len(),
                        names.join(", ")
                    )));
                }
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported extension `{other}`: use .safetensors or .npy"
            )))
        }
    };
    validate_similarity_matrix(&matrix, expected_n).map_err(invalid)
}

/// Checks shape, finiteness, range and symmetry; returns the matrix as f32 or the reason it was
/// rejected.
pub fn validate_similarity_matrix(
    matrix: &Tensor,
    expected_n: usize,
) -> std::result::Result<Tensor, String> {
    let dims = matrix.dims().to_vec();
    if dims.len() != 2 || dims[0] != dims[1] {
        return Err(format!(
            "expected a square [N, N] matrix, got shape {dims:?}"
        ));
    }
    let n = dims[0];
    if n != expected_n {
        return Err(format!(
            "the matrix is {n}×{n} but there are {expected_n} regularization images"
        ));
    }
    let matrix = matrix
        .to_dtype(DType::F32)
        .map_err(|e| format!("cannot convert to f32: {e}"))?;
    let values: Vec<f32> = matrix
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(|e| format!("cannot read values: {e}"))?;
    for i in 0..n {
        for j in 0..n {
            let v = values[i * n + j];
            if !v.is_finite() {
                return Err(format!("entry ({i}, {j}) is not finite ({v})"));
            }
            if v.abs() > 1.0 + RANGE_TOLERANCE {
                return Err(format!("entry ({i}, {j}) = {v} lies outside [-1, 1]"));
            }
            let asym = (v - values[j * n + i]).abs();
            if asym > SYMMETRY_TOLERANCE {
                return Err(format!(
                    "not symmetric: entries ({i}, {j}) and ({j}, {i}) differ by {asym}"
                ));
            }
        }
    }
    Ok(matrix)
}
