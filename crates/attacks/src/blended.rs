//! foolbox 3.3.4 `LinearSearchBlendedUniformNoiseAttack` (spec §2.2), the initialisation of
//! the Boundary Attack and of HopSkipJump, batched across images with per-image streams.

use crate::classifier::{
    check_images, check_labels_len, checked_bounds, to_unit, Classifier, Oracle, UnitImages,
};
use crate::error::{invalid, AttackError, Result};
use crate::rng::{derive_seed, image_stream};
use candle_core::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Blended uniform noise with a linear search (foolbox defaults: 1000 directions, 50 steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlendedUniformNoiseInit {
    /// Maximum number of uniform noise draws per image (phase A).
    pub directions: usize,
    /// Number of grid intervals of the linear search: the grid is `k / steps`, `k = 0..=steps`.
    pub steps: usize,
}

impl Default for BlendedUniformNoiseInit {
    fn default() -> Self {
        Self {
            directions: 1000,
            steps: 50,
        }
    }
}

/// Result of the initialisation for one image (unit space).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitOutcome {
    /// The returned point is adversarial (the Boundary Attack raises, i.e. fails, otherwise).
    pub success: bool,
    /// The uniform noise image `R` used for the blend (the first adversarial draw, or the last
    /// draw if none was adversarial).
    pub noise: Vec<f32>,
    /// Number of noise draws made.
    pub noise_draws: usize,
    /// Whether some noise draw was adversarial.
    pub noise_found: bool,
    /// Blend factor `e*` of the returned point `(1 - e*)·x0 + e*·R` (1 if no grid point
    /// was adversarial).
    pub blend: f32,
    /// The returned point.
    pub point: Vec<f32>,
    /// Model queries spent.
    pub queries: usize,
}

impl BlendedUniformNoiseInit {
    fn validate(&self) -> Result<()> {
        if self.directions == 0 || self.steps == 0 {
            return Err(invalid(
                "blended-noise init needs directions >= 1 and steps >= 1",
            ));
        }
        Ok(())
    }

    /// The float32 grid `numpy.linspace(0, 1, steps + 1, dtype=float32)`.
    pub fn grid(&self) -> Vec<f32> {
        crate::noise::linspace(0.0, 1.0, self.steps + 1)
            .into_iter()
            .map(|e| e as f32)
            .collect()
    }

    /// Run on `images` (model scale) with `labels`; image `i` uses stream `i` of `seed`.
    /// Outputs are in unit space.
    pub fn run<C: Classifier + ?Sized>(
        &self,
        model: &C,
        images: &Tensor,
        labels: &[u32],
        seed: u64,
        max_batch: usize,
    ) -> Result<Vec<InitOutcome>> {
        let prep = Prepared::new(model, images, labels, max_batch)?;
        let ids: Vec<u64> = (0..prep.x0.n as u64).collect();
        let mut rngs = prep.streams(seed, &ids)?;
        let x0: Vec<&[f32]> = (0..prep.x0.n).map(|i| prep.x0.row(i)).collect();
        self.run_unit(&prep.oracle, &x0, labels, &mut rngs)
    }

