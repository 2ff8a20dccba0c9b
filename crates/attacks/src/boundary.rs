//! foolbox 3.3.4 `BoundaryAttack` (Brendel et al. 2018), spec §2, batched across images.
//!
//! Per image and step: one Gaussian direction `η` (drawn independently per image: foolbox shares
//! it across a batch, the reference attacks one image at a time, so independent draws are the
//! faithful batched port, bug B19), an orthogonal step on the sphere of radius `r = ‖x0 − x‖`
//! around the original (`‖c_sph − x0‖ = r`), then a source step of length `μ·r` towards the
//! original (`‖c − x0‖ = (1 − μ)·r` when no clipping occurs). The candidate is accepted iff it
//! is adversarial and closer. Every `update_stats_every_k` steps the spherical candidate is
//! also queried and the success queues (100 spherical / 30 step) drive the step-size
//! adaptation. With the paper's `steps = 50` the queues can never fill, so `σ = μ = 0.01`
//! throughout and every accepted step shrinks the distance by exactly 1 % (spec §2.6).
//!
//! The attack runs in unit space `[0,1]^D`; see [`crate::classifier`] (`Oracle`) for why this
//! is exact in distribution.

use crate::blended::{BlendedUniformNoiseInit, Prepared};
use crate::classifier::{l2_dist, norm, Classifier, DEFAULT_MAX_BATCH};
use crate::error::{invalid, Result};
use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Boundary Attack configuration (defaults = foolbox 3.3.4, except `steps` in [`Self::paper`]).
///
/// # Examples
///
/// The paper's 50-step attack on two 1×4×4 images of a classifier that thresholds the mean
/// pixel at 0.5. Each outcome is checked to be adversarial by querying the model with it.
/// The outcome is in unit space, which equals model scale here because the input box is
/// `[0, 1]`. A proposal is only accepted if it is closer to the original, so once some step
/// has been accepted the final point is strictly closer than the initialisation.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::{predict_batched, BoundaryAttack, DecisionBasedAttack, FnClassifier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dev = Device::Cpu;
/// // Class 1 iff the mean pixel exceeds 0.5 (logits ∓(mean − 0.5)).
/// let model = FnClassifier::new(
///     |x: &Tensor| {
///         let z = (x.flatten_from(1)?.mean_keepdim(1)? - 0.5)?;
///         Tensor::cat(&[&z.neg()?, &z], 1)
///     },
///     (0.0, 1.0),
/// );
/// // A dark image (mean 0.25, class 0) and a bright one (mean 0.75, class 1).
/// let pixels: Vec<f32> = [0.1f32, 0.6]
///     .iter()
///     .flat_map(|&o| (0..16).map(move |j| o + 0.1 * (j % 4) as f32))
///     .collect();
/// let images = Tensor::from_vec(pixels, (2, 1, 4, 4), &dev)?;
/// let labels = [0u32, 1];
///
/// let outcomes = BoundaryAttack::paper().run(&model, &images, &labels, 0)?;
/// for (o, &y) in outcomes.iter().zip(&labels) {
///     assert!(o.success);
///     let adv = Tensor::from_slice(&o.adversarial, (1, 1, 4, 4), &dev)?;
///     assert_ne!(predict_batched(&model, &adv, 1)?[0], y);
///     assert!(o.accepted_steps > 0 && o.l2 < o.init_l2);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundaryAttack {
    /// Maximum number of steps (foolbox default 25000; the paper protocol uses 50).
    pub steps: usize,
    /// Initial spherical (orthogonal) step σ, relative to the distance.
    pub spherical_step: f32,
    /// Initial source step μ, relative to the distance.
    pub source_step: f32,
    /// An image stops once μ falls below this.
    pub source_step_convergence: f32,
    /// Multiplicative step adaptation factor.
    pub step_adaptation: f32,
    /// Statistics are recorded and steps adapted every k-th step.
    pub update_stats_every_k: usize,
    /// Length of the spherical-success queue.
    pub spherical_queue: usize,
    /// Length of the step-success queue.
    pub step_queue: usize,
    /// Initialisation attack.
    pub init: BlendedUniformNoiseInit,
    /// Maximum images per model query.
    pub max_batch: usize,
}

