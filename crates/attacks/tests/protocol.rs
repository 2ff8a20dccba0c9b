//! The paper's median-distance protocol, noise attack runs, corruptions, grids and errors.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use pixreg_attacks::*;

const INDICES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/specs/official_seed0_indices.json"
);

#[test]
fn paper_grids_are_numpy_linspace() {
    let g = EpsilonGrid::paper(Task::Cifar10, GridAttack::Fgsm);
    assert_eq!(g.len(), 10);
    assert_eq!(g[0], 0.0);
    assert_eq!(g[9], 0.02);
    assert_eq!(g[1], 0.02 / 9.0);
    assert_eq!(
        EpsilonGrid::paper(Task::Mnist, GridAttack::SaltPepper)[9],
        0.3
    );
    assert_eq!(
        EpsilonGrid::paper(Task::FashionMnist, GridAttack::Gaussian)[9],
        0.5
    );
    assert_eq!(
        EpsilonGrid::paper(Task::Cifar100, GridAttack::Fgsm)[9],
        0.005
    );
    assert_eq!(
        EpsilonGrid::paper(Task::Cifar100, GridAttack::Uniform)[9],
        0.1
    );
}

#[test]
fn official_indices_load() {
    let ix = official_boundary_indices(INDICES, Task::Cifar10).unwrap();
    assert_eq!(ix.len(), 1000);
    assert!(ix.iter().all(|&i| i < 10_000));
    let mut s = ix.clone();
    s.sort();
    s.dedup();
    assert_eq!(s.len(), 1000);
}

#[test]
fn protocol_medians_failures_and_nan() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(9, 0.3, bounds, 12);
    let x = to_model(&imgs, bounds);
    let proto = DecisionProtocol {
        n_images: 6,
        repeats: 2,
        ..DecisionProtocol::paper(3)
    };
    let rep = proto.run(&model, &x).unwrap();
    assert_eq!(rep.indices.len(), 6);
    assert_eq!(rep.medians.len(), 2);
    assert!(rep.labels.iter().all(|&l| l == 1));
    for r in &rep.repeats {
        assert_eq!(r.successes + r.failures, 6);
        let d: Vec<f64> = r.distances.iter().flatten().copied().collect();
        assert_eq!(r.median, median(&d));
    }
    assert!((rep.mean_of_medians - (rep.medians[0] + rep.medians[1]) / 2.0).abs() < 1e-15);
    assert_ne!(
        rep.medians[0], rep.medians[1],
        "repeats must use different randomness"
    );
    // same configuration -> same report (apart from timings)
    let again = proto.run(&model, &x).unwrap();
    assert_eq!(again.medians, rep.medians);
    // explicit indices, all channels vs first channel are equal for grayscale
    let explicit = DecisionProtocol {
        indices: Some(vec![0, 4, 8]),
        channels: DistanceChannels::FirstOnly,
        ..proto.clone()
    };
    let e = explicit.run(&model, &x).unwrap();
    assert_eq!(e.indices, vec![0, 4, 8]);
    let all = DecisionProtocol {
        channels: DistanceChannels::All,
        ..explicit.clone()
    };
    assert_eq!(all.run(&model, &x).unwrap().medians, e.medians);
    // serialisable (NaN becomes null)
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("mean_of_medians"));

    // every image fails: NaN median, failures counted, no panic
    let constant = FnClassifier::new(
        |x: &Tensor| {
            Tensor::from_vec(
                [0f32, 1.0].repeat(x.dims()[0]),
                (x.dims()[0], 2),
                x.device(),
            )
        },
        bounds,
    );
    let failing = DecisionProtocol {
        attack: BoundaryAttack {
            init: BlendedUniformNoiseInit {
                directions: 5,
                steps: 50,
            },
            ..BoundaryAttack::paper()
        },
        repeats: 1,
        ..proto.clone()
    };
    let f = failing.run(&constant, &x).unwrap();
    assert!(f.medians[0].is_nan() && f.mean_of_medians.is_nan());
    assert_eq!(f.repeats[0].failures, 6);
    assert_eq!(f.success_rate, 0.0);
    assert!(serde_json::to_string(&f).unwrap().contains("null"));
}

#[test]
fn mse_distance_channels() {
    let x0 = vec![0.0f32; 3 * 2 * 2];
    let mut adv = x0.clone();
    adv[0] = 0.5; // channel 0
    adv[5] = 1.0; // channel 1
    let all = mse_distance(&x0, &adv, (3, 2, 2), DistanceChannels::All);
    let first = mse_distance(&x0, &adv, (3, 2, 2), DistanceChannels::FirstOnly);
    assert!((all - 1.25 / 12.0).abs() < 1e-12);
    assert!((first - 0.25 / 4.0).abs() < 1e-12);
    assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    assert!(median(&[]).is_nan());
}

