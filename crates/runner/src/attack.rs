//! The named evaluations of `pixreg eval` and `evaluation.attacks`: [`AttackName`] parsed once
//! at the boundary (config, `--attacks`, the catalogue's columns), and [`AttackRun`], which
//! runs one of them on a loaded model with the paper's protocol and returns its report.
//!
//! ```
//! use pixreg_runner::attack::AttackName;
//!
//! let name: AttackName = "boundary-converged".parse()?;
//! assert_eq!(name, AttackName::BoundaryConverged);
//! assert_eq!(name.to_string(), "boundary-converged");
//! assert!("boundry".parse::<AttackName>().unwrap_err().contains("expected one of gaussian"));
//! # Ok::<(), String>(())
//! ```

use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use pixreg_attacks::{
    global_bounds, BoundaryAttack, CorruptionEval, DecisionBasedAttack, DecisionProtocol,
    DifferentiableClassifier, Fgsm, FnClassifier, HopSkipJump, NoiseAttack, NoiseKind, Pgd, Task,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::EvaluationConfig;
use crate::provenance::sha256_file;
use crate::run_dir::RunDir;

/// One named evaluation. The names (`Display`/`FromStr`, serde) are the contract of
/// `--attacks`, `evaluation.attacks`, the keys of `results.json` and the catalogue's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackName {
    /// Additive Gaussian noise over the task's σ grid.
    Gaussian,
    /// Additive uniform noise over the task's grid.
    Uniform,
    /// Salt-and-pepper noise over the task's grid.
    Saltpepper,
    /// FGSM transferred from the unregularized surrogate (white-box without one).
    Fgsm,
    /// The Boundary Attack under the paper's protocol (median per-pixel squared L2).
    Boundary,
    /// The Boundary Attack run to convergence ([`CONVERGED_BOUNDARY_STEPS`] steps).
    BoundaryConverged,
    /// HopSkipJump under the same protocol.
    Hsj,
    /// White-box PGD over an L∞ budget grid.
    PgdLinf,
    /// White-box PGD over an L2 budget grid.
    PgdL2,
    /// Mean accuracy over the common corruptions.
    Corruptions,
}

impl AttackName {
    /// Every attack, in the order `pixreg eval --help` lists them.
    pub const ALL: [AttackName; 10] = [
        AttackName::Gaussian,
        AttackName::Uniform,
        AttackName::Saltpepper,
        AttackName::Fgsm,
        AttackName::Boundary,
        AttackName::BoundaryConverged,
        AttackName::Hsj,
        AttackName::PgdLinf,
        AttackName::PgdL2,
        AttackName::Corruptions,
    ];

    /// The attack's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttackName::Gaussian => "gaussian",
            AttackName::Uniform => "uniform",
            AttackName::Saltpepper => "saltpepper",
            AttackName::Fgsm => "fgsm",
            AttackName::Boundary => "boundary",
            AttackName::BoundaryConverged => "boundary-converged",
            AttackName::Hsj => "hsj",
            AttackName::PgdLinf => "pgd-linf",
            AttackName::PgdL2 => "pgd-l2",
            AttackName::Corruptions => "corruptions",
        }
    }

    /// The names, comma-separated (for messages).
    pub fn list() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl std::fmt::Display for AttackName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttackName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown attack `{s}`; expected one of {}", Self::list()))
    }
}

/// Steps of the converged Boundary Attack (enough for the step-size adaptation to act).
pub const CONVERGED_BOUNDARY_STEPS: usize = 5000;

/// Everything one evaluation needs: the model under attack, the test set at model scale, the
/// task's protocol, and where progress goes.
pub struct AttackRun<'a, C> {
    /// The run being evaluated (progress lines go to its log).
    pub run: &'a RunDir,
    /// The model under attack.
    pub model: &'a C,
    /// Test images at model scale.
    pub images: &'a Tensor,
    /// Their labels.
    pub labels: &'a [u32],
    /// The protocol's task (ε grids, image counts).
    pub task: Task,
    /// The run's `[evaluation]` section (Boundary/HSJ/PGD sizes).
    pub evaluation: &'a EvaluationConfig,
    /// Seed of the random attacks (the run's training seed).
    pub seed: u64,
    /// The surrogate run of the transferred FGSM, if any.
    pub surrogate: Option<&'a Path>,
    /// The device the surrogate is loaded on.
    pub device: &'a Device,
    /// This attack's position among the run's `(index, count)`, for progress lines.
    pub position: (usize, usize),
}

