//! The paper's Boundary-Attack evaluation protocol (spec §1.5) and a generic decision-based
//! protocol shared with HopSkipJump.
//!
//! N test images (random without replacement from a seed, or explicit indices such as the
//! official seed-0 draw), labels = the model's own clean predictions (bug B2, copied), R
//! repeats differing only in the attack's randomness, per image the mean squared per-element
//! difference in unit scale, per repeat the numpy median over the **successful** images, and
//! the mean of the per-repeat medians. Failed images are counted and reported per repeat
//! (the reference silently drops them, B4); a repeat where every image fails has median NaN
//! (the reference crashes, B5).

use crate::boundary::BoundaryAttack;
use crate::classifier::{check_images, checked_bounds, median, predict_batched, Classifier};
use crate::error::{invalid, AttackError, Result};
use crate::paper::Task;
use crate::rng::derive_seed;
use candle_core::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which channels enter the per-image distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DistanceChannels {
    /// All channels (the fix; identical to the reference for grayscale).
    #[default]
    All,
    /// Channel 0 only, normalised by `H·W` (reproduces the reference's bug B3).
    FirstOnly,
}

/// Mean squared per-element difference `‖adv − x0‖² / n` of two unit-space images of shape
/// `dims = (C, H, W)`, over all channels or channel 0 only.
pub fn mse_distance(
    x0: &[f32],
    adv: &[f32],
    dims: (usize, usize, usize),
    channels: DistanceChannels,
) -> f64 {
    let (_, h, w) = dims;
    let n = match channels {
        DistanceChannels::All => x0.len().min(adv.len()),
        DistanceChannels::FirstOnly => (h * w).min(x0.len()).min(adv.len()),
    };
    if n == 0 {
        return f64::NAN;
    }
    let s: f64 = x0[..n]
        .iter()
        .zip(&adv[..n])
        .map(|(&a, &b)| {
            let d = (b - a) as f64;
            d * d
        })
        .sum();
    s / n as f64
}

/// A decision-based attack: it sees only the model's top-1 decisions and attacks each image
/// with its own random stream, so [`DecisionProtocol`] runs any of them the same way
/// ([`BoundaryAttack`], [`crate::HopSkipJump`]).
pub trait DecisionBasedAttack {
    /// What the attack reports per image.
    type Outcome: DecisionOutcome;

    /// Images per model call.
    fn max_batch(&self) -> usize;

    /// Attacks `images` (`[N, C, H, W]`, model scale, inside `model.input_bounds()`) whose
    /// labels are `labels` (the paper uses the model's own clean predictions); image `i` uses
    /// random stream `ids[i]` of `seed` (e.g. its dataset index), so that results do not
    /// depend on how a caller splits the images into batches.
    fn run_with_ids<C: Classifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        ids: &[u64],
        seed: u64,
    ) -> Result<Vec<Self::Outcome>>;

    /// [`Self::run_with_ids`] with image `i` on stream `i`.
    fn run<C: Classifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<Vec<Self::Outcome>> {
        let ids: Vec<u64> = (0..labels.len() as u64).collect();
        self.run_with_ids(model, images, labels, &ids, seed)
    }
}

/// What [`DecisionProtocol`] reads of a decision-based attack's per-image outcome.
pub trait DecisionOutcome {
    /// The final point is adversarial (a failed image is reported, never dropped).
    fn success(&self) -> bool;
    /// The final point, unit space.
    fn adversarial(&self) -> &[f32];
    /// Model queries spent on the image (initialisation included).
    fn queries(&self) -> usize;
}

/// [`DecisionBasedAttack`] for an attack whose `attack_streams` does the work, and
/// [`DecisionOutcome`] for its outcome's `success`, `adversarial` and `queries` fields.
macro_rules! decision_based {
    ($attack:ty, $outcome:ty) => {
        impl DecisionBasedAttack for $attack {
            type Outcome = $outcome;

            fn max_batch(&self) -> usize {
                self.max_batch
            }

            fn run_with_ids<C: Classifier + ?Sized>(
                &self,
                model: &C,
                images: &Tensor,
                labels: &[u32],
                ids: &[u64],
                seed: u64,
            ) -> Result<Vec<$outcome>> {
                self.attack_streams(model, images, labels, ids, seed)
            }
        }

        impl DecisionOutcome for $outcome {
            fn success(&self) -> bool {
                self.success
            }

            fn adversarial(&self) -> &[f32] {
                &self.adversarial
            }

            fn queries(&self) -> usize {
                self.queries
            }
        }
    };
}

decision_based!(BoundaryAttack, crate::boundary::BoundaryOutcome);
decision_based!(crate::hsj::HopSkipJump, crate::hsj::HsjOutcome);

