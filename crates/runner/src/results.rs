//! The typed `results.json` of a run (format [`RESULTS_FORMAT`]): written by `pixreg eval`
//! (and the end of `pixreg train`), read by `cargo xtask reproduce` to fill its tables.
//!
//! ```text
//! { "format": 2, "run": id, "checkpoint": "checkpoints/best-0007.safetensors",
//!   "checkpoint_sha256": hex, "best_epoch": 7, "train_seconds": s,
//!   "clean":   { "test_loss", "test_acc" (%), "provenance" },
//!   "attacks": { name: { ...the attack's report, accuracies in %..., "provenance" } } }
//! ```
//! Each attack's entry has the shape of its kind ([`AttackResult`]): an accuracy curve over
//! an ε grid (noise, FGSM, PGD), a decision attack's medians (Boundary, HopSkipJump), or the
//! corruption accuracies. Every entry's `provenance` names the checkpoint it evaluated.
//!
//! ```
//! use pixreg_runner::attack::AttackName;
//! use pixreg_runner::results::RunResults;
//!
//! let text = r#"{"format": 2, "run": "r", "checkpoint": "checkpoints/best-0001.safetensors",
//!   "checkpoint_sha256": "ab", "best_epoch": 1, "train_seconds": 3.0,
//!   "clean": {"test_loss": 0.1, "test_acc": 97.5, "provenance": {"checkpoint": "c",
//!     "checkpoint_sha256": "ab", "epoch": 1, "evaluated_at": "2026-12-04T00:00:00Z",
//!     "git_commit": "g", "pixreg_version": "0.1.0", "provisional": false}},
//!   "attacks": {}}"#;
//! let results: RunResults = serde_json::from_str(text)?;
//! assert_eq!(results.clean.result.test_acc, 97.5);
//! assert!(results.attacks.get(AttackName::Boundary).is_none());
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use pixreg_attacks::{AccuracyCurve, BandAccuracy, CorruptionAccuracy, CorruptionReport};
use pixreg_attacks::{DecisionBasedAttack, DecisionReport, RepeatReport};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::attack::AttackName;
use crate::output::write_text;
use crate::provenance::Provenance;

/// Version of the `results.json` layout. Format 1 (pixreg 0.1) had fractions in attack
/// curves and no provenance.
pub const RESULTS_FORMAT: u64 = 2;

/// The evaluations of one checkpoint of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// [`RESULTS_FORMAT`].
    pub format: u64,
    /// The run's id.
    pub run: String,
    /// The evaluated checkpoint, relative to the run folder.
    pub checkpoint: String,
    /// Its sha256.
    pub checkpoint_sha256: String,
    /// The epoch it was saved after.
    pub best_epoch: usize,
    /// Training wall time of the run, in seconds.
    pub train_seconds: f64,
    /// Clean test accuracy.
    pub clean: Evaluated<CleanResult>,
    /// The attacks evaluated so far.
    #[serde(default)]
    pub attacks: AttackResults,
}

impl RunResults {
    /// Reads a `results.json` (once): a missing file is [`StoredResults::Missing`], a file
    /// of another format (an older one: format 1 had no `format` key; or a newer pixreg's)
    /// [`StoredResults::OtherFormat`], a corrupt one an error naming it.
    pub fn load(path: &Path) -> Result<StoredResults> {
        if !path.is_file() {
            return Ok(StoredResults::Missing);
        }
        let corrupt = || format!("{} is corrupt", path.display());
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(corrupt)?;
        match value.get("format").map(serde_json::Value::as_u64) {
            Some(Some(RESULTS_FORMAT)) => Ok(StoredResults::Current(Box::new(
                serde_json::from_value(value).with_context(corrupt)?,
            ))),
            Some(Some(format)) => Ok(StoredResults::OtherFormat(format)),
            None => Ok(StoredResults::OtherFormat(1)),
            Some(None) => bail!("{}: `format` is not a number", corrupt()),
        }
    }

    /// Writes the file atomically. Through a `serde_json::Value`, whose maps are sorted: keys
    /// in alphabetical order at every depth, the layout of every format-2 file so far, so a
    /// re-evaluation only changes the lines whose numbers changed.
    pub fn write(&self, path: &Path) -> Result<()> {
        let value = serde_json::to_value(self)?;
        write_text(path, &serde_json::to_string_pretty(&value)?)
    }
}

