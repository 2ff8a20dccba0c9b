//! The fast CPU kernels (`pixreg_models::kernels`, reached through `ops`) against candle's own
//! ops (forward), candle's autograd of those ops (backward) and finite differences.
//!
//! The fast path is on by default and never switched off here (the switch is process-wide
//! and tests run in parallel); the references are candle's ops called directly and
//! `ops::batch_norm_composite`.
//!
//! Batch norm and ReLU alone are in `batch_norm_kernels.rs`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{assert_close, assert_same_gradients, random, reference_relu, TOL};
use pixreg_models::kernels::conv::{self, Geometry};
use pixreg_models::kernels::{direct, winograd};
use pixreg_models::ops::{self, BatchNormStats};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Odd sizes, strides 1 and 2, kernels 1/3/7, batch 1,
/// kernels wider than the input, and batches large enough for grouped GEMMs. Stride-1 cases
/// with padding below the kernel size take the input gradient as a forward convolution with
/// the flipped kernel; the padded 1×1 stride-1 case and the stride-2 ones take `Wᵀ·dY` +
/// col2im.
/// `(N, C, H, W, O, k, stride, padding)`.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

/// `(2, 2, 23, 29, …)`, `(1, 2, 50, 45, …)` and `(2, 1, 33, 31, …)` have at least 512 output
/// positions per image, so single images are processed in bands of output rows (the last band
/// shorter). `(3, 16, 7, 9, 17, …)` and `(1, 16, 33, 35, 16, …)` are 3×3 stride-1 "same"
/// convolutions with at least 16 channels, which take the Winograd kernels (forward, input
/// and weight gradient): odd maps, the second with more than 256 tiles per image, hence bands
/// of tile rows. The last two are strided with input rows of 32 and 31 values (a permute of
/// two registers per output row on AVX-512, as every stride-2 case of ≤ 32 columns).
const CONV_CASES: [ConvCase; 20] = [
    (1, 1, 5, 7, 3, 3, 1, 1),
    (2, 3, 9, 8, 4, 3, 2, 1),
    (3, 5, 11, 11, 6, 7, 1, 3),
    (2, 4, 6, 6, 5, 1, 2, 0),
    (2, 4, 6, 7, 5, 1, 1, 0),
    (1, 2, 4, 4, 3, 3, 2, 0),
    (5, 3, 7, 5, 2, 3, 1, 0),
    (2, 2, 3, 2, 2, 7, 1, 3),
    (9, 3, 4, 4, 5, 3, 1, 1),
    (7, 3, 5, 5, 4, 3, 2, 1),
    (11, 6, 3, 3, 7, 1, 1, 0),
    (4, 1, 13, 10, 8, 7, 2, 3),
    (2, 3, 5, 6, 4, 1, 1, 1),
    (2, 2, 23, 29, 3, 3, 1, 1),
    (1, 2, 50, 45, 3, 3, 2, 1),
    (2, 1, 33, 31, 4, 7, 1, 3),
    (3, 16, 7, 9, 17, 3, 1, 1),
    (1, 16, 33, 35, 16, 3, 1, 1),
    (2, 3, 28, 32, 4, 3, 2, 1),
    (3, 2, 17, 31, 3, 1, 2, 0),
];

#[test]
fn conv2d_forward_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &(n, c, h, w, o, k, s, p) in &CONV_CASES {
        let x = random(&mut rng, &[n, c, h, w]);
        let wt = random(&mut rng, &[o, c, k, k]);
        let fast = ops::conv2d(&x, &wt, s, p).unwrap();
        let reference = x.conv2d(&wt, p, s, 1, 1).unwrap();
        assert_close(
            &format!("conv {:?}", (n, c, h, w, o, k, s, p)),
            &fast,
            &reference,
            TOL,
        );
    }
}

