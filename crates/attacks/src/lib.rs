//! Robustness evaluation of "A Brain-Inspired Regularizer for Adversarial Robustness"
//! (Attias et al.), following `../shared/specs/attacks.md`: the official code's protocol and
//! foolbox 3.3.4's attacks, reimplemented on candle.
//!
//! Every attack is a plain configuration value (serde-serialisable) that is run on a
//! [`Classifier`] and a labelled batch `[N, C, H, W]` at model scale, is seeded, and is
//! deterministic for a seed: each image draws from its own random stream, so results do not
//! depend on how model queries are chunked (`max_batch`) — provided the model's output for an
//! image does not depend on the other images of its batch (true in eval mode up to the
//! backend's rounding; a blocked GEMM may round differently for different batch sizes, which
//! matters only for points within float rounding of the decision boundary).
//!
//! | attack | type | entry point |
//! |---|---|---|
//! | Gaussian / Uniform / Salt-and-Pepper noise (paper grids) | accuracy curve | [`NoiseAttack::run`] |
//! | FGSM, white-box or transferred from a surrogate | accuracy curve | [`Fgsm::run_white_box`], [`Fgsm::run_transferred`] |
//! | PGD L∞ / L2 with random start | robust accuracy | [`Pgd::run`], [`Pgd::run_grid`] |
//! | Boundary Attack (foolbox, 50 steps = paper, or converged) | per-image outcomes | [`BoundaryAttack::run`] |
//! | HopSkipJump (foolbox, L2, geometric progression) | per-image outcomes | [`HopSkipJump::run`] |
//! | paper protocol: 1000 images × 5 repeats, median MSE | report | [`DecisionProtocol::run`] |
//! | CIFAR-10-C style corruptions, severities 1–5 | accuracy table | [`CorruptionEval::run`] |
//!
//! The paper's settings (tasks, ε grids, every attack's `paper()` preset) are in [`paper`];
//! the decision-based attacks share [`DecisionBasedAttack`], which [`DecisionProtocol`] runs.
//!
//! Unit scale: with `(lo, hi) = model.input_bounds()` (the global extrema of the preprocessed
//! test set), `u = (x − lo)/(hi − lo)`. All ε are in unit scale. The decision-based attacks run
//! entirely in unit space and map to model scale only to query the model (exact in
//! distribution, spec §2.5). White-box attacks need [`DifferentiableClassifier`], whose default
//! method gets input gradients from candle autograd.
//!
//! # Example
//!
//! Gaussian-noise accuracy of a tiny linear classifier on 1×2×2 images:
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use pixreg_attacks::{FnClassifier, NoiseAttack, NoiseKind, Task};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! // Logits (1 − Σx, Σx − 1): class 1 iff the pixels sum above 1 (mean above 0.25).
//! let w = Tensor::new(&[[-1f32, -1., -1., -1.], [1., 1., 1., 1.]], &dev)?;
//! let b = Tensor::new(&[1f32, -1.], &dev)?;
//! let model = FnClassifier::new(
//!     move |x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?)?.broadcast_add(&b),
//!     (0.0, 1.0),
//! );
//! let images = Tensor::new(&[0.1f32, 0.2, 0.3, 0.2, 0.9, 0.8, 0.7, 0.9], &dev)?.reshape((2, 1, 2, 2))?;
//! let labels = [0u32, 1];
//! let curve = NoiseAttack::paper(Task::Mnist, NoiseKind::Gaussian).run(&model, &images, &labels, 0)?;
//! assert_eq!(curve.epsilons.len(), 10);
//! assert_eq!(curve.accuracy[0], 1.0); // ε = 0 is the clean accuracy
//! # Ok(())
//! # }
//! ```

/// The candle version this crate's tensors come from: depend on it through this re-export to
/// avoid a second copy of `candle-core`.
pub use candle_core;

pub mod blended;
pub mod boundary;
pub mod classifier;
pub mod corruptions;
pub mod error;
pub mod hsj;
pub mod nan_as_null;
pub mod noise;
pub mod paper;
pub mod protocol;
mod rng;
pub mod whitebox;

pub use blended::{BlendedUniformNoiseInit, InitOutcome};
pub use boundary::{draw_proposal, BoundaryAttack, BoundaryOutcome, Proposal};
pub use classifier::{
    accuracy, argmax_rows, cross_entropy_sum, global_bounds, labels_from_tensor, median,
    predict_batched, Classifier, DifferentiableClassifier, FnClassifier, DEFAULT_MAX_BATCH,
};
pub use corruptions::{
    band_means, BandAccuracy, Corruption, CorruptionAccuracy, CorruptionEval, CorruptionKind,
    CorruptionReport, FrequencyBand,
};
pub use error::{AttackError, Result};
pub use hsj::{HopSkipJump, HsjOutcome};
pub use noise::{
    linspace, noisy_inputs, AccuracyCurve, GaussianAugmentation, NoiseAttack, NoiseDraws, NoiseKind,
};
pub use paper::{EpsilonGrid, GridAttack, Task};
pub use protocol::{
    mse_distance, official_boundary_indices, DecisionBasedAttack, DecisionOutcome,
    DecisionProtocol, DecisionReport, DistanceChannels, RepeatReport,
};
pub use whitebox::{ExtremaScope, Fgsm, Pgd, PgdNorm, PgdOutcome, PgdReport};
