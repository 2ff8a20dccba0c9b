//! foolbox 3.3.4 `HopSkipJump` (Chen et al. 2020), spec §3.3: L2 constraint, geometric-
//! progression step-size search, γ = 1, batched across images with per-image streams.
//!
//! Clipping is to `[0, 1]`, which foolbox hard-codes (bug B18); running in unit space makes
//! that correct for any model scale. The random directions and the gradient estimate are
//! normalised per image (foolbox normalises over the whole batch, which equals per-image
//! normalisation for the batch size of 1 of the reference protocol).

use crate::blended::{BlendedUniformNoiseInit, Prepared};
use crate::classifier::{l2_dist, norm, Classifier, Oracle, DEFAULT_MAX_BATCH};
use crate::error::{invalid, Result};
use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// HopSkipJump configuration (defaults = foolbox 3.3.4).
///
/// # Examples
///
/// A short run (5 iterations instead of 64) on a 1×4×4 image of a classifier that thresholds
/// the mean pixel at 0.5. Its decision boundary is the hyperplane `Σ x = 8`, so the closest
/// adversarial lies at L2 distance `(8 − Σ x₀)/√16`. No adversarial can be closer than that,
/// and on this flat boundary a few iterations already come within 10 % of it.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use pixreg_attacks::{predict_batched, DecisionBasedAttack, FnClassifier, HopSkipJump};
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
/// // Mean 0.3: class 0, at distance 4 · (0.5 − 0.3) = 0.8 from the boundary.
/// let pixels: Vec<f32> = (0..16).map(|j| 0.15 + 0.1 * (j % 4) as f32).collect();
/// let images = Tensor::from_vec(pixels, (1, 1, 4, 4), &dev)?;
/// let labels = [0u32];
///
/// let attack = HopSkipJump {
///     steps: 5,
///     ..HopSkipJump::default()
/// };
/// let o = &attack.run(&model, &images, &labels, 0)?[0];
/// assert!(o.success);
/// // Unit space equals model scale here because the input box is [0, 1].
/// let adv = Tensor::from_slice(&o.adversarial, (1, 1, 4, 4), &dev)?;
/// assert_eq!(predict_batched(&model, &adv, 1)?[0], 1);
/// let optimum = 0.8;
/// assert!(o.l2 >= optimum * (1.0 - 1e-3));
/// assert!(o.l2 < o.init_l2);
/// assert!(o.l2 < 1.1 * optimum);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HopSkipJump {
    /// Number of iterations (foolbox default 64).
    pub steps: usize,
    /// Gradient-estimation queries at the first iteration (scaled by √(t+1)).
    pub initial_gradient_eval_steps: usize,
    /// Cap on gradient-estimation queries per iteration.
    pub max_gradient_eval_steps: usize,
    /// γ of the binary-search threshold `θ = γ / d^{3/2}`.
    pub gamma: f64,
    /// Cap on step-size halvings per iteration (foolbox loops until success; a safety net).
    pub max_halvings: usize,
    /// Initialisation attack.
    pub init: BlendedUniformNoiseInit,
    /// Maximum images per model query.
    pub max_batch: usize,
}