/// `⟨a, b⟩` in float64.
fn dot(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() * b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn conv2d_backward_matches_candle_autograd_and_the_adjoint() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut compared_with_candle = 0;
    for &(n, c, h, w, o, k, s, p) in &CONV_CASES {
        let case = format!("{:?}", (n, c, h, w, o, k, s, p));
        let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
        let wt = Var::from_tensor(&random(&mut rng, &[o, c, k, k])).unwrap();
        let fast = ops::conv2d(&x, &wt, s, p).unwrap();
        let g = random(&mut rng, fast.dims());
        let fast_grads = (&fast * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let (dx, dw) = (fast_grads.get(&x).unwrap(), fast_grads.get(&wt).unwrap());
        // The convolution is bilinear, so its gradients are its adjoints:
        // ⟨dx, v⟩ = ⟨conv(v, w), g⟩ and ⟨dw, u⟩ = ⟨conv(x, u), g⟩, with candle's forward.
        for _ in 0..3 {
            let v = random(&mut rng, &[n, c, h, w]);
            let u = random(&mut rng, &[o, c, k, k]);
            let lhs_x = dot(dx, &v);
            let rhs_x = dot(&v.conv2d(&wt, p, s, 1, 1).unwrap(), &g);
            let lhs_w = dot(dw, &u);
            let rhs_w = dot(&x.conv2d(&u, p, s, 1, 1).unwrap(), &g);
            for (what, a, b) in [("dx", lhs_x, rhs_x), ("dw", lhs_w, rhs_w)] {
                let err = (a - b).abs() / b.abs().max(1.0);
                assert!(err <= TOL, "conv {what} adjoint {case}: {a} vs {b}");
            }
        }
        // candle's own conv backward, where it supports the shape (its input gradient has the
        // wrong size when a stride-2 convolution drops input rows).
        let reference = x.conv2d(&wt, p, s, 1, 1).unwrap();
        if let Ok(ref_grads) = (&reference * &g).unwrap().sum_all().unwrap().backward() {
            assert_close(
                &format!("conv dx {case}"),
                dx,
                ref_grads.get(&x).unwrap(),
                TOL,
            );
            assert_close(
                &format!("conv dw {case}"),
                dw,
                ref_grads.get(&wt).unwrap(),
                TOL,
            );
            compared_with_candle += 1;
        }
    }
    assert!(
        compared_with_candle >= 8,
        "only {compared_with_candle} cases compared with candle"
    );
}

/// 3×3 stride-1 padding-1 shapes `(N, C, H, W, O)` for the Winograd kernels called directly
/// (the convolution picks them for at least 16 channels only): one channel, 1×1 and 1×W maps,
/// odd and even sizes, tile rows of one partial block and of two blocks, groups of images,
/// and an image of more than 256 tiles (bands of tile rows, the last one shorter).
const WINOGRAD_CASES: [(usize, usize, usize, usize, usize); 8] = [
    (1, 1, 5, 6, 1),
    (2, 3, 7, 9, 4),
    (3, 2, 1, 1, 3),
    (2, 1, 1, 17, 2),
    (5, 4, 2, 3, 1),
    (3, 3, 20, 19, 2),
    (1, 2, 40, 37, 3),
    (6, 5, 4, 4, 6),
];

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn from_vec(v: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// The kernel `[C, O, k, k]` of a stride-1 input gradient computed as a forward
/// convolution: `w` (`[O, C, k, k]`) with the channels swapped and each kernel flipped in
/// both directions.
fn flip_transpose(w: &Tensor) -> Vec<f32> {
    let (o, c, taps) = (w.dims()[0], w.dims()[1], w.dims()[2] * w.dims()[3]);
    let v = to_vec(w);
    let mut flipped = vec![0f32; v.len()];
    for oc in 0..o {
        for ic in 0..c {
            for tap in 0..taps {
                flipped[(ic * o + oc) * taps + taps - 1 - tap] = v[(oc * c + ic) * taps + tap];
            }
        }
    }
    flipped
}

/// A random stride-1 `k`×`k` convolution with padding `p`: input, weight, output gradient,
/// candle's output and candle's autograd gradients of `Σ y·dY`, the references of the
/// Winograd and direct kernels.
struct ConvReference {
    x: Var,
    w: Var,
    dy: Tensor,
    y: Tensor,
    grads: candle_core::backprop::GradStore,
}

impl ConvReference {
    fn new(
        rng: &mut ChaCha8Rng,
        (n, c, h, w, o): (usize, usize, usize, usize, usize),
        k: usize,
        p: usize,
    ) -> Self {
        let x = Var::from_tensor(&random(rng, &[n, c, h, w])).unwrap();
        let wt = Var::from_tensor(&random(rng, &[o, c, k, k])).unwrap();
        let y = x.conv2d(&wt, p, 1, 1, 1).unwrap();
        let dy = random(rng, y.dims());
        let grads = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        Self {
            x,
            w: wt,
            dy,
            y,
            grads,
        }
    }

    /// The `(forward, dx, dw)` references: candle's output and gradients.
    fn candle(&self) -> [&Tensor; 3] {
        [
            &self.y,
            self.grads.get(&self.x).unwrap(),
            self.grads.get(&self.w).unwrap(),
        ]
    }
}

/// Asserts that each fast kernel's result (forward, dx, dw) equals im2col's and candle's.
fn assert_kernels_agree(
    kernel: &str,
    case: &str,
    fast: [Vec<f32>; 3],
    im2col: [Vec<f32>; 3],
    candle: [&Tensor; 3],
) {
    for (((what, fast), im2col), candle) in ["forward", "dx", "dw"]
        .into_iter()
        .zip(fast)
        .zip(im2col)
        .zip(candle)
    {
        let fast = from_vec(fast, candle.dims());
        let im2col = from_vec(im2col, candle.dims());
        assert_close(
            &format!("{kernel} {what} vs im2col {case}"),
            &fast,
            &im2col,
            TOL,
        );
        assert_close(
            &format!("{kernel} {what} vs candle {case}"),
            &fast,
            candle,
            TOL,
        );
    }
}

#[test]
fn winograd_matches_im2col_and_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &(n, c, h, w, o) in &WINOGRAD_CASES {
        let case = format!("{:?}", (n, c, h, w, o));
        let r = ConvReference::new(&mut rng, (n, c, h, w, o), 3, 1);
        let (xv, wv, dyv) = (to_vec(&r.x), to_vec(&r.w), to_vec(&r.dy));
        let g = Geometry::new(r.x.dims(), r.w.dims(), 1, 1).unwrap();
        assert!(winograd::supports(&g), "{case}");
        // The input gradient as a forward convolution of dY with the flipped kernel.
        let gt = Geometry::new(r.dy.dims(), &[c, o, 3, 3], 1, 1).unwrap();
        let fast = [
            winograd::forward(&g, &xv, &wv),
            winograd::backward_input(&g, &dyv, &wv),
            winograd::backward_weight(&g, &xv, &dyv),
        ];
        let im2col = [
            conv::forward_im2col(&g, &xv, &wv, None),
            conv::forward_im2col(&gt, &dyv, &flip_transpose(&r.w), None),
            conv::backward_weight_im2col(&g, &xv, &dyv),
        ];
        assert_kernels_agree("winograd", &case, fast, im2col, r.candle());
    }
    // No output channels: empty outputs, no panic.
    let g = Geometry::new(&[2, 3, 4, 5], &[0, 3, 3, 3], 1, 1).unwrap();
    assert!(winograd::forward(&g, &[0.5; 120], &[]).is_empty());
    assert!(winograd::backward_weight(&g, &[0.5; 120], &[]).is_empty());
    assert_eq!(winograd::backward_input(&g, &[], &[]), vec![0.0; 120]);
}

/// `(n, c, h, w, o, k)` of stride-1 "same" convolutions for the direct kernels: ResNet18's
/// stem at base 8 and 16 and its first-stage 3×3 at base 8 (28×28, 32×32), odd maps narrower
/// and wider than a vector, one and two blocks of output channels, a 1×1 kernel, 1×1 maps.
const DIRECT_CASES: [(usize, usize, usize, usize, usize, usize); 9] = [
    (3, 1, 28, 28, 8, 7),
    (2, 8, 28, 28, 8, 3),
    (2, 8, 32, 32, 8, 3),
    (2, 1, 13, 33, 16, 7),
    (1, 3, 5, 17, 5, 3),
    (2, 5, 9, 3, 12, 5),
    (2, 2, 1, 1, 3, 3),
    (3, 4, 6, 7, 1, 1),
    (1, 16, 7, 6, 9, 3),
];

#[test]
fn direct_matches_im2col_and_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for &(n, c, h, w, o, k) in &DIRECT_CASES {
        let case = format!("{:?}", (n, c, h, w, o, k));
        let p = k / 2;
        let r = ConvReference::new(&mut rng, (n, c, h, w, o), k, p);
        let (xv, wv, dyv) = (to_vec(&r.x), to_vec(&r.w), to_vec(&r.dy));
        let g = Geometry::new(r.x.dims(), r.w.dims(), 1, p).unwrap();
        let gt = Geometry::new(r.dy.dims(), &[c, o, k, k], 1, p).unwrap();
        let fast = [
            direct::forward(&g, &xv, &wv),
            // Through the dispatch: a forward convolution of dY, direct where it suits.
            conv::backward_input(&g, &dyv, &wv),
            direct::backward_weight(&g, &xv, &dyv),
        ];
        let im2col = [
            conv::forward_im2col(&g, &xv, &wv, None),
            conv::forward_im2col(&gt, &dyv, &flip_transpose(&r.w), None),
            conv::backward_weight_im2col(&g, &xv, &dyv),
        ];
        assert_kernels_agree("direct", &case, fast, im2col, r.candle());
    }
}

