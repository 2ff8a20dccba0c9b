//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or decoding a dataset.
///
/// Every variant that concerns a file names it (`path`); entries inside an archive are named
/// `ARCHIVE:ENTRY`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file that does not exist.
    #[error("missing file {path}{hint}", path = .path.display())]
    MissingFile {
        /// The file involved.
        path: PathBuf,
        /// What to do about it (may be empty).
        hint: String,
    },
    /// A file that ends before the data its header (or format) announces.
    #[error("{path}: truncated file: {what}", path = .path.display())]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An IDX file whose magic number is not the expected one.
    #[error(
        "{path}: wrong magic number {found:#010x}, expected {expected:#010x} ({what})",
        path = .path.display()
    )]
    BadMagic {
        /// The file involved.
        path: PathBuf,
        /// The value found.
        found: u32,
        /// The value expected.
        expected: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// A structurally invalid file (bad dimensions, extra bytes, bad JSON fields, ...).
    #[error("{path}: {what}", path = .path.display())]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Image and label files that disagree on the number of items.
    #[error(
        "count mismatch: {images_path} holds {images} images but {labels_path} holds {labels} labels",
        images_path = .images_path.display(),
        labels_path = .labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Images it holds.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Labels it holds.
        labels: usize,
    },
    /// A label value outside `0..num_classes`.
    #[error(
        "{path}: label {label} of item {index} is out of range (the dataset has {num_classes} classes)",
        path = .path.display()
    )]
    LabelOutOfRange {
        /// The file involved.
        path: PathBuf,
        /// Index of the item.
        index: usize,
        /// The label value.
        label: u64,
        /// Classes of the dataset.
        num_classes: usize,
    },
    /// An image file the decoder rejects.
    #[error("{path}: cannot decode image: {reason}", path = .path.display())]
    Decode {
        /// The file involved.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An image whose size differs from the other images of the same set.
    #[error(
        "{path}: image is {found_w}x{found_h}, expected {expected_w}x{expected_h} like the rest of the set",
        path = .path.display()
    )]
    ImageSize {
        /// The file involved.
        path: PathBuf,
        /// Width found.
        found_w: u32,
        /// Height found.
        found_h: u32,
        /// Width expected.
        expected_w: u32,
        /// Height expected.
        expected_h: u32,
    },
    /// A class folder without any image.
    #[error("{path}: class folder holds no .jpg/.jpeg/.png image", path = .path.display())]
    EmptyClass {
        /// The file involved.
        path: PathBuf,
    },
    /// A dataset name that is not one of [`crate::DatasetName::ALL`].
    #[error("unknown dataset name {name:?}; valid names: {valid}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The valid names.
        valid: String,
    },
    /// Neither a data directory flag nor `PIXREG_DATA_DIR` was given.
    #[error(
        "no data directory: pass it explicitly (e.g. --data-dir DIR) or set PIXREG_DATA_DIR \
         (the shipped copy is the repository's ../shared/datasets)"
    )]
    NoDataDir,
    /// A dataset that is neither in the data directory nor downloadable under the current setting.
    #[error("dataset {name} not found: {detail}")]
    DatasetNotFound {
        /// The name given.
        name: String,
        /// Where it was looked for, and what to do.
        detail: String,
    },
    /// A data file whose contents differ from the shipped checksum list.
    #[error(
        "{path}: sha256 mismatch (expected {expected}, found {found}): the file is corrupt or \
         not the project's reference copy; fetch it again, or pass --no-verify \
         (PIXREG_NO_VERIFY=1) to use it anyway",
        path = .path.display()
    )]
    ChecksumMismatch {
        /// The file involved.
        path: PathBuf,
        /// The value expected.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A request that cannot be satisfied (bad argument, unsupported combination).
    #[error("{0}")]
    Invalid(String),
    /// A Hugging Face hub failure (only with downloads allowed).
    #[error("hugging face hub, {repo} {file}: {reason}")]
    Hub {
        /// Hub repository.
        repo: String,
        /// File in it.
        file: String,
        /// Why.
        reason: String,
    },
    /// A candle error while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                path,
                hint: String::new(),
            }
        } else {
            Error::Io { path, source }
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
        }
    }
}
