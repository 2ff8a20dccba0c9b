//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong when building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The similarity maths of `rsa-core` failed.
    #[error(transparent)]
    Rsa(#[from] rsa_core::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A safetensors file could not be parsed (truncated, corrupt) or written (disk full).
    #[error("{path}: {message}")]
    Safetensors {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A `model.json` could not be parsed or written.
    #[error("{path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The model configuration is not usable (unknown architecture, input too small, ...).
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A device name other than `cpu` or `cuda:N`.
    #[error("device must be `cpu` or `cuda:N`, got `{0}`")]
    DeviceName(String),
    /// The inputs of a forward pass do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// A checkpoint lacks a tensor the model needs.
    #[error("checkpoint {checkpoint}: missing key `{key}`")]
    MissingKey {
        /// The checkpoint (its path, or a description of an in-memory state dict).
        checkpoint: String,
        /// The missing tensor name.
        key: String,
    },
    /// A checkpoint holds a tensor the model does not have.
    #[error("checkpoint {checkpoint}: unexpected key `{key}`")]
    UnexpectedKey {
        /// The checkpoint (its path, or a description of an in-memory state dict).
        checkpoint: String,
        /// The extra tensor name.
        key: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("checkpoint {checkpoint}: key `{key}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint (its path, or a description of an in-memory state dict).
        checkpoint: String,
        /// The tensor name.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A checkpoint tensor has the wrong element type.
    #[error("checkpoint {checkpoint}: key `{key}` has dtype {found:?}, expected {expected:?}")]
    DTypeMismatch {
        /// The checkpoint (its path, or a description of an in-memory state dict).
        checkpoint: String,
        /// The tensor name.
        key: String,
        /// The dtype the model needs.
        expected: candle_core::DType,
        /// The dtype in the file.
        found: candle_core::DType,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