#[test]
fn conv2d_input_gradient_is_skipped_for_constant_inputs() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = random(&mut rng, &[2, 1, 6, 6]);
    let wt = Var::from_tensor(&random(&mut rng, &[3, 1, 3, 3])).unwrap();
    let y = ops::conv2d(&x, &wt, 1, 1).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&wt).is_some());
}

/// `L(t) = Σ g·f(x + t·v)` by central differences against `⟨∇L, v⟩`.
fn directional_check(
    what: &str,
    f: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    v: &Tensor,
    g: &Tensor,
    tol: f64,
) {
    let xv = Var::from_tensor(x).unwrap();
    let grads = (f(xv.as_tensor()) * g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let analytic: f64 = (grads.get(&xv).unwrap() * v)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let eps = 1e-2;
    let loss = |t: f64| -> f64 {
        let xt = (x + (v * t).unwrap()).unwrap();
        (f(&xt) * g)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let numeric = (loss(eps) - loss(-eps)) / (2.0 * eps);
    let err = (analytic - numeric).abs() / numeric.abs().max(1e-3);
    assert!(
        err <= tol,
        "{what}: analytic {analytic} vs finite difference {numeric} (relative {err:.2e})"
    );
}

#[test]
fn conv2d_and_batch_norm_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = random(&mut rng, &[3, 2, 5, 5]);
    let v = random(&mut rng, &[3, 2, 5, 5]);
    let wt = random(&mut rng, &[4, 2, 3, 3]);
    let g = random(&mut rng, &[3, 4, 3, 3]);
    directional_check(
        "conv2d",
        |x| ops::conv2d(x, &wt, 2, 1).unwrap(),
        &x,
        &v,
        &g,
        1e-3,
    );
    let gamma = random(&mut rng, &[2]);
    let beta = random(&mut rng, &[2]);
    let g = random(&mut rng, &[3, 2, 5, 5]);
    directional_check(
        "batch norm",
        |x| {
            ops::batch_norm(x, &gamma, &beta, 1e-5, BatchNormStats::Batch)
                .unwrap()
                .0
        },
        &x,
        &v,
        &g,
        1e-3,
    );
}

/// Random inputs of a conv + batch norm case (drawn in this order): input, kernel, γ, β, and
/// a gradient for the output.
struct ConvBnCase {
    x: Var,
    wt: Var,
    gamma: Var,
    beta: Var,
    g: Tensor,
}

impl ConvBnCase {
    fn random(rng: &mut ChaCha8Rng, (n, c, h, w, o, k, s, p): ConvCase) -> Self {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        Self {
            x: Var::from_tensor(&random(rng, &[n, c, h, w])).unwrap(),
            wt: Var::from_tensor(&random(rng, &[o, c, k, k])).unwrap(),
            gamma: Var::from_tensor(&random(rng, &[o])).unwrap(),
            beta: Var::from_tensor(&random(rng, &[o])).unwrap(),
            g: random(rng, &[n, o, oh, ow]),
        }
    }
}

#[test]
fn fused_conv_batch_norm_matches_the_unfused_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (case_index, &(n, c, h, w, o, k, s, p)) in CONV_CASES.iter().enumerate() {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        if n * oh * ow < 2 {
            continue;
        }
        let relu = case_index % 2 == 0;
        let case = format!("{:?} relu {relu}", (n, c, h, w, o, k, s, p));
        let ConvBnCase {
            x,
            wt,
            gamma,
            beta,
            g,
        } = ConvBnCase::random(&mut rng, (n, c, h, w, o, k, s, p));
        let spec = ops::ConvSpec {
            weight: wt.as_tensor(),
            stride: s,
            padding: p,
        };
        let (fast, fast_m) =
            ops::conv2d_batch_norm_train(&x, spec, &gamma, &beta, 1e-5, relu).unwrap();
        let z = ops::conv2d(&x, &wt, s, p).unwrap();
        let (bn, ref_m) =
            ops::batch_norm_composite(&z, &gamma, &beta, 1e-5, BatchNormStats::Batch).unwrap();
        let reference = if relu { reference_relu(&bn) } else { bn };
        assert_close(&format!("conv+bn y {case}"), &fast, &reference, 1e-5);
        let ref_m = ref_m.unwrap();
        assert_close(
            &format!("conv+bn mean {case}"),
            &fast_m.mean,
            &ref_m.mean,
            1e-5,
        );
        assert_close(
            &format!("conv+bn var {case}"),
            &fast_m.var_unbiased,
            &ref_m.var_unbiased,
            1e-5,
        );
        assert_same_gradients(
            &format!("conv+bn {case}"),
            &fast,
            &reference,
            &g,
            &[
                ("dx", &x),
                ("dw", &wt),
                ("dgamma", &gamma),
                ("dbeta", &beta),
            ],
            TOL,
        );
    }
    // A constant input (the stem's images) gets no gradient; the parameters still do.
    let x = random(&mut rng, &[2, 1, 6, 6]);
    let wt = Var::from_tensor(&random(&mut rng, &[3, 1, 3, 3])).unwrap();
    let (gamma, beta) = (
        Var::ones(3, DType::F32, &Device::Cpu).unwrap(),
        Var::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let spec = ops::ConvSpec {
        weight: wt.as_tensor(),
        stride: 1,
        padding: 1,
    };
    let (y, _) = ops::conv2d_batch_norm_train(&x, spec, &gamma, &beta, 1e-5, true).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&wt).is_some() && grads.get(&gamma).is_some() && grads.get(&beta).is_some());
}

