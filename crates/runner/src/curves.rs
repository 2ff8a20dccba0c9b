//! Training curves of a run: the per-step scalars of `steps.jsonl` and the per-epoch lines of
//! `metrics.jsonl`, and the TensorBoard event file made from both.
//!
//! `pixreg train` keeps the scalars of every `display_every`-th step (and of the last step of
//! each epoch) in memory and commits them with the epoch, like the metric lines: a resumed run
//! has exactly the lines of an uninterrupted one. The event file
//! (`events.out.tfevents.pixreg`) is rebuilt from the two files at every commit, so it never
//! shows an epoch that was not committed; point TensorBoard at the runs folder
//! (`tensorboard --logdir runs`) to compare runs.
//!
//! Steps are global (`(epoch − 1) · steps_per_epoch + step`); epoch metrics sit at the
//! global step that ends their epoch, so per-step and per-epoch curves share one axis.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::output::write_bytes;
use crate::results::EpochMetrics;
use crate::run_dir::RunDir;
use crate::tfevents::EventFile;

/// One line of `steps.jsonl`: the scalars of one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepScalars {
    /// Epoch of the step, from 1.
    pub epoch: usize,
    /// Step within the epoch, from 1.
    pub step: usize,
    /// Steps in an epoch.
    pub steps_per_epoch: usize,
    /// Cross-entropy of the step's batch.
    pub ce: f64,
    /// Regularizer loss of the step's pairs (runs with a regularizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg: Option<f64>,
    /// Pearson correlation of the pair scores with their targets; `None` where it is
    /// undefined (constant targets) or the run has no regularizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corr: Option<f64>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Accuracy (%) on the step's batch, before its update.
    pub batch_acc: f64,
    /// Mean wall time of the steps since the previous line, in seconds (not reproducible).
    pub step_seconds: f64,
    /// When the step ended, in Unix seconds (not reproducible).
    pub time: f64,
}

impl StepScalars {
    /// The step counted from the start of training, from 1.
    pub fn global_step(&self) -> u64 {
        ((self.epoch - 1) * self.steps_per_epoch + self.step) as u64
    }

    /// The step as a fraction of epochs (1.0 = the end of the first epoch).
    pub fn epoch_position(&self) -> f64 {
        (self.epoch - 1) as f64 + self.step as f64 / self.steps_per_epoch.max(1) as f64
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The TensorBoard event file of a run's committed step and metric lines: tags `train/<name>`
/// per logged step and `epoch/<key>` for every number of a metric line.
pub fn event_file(steps: &[StepScalars], metrics: &[EpochMetrics]) -> EventFile {
    // A folder written before steps.jsonl existed has epoch numbers as its steps.
    let steps_per_epoch = steps.first().map_or(1, |s| s.steps_per_epoch) as u64;
    let time_of = |line: &EpochMetrics| line.time.unwrap_or(0.0);
    let start = metrics
        .first()
        .map(time_of)
        .or_else(|| steps.first().map(|s| s.time))
        .unwrap_or(0.0);
    let mut file = EventFile::new(start);
    let mut pending = steps.iter().peekable();
    for line in metrics {
        let epoch = line.epoch as u64;
        while let Some(s) = pending.next_if(|s| s.epoch as u64 <= epoch) {
            let mut values = vec![
                ("train/ce", s.ce),
                ("train/lr", s.lr),
                ("train/batch_acc", s.batch_acc),
                ("train/step_seconds", s.step_seconds),
            ];
            values.extend(s.reg.map(|r| ("train/reg", r)));
            values.extend(s.corr.map(|c| ("train/corr", c)));
            file.scalars(s.time, s.global_step(), &values);
        }
        file.scalars(time_of(line), epoch * steps_per_epoch, &line.scalars());
    }
    file
}

/// Rewrites the run's event file from the step and metric lines being committed.
pub fn write_event_file(
    run: &RunDir,
    steps: &[StepScalars],
    metrics: &[EpochMetrics],
) -> Result<()> {
    let path = run.events();
    write_bytes(&path, &event_file(steps, metrics).into_bytes())
        .with_context(|| format!("writing the TensorBoard events of {}", run.root().display()))
}

/// The lines of epochs `0..=last_epoch` of a `steps.jsonl` file (none when it is absent).
pub fn read_steps(path: &Path, last_epoch: usize) -> Result<Vec<StepScalars>> {
    crate::run_dir::read_json_lines(path, |s: &StepScalars| s.epoch <= last_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(epoch: usize, step: usize) -> StepScalars {
        StepScalars {
            epoch,
            step,
            steps_per_epoch: 10,
            ce: 1.0,
            reg: Some(0.5),
            corr: None,
            lr: 0.01,
            batch_acc: 50.0,
            step_seconds: 0.1,
            time: 100.0,
        }
    }

    #[test]
    fn steps_count_globally_and_as_epoch_fractions() {
        assert_eq!(step(1, 10).global_step(), 10);
        assert_eq!(step(3, 5).global_step(), 25);
        assert_eq!(step(3, 5).epoch_position(), 2.5);
    }

    #[test]
    fn undefined_scalars_are_left_out_of_the_event_file() {
        let line = |epoch, test_acc, time| -> EpochMetrics {
            serde_json::from_value(serde_json::json!(
                {"epoch": epoch, "test_acc": test_acc, "test_loss": 1.0, "time": time}
            ))
            .unwrap()
        };
        let metrics = vec![line(0, 10.0, 99.0), line(1, 80.0, 101.0)];
        let bytes = event_file(&[step(1, 5), step(1, 10)], &metrics).into_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("train/reg"));
        assert!(!text.contains("train/corr"));
        assert!(text.contains("epoch/test_acc"));
        assert!(!text.contains("epoch/time"));
    }
}