/// What [`RunResults::load`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredResults {
    /// No `results.json`.
    Missing,
    /// A file of another format (named), which does not parse as this one.
    OtherFormat(u64),
    /// A file of [`RESULTS_FORMAT`] (boxed: a few hundred bytes, against a format number).
    Current(Box<RunResults>),
}

/// A result with the provenance of the checkpoint it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated<T> {
    /// The result.
    #[serde(flatten)]
    pub result: T,
    /// Which checkpoint, evaluated when and by which pixreg.
    pub provenance: Provenance,
}

impl<T> Evaluated<T> {
    /// True when the entry evaluated the checkpoint with digest `sha` and is final (the run
    /// had finished training) or, with `accept_provisional`, provisional (an evaluation of a
    /// run still training, which only another provisional evaluation may reuse).
    pub fn is_current_for(&self, sha: &str, accept_provisional: bool) -> bool {
        self.provenance.checkpoint_sha256 == sha
            && (accept_provisional || !self.provenance.provisional)
    }
}

/// Clean accuracy on the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanResult {
    /// Mean cross-entropy.
    pub test_loss: f64,
    /// Accuracy in %.
    pub test_acc: f64,
}

/// An accuracy curve over an ε grid (noise, FGSM, PGD), accuracies in %.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveResult {
    /// The attack's name in `pixreg-attacks` (`Gaussian`, `TransferredFGSM`, …).
    pub attack: String,
    /// ε grid, unit scale.
    pub epsilons: Vec<f64>,
    /// Accuracy (%) at each ε.
    pub accuracy: Vec<f64>,
    /// Test images evaluated.
    pub n_images: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// The surrogate run of a transferred FGSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate: Option<String>,
    /// The sha256 of the surrogate's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_checkpoint_sha256: Option<String>,
}

impl CurveResult {
    /// Mean accuracy (%) over the grid's ε > 0 (ε = 0 is the clean accuracy): the tables'
    /// headline number of a noise grid. `None` for a grid without a positive ε.
    pub fn grid_mean(&self) -> Option<f64> {
        let points: Vec<f64> = self
            .epsilons
            .iter()
            .zip(&self.accuracy)
            .filter(|(e, _)| **e > 0.0)
            .map(|(_, a)| *a)
            .collect();
        (!points.is_empty()).then(|| points.iter().sum::<f64>() / points.len() as f64)
    }
}

impl From<AccuracyCurve> for CurveResult {
    fn from(curve: AccuracyCurve) -> Self {
        Self {
            attack: curve.attack,
            epsilons: curve.epsilons,
            accuracy: percent_all(curve.accuracy),
            n_images: curve.n_images,
            wall_seconds: curve.wall_seconds,
            surrogate: None,
            surrogate_checkpoint_sha256: None,
        }
    }
}

/// A decision attack under the paper's protocol: per-repeat medians of the per-image MSE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionResult {
    /// Model queries over all images and repeats.
    pub queries: f64,
    /// Queries per wall-clock second.
    #[serde(deserialize_with = "pixreg_attacks::nan_as_null::number")]
    pub queries_per_second: f64,
    /// Mean of the per-repeat medians (the paper's number; NaN when no image was attacked
    /// successfully).
    #[serde(deserialize_with = "pixreg_attacks::nan_as_null::number")]
    pub mean_of_medians: f64,
    /// Per-repeat medians.
    #[serde(deserialize_with = "pixreg_attacks::nan_as_null::numbers")]
    pub medians: Vec<f64>,
    /// Successful (image, repeat) pairs, in %.
    pub success_rate: f64,
    /// Images attacked.
    pub n_images: usize,
    /// Per-repeat details.
    pub repeats: Vec<RepeatReport>,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// The attack's knobs that differ from its preset (HopSkipJump's are always written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<DecisionSettings>,
}

impl DecisionResult {
    /// The summary of a protocol report, with `settings` recorded.
    pub fn new<A: DecisionBasedAttack>(
        report: DecisionReport<A>,
        settings: Option<DecisionSettings>,
    ) -> Self {
        let n_images = report.indices.len();
        let queries: f64 = report
            .repeats
            .iter()
            .map(|r| r.mean_queries * n_images as f64)
            .sum();
        Self {
            queries,
            queries_per_second: queries / report.wall_seconds,
            mean_of_medians: report.mean_of_medians,
            medians: report.medians,
            success_rate: percent(report.success_rate),
            n_images,
            repeats: report.repeats,
            wall_seconds: report.wall_seconds,
            settings,
        }
    }
}

