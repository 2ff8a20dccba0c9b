//! The similarity head's CPU pair kernels (`pixreg_kernels::pair`, reached through
//! `pixreg_models::ops`) against `rsa-core`'s candle composition (`model_side`): cosines,
//! both gradients, the per-channel mean, PyTorch's norm clamp and shape errors.

use candle_core::{DType, Device, Tensor, Var};
use pixreg_models::ops;
use rsa_core::model_side;

fn assert_close(what: &str, fast: &Tensor, reference: &Tensor, tol: f32) {
    let (f, r): (Vec<f32>, Vec<f32>) = (
        fast.flatten_all().unwrap().to_vec1().unwrap(),
        reference.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert_eq!(f.len(), r.len(), "{what}: lengths");
    let scale = r.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in f.iter().zip(&r).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: fast {x}, candle {y} (scale {scale})"
        );
    }
}

/// The gradients of `Σ scores·up`.
fn weighted_backward(scores: &Tensor, up: &Tensor) -> candle_core::backprop::GradStore {
    (scores * up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
}

/// Cosines and both gradients of the kernel against the candle composition, with a
/// random upstream gradient so that every pair's coefficient differs.
fn check(dims: &[usize], seed: u64) {
    let dev = Device::Cpu;
    let c = dims[1];
    let shifted = |t: Tensor, by: f64| (t + by).unwrap();
    let a = Var::from_tensor(&shifted(Tensor::randn(0f32, 1.0, dims, &dev).unwrap(), 0.3)).unwrap();
    let b = Var::from_tensor(&shifted(
        Tensor::randn(0f32, 1.0, dims, &dev).unwrap(),
        seed as f64 * 0.1,
    ))
    .unwrap();
    let mean = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
    let up = Tensor::randn(0f32, 1.0, dims[0], &dev).unwrap();
    let fast = ops::centered_cosine(a.as_tensor(), b.as_tensor(), &mean).unwrap();
    let reference = model_side::centered_cosine(a.as_tensor(), b.as_tensor(), &mean).unwrap();
    assert_close("cosine", &fast, &reference, 1e-5);
    let (g_fast, g_ref) = (
        weighted_backward(&fast, &up),
        weighted_backward(&reference, &up),
    );
    for (name, v) in [("da", &a), ("db", &b)] {
        assert_close(
            name,
            g_fast.get(v.as_tensor()).unwrap(),
            g_ref.get(v.as_tensor()).unwrap(),
            1e-4,
        );
    }
    let m_reference = model_side::batch_channel_mean(a.as_tensor(), b.as_tensor()).unwrap();
    let m_kernel = ops::batch_channel_mean(a.as_tensor(), b.as_tensor()).unwrap();
    assert_close("channel mean", &m_kernel, &m_reference, 1e-5);
}

#[test]
fn centred_cosine_kernel_matches_the_candle_composition() {
    for (i, dims) in [
        vec![16, 64, 8, 8],
        vec![1, 3, 5, 7],
        vec![5, 17, 3, 3],
        vec![4, 33],
        vec![3, 2, 19],
        vec![2, 512, 4, 4],
    ]
    .iter()
    .enumerate()
    {
        check(dims, i as u64);
    }
}

#[test]
fn halves_kernel_matches_the_composition_on_narrowed_halves() {
    let dev = Device::Cpu;
    for dims in [
        vec![32, 16, 4, 4],
        vec![2, 3, 5],
        vec![6, 7],
        vec![10, 5, 3, 3],
    ] {
        let x = Var::randn(0.2f32, 1.0, dims.as_slice(), &dev).unwrap();
        let k = dims[0] / 2;
        let mean = Tensor::randn(0f32, 0.5, dims[1], &dev).unwrap();
        let up = Tensor::randn(0f32, 1.0, k, &dev).unwrap();
        let fast = ops::centered_cosine_halves(x.as_tensor(), &mean).unwrap();
        let (a, b) = (x.narrow(0, 0, k).unwrap(), x.narrow(0, k, k).unwrap());
        let reference = model_side::centered_cosine(&a, &b, &mean).unwrap();
        assert_close("cosine of halves", &fast, &reference, 1e-5);
        let (g_fast, g_ref) = (
            weighted_backward(&fast, &up),
            weighted_backward(&reference, &up),
        );
        assert_close(
            "dx of halves",
            g_fast.get(x.as_tensor()).unwrap(),
            g_ref.get(x.as_tensor()).unwrap(),
            1e-4,
        );
    }
    let mean = Tensor::zeros(3, DType::F32, &dev).unwrap();
    let odd = Tensor::zeros((3, 3, 2), DType::F32, &dev).unwrap();
    assert!(ops::centered_cosine_halves(&odd, &mean).is_err());
    let even = Tensor::zeros((4, 3, 2), DType::F32, &dev).unwrap();
    assert!(
        ops::centered_cosine_halves(&even, &Tensor::zeros(2, DType::F32, &dev).unwrap()).is_err()
    );
}

#[test]
fn a_constant_map_gets_the_clamped_norm_as_in_pytorch() {
    // Pair 0: `a` equals the mean everywhere, so ‖a'‖ = 0 < eps: cosine 0, and the
    // gradient of a is b'/(eps·‖b'‖) (no self term), finite.
    let dev = Device::Cpu;
    let mean = Tensor::new(&[0.5f32, -1.0], &dev).unwrap();
    let a = Var::from_tensor(&mean.reshape((1, 2, 1)).unwrap().repeat((1, 1, 3)).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, (1, 2, 3), &dev).unwrap()).unwrap();
    let fast = ops::centered_cosine(a.as_tensor(), b.as_tensor(), &mean).unwrap();
    assert_eq!(fast.to_vec1::<f32>().unwrap(), vec![0.0]);
    let grads = fast.sum_all().unwrap().backward().unwrap();
    let da: Vec<f32> = grads
        .get(a.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let bc: Vec<f32> = b
        .as_tensor()
        .broadcast_sub(&mean.reshape((1, 2, 1)).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let nb = bc.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    for (g, y) in da.iter().zip(&bc) {
        let expected = f64::from(*y) / (model_side::COSINE_EPS * nb);
        assert!(g.is_finite() && (f64::from(*g) - expected).abs() <= 1e-5 * expected.abs());
    }
    let db: Vec<f32> = grads
        .get(b.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        db.iter().all(|g| *g == 0.0),
        "b's gradient is zero when a' is: {db:?}"
    );
}

#[test]
fn mismatched_shapes_are_errors() {
    let dev = Device::Cpu;
    let a = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    let b = Tensor::zeros((2, 3, 5), DType::F32, &dev).unwrap();
    let mean = Tensor::zeros(3, DType::F32, &dev).unwrap();
    assert!(ops::centered_cosine(&a, &b, &mean).is_err());
    let wrong_mean = Tensor::zeros(4, DType::F32, &dev).unwrap();
    assert!(ops::centered_cosine(&a, &a, &wrong_mean).is_err());
    assert!(
        ops::centered_cosine(&a.flatten_all().unwrap(), &a.flatten_all().unwrap(), &mean).is_err()
    );
}
