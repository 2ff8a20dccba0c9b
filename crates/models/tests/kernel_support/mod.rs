//! Helpers shared by the kernel test files: random tensors, relative errors and the
//! gradient comparison against a reference composition.

use candle_core::{DType, Device, Tensor, Var};
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;

/// Relative tolerance of a float32 kernel against its reference composition.
pub const TOL: f64 = 1e-4;

pub fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let dist = Uniform::new(-1f32, 1f32).unwrap();
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// `max|a − b| / max|b|`.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let diff: f64 = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    let scale: f64 = b.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let err = rel_err(a, b);
    assert!(err <= tol, "{what}: relative error {err:.3e} > {tol:.0e}");
}

/// Back-propagates `Σ fast·g` and `Σ reference·g` and compares the gradients of `vars`.
pub fn assert_same_gradients(
    what: &str,
    fast: &Tensor,
    reference: &Tensor,
    g: &Tensor,
    vars: &[(&str, &Var)],
    tol: f64,
) {
    let fg = (fast * g).unwrap().sum_all().unwrap().backward().unwrap();
    let rg = (reference * g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in vars {
        assert_close(
            &format!("{what}: {name}"),
            fg.get(var).unwrap(),
            rg.get(var).unwrap(),
            tol,
        );
    }
}

/// candle's own ReLU with PyTorch's gradient (the reference composition; the mask is a
/// constant, so the gradient is `dy·[x > 0]`).
pub fn reference_relu(x: &Tensor) -> Tensor {
    let mask = x.gt(0f64).unwrap().to_dtype(DType::F32).unwrap();
    x.mul(&mask).unwrap()
}
