//! Experiment configuration: one TOML file describes one experiment (task, model,
//! regularization, training, evaluation, device).
//!
//! Every field has the official code's default (`../shared/specs/reference-training.md` §1), so
//! a config names only what differs. Unknown keys are errors (a typo must not silently fall back
//! to a default), and [`ExperimentConfig::validate`] rejects bad values before anything runs.
//!
//! ```toml
//! [task]
//! dataset = "fashion-mnist"
//!
//! [model]
//! arch = "resnet18"
//! base_channels = 16
//!
//! [regularization]          # present = regularized; alpha/threshold default to the preset
//! range = "all"             # of the (task, source) pair in the paper's README table
//!
//! [training]
//! epochs = 4
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use pixreg_datasets::DatasetName;
use pixreg_datasets::Family;
pub use pixreg_models::Arch;
pub use rsa_core::{PairRange, SimilarityLoss};
use serde::{Deserialize, Serialize};

/// Serde through a library type's names (`Display` out, `FromStr` in): the config keeps the
/// strings it always had (so run ids do not change) and is parsed once, here; an unknown
/// name fails with the key and the library's own message.
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The classification task.
    pub task: TaskConfig,
    /// The network.
    #[serde(default)]
    pub model: ModelSection,
    /// The pixel-similarity regularizer; absent means an unregularized baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regularization: Option<RegularizationConfig>,
    /// Optimisation and schedule.
    #[serde(default)]
    pub training: TrainingConfig,
    /// What to evaluate after training.
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "cpu".into()
}

/// The classification task (`--task`, `--rgb`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// `mnist`, `fashion-mnist`, `cifar10`, `cifar100` or `cifar10-jpeg`.
    #[serde(with = "by_name")]
    pub dataset: DatasetName,
    /// Keep RGB instead of the reference's default grayscale (CIFAR only).
    #[serde(default)]
    pub rgb: bool,
    /// Train on only this many training images (a fixed random subset of the training split
    /// after the validation images are held out); for quick experiments. Absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Evaluate on only this many test images (a fixed random subset). Absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// `random` (seeded, `valid_portion` of the training set) or `official` (the seed-0
    /// indices of the official code, from `official_seed0_indices.json`).
    #[serde(default)]
    pub valid_split: ValidSplitRule,
}

impl TaskConfig {
    /// The attack protocol (ε grids, Boundary Attack images) of the task's dataset: the JPEG
    /// CIFAR-10 copy is attacked as CIFAR-10; a dataset that is only a regularization source
    /// has none.
    pub fn attack_task(&self) -> Result<pixreg_attacks::Task> {
        use pixreg_attacks::Task;
        Ok(match self.dataset {
            DatasetName::Mnist => Task::Mnist,
            DatasetName::FashionMnist => Task::FashionMnist,
            DatasetName::Cifar10 | DatasetName::Cifar10Jpeg => Task::Cifar10,
            DatasetName::Cifar100 => Task::Cifar100,
            other => {
                bail!("no attack protocol for dataset {other}: `evaluation.attacks` must be empty")
            }
        })
    }
}

/// `task.valid_split`: how the validation images are drawn from the training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidSplitRule {
    /// `valid_portion` of the training set, drawn with the run's seed.
    #[default]
    Random,
    /// The official code's seed-0 indices (`official_seed0_indices.json`).
    Official,
}

/// The network (`--archi`, `--base_channels`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `resnet18`, `resnet34`, `resnet50` or `resnet101`.
    #[serde(default = "default_arch", with = "by_name")]
    pub arch: Arch,
    /// Width of the first section (64 in the paper).
    #[serde(default = "default_base_channels")]
    pub base_channels: usize,
}

fn default_arch() -> Arch {
    Arch::ResNet18
}
fn default_base_channels() -> usize {
    64
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            arch: default_arch(),
            base_channels: default_base_channels(),
        }
    }
}

