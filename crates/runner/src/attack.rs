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

use crate::config::EvaluationConfig;
use crate::provenance::sha256_file;
use crate::results::{
    AttackReport, CorruptionResult, CurveResult, DecisionResult, DecisionSettings,
};
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

/// One evaluation with its parameters, as `evaluation.attacks` lists it: a name (the
/// paper's parameters, with the `[evaluation]` section's image counts) or a table naming the
/// attack and what differs, e.g. `{ attack = "hsj", steps = 20 }` or
/// `{ attack = "gaussian", epsilons = [0.0, 0.1, 0.2] }`. A spec without parameters is
/// written back as its name, so configs that only name attacks read as before.
///
/// ```
/// use pixreg_runner::attack::{AttackName, AttackSpec};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Evaluation { attacks: Vec<AttackSpec> }
/// let e: Evaluation = toml::from_str(r#"attacks = ["boundary", { attack = "hsj", steps = 20 }]"#)?;
/// assert_eq!(e.attacks[0], AttackSpec::preset(AttackName::Boundary));
/// assert_eq!(e.attacks[1].name(), AttackName::Hsj);
/// let AttackSpec::Hsj(hsj) = &e.attacks[1] else { unreachable!() };
/// assert_eq!(hsj.steps, Some(20));
/// let bad = toml::from_str::<Evaluation>(r#"attacks = [{ attack = "hsj", stpes = 20 }]"#);
/// assert!(bad.unwrap_err().to_string().contains("unknown field `stpes`"));
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "attack", rename_all = "kebab-case")]
pub enum AttackSpec {
    /// Additive Gaussian noise.
    Gaussian(GridParams),
    /// Additive uniform noise.
    Uniform(GridParams),
    /// Salt-and-pepper noise.
    Saltpepper(GridParams),
    /// FGSM, transferred from the surrogate (white-box without one).
    Fgsm(GridParams),
    /// The Boundary Attack under the paper's protocol.
    Boundary(DecisionParams),
    /// The Boundary Attack run to convergence.
    BoundaryConverged(DecisionParams),
    /// HopSkipJump under the same protocol.
    Hsj(HsjParams),
    /// White-box PGD, L∞.
    PgdLinf(PgdParams),
    /// White-box PGD, L2.
    PgdL2(PgdParams),
    /// The common corruptions.
    Corruptions(CorruptionParams),
}

/// Parameters of an ε-grid attack (noise, FGSM).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GridParams {
    /// ε grid in unit scale; absent: the paper's grid for the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilons: Option<Vec<f64>>,
}

/// Parameters of a Boundary Attack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionParams {
    /// Attack iterations; absent: the paper's 50 (`boundary`) or
    /// [`CONVERGED_BOUNDARY_STEPS`] (`boundary-converged`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Images attacked; absent: `evaluation.boundary_images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Repeats; absent: `evaluation.boundary_repeats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<usize>,
}

/// Parameters of HopSkipJump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsjParams {
    /// Iterations; absent: `evaluation.hsj_steps`, else foolbox's 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Gradient-estimation queries at the first iteration; absent:
    /// `evaluation.hsj_gradient_evals`, else foolbox's 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_gradient_evals: Option<usize>,
    /// Images attacked; absent: `evaluation.boundary_images`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Repeats; absent: `evaluation.boundary_repeats`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<usize>,
}

/// Parameters of a PGD grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgdParams {
    /// Budgets in unit scale; absent: the customary grid for the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilons: Option<Vec<f64>>,
    /// Test images attacked (the first ones); absent: `evaluation.pgd_images`, else all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
}

/// Parameters of the corruption evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorruptionParams {
    /// Severities (each 1..=5); absent: all five.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severities: Option<Vec<u8>>,
}

impl AttackSpec {
    /// The attack with its preset parameters.
    pub fn preset(name: AttackName) -> Self {
        match name {
            AttackName::Gaussian => AttackSpec::Gaussian(GridParams::default()),
            AttackName::Uniform => AttackSpec::Uniform(GridParams::default()),
            AttackName::Saltpepper => AttackSpec::Saltpepper(GridParams::default()),
            AttackName::Fgsm => AttackSpec::Fgsm(GridParams::default()),
            AttackName::Boundary => AttackSpec::Boundary(DecisionParams::default()),
            AttackName::BoundaryConverged => {
                AttackSpec::BoundaryConverged(DecisionParams::default())
            }
            AttackName::Hsj => AttackSpec::Hsj(HsjParams::default()),
            AttackName::PgdLinf => AttackSpec::PgdLinf(PgdParams::default()),
            AttackName::PgdL2 => AttackSpec::PgdL2(PgdParams::default()),
            AttackName::Corruptions => AttackSpec::Corruptions(CorruptionParams::default()),
        }
    }

