//! The validation split carved out of the training set, and the seeded shuffles.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::name::DatasetName;

/// The reference's validation fraction (`--valid_portion 0.01`).
pub const DEFAULT_VALID_FRACTION: f64 = 0.01;

/// How to choose the validation images among the training images.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidSplit {
    /// `⌊n·fraction⌋` indices drawn without replacement with `ChaCha8Rng::seed_from_u64(seed)`
    /// (portable; not the reference's Python `random` stream).
    Random {
        /// Share of the training set held out.
        fraction: f64,
        /// Seed of the draw.
        seed: u64,
    },
    /// The reference's exact seed-0 draw (use it for seed-0 runs; other seeds have no published
    /// draw), read from `official_seed0_indices.json`
    /// (`../shared/specs/` in this project): key `MNIST`, `FashionMNIST`, `CIFAR10` or
    /// `CIFAR100`, field `valid_idxs_in_draw_order`. For `cifar10-jpeg` the CIFAR-10 draw is
    /// used: same indices, other images (the JPEG copy's order is class-grouped).
    Official {
        /// The file involved.
        path: PathBuf,
    },
    /// No validation split: every training image trains.
    None,
}

impl ValidSplit {
    /// The seeded random 1 % split.
    pub fn random(seed: u64) -> ValidSplit {
        ValidSplit::Random {
            fraction: DEFAULT_VALID_FRACTION,
            seed,
        }
    }
}

/// Indices into a training set: the images that train and the validation images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainValid {
    /// Training indices, ascending.
    pub train: Vec<usize>,
    /// Validation indices, in draw order (the order they are evaluated in).
    pub valid: Vec<usize>,
}

/// In-place Fisher–Yates shuffle drawing `u32` ranges from `rng`: identical on every platform
/// (does not depend on `usize` width). Lengths must fit in `u32`.
pub fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i as u32) as usize;
        items.swap(i, j);
    }
}

/// A seeded permutation of `0..n` (the counterpart of the reference's `torch.randperm(n)`).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p: Vec<usize> = (0..n).collect();
    shuffle(&mut p, &mut rng);
    p
}

fn complement(n: usize, valid: &[usize]) -> Vec<usize> {
    let mut is_valid = vec![false; n];
    for &v in valid {
        is_valid[v] = true;
    }
    (0..n).filter(|&i| !is_valid[i]).collect()
}

/// Splits `0..n_train` of `dataset` into train and validation indices.
pub fn split_train_valid(
    dataset: DatasetName,
    n_train: usize,
    how: &ValidSplit,
) -> Result<TrainValid> {
    let valid = match how {
        ValidSplit::None => Vec::new(),
        ValidSplit::Random { fraction, seed } => {
            if !(0.0..1.0).contains(fraction) {
                return Err(Error::Invalid(format!(
                    "validation fraction {fraction} is not in [0, 1)"
                )));
            }
            let k = (n_train as f64 * fraction) as usize;
            // Partial Fisher–Yates: the first k of a seeded shuffle.
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let mut p: Vec<usize> = (0..n_train).collect();
            for i in 0..k {
                let j = i + rng.random_range(0..(n_train - i) as u32) as usize;
                p.swap(i, j);
            }
            p.truncate(k);
            p
        }
        ValidSplit::Official { path } => official_valid(dataset, n_train, path)?,
    };
    let train = complement(n_train, &valid);
    Ok(TrainValid { train, valid })
}

/// Reads the official seed-0 validation indices of `dataset` and checks them against `n_train`.
pub fn official_valid(dataset: DatasetName, n_train: usize, path: &Path) -> Result<Vec<usize>> {
    let key = dataset.official_key().ok_or_else(|| {
        Error::Invalid(format!("no official validation split exists for {dataset}"))
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let entry = json
        .get(key)
        .ok_or_else(|| Error::format(path, format!("no {key:?} entry")))?;
    let size = entry
        .get("train_size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| Error::format(path, format!("{key}.train_size missing")))?;
    if size as usize != n_train {
        return Err(Error::format(
            path,
            format!(
                "{key}.train_size is {size} but the {dataset} training set has {n_train} images"
            ),
        ));
    }
    let list = entry
        .get("valid_idxs_in_draw_order")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::format(path, format!("{key}.valid_idxs_in_draw_order missing")))?;
    let mut seen = vec![false; n_train];
    list.iter()
        .map(|v| {
            let i = v
                .as_u64()
                .map(|i| i as usize)
                .filter(|&i| i < n_train)
                .ok_or_else(|| Error::format(path, format!("{key}: bad index {v}")))?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(Error::format(path, format!("{key}: index {i} repeated")));
            }
            Ok(i)
        })
        .collect()
}