/// The knobs of a decision attack recorded beside its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSettings {
    /// Attack iterations.
    pub steps: usize,
    /// HopSkipJump's initial gradient-estimation queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_gradient_evals: Option<usize>,
}

/// Accuracy under the common corruptions, in %.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorruptionResult {
    /// Clean accuracy (%).
    pub clean_accuracy: f64,
    /// One entry per (kind, severity), accuracy in %.
    pub entries: Vec<CorruptionAccuracy>,
    /// One entry per (band, severity), accuracy in %.
    #[serde(default)]
    pub by_band: Vec<BandAccuracy>,
    /// Mean accuracy (%) over all entries.
    pub mean_corrupted_accuracy: f64,
    /// Images evaluated.
    pub n_images: usize,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

impl From<CorruptionReport> for CorruptionResult {
    fn from(report: CorruptionReport) -> Self {
        Self {
            clean_accuracy: percent(report.clean_accuracy),
            entries: report
                .entries
                .into_iter()
                .map(|e| CorruptionAccuracy {
                    accuracy: percent(e.accuracy),
                    ..e
                })
                .collect(),
            by_band: report
                .by_band
                .into_iter()
                .map(|b| BandAccuracy {
                    accuracy: percent(b.accuracy),
                    ..b
                })
                .collect(),
            mean_corrupted_accuracy: percent(report.mean_corrupted_accuracy),
            n_images: report.n_images,
            wall_seconds: report.wall_seconds,
        }
    }
}

/// A fraction of `pixreg-attacks` in %: `x · 100`, the product every format-2 file holds.
fn percent(x: f64) -> f64 {
    x * 100.0
}

fn percent_all(xs: Vec<f64>) -> Vec<f64> {
    xs.into_iter().map(percent).collect()
}

/// How an attack's entry is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// [`CurveResult`].
    Curve,
    /// [`DecisionResult`].
    Decision,
    /// [`CorruptionResult`].
    Corruptions,
}

impl AttackName {
    /// The shape of this attack's entry in `results.json`.
    pub fn result_shape(self) -> ResultShape {
        match self {
            AttackName::Gaussian
            | AttackName::Uniform
            | AttackName::Saltpepper
            | AttackName::Fgsm
            | AttackName::PgdLinf
            | AttackName::PgdL2 => ResultShape::Curve,
            AttackName::Boundary | AttackName::BoundaryConverged | AttackName::Hsj => {
                ResultShape::Decision
            }
            AttackName::Corruptions => ResultShape::Corruptions,
        }
    }
}

/// One attack's report, shaped by its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttackReport {
    /// Noise, FGSM, PGD.
    Curve(CurveResult),
    /// Boundary, HopSkipJump.
    Decision(DecisionResult),
    /// Common corruptions.
    Corruptions(CorruptionResult),
}

impl AttackReport {
    /// Test images the attack evaluated.
    pub fn n_images(&self) -> usize {
        match self {
            AttackReport::Curve(r) => r.n_images,
            AttackReport::Decision(r) => r.n_images,
            AttackReport::Corruptions(r) => r.n_images,
        }
    }

    /// The curve, for curve-shaped reports.
    pub fn as_curve(&self) -> Option<&CurveResult> {
        match self {
            AttackReport::Curve(r) => Some(r),
            _ => None,
        }
    }

    /// The medians, for decision attacks.
    pub fn as_decision(&self) -> Option<&DecisionResult> {
        match self {
            AttackReport::Decision(r) => Some(r),
            _ => None,
        }
    }

    /// The corruption accuracies.
    pub fn as_corruptions(&self) -> Option<&CorruptionResult> {
        match self {
            AttackReport::Corruptions(r) => Some(r),
            _ => None,
        }
    }
}

/// One attack's entry of `results.json`: its report and provenance.
pub type AttackResult = Evaluated<AttackReport>;

/// The `attacks` map, each entry read as the shape its name says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AttackResults(BTreeMap<AttackName, AttackResult>);

impl AttackResults {
    /// The entry of `name`, if evaluated.
    pub fn get(&self, name: AttackName) -> Option<&AttackResult> {
        self.0.get(&name)
    }

    /// Stores (or replaces) the entry of `name`.
    pub fn insert(&mut self, name: AttackName, result: AttackResult) {
        self.0.insert(name, result);
    }

    /// The entries, in [`AttackName`] order.
    pub fn iter(&self) -> impl Iterator<Item = (AttackName, &AttackResult)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(AttackName, &AttackResult) -> bool) {
        self.0.retain(|k, v| keep(*k, v));
    }
}