impl<C: DifferentiableClassifier> AttackRun<'_, C> {
    /// Runs `attack` and returns its report (fractions as `pixreg-attacks` gives them).
    pub fn report(&self, attack: AttackName) -> Result<Value> {
        match attack {
            AttackName::Gaussian => self.noise(NoiseKind::Gaussian),
            AttackName::Uniform => self.noise(NoiseKind::Uniform),
            AttackName::Saltpepper => self.noise(NoiseKind::SaltPepper),
            AttackName::Fgsm => self.fgsm(),
            AttackName::Boundary => self.decision(attack, BoundaryAttack::paper(), Value::Null),
            AttackName::BoundaryConverged => self.decision(
                attack,
                BoundaryAttack::converged(CONVERGED_BOUNDARY_STEPS),
                Value::Null,
            ),
            AttackName::Hsj => {
                let hsj = hop_skip_jump(self.evaluation);
                let settings = json!({
                    "steps": hsj.steps,
                    "initial_gradient_evals": hsj.initial_gradient_eval_steps,
                });
                self.decision(attack, hsj, settings)
            }
            AttackName::PgdLinf => self.pgd(attack, Pgd::linf(0.0), pgd_linf_grid(self.task)),
            AttackName::PgdL2 => self.pgd(attack, Pgd::l2(0.0), pgd_l2_grid(self.task)),
            AttackName::Corruptions => Ok(serde_json::to_value(CorruptionEval::default().run(
                self.model,
                self.images,
                self.labels,
                self.seed,
            )?)?),
        }
    }

    fn noise(&self, kind: NoiseKind) -> Result<Value> {
        let attack = NoiseAttack::paper(self.task, kind);
        let report = attack.run(self.model, self.images, self.labels, self.seed)?;
        Ok(serde_json::to_value(report)?)
    }

    /// FGSM transferred from the surrogate's best checkpoint, or white-box without one.
    fn fgsm(&self) -> Result<Value> {
        let fgsm = Fgsm::paper(self.task);
        let Some(dir) = self.surrogate else {
            let report = fgsm.run_white_box(self.model, self.images, self.labels)?;
            return Ok(serde_json::to_value(report)?);
        };
        let sur_run = RunDir::open(dir)?;
        let (sur_checkpoint, sur_model) = crate::eval::load_best(&sur_run, self.device)?;
        let surrogate = FnClassifier::new(
            |t: &Tensor| sur_model.forward_eval(t).map_err(candle_core::Error::wrap),
            global_bounds(self.images)?,
        );
        let report = fgsm.run_transferred(&surrogate, self.model, self.images, self.labels)?;
        let mut value = serde_json::to_value(report)?;
        value["surrogate"] = json!(sur_run.id());
        value["surrogate_checkpoint_sha256"] = json!(sha256_file(&sur_checkpoint)?);
        Ok(value)
    }

    /// A decision attack under the paper's protocol (images and repeats from the config);
    /// `settings`, unless null, records the attack's non-default knobs in the report.
    fn decision<A: DecisionBasedAttack + Clone>(
        &self,
        name: AttackName,
        attack: A,
        settings: Value,
    ) -> Result<Value> {
        let mut protocol = DecisionProtocol::paper(self.seed).with_attack(attack);
        protocol.n_images = self.evaluation.boundary_images.min(self.images.dim(0)?);
        protocol.repeats = self.evaluation.boundary_repeats;
        let mut progress = AttackProgress::new(self.run, name, self.position, "repeat");
        let repeats = protocol.repeats;
        let report =
            protocol.run_observed(self.model, self.images, &mut |_| progress.done(repeats))?;
        let n_images = report.indices.len() as f64;
        let queries: f64 = report
            .repeats
            .iter()
            .map(|r| r.mean_queries * n_images)
            .sum();
        let mut value = json!({
            "queries": queries,
            "queries_per_second": queries / report.wall_seconds,
            "mean_of_medians": report.mean_of_medians,
            "medians": report.medians,
            "success_rate": report.success_rate,
            "n_images": report.indices.len(),
            "repeats": report.repeats,
            "wall_seconds": report.wall_seconds,
        });
        if !settings.is_null() {
            value["settings"] = settings;
        }
        Ok(value)
    }

    /// A PGD budget grid on the first `pgd_images` test images.
    fn pgd(&self, name: AttackName, pgd: Pgd, grid: Vec<f64>) -> Result<Value> {
        let n = self
            .evaluation
            .pgd_images
            .unwrap_or(self.labels.len())
            .min(self.labels.len());
        let mut progress = AttackProgress::new(self.run, name, self.position, "ε");
        let points = grid.len();
        let report = pgd.run_grid_observed(
            self.model,
            &self.images.narrow(0, 0, n)?,
            &self.labels[..n],
            &grid,
            self.seed,
            &mut |_, _| progress.done(points),
        )?;
        Ok(serde_json::to_value(report)?)
    }
}

