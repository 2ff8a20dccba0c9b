//! The fast CPU batch-norm and ReLU kernels (`pixreg_models::ops`) against the composite
//! batch norm (`ops::batch_norm_composite`) and candle's ReLU, forward and backward.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{assert_close, assert_same_gradients, random, reference_relu, rel_err, TOL};
use pixreg_models::ops::{self, BatchNormStats};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// (N, C, H, W) for batch norm: odd sizes, one image, 1×1 maps.
const BN_CASES: [(usize, usize, usize, usize); 6] = [
    (2, 3, 5, 7),
    (1, 4, 3, 3),
    (7, 2, 1, 1),
    (4, 9, 6, 5),
    (3, 1, 17, 2),
    (64, 16, 4, 4),
];

/// A training-mode case's input (offset by 0.5 so that the mean matters), γ, β and output
/// gradient, drawn in this order.
fn train_case(
    rng: &mut ChaCha8Rng,
    (n, c, h, w): (usize, usize, usize, usize),
) -> (Var, Var, Var, Tensor) {
    let x = Var::from_tensor(&(random(rng, &[n, c, h, w]) + 0.5).unwrap()).unwrap();
    let gamma = Var::from_tensor(&random(rng, &[c])).unwrap();
    let beta = Var::from_tensor(&random(rng, &[c])).unwrap();
    (x, gamma, beta, random(rng, &[n, c, h, w]))
}