/// Configuration of a median-distance evaluation.
///
/// # Examples
///
/// A miniature of the paper protocol: 4 of 6 test images drawn from the seed, 2 repeats of
/// a 20-step Boundary Attack. No labels are passed because the protocol attacks the model's
/// own clean predictions. All six images are away from the decision boundary, so every attack
/// succeeds and every per-repeat median MSE is finite and positive.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::{BoundaryAttack, DecisionProtocol, FnClassifier};
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
/// // Six 1×4×4 test images with mean pixels 0.2, 0.3, 0.4, 0.6, 0.7, 0.8.
/// let pixels: Vec<f32> = [0.05f32, 0.15, 0.25, 0.45, 0.55, 0.65]
///     .iter()
///     .flat_map(|&o| (0..16).map(move |j| o + 0.1 * (j % 4) as f32))
///     .collect();
/// let test_images = Tensor::from_vec(pixels, (6, 1, 4, 4), &dev)?;
///
/// let protocol = DecisionProtocol {
///     attack: BoundaryAttack {
///         steps: 20,
///         ..BoundaryAttack::paper()
///     },
///     n_images: 4,
///     repeats: 2,
///     ..DecisionProtocol::paper(0)
/// };
/// let report = protocol.run(&model, &test_images)?;
/// assert_eq!(report.indices.len(), 4);
/// // Images 3, 4 and 5 are the bright ones (class 1).
/// for (&i, &y) in report.indices.iter().zip(&report.labels) {
///     assert_eq!(y, u32::from(i >= 3));
/// }
/// assert_eq!(report.medians.len(), 2);
/// assert_eq!(report.success_rate, 1.0);
/// assert!(report.medians.iter().all(|m| m.is_finite() && *m > 0.0));
/// assert!(report.mean_of_medians.is_finite() && report.mean_of_medians > 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionProtocol<A = BoundaryAttack> {
    /// The attack ([`BoundaryAttack`] by default; any [`DecisionBasedAttack`]).
    pub attack: A,
    /// Number of random test images (ignored when `indices` is given).
    pub n_images: usize,
    /// Number of repeats.
    pub repeats: usize,
    /// Seed for the image draw and the attack streams.
    pub seed: u64,
    /// Explicit test-set indices (e.g. [`official_boundary_indices`]).
    pub indices: Option<Vec<usize>>,
    /// Distance channels.
    pub channels: DistanceChannels,
}

impl<A> DecisionProtocol<A> {
    /// The same protocol (images, repeats, seed, distances) with another attack.
    pub fn with_attack<B>(self, attack: B) -> DecisionProtocol<B> {
        DecisionProtocol {
            attack,
            n_images: self.n_images,
            repeats: self.repeats,
            seed: self.seed,
            indices: self.indices,
            channels: self.channels,
        }
    }

    /// Indices of the images to attack in a test set of `n_test` images.
    pub fn select_indices(&self, n_test: usize) -> Result<Vec<usize>> {
        match &self.indices {
            Some(ix) => {
                if let Some(&bad) = ix.iter().find(|&&i| i >= n_test) {
                    return Err(invalid(format!(
                        "index {bad} outside the test set of {n_test}"
                    )));
                }
                Ok(ix.clone())
            }
            None => {
                if self.n_images > n_test {
                    return Err(invalid(format!(
                        "cannot draw {} images from {n_test}",
                        self.n_images
                    )));
                }
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, 0x1DC5));
                Ok(rand::seq::index::sample(&mut rng, n_test, self.n_images).into_vec())
            }
        }
    }
}

impl<A: DecisionBasedAttack + Clone> DecisionProtocol<A> {
    /// Run the protocol on the whole (preprocessed, model-scale) test set `test_images`
    /// `[N, C, H, W]`; unit scale uses `model.input_bounds()` (global test-set extrema).
    pub fn run<C: Classifier + ?Sized>(
        &self,
        model: &C,
        test_images: &Tensor,
    ) -> Result<DecisionReport<A>> {
        self.run_observed(model, test_images, &mut |_| Ok(()))
    }