/// The regularizer (`--reg_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegularizationConfig {
    /// α, the weight of the similarity loss. Absent from a file: the preset of (task,
    /// source), filled in before the section is read.
    pub alpha: f64,
    /// Th in [0, 1]. Absent from a file: the preset of (task, source).
    pub threshold: f64,
    /// Th2 < Th, for the `double` range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold2: Option<f64>,
    /// Use the graded two-threshold targets instead of the reference's (equal to single
    /// thresholding).
    #[serde(default)]
    pub graded_double: bool,
    /// `all`, `high`, `low`, `positive`, `negative`, `high_positive` or `double`.
    #[serde(default, with = "by_name")]
    pub range: PairRange,
    /// Source of the regularization images. Absent from a file: the task's own dataset.
    #[serde(with = "by_name")]
    pub source: DatasetName,
    /// N, the number of regularization images.
    #[serde(default = "default_n_images")]
    pub n_images: usize,
    /// k, pairs per training step.
    #[serde(default = "default_pairs")]
    pub pairs_per_batch: usize,
    /// `arctanh` (the reference's default) or `mse`.
    #[serde(default, with = "by_name")]
    pub loss: SimilarityLoss,
    /// `pixel`, or the path of a `.safetensors`/`.npy` `[N, N]` target matrix of your own.
    #[serde(default, with = "by_name")]
    pub targets: TargetSource,
    /// Tensor name inside a safetensors target file with several tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_key: Option<String>,
    /// Threshold the similarities to {-v, 0, +v} (`--reg_boosting`).
    #[serde(default = "default_true")]
    pub boosting: bool,
    /// v, the magnitude of the thresholded targets.
    #[serde(default = "default_boost_value")]
    pub boost_value: f32,
    /// Let the pair forwards update the batch norms' running statistics with each half's
    /// batch statistics, as the reference does (its quirk Q13). `false` leaves the running
    /// statistics to the classification batches (the pairs are still normalised with their
    /// own batch statistics): see `ResNet::set_pair_updates_bn_statistics`. Written only when
    /// `false`, so the runs of the reference behaviour keep their ids.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub pair_updates_bn_statistics: bool,
}

fn default_n_images() -> usize {
    5000
}
fn default_pairs() -> usize {
    16
}
/// `regularization.targets`: where the pair similarities come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetSource {
    /// The centred cosine of the regularization images' pixels (the paper).
    #[default]
    Pixel,
    /// A `[N, N]` matrix of your own (`.safetensors` or `.npy`), by path.
    File(PathBuf),
}

impl std::fmt::Display for TargetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetSource::Pixel => f.write_str("pixel"),
            TargetSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl std::str::FromStr for TargetSource {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "" => {
                Err("expected `pixel` or the path of a target matrix, got an empty string".into())
            }
            "pixel" => Ok(TargetSource::Pixel),
            path => Ok(TargetSource::File(PathBuf::from(path))),
        }
    }
}
fn default_true() -> bool {
    true
}
fn is_true(value: &bool) -> bool {
    *value
}
fn is_zero(value: &usize) -> bool {
    *value == 0
}
fn default_boost_value() -> f32 {
    1.0
}

/// Optimisation (`--lr`, `--momentum`, …) and the cyclic step schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Number of epochs.
    pub epochs: usize,
    /// Classification batch size.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Phases per cycle of the step schedule.
    pub phase_num: usize,
    /// Epochs per phase.
    pub phase_duration: usize,
    /// LR multiplier per phase.
    pub decay_rate: f64,
    /// Share of the training set held out for validation.
    pub valid_portion: f64,
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Log training statistics every this-many steps.
    pub display_every: usize,
    /// Evaluate on the (augmented) training set after every epoch, as the reference does.
    pub eval_train: bool,
    /// Before every evaluation (each epoch's validation and test, so the best checkpoint and
    /// the attacks too), re-estimate the batch norms' running statistics as the average over
    /// this many training images (a multiple of `batch_size`, drawn afresh each epoch, with
    /// the training augmentation), weights untouched ("precise BN": see
    /// `ResNet::recalibrate_bn_statistics`). 0, the default, keeps the reference's exponential
    /// averages of the training steps. Written only when non-zero, so the runs of the
    /// reference behaviour keep their ids.
    #[serde(skip_serializing_if = "is_zero")]
    pub bn_recalibration_images: usize,
    /// Gaussian-noise augmentation, a defense baseline; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_augmentation: Option<NoiseAugmentationConfig>,
    /// Adversarial training, a defense baseline; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<AdversarialConfig>,
}

/// `[training.noise_augmentation]`: train on images with the Gaussian noise of the noise
/// attack (`u + σ·z` in unit scale, clamped to each image's range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseAugmentationConfig {
    /// σ in unit scale (fractions of the input range).
    pub std: f64,
    /// Share of every training batch that is replaced by noisy copies.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
}

