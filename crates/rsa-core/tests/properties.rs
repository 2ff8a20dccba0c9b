//! Properties that must hold on any input: symmetry and range of `S`, agreement of the
//! blockwise and dense selection paths, sampler semantics, and clear errors.

// Index loops read best for the (i, j) matrix checks below.
#![allow(clippy::needless_range_loop)]
use std::collections::HashSet;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rsa_core::pairs::{linear_to_pair, pair_count, pair_to_linear};
use rsa_core::{
    pixel_similarity_matrix, select_pairs, select_pairs_with_matrix, DoubleThresholdMode, Error,
    PairRange, PairSampler, PairSelection, SimilaritySource, ThresholdedTargets,
};

/// Images built from a few random smooth patterns so that similarities spread over [-1, 1].
fn structured_images(n: usize, d: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bases: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..d).map(|_| rng.random::<f32>()).collect())
        .collect();
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let w: Vec<f32> = (0..4).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        for k in 0..d {
            let v: f32 =
                (0..4).map(|b| w[b] * bases[b][k]).sum::<f32>() + 0.1 * rng.random::<f32>();
            data.push(v);
        }
    }
    Tensor::from_vec(data, (n, d), &Device::Cpu).unwrap()
}

#[test]
fn similarity_is_symmetric_with_unit_diagonal_and_bounded() {
    for (n, d, seed) in [(2, 5, 1), (17, 33, 2), (120, 64, 3)] {
        let s: Vec<Vec<f32>> = pixel_similarity_matrix(&structured_images(n, d, seed))
            .unwrap()
            .to_vec2()
            .unwrap();
        for i in 0..n {
            assert!((s[i][i] - 1.0).abs() < 1e-5, "diag {i}: {}", s[i][i]);
            for j in 0..n {
                assert!(s[i][j].abs() <= 1.0 + 1e-6, "|s[{i}][{j}]| = {}", s[i][j]);
                assert!((s[i][j] - s[j][i]).abs() < 1e-6, "asymmetric at ({i}, {j})");
            }
        }
    }
}

#[test]
fn blockwise_selection_equals_dense_selection_on_random_inputs() {
    // N = 1500 makes the strip path use two strips of rows.
    for (n, d, seed) in [(40, 16, 7), (1500, 24, 8)] {
        let images = structured_images(n, d, seed);
        let dense =
            SimilaritySource::from_matrix(&pixel_similarity_matrix(&images).unwrap()).unwrap();
        let strips = SimilaritySource::from_images(&images).unwrap();
        for range in PairRange::ALL {
            let rule = if range == PairRange::Double {
                ThresholdedTargets::new(0.5)
                    .unwrap()
                    .with_second_threshold(0.2, DoubleThresholdMode::Reference)
                    .unwrap()
            } else {
                ThresholdedTargets::new(0.35).unwrap()
            };
            let a = select_pairs(&dense, range, &rule).unwrap();
            let b = select_pairs(&strips, range, &rule).unwrap();
            assert_eq!(a.pairs, b.pairs, "n {n} range {range}");
            assert_eq!(a.targets, b.targets, "n {n} range {range}");
            let (c, matrix) = select_pairs_with_matrix(&strips, range, &rule).unwrap();
            assert_eq!(c, b, "n {n} range {range}: with matrix");
            let SimilaritySource::Matrix { values, .. } = &dense else {
                unreachable!("built from a matrix")
            };
            let worst = values
                .iter()
                .zip(&matrix)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(worst < 1e-5, "n {n}: strip matrix deviates by {worst}");
            if n <= 40 {
                let sel = PairSelection::build(strips.clone(), range, rule).unwrap();
                assert_eq!(sel.len(), a.len() as u64);
                for (r, pair) in a.pairs.iter().enumerate() {
                    let (i, j, _) = sel.get(r as u64).unwrap();
                    assert_eq!([i, j], *pair);
                }
            }
        }
    }
}

#[test]
fn groups_partition_all_pairs() {
    let images = structured_images(60, 20, 11);
    let source = SimilaritySource::from_images(&images).unwrap();
    let rule = ThresholdedTargets::new(0.3).unwrap();
    let count = |r| select_pairs(&source, r, &rule).unwrap().len();
    let all = count(PairRange::All);
    assert_eq!(all as u64, pair_count(60));
    assert_eq!(count(PairRange::High) + count(PairRange::Low), all);
    assert_eq!(
        count(PairRange::Positive) + count(PairRange::Negative),
        all + count(PairRange::Low)
    );
    assert!(count(PairRange::HighPositive) <= count(PairRange::High));
}

