//! White-box gradient attacks: (transferred) FGSM with the reference protocol (spec §1.4) and
//! PGD in L∞ / L2 with random start.

use crate::classifier::{
    check_images, check_labels_len, checked_bounds, predict_batched, Classifier,
    DifferentiableClassifier, DEFAULT_MAX_BATCH,
};
use crate::error::{invalid, AttackError, Result};
use crate::noise::AccuracyCurve;
use crate::rng::{derive_seed, image_stream};
use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Which extrema `(a, b)` scale ε and bound the FGSM image (spec §1.4, bug B6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtremaScope {
    /// Reference: min/max over consecutive groups of this many images (the test loader's
    /// batches of 64, in dataset order).
    Batch(usize),
    /// Each image's own min/max.
    PerImage,
    /// The model's `input_bounds()` (global test-set extrema).
    Global,
}

/// FGSM, white-box or transferred from a surrogate (spec §1.4):
/// `x_adv = clamp(x + ε·(b − a)·sign ∇ₓ CE(f_sur(x), y), a, b)` with the sign taken per image
/// (the reference's RGB broadcasting bug B12 is fixed; identical for grayscale). The unused
/// `rescale` sign bug of the reference's standalone FGSM class (B8) is not reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fgsm {
    /// ε grid in unit scale (fractions of the extrema range).
    pub epsilons: Vec<f64>,
    /// Extrema convention; the reference uses `Batch(64)`.
    pub extrema: ExtremaScope,
    /// Maximum images per forward/backward pass (must be a multiple of the extrema batch for
    /// `Batch`; it is rounded down to one internally).
    pub max_batch: usize,
}