#[test]
fn noise_attack_runs_reproducibly() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(20, 0.1, bounds, 13);
    let x = to_model(&imgs, bounds);
    let labels: Vec<u32> = imgs
        .iter()
        .map(|u| (model.g_unit(u) > 0.0) as u32)
        .collect();
    for kind in [
        NoiseKind::Gaussian,
        NoiseKind::Uniform,
        NoiseKind::SaltPepper,
    ] {
        let attack = NoiseAttack::paper(Task::Mnist, kind);
        let a = attack.run(&model, &x, &labels, 1).unwrap();
        assert_eq!(a.accuracy[0], 1.0);
        assert!(a.accuracy[9] < 1.0, "{kind:?}: {:?}", a.accuracy);
        let small = NoiseAttack {
            max_batch: 7,
            ..attack.clone()
        };
        assert_eq!(
            small.run(&model, &x, &labels, 1).unwrap().accuracy,
            a.accuracy
        );
    }
    let bad = NoiseAttack::new(NoiseKind::SaltPepper, vec![0.0, 1.5]);
    assert!(matches!(
        bad.run(&model, &x, &labels, 0),
        Err(AttackError::InvalidParameter(_))
    ));
}

#[test]
fn corruptions_are_valid_images() {
    let dev = Device::Cpu;
    let rgb: Vec<f32> = (0..3 * 16 * 16)
        .map(|i| ((i * 37) % 256) as f32 / 255.0)
        .collect();
    let gray: Vec<f32> = rgb[..256].to_vec();
    for &kind in CorruptionKind::ALL {
        for sev in 1..=5u8 {
            let c = Corruption::new(kind, sev).unwrap();
            for (img, dims) in [(&rgb, (3, 16, 16)), (&gray, (1, 16, 16))] {
                let mut r1 = rand::SeedableRng::seed_from_u64(5);
                let mut r2: rand_chacha::ChaCha8Rng = rand::SeedableRng::seed_from_u64(5);
                let rng1: &mut rand_chacha::ChaCha8Rng = &mut r1;
                let out = c.apply_image(img, dims, rng1).unwrap();
                assert_eq!(out.len(), img.len());
                assert!(
                    out.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{kind:?} {sev}"
                );
                assert_eq!(out, c.apply_image(img, dims, &mut r2).unwrap());
                let changed = out.iter().zip(img.iter()).any(|(a, b)| a != b);
                assert!(changed, "{kind:?} severity {sev} left the image unchanged");
            }
        }
    }
    // contrast shrinks the spread monotonically with severity
    let spread = |v: &[f32]| {
        v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
    };
    let mut rng: rand_chacha::ChaCha8Rng = rand::SeedableRng::seed_from_u64(0);
    let s1 = spread(
        &Corruption::new(CorruptionKind::Contrast, 1)
            .unwrap()
            .apply_image(&gray, (1, 16, 16), &mut rng)
            .unwrap(),
    );
    let s5 = spread(
        &Corruption::new(CorruptionKind::Contrast, 5)
            .unwrap()
            .apply_image(&gray, (1, 16, 16), &mut rng)
            .unwrap(),
    );
    assert!(s5 < s1);
    assert!(Corruption::new(CorruptionKind::Jpeg, 0).is_err());
    assert!(Corruption::new(CorruptionKind::Jpeg, 6).is_err());
    // Without the `jpeg` feature the JPEG corruption is an error, not a silent copy.
    #[cfg(not(feature = "jpeg"))]
    {
        let jpeg = Corruption::new(CorruptionKind::Jpeg, 3).unwrap();
        let err = jpeg
            .apply_image(&gray, (1, 16, 16), &mut rng)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`jpeg` feature"), "{err}");
    }

    // evaluation over a linear model
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(10, 0.1, bounds, 14);
    let x = to_model(&imgs, bounds);
    let labels: Vec<u32> = imgs
        .iter()
        .map(|u| (model.g_unit(u) > 0.0) as u32)
        .collect();
    let eval = CorruptionEval {
        severities: vec![1, 5],
        ..CorruptionEval::default()
    };
    let rep = eval.run(&model, &x, &labels, 0).unwrap();
    assert_eq!(rep.clean_accuracy, 1.0);
    assert_eq!(rep.entries.len(), 2 * CorruptionKind::ALL.len());
    assert_eq!(
        eval.run(&model, &x, &labels, 0).unwrap().entries,
        rep.entries
    );
    // Bands: 3 × 2 severities, each the mean of its corruptions' accuracies.
    assert_eq!(rep.by_band.len(), 6);
    for b in &rep.by_band {
        let members: Vec<f64> = rep
            .entries
            .iter()
            .filter(|e| e.kind.band() == b.band && e.severity == b.severity)
            .map(|e| e.accuracy)
            .collect();
        let expected_members = CorruptionKind::ALL
            .iter()
            .filter(|k| k.band() == b.band)
            .count();
        assert_eq!(members.len(), expected_members, "{b:?}");
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        assert!((b.accuracy - mean).abs() < 1e-12, "{b:?} vs {mean}");
    }
    let _ = dev;
}

