//! Random-noise "attacks" (spec §1.3): Gaussian, Uniform and Salt-and-Pepper noise in unit
//! scale, each image clamped to its own original `[min, max]`, accuracy over all images against
//! the ground truth.
//!
//! # Exactness
//!
//! [`noisy_inputs`] reproduces the reference `utils.noisy_inputs` bit for bit given the same
//! draws. PyTorch combines a float32 tensor with a Python float by casting the scalar to
//! float32 first (wrapped scalars do not promote the tensor dtype), so ε is rounded to `f32`
//! and every operation is done in `f32` in the reference order:
//! * Gaussian: `x + randn * eps`;
//! * Uniform: `x + ((rand - 0.5) * 2) * eps`;
//! * SaltPepper: `x + [rand < eps] * (2 * randint - 1)` (comparison in f32);
//!
//! then `clamp(out, min_i, max_i)` per image with the extrema taken before the noise.

use crate::classifier::{
    check_images, check_labels_len, checked_bounds, predict_batched, Classifier,
};
use crate::error::{invalid, AttackError, Result};
use crate::rng::{derive_seed, image_stream};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// `numpy.linspace(start, stop, num)` (endpoint included) with numpy's rounding:
/// `start + i * step`, last value set to `stop` exactly.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

/// Noise distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseKind {
    /// `u + ε·N(0,1)`.
    Gaussian,
    /// `u + ε·U(-1,1)`.
    Uniform,
    /// `u ± 1` with probability ε (becomes the image's own max/min after the clamp).
    SaltPepper,
}

/// The random draws consumed by one call of the noise formula (one value per element).
#[derive(Debug, Clone, Copy)]
pub enum NoiseDraws<'a> {
    /// Standard normal draws.
    Gaussian {
        /// `torch.randn_like` values.
        randn: &'a [f32],
    },
    /// Uniform `[0, 1)` draws.
    Uniform {
        /// `torch.rand_like` values.
        rand: &'a [f32],
    },
    /// Uniform mask draws and {0, 1} sign draws.
    SaltPepper {
        /// `torch.rand_like` values (hit iff `rand < ε`).
        rand: &'a [f32],
        /// `torch.randint_like(x, 0, 2)` values in {0, 1}.
        randint: &'a [f32],
    },
}

/// The deterministic part of the reference noise: add the noise given by `draws` to the
/// unit-scale images `u` (`n` images of `per_image` elements, flat), then clamp every image to
/// its own pre-noise `[min, max]`. See the module docs for the exact float32 operation order.
pub fn noisy_inputs(
    u: &[f32],
    per_image: usize,
    eps: f64,
    draws: NoiseDraws<'_>,
) -> Result<Vec<f32>> {
    if per_image == 0 || !u.len().is_multiple_of(per_image) {
        return Err(AttackError::Shape(format!(
            "{} values are not a whole number of images of {per_image} elements",
            u.len()
        )));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(invalid(format!(
            "epsilon must be finite and >= 0, got {eps}"
        )));
    }
    let len_ok = |s: &[f32]| s.len() == u.len();
    let e = eps as f32;
    let mut out: Vec<f32> = match draws {
        NoiseDraws::Gaussian { randn } if len_ok(randn) => {
            u.iter().zip(randn).map(|(&x, &z)| x + z * e).collect()
        }
        NoiseDraws::Uniform { rand } if len_ok(rand) => u
            .iter()
            .zip(rand)
            .map(|(&x, &r)| x + ((r - 0.5) * 2.0) * e)
            .collect(),
        NoiseDraws::SaltPepper { rand, randint } if len_ok(rand) && len_ok(randint) => u
            .iter()
            .zip(rand.iter().zip(randint))
            .map(|(&x, (&r, &s))| {
                let hit = if r < e { 1.0f32 } else { 0.0 };
                x + hit * (2.0 * s - 1.0)
            })
            .collect(),
        _ => {
            return Err(AttackError::Shape(
                "noise draws must have one value per image element".into(),
            ))
        }
    };
    for (img, noisy) in u
        .chunks_exact(per_image)
        .zip(out.chunks_exact_mut(per_image))
    {
        let (m, mx) = img
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        for v in noisy.iter_mut() {
            *v = v.max(m).min(mx);
        }
    }
    Ok(out)
}

/// Gaussian-noise data augmentation, the simplest defense the regularizer is compared with:
/// each training image is replaced by exactly what the Gaussian noise attack at `σ` feeds the
/// model ([`noisy_inputs`]: `u + σ·z` in unit space, clamped to the image's own range), so the
/// defense is trained on the perturbation it is evaluated against.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::GaussianAugmentation;
///
/// let images = Tensor::rand(0f32, 1f32, (2, 1, 4, 4), &Device::Cpu)?;
/// let noisy = GaussianAugmentation::new(0.1)?.apply(&images, (0.0, 1.0), 7)?;
/// assert_eq!(noisy.dims(), images.dims());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianAugmentation {
    /// Standard deviation in unit scale (fractions of the input box).
    pub sigma: f64,
}

