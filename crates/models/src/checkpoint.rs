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
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
    })
}

/// Writes tensors to a safetensors file atomically.
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_atomically(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("cannot write (disk full?): {e}"),
        })
    })
}

/// Sets mode 0644 on unix (a no-op elsewhere).
fn readable_by_all(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(
            |source| Error::Io {
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Runs `write` on a temporary path next to `path` (`.NAME.tmp-PID`), then renames it onto
/// `path`; the temporary file is removed if anything fails, and the folder is created if
/// needed. The file is made readable by everyone (0644), whatever mode the writer created it
/// with, so colleagues on a shared runs folder can load it. An existing `path` that is not a
/// regular file (a device, directory or symlink) is refused before anything is written.
///
/// The one atomic-write helper of the workspace: the runner and xtask write through it too,
/// with their own error type `E` (anything a [`Error`] converts into).
pub fn write_atomically<E: From<Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let io = |source: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a regular file; refusing to replace it",
            ))
            .into());
        }
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file path",
            ))
        })?
        .to_string_lossy();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        readable_by_all(&tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| io(source).into())
    });
    if result.is_err() {
        // Best effort: the temporary file may not exist if `write` failed early.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
