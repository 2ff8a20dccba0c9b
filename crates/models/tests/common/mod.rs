//! Helpers shared by the integration tests: golden-file access, tolerance checks, and the
//! kernel tests' random tensors and gradient comparison.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, Var};
use pixreg_models::{Arch, ModelConfig, ResNet};
use rand::distr::{Distribution, Uniform};
use rand_chacha::ChaCha8Rng;

/// The shared golden directory (`../shared/golden` from the repository root).
pub const GOLDEN_MODEL_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/golden/model");

/// The configuration of the golden model: `ResNet18(in_shape=(1, 28, 28), num_classes=10,
/// base_channels=8)`.
pub fn golden_config() -> ModelConfig {
    ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 8)
}

/// The device the golden checks run on: `cpu` unless `PIXREG_TEST_DEVICE=cuda:N` names a GPU
/// (a build with `--features cuda`), so the same assertions check candle's CUDA path. One
/// device for the whole test binary: candle refuses to mix tensors of two CUDA contexts.
pub fn test_device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| match std::env::var("PIXREG_TEST_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Device::Cpu,
        Ok(name) => {
            let ordinal = name
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("PIXREG_TEST_DEVICE must be cpu or cuda:N, got {name}"));
            Device::new_cuda(ordinal).unwrap_or_else(|e| panic!("cannot open {name}: {e}"))
        }
    })
}

pub fn golden_path(file: &str) -> String {
    format!("{GOLDEN_MODEL_DIR}/{file}")
}

/// Every tensor of a golden file.
pub fn load_golden(file: &str) -> HashMap<String, Tensor> {
    let path = golden_path(file);
    candle_core::safetensors::load(&path, test_device())
        .unwrap_or_else(|e| panic!("cannot read golden file {path}: {e}"))
}

pub fn get<'a>(map: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    map.get(key)
        .unwrap_or_else(|| panic!("golden tensor `{key}` missing"))
}

/// The golden model, loaded strictly from `weights.safetensors`.
pub fn golden_model() -> ResNet {
    ResNet::load(
        golden_path("weights.safetensors"),
        &golden_config(),
        test_device(),
    )
    .expect("golden weights load strictly")
}

/// `max|a − b| / max|b|` (as float64).
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
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

/// Asserts `|a − b| <= tol·max|b|` elementwise and returns the achieved ratio.
pub fn assert_close(name: &str, a: &Tensor, b: &Tensor, tol: f64) -> f64 {
    let err = rel_err(a, b);
    assert!(
        err <= tol,
        "{name}: max|a-b| / max|b| = {err:.3e} exceeds {tol:.1e}"
    );
    err
}

/// Asserts a scalar loss matches within 1e-5 relative plus 1e-9 absolute.
pub fn assert_loss(name: &str, a: &Tensor, b: &Tensor) -> f64 {
    let a: f64 = a.to_dtype(DType::F64).unwrap().to_scalar().unwrap();
    let b: f64 = b.to_dtype(DType::F64).unwrap().to_scalar().unwrap();
    let diff = (a - b).abs();
    assert!(
        diff <= 1e-5 * b.abs() + 1e-9,
        "{name}: {a} vs golden {b} (diff {diff:.3e})"
    );
    diff / b.abs().max(f64::MIN_POSITIVE)
}

/// Tracks the worst relative error of a group of checks and prints it.
#[derive(Default)]
pub struct Worst {
    pub err: f64,
    pub name: String,
}

impl Worst {
    pub fn record(&mut self, name: &str, err: f64) {
        if err >= self.err {
            self.err = err;
            self.name = name.to_string();
        }
    }

    pub fn report(&self, what: &str) {
        println!(
            "{what}: worst relative error {:.3e} ({})",
            self.err, self.name
        );
    }
}

/// Compares every `after.<key>` of a golden file with the model's state dict: float buffers
/// within `1e-5·max|b|`, counters exactly. Returns the worst float error.
pub fn check_after_buffers(
    model: &ResNet,
    golden: &HashMap<String, Tensor>,
    worst: &mut Worst,
) -> usize {
    let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    let mut checked = 0;
    for (key, expected) in golden {
        let Some(name) = key.strip_prefix("after.") else {
            continue;
        };
        let actual = state
            .get(name)
            .unwrap_or_else(|| panic!("model has no state entry `{name}`"));
        if expected.dtype() == DType::I64 {
            assert_eq!(actual.dtype(), DType::I64, "{name} dtype");
            assert_eq!(
                actual.to_scalar::<i64>().unwrap(),
                expected.to_scalar::<i64>().unwrap(),
                "{name}"
            );
        } else {
            let err = assert_close(name, actual, expected, 1e-5);
            worst.record(name, err);
        }
        checked += 1;
    }
    checked
}

/// Relative tolerance of a float32 kernel against its reference composition.
pub const TOL: f64 = 1e-4;

pub fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let dist = Uniform::new(-1f32, 1f32).unwrap();
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| dist.sample(rng)).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
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