#[test]
fn band_means_group_by_band_and_severity() {
    let entry = |kind, severity, accuracy| CorruptionAccuracy {
        kind,
        severity,
        accuracy,
    };
    let bands = band_means(&[
        entry(CorruptionKind::GaussianNoise, 4, 0.2),
        entry(CorruptionKind::ImpulseNoise, 4, 0.4),
        entry(CorruptionKind::Contrast, 4, 0.9),
        entry(CorruptionKind::Jpeg, 2, 0.5),
    ]);
    let got: Vec<(FrequencyBand, u8, f64)> = bands
        .iter()
        .map(|b| (b.band, b.severity, b.accuracy))
        .collect();
    assert_eq!(
        got,
        vec![
            (FrequencyBand::Low, 4, 0.9),
            (FrequencyBand::Medium, 2, 0.5),
            (FrequencyBand::High, 4, 0.30000000000000004),
        ]
    );
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(2, 0.3, bounds, 15);
    let x = to_model(&imgs, bounds);
    let ba = BoundaryAttack::paper();
    // wrong label count
    assert!(matches!(
        ba.run(&model, &x, &[1], 0),
        Err(AttackError::Shape(_))
    ));
    // wrong rank
    let flat = x.flatten_from(1).unwrap();
    assert!(matches!(
        ba.run(&model, &flat, &[1, 1], 0),
        Err(AttackError::Shape(_))
    ));
    // empty batch
    let empty = x.narrow(0, 0, 0).unwrap();
    assert!(matches!(
        ba.run(&model, &empty, &[], 0),
        Err(AttackError::EmptyBatch)
    ));
    assert!(matches!(
        HopSkipJump::default().run(&model, &empty, &[], 0),
        Err(AttackError::EmptyBatch)
    ));
    // images outside the bounds
    let outside = (x.clone() * 3.0).unwrap();
    assert!(matches!(
        ba.run(&model, &outside, &[1, 1], 0),
        Err(AttackError::InvalidParameter(_))
    ));
    // NaN logits
    let nan = FnClassifier::new(
        |x: &Tensor| {
            Tensor::from_vec(
                [f32::NAN, 1.0].repeat(x.dims()[0]),
                (x.dims()[0], 2),
                x.device(),
            )
        },
        bounds,
    );
    assert!(matches!(
        ba.run(&nan, &x, &[1, 1], 0),
        Err(AttackError::NonFiniteLogits)
    ));
    assert!(matches!(
        NoiseAttack::paper(Task::Mnist, NoiseKind::Gaussian).run(&nan, &x, &[1, 1], 0),
        Err(AttackError::NonFiniteLogits)
    ));
    // bad bounds and configuration
    let inverted = FnClassifier::new(|x: &Tensor| model.logits(x), (1.0, 0.0));
    assert!(ba.run(&inverted, &x, &[1, 1], 0).is_err());
    let bad = BoundaryAttack {
        update_stats_every_k: 0,
        ..ba
    };
    assert!(bad.run(&model, &x, &[1, 1], 0).is_err());
    assert!(Pgd::l2(-1.0).run(&model, &x, &[1, 1], 0).is_err());
    assert!(Fgsm::new(vec![f64::NAN])
        .run_white_box(&model, &x, &[1, 1])
        .is_err());
    let proto = DecisionProtocol {
        indices: Some(vec![5]),
        ..DecisionProtocol::paper(0)
    };
    assert!(proto.run(&model, &x).is_err());
    assert!(
        labels_from_tensor(&Tensor::new(&[1i64, 2], &Device::Cpu).unwrap()).unwrap() == vec![1, 2]
    );
    assert_eq!(
        global_bounds(&x).unwrap().0,
        x.flatten_all()
            .unwrap()
            .min(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    );
    assert!(matches!(
        global_bounds(&empty),
        Err(AttackError::EmptyBatch)
    ));
    assert!(labels_from_tensor(&Tensor::new(&[-1i64], &Device::Cpu).unwrap()).is_err());
}
