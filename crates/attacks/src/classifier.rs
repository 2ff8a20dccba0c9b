//! The classifier abstraction the attacks run against, and batched query helpers.
//!
//! # Design
//!
//! [`Classifier`] is deliberately tiny (logits + input box) so that any model, from a candle-nn
//! network to a closure, can be attacked without this crate depending on a model crate.
//! White-box attacks need input gradients; they use [`DifferentiableClassifier`], whose
//! provided method [`DifferentiableClassifier::loss_gradient`] obtains them through candle's
//! autograd (the input becomes a [`Var`], the summed cross-entropy is back-propagated). A model
//! whose forward pass is built from differentiable candle ops therefore only needs
//! `impl DifferentiableClassifier for MyModel {}`; a model with its own gradient code can
//! override the method.

use crate::error::{AttackError, Result};
use candle_core::{DType, Device, Tensor, Var, D};

/// Default maximum number of images per forward pass used by the attacks.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// A classifier that maps a batch of images to logits.
///
/// # Examples
///
/// A hand-written linear classifier on 1×4×4 images normalised to the model-scale box
/// `[-1, 1]`, evaluated under the paper's Gaussian-noise grid. Noise is added in unit space,
/// so `input_bounds` must return the box the images really live in. The noisy image is then
/// clamped to the original image's own `[min, max]`. These images lie entirely on one side of
/// the threshold, so no noise can flip them and the accuracy stays 1 at every ε.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::{accuracy, Classifier, NoiseAttack, NoiseKind, Task};
///
/// /// Two classes: class 1 iff `w · x + b > 0`.
/// struct Linear {
///     w: Tensor,
///     b: f64,
/// }
///
/// impl Classifier for Linear {
///     fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
///         let z = (x.flatten_from(1)?.matmul(&self.w)? + self.b)?; // [B, 1]
///         Tensor::cat(&[&z.neg()?, &z], 1) // [B, 2]
///     }
///     fn input_bounds(&self) -> (f32, f32) {
///         (-1.0, 1.0)
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dev = Device::Cpu;
/// // w = (1/16, …, 1/16), b = 0: class 1 iff the mean pixel is positive.
/// let model = Linear {
///     w: Tensor::full(1f32 / 16.0, (16, 1), &dev)?,
///     b: 0.0,
/// };
/// // A dark image (pixels in [-0.9, -0.3]) and a bright one (pixels in [0.3, 0.9]).
/// let pixels: Vec<f32> = [-0.9f32, 0.3]
///     .iter()
///     .flat_map(|&o| (0..16).map(move |j| o + 0.2 * (j % 4) as f32))
///     .collect();
/// let images = Tensor::from_vec(pixels, (2, 1, 4, 4), &dev)?;
/// let labels = [0u32, 1];
/// assert_eq!(accuracy(&model, &images, &labels, 2)?, 1.0);
///
/// let curve = NoiseAttack::paper(Task::Mnist, NoiseKind::Gaussian).run(&model, &images, &labels, 0)?;
/// assert_eq!(curve.n_images, 2);
/// assert!(curve.accuracy.iter().all(|&a| a == 1.0));
/// # Ok(())
/// # }
/// ```
pub trait Classifier {
    /// Logits `[B, K]` for `x` of shape `[B, C, H, W]` (f32, **model scale**).
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor>;

    /// The model-scale box `(lo, hi)` of valid inputs: the global minimum and maximum of the
    /// preprocessed test set (`[0, 1]` for MNIST-type tasks, `[-2.5, 2.5]` for the reference
    /// CIFAR scaling). Unit space is `u = (x - lo) / (hi - lo)`.
    fn input_bounds(&self) -> (f32, f32);
}

/// A classifier that can also return the input gradient of its cross-entropy loss.
pub trait DifferentiableClassifier: Classifier {
    /// Gradient with respect to `x` (model scale, same shape as `x`) of the **summed**
    /// cross-entropy `Σ_i CE(f(x_i), y_i)`. Summation makes every image's gradient equal to the
    /// gradient of its own loss, independent of the batch size (for models in eval mode).
    ///
    /// The provided implementation uses candle autograd; it fails with an error if no gradient
    /// reaches the input (e.g. a forward pass that detaches its input).
    fn loss_gradient(&self, x: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
        let var = Var::from_tensor(&x.detach())?;
        let logits = self.logits(var.as_tensor())?;
        let loss = cross_entropy_sum(&logits, labels)?;
        let grads = loss.backward()?;
        grads.get(var.as_tensor()).cloned().ok_or_else(|| {
            candle_core::Error::Msg("no gradient reached the classifier input".into())
        })
    }
}