    /// The attack's name (its key in `results.json`).
    pub fn name(&self) -> AttackName {
        match self {
            AttackSpec::Gaussian(_) => AttackName::Gaussian,
            AttackSpec::Uniform(_) => AttackName::Uniform,
            AttackSpec::Saltpepper(_) => AttackName::Saltpepper,
            AttackSpec::Fgsm(_) => AttackName::Fgsm,
            AttackSpec::Boundary(_) => AttackName::Boundary,
            AttackSpec::BoundaryConverged(_) => AttackName::BoundaryConverged,
            AttackSpec::Hsj(_) => AttackName::Hsj,
            AttackSpec::PgdLinf(_) => AttackName::PgdLinf,
            AttackSpec::PgdL2(_) => AttackName::PgdL2,
            AttackSpec::Corruptions(_) => AttackName::Corruptions,
        }
    }

    /// Checks the parameters: positive counts, finite non-negative non-empty ε grids
    /// (salt-and-pepper probabilities at most 1), severities 1..=5.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &str, v: Option<usize>| match v {
            Some(0) => anyhow::bail!("`{what}` must be positive"),
            _ => Ok(()),
        };
        let grid = |epsilons: &Option<Vec<f64>>, max: f64| match epsilons {
            Some(e) if e.is_empty() => anyhow::bail!("`epsilons` must not be empty"),
            Some(e) if e.iter().any(|x| !x.is_finite() || *x < 0.0 || *x > max) => {
                anyhow::bail!("`epsilons` must be finite, at least 0 and at most {max}: {e:?}")
            }
            _ => Ok(()),
        };
        match self {
            AttackSpec::Saltpepper(p) => grid(&p.epsilons, 1.0),
            AttackSpec::Gaussian(p) | AttackSpec::Uniform(p) | AttackSpec::Fgsm(p) => {
                grid(&p.epsilons, f64::MAX)
            }
            AttackSpec::Boundary(p) | AttackSpec::BoundaryConverged(p) => {
                positive("steps", p.steps)?;
                positive("images", p.images)?;
                positive("repeats", p.repeats)
            }
            AttackSpec::Hsj(p) => {
                positive("steps", p.steps)?;
                positive("initial_gradient_evals", p.initial_gradient_evals)?;
                positive("images", p.images)?;
                positive("repeats", p.repeats)
            }
            AttackSpec::PgdLinf(p) | AttackSpec::PgdL2(p) => {
                positive("images", p.images)?;
                grid(&p.epsilons, f64::MAX)
            }
            AttackSpec::Corruptions(p) => match &p.severities {
                Some(s) if s.is_empty() || s.iter().any(|v| !(1..=5).contains(v)) => {
                    anyhow::bail!("`severities` must be a non-empty list of 1..=5: {s:?}")
                }
                _ => Ok(()),
            },
        }
    }

    /// True when no parameter differs from the preset.
    pub fn is_preset(&self) -> bool {
        *self == Self::preset(self.name())
    }
}

impl Serialize for AttackSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.is_preset() {
            s.serialize_str(self.name().as_str())
        } else {
            AttackSpec::serialize(self, s)
        }
    }
}