#[test]
fn linear_pair_index_round_trips() {
    for n in [2usize, 3, 7, 100, 5000, 50_000] {
        let total = pair_count(n);
        let probes = [0, 1, total / 3, total / 2, total - 2, total - 1];
        for &t in probes.iter().filter(|&&t| t < total) {
            let (i, j) = linear_to_pair(n, t);
            assert!(i < j && j < n, "n {n} t {t} -> ({i}, {j})");
            assert_eq!(pair_to_linear(n, i, j), t);
        }
    }
    let mut t = 0;
    for i in 0..9 {
        for j in i + 1..9 {
            assert_eq!(linear_to_pair(9, t), (i, j));
            t += 1;
        }
    }
}

fn small_selection(range: PairRange) -> Arc<PairSelection> {
    let source = SimilaritySource::from_images(&structured_images(30, 12, 5)).unwrap();
    Arc::new(PairSelection::build(source, range, ThresholdedTargets::new(0.4).unwrap()).unwrap())
}

#[test]
fn sampler_visits_each_pair_at_most_once_per_pass_and_drops_the_last_batch() {
    let selection = small_selection(PairRange::All);
    let k = 16;
    let mut sampler = PairSampler::new(selection.clone(), k, 3).unwrap();
    let per_pass = sampler.batches_per_pass();
    assert_eq!(per_pass, selection.len() / k as u64);
    let mut seen = HashSet::new();
    for _ in 0..per_pass {
        let b = sampler.next_batch().unwrap();
        for (&i, &j) in b.rows.iter().zip(&b.cols) {
            assert!(i < j);
            assert!(seen.insert((i, j)), "({i}, {j}) repeated within a pass");
        }
    }
    assert_eq!(seen.len() as u64, per_pass * k as u64);
    let first_of_next_pass = sampler.next_batch().unwrap();
    assert_eq!(sampler.state().pass, 1);
    assert_eq!(sampler.state().batch_in_pass, 1);
    let mut fresh = PairSampler::new(selection, k, 3).unwrap();
    assert_ne!(
        fresh.next_batch().unwrap(),
        first_of_next_pass,
        "passes must reshuffle"
    );
}

#[test]
fn sampler_is_seeded_and_resumable() {
    let selection = small_selection(PairRange::High);
    let draw = |seed| {
        let mut s = PairSampler::new(selection.clone(), 4, seed).unwrap();
        (0..5).map(|_| s.next_batch().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));

    let mut a = PairSampler::new(selection.clone(), 4, 9).unwrap();
    for _ in 0..3 {
        a.next_batch().unwrap();
    }
    a.restart_pass();
    a.next_batch().unwrap();
    let state = a.state();
    let continued: Vec<_> = (0..20).map(|_| a.next_batch().unwrap()).collect();
    let mut b = PairSampler::resume(selection, 4, state).unwrap();
    let resumed: Vec<_> = (0..20).map(|_| b.next_batch().unwrap()).collect();
    assert_eq!(continued, resumed);
}

#[test]
fn sampler_targets_follow_the_rule() {
    let selection = small_selection(PairRange::High);
    let mut sampler = PairSampler::new(selection, 8, 0).unwrap();
    for _ in 0..10 {
        let b = sampler.next_batch().unwrap();
        assert!(b.targets.iter().all(|&t| t == 1.0 || t == -1.0));
    }
}

#[test]
fn sampler_rejects_zero_batch_and_too_small_selection() {
    let selection = small_selection(PairRange::All);
    assert!(matches!(
        PairSampler::new(selection, 0, 0),
        Err(Error::InvalidArgument(_))
    ));
    let source = SimilaritySource::from_images(&structured_images(4, 8, 1)).unwrap();
    let tiny = Arc::new(
        PairSelection::build(
            source,
            PairRange::All,
            ThresholdedTargets::new(0.5).unwrap(),
        )
        .unwrap(),
    );
    let err = PairSampler::new(tiny, 16, 0).unwrap_err();
    assert!(err.to_string().contains("only 6 pairs"), "{err}");
}

