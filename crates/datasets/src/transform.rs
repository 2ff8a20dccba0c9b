//! Pixel transforms exactly as the reference applies them: PIL grayscale, the CIFAR training
//! augmentation, the ImageNet photo crop, and the model-input scaling (`utils.preprocess`).

use candle_core::Tensor;
use rand::Rng;

use crate::error::{Error, Result};
use crate::name::{DatasetName, Family};

/// PIL's `Image.convert("L")` on one RGB pixel (what torchvision's `Grayscale` calls).
///
/// PIL (`libImaging/Convert.c`, `rgb2l`) computes
/// `L = (19595·R + 38470·G + 7471·B + 0x8000) >> 16`: ITU-R 601-2 luma (0.299, 0.587, 0.114
/// in 16-bit fixed point) rounded half up *in fixed point*. This differs from
/// `round(0.299R + 0.587G + 0.114B)` for some pixels, e.g. (0, 0, 250) gives 28, not 29
/// (checked against Pillow). It also differs from `image`'s `to_luma8` (Rec. 709 weights).
pub fn pil_luma(r: u8, g: u8, b: u8) -> u8 {
    let l = (19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b) + 0x8000) >> 16;
    // The weights sum to 65536, so l <= 255.
    l as u8
}

/// Converts planar RGB (`[3, H, W]` bytes) to one plane of PIL luma (`[H, W]`).
pub fn rgb_planar_to_luma(chw: &[u8]) -> Vec<u8> {
    let plane = chw.len() / 3;
    let (r, rest) = chw.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((&r, &g), &b)| pil_luma(r, g, b))
        .collect()
}

/// Converts interleaved RGB (`[H, W, 3]`, as decoders give it) to planar CHW: 3 planes when
/// `rgb`, else the single PIL luma plane.
pub fn rgb_interleaved_to_chw(hwc: &[u8], rgb: bool) -> Vec<u8> {
    if rgb {
        let plane = hwc.len() / 3;
        let mut out = vec![0u8; hwc.len()];
        for (p, px) in hwc.chunks_exact(3).enumerate() {
            out[p] = px[0];
            out[plane + p] = px[1];
            out[2 * plane + p] = px[2];
        }
        out
    } else {
        hwc.chunks_exact(3)
            .map(|px| pil_luma(px[0], px[1], px[2]))
            .collect()
    }
}

/// Source index of padded coordinate `k` (relative to the first real pixel) in a line of `n`
/// pixels padded by reflection (numpy `reflect`, torchvision `padding_mode="reflect"`: the
/// edge pixel is not repeated). Pads wider than the line keep reflecting, as numpy does.
fn reflect(k: isize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = k.rem_euclid(period);
    (if m >= n as isize { period - m } else { m }) as usize
}

/// One draw of the CIFAR training augmentation for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    /// Row offset of the crop in the padded image, in `0..=2·pad`.
    pub top: usize,
    /// Column offset of the crop in the padded image, in `0..=2·pad`.
    pub left: usize,
    /// Mirror left-right after cropping.
    pub flip: bool,
}

/// Padding of the reference's `RandomCrop(32, padding=4, padding_mode="reflect")`.
pub const CROP_PADDING: usize = 4;

impl CropFlip {
    /// Draws offsets uniform in `{0..=8}` (row, then column) and a flip with probability 0.5,
    /// in that order, from `rng`.
    pub fn sample<R: Rng + ?Sized>(rng: &mut R) -> CropFlip {
        let top = rng.random_range(0..=2 * CROP_PADDING as u32) as usize;
        let left = rng.random_range(0..=2 * CROP_PADDING as u32) as usize;
        let flip = rng.random_bool(0.5);
        CropFlip { top, left, flip }
    }

    /// Applies the reflect-pad-4 crop (same size as the input) then the optional flip to a CHW
    /// image of `channels × height × width` bytes.
    pub fn apply(&self, chw: &[u8], channels: usize, height: usize, width: usize) -> Vec<u8> {
        let mut out = vec![0u8; chw.len()];
        let pad = CROP_PADDING as isize;
        for c in 0..channels {
            let plane = &chw[c * height * width..(c + 1) * height * width];
            let dst = &mut out[c * height * width..(c + 1) * height * width];
            for y in 0..height {
                let sy = reflect(y as isize + self.top as isize - pad, height);
                for x in 0..width {
                    let cx = if self.flip { width - 1 - x } else { x };
                    let sx = reflect(cx as isize + self.left as isize - pad, width);
                    dst[y * width + x] = plane[sy * width + sx];
                }
            }
        }
        out
    }
}

/// Height and width of the ImageNet-like regularization photos (`utils.process_imagenet`).
pub const PHOTO_HEIGHT: usize = 36;
/// See [`PHOTO_HEIGHT`].
pub const PHOTO_WIDTH: usize = 64;