#[test]
fn segmented_conv_batch_norm_matches_separate_passes() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // (case, segments): several sizes, a one-image segment, the Winograd path (16 channels).
    let cases: [(ConvCase, &[usize]); 5] = [
        ((4, 3, 9, 8, 4, 3, 2, 1), &[2, 2]),
        ((5, 3, 7, 5, 2, 3, 1, 0), &[1, 3, 1]),
        ((7, 3, 5, 5, 4, 3, 2, 1), &[4, 3]),
        ((6, 16, 7, 9, 17, 3, 1, 1), &[3, 3]),
        ((2, 4, 6, 7, 5, 1, 1, 0), &[2]),
    ];
    for (case_index, &((n, c, h, w, o, k, s, p), segments)) in cases.iter().enumerate() {
        let relu = case_index % 2 == 1;
        let case = format!(
            "{:?} segments {segments:?} relu {relu}",
            (n, c, h, w, o, k, s, p)
        );
        let ConvBnCase {
            x,
            wt,
            gamma,
            beta,
            g,
        } = ConvBnCase::random(&mut rng, (n, c, h, w, o, k, s, p));
        let spec = ops::ConvSpec {
            weight: wt.as_tensor(),
            stride: s,
            padding: p,
        };
        let (fast, fast_m) =
            ops::conv2d_batch_norm_train_segments(&x, spec, &gamma, &beta, 1e-5, relu, segments)
                .unwrap();
        assert_eq!(fast_m.len(), segments.len(), "{case}");
        let mut parts = Vec::new();
        let mut start = 0;
        for (&len, m) in segments.iter().zip(&fast_m) {
            let part = x.narrow(0, start, len).unwrap();
            start += len;
            let (y, ref_m) =
                ops::conv2d_batch_norm_train(&part, spec, &gamma, &beta, 1e-5, relu).unwrap();
            assert_close(&format!("mean {case}"), &m.mean, &ref_m.mean, 1e-6);
            assert_close(
                &format!("var {case}"),
                &m.var_unbiased,
                &ref_m.var_unbiased,
                1e-6,
            );
            parts.push(y);
        }
        let reference = Tensor::cat(&parts, 0).unwrap();
        assert_close(
            &format!("segmented conv+bn y {case}"),
            &fast,
            &reference,
            1e-6,
        );
        assert_same_gradients(
            &format!("segmented conv+bn {case}"),
            &fast,
            &reference,
            &g,
            &[
                ("dx", &x),
                ("dw", &wt),
                ("dgamma", &gamma),
                ("dbeta", &beta),
            ],
            TOL,
        );
        // The composition off the fast path (float64 takes candle's ops) agrees.
        let as64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let (x64, w64) = (as64(&x), as64(&wt));
        let spec64 = ops::ConvSpec {
            weight: &w64,
            stride: s,
            padding: p,
        };
        let (slow, slow_m) = ops::conv2d_batch_norm_train_segments(
            &x64,
            spec64,
            &as64(&gamma),
            &as64(&beta),
            1e-5,
            relu,
            segments,
        )
        .unwrap();
        assert_eq!(slow_m.len(), segments.len(), "{case}");
        assert_close(&format!("composite y {case}"), &as64(&fast), &slow, 1e-4);
    }
    let x = random(&mut rng, &[3, 2, 4, 4]);
    let wt = random(&mut rng, &[2, 2, 3, 3]);
    let ones = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
    let spec = ops::ConvSpec {
        weight: &wt,
        stride: 1,
        padding: 1,
    };
    for bad in [&[1usize, 1][..], &[2, 2], &[]] {
        assert!(
            ops::conv2d_batch_norm_train_segments(&x, spec, &ones, &ones, 1e-5, false, bad)
                .is_err(),
            "segments {bad:?} of 3 images"
        );
    }
    // A 1×1 output map: a one-image segment has one value per channel.
    let spec = ops::ConvSpec {
        weight: &wt,
        stride: 1,
        padding: 0,
    };
    let x = random(&mut rng, &[3, 2, 3, 3]);
    assert!(
        ops::conv2d_batch_norm_train_segments(&x, spec, &ones, &ones, 1e-5, false, &[1, 2])
            .is_err()
    );
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = random(&mut rng, &[2, 3, 4, 4]);
    assert!(ops::conv2d(&x, &random(&mut rng, &[4, 2, 3, 3]), 1, 1).is_err());
    assert!(ops::conv2d(&x, &random(&mut rng, &[4, 3, 7, 7]), 1, 0).is_err());
    assert!(ops::conv2d(&x, &random(&mut rng, &[4, 3, 3, 3]), 0, 1).is_err());
    let one = random(&mut rng, &[1, 3, 1, 1]);
    let c3 = random(&mut rng, &[3]);
    assert!(ops::batch_norm(&one, &c3, &c3, 1e-5, BatchNormStats::Batch).is_err());
    let c2 = random(&mut rng, &[2]);
    assert!(ops::batch_norm(&x, &c2, &c2, 1e-5, BatchNormStats::Batch).is_err());
    assert!(ops::batch_norm_relu(&x, &c2, &c2, 1e-5, BatchNormStats::Batch).is_err());
    assert!(ops::batch_norm_relu(&one, &c3, &c3, 1e-5, BatchNormStats::Batch).is_err());
    assert!(ops::add_relu(&x, &random(&mut rng, &[2, 3, 4, 5])).is_err());
    assert!(ops::add_relu(&x, &random(&mut rng, &[2, 3, 16])).is_err());
    let w433 = random(&mut rng, &[4, 3, 3, 3]);
    let spec = |weight| ops::ConvSpec {
        weight,
        stride: 1,
        padding: 1,
    };
    let c4 = random(&mut rng, &[4]);
    let train = |x: &Tensor, spec, w: &Tensor, b: &Tensor| {
        ops::conv2d_batch_norm_train(x, spec, w, b, 1e-5, true).is_err()
    };
    assert!(train(&x, spec(&w433), &c3, &c3));
    let w423 = random(&mut rng, &[4, 2, 3, 3]);
    assert!(train(&x, spec(&w423), &c4, &c4));
    // One 1×1 image: one value per channel.
    assert!(train(
        &random(&mut rng, &[1, 3, 1, 1]),
        spec(&w433),
        &c4,
        &c4
    ));
}

