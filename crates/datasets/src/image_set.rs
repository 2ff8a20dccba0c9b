//! In-memory image sets: u8 pixels, CHW per image, converted to f32 tensors only per batch.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::name::DatasetName;

/// A set of equally sized images kept as `u8` (values 0..255), with one label per image.
///
/// Layout: image `i` occupies `images[i*c*h*w .. (i+1)*c*h*w]` in channel-major (CHW) order,
/// exactly the layout of a `[N, C, H, W]` tensor. Full MNIST is 47 MB here.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Which dataset the pixels come from (decides augmentation and model scaling).
    pub dataset: DatasetName,
    /// Pixels, `n * channels * height * width` bytes, `[N, C, H, W]` order.
    pub images: Vec<u8>,
    /// Class index of each image (CIFAR-100: the fine label).
    pub labels: Vec<u32>,
    /// CIFAR-100 coarse labels (20 superclasses) when the source has them.
    pub coarse_labels: Option<Vec<u32>>,
    /// Number of classes the labels range over.
    pub num_classes: usize,
    /// Number of images.
    pub n: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
}

impl ImageSet {
    /// Bytes per image (`channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The CHW bytes of image `i`; `None` when out of range.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        self.images.get(i * len..(i + 1) * len)
    }

    /// Number of images per class (`counts[c]` for `c < num_classes`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A new set holding the given images (in the given order); indices must be in range.
    pub fn subset(&self, indices: &[usize]) -> Result<ImageSet> {
        let len = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i).ok_or_else(|| self.out_of_range(i))?);
            labels.push(self.labels[i]);
        }
        let coarse_labels = self
            .coarse_labels
            .as_ref()
            .map(|c| indices.iter().map(|&i| c[i]).collect());
        Ok(ImageSet {
            images,
            labels,
            coarse_labels,
            n: indices.len(),
            ..self.header()
        })
    }

    /// The images at `indices` as an f32 tensor `[B, C, H, W]` with values `u8 / 255` in [0, 1].
    pub fn tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let len = self.image_len();
        let mut bytes = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            bytes.extend_from_slice(self.image(i).ok_or_else(|| self.out_of_range(i))?);
        }
        bytes_to_tensor(
            &bytes,
            [indices.len(), self.channels, self.height, self.width],
            crate::ModelScale::UNIT,
            device,
        )
    }

    /// The labels at `indices` as a u32 tensor `[B]`.
    pub fn label_tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let labels = indices
            .iter()
            .map(|&i| {
                self.labels
                    .get(i)
                    .copied()
                    .ok_or_else(|| self.out_of_range(i))
            })
            .collect::<Result<Vec<u32>>>()?;
        Ok(Tensor::from_vec(labels, indices.len(), device)?)
    }

    pub(crate) fn out_of_range(&self, i: usize) -> Error {
        Error::Invalid(format!(
            "image index {i} out of range for the {} set of {} images",
            self.dataset, self.n
        ))
    }

    /// A copy of the metadata with no images (used by `..` struct updates).
    fn header(&self) -> ImageSet {
        ImageSet {
            dataset: self.dataset,
            images: Vec::new(),
            labels: Vec::new(),
            coarse_labels: None,
            num_classes: self.num_classes,
            n: 0,
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }
}

/// Converts `[B, C, H, W]` u8 bytes to an f32 tensor, mapping each byte `v` to
/// `scale.apply(v / 255)`.
pub(crate) fn bytes_to_tensor(
    bytes: &[u8],
    shape: [usize; 4],
    scale: crate::ModelScale,
    device: &Device,
) -> Result<Tensor> {
    let data: Vec<f32> = bytes
        .iter()
        .map(|&v| scale.apply(f32::from(v) / 255.0))
        .collect();
    Ok(Tensor::from_vec(data, shape.to_vec(), device)?)
}