impl Fgsm {
    /// FGSM with an explicit grid and the reference's batch-of-64 extrema.
    pub fn new(epsilons: Vec<f64>) -> Self {
        Self {
            epsilons,
            extrema: ExtremaScope::Batch(64),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// White-box FGSM: the attacked model is its own surrogate.
    pub fn run_white_box<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
    ) -> Result<AccuracyCurve> {
        let mut r = self.run_transferred(model, model, images, labels)?;
        r.attack = "FGSM".into();
        Ok(r)
    }

    /// Transferred FGSM: gradients of `surrogate` (an unregularized model of the same task),
    /// accuracy of `target` against the ground truth, over all images, for every ε.
    pub fn run_transferred<S, T>(
        &self,
        surrogate: &S,
        target: &T,
        images: &Tensor,
        labels: &[u32],
    ) -> Result<AccuracyCurve>
    where
        S: DifferentiableClassifier + ?Sized,
        T: Classifier + ?Sized,
    {
        let start = std::time::Instant::now();
        for &e in &self.epsilons {
            if !(e.is_finite() && e >= 0.0) {
                return Err(invalid(format!("FGSM epsilon {e} must be finite and >= 0")));
            }
        }
        let (n, c, h, w) = check_images(images)?;
        check_labels_len(labels, n)?;
        if n == 0 {
            return Err(AttackError::EmptyBatch);
        }
        let d = c * h * w;
        let chunk = match self.extrema {
            ExtremaScope::Batch(0) => return Err(invalid("extrema batch size must be positive")),
            ExtremaScope::Batch(g) => (self.max_batch.max(g) / g) * g,
            _ => self.max_batch.max(1),
        };
        let global = match self.extrema {
            ExtremaScope::Global => Some(checked_bounds(target)?),
            _ => None,
        };
        let mut correct = vec![0usize; self.epsilons.len()];
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let x = images.narrow(0, s, len)?.to_dtype(DType::F32)?;
            let y = &labels[s..s + len];
            let xv = x.flatten_all()?.to_vec1::<f32>()?;
            let need_grad = self.epsilons.iter().any(|&e| e > 0.0);
            let gv = if need_grad {
                let g = surrogate.loss_gradient(&x, y)?;
                if g.dims() != x.dims() {
                    return Err(AttackError::Shape(format!(
                        "loss gradient has shape {:?}, images {:?}",
                        g.dims(),
                        x.dims()
                    )));
                }
                g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
            } else {
                vec![0.0; xv.len()]
            };
            // per-image (a, b)
            let mut ext: Vec<(f32, f32)> = xv
                .chunks_exact(d)
                .map(|im| {
                    im.iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                            (a.min(v), b.max(v))
                        })
                })
                .collect();
            match self.extrema {
                ExtremaScope::Global => {
                    let g = global.unwrap_or((0.0, 1.0));
                    ext.iter_mut().for_each(|e| *e = g);
                }
                ExtremaScope::PerImage => {}
                ExtremaScope::Batch(g) => {
                    for group in ext.chunks_mut(g) {
                        let ab = group
                            .iter()
                            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), e| {
                                (a.min(e.0), b.max(e.1))
                            });
                        group.iter_mut().for_each(|e| *e = ab);
                    }
                }
            }
            for (k, &eps) in self.epsilons.iter().enumerate() {
                let e = eps as f32;
                let mut adv = Vec::with_capacity(xv.len());
                for (i, (im, gi)) in xv.chunks_exact(d).zip(gv.chunks_exact(d)).enumerate() {
                    let (a, b) = ext[i];
                    let step = e * (b - a);
                    adv.extend(im.iter().zip(gi).map(|(&v, &g)| {
                        let moved = if eps > 0.0 { v + step * sign(g) } else { v };
                        moved.max(a).min(b)
                    }));
                }
                let xt = Tensor::from_vec(adv, (len, c, h, w), images.device())?;
                let pred = predict_batched(target, &xt, chunk)?;
                correct[k] += pred.iter().zip(y).filter(|(p, t)| p == t).count();
            }
            s += len;
        }
        Ok(AccuracyCurve {
            attack: "TransferredFGSM".into(),
            epsilons: self.epsilons.clone(),
            accuracy: correct.iter().map(|&k| k as f64 / n as f64).collect(),
            n_images: n,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// torch.sign semantics (0 maps to 0).
fn sign(g: f32) -> f32 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Norm of the PGD threat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgdNorm {
    /// L∞ ball, signed-gradient steps.
    Linf,
    /// L2 ball, normalised-gradient steps.
    L2,
}

/// Projected gradient descent (Madry et al.) in **unit space** `[0, 1]^D` with a random start,
/// foolbox-style defaults: L∞ `rel_stepsize = 0.01/0.3`, 40 steps; L2 `rel_stepsize = 0.025`,
/// 50 steps. Step size = `rel_stepsize · ε`. Success is judged on the final iterate
/// (`pred ≠ label`), as in foolbox; images misclassified from the start count as successes.
///
/// # Examples
///
/// L∞ PGD with ε = 0.1 (foolbox defaults otherwise) against a classifier that thresholds
/// the mean pixel at 0.5, with input gradients from candle autograd through [`FnClassifier`].
/// An L∞ perturbation of size ε moves the mean pixel by at most ε. So the image with mean 0.46
/// can be pushed across the threshold, while the one with mean 0.15 cannot, and the robust
/// accuracy is 1/2. Every perturbation stays within ε.
///
/// [`FnClassifier`]: crate::FnClassifier
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::{FnClassifier, Pgd};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dev = Device::Cpu;
/// // Class 1 iff the mean pixel exceeds 0.5 (logits ∓(mean − 0.5)).
/// let model = FnClassifier::new(
///     |x: &Tensor| {
///         let z = (x.flatten_from(1)?.mean_keepdim(1)? - 0.5)?;
///         Tensor::cat(&[&z.neg()?, &z], 1)
///     },
///     (0.0, 1.0),
/// );
/// // Two class-0 images of 1×4×4 with mean pixels 0.46 and 0.15.
/// let pixels: Vec<f32> = [0.31f32, 0.0]
///     .iter()
///     .flat_map(|&o| (0..16).map(move |j| o + 0.1 * (j % 4) as f32))
///     .collect();
/// let images = Tensor::from_vec(pixels, (2, 1, 4, 4), &dev)?;
/// let labels = [0u32, 0];
///
/// let eps = 0.1;
/// let out = Pgd::linf(eps).run(&model, &images, &labels, 0)?;
/// assert_eq!(out.report.success, [true, false]);
/// assert_eq!(out.report.robust_accuracy, 0.5);
/// assert!(out.report.perturbation_norm.iter().all(|&p| p <= eps + 1e-6));
/// // The same bound on the returned images (model scale equals unit scale for the box [0, 1]).
/// let linf = (&out.adversarials - &images)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(f64::from(linf) <= eps + 1e-6);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pgd {
    /// Threat model.
    pub norm: PgdNorm,
    /// Radius in unit scale.
    pub epsilon: f64,
    /// Step size relative to ε.
    pub rel_stepsize: f64,
    /// Number of gradient steps.
    pub steps: usize,
    /// Start from a uniform random point of the ball.
    pub random_start: bool,
    /// Maximum images per forward/backward pass.
    pub max_batch: usize,
}

/// Result of a PGD run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PgdReport {
    /// Threat model.
    pub norm: PgdNorm,
    /// Radius in unit scale.
    pub epsilon: f64,
    /// Fraction of images still classified as their label after the attack.
    pub robust_accuracy: f64,
    /// Per image: the final iterate is misclassified.
    pub success: Vec<bool>,
    /// Per image: norm (of the attack's type) of the final perturbation in unit scale.
    pub perturbation_norm: Vec<f64>,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

/// PGD report plus the adversarial images (model scale, same shape as the input).
#[derive(Debug, Clone)]
pub struct PgdOutcome {
    /// Serialisable summary.
    pub report: PgdReport,
    /// Final iterates at model scale.
    pub adversarials: Tensor,
}

impl Pgd {
    /// L∞ PGD with foolbox defaults (`rel_stepsize = 0.01/0.3`, 40 steps, random start).
    pub fn linf(epsilon: f64) -> Self {
        Self {
            norm: PgdNorm::Linf,
            epsilon,
            rel_stepsize: 0.01 / 0.3,
            steps: 40,
            random_start: true,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// L2 PGD with foolbox defaults (`rel_stepsize = 0.025`, 50 steps, random start).
    pub fn l2(epsilon: f64) -> Self {
        Self {
            norm: PgdNorm::L2,
            epsilon,
            rel_stepsize: 0.025,
            steps: 50,
            random_start: true,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// FGSM as a one-step PGD: a single L∞ step of length ε from the clean image, clipped to
    /// the unit box. This is the FGSM of adversarial training (Goodfellow et al.), in the
    /// global input box rather than the reference evaluation's per-batch extrema ([`Fgsm`]).
    pub fn fgsm(epsilon: f64) -> Self {
        Self {
            norm: PgdNorm::Linf,
            epsilon,
            rel_stepsize: 1.0,
            steps: 1,
            random_start: false,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// Attack `images` (`[N, C, H, W]`, model scale) with `labels` (usually the ground truth).
    /// Image `i` uses its own random stream for the random start.
    pub fn run<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<PgdOutcome> {
        let start = std::time::Instant::now();
        let ([n, c, h, w], (lo, hi)) = self.check(model, images, labels)?;
        let d = c * h * w;
        let chunk = self.max_batch.max(1);
        let mut success = Vec::with_capacity(n);
        let mut pnorm = Vec::with_capacity(n);
        let mut advs = Vec::with_capacity(n * d);
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let y = &labels[s..s + len];
            let (u0, u) = self.iterate(model, &images.narrow(0, s, len)?, y, s, seed, (lo, hi))?;
            let xm: Vec<f32> = u.iter().map(|&v| lo + (hi - lo) * v).collect();
            let xt = Tensor::from_vec(xm.clone(), (len, c, h, w), images.device())?;
            let pred = predict_batched(model, &xt, chunk)?;
            for (i, (p, t)) in pred.iter().zip(y).enumerate() {
                success.push(p != t);
                let diff: Vec<f32> = u[i * d..(i + 1) * d]
                    .iter()
                    .zip(u0.row(i))
                    .map(|(a, b)| a - b)
                    .collect();
                pnorm.push(match self.norm {
                    PgdNorm::Linf => diff.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64)),
                    PgdNorm::L2 => crate::classifier::norm(&diff),
                });
            }
            advs.extend(xm);
            s += len;
        }
        let robust = success.iter().filter(|&&s| !s).count() as f64 / n as f64;
        Ok(PgdOutcome {
            report: PgdReport {
                norm: self.norm,
                epsilon: self.epsilon,
                robust_accuracy: robust,
                success,
                perturbation_norm: pnorm,
                wall_seconds: start.elapsed().as_secs_f64(),
            },
            adversarials: Tensor::from_vec(advs, (n, c, h, w), images.device())?,
        })
    }

    /// Only the adversarial images (model scale, same shape as `images`), without the final
    /// prediction pass and report of [`Pgd::run`]: what adversarial training needs per batch.
    /// The random start of image `i` comes from stream `i` of `seed`, as in [`Pgd::run`]:
    /// give every training batch its own seed.
    pub fn perturb<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<Tensor> {
        let ([n, c, h, w], (lo, hi)) = self.check(model, images, labels)?;
        let chunk = self.max_batch.max(1);
        let mut advs = Vec::with_capacity(n * c * h * w);
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let y = &labels[s..s + len];
            let (_, u) = self.iterate(model, &images.narrow(0, s, len)?, y, s, seed, (lo, hi))?;
            advs.extend(u.iter().map(|&v| lo + (hi - lo) * v));
            s += len;
        }
        Ok(Tensor::from_vec(advs, (n, c, h, w), images.device())?)
    }

    /// Validates the settings and inputs; returns `[N, C, H, W]` and the model's box.
    fn check<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
    ) -> Result<([usize; 4], (f32, f32))> {
        if !(self.epsilon.is_finite() && self.epsilon >= 0.0) {
            return Err(invalid(format!(
                "PGD epsilon {} must be finite and >= 0",
                self.epsilon
            )));
        }
        if !(self.rel_stepsize.is_finite() && self.rel_stepsize > 0.0) {
            return Err(invalid("PGD rel_stepsize must be positive"));
        }
        let (n, c, h, w) = check_images(images)?;
        check_labels_len(labels, n)?;
        if n == 0 {
            return Err(AttackError::EmptyBatch);
        }
        Ok(([n, c, h, w], checked_bounds(model)?))
    }

    /// Random start and gradient steps for one chunk whose first image has index `first`;
    /// returns the clean images and the final iterates, both in unit space.
    fn iterate<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        chunk: &Tensor,
        y: &[u32],
        first: usize,
        seed: u64,
        (lo, hi): (f32, f32),
    ) -> Result<(crate::classifier::UnitImages, Vec<f32>)> {
        let (len, c, h, w) = check_images(chunk)?;
        let d = c * h * w;
        let scale = hi - lo;
        let eps = self.epsilon as f32;
        let step = (self.rel_stepsize * self.epsilon) as f32;
        let seed = derive_seed(seed, 0x9D6);
        let u0 = crate::classifier::to_unit(chunk, lo, hi)?;
        let mut u = u0.data.clone();
        if self.random_start {
            for (i, row) in u.chunks_exact_mut(d).enumerate() {
                let mut rng = image_stream(seed, (first + i) as u64);
                let delta = random_ball(self.norm, eps, d, &mut rng);
                for (v, dv) in row.iter_mut().zip(delta) {
                    *v = (*v + dv).clamp(0.0, 1.0);
                }
            }
        }
        for _ in 0..self.steps {
            let xm: Vec<f32> = u.iter().map(|&v| lo + scale * v).collect();
            let xt = Tensor::from_vec(xm, (len, c, h, w), chunk.device())?;
            let g = model.loss_gradient(&xt, y)?;
            if g.dims() != xt.dims() {
                return Err(AttackError::Shape(format!(
                    "loss gradient has shape {:?}, images {:?}",
                    g.dims(),
                    xt.dims()
                )));
            }
            let gv = g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            for ((row, g), x0) in u
                .chunks_exact_mut(d)
                .zip(gv.chunks_exact(d))
                .zip(u0.data.chunks_exact(d))
            {
                // d(loss)/du = (hi - lo) * d(loss)/dx: a positive factor, irrelevant to
                // sign and to normalised directions.
                match self.norm {
                    PgdNorm::Linf => {
                        for (v, &gi) in row.iter_mut().zip(g) {
                            *v += step * sign(gi);
                        }
                    }
                    PgdNorm::L2 => {
                        let gn = crate::classifier::norm(g) as f32 + 1e-12;
                        for (v, &gi) in row.iter_mut().zip(g) {
                            *v += step * gi / gn;
                        }
                    }
                }
                project(self.norm, row, x0, eps);
            }
        }
        Ok((u0, u))
    }

    /// Robust accuracy for each ε of a grid (same settings otherwise).
    pub fn run_grid<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        epsilons: &[f64],
        seed: u64,
    ) -> Result<AccuracyCurve> {
        self.run_grid_observed(model, images, labels, epsilons, seed, &mut |_, _| Ok(()))
    }

    /// [`Pgd::run_grid`], calling `on_epsilon(ε, robust accuracy)` after each ε (a grid on
    /// 10 000 images takes minutes: progress for a log or a bar); an error it returns stops
    /// the run.
    pub fn run_grid_observed<C: DifferentiableClassifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        epsilons: &[f64],
        seed: u64,
        on_epsilon: &mut dyn FnMut(f64, f64) -> Result<()>,
    ) -> Result<AccuracyCurve> {
        let start = std::time::Instant::now();
        let mut acc = Vec::with_capacity(epsilons.len());
        for &e in epsilons {
            let p = Pgd {
                epsilon: e,
                ..self.clone()
            };
            let robust = p.run(model, images, labels, seed)?.report.robust_accuracy;
            on_epsilon(e, robust)?;
            acc.push(robust);
        }
        Ok(AccuracyCurve {
            attack: format!("PGD-{:?}", self.norm),
            epsilons: epsilons.to_vec(),
            accuracy: acc,
            n_images: labels.len(),
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// A uniform random point of the ε-ball (L∞: uniform cube; L2: uniform in the ball).
fn random_ball(norm: PgdNorm, eps: f32, d: usize, rng: &mut impl Rng) -> Vec<f32> {
    match norm {
        PgdNorm::Linf => (0..d)
            .map(|_| eps * (2.0 * rng.random::<f32>() - 1.0))
            .collect(),
        PgdNorm::L2 => {
            let z: Vec<f32> = (0..d)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect();
            let zn = crate::classifier::norm(&z).max(1e-12);
            let r = eps as f64 * rng.random::<f64>().powf(1.0 / d as f64);
            z.iter().map(|&v| (v as f64 * r / zn) as f32).collect()
        }
    }
}

/// Project `row` onto the ε-ball around `x0`, then clip to `[0, 1]`.
fn project(norm: PgdNorm, row: &mut [f32], x0: &[f32], eps: f32) {
    match norm {
        PgdNorm::Linf => {
            for (v, &o) in row.iter_mut().zip(x0) {
                *v = v.clamp(o - eps, o + eps);
            }
        }
        PgdNorm::L2 => {
            let dn = crate::classifier::l2_dist(row, x0);
            if dn > eps as f64 {
                let f = (eps as f64 / dn) as f32;
                for (v, &o) in row.iter_mut().zip(x0) {
                    *v = o + (*v - o) * f;
                }
            }
        }
    }
    for v in row.iter_mut() {
        *v = v.clamp(0.0, 1.0);
    }
}
