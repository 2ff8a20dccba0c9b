//! The paper's protocol in one place: its tasks and ε grids, and the preset of every attack
//! it runs (`paper()`), so that what "the paper's setting" means is read in one file.
//!
//! | preset | what |
//! |---|---|
//! | [`EpsilonGrid::paper`] | `numpy.linspace(0, max, 10)` per task and attack (spec §1.1) |
//! | [`NoiseAttack::paper`] | Gaussian / uniform / salt-and-pepper noise over the task's grid |
//! | [`Fgsm::paper`] | the transferred FGSM over the task's grid |
//! | [`BoundaryAttack::paper`] | foolbox 3.3.4's Boundary Attack with 50 steps |
//! | [`DecisionProtocol::paper`] | 1000 test images × 5 repeats, median per-pixel squared L2 |

use serde::{Deserialize, Serialize};

use crate::boundary::BoundaryAttack;
use crate::noise::{linspace, NoiseAttack, NoiseKind};
use crate::protocol::{DecisionProtocol, DistanceChannels};
use crate::whitebox::Fgsm;

/// The paper's tasks (they fix the ε grids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// MNIST.
    Mnist,
    /// Fashion-MNIST.
    FashionMnist,
    /// CIFAR-10.
    Cifar10,
    /// CIFAR-100.
    Cifar100,
}

/// The accuracy-type attacks with a paper ε grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GridAttack {
    /// Gaussian noise (σ).
    Gaussian,
    /// Uniform noise (half-width).
    Uniform,
    /// Salt-and-pepper (hit probability).
    SaltPepper,
    /// (Transferred) FGSM (ε in unit scale).
    Fgsm,
}

/// ε grids of the paper (`numpy.linspace(0, max, 10)`, spec §1.1).
pub struct EpsilonGrid;

impl EpsilonGrid {
    /// Number of grid points used by the reference.
    pub const POINTS: usize = 10;

    /// The largest ε of the paper grid for a task and attack (unit scale).
    pub fn paper_max(task: Task, attack: GridAttack) -> f64 {
        match (task, attack) {
            (Task::Mnist | Task::FashionMnist, GridAttack::SaltPepper) => 0.3,
            (Task::Mnist | Task::FashionMnist, _) => 0.5,
            (Task::Cifar10, GridAttack::Fgsm) => 0.02,
            (Task::Cifar100, GridAttack::Fgsm) => 0.005,
            (Task::Cifar10 | Task::Cifar100, _) => 0.1,
        }
    }

    /// The 10-point paper grid, first value 0, last value the maximum.
    pub fn paper(task: Task, attack: GridAttack) -> Vec<f64> {
        linspace(0.0, Self::paper_max(task, attack), Self::POINTS)
    }
}

impl NoiseAttack {
    /// The paper's grid for `task`.
    pub fn paper(task: Task, kind: NoiseKind) -> Self {
        let attack = match kind {
            NoiseKind::Gaussian => GridAttack::Gaussian,
            NoiseKind::Uniform => GridAttack::Uniform,
            NoiseKind::SaltPepper => GridAttack::SaltPepper,
        };
        Self::new(kind, EpsilonGrid::paper(task, attack))
    }
}

impl Fgsm {
    /// The paper's transferred-FGSM grid for `task`.
    pub fn paper(task: Task) -> Self {
        Self::new(EpsilonGrid::paper(task, GridAttack::Fgsm))
    }
}

impl BoundaryAttack {
    /// The paper protocol's attack: foolbox defaults with `steps = 50` (bug B1: step-size
    /// adaptation can never trigger).
    pub fn paper() -> Self {
        Self {
            steps: 50,
            ..Self::default()
        }
    }
}

impl DecisionProtocol {
    /// The paper protocol: Boundary Attack with 50 steps, 1000 images, 5 repeats, all channels.
    pub fn paper(seed: u64) -> Self {
        Self {
            attack: BoundaryAttack::paper(),
            n_images: 1000,
            repeats: 5,
            seed,
            indices: None,
            channels: DistanceChannels::All,
        }
    }
}
