//! Model-side similarity: the centred cosine between the hidden representations of two images,
//! as the reference model's two-input forward computes it.
//!
//! For each layer the reference keeps a per-channel running mean of the activations. Every pair
//! forward first *updates* that mean from the current batch (both halves together, no gradient)
//! and then centres both feature maps with it, so the similarity is a centred cosine that does
//! not depend on the batch composition more than through one exponential-moving-average step.
//! The per-layer scores are mixed by a softmax over a learnable `layer_weight` vector.
//!
//! All functions are compositions of candle ops: device- and type-agnostic, and
//! differentiable through candle's autograd except where stated (the running mean is a
//! constant, exactly as in PyTorch). `pixreg-models`' `ops` runs the same maths as fused CPU
//! kernels (`pixreg-kernels`' `pair`) on float32 CPU tensors and falls back to these
//! elsewhere; its tests hold the kernels to these functions.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rsa_core::model_side::{centered_cosine, combine_layer_scores, update_running_mean};
//!
//! # fn main() -> rsa_core::Result<()> {
//! let dev = Device::Cpu;
//! let a = Tensor::randn(0f32, 1.0, (4, 3, 5, 5), &dev)?;
//! let b = Tensor::randn(0f32, 1.0, (4, 3, 5, 5), &dev)?;
//! let mean = update_running_mean(&Tensor::zeros(3, candle_core::DType::F32, &dev)?, &a, &b, 0.9)?;
//! let per_layer = centered_cosine(&a, &b, &mean)?; // [4]
//! let weights = Tensor::zeros(2, candle_core::DType::F32, &dev)?;
//! let scores = combine_layer_scores(&[per_layer.clone(), per_layer], &weights)?;
//! assert_eq!(scores.dims(), &[4]);
//! # Ok(()) }
//! ```

use candle_core::{DType, Tensor, D};

use crate::{Error, Result};

/// The reference's cosine-similarity epsilon (`torch.nn.functional.cosine_similarity` default).
pub const COSINE_EPS: f64 = 1e-8;

/// The reference's running-mean decay for the similarity head.
pub const RUNNING_MEAN_BETA: f64 = 0.9;

fn check_feature_pair(a: &Tensor, b: &Tensor) -> Result<()> {
    if a.rank() < 2 || a.dims() != b.dims() {
        return Err(Error::InvalidArgument(format!(
            "paired feature maps must have the same shape [k, C, ...], got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok(())
}

/// Per-channel mean of the concatenation of `a` and `b` (`[k, C, H, W]` each) over images and
/// spatial positions, returned as a detached `[C]` tensor.
pub fn batch_channel_mean(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_feature_pair(a, b)?;
    let both = Tensor::cat(&[a.detach(), b.detach()], 0)?;
    let (images, channels) = (both.dim(0)?, both.dim(1)?);
    let positions = match images * channels {
        0 => 0,
        n => both.elem_count() / n,
    };
    // [2k, C, S] -> sum over S then over the images.
    let per_image = both.reshape((images, channels, positions))?.sum(2)?;
    Ok((per_image.sum(0)? / (images * positions) as f64)?)
}

/// One running-mean step of the similarity head: `beta·running + (1 − beta)·m`, where `m` is
/// [`batch_channel_mean`] of the two halves. The result carries no gradient.
///
/// The reference applies this *before* centring, in training and evaluation mode alike, with
/// no bias correction (the first call centres with `0.1·m`).
pub fn update_running_mean(running: &Tensor, a: &Tensor, b: &Tensor, beta: f64) -> Result<Tensor> {
    running_mean_step(running, &batch_channel_mean(a, b)?, beta)
}

/// The running-mean step of [`update_running_mean`] given the batch's per-channel mean `m`
/// (`[C]`, however computed): `beta·running + (1 − beta)·m`, without gradient.
pub fn running_mean_step(running: &Tensor, m: &Tensor, beta: f64) -> Result<Tensor> {
    if running.dims() != m.dims() {
        return Err(Error::InvalidArgument(format!(
            "running mean has shape {:?} but the features have {} channels",
            running.dims(),
            m.dim(0)?
        )));
    }
    let updated = ((running.detach() * beta)? + (m.detach() * (1.0 - beta))?)?;
    Ok(updated)
}

/// Reshapes a per-channel `[C]` mean so it broadcasts over `[k, C, ...]`.
fn channel_broadcast(mean: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1usize; rank];
    shape[1] = mean.dim(0)?;
    Ok(mean.detach().reshape(shape)?)
}

/// Row-wise cosine of two `[k, D]` matrices with PyTorch's semantics: each row is divided by
/// `max(‖row‖, eps)` before the dot product.
pub fn rowwise_cosine(a: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let na = a
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(eps, f64::INFINITY)?;
    let nb = b
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(eps, f64::INFINITY)?;
    let an = a.broadcast_div(&na)?;
    let bn = b.broadcast_div(&nb)?;
    Ok((an * bn)?.sum(D::Minus1)?)
}

/// Centred cosine similarity of each pair `(a_i, b_i)`: both feature maps minus the per-channel
/// `mean` (a constant), flattened over channels and space, compared with [`rowwise_cosine`]
/// (eps [`COSINE_EPS`]). Returns `[k]`.
pub fn centered_cosine(a: &Tensor, b: &Tensor, mean: &Tensor) -> Result<Tensor> {
    check_feature_pair(a, b)?;
    let channels = a.dim(1)?;
    if mean.dims() != [channels] {
        return Err(Error::InvalidArgument(format!(
            "the mean has shape {:?} but the features have {channels} channels",
            mean.dims()
        )));
    }
    let m = channel_broadcast(mean, a.rank())?;
    let ac = a.broadcast_sub(&m)?.flatten_from(1)?;
    let bc = b.broadcast_sub(&m)?.flatten_from(1)?;
    rowwise_cosine(&ac, &bc, COSINE_EPS)
}

/// [`centered_cosine`] of the two halves of one batch of feature maps `[2k, C, ...]`: rows
/// `i` and `k + i` are pair `i`. Returns `[k]`.
pub fn centered_cosine_halves(pairs: &Tensor, mean: &Tensor) -> Result<Tensor> {
    let k = pair_halves(pairs)?;
    centered_cosine(&pairs.narrow(0, 0, k)?, &pairs.narrow(0, k, k)?, mean)
}

/// `k` of a `[2k, C, ...]` batch of pairs, or an error naming the shape.
pub fn pair_halves(pairs: &Tensor) -> Result<usize> {
    let rows = pairs.dims().first().copied().unwrap_or(0);
    if pairs.rank() < 2 || rows % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "paired feature maps must have shape [2k, C, ...], got {:?}",
            pairs.dims()
        )));
    }
    Ok(rows / 2)
}

