//! Finding a dataset under the data directory (or on the hub) and loading its splits.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::cifar;
use crate::error::{Error, Result};
use crate::folder::{self, Decode, CIFAR10_CLASSES};
#[cfg(feature = "hub")]
use crate::hub::{read_parquet, HubDataset};
use crate::idx;
#[cfg(feature = "hub")]
use crate::name::Download;
use crate::name::{DatasetName, Family, LoadOptions, Split};
use crate::ImageSet;

/// Where a dataset's files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A folder with the four canonical IDX files (`.gz` or raw).
    Idx(PathBuf),
    /// The folder holding CIFAR-10's `data_batch_*.bin` / `test_batch.bin`.
    Cifar10Bin(PathBuf),
    /// The folder holding CIFAR-100's `train.bin` / `test.bin`.
    Cifar100Bin(PathBuf),
    /// An image-folder tree `<split>/<class>/*` as a directory or an archive.
    Folder(PathBuf),
    /// The Tiny-ImageNet root (`wnids.txt`, `val/`, optionally `train/`).
    TinyImagenet(PathBuf),
    /// A user's ImageNet folder (`train/`, `val/` with class folders).
    Imagenet(PathBuf),
    /// The hub's parquet copy (train and test files in the hf cache).
    #[cfg(feature = "hub")]
    Parquet {
        /// The training split file.
        train: PathBuf,
        /// The test split file.
        test: PathBuf,
    },
}

impl Source {
    /// The top folder of the data directory the files lie in (the first component of their
    /// path relative to it), whose entries of the checksum list are verified; `None` for the
    /// hub's cache.
    pub fn folder_in(&self, data_dir: &Path) -> Option<String> {
        let path = match self {
            Source::Idx(p)
            | Source::Cifar10Bin(p)
            | Source::Cifar100Bin(p)
            | Source::Folder(p)
            | Source::TinyImagenet(p)
            | Source::Imagenet(p) => p,
            #[cfg(feature = "hub")]
            Source::Parquet { .. } => return None,
        };
        let first = path.strip_prefix(data_dir).ok()?.components().next()?;
        Some(first.as_os_str().to_string_lossy().into_owned())
    }
}

fn single_archive(dir: &Path) -> Result<Option<PathBuf>> {
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() && folder::is_archive(&path) {
            archives.push(path);
        }
    }
    archives.sort();
    match archives.len() {
        0 => Ok(None),
        1 => Ok(archives.pop()),
        _ => Err(Error::format(
            dir,
            format!("several archives, cannot choose: {archives:?}"),
        )),
    }
}

/// The canonical archive name of the CIFAR-10 JPEG copy.
pub const CIFAR10_JPEG_ARCHIVE: &str = "cifar10-jpeg-q75.tar.xz";

/// Looks for `name` under `data_dir` (layout in the crate docs); `None` when absent.
pub fn find_local(name: DatasetName, data_dir: &Path) -> Result<Option<Source>> {
    let root = data_dir.join(name.as_str());
    Ok(match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            idx::dir_has_dataset(&root).then_some(Source::Idx(root))
        }
        DatasetName::Cifar10 => cifar::cifar10_dir(&root).map(Source::Cifar10Bin),
        DatasetName::Cifar100 => cifar::cifar100_dir(&root).map(Source::Cifar100Bin),
        DatasetName::Cifar10Jpeg => {
            let canonical = root.join(CIFAR10_JPEG_ARCHIVE);
            if canonical.is_file() {
                Some(Source::Folder(canonical))
            } else if root.join("train").is_dir() && root.join("test").is_dir() {
                Some(Source::Folder(root))
            } else if root.is_dir() {
                single_archive(&root)?.map(Source::Folder)
            } else {
                None
            }
        }
        DatasetName::TinyImagenet => ["tiny-imagenet-200", "tiny-imagenet"]
            .iter()
            .map(|d| data_dir.join(d))
            .find(|d| d.join("wnids.txt").is_file())
            .map(Source::TinyImagenet),
        DatasetName::Imagenet => (root.join("train").is_dir() || root.join("val").is_dir())
            .then_some(Source::Imagenet(root)),
    })
}

