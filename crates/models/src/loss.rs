//! The losses of one training step (`classification_and_regularization.train`).

use candle_core::Tensor;
use rsa_core::loss::SimilarityLoss;

use crate::error::Result;
use crate::resnet::ResNet;

/// Mean cross-entropy of logits `[N, classes]` against class indices `[N]` (u32 or i64),
/// as `torch.nn.CrossEntropyLoss()`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// The pair batch of a regularized step.
#[derive(Debug, Clone, Copy)]
pub struct PairBatch<'a> {
    /// First images of the pairs `[k, C, H, W]` (model scale).
    pub a: &'a Tensor,
    /// Second images `[k, C, H, W]`.
    pub b: &'a Tensor,
    /// Target similarities `[k]`.
    pub targets: &'a Tensor,
}

/// The regularization term of a step.
#[derive(Debug, Clone, Copy)]
pub struct Regularization<'a> {
    /// The pairs and their targets.
    pub pairs: PairBatch<'a>,
    /// Weight α of the regularization loss.
    pub alpha: f64,
    /// The criterion.
    pub criterion: SimilarityLoss,
}

/// Everything one training step's forward produced (scalars are 0-d tensors).
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// `ce_loss + α·reg_loss` (or `ce_loss` alone), to call `backward()` on.
    pub loss: Tensor,
    /// Classification loss.
    pub ce_loss: Tensor,
    /// Regularization loss, when regularized.
    pub reg_loss: Option<Tensor>,
    /// Classification logits `[N, classes]`.
    pub logits: Tensor,
    /// Pair scores `[k]`, when regularized.
    pub scores: Option<Tensor>,
}

impl ResNet {
    /// The forward of one training step in the reference's order: `logits = model(images)`,
    /// `ce = CE(logits, labels)`; then, if regularized, `scores = model(a, b)`,
    /// `reg = criterion(scores, targets)` and `loss = ce + α·reg`. Runs in the current mode
    /// (the trainer puts the model in training mode). The caller runs `loss.backward()` and the
    /// optimizer step.
    pub fn training_step_loss(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        reg: Option<Regularization<'_>>,
    ) -> Result<StepOutput> {
        let logits = self.forward(images)?;
        let ce_loss = cross_entropy(&logits, labels)?;
        match reg {
            None => Ok(StepOutput {
                loss: ce_loss.clone(),
                ce_loss,
                reg_loss: None,
                logits,
                scores: None,
            }),
            Some(r) => {
                let scores = self.forward_pair(r.pairs.a, r.pairs.b)?;
                let reg_loss = r.criterion.compute(&scores, r.pairs.targets)?;
                let loss = (&ce_loss + (&reg_loss * r.alpha)?)?;
                Ok(StepOutput {
                    loss,
                    ce_loss,
                    reg_loss: Some(reg_loss),
                    logits,
                    scores: Some(scores),
                })
            }
        }
    }
}