/// An entry of one shape, as an [`AttackResult`].
fn entry<T>(e: Evaluated<T>, shape: fn(T) -> AttackReport) -> AttackResult {
    Evaluated {
        result: shape(e.result),
        provenance: e.provenance,
    }
}

impl<'de> Deserialize<'de> for AttackResults {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ByName;
        impl<'de> Visitor<'de> for ByName {
            type Value = AttackResults;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from attack names to their results")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<AttackResults, M::Error> {
                let mut entries = BTreeMap::new();
                while let Some(name) = map.next_key::<AttackName>()? {
                    let result = match name.result_shape() {
                        ResultShape::Curve => entry(map.next_value()?, AttackReport::Curve),
                        ResultShape::Decision => entry(map.next_value()?, AttackReport::Decision),
                        ResultShape::Corruptions => {
                            entry(map.next_value()?, AttackReport::Corruptions)
                        }
                    };
                    entries.insert(name, result);
                }
                Ok(AttackResults(entries))
            }
        }
        d.deserialize_map(ByName)
    }
}

/// The metric line of one evaluated epoch (`metrics.jsonl`; epoch 0 is the untrained model,
/// whose line has only the evaluation). Fields in key order: the lines pixreg wrote before
/// this type existed were sorted maps, and a resumed run appends to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch, from 1 (0: before training).
    pub epoch: usize,
    /// Wall time of the epoch, seconds (not reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_seconds: Option<f64>,
    /// Learning rate of the epoch (trained epochs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Mean regularizer loss (regularized runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg_loss: Option<f64>,
    /// Mean correlation of pair scores with targets: absent when unregularized, `null` when
    /// it was undefined at every step (constant targets).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_or_null"
    )]
    pub score_target_corr: Option<Option<f64>>,
    /// Where the epoch's time went (not reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seconds: Option<EpochSplit>,
    /// Test accuracy (%).
    pub test_acc: f64,
    /// Test loss.
    pub test_loss: f64,
    /// When the evaluation ended, Unix seconds (not reproducible; absent in lines of pixreg
    /// 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// Train-set accuracy (%), with `training.eval_train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_acc: Option<f64>,
    /// Mean cross-entropy of the epoch's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_ce: Option<f64>,
    /// Train-set loss, with `training.eval_train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_loss: Option<f64>,
    /// Validation accuracy (%), when a validation split is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_acc: Option<f64>,
    /// Validation loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_loss: Option<f64>,
}

/// Where one epoch's wall time went, in seconds (fields in key order, as [`EpochMetrics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochSplit {
    /// Backpropagation.
    pub backward: f64,
    /// Step scalars, correlation, log lines and the progress bar.
    pub bookkeeping: f64,
    /// Next classification batch: reading, augmentation, tensor upload.
    pub data: f64,
    /// The batch defense (noise augmentation or adversarial crafting), if any.
    pub defense: f64,
    /// Validation and test (and train, with `eval_train`) evaluation after the epoch.
    pub evaluation: f64,
    /// Classification and pair forward passes and the losses.
    pub forward: f64,
    /// The SGD update.
    pub optimizer: f64,
    /// Drawing the step's pairs and gathering their images and targets.
    pub pairs: f64,
}

/// A present key, `null` included, is `Some`; an absent one is `None` (via `default`).
fn some_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl EpochMetrics {
    /// The number the best checkpoint minimises: validation loss, test loss without a
    /// validation split.
    pub fn selection_loss(&self) -> f64 {
        self.valid_loss.unwrap_or(self.test_loss)
    }

    /// The line's scalars as TensorBoard tags (`epoch/<key>`), in key order.
    pub fn scalars(&self) -> Vec<(&'static str, f64)> {
        let keyed = [
            ("epoch/epoch_seconds", self.epoch_seconds),
            ("epoch/lr", self.lr),
            ("epoch/reg_loss", self.reg_loss),
            ("epoch/score_target_corr", self.score_target_corr.flatten()),
            ("epoch/test_acc", Some(self.test_acc)),
            ("epoch/test_loss", Some(self.test_loss)),
            ("epoch/train_acc", self.train_acc),
            ("epoch/train_ce", self.train_ce),
            ("epoch/train_loss", self.train_loss),
            ("epoch/valid_acc", self.valid_acc),
            ("epoch/valid_loss", self.valid_loss),
        ];
        keyed
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect()
    }
}