/// `[training.adversarial]`: replace (a share of) every training batch by adversarial examples
/// of the current model, crafted in eval mode (running BN statistics, which the crafting
/// passes must not update) in the L∞ ball of radius `epsilon` (unit scale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdversarialConfig {
    /// `fgsm` (one step of ε, Goodfellow et al.) or `pgd` (random start, Madry et al.).
    pub attack: AdversarialAttack,
    /// L∞ radius in unit scale.
    pub epsilon: f64,
    /// PGD steps (default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// PGD step size relative to ε (default 2.5 / steps, Madry et al.'s choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_stepsize: Option<f64>,
    /// Share of every training batch that is replaced by adversarial examples.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
}

/// `training.adversarial.attack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdversarialAttack {
    /// One step of ε (Goodfellow et al.).
    Fgsm,
    /// Projected gradient descent with a random start (Madry et al.).
    Pgd,
}

fn default_fraction() -> f64 {
    1.0
}

/// PGD steps of adversarial training when `training.adversarial.steps` is absent.
pub const DEFAULT_ADVERSARIAL_STEPS: usize = 7;

impl AdversarialConfig {
    /// The attack that crafts the training batches.
    pub fn attack(&self) -> Result<pixreg_attacks::Pgd> {
        match self.attack {
            AdversarialAttack::Fgsm => {
                if self.steps.is_some() || self.rel_stepsize.is_some() {
                    bail!("training.adversarial: steps and rel_stepsize apply to `pgd` only");
                }
                Ok(pixreg_attacks::Pgd::fgsm(self.epsilon))
            }
            AdversarialAttack::Pgd => {
                let steps = self.steps.unwrap_or(DEFAULT_ADVERSARIAL_STEPS);
                Ok(pixreg_attacks::Pgd {
                    steps,
                    rel_stepsize: self.rel_stepsize.unwrap_or(2.5 / steps as f64),
                    ..pixreg_attacks::Pgd::linf(self.epsilon)
                })
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0 && self.epsilon <= 1.0) {
            bail!(
                "training.adversarial.epsilon must lie in (0, 1] (unit scale), got {}",
                self.epsilon
            );
        }
        if self.steps == Some(0) {
            bail!("training.adversarial.steps must be at least 1");
        }
        if let Some(r) = self.rel_stepsize {
            if !(r.is_finite() && r > 0.0) {
                bail!("training.adversarial.rel_stepsize must be positive, got {r}");
            }
        }
        check_fraction(self.fraction, "training.adversarial.fraction")?;
        self.attack().map(|_| ())
    }
}

fn check_fraction(value: f64, name: &str) -> Result<()> {
    if !(value > 0.0 && value <= 1.0) {
        bail!("{name} must lie in (0, 1], got {value}");
    }
    Ok(())
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch_size: 64,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            phase_num: 5,
            phase_duration: 4,
            decay_rate: 0.3,
            valid_portion: 0.01,
            seed: 0,
            display_every: 100,
            eval_train: true,
            bn_recalibration_images: 0,
            noise_augmentation: None,
            adversarial: None,
        }
    }
}

impl TrainingConfig {
    /// The reference's `adjust_lr`: `lr · decay^⌊(e mod (phases·duration)) / duration⌋` for
    /// 0-based epoch `e`.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let cycle = self.phase_num * self.phase_duration;
        let phase = (epoch % cycle) / self.phase_duration;
        self.lr * self.decay_rate.powi(phase as i32)
    }
}

/// What runs after training (the attacks are configured here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Attacks to run at the end of training (see `pixreg eval --help` for the names).
    #[serde(default)]
    pub attacks: Vec<crate::attack::AttackSpec>,
    /// Images attacked by the Boundary Attack (the paper: 1000).
    #[serde(default = "default_boundary_images")]
    pub boundary_images: usize,
    /// Repeats of the Boundary Attack (the paper: 5).
    #[serde(default = "default_boundary_repeats")]
    pub boundary_repeats: usize,
    /// Run directory of the unregularized surrogate for the transferred FGSM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate: Option<PathBuf>,
    /// Test images attacked by the PGD grids (the first ones of the test set); absent: all.
    /// Each image costs `steps` gradients per ε, the dearest evaluation on a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgd_images: Option<usize>,
    /// HopSkipJump (`hsj`) iterations; absent: foolbox's 64. Its gradient estimates take
    /// about `g·Σ√t` queries per image over the iterations (≈ 35 000 with the defaults), so
    /// fewer iterations are the way to bound its cost on a CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsj_steps: Option<usize>,
    /// HopSkipJump gradient-estimation queries at the first iteration (`g` above, growing
    /// with √t up to 10 000); absent: foolbox's 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsj_gradient_evals: Option<usize>,
}

