//! Atomic output files: results are written to a temporary file beside the destination and
//! renamed into place, so a crash or an error never leaves a half-written file behind.

use std::borrow::Cow;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use rayon::prelude::*;
use safetensors::{Dtype, View};

/// The data of a tensor to write.
enum RawData<'a> {
    F32(&'a [f32]),
    I64(Vec<i64>),
}

/// A tensor to write: its dtype, shape and values, viewed as little-endian bytes without a
/// copy (the bytes of large outputs, e.g. 12.5 M pairs, are never duplicated).
pub struct RawTensor<'a> {
    shape: Vec<usize>,
    data: RawData<'a>,
}

// safetensors stores little-endian values; the byte views below are the in-memory layout.
#[cfg(target_endian = "big")]
compile_error!("pixreg's safetensors writer assumes a little-endian target");

impl<'a> RawTensor<'a> {
    /// An f32 tensor borrowing `values`.
    pub fn f32(values: &'a [f32], shape: Vec<usize>) -> Self {
        Self {
            shape,
            data: RawData::F32(values),
        }
    }

    /// A `[P, 2]` i64 tensor of index pairs (converted in parallel).
    pub fn i64_pairs(pairs: &[[u32; 2]]) -> Self {
        let mut values = vec![0i64; pairs.len() * 2];
        values
            .par_chunks_mut(2)
            .zip(pairs.par_iter())
            .for_each(|(out, &[i, j])| {
                out[0] = i64::from(i);
                out[1] = i64::from(j);
            });
        Self {
            shape: vec![pairs.len(), 2],
            data: RawData::I64(values),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            RawData::F32(v) => bytemuck::cast_slice(v),
            RawData::I64(v) => bytemuck::cast_slice(v),
        }
    }
}

impl View for &RawTensor<'_> {
    fn dtype(&self) -> Dtype {
        match self.data {
            RawData::F32(_) => Dtype::F32,
            RawData::I64(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// Fails when `path` exists and is not a regular file: an output never replaces a device, a
/// directory, a socket or a symlink (the rename would swap the link itself, not its target).
pub fn refuse_non_regular(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            let kind = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, socket or pipe)"
            };
            anyhow::bail!(
                "refusing to write {}: it is {kind}; name a new or regular file",
                path.display()
            )
        }
        _ => Ok(()),
    }
}

/// Runs `write` on a temporary path and renames the result to `path`
/// ([`pixreg_models::checkpoint::write_atomically`], the workspace's one helper); on failure
/// the temporary file is removed and `path` is untouched. An existing `path` that is not a
/// regular file is refused before anything is written.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    refuse_non_regular(path)?;
    pixreg_models::checkpoint::write_atomically(path, write)
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
    write_bytes(path, contents.as_bytes())
}

/// Writes a file atomically.
pub fn write_bytes(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| {
        fs::write(tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))
    })
}
