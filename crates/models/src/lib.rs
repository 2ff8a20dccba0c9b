//! The paper's ResNet family with its two-input similarity head, on candle.
//!
//! This crate owns the model side of the reproduction of *A Brain-Inspired Regularizer for
//! Adversarial Robustness* (official code: `elieattias1/pixel-reg`, `models.py`):
//!
//! * [`ResNet`]: ResNet18/34 (basic blocks) and ResNet50/101 (bottleneck) with a 7×7
//!   stride-1 stem and no max-pool, `avg_pool2d(4)` and a linear head, PyTorch's default
//!   initialisation; [`ResNet::forward`] gives logits, [`ResNet::forward_pair`] the pair
//!   similarity scores (per-layer centred cosine with running means, combined by
//!   `softmax(layer_weight)`; the maths is `rsa-core`'s), [`ResNet::forward_eval`] side-effect
//!   free eval-mode logits for evaluation and attacks;
//! * BatchNorm with PyTorch's train/eval semantics ([`layers::BatchNorm2d`]); every
//!   convolution and batch normalisation runs through [`ops`] ([`ops::conv2d`],
//!   [`ops::batch_norm`], fused [`ops::conv2d_batch_norm_train`] in training mode);
//! * checkpoints in safetensors under the reference's exact state-dict names, loadable from a
//!   PyTorch export (`safetensors.torch.save_file(model.state_dict(), path)`), strictly;
//! * [`SgdMomentum`], `torch.optim.SGD` with momentum and weight decay, with resumable state;
//! * the step losses ([`ResNet::training_step_loss`], [`loss::cross_entropy`], with the
//!   regularization criteria of `rsa-core`, re-exported as [`SimilarityLoss`]);
//! * [`ModelConfig`], saved as `model.json` next to checkpoints.
//!
//! All computation is float32, on the device the model was built on.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use pixreg_models::{Arch, ModelConfig, ResNet};
//!
//! let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
//! let model = ResNet::new(&config, 0, &Device::Cpu)?;
//! let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
//! let logits = model.forward_eval(&x)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! # Ok::<(), pixreg_models::Error>(())
//! ```

/// The candle version this crate's tensors come from: depend on it through this re-export to
/// avoid a second copy of `candle-core`.
pub use candle_core;
/// The CPU backend [`ops`] dispatches to (its own crate, `pixreg-kernels`).
pub use pixreg_kernels as kernels;

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod layers;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod resnet;

pub use config::{Arch, BlockKind, ModelConfig, CONFIG_FILE_NAME};
pub use error::{Error, Result};
pub use loss::{cross_entropy, PairBatch, Regularization, StepOutput};
pub use optim::SgdMomentum;
pub use resnet::{BnRecalibration, PairOutput, ResNet, NUM_LAYERS, SIMILARITY_BETA};
pub use rsa_core::loss::SimilarityLoss;