impl EvaluationConfig {
    /// Checks the sizes and every attack's parameters; an attack listed twice is refused
    /// (its results would overwrite each other).
    pub fn validate(&self) -> Result<()> {
        if self.boundary_images == 0 || self.boundary_repeats == 0 {
            bail!("evaluation.boundary_images and evaluation.boundary_repeats must be positive");
        }
        if self.hsj_steps == Some(0) || self.hsj_gradient_evals == Some(0) {
            bail!("evaluation.hsj_steps and evaluation.hsj_gradient_evals must be positive when given");
        }
        if self.pgd_images == Some(0) {
            bail!("evaluation.pgd_images must be positive when given");
        }
        for (k, spec) in self.attacks.iter().enumerate() {
            let name = spec.name();
            if self.attacks[..k].iter().any(|s| s.name() == name) {
                bail!("evaluation.attacks lists `{name}` twice");
            }
            spec.validate()
                .with_context(|| format!("in `evaluation.attacks` (`{name}`)"))?;
        }
        Ok(())
    }

    /// The spec of `name`: the one `attacks` lists, else the preset (`pixreg eval --attacks`
    /// names attacks; their parameters come from the config).
    pub fn spec(&self, name: crate::attack::AttackName) -> crate::attack::AttackSpec {
        self.attacks
            .iter()
            .find(|s| s.name() == name)
            .cloned()
            .unwrap_or_else(|| crate::attack::AttackSpec::preset(name))
    }
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            attacks: Vec::new(),
            boundary_images: default_boundary_images(),
            boundary_repeats: default_boundary_repeats(),
            surrogate: None,
            pgd_images: None,
            hsj_steps: None,
            hsj_gradient_evals: None,
        }
    }
}

fn default_boundary_images() -> usize {
    1000
}
fn default_boundary_repeats() -> usize {
    5
}

/// The README's recommended (α, Th) for a task and regularization source; the JPEG CIFAR-10
/// copy takes CIFAR-10's values and every ImageNet-like source ImageNet's.
pub fn preset(task: DatasetName, source: DatasetName) -> Option<(f64, f64)> {
    use DatasetName::*;
    let key = |d: DatasetName| match d {
        Cifar10Jpeg => Cifar10,
        TinyImagenet => Imagenet,
        other => other,
    };
    match (key(task), key(source)) {
        (Cifar10 | Cifar100, Cifar10 | Cifar100 | Imagenet) => Some((10.0, 0.8)),
        (Mnist, Mnist) => Some((4.0, 0.2)),
        (Mnist, FashionMnist) => Some((10.0, 0.8)),
        (FashionMnist, Mnist) => Some((10.0, 0.4)),
        (FashionMnist, FashionMnist) => Some((10.0, 0.8)),
        _ => None,
    }
}

/// Whether a dataset can be a classification task (the ImageNet-like ones are regularization
/// sources only).
fn is_task(dataset: DatasetName) -> bool {
    dataset.family() != Family::ImagenetLike
}

/// Refuses a dataset that cannot be a task, listing those that can.
fn check_is_task(dataset: DatasetName) -> Result<()> {
    if !is_task(dataset) {
        let tasks: Vec<&str> = DatasetName::ALL
            .into_iter()
            .filter(|d| is_task(*d))
            .map(DatasetName::as_str)
            .collect();
        bail!(
            "task.dataset `{dataset}` is not a classification task; expected one of {}",
            tasks.join(", ")
        );
    }
    Ok(())
}