impl Default for BoundaryAttack {
    fn default() -> Self {
        Self {
            steps: 25_000,
            spherical_step: 1e-2,
            source_step: 1e-2,
            source_step_convergence: 1e-7,
            step_adaptation: 1.5,
            update_stats_every_k: 10,
            spherical_queue: 100,
            step_queue: 30,
            init: BlendedUniformNoiseInit::default(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Result of the Boundary Attack for one image (unit space).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundaryOutcome {
    /// The initialisation found an adversarial point and the final point is adversarial.
    /// A failed image is reported, never silently dropped (the reference drops it, bug B4).
    pub success: bool,
    /// Final point (unit space); for a failed image, the initialisation's (non-adversarial)
    /// point.
    pub adversarial: Vec<f32>,
    /// `‖adv − x0‖₂` in unit space.
    pub l2: f64,
    /// `‖adv − x0‖₂² / D` (all channels) in unit space: the paper's per-image metric with bug
    /// B3 fixed; see [`crate::mse_distance`] for the channel-0 variant.
    pub mse: f64,
    /// `‖init − x0‖₂` in unit space.
    pub init_l2: f64,
    /// Blend factor found by the initialisation.
    pub init_blend: f32,
    /// Uniform noise draws of the initialisation.
    pub init_noise_draws: usize,
    /// Accepted proposals.
    pub accepted_steps: usize,
    /// Steps actually run for this image (fewer than `steps` after convergence).
    pub steps_run: usize,
    /// Model queries (initialisation included).
    pub queries: usize,
    /// Final spherical step σ.
    pub spherical_step: f32,
    /// Final source step μ.
    pub source_step: f32,
}

/// A proposal pair of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Candidate after the source step (what is accepted).
    pub candidate: Vec<f32>,
    /// Candidate on the sphere (only queried for the statistics).
    pub spherical: Vec<f32>,
}

/// foolbox `draw_proposals` for one image in unit space (box `[0, 1]`), given the Gaussian
/// draw `eta` (length D), the current adversarial `x`, σ and μ. Returns `None` if `x == x0`
/// or the draw is degenerate.
pub fn draw_proposal(x0: &[f32], x: &[f32], eta: &[f32], sigma: f32, mu: f32) -> Option<Proposal> {
    let d: Vec<f32> = x0.iter().zip(x).map(|(&a, &b)| a - b).collect();
    let r = norm(&d) as f32;
    if r.is_nan() || r <= 0.0 || eta.len() != d.len() {
        return None;
    }
    let u: Vec<f32> = d.iter().map(|&v| v / r).collect();
    let dot = u
        .iter()
        .zip(eta)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum::<f64>() as f32;
    let mut e: Vec<f32> = eta.iter().zip(&u).map(|(&z, &ui)| z - dot * ui).collect();
    let en = norm(&e) as f32;
    if en.is_nan() || en <= 0.0 {
        return None;
    }
    let f = sigma * r / en;
    e.iter_mut().for_each(|v| *v *= f);
    let dist = (sigma * sigma + 1.0).sqrt();
    let spherical: Vec<f32> = x0
        .iter()
        .zip(e.iter().zip(&d))
        .map(|(&o, (&ev, &dv))| (o + (ev - dv) / dist).clamp(0.0, 1.0))
        .collect();
    let nd: Vec<f32> = x0.iter().zip(&spherical).map(|(&o, &s)| o - s).collect();
    let nn = norm(&nd) as f32;
    if nn.is_nan() || nn <= 0.0 {
        return None;
    }
    let len = (mu * r + nn - r).max(0.0) / nn;
    let candidate = spherical
        .iter()
        .zip(&nd)
        .map(|(&s, &v)| (s + len * v).clamp(0.0, 1.0))
        .collect();
    Some(Proposal {
        candidate,
        spherical,
    })
}

/// Circular success queue (foolbox `ArrayQueue` for one sample).
#[derive(Debug, Clone)]
struct StatsQueue {
    buf: Vec<bool>,
    pos: usize,
    filled: usize,
}

impl StatsQueue {
    fn new(cap: usize) -> Self {
        Self {
            buf: vec![false; cap],
            pos: 0,
            filled: 0,
        }
    }
    fn push(&mut self, v: bool) {
        let cap = self.buf.len();
        self.buf[self.pos] = v;
        self.pos = (self.pos + 1) % cap;
        self.filled = (self.filled + 1).min(cap);
    }
    fn full(&self) -> bool {
        self.filled == self.buf.len()
    }
    fn mean(&self) -> f32 {
        self.buf.iter().filter(|&&b| b).count() as f32 / self.buf.len() as f32
    }
    fn clear(&mut self) {
        self.filled = 0;
    }
}

struct State {
    x0: Vec<f32>,
    x: Vec<f32>,
    rng: ChaCha8Rng,
    sigma: f32,
    mu: f32,
    qs: StatsQueue,
    qc: StatsQueue,
    r: f64,
    accepted: usize,
    steps_run: usize,
    queries: usize,
    live: bool,
    eta: Vec<f32>,
    prop: Option<Proposal>,
}

impl BoundaryAttack {
    /// A converged variant with `steps` (e.g. 5 000–25 000) so the adaptation is active.
    pub fn converged(steps: usize) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let pos = |v: f32| v.is_finite() && v > 0.0;
        let ok = pos(self.spherical_step)
            && pos(self.source_step)
            && self.source_step_convergence >= 0.0
            && self.step_adaptation.is_finite()
            && self.step_adaptation >= 1.0
            && self.update_stats_every_k > 0
            && self.spherical_queue > 0
            && self.step_queue > 0;
        if !ok {
            return Err(invalid(format!(
                "invalid Boundary Attack configuration {self:?}"
            )));
        }
        Ok(())
    }

    /// [`DecisionBasedAttack::run_with_ids`] of this attack.
    pub(crate) fn attack_streams<C: Classifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        ids: &[u64],
        seed: u64,
    ) -> Result<Vec<BoundaryOutcome>> {
        self.validate()?;
        let prep = Prepared::new(model, images, labels, self.max_batch)?;
        let oracle = &prep.oracle;
        let mut rngs = prep.streams(seed, ids)?;
        let x0: Vec<&[f32]> = (0..prep.x0.n).map(|i| prep.x0.row(i)).collect();
        let inits = self.init.run_unit(oracle, &x0, labels, &mut rngs)?;
        let d = oracle.dim();
        let mut states: Vec<State> = inits
            .iter()
            .zip(rngs)
            .enumerate()
            .map(|(i, (init, rng))| State {
                x0: x0[i].to_vec(),
                x: init.point.clone(),
                rng,
                sigma: self.spherical_step,
                mu: self.source_step,
                qs: StatsQueue::new(self.spherical_queue),
                qc: StatsQueue::new(self.step_queue),
                r: 0.0,
                accepted: 0,
                steps_run: 0,
                queries: init.queries,
                live: init.success,
                eta: vec![0.0; d],
                prop: None,
            })
            .collect();
        for step in 1..=self.steps {
            let check = step % self.update_stats_every_k == 0;
            let conv = self.source_step_convergence;
            states.par_iter_mut().for_each(|s| {
                if s.live && s.mu < conv {
                    s.live = false;
                }
                s.prop = None;
                if !s.live {
                    return;
                }
                let State { rng, eta, .. } = s;
                for v in eta.iter_mut() {
                    *v = rng.sample(StandardNormal);
                }
                s.r = l2_dist(&s.x0, &s.x);
                s.prop = draw_proposal(&s.x0, &s.x, &s.eta, s.sigma, s.mu);
                if s.prop.is_none() {
                    // x == x0 (the original is already adversarial): nothing left to do.
                    s.live = false;
                }
            });
            let active: Vec<usize> = (0..states.len())
                .filter(|&i| states[i].prop.is_some())
                .collect();
            if active.is_empty() {
                break;
            }
            let mut rows: Vec<&[f32]> = Vec::with_capacity(active.len() * 2);
            let mut labs: Vec<u32> = Vec::with_capacity(active.len() * 2);
            for &i in &active {
                if let Some(p) = &states[i].prop {
                    rows.push(&p.candidate);
                    labs.push(labels[i]);
                    if check {
                        rows.push(&p.spherical);
                        labs.push(labels[i]);
                    }
                }
            }
            let adv = oracle.is_adv(&rows, &labs)?;
            let per = if check { 2 } else { 1 };
            for (j, &i) in active.iter().enumerate() {
                let adv_c = adv[j * per];
                let s = &mut states[i];
                s.steps_run += 1;
                s.queries += per;
                let Some(p) = s.prop.take() else { continue };
                if check {
                    s.qs.push(adv[j * per + 1]);
                    s.qc.push(adv_c);
                }
                let closer = l2_dist(&s.x0, &p.candidate) < s.r;
                if adv_c && closer {
                    s.x = p.candidate;
                    s.accepted += 1;
                }
                if check {
                    self.adapt(s);
                }
            }
        }
        // Final check (foolbox's `success = is_adversarial(xp)`).
        let rows: Vec<&[f32]> = states.iter().map(|s| s.x.as_slice()).collect();
        let fin = oracle.is_adv(&rows, labels)?;
        Ok(states
            .into_iter()
            .zip(inits)
            .zip(fin)
            .map(|((s, init), ok)| BoundaryOutcome {
                success: init.success && ok,
                l2: l2_dist(&s.x0, &s.x),
                mse: l2_dist(&s.x0, &s.x).powi(2) / d as f64,
                init_l2: l2_dist(&s.x0, &init.point),
                init_blend: init.blend,
                init_noise_draws: init.noise_draws,
                accepted_steps: s.accepted,
                steps_run: s.steps_run,
                queries: s.queries + 1,
                spherical_step: s.sigma,
                source_step: s.mu,
                adversarial: s.x,
            })
            .collect())
    }

    fn adapt(&self, s: &mut State) {
        let a = self.step_adaptation;
        if s.qs.full() {
            let p = s.qs.mean();
            if p > 0.5 {
                s.sigma *= a;
                s.mu *= a;
                s.qs.clear();
            } else if p < 0.2 {
                s.sigma /= a;
                s.mu /= a;
                s.qs.clear();
            }
        }
        if s.qc.full() {
            let q = s.qc.mean();
            if q > 0.25 {
                s.mu *= a;
                s.qc.clear();
            } else if q < 0.1 {
                s.mu /= a;
                s.qc.clear();
            }
        }
    }
}