/// Summed cross-entropy of `logits` `[B, K]` against `labels` (numerically stable log-softmax).
pub fn cross_entropy_sum(logits: &Tensor, labels: &[u32]) -> candle_core::Result<Tensor> {
    let (b, _k) = logits.dims2()?;
    if labels.len() != b {
        candle_core::bail!("{} labels for {} logit rows", labels.len(), b);
    }
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&lse)?;
    let idx = Tensor::from_slice(labels, (b, 1), logits.device())?;
    log_probs.gather(&idx, 1)?.sum_all()?.neg()
}

/// A [`Classifier`] made from a closure and a box, e.g.
/// `FnClassifier::new(|x| net.forward(x), (lo, hi))`. It is differentiable through candle
/// autograd if the closure is.
pub struct FnClassifier<F> {
    f: F,
    bounds: (f32, f32),
}

impl<F> FnClassifier<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    /// Wrap `f` (model-scale images to logits) with the input box `bounds = (lo, hi)`.
    pub fn new(f: F, bounds: (f32, f32)) -> Self {
        Self { f, bounds }
    }
}

impl<F> Classifier for FnClassifier<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        (self.f)(x)
    }
    fn input_bounds(&self) -> (f32, f32) {
        self.bounds
    }
}

impl<F> DifferentiableClassifier for FnClassifier<F> where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>
{
}

/// Check that the bounds are finite and `lo < hi`.
pub(crate) fn checked_bounds<C: Classifier + ?Sized>(model: &C) -> Result<(f32, f32)> {
    let (lo, hi) = model.input_bounds();
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(crate::error::invalid(format!(
            "input bounds must be finite with lo < hi, got ({lo}, {hi})"
        )));
    }
    Ok((lo, hi))
}

/// Argmax of each row of a `[B, K]` logits tensor (first maximum on ties, like torch).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    let (b, k) = logits.dims2().map_err(|_| {
        AttackError::Shape(format!("logits must be [B, K], got {:?}", logits.dims()))
    })?;
    if k == 0 {
        return Err(AttackError::Shape("logits have zero classes".into()));
    }
    let v = logits
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(b);
    for row in v.chunks_exact(k) {
        let mut best = 0usize;
        for (j, &z) in row.iter().enumerate() {
            if !z.is_finite() {
                return Err(AttackError::NonFiniteLogits);
            }
            if z > row[best] {
                best = j;
            }
        }
        out.push(best as u32);
    }
    Ok(out)
}

/// Predicted classes of `x` (`[N, C, H, W]`, model scale), querying the model in chunks of at
/// most `max_batch` images.
pub fn predict_batched<C: Classifier + ?Sized>(
    model: &C,
    x: &Tensor,
    max_batch: usize,
) -> Result<Vec<u32>> {
    let n = check_images(x)?.0;
    let max_batch = max_batch.max(1);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let len = max_batch.min(n - start);
        let chunk = x.narrow(0, start, len)?;
        let logits = model.logits(&chunk)?;
        let pred = argmax_rows(&logits)?;
        if pred.len() != len {
            return Err(AttackError::Shape(format!(
                "classifier returned {} rows for {} images",
                pred.len(),
                len
            )));
        }
        out.extend(pred);
        start += len;
    }
    Ok(out)
}

/// Accuracy of `model` on `x` against `labels`, chunked by `max_batch`.
pub fn accuracy<C: Classifier + ?Sized>(
    model: &C,
    x: &Tensor,
    labels: &[u32],
    max_batch: usize,
) -> Result<f64> {
    let pred = predict_batched(model, x, max_batch)?;
    check_labels_len(labels, pred.len())?;
    if pred.is_empty() {
        return Err(AttackError::EmptyBatch);
    }
    let correct = pred.iter().zip(labels).filter(|(p, y)| p == y).count();
    Ok(correct as f64 / pred.len() as f64)
}

/// Global `(min, max)` of a (preprocessed, model-scale) image set: the `(lo, hi)` that
/// [`Classifier::input_bounds`] should return for the paper protocol (spec §1.3, §1.5).
pub fn global_bounds(images: &Tensor) -> Result<(f32, f32)> {
    if images.elem_count() == 0 {
        return Err(AttackError::EmptyBatch);
    }
    let flat = images.flatten_all()?.to_dtype(DType::F32)?;
    let lo = flat.min(0)?.to_scalar::<f32>()?;
    let hi = flat.max(0)?.to_scalar::<f32>()?;
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(crate::error::invalid("images contain non-finite values"));
    }
    Ok((lo, hi))
}