/// Fills, in the parsed file, the values that default to something derived: the
/// regularization source (the task's own dataset) and the preset α/Th of (task, source). The
/// typed config then has no option left to resolve. An unreadable `task.dataset` or
/// `regularization.source` is left to the typed reading, which names the key.
fn fill_derived_defaults(value: &mut toml::Table) -> Result<()> {
    // A name that does not parse is reported with its key here (the preset needs it); a
    // missing or non-string value is left to the typed reading.
    let parse = |value: Option<&toml::Value>, key: &str| -> Result<Option<DatasetName>> {
        match value.and_then(|v| v.as_str()) {
            None => Ok(None),
            Some(name) => name
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{e}\nin `{key}`")),
        }
    };
    let Some(task) = parse(
        value.get("task").and_then(|t| t.get("dataset")),
        "task.dataset",
    )?
    else {
        return Ok(());
    };
    check_is_task(task)?;
    let Some(toml::Value::Table(reg)) = value.get_mut("regularization") else {
        return Ok(());
    };
    let source = match reg.get("source") {
        None => task,
        Some(v) => match parse(Some(v), "regularization.source")? {
            Some(source) => source,
            None => return Ok(()),
        },
    };
    reg.entry("source")
        .or_insert_with(|| source.as_str().into());
    if !(reg.contains_key("alpha") && reg.contains_key("threshold")) {
        let Some((alpha, th)) = preset(task, source) else {
            bail!(
                "regularization.alpha and regularization.threshold must be given: the paper \
                 has no preset for task {task} with source {source}"
            );
        };
        reg.entry("alpha").or_insert(alpha.into());
        reg.entry("threshold").or_insert(th.into());
    }
    Ok(())
}

impl ExperimentConfig {
    /// Reads a TOML file and applies `key=value` overrides (dotted keys, values in TOML
    /// syntax; a bare word is a string), then fills presets and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text, overrides).with_context(|| format!("config {}", path.display()))
    }

    /// [`Self::load`] from a string.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Self> {
        let mut value: toml::Table = toml::from_str(text)?;
        for item in overrides {
            apply_override(&mut value, item)?;
        }
        fill_derived_defaults(&mut value)?;
        let config: ExperimentConfig = toml::Value::Table(value).try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects invalid values with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        check_is_task(self.task.dataset)?;
        if self.task.train_limit == Some(0) || self.task.test_limit == Some(0) {
            bail!("task.train_limit and task.test_limit must be positive when given");
        }
        if self.model.base_channels == 0 {
            bail!("model.base_channels must be positive");
        }
        let t = &self.training;
        if t.epochs == 0 {
            bail!("training.epochs must be at least 1");
        }
        if t.batch_size == 0 {
            bail!("training.batch_size must be at least 1");
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            bail!("training.lr must be positive, got {}", t.lr);
        }
        if !(0.0..1.0).contains(&t.momentum) {
            bail!("training.momentum must lie in [0, 1), got {}", t.momentum);
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            bail!("training.weight_decay must be non-negative");
        }
        if t.phase_num == 0 || t.phase_duration == 0 {
            bail!("training.phase_num and training.phase_duration must be at least 1");
        }
        if !(t.decay_rate.is_finite() && t.decay_rate > 0.0) {
            bail!("training.decay_rate must be positive");
        }
        if !(0.0..1.0).contains(&t.valid_portion) {
            bail!(
                "training.valid_portion must lie in [0, 1), got {}",
                t.valid_portion
            );
        }
        if t.display_every == 0 {
            bail!("training.display_every must be at least 1");
        }
        if !t.bn_recalibration_images.is_multiple_of(t.batch_size) {
            bail!(
                "training.bn_recalibration_images must be a multiple of training.batch_size ({}), got {}",
                t.batch_size,
                t.bn_recalibration_images
            );
        }
        if let Some(noise) = &t.noise_augmentation {
            if !(noise.std.is_finite() && noise.std > 0.0) {
                bail!(
                    "training.noise_augmentation.std must be positive (unit scale), got {}",
                    noise.std
                );
            }
            check_fraction(noise.fraction, "training.noise_augmentation.fraction")?;
        }
        if let Some(adversarial) = &t.adversarial {
            adversarial.validate()?;
            if t.noise_augmentation.is_some() {
                bail!(
                    "training.noise_augmentation and training.adversarial are separate defenses; \
                     configure one"
                );
            }
        }
        if let Some(reg) = &self.regularization {
            reg.validate()?;
        }
        self.evaluation.validate()?;
        if !self.evaluation.attacks.is_empty() {
            self.task.attack_task()?;
        }
        pixreg_models::device::cuda_ordinal(&self.device)?;
        self.check_training_step_fits()
    }

    /// Refuses a model width or batch whose training step cannot fit in memory.
    fn check_training_step_fits(&self) -> Result<()> {
        let side = if self.task.dataset.family() == Family::CifarLike {
            32
        } else {
            28
        };
        let channels = if self.task.rgb { 3 } else { 1 };
        let pairs = self
            .regularization
            .as_ref()
            .map_or(0, |r| r.pairs_per_batch);
        let images = self
            .training
            .batch_size
            .saturating_add(pairs.saturating_mul(2));
        let bytes = crate::limits::training_step_bytes(
            self.model.base_channels,
            images,
            side * side * channels,
        );
        crate::limits::check_fits(
            bytes,
            &format!(
                "a training step of width {} on {images} images (batch_size {} + 2 × \
                 pairs_per_batch {pairs})",
                self.model.base_channels, self.training.batch_size
            ),
            "lower model.base_channels, training.batch_size or regularization.pairs_per_batch",
        )
    }

    /// The canonical TOML of everything but `[evaluation]`: two configs with the same text
    /// train the same model.
    pub fn training_toml(&self) -> Result<String> {
        let training_only = Self {
            evaluation: EvaluationConfig::default(),
            ..self.clone()
        };
        Ok(toml::to_string(&training_only)?)
    }

    /// A stable identifier of the trained model: `<dataset>-<base|reg>-<16 hex digits>`, the
    /// hash (FNV-1a 64) of the canonical TOML of the resolved config without its
    /// `[evaluation]` section (and, for a user target matrix, of the sha256 of its file).
    /// Configs that train the same model share a run folder, whatever
    /// they evaluate; `pixreg eval` adds attacks to a finished run.
    pub fn run_id(&self) -> Result<String> {
        let canonical = self.training_toml()?;
        let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let kind = if self.regularization.is_some() {
            "reg"
        } else {
            "base"
        };
        // A user target matrix is named by a path whose file can change: its contents are
        // part of the model's identity (pixel targets are computed from the config alone).
        let target_file = self.regularization.as_ref().and_then(|r| match &r.targets {
            TargetSource::File(path) => Some(path),
            TargetSource::Pixel => None,
        });
        let hash = match target_file {
            Some(path) => {
                let digest = crate::provenance::sha256_file(path)
                    .with_context(|| format!("regularization.targets {}", path.display()))?;
                digest.bytes().fold(hash, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                })
            }
            None => hash,
        };
        let mut id = String::new();
        write!(id, "{}-{kind}-{hash:016x}", self.task.dataset)?;
        Ok(id)
    }
}

