//! Safetensors checkpoints with the reference's exact state-dict key names.
//!
//! A checkpoint written by [`ResNet::save`] loads into the official PyTorch model with
//! `model.load_state_dict(safetensors.torch.load_file(path))`, and a PyTorch state dict
//! exported with `safetensors.torch.save_file(model.state_dict(), path)` loads here with
//! [`ResNet::load`]. Loading is strict: a missing key, an extra key, a wrong shape or a wrong
//! dtype is an error naming the key.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::layers::{Init, StateMut};
use crate::resnet::ResNet;

impl ResNet {
    /// Builds a model for `config` and loads a checkpoint into it (strictly). The model is in
    /// eval mode, ready for inference; call [`ResNet::set_training`] to train it further.
    pub fn load(path: impl AsRef<Path>, config: &ModelConfig, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = read_safetensors(path, device)?;
        let mut model = ResNet::build(config, Init::Skeleton, device)?;
        model.load_state_dict(tensors, &path.display().to_string())?;
        model.set_training(false);
        Ok(model)
    }

    /// Replaces every parameter and buffer with the tensors of a state dict (strict: the key
    /// set must be exactly the model's, with the same shapes and dtypes; nothing is changed
    /// when any check fails). `checkpoint` names the source in error messages.
    pub fn load_state_dict(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        checkpoint: &str,
    ) -> Result<()> {
        let device = self.device().clone();
        let mut entries = self.state_mut();
        for (name, entry) in &entries {
            let t = tensors.get(name).ok_or_else(|| Error::MissingKey {
                checkpoint: checkpoint.to_string(),
                key: name.clone(),
            })?;
            let (dtype, shape) = match entry {
                StateMut::Param(v) => (DType::F32, v.as_tensor().dims().to_vec()),
                StateMut::Buffer(b) => (DType::F32, b.dims().to_vec()),
                StateMut::Counter(_) => (DType::I64, Vec::new()),
            };
            if t.dtype() != dtype {
                return Err(Error::DTypeMismatch {
                    checkpoint: checkpoint.to_string(),
                    key: name.clone(),
                    expected: dtype,
                    found: t.dtype(),
                });
            }
            if t.dims() != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    checkpoint: checkpoint.to_string(),
                    key: name.clone(),
                    expected: shape,
                    found: t.dims().to_vec(),
                });
            }
        }
        if entries.len() != tensors.len() {
            let mut extra: Vec<&String> = tensors
                .keys()
                .filter(|k| !entries.iter().any(|(name, _)| name == *k))
                .collect();
            extra.sort();
            if let Some(key) = extra.first() {
                return Err(Error::UnexpectedKey {
                    checkpoint: checkpoint.to_string(),
                    key: (*key).clone(),
                });
            }
        }
        for (name, entry) in entries.iter_mut() {
            let t = tensors
                .remove(name.as_str())
                .ok_or_else(|| Error::MissingKey {
                    checkpoint: checkpoint.to_string(),
                    key: name.clone(),
                })?
                .to_device(&device)?;
            match entry {
                StateMut::Param(v) => v.set(&t)?,
                StateMut::Buffer(b) => **b = t,
                StateMut::Counter(c) => **c = t.to_scalar::<i64>()?,
            }
        }
        Ok(())
    }

    /// Writes the complete state dict to a safetensors file (atomically: a temporary file in
    /// the same directory, then a rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self.state_dict()?.into_iter().collect();
        write_safetensors(path.as_ref(), &tensors)
    }
}

/// Reads every tensor of a safetensors file onto `device`.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(candle_core::safetensors::load_buffer(&bytes, device)?)
}

/// Writes tensors to a safetensors file atomically.
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_atomically(path, |tmp| {
        Ok(candle_core::safetensors::save(tensors, tmp)?)
    })
}

/// Runs `write` on a temporary path next to `path`, then renames it onto `path`; the
/// temporary file is removed if anything fails.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the temporary file may not exist if `write` failed early.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