/// Softmax of a 1-D tensor, computed stably (the maximum is subtracted as a constant).
pub fn softmax_1d(x: &Tensor) -> Result<Tensor> {
    let max = x.detach().max_keepdim(0)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(0)?;
    Ok(e.broadcast_div(&sum)?)
}

/// Mixes per-layer scores (`L` tensors of shape `[k]`) with `softmax(layer_weight)` (`[L]`):
/// `Σ_l softmax(w)_l · scores_l`, shape `[k]`.
pub fn combine_layer_scores(per_layer: &[Tensor], layer_weight: &Tensor) -> Result<Tensor> {
    if per_layer.is_empty() || layer_weight.dims() != [per_layer.len()] {
        return Err(Error::InvalidArgument(format!(
            "layer_weight has shape {:?} but {} per-layer scores were given",
            layer_weight.dims(),
            per_layer.len()
        )));
    }
    let stacked = Tensor::stack(per_layer, 1)?; // [k, L]
    let w = softmax_1d(&layer_weight.to_dtype(stacked.dtype())?)?;
    Ok(stacked.broadcast_mul(&w.unsqueeze(0)?)?.sum(1)?)
}

/// Pearson correlation between model scores and targets, as the reference logs during
/// training (NaN when either side is constant). Both inputs are 1-D of equal length.
pub fn score_target_correlation(scores: &Tensor, targets: &Tensor) -> Result<f64> {
    let s: Vec<f64> = scores.to_dtype(DType::F64)?.to_vec1()?;
    let t: Vec<f64> = targets.to_dtype(DType::F64)?.to_vec1()?;
    if s.len() != t.len() || s.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "scores ({}) and targets ({}) must be non-empty and of equal length",
            s.len(),
            t.len()
        )));
    }
    let n = s.len() as f64;
    let (ms, mt) = (s.iter().sum::<f64>() / n, t.iter().sum::<f64>() / n);
    let (mut cov, mut vs, mut vt) = (0.0, 0.0, 0.0);
    for (x, y) in s.iter().zip(&t) {
        cov += (x - ms) * (y - mt);
        vs += (x - ms) * (x - ms);
        vt += (y - mt) * (y - mt);
    }
    Ok(cov / (vs.sqrt() * vt.sqrt()))
}
