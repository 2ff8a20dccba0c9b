//! The crate's error type.

/// Everything that can go wrong in `rsa-core`.
///
/// Variants carry enough context (image index, file path, offending value) for a user to fix the
/// input without reading the code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, device error, …).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The images have a rank other than 2 (`[N, D]`) or 4 (`[N, C, H, W]`).
    #[error("expected images of shape [N, D] or [N, C, H, W], got {0:?}")]
    ImageRank(Vec<usize>),

    /// Fewer than two images: no pair exists.
    #[error("need at least 2 images to form pairs, got {0}")]
    TooFewImages(usize),

    /// An image contains NaN or an infinity.
    #[error("image {index} contains a non-finite value (NaN or infinity)")]
    NonFiniteImage {
        /// Index of the first offending image.
        index: usize,
    },

    /// An image equals the mean image, so its centred vector has zero norm and its cosine
    /// similarity to every other image is undefined (the reference silently produces NaN).
    #[error(
        "image {index} equals the mean image of the set (zero norm after centring), so its \
         similarity is undefined; remove it or add more varied images"
    )]
    ZeroNormImage {
        /// Index of the first offending image.
        index: usize,
    },

    /// A threshold outside `[0, 1]` or not finite.
    #[error("threshold {value} is invalid: it must lie in [0, 1]")]
    InvalidThreshold {
        /// The rejected value.
        value: f64,
    },

    /// The second threshold of the `double` range is missing or not below the first.
    #[error("{0}")]
    InvalidDoubleThreshold(String),

    /// A pair-range name that is not one of the reference's.
    #[error(
        "unknown pair range `{0}`; expected one of: all, high, low, positive, negative, \
         high_positive, double"
    )]
    UnknownRange(String),

    /// A loss name that is not known.
    #[error("unknown similarity loss `{0}`; expected `arctanh` or `mse`")]
    UnknownLoss(String),

    /// An invalid argument (batch size 0, empty selection, mismatched lengths, …).
    #[error("{0}")]
    InvalidArgument(String),

    /// A user-supplied similarity matrix failed validation.
    #[error("similarity matrix {path}: {reason}")]
    InvalidMatrix {
        /// File the matrix came from.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
