//! Error type of the crate.

/// Everything that can go wrong while configuring or running an attack.
#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    /// An error from a candle tensor operation (including the classifier's forward pass).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A tensor or slice had the wrong shape or length.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A configuration value is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A progress callback (e.g. [`crate::DecisionProtocol::run_observed`]'s) failed.
    #[error("progress report failed: {0}")]
    Progress(String),
    /// The batch of images was empty where at least one image is required.
    #[error("empty batch")]
    EmptyBatch,
    /// The classifier returned NaN or infinite logits.
    #[error("classifier returned non-finite logits")]
    NonFiniteLogits,
    /// A label does not index a class of the classifier's output.
    #[error("label {label} out of range for {classes} classes")]
    LabelOutOfRange {
        /// The offending label.
        label: u32,
        /// Number of classes (logit columns).
        classes: usize,
    },
    /// Reading an index file failed.
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// Parsing an index file failed.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
    /// JPEG encoding or decoding failed.
    #[cfg(feature = "jpeg")]
    #[error("image codec error: {0}")]
    Image(#[from] image::ImageError),
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, AttackError>;

pub(crate) fn invalid(msg: impl Into<String>) -> AttackError {
    AttackError::InvalidParameter(msg.into())
}
