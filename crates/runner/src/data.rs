//! Dataset access for the commands, through `pixreg-datasets`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Tensor;
use pixreg_datasets::{first_n_train_images, resolve_data_dir, DatasetName, Download, LoadOptions};

/// Where the commands read data from: the data directory and whether a dataset missing there
/// may be downloaded from the Hugging Face hub (never by default).
#[derive(Debug, Clone)]
pub struct DataSource {
    /// The data directory (`--data-dir` or `PIXREG_DATA_DIR`).
    pub dir: PathBuf,
    /// Offline (default) or download allowed (`--download`).
    pub download: Download,
    /// Check data files against the shipped checksums (off with `--no-verify` or
    /// `PIXREG_NO_VERIFY=1`).
    pub verify: bool,
}

impl DataSource {
    /// Resolves the directory from the flag or the environment.
    pub fn resolve(flag: Option<&Path>, download: bool) -> Result<Self> {
        Ok(Self {
            dir: resolve_data_dir(flag)?,
            download: if download {
                Download::Allowed
            } else {
                Download::Offline
            },
            verify: pixreg_datasets::checksum::verify_by_default(),
        })
    }

    /// The same source without checksum verification (`--no-verify`).
    pub fn without_verification(mut self) -> Self {
        self.verify = false;
        self
    }

    /// Offline access to `dir`.
    pub fn offline(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            download: Download::Offline,
            verify: true,
        }
    }

    /// Loader options for this source.
    pub fn options(&self, rgb: bool) -> LoadOptions {
        LoadOptions::new(&self.dir)
            .rgb(rgb)
            .download(self.download)
            .verify(self.verify)
    }
}

/// The first `count` training images of dataset `name` (grayscale, [0, 1], file order, no
/// augmentation) as `[N, 1, H, W]`. The name and count are checked before the data directory
/// is looked up.
pub fn first_training_images(
    name: &str,
    count: usize,
    data_dir: Option<&Path>,
    download: bool,
) -> Result<Tensor> {
    let name: DatasetName = name.parse()?;
    if count < 2 {
        bail!("--count must be at least 2 (pairs need two images), got {count}");
    }
    let source = DataSource::resolve(data_dir, download)?;
    Ok(first_n_train_images(name, count, &source.options(false))?)
}