fn expected_layout(name: DatasetName) -> &'static str {
    match name {
        DatasetName::Mnist => "mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        DatasetName::FashionMnist => {
            "fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
        }
        DatasetName::Cifar10 => "cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin",
        DatasetName::Cifar100 => "cifar100/cifar-100-binary/{train,test}.bin",
        DatasetName::Cifar10Jpeg => {
            "cifar10-jpeg/cifar10-jpeg-q75.tar.xz (or one .tar/.tar.gz/.tar.xz, or train/ and test/)"
        }
        DatasetName::TinyImagenet => "tiny-imagenet-200/{wnids.txt,val/val_annotations.txt,val/images/}",
        DatasetName::Imagenet => "imagenet/{train,val}/<class>/*.JPEG",
    }
}

/// Finds `name` under the data directory, else (with
/// [downloads allowed](crate::name::Download::Allowed)) fetches its hub
/// parquet copy. Offline, a missing dataset is an error and the network is never touched.
pub fn locate(name: DatasetName, opts: &LoadOptions) -> Result<Source> {
    if let Some(source) = find_local(name, &opts.data_dir)? {
        if opts.verify {
            if let Some(folder) = source.folder_in(&opts.data_dir) {
                crate::checksum::Checksums::shipped().verify_folder(&opts.data_dir, &folder)?;
            }
        }
        return Ok(source);
    }
    #[cfg(feature = "hub")]
    let hub = HubDataset::of(name);
    #[cfg(feature = "hub")]
    if let (Download::Allowed, Some(hub)) = (opts.download, hub) {
        return Ok(Source::Parquet {
            train: hub.fetch(Split::Train)?,
            test: hub.fetch(Split::Test)?,
        });
    }
    #[cfg(feature = "hub")]
    let why = match (opts.download, hub) {
        (Download::Offline, Some(_)) => {
            "; downloads are off (allow them with --download to fetch the Hugging Face copy)"
        }
        _ => "; no download source exists for it",
    };
    #[cfg(not(feature = "hub"))]
    let why = "; this build reads local files only (pixreg-datasets without its `hub` feature)";
    Err(Error::DatasetNotFound {
        name: name.to_string(),
        detail: format!(
            "expected {}/{}{why}",
            opts.data_dir.display(),
            expected_layout(name),
        ),
    })
}

/// The split folder name of an ImageNet folder.
fn imagenet_split(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "val",
    }
}

/// Loads one split of `name`, keeping every image in memory as u8.
///
/// * Channels: 1 (PIL grayscale) unless `opts.rgb`; MNIST-like sets always have 1 channel
///   (the reference's `rgb` flag does not change them).
/// * `cifar10-jpeg`: classes in CIFAR-10 label order, files by name within a class (the
///   original interleaving of `data_batch_*` is not recoverable from the copy).
/// * `tiny-imagenet`: [`Split::Test`] is its `val` split (annotation-file order, labels = index
///   in sorted `wnids.txt`); [`Split::Train`] needs `train/`. 64×64 images.
/// * `imagenet`: photos of any size, so they are loaded as 36×64 grayscale regularization
///   photos ([`crate::transform::photo_to_reg`]); [`Split::Test`] is `val/`.
pub fn load_split(name: DatasetName, split: Split, opts: &LoadOptions) -> Result<ImageSet> {
    load_split_limited(name, split, opts, None)
}

