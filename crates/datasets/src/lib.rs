//! # pixreg-datasets
//!
//! The datasets of "A Brain-Inspired Regularizer for Adversarial Robustness" (Attias et al.),
//! exactly as the official code (`elieattias1/pixel-reg`, torchvision + PIL) sees them.
//!
//! What this crate owns:
//!
//! * **Readers**: IDX (MNIST, Fashion-MNIST; `.gz` or raw), CIFAR-10/100 binaries, image folders
//!   `root/<split>/<class>/*.{jpg,png}` as a directory or read in place from a `.tar`,
//!   `.tar.gz` or `.tar.xz` archive, Tiny-ImageNet (`wnids.txt`, `val/val_annotations.txt`), a
//!   user's ImageNet folder, and the Hugging Face parquet copies (only with
//!   [`Download::Allowed`]; [`Download::Offline`] is the default and never touches the network).
//! * **Names and layout**: [`DatasetName`] (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`,
//!   `cifar10-jpeg`, `tiny-imagenet`, `imagenet`); the data directory comes from a flag or
//!   `PIXREG_DATA_DIR` ([`resolve_data_dir`]) and holds `mnist/*.gz`, `fashion-mnist/*.gz`,
//!   `cifar10/cifar-10-batches-bin/` (or the `.bin` files directly in `cifar10/`),
//!   `cifar100/cifar-100-binary/`, `cifar10-jpeg/cifar10-jpeg-q75.tar.xz` (or one archive, or
//!   `train/` + `test/`), `tiny-imagenet-200/` (or `tiny-imagenet/`), `imagenet/`.
//! * **Pixels as the reference sees them**: images stay in memory as `u8` ([`ImageSet`], full
//!   MNIST = 47 MB) and become f32 `[B, C, H, W]` tensors with values `u8/255` only per batch.
//!   Grayscale is PIL's `convert("L")` bit for bit ([`transform::pil_luma`]).
//! * **Splits and batches**: the 1 % validation split ([`ValidSplit`]: seeded random or the
//!   official seed-0 indices), shuffled/augmented training batches and ordered evaluation
//!   batches ([`Batcher`]), deterministic for a seed on any machine (ChaCha8);
//!   [`ClassificationData`] bundles them as the reference's loaders (batch 64, 774 CIFAR /
//!   929 MNIST training batches per epoch). Grayscale is applied once at load time: it is
//!   pointwise, so it commutes with torchvision's crop and flip that precede it.
//! * **Transforms**: the CIFAR training augmentation ([`transform::CropFlip`]), the model-input
//!   scaling ([`ModelScale::for_pair`], [`preprocess`]) and the ImageNet photo reduction
//!   ([`transform::photo_to_reg`]).
//! * **Regularization images**: [`RegImages`] (first N training images, shuffled, augmented
//!   once for CIFAR, frozen) and [`first_n_train_images`].
//!
//! The CIFAR-10 copy shipped with the project is lossy (JPEG quality 75, RMSE ≈ 8/255); it is
//! the dataset `cifar10-jpeg`, never `cifar10`, so results from it cannot be mistaken.
//!
//! ```
//! use pixreg_datasets::{idx, DatasetName, Split};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! // Two 2x2 images and their labels, in IDX format (big-endian header).
//! let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
//! images.extend([0, 64, 128, 255, 1, 2, 3, 4]);
//! std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), images)?;
//! std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 2, 7, 3])?;
//! let set = idx::read_split(DatasetName::Mnist, dir.path(), Split::Test)?;
//! assert_eq!((set.n, set.channels, set.height, set.width), (2, 1, 2, 2));
//! assert_eq!(set.labels, [7, 3]);
//! let x = set.tensor(&[0], &candle_core::Device::Cpu)?; // [1, 1, 2, 2], values u8/255
//! assert_eq!(x.flatten_all()?.to_vec1::<f32>()?[3], 1.0);
//! # Ok(())
//! # }
//! ```

/// The candle version this crate's tensors come from: depend on it through this re-export to
/// avoid a second copy of `candle-core`.
pub use candle_core;

pub mod batch;
pub mod checksum;
pub mod cifar;
pub mod error;
pub mod folder;
#[cfg(feature = "hub")]
pub mod hub;
pub mod idx;
pub mod image_set;
pub mod load;
pub mod name;
pub mod reg;
pub mod split;
pub mod task;
pub mod transform;

pub use batch::{Batch, BatchOptions, Batcher, Epoch};
pub use error::{Error, Result};
#[cfg(feature = "hub")]
pub use hub::HubDataset;
pub use image_set::ImageSet;
pub use load::{
    find_local, first_n_train_images, load_photo_pool, load_split, load_split_limited,
    load_train_test, locate, Source,
};
pub use name::{
    resolve_data_dir, resolve_data_dir_from, DatasetName, Download, Family, LoadOptions, Split,
    DATA_DIR_ENV,
};
pub use reg::{RegImages, DEFAULT_REG_IMAGES};
pub use split::{permutation, split_train_valid, TrainValid, ValidSplit, DEFAULT_VALID_FRACTION};
pub use task::{ClassificationData, DEFAULT_BATCH_SIZE};
pub use transform::{preprocess, ModelScale};
