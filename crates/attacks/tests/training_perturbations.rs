//! The training-time perturbations of the defense baselines: adversarial examples from
//! `Pgd::perturb` / `Pgd::fgsm` and Gaussian-noise augmentation.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use pixreg_attacks::{GaussianAugmentation, Pgd};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn perturb_returns_the_adversarials_of_run() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(5, 0.1, bounds, 3);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    for pgd in [
        Pgd {
            steps: 5,
            max_batch: 2,
            ..Pgd::linf(0.05)
        },
        Pgd {
            steps: 5,
            ..Pgd::l2(0.3)
        },
        Pgd::fgsm(0.03),
    ] {
        let full = pgd.run(&model, &x, &labels, 11).unwrap();
        let only = pgd.perturb(&model, &x, &labels, 11).unwrap();
        assert_eq!(values(&full.adversarials), values(&only));
        let other_seed = pgd.perturb(&model, &x, &labels, 12).unwrap();
        assert_eq!(
            values(&only) != values(&other_seed),
            pgd.random_start,
            "only the random start depends on the seed"
        );
    }
}

#[test]
fn fgsm_step_is_one_signed_step_of_epsilon_and_optimal_on_a_linear_model() {
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(12, 0.05, bounds, 10);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let eps = 0.01;
    let adv = values(&Pgd::fgsm(eps).perturb(&model, &x, &labels, 0).unwrap());
    for (i, u) in imgs.iter().enumerate() {
        for (k, (&a, &u0)) in adv[i * D..(i + 1) * D].iter().zip(u).enumerate() {
            // The CE gradient of class 1 points against ŵ: every pixel moves by -ε·sign(ŵ).
            let expect = (u0 - eps as f32 * model.w_hat[k].signum()).clamp(0.0, 1.0);
            assert!(
                (a - expect).abs() < 1e-6,
                "image {i} pixel {k}: {a} vs {expect}"
            );
        }
        let flipped = model.g_unit(&adv[i * D..(i + 1) * D]) < 0.0;
        assert_eq!(flipped, model.linf_margin_unit(u) < eps, "image {i}");
    }
}

#[test]
fn gaussian_augmentation_is_seeded_in_range_and_has_the_requested_spread() {
    let d = 4096;
    // Half the pixels at the extremes (they fix each image's range to [0, 1]), half at 0.5.
    let row: Vec<f32> = (0..d)
        .map(|i| match i % 4 {
            0 => 0.0,
            1 => 1.0,
            _ => 0.5,
        })
        .collect();
    let images = Tensor::from_vec([row.clone(), row].concat(), (2, 1, 64, 64), &Device::Cpu)
        .unwrap()
        .affine(5.0, -2.5)
        .unwrap();
    let bounds = (-2.5, 2.5);
    let sigma = 0.05;
    let aug = GaussianAugmentation::new(sigma).unwrap();
    let a = values(&aug.apply(&images, bounds, 1).unwrap());
    assert_eq!(a, values(&aug.apply(&images, bounds, 1).unwrap()));
    assert_ne!(a, values(&aug.apply(&images, bounds, 2).unwrap()));
    assert_ne!(a[..d], a[d..], "each image has its own stream");
    assert!(a.iter().all(|v| (-2.5..=2.5).contains(v)));
    let middle: Vec<f64> = a
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 >= 2)
        .map(|(_, &v)| (f64::from(v) + 2.5) / 5.0 - 0.5)
        .collect();
    let mean = middle.iter().sum::<f64>() / middle.len() as f64;
    let std = (middle.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / middle.len() as f64).sqrt();
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((std - sigma).abs() < 0.005, "std {std}");

    let zero = GaussianAugmentation::new(0.0).unwrap();
    let same = values(&zero.apply(&images, bounds, 1).unwrap());
    assert!(same
        .iter()
        .zip(values(&images))
        .all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn gaussian_augmentation_rejects_bad_settings() {
    assert!(GaussianAugmentation::new(-0.1).is_err());
    assert!(GaussianAugmentation::new(f64::NAN).is_err());
    let images = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let aug = GaussianAugmentation::new(0.1).unwrap();
    assert!(aug.apply(&images, (1.0, 0.0), 0).is_err());
    let flat = Tensor::zeros((4,), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(aug.apply(&flat, (0.0, 1.0), 0).is_err());
}