#[test]
fn batch_norm_train_matches_the_composite_forward_backward_and_moments() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for &(n, c, h, w) in &BN_CASES {
        let case = format!("{:?}", (n, c, h, w));
        let (x, gamma, beta, g) = train_case(&mut rng, (n, c, h, w));
        let (fast, fast_m) =
            ops::batch_norm(&x, &gamma, &beta, 1e-5, BatchNormStats::Batch).unwrap();
        let (reference, ref_m) =
            ops::batch_norm_composite(&x, &gamma, &beta, 1e-5, BatchNormStats::Batch).unwrap();
        assert_close(&format!("bn y {case}"), &fast, &reference, 1e-5);
        let (fast_m, ref_m) = (fast_m.unwrap(), ref_m.unwrap());
        assert_close(&format!("bn mean {case}"), &fast_m.mean, &ref_m.mean, 1e-6);
        assert_close(
            &format!("bn var {case}"),
            &fast_m.var_unbiased,
            &ref_m.var_unbiased,
            1e-6,
        );
        assert_same_gradients(
            &format!("bn {case}"),
            &fast,
            &reference,
            &g,
            &[("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)],
            TOL,
        );
    }
}

#[test]
fn batch_norm_eval_matches_the_composite_forward_and_backward() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for &(n, c, h, w) in &BN_CASES {
        let case = format!("{:?}", (n, c, h, w));
        let x = Var::from_tensor(&random(&mut rng, &[n, c, h, w])).unwrap();
        let gamma = Var::from_tensor(&random(&mut rng, &[c])).unwrap();
        let beta = Var::from_tensor(&random(&mut rng, &[c])).unwrap();
        let mean = random(&mut rng, &[c]);
        let var = (random(&mut rng, &[c]) + 1.5).unwrap();
        let stats = BatchNormStats::Running {
            mean: &mean,
            var: &var,
        };
        let (fast, none) = ops::batch_norm(&x, &gamma, &beta, 1e-5, stats).unwrap();
        assert!(none.is_none());
        let (reference, _) = ops::batch_norm_composite(&x, &gamma, &beta, 1e-5, stats).unwrap();
        assert_eq!(rel_err(&fast, &reference), 0.0, "bn eval y {case}");
        let g = random(&mut rng, &[n, c, h, w]);
        assert_same_gradients(
            &format!("bn eval {case}"),
            &fast,
            &reference,
            &g,
            &[("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)],
            TOL,
        );
    }
}

#[test]
fn batch_norm_relu_matches_the_unfused_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for &(n, c, h, w) in &BN_CASES {
        let case = format!("{:?}", (n, c, h, w));
        // About half of the outputs are clipped.
        let (x, gamma, beta, g) = train_case(&mut rng, (n, c, h, w));
        let (fast, fast_m) =
            ops::batch_norm_relu(&x, &gamma, &beta, 1e-5, BatchNormStats::Batch).unwrap();
        let (bn, ref_m) =
            ops::batch_norm_composite(&x, &gamma, &beta, 1e-5, BatchNormStats::Batch).unwrap();
        let reference = reference_relu(&bn);
        assert_close(&format!("bn+relu y {case}"), &fast, &reference, 1e-5);
        let (fast_m, ref_m) = (fast_m.unwrap(), ref_m.unwrap());
        assert_close(
            &format!("bn+relu mean {case}"),
            &fast_m.mean,
            &ref_m.mean,
            1e-6,
        );
        assert_same_gradients(
            &format!("bn+relu {case}"),
            &fast,
            &reference,
            &g,
            &[("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)],
            TOL,
        );
    }
}

#[test]
fn batch_norm_relu_eval_is_relu_of_the_eval_batch_norm() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (n, c, h, w) = (3, 5, 4, 3);
    let x = random(&mut rng, &[n, c, h, w]);
    let (gamma, beta) = (random(&mut rng, &[c]), random(&mut rng, &[c]));
    let (mean, var) = (
        random(&mut rng, &[c]),
        (random(&mut rng, &[c]) + 1.5).unwrap(),
    );
    let stats = BatchNormStats::Running {
        mean: &mean,
        var: &var,
    };
    let (fused, _) = ops::batch_norm_relu(&x, &gamma, &beta, 1e-5, stats).unwrap();
    let (bn, _) = ops::batch_norm(&x, &gamma, &beta, 1e-5, stats).unwrap();
    let reference = reference_relu(&bn);
    assert_close("bn+relu eval", &fused, &reference, 0.0);
    // The gradients too (white-box attacks differentiate the eval-mode model).
    let (x, gamma, beta) = (
        Var::from_tensor(&x).unwrap(),
        Var::from_tensor(&gamma).unwrap(),
        Var::from_tensor(&beta).unwrap(),
    );
    let (fused, _) = ops::batch_norm_relu(&x, &gamma, &beta, 1e-5, stats).unwrap();
    let (bn, _) = ops::batch_norm(&x, &gamma, &beta, 1e-5, stats).unwrap();
    let g = random(&mut rng, &[n, c, h, w]);
    assert_same_gradients(
        "bn+relu eval",
        &fused,
        &reference_relu(&bn),
        &g,
        &[("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)],
        0.0,
    );
}

#[test]
fn add_relu_matches_the_unfused_composition() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for shape in [[2, 3, 5, 7], [1, 1, 1, 1], [4, 9, 6, 5], [64, 16, 4, 4]] {
        let a = Var::from_tensor(&random(&mut rng, &shape)).unwrap();
        let b = Var::from_tensor(&random(&mut rng, &shape)).unwrap();
        let g = random(&mut rng, &shape);
        let fast = ops::add_relu(&a, &b).unwrap();
        let reference = reference_relu(&(a.as_tensor() + b.as_tensor()).unwrap());
        assert_close(&format!("add+relu y {shape:?}"), &fast, &reference, 0.0);
        assert_same_gradients(
            &format!("add+relu {shape:?}"),
            &fast,
            &reference,
            &g,
            &[("da", &a), ("db", &b)],
            0.0,
        );
    }
    // A constant operand gets no gradient; the other still does.
    let a = Var::from_tensor(&random(&mut rng, &[2, 2, 3, 3])).unwrap();
    let b = random(&mut rng, &[2, 2, 3, 3]);
    let grads = ops::add_relu(&a, &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(grads.get(&a).is_some() && grads.get(&b).is_none());
}

#[test]
fn relu_matches_pytorch_semantics() {
    let x = Var::from_tensor(
        &Tensor::new(&[[-1.5f32, 0.0, 2.0], [-0.0, 3.5, -2.0]], &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 1, 3))
            .unwrap(),
    )
    .unwrap();
    let y = ops::relu(&x).unwrap();
    assert_eq!(
        y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        [0.0, 0.0, 2.0, 0.0, 3.5, 0.0]
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        g.get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        [0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    );
}
