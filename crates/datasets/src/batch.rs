//! Mini-batches as candle tensors, built on demand from the u8 images.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::image_set::bytes_to_tensor;
use crate::split::shuffle;
use crate::transform::{CropFlip, ModelScale};
use crate::ImageSet;

/// How a [`Batcher`] orders and transforms images.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// Images per batch (the reference: 64). The last batch may be smaller (`drop_last` false).
    pub batch_size: usize,
    /// Shuffle the indices each epoch (training) or keep them in order (evaluation).
    pub shuffle: bool,
    /// Apply the CIFAR training augmentation (reflect-pad-4 crop + flip) to every image.
    pub augment: bool,
    /// Seed of the per-epoch random stream (shuffle and augmentation).
    pub seed: u64,
    /// Map from unit-range pixels to the tensor values (unit scale or a model scale).
    pub scale: ModelScale,
}

impl BatchOptions {
    /// Training batches: shuffled, augmented when `augment`, unit scale.
    pub fn train(batch_size: usize, seed: u64, augment: bool) -> Self {
        BatchOptions {
            batch_size,
            shuffle: true,
            augment,
            seed,
            scale: ModelScale::UNIT,
        }
    }

    /// Evaluation batches: in order, no augmentation, unit scale.
    pub fn eval(batch_size: usize) -> Self {
        BatchOptions {
            batch_size,
            shuffle: false,
            augment: false,
            seed: 0,
            scale: ModelScale::UNIT,
        }
    }

    /// Same options with another value scale (e.g. [`ModelScale::for_pair`]).
    pub fn with_scale(mut self, scale: ModelScale) -> Self {
        self.scale = scale;
        self
    }
}

/// One mini-batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, f32 `[B, C, H, W]`.
    pub images: Tensor,
    /// Labels, u32 `[B]`.
    pub labels: Tensor,
    /// The set indices of the images, in batch order.
    pub indices: Vec<usize>,
}

/// Batches over a subset (`indices`) of an [`ImageSet`], e.g. the train or validation part of
/// a [`crate::TrainValid`] split, without copying the images.
///
/// Determinism: epoch `e` uses `ChaCha8Rng::seed_from_u64(seed)` on stream `e`; it first
/// shuffles the indices (if `shuffle`), then, batch after batch and image after image, draws
/// one [`CropFlip`] per image (if `augment`). Same seed and epoch → same batches on any
/// machine, whatever the batch consumer does.
#[derive(Debug, Clone)]
pub struct Batcher<'a> {
    set: &'a ImageSet,
    indices: Vec<usize>,
    options: BatchOptions,
    device: Device,
}

impl<'a> Batcher<'a> {
    /// A batcher over `indices` of `set` (`None`: every image). Errors on an out-of-range index
    /// or a zero batch size.
    pub fn new(
        set: &'a ImageSet,
        indices: Option<Vec<usize>>,
        options: BatchOptions,
        device: &Device,
    ) -> Result<Self> {
        let indices = indices.unwrap_or_else(|| (0..set.n).collect());
        if let Some(&bad) = indices.iter().find(|&&i| i >= set.n) {
            return Err(set.out_of_range(bad));
        }
        if options.batch_size == 0 {
            return Err(crate::Error::Invalid("batch size must be positive".into()));
        }
        Ok(Batcher {
            set,
            indices,
            options,
            device: device.clone(),
        })
    }

    /// Number of images per epoch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Number of batches per epoch (`⌈len / batch_size⌉`).
    pub fn num_batches(&self) -> usize {
        self.indices.len().div_ceil(self.options.batch_size)
    }

    /// The options.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// The batches of epoch `epoch` (0-based).
    pub fn epoch(&self, epoch: u64) -> Epoch<'_> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.options.seed);
        rng.set_stream(epoch);
        let mut order = self.indices.clone();
        if self.options.shuffle {
            shuffle(&mut order, &mut rng);
        }
        Epoch {
            batcher: self,
            order,
            pos: 0,
            rng,
        }
    }
}

/// The batches of one epoch, an iterator of `Result<Batch>`.
#[derive(Debug)]
pub struct Epoch<'b> {
    batcher: &'b Batcher<'b>,
    order: Vec<usize>,
    pos: usize,
    rng: ChaCha8Rng,
}

impl Epoch<'_> {
    fn make(&mut self, idx: Vec<usize>) -> Result<Batch> {
        let set = self.batcher.set;
        let opts = &self.batcher.options;
        let len = set.image_len();
        let mut bytes = Vec::with_capacity(idx.len() * len);
        for &i in &idx {
            let img = set.image(i).ok_or_else(|| set.out_of_range(i))?;
            if opts.augment {
                let aug = CropFlip::sample(&mut self.rng);
                bytes.extend(aug.apply(img, set.channels, set.height, set.width));
            } else {
                bytes.extend_from_slice(img);
            }
        }
        let device = &self.batcher.device;
        let images = bytes_to_tensor(
            &bytes,
            [idx.len(), set.channels, set.height, set.width],
            opts.scale,
            device,
        )?;
        let labels = set.label_tensor(&idx, device)?;
        Ok(Batch {
            images,
            labels,
            indices: idx,
        })
    }
}

impl Iterator for Epoch<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batcher.options.batch_size).min(self.order.len());
        let idx = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(self.make(idx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.pos).div_ceil(self.batcher.options.batch_size);
        (left, Some(left))
    }
}