/// Fills and frees heap blocks of the given sizes with NaN, so that buffers allocated next
/// (likely from the same blocks) start out as NaN rather than as zeroed fresh pages.
fn poison_heap(sizes: &[usize]) {
    let blocks: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![f32::NAN; n]).collect();
    drop(std::hint::black_box(blocks));
}

/// Every value of a tensor is finite.
fn all_finite(t: &Tensor) -> bool {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

/// The kernels allocate their outputs without zero-filling them and must write every value:
/// over NaN-poisoned heap memory, the convolution, batch norm + ReLU (in segments) and add +
/// ReLU outputs and gradients are finite and equal to those of a run without poisoning.
#[test]
fn kernel_outputs_are_fully_written_over_reused_memory() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(n, c, h, w, o, k, s, p) in &CONV_CASES {
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        if n * oh * ow < 2 {
            // Too small for a training-mode batch norm.
            continue;
        }
        // Two batch-norm segments where each keeps more than one value per channel.
        let segments = if n >= 2 && oh * ow >= 2 {
            vec![1, n - 1]
        } else {
            vec![n]
        };
        let case = format!("{:?} segments {segments:?}", (n, c, h, w, o, k, s, p));
        let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
        let wt = Var::from_tensor(&random(&mut rng, &[o, c, k, k])).unwrap();
        let gamma = random(&mut rng, &[o]);
        let beta = random(&mut rng, &[o]);
        let run = |poison: bool| {
            let (y, _) = ops::conv2d_batch_norm_train_segments(
                &x,
                ops::ConvSpec {
                    weight: &wt,
                    stride: s,
                    padding: p,
                },
                &gamma,
                &beta,
                1e-5,
                true,
                &segments,
            )
            .unwrap();
            let z = ops::conv2d(&x, &wt, s, p).unwrap();
            let out = ops::add_relu(&y, &z).unwrap();
            if poison {
                poison_heap(&[out.elem_count(), x.elem_count(), wt.elem_count()]);
            }
            let grads = out.sum_all().unwrap().backward().unwrap();
            let (dx, dw) = (grads.get(&x).unwrap(), grads.get(&wt).unwrap());
            (out, dx.clone(), dw.clone())
        };
        let clean = run(false);
        poison_heap(&[x.elem_count() * o * 2, x.elem_count(), wt.elem_count()]);
        let poisoned = run(true);
        for (what, a, b) in [
            ("output", &poisoned.0, &clean.0),
            ("dx", &poisoned.1, &clean.1),
            ("dw", &poisoned.2, &clean.2),
        ] {
            assert!(all_finite(a), "{what} {case}: non-finite values");
            assert_close(&format!("{what} {case}"), a, b, 0.0);
        }
    }
}
