//! The frozen regularization image set (reference `utils.fetch_reg_data`, spec §4).

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::load::{load_photo_pool, load_split_limited};
use crate::name::{DatasetName, Family, LoadOptions, Split};
use crate::split::shuffle;
use crate::transform::{CropFlip, ModelScale};
use crate::ImageSet;

/// The reference's default number of regularization images (`--reg_image_num`).
pub const DEFAULT_REG_IMAGES: usize = 5000;

/// N regularization images, fixed for a whole run.
///
/// Built as the reference does: the first `n` training images of the source (ImageNet-like
/// sources: the first `n` photos of the pool, as 36×64 grayscale), visited in a seeded random
/// order, CIFAR-like ones augmented **once** (reflect-pad-4 crop + flip) and frozen; then
/// grayscale unless `opts.rgb` (photos and MNIST-like sets are always 1 channel). Labels are kept
/// but unused.
///
/// Randomness: one `ChaCha8Rng::seed_from_u64(seed)` stream draws the permutation of `0..n`
/// first, then one [`CropFlip`] per image in the permuted order.
#[derive(Debug, Clone, PartialEq)]
pub struct RegImages {
    /// The dataset the images come from (decides their model scaling, see [`Self::scale_for`]).
    pub source: DatasetName,
    /// The frozen images, `[N, C, H, W]` u8.
    pub images: ImageSet,
    /// For each stored image, its index in the source's training split (file order).
    pub source_indices: Vec<usize>,
}

impl RegImages {
    /// Loads `source` from `opts` and builds the set (`opts.rgb` keeps colour).
    pub fn build(source: DatasetName, n: usize, seed: u64, opts: &LoadOptions) -> Result<Self> {
        let pool = match source.family() {
            Family::ImagenetLike => load_photo_pool(source, n, opts)?,
            _ => load_split_limited(source, Split::Train, opts, Some(n))?,
        };
        RegImages::from_train_set(&pool, n, seed)
    }

    /// Builds the set from an already loaded training split (`train.dataset` is the source).
    pub fn from_train_set(train: &ImageSet, n: usize, seed: u64) -> Result<Self> {
        if n == 0 || n > train.n {
            return Err(Error::Invalid(format!(
                "cannot take {n} regularization images from the {} training set of {} images",
                train.dataset, train.n
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, &mut rng);
        let mut images = train.subset(&order)?;
        if train.dataset.has_train_augmentation() {
            let len = images.image_len();
            let (c, h, w) = (images.channels, images.height, images.width);
            for chunk in images.images.chunks_exact_mut(len) {
                let aug = CropFlip::sample(&mut rng).apply(chunk, c, h, w);
                chunk.copy_from_slice(&aug);
            }
        }
        Ok(RegImages {
            source: train.dataset,
            images,
            source_indices: order,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.n
    }

    /// Whether the set is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.images.n == 0
    }

    /// All images as f32 `[N, C, H, W]` in [0, 1].
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        self.images
            .tensor(&(0..self.images.n).collect::<Vec<_>>(), device)
    }

    /// The model-input scaling of these images for a model trained on `task`
    /// ([`ModelScale::for_pair`]`(source, task)`).
    pub fn scale_for(&self, task: DatasetName) -> Result<ModelScale> {
        ModelScale::for_pair(self.source, task)
    }

    /// All images as f32 `[N, C, H, W]` already mapped by [`Self::scale_for`]`(task)`.
    pub fn model_tensor(&self, task: DatasetName, device: &Device) -> Result<Tensor> {
        let s = self.scale_for(task)?;
        Ok(self
            .tensor(device)?
            .affine(f64::from(s.scale), f64::from(s.offset))?)
    }
}
