//! # rsa-core
//!
//! Representational-similarity kernels for the pixel-similarity regularizer of Attias, Pehlevan
//! & Obeid (*A Brain-Inspired Regularizer for Adversarial Robustness*, arXiv 2410.03952), on
//! candle tensors.
//!
//! The regularizer asks a network to reproduce, for pairs of images, a target similarity derived
//! from the images' pixels. This crate owns everything about those similarities:
//!
//! * [`similarity`]: the centred cosine similarity of flattened grayscale pixels
//!   ([`pixel_similarity_matrix`], [`centered_unit_rows`]);
//! * [`targets`]: thresholding to `{−1, 0, +1}` ([`ThresholdedTargets`]);
//! * [`pairs`]: pair selection by range, blockwise so that large `N` never needs the dense
//!   matrix ([`select_pairs`], [`PairSelection`]);
//! * [`sampler`]: seeded, resumable shuffled batches of pairs ([`PairSampler`]);
//! * [`model_side`]: the network's own centred cosine with running means, per layer, mixed by
//!   softmax weights;
//! * [`loss`]: the reference's arctanh-squared loss and MSE;
//! * [`external`]: user-supplied target matrices (e.g. neural RSMs).
//!
//! Everything runs on the CPU by default; the `cuda` feature enables candle's CUDA backend, and
//! tensors on a CUDA device are then processed there (strip products, model-side maths).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rsa_core::{select_pairs, PairRange, SimilaritySource, ThresholdedTargets};
//!
//! # fn main() -> rsa_core::Result<()> {
//! let images = Tensor::rand(0f32, 1.0, (32, 1, 28, 28), &Device::Cpu)?;
//! let source = SimilaritySource::from_images(&images)?;
//! let pairs = select_pairs(&source, PairRange::All, &ThresholdedTargets::new(0.8)?)?;
//! assert_eq!(pairs.len(), 32 * 31 / 2);
//! # Ok(()) }
//! ```

/// The candle version this crate's tensors come from: depend on it through this re-export to
/// avoid a second copy of `candle-core`.
pub use candle_core;

pub mod error;
pub mod external;
pub mod loss;
pub mod model_side;
pub mod pairs;
pub mod sampler;
pub mod similarity;
pub mod source;
pub mod targets;

pub use error::{Error, Result};
pub use external::load_similarity_matrix;
pub use loss::SimilarityLoss;
pub use pairs::{select_pairs, select_pairs_with_matrix, PairList, PairRange, PairSelection};
pub use sampler::{PairBatch, PairSampler, SamplerState};
pub use similarity::{centered_unit_rows, pixel_similarity_matrix};
pub use source::SimilaritySource;
pub use targets::{DoubleThresholdMode, ThresholdedTargets};
