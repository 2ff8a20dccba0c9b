//! The regularizer's side of training: the regularization images (the task's own or another
//! source's), their similarity targets thresholded at `Th` (or a user matrix), and the seeded,
//! resumable pair sampler that feeds one pair batch per step.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use pixreg_datasets::{ClassificationData, RegImages};
use pixreg_models::SimilarityLoss;
use rsa_core::{
    load_similarity_matrix, DoubleThresholdMode, PairSampler, PairSelection, SamplerState,
    SimilaritySource, ThresholdedTargets,
};

use crate::config::{ExperimentConfig, RegularizationConfig, TargetSource};
use crate::data::DataSource;
use crate::run_dir::{RunDir, SamplerPosition};

/// Everything the regularizer needs during training.
pub(crate) struct RegState {
    /// Regularization images at model scale, `[N, C, H, W]` on the training device.
    pub(crate) images: Tensor,
    pub(crate) sampler: PairSampler,
    pub(crate) alpha: f64,
    pub(crate) criterion: SimilarityLoss,
    /// Wall time of building the images, similarities and pair targets.
    pub(crate) targets_seconds: f64,
}

/// The thresholding rule of the `[regularization]` section.
fn target_rule(reg: &RegularizationConfig) -> Result<ThresholdedTargets> {
    let mut rule = ThresholdedTargets::new(reg.threshold)?.with_value(reg.boost_value)?;
    if let Some(th2) = reg.threshold2 {
        let mode = if reg.graded_double {
            DoubleThresholdMode::Graded
        } else {
            DoubleThresholdMode::Reference
        };
        rule = rule.with_second_threshold(th2, mode)?;
    }
    if !reg.boosting {
        rule = rule.without_boosting();
    }
    Ok(rule)
}

/// The regularization images, their similarity targets and the pair sampler (resumed at
/// `sampler_state`), with a log line saying what was selected.
pub(crate) fn build_regularization(
    config: &ExperimentConfig,
    reg: &RegularizationConfig,
    data: &ClassificationData,
    data_source: &DataSource,
    sampler_state: Option<SamplerPosition>,
    device: &Device,
    run: &RunDir,
) -> Result<RegState> {
    let task = config.task.dataset;
    let source = reg.source;
    let seed = config.training.seed;
    let start = Instant::now();
    let images = if source == task {
        RegImages::from_train_set(&data.train_set, reg.n_images, seed)?
    } else {
        RegImages::build(
            source,
            reg.n_images,
            seed,
            &data_source.options(config.task.rgb),
        )?
    };
    let similarity = match &reg.targets {
        TargetSource::Pixel => SimilaritySource::from_images(&images.tensor(&Device::Cpu)?)?,
        TargetSource::File(path) => {
            let matrix = load_similarity_matrix(path, reg.targets_key.as_deref(), images.len())?;
            SimilaritySource::from_matrix(&matrix)?
        }
    };
    let selection = Arc::new(PairSelection::build(
        similarity,
        reg.range,
        target_rule(reg)?,
    )?);
    let k = reg.pairs_per_batch;
    let sampler = match sampler_state {
        Some(p) => PairSampler::resume(
            selection.clone(),
            k,
            SamplerState {
                seed: p.seed,
                pass: p.pass,
                batch_in_pass: p.batch_in_pass,
            },
        )?,
        None => PairSampler::new(selection.clone(), k, seed)?,
    };
    run.log(&format!(
        "regularization: {} images from {source}, range {}, {} pairs selected ({:.4} % of \
         all), targets ready in {:.2} s",
        images.len(),
        reg.range,
        selection.len(),
        100.0 * selection.fraction(),
        start.elapsed().as_secs_f64()
    ))?;
    Ok(RegState {
        images: images.model_tensor(task, device)?,
        sampler,
        alpha: reg.alpha,
        criterion: reg.loss,
        targets_seconds: start.elapsed().as_secs_f64(),
    })
}