    /// [`DecisionProtocol::run`], calling `on_repeat` after each repeat (a repeat of the
    /// paper's protocol attacks 1000 images for minutes: progress for a log or a bar); an
    /// error it returns stops the run.
    pub fn run_observed<C: Classifier + ?Sized>(
        &self,
        model: &C,
        test_images: &Tensor,
        on_repeat: &mut dyn FnMut(&RepeatReport) -> Result<()>,
    ) -> Result<DecisionReport<A>> {
        let start = std::time::Instant::now();
        let (n_test, c, h, w) = check_images(test_images)?;
        checked_bounds(model)?;
        if self.repeats == 0 {
            return Err(invalid("repeats must be >= 1"));
        }
        let idx = self.select_indices(n_test)?;
        if idx.is_empty() {
            return Err(AttackError::EmptyBatch);
        }
        let ix_t = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
            idx.len(),
            test_images.device(),
        )?;
        let images = test_images.index_select(&ix_t, 0)?;
        let labels = predict_batched(model, &images, self.attack.max_batch())?;
        let (lo, hi) = checked_bounds(model)?;
        let x0 = crate::classifier::to_unit(&images, lo, hi)?;
        let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
        let mut repeats = Vec::with_capacity(self.repeats);
        for r in 0..self.repeats {
            let t0 = std::time::Instant::now();
            let seed = derive_seed(self.seed, 0xA77A_0000 + r as u64);
            let outcomes = self
                .attack
                .run_with_ids(model, &images, &labels, &ids, seed)?;
            let distances: Vec<Option<f64>> = outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    o.success()
                        .then(|| mse_distance(x0.row(i), o.adversarial(), (c, h, w), self.channels))
                })
                .collect();
            let queries: Vec<usize> = outcomes.iter().map(DecisionOutcome::queries).collect();
            let ok: Vec<f64> = distances.iter().flatten().copied().collect();
            let n = distances.len();
            repeats.push(RepeatReport {
                median: median(&ok),
                successes: ok.len(),
                failures: n - ok.len(),
                mean_queries: queries.iter().sum::<usize>() as f64 / n as f64,
                distances,
                wall_seconds: t0.elapsed().as_secs_f64(),
            });
            if let Some(done) = repeats.last() {
                on_repeat(done)?;
            }
        }
        let medians: Vec<f64> = repeats.iter().map(|r| r.median).collect();
        let mean = medians.iter().sum::<f64>() / medians.len() as f64;
        let total: usize = repeats.iter().map(|r| r.successes + r.failures).sum();
        let succ: usize = repeats.iter().map(|r| r.successes).sum();
        Ok(DecisionReport {
            attack: self.attack.clone(),
            channels: self.channels,
            indices: idx,
            labels,
            medians,
            mean_of_medians: mean,
            success_rate: succ as f64 / total as f64,
            repeats,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// One repeat of a decision-based protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatReport {
    /// Median over successful images of the per-image MSE (NaN, serialised as null, if none).
    #[serde(deserialize_with = "crate::nan_as_null::number")]
    pub median: f64,
    /// Successful images.
    pub successes: usize,
    /// Failed images (no adversarial initialisation found).
    pub failures: usize,
    /// Per image (in `indices` order): MSE in unit scale, `None` for a failure.
    pub distances: Vec<Option<f64>>,
    /// Mean model queries per image.
    pub mean_queries: f64,
    /// Wall-clock seconds of this repeat.
    pub wall_seconds: f64,
}

/// Result of a decision-based protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionReport<A = BoundaryAttack> {
    /// The attack and its configuration.
    pub attack: A,
    /// Distance channels used.
    pub channels: DistanceChannels,
    /// Test-set indices attacked, in order.
    pub indices: Vec<usize>,
    /// The labels attacked (the model's clean predictions).
    pub labels: Vec<u32>,
    /// Per-repeat medians.
    #[serde(deserialize_with = "crate::nan_as_null::numbers")]
    pub medians: Vec<f64>,
    /// Mean of the per-repeat medians (the paper's number).
    #[serde(deserialize_with = "crate::nan_as_null::number")]
    pub mean_of_medians: f64,
    /// Successful (image, repeat) pairs over all pairs.
    pub success_rate: f64,
    /// Per-repeat details.
    pub repeats: Vec<RepeatReport>,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

/// Read `<dataset>.boundary_attack_test_idxs_in_draw_order` from
/// `official_seed0_indices.json` (`../shared/specs/official_seed0_indices.json`): the 1000 test
/// images the official code attacks with seed 0 for `task`.
pub fn official_boundary_indices(path: impl AsRef<Path>, task: Task) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path)?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let key = match task {
        Task::Mnist => "MNIST",
        Task::FashionMnist => "FashionMNIST",
        Task::Cifar10 => "CIFAR10",
        Task::Cifar100 => "CIFAR100",
    };
    let arr = v
        .get(key)
        .and_then(|d| d.get("boundary_attack_test_idxs_in_draw_order"))
        .and_then(|a| a.as_array())
        .ok_or_else(|| {
            invalid(format!(
                "no `{key}.boundary_attack_test_idxs_in_draw_order` in the file"
            ))
        })?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .map(|u| u as usize)
                .ok_or_else(|| invalid(format!("non-integer index {x}")))
        })
        .collect()
}