impl<'de> Deserialize<'de> for AttackSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct NameOrTable;
        impl<'de> serde::de::Visitor<'de> for NameOrTable {
            type Value = AttackSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attack name or a table `{ attack = \"name\", ... }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<AttackSpec, E> {
                v.parse().map(AttackSpec::preset).map_err(E::custom)
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> std::result::Result<AttackSpec, M::Error> {
                AttackSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(NameOrTable)
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
    /// Runs `spec` and returns its report (accuracies in %, as `results.json` holds them).
    pub fn report(&self, spec: &AttackSpec) -> Result<AttackReport> {
        let name = spec.name();
        Ok(match spec {
            AttackSpec::Gaussian(p) => AttackReport::Curve(self.noise(NoiseKind::Gaussian, p)?),
            AttackSpec::Uniform(p) => AttackReport::Curve(self.noise(NoiseKind::Uniform, p)?),
            AttackSpec::Saltpepper(p) => AttackReport::Curve(self.noise(NoiseKind::SaltPepper, p)?),
            AttackSpec::Fgsm(p) => AttackReport::Curve(self.fgsm(p)?),
            AttackSpec::Boundary(p) | AttackSpec::BoundaryConverged(p) => {
                let preset = match name {
                    AttackName::Boundary => BoundaryAttack::paper(),
                    _ => BoundaryAttack::converged(CONVERGED_BOUNDARY_STEPS),
                };
                let attack = BoundaryAttack {
                    steps: p.steps.unwrap_or(preset.steps),
                    ..preset
                };
                // Steps are recorded only where they differ from the preset's.
                let settings =
                    p.steps
                        .filter(|&s| s != preset.steps)
                        .map(|steps| DecisionSettings {
                            steps,
                            initial_gradient_evals: None,
                        });
                let size = (p.images, p.repeats);
                AttackReport::Decision(self.decision(name, attack, size, settings)?)
            }
            AttackSpec::Hsj(p) => {
                let hsj = hop_skip_jump(p, self.evaluation);
                let settings = DecisionSettings {
                    steps: hsj.steps,
                    initial_gradient_evals: Some(hsj.initial_gradient_eval_steps),
                };
                let size = (p.images, p.repeats);
                AttackReport::Decision(self.decision(name, hsj, size, Some(settings))?)
            }
            AttackSpec::PgdLinf(p) => {
                let grid = p
                    .epsilons
                    .clone()
                    .unwrap_or_else(|| pgd_linf_grid(self.task));
                AttackReport::Curve(self.pgd(name, Pgd::linf(0.0), grid, p.images)?)
            }
            AttackSpec::PgdL2(p) => {
                let grid = p.epsilons.clone().unwrap_or_else(|| pgd_l2_grid(self.task));
                AttackReport::Curve(self.pgd(name, Pgd::l2(0.0), grid, p.images)?)
            }
            AttackSpec::Corruptions(p) => {
                let mut eval = CorruptionEval::default();
                if let Some(severities) = &p.severities {
                    eval.severities = severities.clone();
                }
                let report = eval.run(self.model, self.images, self.labels, self.seed)?;
                AttackReport::Corruptions(CorruptionResult::from(report))
            }
        })
    }

    fn noise(&self, kind: NoiseKind, params: &GridParams) -> Result<CurveResult> {
        let mut attack = NoiseAttack::paper(self.task, kind);
        if let Some(epsilons) = &params.epsilons {
            attack.epsilons = epsilons.clone();
        }
        Ok(attack
            .run(self.model, self.images, self.labels, self.seed)?
            .into())
    }

    /// FGSM transferred from the surrogate's best checkpoint, or white-box without one.
    fn fgsm(&self, params: &GridParams) -> Result<CurveResult> {
        let mut fgsm = Fgsm::paper(self.task);
        if let Some(epsilons) = &params.epsilons {
            fgsm.epsilons = epsilons.clone();
        }
        let Some(dir) = self.surrogate else {
            return Ok(fgsm
                .run_white_box(self.model, self.images, self.labels)?
                .into());
        };
        let sur_run = RunDir::open(dir)?;
        let (sur_checkpoint, sur_model) = crate::eval::load_best(&sur_run, self.device)?;
        let surrogate = FnClassifier::new(
            |t: &Tensor| {
                sur_model
                    .forward_inference(t)
                    .map_err(candle_core::Error::wrap)
            },
            global_bounds(self.images)?,
        );
        let report = fgsm.run_transferred(&surrogate, self.model, self.images, self.labels)?;
        Ok(CurveResult {
            surrogate: Some(sur_run.id()),
            surrogate_checkpoint_sha256: Some(sha256_file(&sur_checkpoint)?),
            ..report.into()
        })
    }

    /// A decision attack under the paper's protocol, on `(images, repeats)` where given, else
    /// the `[evaluation]` section's, with its non-default `settings` recorded.
    fn decision<A: DecisionBasedAttack + Clone>(
        &self,
        name: AttackName,
        attack: A,
        (images, repeats): (Option<usize>, Option<usize>),
        settings: Option<DecisionSettings>,
    ) -> Result<DecisionResult> {
        let mut protocol = DecisionProtocol::paper(self.seed).with_attack(attack);
        protocol.n_images = images
            .unwrap_or(self.evaluation.boundary_images)
            .min(self.images.dim(0)?);
        protocol.repeats = repeats.unwrap_or(self.evaluation.boundary_repeats);
        let mut progress = AttackProgress::new(self.run, name, self.position, "repeat");
        let repeats = protocol.repeats;
        let report =
            protocol.run_observed(self.model, self.images, &mut |_| progress.done(repeats))?;
        Ok(DecisionResult::new(report, settings))
    }

    /// A PGD budget grid on the first `images` (else `evaluation.pgd_images`) test images.
    fn pgd(
        &self,
        name: AttackName,
        pgd: Pgd,
        grid: Vec<f64>,
        images: Option<usize>,
    ) -> Result<CurveResult> {
        let n = images
            .or(self.evaluation.pgd_images)
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
        Ok(report.into())
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

/// The HopSkipJump of a spec: foolbox's defaults, with the spec's (else the `[evaluation]`
/// section's `hsj_steps` and `hsj_gradient_evals`) where given.
fn hop_skip_jump(params: &HsjParams, evaluation: &EvaluationConfig) -> HopSkipJump {
    let defaults = HopSkipJump::default();
    HopSkipJump {
        steps: params
            .steps
            .or(evaluation.hsj_steps)
            .unwrap_or(defaults.steps),
        initial_gradient_eval_steps: params
            .initial_gradient_evals
            .or(evaluation.hsj_gradient_evals)
            .unwrap_or(defaults.initial_gradient_eval_steps),
        ..defaults
    }
}
