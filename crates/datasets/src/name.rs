//! Dataset names, their families, and where their files live.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The dataset names used everywhere (CLI, configs, folder names under the data directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetName {
    /// MNIST digits (IDX files), 28×28 grayscale, 10 classes.
    Mnist,
    /// Fashion-MNIST (IDX files), 28×28 grayscale, 10 classes.
    FashionMnist,
    /// CIFAR-10, lossless binary version (`cifar-10-batches-bin`), 32×32 RGB.
    Cifar10,
    /// CIFAR-100, binary version (`cifar-100-binary`), 32×32 RGB, 100 fine classes.
    Cifar100,
    /// The lossy (JPEG quality 75) CIFAR-10 copy in class folders; never report it as CIFAR-10.
    Cifar10Jpeg,
    /// Tiny-ImageNet (64×64 photos, 200 classes): an ImageNet-like regularization source.
    TinyImagenet,
    /// A user's ImageNet folder (`<split>/<class>/*.JPEG`), photos of any size.
    Imagenet,
}

/// How the reference code treats a dataset (augmentation, model-input scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// MNIST and Fashion-MNIST: no augmentation, model input in [0, 1].
    MnistLike,
    /// CIFAR-10/100 (and the JPEG copy): crop+flip augmentation, model input `5·(x − 0.5)`.
    CifarLike,
    /// Natural photos used only as regularization images (reference: raw 0..255 values).
    ImagenetLike,
}

impl DatasetName {
    /// Every name, in the order they are listed in messages.
    pub const ALL: [DatasetName; 7] = [
        DatasetName::Mnist,
        DatasetName::FashionMnist,
        DatasetName::Cifar10,
        DatasetName::Cifar100,
        DatasetName::Cifar10Jpeg,
        DatasetName::TinyImagenet,
        DatasetName::Imagenet,
    ];

    /// The canonical string (also the folder name under the data directory).
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Cifar10Jpeg => "cifar10-jpeg",
            DatasetName::TinyImagenet => "tiny-imagenet",
            DatasetName::Imagenet => "imagenet",
        }
    }

    /// The dataset's family.
    pub fn family(self) -> Family {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => Family::MnistLike,
            DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::Cifar10Jpeg => {
                Family::CifarLike
            }
            DatasetName::TinyImagenet | DatasetName::Imagenet => Family::ImagenetLike,
        }
    }

    /// Whether the reference trains it with the CIFAR augmentation (reflect-pad-4 crop + flip).
    pub fn has_train_augmentation(self) -> bool {
        self.family() == Family::CifarLike
    }

    /// Number of classes, where fixed (ImageNet folders: `None`, it depends on the folder).
    pub fn num_classes(self) -> Option<usize> {
        match self {
            DatasetName::Cifar100 => Some(100),
            DatasetName::TinyImagenet => Some(200),
            DatasetName::Imagenet => None,
            _ => Some(10),
        }
    }

    /// The key of this dataset in `official_seed0_indices.json`. The JPEG copy uses the
    /// CIFAR-10 draw (the same indices; they select other images because the copy's order is
    /// class-grouped).
    pub fn official_key(self) -> Option<&'static str> {
        match self {
            DatasetName::Mnist => Some("MNIST"),
            DatasetName::FashionMnist => Some("FashionMNIST"),
            DatasetName::Cifar10 | DatasetName::Cifar10Jpeg => Some("CIFAR10"),
            DatasetName::Cifar100 => Some("CIFAR100"),
            DatasetName::TinyImagenet | DatasetName::Imagenet => None,
        }
    }

    fn valid_list() -> String {
        DatasetName::ALL
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| Error::UnknownDataset {
                name: s.to_string(),
                valid: DatasetName::valid_list(),
            })
    }
}

/// The training or the official test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (the validation split is carved out of it, see [`crate::ValidSplit`]).
    Train,
    /// The official test split (Tiny-ImageNet: its `val` split, the only labelled held-out one).
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Whether a dataset missing from the data directory may be fetched from the Hugging Face hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Download {
    /// Never touch the network (the default, and the only mode used in tests and CI).
    #[default]
    Offline,
    /// Fetch the canonical parquet copy (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) into the
    /// hf cache when the data directory lacks the dataset.
    Allowed,
}

/// Where and how to load datasets.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The data directory holding `<name>/` folders.
    pub data_dir: PathBuf,
    /// Keep 3 RGB channels (`true`) or convert to PIL-exact grayscale (`false`, the default).
    pub rgb: bool,
    /// Hub fallback for missing datasets.
    pub download: Download,
    /// Check the files against the shipped checksums before reading them
    /// ([`crate::checksum`]); on unless `PIXREG_NO_VERIFY=1`.
    pub verify: bool,
}

impl LoadOptions {
    /// Grayscale, offline, from `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LoadOptions {
            data_dir: data_dir.into(),
            rgb: false,
            download: Download::Offline,
            verify: crate::checksum::verify_by_default(),
        }
    }

    /// Same options with checksum verification on or off.
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Same options with the given RGB flag.
    pub fn rgb(mut self, rgb: bool) -> Self {
        self.rgb = rgb;
        self
    }

    /// Same options with the given download setting.
    pub fn download(mut self, download: Download) -> Self {
        self.download = download;
        self
    }

    /// Number of channels the loaded images will have.
    pub fn channels(&self) -> usize {
        if self.rgb {
            3
        } else {
            1
        }
    }
}

/// The environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "PIXREG_DATA_DIR";

/// Resolves the data directory: the explicit flag if given, else `PIXREG_DATA_DIR`, else an
/// error saying how to set it. The directory must exist.
pub fn resolve_data_dir(flag: Option<&Path>) -> Result<PathBuf> {
    resolve_data_dir_from(flag, std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
}

/// [`resolve_data_dir`] with the environment value passed in (testable without touching the
/// process environment).
pub fn resolve_data_dir_from(flag: Option<&Path>, env: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match (flag, env) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) if !dir.as_os_str().is_empty() => dir,
        _ => return Err(Error::NoDataDir),
    };
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::MissingFile {
            path: dir,
            hint: " (the data directory does not exist)".to_string(),
        })
    }
}
