//! CIFAR-10 / CIFAR-100 binary versions (`cifar-10-batches-bin`, `cifar-100-binary`).
//!
//! A CIFAR-10 record is 1 label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, rows of 32);
//! a CIFAR-100 record is a coarse label byte, a fine label byte, then the same 3072 bytes.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::name::{DatasetName, Split};
use crate::transform::rgb_planar_to_luma;
use crate::ImageSet;

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;

/// The CIFAR-10 files of a split, in the official order.
pub fn cifar10_files(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &[
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
        ],
        Split::Test => &["test_batch.bin"],
    }
}

/// The CIFAR-100 file of a split.
pub fn cifar100_file(split: Split) -> &'static str {
    match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    }
}

/// The folder holding CIFAR-10's `.bin` files under `root` (`root/cifar-10-batches-bin/` or
/// `root/` itself), if any.
pub fn cifar10_dir(root: &Path) -> Option<PathBuf> {
    let nested = root.join("cifar-10-batches-bin");
    [nested, root.to_path_buf()]
        .into_iter()
        .find(|d| d.join("test_batch.bin").is_file() && d.join("data_batch_1.bin").is_file())
}

/// The folder holding CIFAR-100's `.bin` files under `root`, if any.
pub fn cifar100_dir(root: &Path) -> Option<PathBuf> {
    let nested = root.join("cifar-100-binary");
    [nested, root.to_path_buf()]
        .into_iter()
        .find(|d| d.join("train.bin").is_file() && d.join("test.bin").is_file())
}

/// Appends the records of one binary file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100:
/// coarse then fine).
fn read_records(
    path: &Path,
    label_bytes: usize,
    rgb: bool,
    out: &mut ImageSet,
    coarse: &mut Vec<u32>,
) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!(
                "{} bytes is not a whole number of {record}-byte records",
                bytes.len()
            ),
        });
    }
    let base = out.n;
    for (k, rec) in bytes.chunks_exact(record).enumerate() {
        let (labels, pixels) = rec.split_at(label_bytes);
        let label = labels[label_bytes - 1];
        if usize::from(label) >= out.num_classes {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index: k,
                label: u64::from(label),
                num_classes: out.num_classes,
            });
        }
        if label_bytes == 2 {
            if labels[0] >= 20 {
                return Err(Error::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index: k,
                    label: u64::from(labels[0]),
                    num_classes: 20,
                });
            }
            coarse.push(u32::from(labels[0]));
        }
        out.labels.push(u32::from(label));
        if rgb {
            out.images.extend_from_slice(pixels);
        } else {
            out.images.extend(rgb_planar_to_luma(pixels));
        }
    }
    out.n = base + bytes.len() / record;
    Ok(())
}

fn empty(dataset: DatasetName, num_classes: usize, rgb: bool) -> ImageSet {
    ImageSet {
        dataset,
        images: Vec::new(),
        labels: Vec::new(),
        coarse_labels: None,
        num_classes,
        n: 0,
        channels: if rgb { 3 } else { 1 },
        height: SIDE,
        width: SIDE,
    }
}

/// Reads CIFAR-10 binary files (in the given order) into one set: RGB or PIL grayscale.
pub fn read_cifar10_files(paths: &[PathBuf], rgb: bool) -> Result<ImageSet> {
    let mut set = empty(DatasetName::Cifar10, 10, rgb);
    let mut unused = Vec::new();
    for p in paths {
        read_records(p, 1, rgb, &mut set, &mut unused)?;
    }
    Ok(set)
}

/// Reads a CIFAR-100 binary file: fine labels in `labels`, coarse ones in `coarse_labels`.
pub fn read_cifar100_file(path: &Path, rgb: bool) -> Result<ImageSet> {
    let mut set = empty(DatasetName::Cifar100, 100, rgb);
    let mut coarse = Vec::new();
    read_records(path, 2, rgb, &mut set, &mut coarse)?;
    set.coarse_labels = Some(coarse);
    Ok(set)
}

/// Reads one CIFAR-10 split from the folder holding the `.bin` files.
pub fn read_cifar10_split(dir: &Path, split: Split, rgb: bool) -> Result<ImageSet> {
    let paths: Vec<PathBuf> = cifar10_files(split).iter().map(|f| dir.join(f)).collect();
    read_cifar10_files(&paths, rgb)
}

/// Reads one CIFAR-100 split from the folder holding `train.bin` / `test.bin`.
pub fn read_cifar100_split(dir: &Path, split: Split, rgb: bool) -> Result<ImageSet> {
    read_cifar100_file(&dir.join(cifar100_file(split)), rgb)
}