impl Default for HopSkipJump {
    fn default() -> Self {
        Self {
            steps: 64,
            initial_gradient_eval_steps: 100,
            max_gradient_eval_steps: 10_000,
            gamma: 1.0,
            max_halvings: 200,
            init: BlendedUniformNoiseInit::default(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// Result of HopSkipJump for one image (unit space).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HsjOutcome {
    /// Initialisation succeeded and the final point is adversarial.
    pub success: bool,
    /// Final point (unit space).
    pub adversarial: Vec<f32>,
    /// `‖adv − x0‖₂` in unit space.
    pub l2: f64,
    /// `‖adv − x0‖₂² / D` (all channels) in unit space.
    pub mse: f64,
    /// Distance after the initial binary search.
    pub init_l2: f64,
    /// Model queries (initialisation included).
    pub queries: usize,
}

struct State {
    x0: Vec<f32>,
    xa: Vec<f32>,
    rng: ChaCha8Rng,
    dist: f64,
    queries: usize,
    live: bool,
    // gradient accumulators
    s1: Vec<f64>,
    s2: Vec<f64>,
    ssum: f64,
    grad: Vec<f32>,
}

impl HopSkipJump {
    fn validate(&self) -> Result<()> {
        if self.initial_gradient_eval_steps == 0
            || self.max_gradient_eval_steps == 0
            || !(self.gamma.is_finite() && self.gamma > 0.0)
        {
            return Err(invalid(format!(
                "invalid HopSkipJump configuration {self:?}"
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
    ) -> Result<Vec<HsjOutcome>> {
        self.validate()?;
        let prep = Prepared::new(model, images, labels, self.max_batch)?;
        let oracle = &prep.oracle;
        let d = oracle.dim();
        let mut rngs = prep.streams(seed ^ 0x45A1, ids)?;
        let x0: Vec<&[f32]> = (0..prep.x0.n).map(|i| prep.x0.row(i)).collect();
        let inits = self.init.run_unit(oracle, &x0, labels, &mut rngs)?;
        let mut states: Vec<State> = inits
            .iter()
            .zip(rngs)
            .enumerate()
            .map(|(i, (init, rng))| State {
                x0: x0[i].to_vec(),
                xa: init.point.clone(),
                rng,
                dist: 0.0,
                queries: init.queries,
                live: init.success,
                s1: Vec::new(),
                s2: Vec::new(),
                ssum: 0.0,
                grad: vec![0.0; d],
            })
            .collect();
        let theta = self.gamma / (d as f64 * (d as f64).sqrt());
        let live: Vec<usize> = (0..states.len()).filter(|&i| states[i].live).collect();
        let targets: Vec<Vec<f32>> = live.iter().map(|&i| states[i].xa.clone()).collect();
        self.binary_search(oracle, &mut states, &live, targets, labels, theta)?;
        let init_l2: Vec<f64> = states.iter().map(|s| l2_dist(&s.x0, &s.xa)).collect();
        for s in states.iter_mut() {
            s.dist = l2_dist(&s.x0, &s.xa);
            if s.dist == 0.0 {
                s.live = false;
            }
        }
        for t in 0..self.steps {
            let live: Vec<usize> = (0..states.len()).filter(|&i| states[i].live).collect();
            if live.is_empty() {
                break;
            }
            let b = ((self.initial_gradient_eval_steps as f64 * ((t + 1) as f64).sqrt())
                .min(self.max_gradient_eval_steps as f64))
            .floor() as usize;
            self.estimate_gradients(oracle, &mut states, &live, labels, t, b.max(1))?;
            // geometric progression
            let mut eps: Vec<f64> = live
                .iter()
                .map(|&i| states[i].dist / ((t + 1) as f64).sqrt())
                .collect();
            let mut props: Vec<Vec<f32>> = vec![Vec::new(); live.len()];
            let mut pending: Vec<usize> = (0..live.len()).collect();
            let mut halvings = 0;
            while !pending.is_empty() {
                for &j in &pending {
                    let s = &states[live[j]];
                    let e = eps[j] as f32;
                    props[j] =
                        s.xa.iter()
                            .zip(&s.grad)
                            .map(|(&x, &g)| (x + e * g).clamp(0.0, 1.0))
                            .collect();
                }
                let rows: Vec<&[f32]> = pending.iter().map(|&j| props[j].as_slice()).collect();
                let labs: Vec<u32> = pending.iter().map(|&j| labels[live[j]]).collect();
                let adv = oracle.is_adv(&rows, &labs)?;
                let mut next = Vec::new();
                for (&j, a) in pending.iter().zip(adv) {
                    states[live[j]].queries += 1;
                    if !a {
                        eps[j] /= 2.0;
                        next.push(j);
                    }
                }
                halvings += 1;
                if halvings > self.max_halvings {
                    // Safety net: fall back to the current point (always adversarial).
                    for &j in &next {
                        props[j] = states[live[j]].xa.clone();
                    }
                    break;
                }
                pending = next;
            }
            self.binary_search(oracle, &mut states, &live, props, labels, theta)?;
            for &i in &live {
                let s = &mut states[i];
                s.dist = l2_dist(&s.x0, &s.xa);
                if s.dist == 0.0 {
                    s.live = false;
                }
            }
        }
        let rows: Vec<&[f32]> = states.iter().map(|s| s.xa.as_slice()).collect();
        let fin = oracle.is_adv(&rows, labels)?;
        Ok(states
            .into_iter()
            .zip(inits)
            .zip(fin)
            .zip(init_l2)
            .map(|(((s, init), ok), il2)| HsjOutcome {
                success: init.success && ok,
                l2: l2_dist(&s.x0, &s.xa),
                mse: l2_dist(&s.x0, &s.xa).powi(2) / d as f64,
                init_l2: il2,
                queries: s.queries + 1,
                adversarial: s.xa,
            })
            .collect())
    }

    /// foolbox `_binary_search` (l2): per image, bisect the blend factor between `x0` (0) and
    /// `target` (1) until `hi - lo <= θ` or the midpoint stops changing; `xa ← blend(hi)`.
    fn binary_search<C: Classifier + ?Sized>(
        &self,
        oracle: &Oracle<'_, C>,
        states: &mut [State],
        idx: &[usize],
        targets: Vec<Vec<f32>>,
        labels: &[u32],
        theta: f64,
    ) -> Result<()> {
        let n = idx.len();
        let mut lo = vec![0.0f32; n];
        let mut hi = vec![1.0f32; n];
        let mut old = vec![1.0f32; n];
        let mut active: Vec<usize> = (0..n).collect();
        while !active.is_empty() {
            let mids: Vec<f32> = active.iter().map(|&j| (lo[j] + hi[j]) / 2.0).collect();
            let pts: Vec<Vec<f32>> = active
                .iter()
                .zip(&mids)
                .map(|(&j, &m)| crate::blended::blend(&states[idx[j]].x0, &targets[j], m))
                .collect();
            let rows: Vec<&[f32]> = pts.iter().map(|p| p.as_slice()).collect();
            let labs: Vec<u32> = active.iter().map(|&j| labels[idx[j]]).collect();
            let adv = oracle.is_adv(&rows, &labs)?;
            let mut next = Vec::new();
            for ((&j, &m), a) in active.iter().zip(&mids).zip(adv) {
                states[idx[j]].queries += 1;
                if a {
                    hi[j] = m;
                } else {
                    lo[j] = m;
                }
                let stalled = old[j] == m;
                old[j] = m;
                if !stalled && ((hi[j] - lo[j]) as f64) > theta {
                    next.push(j);
                }
            }
            active = next;
        }
        for (j, &i) in idx.iter().enumerate() {
            let s = &mut states[i];
            s.xa = crate::blended::blend(&s.x0, &targets[j], hi[j]);
        }
        Ok(())
    }

    /// Monte-Carlo estimate of the boundary normal at each live image's `xa` with `b` queries.
    /// Uses `g ∝ Σ s_b v_b − s̄ Σ v_b` (baseline subtracted unless all signs agree), accumulated
    /// chunk by chunk so that memory stays bounded by `max_batch` rows.
    fn estimate_gradients<C: Classifier + ?Sized>(
        &self,
        oracle: &Oracle<'_, C>,
        states: &mut [State],
        live: &[usize],
        labels: &[u32],
        t: usize,
        b: usize,
    ) -> Result<()> {
        let d = oracle.dim();
        for &i in live {
            let s = &mut states[i];
            s.s1 = vec![0.0; d];
            s.s2 = vec![0.0; d];
            s.ssum = 0.0;
        }
        // Images per group so that one group's rows roughly fill max_batch (at least 1).
        let per_group = (self.max_batch / b).max(1);
        for group in live.chunks(per_group) {
            let mut sub: Vec<&mut State> = Vec::with_capacity(group.len());
            {
                // Collect disjoint mutable references to the group's states.
                let mut rest: &mut [State] = states;
                let mut offset = 0;
                for &i in group {
                    let (_, tail) = rest.split_at_mut(i - offset);
                    let (head, tail2) = tail.split_at_mut(1);
                    sub.push(&mut head[0]);
                    rest = tail2;
                    offset = i + 1;
                }
            }
            let d_f = d as f64;
            let gamma = self.gamma;
            let generated: Vec<(Vec<f32>, Vec<f32>)> = sub
                .par_iter_mut()
                .map(|s| {
                    let delta = if t == 0 { 0.1 } else { gamma * s.dist / d_f } as f32;
                    let mut zs = Vec::with_capacity(b * d);
                    let mut vs = Vec::with_capacity(b * d);
                    let mut v = vec![0.0f32; d];
                    for _ in 0..b {
                        for x in v.iter_mut() {
                            *x = s.rng.sample(StandardNormal);
                        }
                        let vn = norm(&v) as f32 + 1e-12;
                        for (x, &a) in v.iter().zip(&s.xa) {
                            let z = (a + delta * (x / vn)).clamp(0.0, 1.0);
                            zs.push(z);
                            vs.push((z - a) / (delta + 1e-8));
                        }
                    }
                    (zs, vs)
                })
                .collect();
            let mut rows: Vec<&[f32]> = Vec::with_capacity(group.len() * b);
            let mut labs = Vec::with_capacity(group.len() * b);
            for (k, (zs, _)) in generated.iter().enumerate() {
                for row in zs.chunks_exact(d) {
                    rows.push(row);
                    labs.push(labels[group[k]]);
                }
            }
            let adv = oracle.is_adv(&rows, &labs)?;
            for (k, s) in sub.iter_mut().enumerate() {
                let vs = &generated[k].1;
                for (bi, v) in vs.chunks_exact(d).enumerate() {
                    let sign = if adv[k * b + bi] { 1.0 } else { -1.0 };
                    s.ssum += sign;
                    for ((a1, a2), &x) in s.s1.iter_mut().zip(s.s2.iter_mut()).zip(v) {
                        *a1 += sign * x as f64;
                        *a2 += x as f64;
                    }
                }
                s.queries += b;
            }
        }
        for &i in live {
            let s = &mut states[i];
            let bf = b as f64;
            let mean = s.ssum / bf;
            let g: Vec<f64> = if mean.abs() == 1.0 {
                s.s1.iter().map(|&a| a / bf).collect()
            } else {
                s.s1.iter()
                    .zip(&s.s2)
                    .map(|(&a, &c)| (a - mean * c) / bf)
                    .collect()
            };
            let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-12;
            s.grad = g.iter().map(|&v| (v / gn) as f32).collect();
            s.s1 = Vec::new();
            s.s2 = Vec::new();
        }
        Ok(())
    }
}
