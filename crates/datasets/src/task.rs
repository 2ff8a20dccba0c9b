//! A classification task as the reference sets it up (`utils.create_resnet_loaders`): the
//! training split minus the validation images, the validation images, the official test split.

use candle_core::Device;

use crate::batch::{BatchOptions, Batcher};
use crate::error::{Error, Result};
use crate::load::load_train_test;
use crate::name::{DatasetName, Family, LoadOptions};
use crate::split::{split_train_valid, TrainValid, ValidSplit};
use crate::transform::ModelScale;
use crate::ImageSet;

/// The reference's classification batch size (`--resnet_batch_size`).
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Train/validation/test data of one classification dataset, images kept once in memory.
#[derive(Debug, Clone)]
pub struct ClassificationData {
    /// The dataset.
    pub name: DatasetName,
    /// The whole official training split (train and validation indices point into it).
    pub train_set: ImageSet,
    /// The official test split.
    pub test_set: ImageSet,
    /// Which training images train and which validate.
    pub split: TrainValid,
}

impl ClassificationData {
    /// Loads `name` (grayscale unless `opts.rgb`) and carves out the validation split. Only
    /// MNIST-like and CIFAR-like datasets are classification tasks.
    pub fn load(name: DatasetName, opts: &LoadOptions, valid: &ValidSplit) -> Result<Self> {
        if name.family() == Family::ImagenetLike {
            return Err(Error::Invalid(format!(
                "{name} is a regularization source, not a classification task"
            )));
        }
        let (train_set, test_set) = load_train_test(name, opts)?;
        let split = split_train_valid(name, train_set.n, valid)?;
        Ok(ClassificationData {
            name,
            train_set,
            test_set,
            split,
        })
    }

    /// The model-input scaling of this task's own images (`5·(u − 0.5)` for CIFAR, `u` for
    /// MNIST-like).
    pub fn model_scale(&self) -> Result<ModelScale> {
        ModelScale::for_pair(self.name, self.name)
    }

    /// Training batches: shuffled per epoch with `seed`, CIFAR augmentation for CIFAR-like
    /// datasets, the last batch smaller (CIFAR: 774 batches of 64, MNIST: 929).
    pub fn train_batcher(
        &self,
        batch_size: usize,
        seed: u64,
        scale: ModelScale,
        device: &Device,
    ) -> Result<Batcher<'_>> {
        let opts = BatchOptions::train(batch_size, seed, self.name.has_train_augmentation())
            .with_scale(scale);
        Batcher::new(
            &self.train_set,
            Some(self.split.train.clone()),
            opts,
            device,
        )
    }

    /// Validation batches: in draw order, no augmentation (the reference's test transform).
    pub fn valid_batcher(
        &self,
        batch_size: usize,
        scale: ModelScale,
        device: &Device,
    ) -> Result<Batcher<'_>> {
        let opts = BatchOptions::eval(batch_size).with_scale(scale);
        Batcher::new(
            &self.train_set,
            Some(self.split.valid.clone()),
            opts,
            device,
        )
    }

    /// Test batches: in order, no augmentation.
    pub fn test_batcher(
        &self,
        batch_size: usize,
        scale: ModelScale,
        device: &Device,
    ) -> Result<Batcher<'_>> {
        Batcher::new(
            &self.test_set,
            None,
            BatchOptions::eval(batch_size).with_scale(scale),
            device,
        )
    }
}