impl RegularizationConfig {
    fn validate(&self) -> Result<()> {
        let alpha = self.alpha;
        if !(alpha.is_finite() && alpha >= 0.0) {
            bail!("regularization.alpha must be non-negative, got {alpha}");
        }
        let th = self.threshold;
        if !(0.0..=1.0).contains(&th) {
            bail!("regularization.threshold must lie in [0, 1], got {th}");
        }
        if let Some(th2) = self.threshold2 {
            if !(0.0..=1.0).contains(&th2) || th2 >= th {
                bail!("regularization.threshold2 must lie in [0, threshold), got {th2}");
            }
        }
        if self.range == PairRange::Double && self.threshold2.is_none() {
            bail!("regularization.range = \"double\" needs regularization.threshold2");
        }
        if self.n_images < 2 {
            bail!("regularization.n_images must be at least 2");
        }
        if self.pairs_per_batch == 0 {
            bail!("regularization.pairs_per_batch (k) must be at least 1");
        }
        if !(self.boost_value.is_finite() && self.boost_value > 0.0 && self.boost_value <= 1.0) {
            bail!("regularization.boost_value must lie in (0, 1]");
        }
        Ok(())
    }
}

/// Opens the device `cpu` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<candle_core::Device> {
    pixreg_models::device::open_device(name).with_context(|| {
        format!("cannot open {name} (build with `--features cuda` on a machine with a GPU)")
    })
}

/// Sets `a.b.c = value` in a TOML table; `value` is parsed as TOML, falling back to a string.
fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let Some((key, raw)) = item.split_once('=') else {
        bail!("--set expects key=value, got `{item}`");
    };
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().context("empty --set key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("--set {key}: `{part}` is not a section"))?;
    }
    current.insert(last.to_string(), value);
    Ok(())
}