/// Progress within one long attack (the repeats of a decision attack, the ε of a PGD grid):
/// one line per finished part in log.txt, with the elapsed time and an ETA from it, also on
/// the terminal when stderr is one (xtask's children write to files: their bars read the log).
struct AttackProgress<'a> {
    run: &'a RunDir,
    prefix: String,
    unit: &'static str,
    done: usize,
    started: std::time::Instant,
    terminal: bool,
}

impl<'a> AttackProgress<'a> {
    fn new(
        run: &'a RunDir,
        attack: AttackName,
        (k, n): (usize, usize),
        unit: &'static str,
    ) -> Self {
        use std::io::IsTerminal;
        Self {
            run,
            prefix: format!("evaluating {attack} ({}/{n})", k + 1),
            unit,
            done: 0,
            started: std::time::Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// One more of `total` parts is done.
    fn done(&mut self, total: usize) -> pixreg_attacks::Result<()> {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = elapsed / self.done as f64 * total.saturating_sub(self.done) as f64;
        let line = format!(
            "{}: {} {}/{total} done after {elapsed:.1} s, ETA {left:.0} s",
            self.prefix, self.unit, self.done
        );
        if self.terminal {
            eprintln!("{line}");
        }
        self.run
            .log(&line)
            .map_err(|e| pixreg_attacks::AttackError::Progress(format!("{e:#}")))
    }
}

/// The attack protocol (ε grids, Boundary Attack indices) of a task: the JPEG CIFAR-10 copy
/// is attacked as CIFAR-10.
pub fn attack_task(dataset: pixreg_datasets::DatasetName) -> Result<Task> {
    use pixreg_datasets::DatasetName;
    Ok(match dataset {
        DatasetName::Mnist => Task::Mnist,
        DatasetName::FashionMnist => Task::FashionMnist,
        DatasetName::Cifar10 | DatasetName::Cifar10Jpeg => Task::Cifar10,
        DatasetName::Cifar100 => Task::Cifar100,
        other => anyhow::bail!("no attack protocol for dataset {other}"),
    })
}

/// ε grid of the PGD L∞ column, in unit scale: the customary budgets, up to 0.3 for MNIST-type
/// tasks and up to 8/255 for CIFAR.
fn pgd_linf_grid(task: Task) -> Vec<f64> {
    match task {
        Task::Mnist | Task::FashionMnist => vec![0.0, 0.05, 0.1, 0.15, 0.2, 0.3],
        Task::Cifar10 | Task::Cifar100 => {
            vec![0.0, 1.0 / 255.0, 2.0 / 255.0, 4.0 / 255.0, 8.0 / 255.0]
        }
    }
}

/// L2 budgets (unit scale): MNIST up to 2.0, CIFAR up to 0.5, the customary ranges.
fn pgd_l2_grid(task: Task) -> Vec<f64> {
    match task {
        Task::Mnist | Task::FashionMnist => vec![0.0, 0.5, 1.0, 1.5, 2.0],
        Task::Cifar10 | Task::Cifar100 => vec![0.0, 0.125, 0.25, 0.5],
    }
}

/// The HopSkipJump of an `[evaluation]` section: foolbox's defaults, with `hsj_steps` and
/// `hsj_gradient_evals` where given.
fn hop_skip_jump(evaluation: &EvaluationConfig) -> HopSkipJump {
    let defaults = HopSkipJump::default();
    HopSkipJump {
        steps: evaluation.hsj_steps.unwrap_or(defaults.steps),
        initial_gradient_eval_steps: evaluation
            .hsj_gradient_evals
            .unwrap_or(defaults.initial_gradient_eval_steps),
        ..defaults
    }
}
