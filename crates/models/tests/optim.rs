//! `SgdMomentum` against PyTorch's update rule, and its saved state.

use candle_core::{Device, Tensor, Var};
use pixreg_models::{Error, SgdMomentum};

fn var(v: &[f32]) -> Var {
    Var::new(v, &Device::Cpu).unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().to_vec1().unwrap()
}

/// `loss = Σ c·p` so the gradient of `p` is `c` whatever `p` is.
fn linear_loss(p: &Var, c: &[f32]) -> Tensor {
    let c = Tensor::new(c, &Device::Cpu).unwrap();
    (p.as_tensor() * c).unwrap().sum_all().unwrap()
}

#[test]
fn first_step_sets_the_buffer_then_momentum_accumulates() {
    let (lr, mu, wd) = (0.1f64, 0.9f64, 0.01f64);
    let p = var(&[1.0, -2.0]);
    let c = [0.5f32, 3.0];
    let mut opt = SgdMomentum::new(vec![("p".into(), p.clone())], lr, mu, wd);

    // PyTorch: d = g + wd·p; buf = d (first step) / μ·buf + d; p -= lr·buf.
    let mut expect = [1.0f64, -2.0];
    let mut buf = [0.0f64; 2];
    for step in 0..3 {
        let grads = linear_loss(&p, &c).backward().unwrap();
        opt.step(&grads).unwrap();
        for i in 0..2 {
            let d = c[i] as f64 + wd * expect[i];
            buf[i] = if step == 0 { d } else { mu * buf[i] + d };
            expect[i] -= lr * buf[i];
        }
        let got = values(&p);
        for i in 0..2 {
            assert!(
                (got[i] as f64 - expect[i]).abs() < 1e-6,
                "step {step}: {got:?} vs {expect:?}"
            );
        }
    }
    let stored: Vec<f32> = opt.momentum_buffer("p").unwrap().to_vec1().unwrap();
    assert!((stored[1] as f64 - buf[1]).abs() < 1e-5);
}

#[test]
fn no_momentum_is_plain_sgd_and_set_lr_applies() {
    let p = var(&[1.0]);
    let mut opt = SgdMomentum::new(vec![("p".into(), p.clone())], 0.5, 0.0, 0.0);
    opt.step(&linear_loss(&p, &[2.0]).backward().unwrap())
        .unwrap();
    assert_eq!(values(&p), vec![0.0]);
    opt.set_lr(0.25);
    assert_eq!(opt.lr(), 0.25);
    opt.step(&linear_loss(&p, &[2.0]).backward().unwrap())
        .unwrap();
    assert_eq!(values(&p), vec![-0.5]);
    assert!(opt.momentum_buffer("p").is_none());
}

#[test]
fn parameters_without_gradient_are_skipped() {
    let used = var(&[1.0]);
    let unused = var(&[7.0]);
    let mut opt = SgdMomentum::new(
        vec![
            ("used".into(), used.clone()),
            ("unused".into(), unused.clone()),
        ],
        0.1,
        0.9,
        0.1,
    );
    opt.step(&linear_loss(&used, &[1.0]).backward().unwrap())
        .unwrap();
    assert_eq!(values(&unused), vec![7.0]);
    assert!(opt.momentum_buffer("unused").is_none());
    assert!(opt.momentum_buffer("used").is_some());
}

#[test]
fn saved_state_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    let c = [0.3f32, -1.0, 2.0];
    let p1 = var(&[1.0, 2.0, 3.0]);
    let mut opt1 = SgdMomentum::new(vec![("w".into(), p1.clone())], 0.1, 0.9, 0.0);
    opt1.step(&linear_loss(&p1, &c).backward().unwrap())
        .unwrap();
    opt1.save_state(&path).unwrap();
    let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert_eq!(saved.keys().collect::<Vec<_>>(), vec!["momentum_buffer.w"]);

    let p2 = var(&values(&p1));
    let mut opt2 = SgdMomentum::new(vec![("w".into(), p2.clone())], 0.1, 0.9, 0.0);
    opt2.load_state(&path).unwrap();
    opt1.step(&linear_loss(&p1, &c).backward().unwrap())
        .unwrap();
    opt2.step(&linear_loss(&p2, &c).backward().unwrap())
        .unwrap();
    assert_eq!(values(&p1), values(&p2));

    // A buffer for an unknown parameter, or of the wrong shape, is rejected.
    let other = var(&[0.0, 0.0]);
    let mut opt3 = SgdMomentum::new(vec![("v".into(), other.clone())], 0.1, 0.9, 0.0);
    assert!(matches!(
        opt3.load_state(&path),
        Err(Error::UnexpectedKey { key, .. }) if key == "momentum_buffer.w"
    ));
    let mut opt4 = SgdMomentum::new(vec![("w".into(), other)], 0.1, 0.9, 0.0);
    assert!(matches!(
        opt4.load_state(&path),
        Err(Error::ShapeMismatch { key, .. }) if key == "momentum_buffer.w"
    ));
}

/// The float32 update of the candle-op formulation, element by element: `d = g + p·wd`,
/// `buf = d` (first step) or `buf·μ + d`, `p = p − buf·lr` (`p − d·lr` without momentum).
fn reference_step(p: &mut [f32], buf: &mut Option<Vec<f32>>, g: &[f32], hyper: (f32, f32, f32)) {
    let (lr, mu, wd) = hyper;
    let d: Vec<f32> = g
        .iter()
        .zip(p.iter())
        .map(|(&g, &p)| if wd != 0.0 { g + p * wd } else { g })
        .collect();
    let dir = if mu != 0.0 {
        let b = match buf.take() {
            Some(b) => b.iter().zip(&d).map(|(&b, &d)| b * mu + d).collect(),
            None => d,
        };
        *buf = Some(b.clone());
        b
    } else {
        d
    };
    for (p, dv) in p.iter_mut().zip(dir) {
        *p -= dv * lr;
    }
}

#[test]
fn in_place_update_is_bit_identical_to_the_float32_formula_and_leaves_gradients_alone() {
    let init: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
        .collect();
    let c: Vec<f32> = (0..1000)
        .map(|i| ((i * 53 % 89) as f32 - 44.0) / 7.0)
        .collect();
    for (lr, mu, wd) in [
        (0.1f32, 0.9f32, 5e-4f32),
        (0.01, 0.9, 0.0),
        (0.3, 0.0, 0.01),
        (0.3, 0.0, 0.0),
    ] {
        let p = var(&init);
        let mut opt = SgdMomentum::new(
            vec![("p".into(), p.clone())],
            lr as f64,
            mu as f64,
            wd as f64,
        );
        let mut expect = init.clone();
        let mut buf = None;
        for step in 0..3 {
            let grads = linear_loss(&p, &c).backward().unwrap();
            opt.step(&grads).unwrap();
            let g: Vec<f32> = grads.get(p.as_tensor()).unwrap().to_vec1().unwrap();
            assert_eq!(
                g, c,
                "the gradient was modified ({lr}, {mu}, {wd}), step {step}"
            );
            reference_step(&mut expect, &mut buf, &c, (lr, mu, wd));
            assert_eq!(values(&p), expect, "({lr}, {mu}, {wd}), step {step}");
        }
        let stored = opt
            .momentum_buffer("p")
            .map(|b| b.to_vec1::<f32>().unwrap());
        assert_eq!(stored, buf, "({lr}, {mu}, {wd})");
    }
}
