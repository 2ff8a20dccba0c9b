//! Safetensors checkpoints with the reference's exact state-dict key names.
//!
//! A checkpoint written by [`ResNet::save`] loads into the official PyTorch model with
//! `model.load_state_dict(safetensors.torch.load_file(path))`, and a PyTorch state dict
//! exported with `safetensors.torch.save_file(model.state_dict(), path)` loads here with
//! [`ResNet::load`]. Loading is strict: a missing key, an extra key, a wrong shape or a wrong
//! dtype is an error naming the key.
//!
//! Every checkpoint also describes itself in its safetensors `__metadata__` (string values;
//! lists as JSON): `format` (`pixreg-resnet`), `arch`, `base_channels`, `in_shape`,
//! `num_classes` and `pixreg_models_version` from [`architecture_metadata`], plus what the
//! writer adds with [`ResNet::save_with_metadata`] (`pixreg train` records the input scaling,
//! the pixreg version and its git commit). So a checkpoint found alone can be rebuilt, e.g. by
//! `tools/pixreg_to_torch.py`, without its `model.json`.
//!
//! ```
//! use pixreg_models::{checkpoint::read_metadata, Arch, ModelConfig, ResNet};
//! use candle_core::Device;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ModelConfig::new(Arch::ResNet18, [1, 32, 32], 10, 4);
//! let model = ResNet::new(&config, 0, &Device::Cpu)?;
//! let path = std::env::temp_dir().join(format!("pixreg-doc-{}.safetensors", std::process::id()));
//! model.save_with_metadata(&path, &[("input_scaling".into(), "5*(u-0.5)".into())])?;
//! let metadata = read_metadata(&path)?;
//! assert_eq!(metadata["arch"], "resnet18");
//! assert_eq!(metadata["in_shape"], "[1,32,32]");
//! assert_eq!(metadata["input_scaling"], "5*(u-0.5)");
//! # std::fs::remove_file(&path)?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
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
    /// the same directory, then a rename), with the [`architecture_metadata`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with_metadata(path, &[])
    }

    /// [`ResNet::save`] with `extra` (key, value) pairs added to the file's `__metadata__`
    /// (after the architecture's, which they may not replace).
    pub fn save_with_metadata(
        &self,
        path: impl AsRef<Path>,
        extra: &[(String, String)],
    ) -> Result<()> {
        let path = path.as_ref();
        let mut metadata = architecture_metadata(self.config());
        for (key, value) in extra {
            if metadata.contains_key(key) {
                return Err(Error::Config(format!(
                    "checkpoint metadata `{key}` is the architecture's own"
                )));
            }
            metadata.insert(key.clone(), value.clone());
        }
        let bytes = safetensors_bytes(&self.state_dict()?, &metadata).map_err(|message| {
            Error::Safetensors {
                path: path.to_path_buf(),
                message,
            }
        })?;
        write_atomically(path, |tmp| {
            std::fs::write(tmp, &bytes).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })
    }
}

/// The safetensors file of `tensors` with `metadata` in its header, byte-identical for
/// identical inputs. safetensors' own writer takes the metadata as a std `HashMap` and writes
/// it in that map's per-process random order (two saves of one model differed), so the file is
/// serialized without metadata and the header is rewritten with the keys sorted; tensor
/// offsets count from the end of the header, so only the length prefix changes.
fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let plain = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), None)
        .map_err(|e| format!("cannot serialize: {e}"))?;
    let header_len = u64::from_le_bytes(plain[..8].try_into().map_err(|_| "empty file")?) as usize;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&plain[8..8 + header_len]).map_err(|e| e.to_string())?;
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).map_err(|e| e.to_string())?,
    );
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // The format pads the header with spaces to a multiple of 8 bytes (aligned data).
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + json.len() + plain.len() - 8 - header_len);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&plain[8 + header_len..]);
    Ok(bytes)
}

/// What a checkpoint says about its architecture: `format`, `arch`, `base_channels`,
/// `in_shape` (JSON list), `num_classes` and `pixreg_models_version`.
pub fn architecture_metadata(config: &ModelConfig) -> BTreeMap<String, String> {
    let [c, h, w] = config.in_shape;
    BTreeMap::from([
        ("format".to_string(), "pixreg-resnet".to_string()),
        ("arch".to_string(), config.arch.name().to_string()),
        (
            "base_channels".to_string(),
            config.base_channels.to_string(),
        ),
        ("in_shape".to_string(), format!("[{c},{h},{w}]")),
        ("num_classes".to_string(), config.num_classes.to_string()),
        (
            "pixreg_models_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ])
}

/// The architecture a checkpoint describes in its metadata ([`architecture_metadata`]);
/// `None` for a checkpoint without it (written before pixreg recorded it, or by PyTorch).
pub fn config_from_metadata(path: &Path) -> Result<Option<ModelConfig>> {
    let metadata = read_metadata(path)?;
    if metadata.get("format").map(String::as_str) != Some("pixreg-resnet") {
        return Ok(None);
    }
    let bad = |key: &str| {
        Error::Config(format!(
            "{}: checkpoint metadata `{key}` is missing or malformed",
            path.display()
        ))
    };
    let number = |key: &str| -> Result<usize> {
        metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(key))
    };
    let arch = metadata.get("arch").ok_or_else(|| bad("arch"))?.parse()?;
    let in_shape: [usize; 3] = metadata
        .get("in_shape")
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| bad("in_shape"))?;
    let config = ModelConfig::new(
        arch,
        in_shape,
        number("num_classes")?,
        number("base_channels")?,
    );
    config.validate()?;
    Ok(Some(config))
}

/// The `__metadata__` of a safetensors file (empty when it has none, e.g. a PyTorch export).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
        })?;
    Ok(header.metadata().clone().unwrap_or_default())
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
