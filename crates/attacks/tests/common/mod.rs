//! Shared test fixtures: a two-class linear classifier with an analytic decision boundary.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use pixreg_attacks::{Classifier, DifferentiableClassifier};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

pub const C: usize = 1;
pub const H: usize = 8;
pub const W: usize = 8;
pub const D: usize = C * H * W;

/// `logits = x.flatten() · Wᵀ + b` with two classes; class 1 iff `a·(ŵ·x) + c > 0`.
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
    pub w_hat: Vec<f32>,
    pub a: f32,
    pub c: f32,
    pub bounds: (f32, f32),
}

impl Classifier for Linear {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Row-wise products and sums instead of a GEMM: each image's logits are then bitwise
        // independent of the batch composition, which the chunking tests rely on (a blocked
        // GEMM may round differently for different batch sizes, and HopSkipJump queries points
        // within float rounding of the boundary).
        x.flatten_from(1)?
            .unsqueeze(1)?
            .broadcast_mul(&self.w.unsqueeze(0)?)?
            .sum(2)?
            .broadcast_add(&self.b)
    }
    fn input_bounds(&self) -> (f32, f32) {
        self.bounds
    }
}

impl DifferentiableClassifier for Linear {}

impl Linear {
    /// Unit-space decision function `g(u) = a·ŵ·(lo + s·u) + c` (class 1 iff > 0).
    pub fn g_unit(&self, u: &[f32]) -> f64 {
        let (lo, hi) = self.bounds;
        let s = (hi - lo) as f64;
        let dot: f64 = self
            .w_hat
            .iter()
            .zip(u)
            .map(|(&w, &x)| w as f64 * (lo as f64 + s * x as f64))
            .sum();
        self.a as f64 * dot + self.c as f64
    }
    /// Exact L2 distance in unit space from `u` to the decision boundary.
    pub fn l2_margin_unit(&self, u: &[f32]) -> f64 {
        let (lo, hi) = self.bounds;
        self.g_unit(u).abs() / (self.a as f64 * (hi - lo) as f64)
    }
    /// Exact L∞ distance in unit space to the boundary (ignoring the box).
    pub fn linf_margin_unit(&self, u: &[f32]) -> f64 {
        let (lo, hi) = self.bounds;
        let l1: f64 = self.w_hat.iter().map(|w| w.abs() as f64).sum();
        self.g_unit(u).abs() / (self.a as f64 * (hi - lo) as f64 * l1)
    }
}

/// A linear model plus `n` unit-space images in [0.3, 0.7] classified as 1 with unit-space
/// L2 margins of about `margin ± 0.1`.
pub fn fixture(n: usize, margin: f32, bounds: (f32, f32), seed: u64) -> (Linear, Vec<Vec<f32>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut w_hat: Vec<f32> = (0..D).map(|_| rng.sample(StandardNormal)).collect();
    let nrm = w_hat.iter().map(|v| v * v).sum::<f32>().sqrt();
    w_hat.iter_mut().for_each(|v| *v /= nrm);
    let images: Vec<Vec<f32>> = (0..n)
        .map(|_| {
            (0..D)
                .map(|_| (0.5 + 0.1 * rng.sample::<f32, _>(StandardNormal)).clamp(0.3, 0.7))
                .collect()
        })
        .collect();
    let (lo, hi) = bounds;
    let s = hi - lo;
    let a = 3.0f32;
    // g(u) = a·(ŵ·(lo + s u)) + c; make ŵ·(u - 0.5) + margin the unit-space signed distance.
    let sum_w: f32 = w_hat.iter().sum();
    let c = a * (-(lo + s * 0.5) * sum_w + s * margin);
    let dev = Device::Cpu;
    let mut wv = vec![0.0f32; D];
    wv.extend(w_hat.iter().map(|&v| a * v));
    let w = Tensor::from_vec(wv, (2, D), &dev).unwrap();
    let b = Tensor::new(&[0.0f32, c], &dev).unwrap();
    (
        Linear {
            w,
            b,
            w_hat,
            a,
            c,
            bounds,
        },
        images,
    )
}

/// Unit-space rows to a model-scale `[N, C, H, W]` tensor.
pub fn to_model(rows: &[Vec<f32>], bounds: (f32, f32)) -> Tensor {
    let (lo, hi) = bounds;
    let v: Vec<f32> = rows.iter().flatten().map(|&u| lo + (hi - lo) * u).collect();
    Tensor::from_vec(v, (rows.len(), C, H, W), &Device::Cpu).unwrap()
}

pub fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}
