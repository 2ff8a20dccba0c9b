//! Dataset access for the commands, through `pixreg-datasets`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use pixreg_datasets::{
    first_n_train_images, resolve_data_dir, ClassificationData, DatasetName, Download, LoadOptions,
    ValidSplit,
};

use crate::config::{ExperimentConfig, ValidSplitRule};

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

/// Name of the file with the official code's seed-0 index draws.
pub const OFFICIAL_INDICES_FILE: &str = "official_seed0_indices.json";

/// Finds `official_seed0_indices.json`: in the data directory, or in the `specs/` folder
/// beside it (the layout of the project's `../shared`).
pub fn official_indices_file(data_dir: &Path) -> Result<std::path::PathBuf> {
    let candidates = [
        data_dir.join(OFFICIAL_INDICES_FILE),
        data_dir
            .join("..")
            .join("specs")
            .join(OFFICIAL_INDICES_FILE),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "task.valid_split = \"official\" needs {OFFICIAL_INDICES_FILE} in {} or in \
             ../specs beside it",
                data_dir.display()
            )
        })
}

/// Seed of the `train_limit`/`test_limit` subsets: fixed, so that every run of a task (every
/// seed, baseline or regularized) sees the same images.
pub const SUBSET_SEED: u64 = 0x5eed_5ab5;

/// `n` of `items` drawn uniformly (seeded), kept in their original order. A prefix would not
/// do: folder-based copies such as `cifar10-jpeg` are sorted by class.
fn random_subset(items: &[usize], n: usize) -> Vec<usize> {
    if n >= items.len() {
        return items.to_vec();
    }
    let mut chosen: Vec<usize> = pixreg_datasets::split::permutation(items.len(), SUBSET_SEED)
        .into_iter()
        .take(n)
        .collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|k| items[k]).collect()
}

/// The task's data, with the configured subsets applied.
pub fn load_task_data(
    config: &ExperimentConfig,
    source: &DataSource,
) -> Result<ClassificationData> {
    let name = config.task.dataset;
    let data_dir = source.dir.as_path();
    let opts = source.options(config.task.rgb);
    let valid = match config.task.valid_split {
        ValidSplitRule::Official => ValidSplit::Official {
            path: official_indices_file(data_dir)?,
        },
        ValidSplitRule::Random => ValidSplit::Random {
            fraction: config.training.valid_portion,
            seed: config.training.seed,
        },
    };
    let mut data = ClassificationData::load(name, &opts, &valid)
        .with_context(|| format!("loading {name} from {}", data_dir.display()))?;
    if let Some(n) = config.task.train_limit {
        data.split.train = random_subset(&data.split.train, n);
    }
    if let Some(n) = config.task.test_limit {
        let all: Vec<usize> = (0..data.test_set.n).collect();
        data.test_set = data.test_set.subset(&random_subset(&all, n))?;
    }
    Ok(data)
}