/// [`load_split`] reading at most `limit` images of folder-based datasets (first in file
/// order); other formats are read whole and cut.
pub fn load_split_limited(
    name: DatasetName,
    split: Split,
    opts: &LoadOptions,
    limit: Option<usize>,
) -> Result<ImageSet> {
    let rgb = opts.rgb && name.family() != Family::MnistLike;
    let set = match locate(name, opts)? {
        Source::Idx(dir) => idx::read_split(name, &dir, split)?,
        Source::Cifar10Bin(dir) => cifar::read_cifar10_split(&dir, split, rgb)?,
        Source::Cifar100Bin(dir) => cifar::read_cifar100_split(&dir, split, rgb)?,
        Source::Folder(src) => {
            let classes = (name == DatasetName::Cifar10Jpeg).then_some(&CIFAR10_CLASSES[..]);
            folder::load_image_folder(
                name,
                &src,
                split.as_str(),
                classes,
                Decode::Fixed { rgb },
                limit,
            )?
        }
        Source::TinyImagenet(root) => {
            let (raws, classes) = match split {
                Split::Train => folder::tiny_imagenet_train_raw(&root, limit)?,
                Split::Test => folder::tiny_imagenet_val_raw(&root, limit)?,
            };
            let labels = folder::labels_of(&raws, &classes)?;
            folder::decode_all(name, &raws, labels, classes.len(), Decode::Fixed { rgb })?
        }
        Source::Imagenet(root) => folder::load_image_folder(
            name,
            &root,
            imagenet_split(split),
            None,
            Decode::Photo,
            limit,
        )?,
        #[cfg(feature = "hub")]
        Source::Parquet { train, test } => {
            let hub = HubDataset::of(name)
                .ok_or_else(|| Error::Invalid(format!("{name} has no hub copy")))?;
            let path = match split {
                Split::Train => train,
                Split::Test => test,
            };
            let classes = name.num_classes().unwrap_or(10);
            read_parquet(name, &path, hub.label_column, classes, rgb)?
        }
    };
    match limit {
        Some(l) if l < set.n => set.subset(&(0..l).collect::<Vec<_>>()),
        _ => Ok(set),
    }
}

/// Loads the training and the test split (an archive is read once for both).
pub fn load_train_test(name: DatasetName, opts: &LoadOptions) -> Result<(ImageSet, ImageSet)> {
    if let Source::Folder(src) = locate(name, opts)? {
        let rgb = opts.rgb;
        let classes = (name == DatasetName::Cifar10Jpeg).then_some(&CIFAR10_CLASSES[..]);
        let mut sets = folder::load_image_folders(
            name,
            &src,
            &["train", "test"],
            classes,
            Decode::Fixed { rgb },
            None,
        )?;
        if let (Some(test), Some(train)) = (sets.pop(), sets.pop()) {
            return Ok((train, test));
        }
    }
    Ok((
        load_split(name, Split::Train, opts)?,
        load_split(name, Split::Test, opts)?,
    ))
}

/// The photos an ImageNet-like source offers as regularization images, in file order, as
/// 36×64 grayscale ([`crate::transform::photo_to_reg`]): Tiny-ImageNet's `train/` when present,
/// else its `val/` (the split shipped here); ImageNet's `train/`.
pub fn load_photo_pool(name: DatasetName, n: usize, opts: &LoadOptions) -> Result<ImageSet> {
    match locate(name, opts)? {
        Source::TinyImagenet(root) => {
            let (raws, classes) = if root.join("train").is_dir() {
                folder::tiny_imagenet_train_raw(&root, Some(n))?
            } else {
                folder::tiny_imagenet_val_raw(&root, Some(n))?
            };
            let labels = folder::labels_of(&raws, &classes)?;
            folder::decode_all(name, &raws, labels, classes.len(), Decode::Photo)
        }
        Source::Imagenet(root) => {
            folder::load_image_folder(name, &root, "train", None, Decode::Photo, Some(n))
        }
        _ => Err(Error::Invalid(format!(
            "{name} is not an ImageNet-like photo source"
        ))),
    }
}

/// The first `n` training images of `name` in file order as an f32 tensor `[N, 1, H, W]` in
/// [0, 1]: grayscale, no augmentation, no shuffle (what `pixreg rsa --dataset NAME --count N`
/// analyses). ImageNet-like sources give their 36×64 regularization photos.
///
/// "File order" is the official order for IDX and CIFAR binaries; for `cifar10-jpeg` it is
/// `train/<class>/` in CIFAR-10 class order, then file name order (not the original order).
pub fn first_n_train_images(name: DatasetName, n: usize, opts: &LoadOptions) -> Result<Tensor> {
    let opts = opts.clone().rgb(false);
    let set = match name.family() {
        Family::ImagenetLike => load_photo_pool(name, n, &opts)?,
        _ => load_split_limited(name, Split::Train, &opts, Some(n))?,
    };
    if set.n < n {
        return Err(Error::Invalid(format!(
            "{name} has only {} training images, {n} requested",
            set.n
        )));
    }
    set.tensor(&(0..n).collect::<Vec<_>>(), &Device::Cpu)
}
