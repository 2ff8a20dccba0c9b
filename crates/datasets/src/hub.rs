//! The Hugging Face parquet copies (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100), used only with
//! [`Download::Allowed`](crate::Download::Allowed) when the data directory lacks a dataset.
//!
//! Files come from the datasets' `refs/convert/parquet` revision into the standard hf cache
//! (`HF_HOME`, default `~/.cache/huggingface`); a cached copy is used without a network request.
//! The repository ids and file names below are the canonical ones as of hf-hub 1.0; they could
//! not be exercised here (no network). The decoding ([`read_parquet`]) is tested on a parquet
//! file written by the tests.

use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

use crate::error::{Error, Result};
use crate::folder::{decode_all, Decode, RawImage};
use crate::name::{DatasetName, Family, Split};
use crate::ImageSet;

/// Where a dataset's parquet copy lives on the hub and how its columns are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubDataset {
    /// Repository id (`owner/name`).
    pub repo: &'static str,
    /// Revision holding the parquet files.
    pub revision: &'static str,
    /// Training file within the repository.
    pub train_file: &'static str,
    /// Test file within the repository.
    pub test_file: &'static str,
    /// The label column (CIFAR-100: the fine label).
    pub label_column: &'static str,
}

impl HubDataset {
    /// The hub copy of `name`, if one exists.
    pub fn of(name: DatasetName) -> Option<HubDataset> {
        const REV: &str = "refs/convert/parquet";
        let (repo, train_file, test_file, label_column) = match name {
            DatasetName::Mnist => (
                "ylecun/mnist",
                "mnist/train/0000.parquet",
                "mnist/test/0000.parquet",
                "label",
            ),
            DatasetName::FashionMnist => (
                "zalando-datasets/fashion_mnist",
                "fashion_mnist/train/0000.parquet",
                "fashion_mnist/test/0000.parquet",
                "label",
            ),
            DatasetName::Cifar10 => (
                "uoft-cs/cifar10",
                "plain_text/train/0000.parquet",
                "plain_text/test/0000.parquet",
                "label",
            ),
            DatasetName::Cifar100 => (
                "uoft-cs/cifar100",
                "cifar100/train/0000.parquet",
                "cifar100/test/0000.parquet",
                "fine_label",
            ),
            _ => return None,
        };
        Some(HubDataset {
            repo,
            revision: REV,
            train_file,
            test_file,
            label_column,
        })
    }

    /// The file of a split.
    pub fn file(&self, split: Split) -> &'static str {
        match split {
            Split::Train => self.train_file,
            Split::Test => self.test_file,
        }
    }

    /// Returns the local path of a split's parquet file: from the hf cache if present, else
    /// downloaded into it. This touches the network; call it only when downloads are allowed.
    pub fn fetch(&self, split: Split) -> Result<PathBuf> {
        let file = self.file(split);
        let hub_err = |reason: String| Error::Hub {
            repo: self.repo.to_string(),
            file: file.to_string(),
            reason,
        };
        let api = hf_hub::HFClientSync::new().map_err(|e| hub_err(e.to_string()))?;
        let (owner, name) = hf_hub::split_id(self.repo);
        let repo = api.dataset(owner, name);
        let download = repo.download_file().filename(file).revision(self.revision);
        match download.clone().local_files_only(true).send() {
            Err(hf_hub::HFError::LocalEntryNotFound { .. }) => download.send(),
            cached => cached,
        }
        .map_err(|e| hub_err(e.to_string()))
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("parquet: {e}"))
}

fn int_label(field: &Field, limit: usize, path: &Path, index: usize, name: &str) -> Result<u32> {
    let value = match field {
        Field::Long(v) => *v,
        Field::Int(v) => i64::from(*v),
        Field::Short(v) => i64::from(*v),
        Field::Byte(v) => i64::from(*v),
        other => {
            return Err(Error::format(
                path,
                format!("row {index}: column {name} is not an integer ({other})"),
            ))
        }
    };
    if value < 0 || value as usize >= limit {
        return Err(Error::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: value as u64,
            num_classes: limit,
        });
    }
    Ok(value as u32)
}

/// Decodes a hub parquet file (an image struct column with a `bytes` field holding PNG/JPEG,
/// and an integer label column `label_column`; CIFAR-100 also `coarse_label`) into an
/// [`ImageSet`] in row order. Labels must be `< num_classes`. RGB is kept when `rgb` and the
/// images are colour; MNIST-like sets always have 1 channel.
pub fn read_parquet(
    dataset: DatasetName,
    path: &Path,
    label_column: &str,
    num_classes: usize,
    rgb: bool,
) -> Result<ImageSet> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| parquet_err(path, e))?;
    let mut raws = Vec::new();
    let mut labels = Vec::new();
    let mut coarse = Vec::new();
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| parquet_err(path, e))?;
    for (index, row) in rows.enumerate() {
        let row = row.map_err(|e| parquet_err(path, e))?;
        let mut bytes = None;
        let mut label = None;
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Group(group) => {
                    for (sub, value) in group.get_column_iter() {
                        if let (true, Field::Bytes(b)) = (sub == "bytes", value) {
                            bytes = Some(b.data().to_vec());
                        }
                    }
                }
                _ if name == label_column => {
                    label = Some(int_label(field, num_classes, path, index, name)?);
                }
                _ if name == "coarse_label" => {
                    coarse.push(int_label(field, 20, path, index, name)?);
                }
                _ => {}
            }
        }
        let (Some(bytes), Some(label)) = (bytes, label) else {
            return Err(Error::format(
                path,
                format!("row {index}: no image bytes or no {label_column:?} column"),
            ));
        };
        raws.push(RawImage {
            path: PathBuf::from(format!("{}:row {index}", path.display())),
            class: String::new(),
            bytes,
        });
        labels.push(label);
    }
    if raws.is_empty() {
        return Err(Error::format(path, "no rows"));
    }
    let rgb = rgb && dataset.family() != Family::MnistLike;
    let mut set = decode_all(dataset, &raws, labels, num_classes, Decode::Fixed { rgb })?;
    if coarse.len() == set.n {
        set.coarse_labels = Some(coarse);
    }
    Ok(set)
}
