//! Atomic output files: results are written to a temporary file beside the destination and
//! renamed into place, so a crash or an error never leaves a half-written file behind.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use safetensors::{Dtype, View};

/// A tensor to write: raw little-endian bytes with their dtype and shape.
pub struct RawTensor<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Cow<'a, [u8]>,
}

impl RawTensor<'static> {
    /// An f32 tensor.
    pub fn f32(values: &[f32], shape: Vec<usize>) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Self {
            dtype: Dtype::F32,
            shape,
            bytes: Cow::Owned(bytes),
        }
    }

    /// A `[P, 2]` i64 tensor of index pairs.
    pub fn i64_pairs(pairs: &[[u32; 2]]) -> Self {
        let mut bytes = Vec::with_capacity(pairs.len() * 16);
        for &[i, j] in pairs {
            bytes.extend_from_slice(&i64::from(i).to_le_bytes());
            bytes.extend_from_slice(&i64::from(j).to_le_bytes());
        }
        Self {
            dtype: Dtype::I64,
            shape: vec![pairs.len(), 2],
            bytes: Cow::Owned(bytes),
        }
    }
}

impl View for &RawTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The temporary path used while `path` is being written.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Runs `write` on a temporary path and renames the result to `path`; on failure the temporary
/// file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("cannot move result to {}", path.display()))
    });
    if result.is_err() {
        // Best effort: the temporary file may not exist if `write` failed before creating it.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes named tensors to a safetensors file atomically.
pub fn save_safetensors(path: &Path, tensors: &[(&str, RawTensor<'_>)]) -> Result<()> {
    write_atomically(path, |tmp| {
        let views = tensors.iter().map(|(name, t)| (*name, t));
        safetensors::serialize_to_file(views, None, tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Writes a text file atomically.
pub fn write_text(path: &Path, contents: &str) -> Result<()> {
    write_atomically(path, |tmp| {
        fs::write(tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))
    })
}