/// Convert an integer (or float) label tensor of shape `[N]` to `Vec<u32>`.
pub fn labels_from_tensor(labels: &Tensor) -> Result<Vec<u32>> {
    let v = labels
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    v.into_iter()
        .map(|y| {
            if y >= 0.0 && y.fract() == 0.0 && y <= u32::MAX as f64 {
                Ok(y as u32)
            } else {
                Err(crate::error::invalid(format!("invalid label {y}")))
            }
        })
        .collect()
}

/// Validate an image batch: rank 4, f32-convertible. Returns `(N, C, H, W)`.
pub(crate) fn check_images(x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    x.dims4()
        .map_err(|_| AttackError::Shape(format!("images must be [N, C, H, W], got {:?}", x.dims())))
}

pub(crate) fn check_labels_len(labels: &[u32], n: usize) -> Result<()> {
    if labels.len() != n {
        return Err(AttackError::Shape(format!(
            "{} labels for {} images",
            labels.len(),
            n
        )));
    }
    Ok(())
}

/// Images of a batch as flat unit-space rows, plus what is needed to map them back.
pub(crate) struct UnitImages {
    pub data: Vec<f32>,
    pub n: usize,
    pub dims: (usize, usize, usize),
}

impl UnitImages {
    pub fn dim(&self) -> usize {
        self.dims.0 * self.dims.1 * self.dims.2
    }
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.data[i * d..(i + 1) * d]
    }
}

/// Read `x` (model scale) into unit space `u = (x - lo) / (hi - lo)` on the CPU.
pub(crate) fn to_unit(x: &Tensor, lo: f32, hi: f32) -> Result<UnitImages> {
    let (n, c, h, w) = check_images(x)?;
    let v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let scale = hi - lo;
    let data = v.into_iter().map(|z| (z - lo) / scale).collect();
    Ok(UnitImages {
        data,
        n,
        dims: (c, h, w),
    })
}

/// Batched membership oracle "is this unit-space point adversarial for its image's label",
/// querying the model at model scale `lo + (hi - lo) * u` in chunks of `max_batch`.
///
/// Decision-based attacks run entirely in unit space `[0, 1]^D`. This is exact in distribution
/// (spec §2.5): every operation of the Boundary Attack and of HopSkipJump either commutes with
/// the affine map `x ↦ (x - lo)/(hi - lo)` (differences, ratios of norms, clipping to the mapped
/// box, blends) or is scale-free (the Gaussian proposal is rescaled to a relative length,
/// uniform noise on the box maps to uniform noise on `[0,1]^D`); distances are then directly
/// in unit scale. The model only ever sees model-scale inputs.
pub(crate) struct Oracle<'a, C: ?Sized> {
    pub model: &'a C,
    pub device: Device,
    pub dims: (usize, usize, usize),
    pub lo: f32,
    pub hi: f32,
    pub max_batch: usize,
}

impl<C: Classifier + ?Sized> Oracle<'_, C> {
    pub fn dim(&self) -> usize {
        self.dims.0 * self.dims.1 * self.dims.2
    }

    /// Predicted classes of unit-space rows.
    pub fn predict(&self, rows: &[&[f32]]) -> Result<Vec<u32>> {
        let d = self.dim();
        let scale = self.hi - self.lo;
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_batch.max(1)) {
            let mut buf = Vec::with_capacity(chunk.len() * d);
            for r in chunk {
                debug_assert_eq!(r.len(), d);
                buf.extend(r.iter().map(|&u| self.lo + scale * u));
            }
            let (c, h, w) = self.dims;
            let t = Tensor::from_vec(buf, (chunk.len(), c, h, w), &self.device)?;
            let pred = argmax_rows(&self.model.logits(&t)?)?;
            if pred.len() != chunk.len() {
                return Err(AttackError::Shape(format!(
                    "classifier returned {} rows for {} images",
                    pred.len(),
                    chunk.len()
                )));
            }
            out.extend(pred);
        }
        Ok(out)
    }

    /// `pred(row) != label` for each row.
    pub fn is_adv(&self, rows: &[&[f32]], labels: &[u32]) -> Result<Vec<bool>> {
        let pred = self.predict(rows)?;
        Ok(pred.iter().zip(labels).map(|(p, y)| p != y).collect())
    }
}

/// Numpy-style median (mean of the two middle values for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

pub(crate) fn l2_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (x - y) as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

pub(crate) fn norm(a: &[f32]) -> f64 {
    a.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}
