//! Dataset access for the commands, through `pixreg-datasets`.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::Tensor;
use pixreg_datasets::{first_n_train_images, resolve_data_dir, DatasetName};

/// The first `count` training images of dataset `name` (grayscale, [0, 1], file order, no
/// augmentation) as `[N, 1, H, W]`.
pub fn first_training_images(name: &str, count: usize, data_dir: Option<&Path>) -> Result<Tensor> {
    if count < 2 {
        bail!("--count must be at least 2 (pairs need two images), got {count}");
    }
    let name: DatasetName = name.parse()?;
    let dir = resolve_data_dir(data_dir)?;
    Ok(first_n_train_images(name, count, &dir)?)
}