impl GaussianAugmentation {
    /// Augmentation with noise of standard deviation `sigma` (unit scale, finite, ≥ 0).
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(invalid(format!(
                "noise standard deviation must be finite and >= 0, got {sigma}"
            )));
        }
        Ok(Self { sigma })
    }

    /// Noisy copies of `images` (`[N, C, H, W]`, model scale, box `bounds`); image `i` draws
    /// from stream `i` of `seed`, so give every training batch its own seed.
    pub fn apply(&self, images: &Tensor, bounds: (f32, f32), seed: u64) -> Result<Tensor> {
        let (n, c, h, w) = check_images(images)?;
        let (lo, hi) = bounds;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(invalid(format!(
                "input bounds must be finite with lo < hi, got ({lo}, {hi})"
            )));
        }
        let d = c * h * w;
        let unit = crate::classifier::to_unit(images, lo, hi)?;
        let seed = derive_seed(seed, 0xA06);
        let (mut z, mut unused) = (Vec::new(), Vec::new());
        let mut out = Vec::with_capacity(n * d);
        for i in 0..n {
            let mut rng = image_stream(seed, i as u64);
            draw_image_noise(NoiseKind::Gaussian, &mut rng, d, &mut z, &mut unused);
            let noisy = noisy_inputs(
                unit.row(i),
                d,
                self.sigma,
                NoiseDraws::Gaussian { randn: &z },
            )?;
            out.extend(noisy.into_iter().map(|v| v * (hi - lo) + lo));
        }
        Ok(Tensor::from_vec(out, (n, c, h, w), images.device())?.to_dtype(images.dtype())?)
    }
}

/// Draw the noise for one image from its RNG stream, in the element order of the image.
fn draw_image_noise(
    kind: NoiseKind,
    rng: &mut impl Rng,
    d: usize,
    a: &mut Vec<f32>,
    b: &mut Vec<f32>,
) {
    a.clear();
    b.clear();
    match kind {
        NoiseKind::Gaussian => a.extend((0..d).map(|_| rng.sample::<f32, _>(StandardNormal))),
        NoiseKind::Uniform => a.extend((0..d).map(|_| rng.random::<f32>())),
        NoiseKind::SaltPepper => {
            for _ in 0..d {
                a.push(rng.random::<f32>());
                b.push(if rng.random::<bool>() { 1.0 } else { 0.0 });
            }
        }
    }
}

/// Accuracy curve of an accuracy-type attack over an ε grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccuracyCurve {
    /// Attack name (e.g. `"Gaussian"`, `"TransferredFGSM"`).
    pub attack: String,
    /// ε grid (unit scale).
    pub epsilons: Vec<f64>,
    /// Accuracy in [0, 1] at each ε, over all images, against the ground truth.
    pub accuracy: Vec<f64>,
    /// Number of images evaluated.
    pub n_images: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

/// A random-noise attack over an ε grid (spec §1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseAttack {
    /// Noise distribution.
    pub kind: NoiseKind,
    /// ε grid in unit scale (each in `[0, ∞)`; SaltPepper probabilities in `[0, 1]`).
    pub epsilons: Vec<f64>,
    /// Maximum images per forward pass.
    pub max_batch: usize,
}

impl NoiseAttack {
    /// An attack with an explicit grid.
    pub fn new(kind: NoiseKind, epsilons: Vec<f64>) -> Self {
        Self {
            kind,
            epsilons,
            max_batch: crate::classifier::DEFAULT_MAX_BATCH,
        }
    }

    fn validate(&self) -> Result<()> {
        for &e in &self.epsilons {
            if !(e.is_finite() && e >= 0.0) || (self.kind == NoiseKind::SaltPepper && e > 1.0) {
                return Err(invalid(format!(
                    "epsilon {e} out of range for {:?}",
                    self.kind
                )));
            }
        }
        Ok(())
    }

    /// Accuracy of `model` on noisy versions of `images` (`[N, C, H, W]`, model scale) against
    /// the ground-truth `labels`, for every ε. Unit scale uses `model.input_bounds()`, which
    /// should be the global extrema of the preprocessed test set. Image `i` under ε index `k`
    /// draws its noise from its own stream, so the result depends only on `seed`.
    pub fn run<C: Classifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<AccuracyCurve> {
        self.validate()?;
        let start = std::time::Instant::now();
        let (n, c, h, w) = check_images(images)?;
        check_labels_len(labels, n)?;
        if n == 0 {
            return Err(AttackError::EmptyBatch);
        }
        let (lo, hi) = checked_bounds(model)?;
        let d = c * h * w;
        let chunk = self.max_batch.max(1);
        let mut correct = vec![0usize; self.epsilons.len()];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let x = images.narrow(0, s, len)?;
            let unit = crate::classifier::to_unit(&x, lo, hi)?;
            for (k, &eps) in self.epsilons.iter().enumerate() {
                let kseed = derive_seed(seed, ((self.kind as u64) << 32) | k as u64);
                let mut noisy = Vec::with_capacity(len * d);
                for i in 0..len {
                    let mut rng = image_stream(kseed, (s + i) as u64);
                    draw_image_noise(self.kind, &mut rng, d, &mut a, &mut b);
                    let draws = match self.kind {
                        NoiseKind::Gaussian => NoiseDraws::Gaussian { randn: &a },
                        NoiseKind::Uniform => NoiseDraws::Uniform { rand: &a },
                        NoiseKind::SaltPepper => NoiseDraws::SaltPepper {
                            rand: &a,
                            randint: &b,
                        },
                    };
                    noisy.extend(noisy_inputs(unit.row(i), d, eps, draws)?);
                }
                let scale = hi - lo;
                for v in noisy.iter_mut() {
                    *v = *v * scale + lo;
                }
                let xt = Tensor::from_vec(noisy, (len, c, h, w), images.device())?
                    .to_dtype(DType::F32)?;
                let pred = predict_batched(model, &xt, chunk)?;
                correct[k] += pred
                    .iter()
                    .zip(&labels[s..s + len])
                    .filter(|(p, y)| p == y)
                    .count();
            }
            s += len;
        }
        Ok(AccuracyCurve {
            attack: format!("{:?}", self.kind),
            epsilons: self.epsilons.clone(),
            accuracy: correct.iter().map(|&k| k as f64 / n as f64).collect(),
            n_images: n,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
}