#[test]
fn image_equal_to_the_mean_is_a_clear_error() {
    let a = [0.1f32, 0.9, 0.3, 0.5];
    let b = [0.7f32, 0.2, 0.6, 0.1];
    let mid: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
    let data: Vec<f32> = a.iter().chain(&b).chain(&mid).copied().collect();
    let images = Tensor::from_vec(data, (3, 1, 2, 2), &Device::Cpu).unwrap();
    let err = pixel_similarity_matrix(&images).unwrap_err();
    assert!(matches!(err, Error::ZeroNormImage { index: 2 }), "{err}");
    assert!(err.to_string().contains("image 2"));
}

#[test]
fn non_finite_and_malformed_inputs_are_rejected() {
    let mut data = vec![0.5f32; 3 * 4];
    data[5] = f32::NAN;
    let images = Tensor::from_vec(data, (3, 4), &Device::Cpu).unwrap();
    assert!(matches!(
        pixel_similarity_matrix(&images),
        Err(Error::NonFiniteImage { index: 1 })
    ));
    let rank3 = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        pixel_similarity_matrix(&rank3),
        Err(Error::ImageRank(_))
    ));
    let single = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        pixel_similarity_matrix(&single),
        Err(Error::TooFewImages(1))
    ));
}

#[test]
fn thresholds_and_names_are_validated() {
    assert!(matches!(
        ThresholdedTargets::new(1.5),
        Err(Error::InvalidThreshold { .. })
    ));
    assert!(ThresholdedTargets::new(-0.1).is_err());
    assert!(ThresholdedTargets::new(f64::NAN).is_err());
    assert!(ThresholdedTargets::new(0.4)
        .unwrap()
        .with_second_threshold(0.6, DoubleThresholdMode::Reference)
        .is_err());
    assert!(matches!(
        "middle".parse::<PairRange>(),
        Err(Error::UnknownRange(_))
    ));
    for range in PairRange::ALL {
        assert_eq!(range.to_string().parse::<PairRange>().unwrap(), range);
    }
    let source = SimilaritySource::from_images(&structured_images(5, 4, 1)).unwrap();
    let err = select_pairs(
        &source,
        PairRange::Double,
        &ThresholdedTargets::new(0.5).unwrap(),
    );
    assert!(matches!(err, Err(Error::InvalidDoubleThreshold(_))));
}

#[test]
fn graded_double_threshold_keeps_the_middle_band_raw() {
    let rule = ThresholdedTargets::new(0.8)
        .unwrap()
        .with_second_threshold(0.2, DoubleThresholdMode::Graded)
        .unwrap();
    assert_eq!(rule.target(0.9), 1.0);
    assert_eq!(rule.target(-0.9), -1.0);
    assert_eq!(rule.target(0.1), 0.0);
    assert_eq!(rule.target(0.5), 0.5);
    assert_eq!(rule.target(-0.3), -0.3);
    let reference = ThresholdedTargets::new(0.8)
        .unwrap()
        .with_second_threshold(0.2, DoubleThresholdMode::Reference)
        .unwrap();
    assert_eq!(reference.target(0.5), 0.0);
    let raw = ThresholdedTargets::new(0.8).unwrap().without_boosting();
    assert_eq!(raw.target(0.93), 0.93);
}

/// A full training set (N = 50 000) must be selectable and sampleable without the dense
/// matrix: 1.25 G candidate pairs, one bit per pair and group.
#[test]
fn fifty_thousand_images_select_and_sample_without_the_dense_matrix() {
    let n = 50_000;
    let images = structured_images(n, 8, 21);
    let source = SimilaritySource::from_images(&images).unwrap();
    let rule = ThresholdedTargets::new(0.5).unwrap();
    let count = |range| {
        PairSelection::build(source.clone(), range, rule)
            .unwrap()
            .len()
    };
    let (high, low) = (count(PairRange::High), count(PairRange::Low));
    assert!(high > 0 && low > 0);
    assert!(high + low <= pair_count(n));

    let all = Arc::new(PairSelection::build(source, PairRange::All, rule).unwrap());
    assert_eq!(all.len(), pair_count(n));
    let mut sampler = PairSampler::new(all.clone(), 16, 5).unwrap();
    for _ in 0..10 {
        let batch = sampler.next_batch().unwrap();
        for ((&i, &j), &t) in batch.rows.iter().zip(&batch.cols).zip(&batch.targets) {
            assert!(i < j && (j as usize) < n);
            assert!(t == 0.0 || t.abs() == 1.0);
        }
    }
    let (i, j, _) = all.get(pair_count(n) - 1).unwrap();
    assert_eq!((i, j), (n as u32 - 2, n as u32 - 1));
}