    pub(crate) fn run_unit<C: Classifier + ?Sized>(
        &self,
        oracle: &Oracle<'_, C>,
        x0: &[&[f32]],
        labels: &[u32],
        rngs: &mut [ChaCha8Rng],
    ) -> Result<Vec<InitOutcome>> {
        self.validate()?;
        let n = x0.len();
        let d = oracle.dim();
        let mut out: Vec<InitOutcome> = (0..n)
            .map(|_| InitOutcome {
                success: false,
                noise: vec![0.0; d],
                noise_draws: 0,
                noise_found: false,
                blend: 1.0,
                point: Vec::new(),
                queries: 0,
            })
            .collect();
        // Phase A: draw uniform images until one is adversarial (per image).
        for _ in 0..self.directions {
            let pending: Vec<usize> = (0..n).filter(|&i| !out[i].noise_found).collect();
            if pending.is_empty() {
                break;
            }
            for &i in &pending {
                let rng = &mut rngs[i];
                for v in out[i].noise.iter_mut() {
                    *v = rng.random::<f32>();
                }
                out[i].noise_draws += 1;
                out[i].queries += 1;
            }
            let rows: Vec<&[f32]> = pending.iter().map(|&i| out[i].noise.as_slice()).collect();
            let labs: Vec<u32> = pending.iter().map(|&i| labels[i]).collect();
            let adv = oracle.is_adv(&rows, &labs)?;
            for (&i, a) in pending.iter().zip(adv) {
                out[i].noise_found = a;
            }
        }
        // Phase B: first adversarial point of the blend grid.
        let grid = self.grid();
        let mut k = vec![0usize; n];
        let mut done = vec![false; n];
        loop {
            let pending: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
            if pending.is_empty() {
                break;
            }
            let blends: Vec<Vec<f32>> = pending
                .iter()
                .map(|&i| blend(x0[i], &out[i].noise, grid[k[i]]))
                .collect();
            let rows: Vec<&[f32]> = blends.iter().map(|b| b.as_slice()).collect();
            let labs: Vec<u32> = pending.iter().map(|&i| labels[i]).collect();
            let adv = oracle.is_adv(&rows, &labs)?;
            for ((&i, a), b) in pending.iter().zip(adv).zip(blends) {
                out[i].queries += 1;
                if a {
                    out[i].success = true;
                    out[i].blend = grid[k[i]];
                    out[i].point = b;
                    done[i] = true;
                } else if k[i] + 1 == grid.len() {
                    out[i].blend = 1.0;
                    out[i].point = b;
                    done[i] = true;
                } else {
                    k[i] += 1;
                }
            }
        }
        Ok(out)
    }
}

/// `(1 - e)·x0 + e·r` in float32, as foolbox computes the blend.
pub fn blend(x0: &[f32], r: &[f32], e: f32) -> Vec<f32> {
    let a = 1.0 - e;
    x0.iter().zip(r).map(|(&x, &z)| a * x + e * z).collect()
}

/// Shared set-up of the decision-based attacks: unit-space originals and the query oracle.
pub(crate) struct Prepared<'a, C: ?Sized> {
    pub oracle: Oracle<'a, C>,
    pub x0: UnitImages,
}

impl<'a, C: Classifier + ?Sized> Prepared<'a, C> {
    pub fn new(model: &'a C, images: &Tensor, labels: &[u32], max_batch: usize) -> Result<Self> {
        let (n, c, h, w) = check_images(images)?;
        check_labels_len(labels, n)?;
        if n == 0 {
            return Err(AttackError::EmptyBatch);
        }
        if c * h * w == 0 {
            return Err(AttackError::Shape("images have zero elements".into()));
        }
        let (lo, hi) = checked_bounds(model)?;
        let x0 = to_unit(images, lo, hi)?;
        if x0
            .data
            .iter()
            .any(|v| !v.is_finite() || *v < -1e-6 || *v > 1.0 + 1e-6)
        {
            return Err(invalid(format!(
                "images must be finite and inside the model's input bounds ({lo}, {hi})"
            )));
        }
        Ok(Self {
            oracle: Oracle {
                model,
                device: images.device().clone(),
                dims: (c, h, w),
                lo,
                hi,
                max_batch: max_batch.max(1),
            },
            x0,
        })
    }

    /// One random stream per image, keyed by the image's id; errors unless there is exactly
    /// one id per image.
    pub fn streams(&self, seed: u64, ids: &[u64]) -> Result<Vec<ChaCha8Rng>> {
        if ids.len() != self.x0.n {
            return Err(AttackError::Shape(format!(
                "{} ids for {} images",
                ids.len(),
                self.x0.n
            )));
        }
        let s = derive_seed(seed, 0xB0);
        Ok(ids.iter().map(|&id| image_stream(s, id)).collect())
    }
}