/// Reduces one grayscale photo (`[H, W]` bytes) to 36×64 as the reference's ImageNet path.
///
/// * `H ≥ 144` and `W ≥ 256` (ImageNet photos): `utils.process_imagenet` exactly: centre crop
///   rows `[⌊H/2⌋−72, ⌊H/2⌋+72)`, cols `[⌊W/2⌋−128, ⌊W/2⌋+128)`, then keep every 4th pixel
///   (`(4i, 4j)`, nearest-neighbour decimation, no averaging).
/// * Smaller photos (the reference does not handle them): centre crop of the largest 9:16
///   region (rows from `(H − h)/2`, cols from `(W − w)/2`), then nearest-neighbour sampling to
///   36×64 (`src = ⌊dst·size/36⌋`). For Tiny-ImageNet's 64×64 this is exactly the centre crop of
///   rows 14..50, all 64 columns, with no resampling.
pub fn photo_to_reg(gray: &[u8], height: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(PHOTO_HEIGHT * PHOTO_WIDTH);
    if height >= 144 && width >= 256 {
        let top = height / 2 - 72;
        let left = width / 2 - 128;
        for i in 0..PHOTO_HEIGHT {
            for j in 0..PHOTO_WIDTH {
                out.push(gray[(top + 4 * i) * width + left + 4 * j]);
            }
        }
    } else {
        // Largest region with h/w = 36/64 that fits.
        let (ch, cw) = if width * PHOTO_HEIGHT <= height * PHOTO_WIDTH {
            ((width * PHOTO_HEIGHT / PHOTO_WIDTH).max(1), width)
        } else {
            (height, (height * PHOTO_WIDTH / PHOTO_HEIGHT).max(1))
        };
        let top = (height - ch) / 2;
        let left = (width - cw) / 2;
        for i in 0..PHOTO_HEIGHT {
            let sy = top + i * ch / PHOTO_HEIGHT;
            for j in 0..PHOTO_WIDTH {
                let sx = left + j * cw / PHOTO_WIDTH;
                out.push(gray[sy * width + sx]);
            }
        }
    }
    out
}

/// The affine map `x = scale·u + offset` from unit-range pixels `u = byte/255` to the model's
/// input, as the reference's `utils.preprocess`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelScale {
    /// Multiplier applied to the unit-range value.
    pub scale: f32,
    /// Offset added after the multiplication.
    pub offset: f32,
}

impl ModelScale {
    /// Identity: the [0, 1] values of `ToTensor`.
    pub const UNIT: ModelScale = ModelScale {
        scale: 1.0,
        offset: 0.0,
    };
    /// CIFAR: `5·(u − 0.5)`, range [−2.5, 2.5].
    pub const CIFAR: ModelScale = ModelScale {
        scale: 5.0,
        offset: -2.5,
    };
    /// Raw 0..255 values (`255·u`): the reference's unscaled ImageNet photos.
    pub const RAW_255: ModelScale = ModelScale {
        scale: 255.0,
        offset: 0.0,
    };

    /// The mapping for images of `source` fed to a model trained on `task` (reference
    /// `preprocess(dataset=source, task=task)`, spec §2 and §4):
    ///
    /// | source \ task | CIFAR-like | MNIST-like |
    /// |---|---|---|
    /// | CIFAR-like | `5·(u − 0.5)` | `5·(u − 0.5)` (the reference's inconsistency, kept) |
    /// | MNIST-like | `5·(u − 0.5)` | `u` |
    /// | ImageNet-like | `5·(u − 0.5)` (= `5·(t/255 − 0.5)` on raw `t`) | `255·u` (raw 0..255, unscaled) |
    ///
    /// The classification batches use `source == task`. This crate always stores pixels as
    /// bytes and produces `u = byte/255`; the ImageNet rows are written for that `u` (the
    /// reference holds those photos as raw 0..255 floats `t = 255·u`). An ImageNet-like task is
    /// an error: the reference never trains on one.
    pub fn for_pair(source: DatasetName, task: DatasetName) -> Result<ModelScale> {
        let scale = match (source.family(), task.family()) {
            (_, Family::ImagenetLike) => {
                return Err(Error::Invalid(format!(
                    "task {task} has no model-input scaling: the reference trains only on \
                     MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100"
                )))
            }
            (_, Family::CifarLike) => ModelScale::CIFAR,
            (Family::CifarLike, Family::MnistLike) => ModelScale::CIFAR,
            (Family::MnistLike, Family::MnistLike) => ModelScale::UNIT,
            (Family::ImagenetLike, Family::MnistLike) => ModelScale::RAW_255,
        };
        Ok(scale)
    }

    /// `scale·u + offset` for one value.
    pub fn apply(self, u: f32) -> f32 {
        self.scale * u + self.offset
    }
}

/// The reference's `preprocess`: maps a unit-range tensor `u` (values `byte/255`, as every
/// tensor of this crate) of images from `source` to the input of a model trained on `task`.
/// See [`ModelScale::for_pair`] for the table.
pub fn preprocess(u: &Tensor, source: DatasetName, task: DatasetName) -> Result<Tensor> {
    let s = ModelScale::for_pair(source, task)?;
    Ok(u.affine(f64::from(s.scale), f64::from(s.offset))?)
}
