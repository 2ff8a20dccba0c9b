//! Matches rsa-core against the outputs of the official PyTorch code stored in
//! `../shared/golden/rsa` (see that folder's README for how they were produced).

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rsa_core::loss::{arctanh_square_loss, mse_loss};
use rsa_core::pairs::PairSelection;
use rsa_core::{
    pixel_similarity_matrix, select_pairs, DoubleThresholdMode, PairRange, SimilaritySource,
    ThresholdedTargets,
};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/golden/rsa");
const SETS: [&str; 2] = ["gray", "rgb"];

fn load(file: &str) -> HashMap<String, Tensor> {
    let path = format!("{GOLDEN}/{file}");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read golden file {path}: {e}"))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `max |a − b| <= rel · max |b|`, the README's tolerance for matrices.
fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, rel: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{name}: shape");
    let (a, b) = (values(actual), values(expected));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= rel * scale,
        "{name}: max deviation {worst} exceeds {rel} × {scale}"
    );
}

#[test]
fn pixel_similarity_matches_reference() {
    let images = load("images.safetensors");
    let expected = load("similarity.safetensors");
    for set in SETS {
        let s = pixel_similarity_matrix(&images[&format!("{set}.images")]).unwrap();
        assert_close(set, &s, &expected[&format!("{set}.s")], 1e-5);
    }
}

#[test]
fn rgb_channel_mean_is_a_plain_average() {
    let images = load("images.safetensors");
    let expected = load("similarity.safetensors");
    let mean = images["rgb.images"].mean(1).unwrap();
    assert_close(
        "rgb.channel_mean",
        &mean,
        &expected["rgb.channel_mean"],
        1e-6,
    );
}

#[test]
fn boosted_targets_match_reference() {
    let sims = load("similarity.safetensors");
    let boosted = load("boosting.safetensors");
    for set in SETS {
        let s = &sims[&format!("{set}.s")];
        for th in [0.2, 0.4, 0.6, 0.8] {
            let rule = ThresholdedTargets::new(th).unwrap();
            let got = rule.apply_matrix(s).unwrap();
            assert_close(
                &format!("{set} th {th}"),
                &got,
                &boosted[&format!("{set}.thresh_{th}")],
                0.0,
            );
        }
        let half = ThresholdedTargets::new(0.6)
            .unwrap()
            .with_value(0.5)
            .unwrap();
        assert_close(
            &format!("{set} val 0.5"),
            &half.apply_matrix(s).unwrap(),
            &boosted[&format!("{set}.thresh_0.6.val_0.5")],
            0.0,
        );
        let double = ThresholdedTargets::new(0.8)
            .unwrap()
            .with_second_threshold(0.2, DoubleThresholdMode::Reference)
            .unwrap();
        assert_close(
            &format!("{set} double"),
            &double.apply_matrix(s).unwrap(),
            &boosted[&format!("{set}.double_0.8_0.2")],
            0.0,
        );
    }
}

fn golden_pairs(t: &Tensor) -> Vec<[u32; 2]> {
    let rows: Vec<Vec<i64>> = t.to_vec2().unwrap();
    rows.iter().map(|r| [r[0] as u32, r[1] as u32]).collect()
}

/// Every (set, range, thresholds) case stored in `pairs.safetensors`, with its golden key.
fn pair_cases() -> Vec<(&'static str, PairRange, ThresholdedTargets, String)> {
    let mut cases = Vec::new();
    for set in SETS {
        for range in PairRange::ALL {
            if range == PairRange::Double {
                let rule = ThresholdedTargets::new(0.8)
                    .unwrap()
                    .with_second_threshold(0.2, DoubleThresholdMode::Reference)
                    .unwrap();
                cases.push((set, range, rule, format!("{set}.double.thresh_0.8_0.2")));
                continue;
            }
            for th in [0.4, 0.8] {
                let rule = ThresholdedTargets::new(th).unwrap();
                cases.push((set, range, rule, format!("{set}.{range}.thresh_{th}")));
            }
        }
    }
    cases
}

#[test]
fn pair_lists_match_reference_exactly_and_in_order() {
    let images = load("images.safetensors");
    let pairs = load("pairs.safetensors");
    let sims = load("similarity.safetensors");
    for (set, range, rule, key) in pair_cases() {
        let expected = golden_pairs(&pairs[&key]);
        let from_pixels = SimilaritySource::from_images(&images[&format!("{set}.images")]).unwrap();
        let list = select_pairs(&from_pixels, range, &rule).unwrap();
        assert_eq!(list.pairs, expected, "{key}: pixel source");

        let from_matrix = SimilaritySource::from_matrix(&sims[&format!("{set}.s")]).unwrap();
        let dense = select_pairs(&from_matrix, range, &rule).unwrap();
        assert_eq!(dense.pairs, expected, "{key}: golden matrix source");

        let selection = PairSelection::build(from_pixels, range, rule).unwrap();
        assert_eq!(
            selection.len(),
            expected.len() as u64,
            "{key}: selection size"
        );
        for (rank, pair) in expected.iter().enumerate() {
            let (i, j, t) = selection.get(rank as u64).unwrap();
            assert_eq!([i, j], *pair, "{key}: rank {rank}");
            assert_eq!(t, list.targets[rank], "{key}: target of rank {rank}");
        }
    }
}

#[test]
fn targets_of_selected_pairs_are_the_boosted_matrix_entries() {
    let sims = load("similarity.safetensors");
    let boosted = load("boosting.safetensors");
    for set in SETS {
        for th in [0.4, 0.8] {
            let rule = ThresholdedTargets::new(th).unwrap();
            let source = SimilaritySource::from_matrix(&sims[&format!("{set}.s")]).unwrap();
            let list = select_pairs(&source, PairRange::All, &rule).unwrap();
            let matrix: Vec<Vec<f32>> = boosted[&format!("{set}.thresh_{th}")].to_vec2().unwrap();
            for (&[i, j], &t) in list.pairs.iter().zip(&list.targets) {
                assert_eq!(
                    t, matrix[i as usize][j as usize],
                    "{set} th {th} ({i}, {j})"
                );
            }
        }
    }
}

const LOSS_CASES: [&str; 5] = ["random", "edges", "identical", "saturated", "unboosted"];

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn losses_and_gradients_match_reference() {
    let golden = load("losses.safetensors");
    for case in LOSS_CASES {
        let pred = Var::from_tensor(&golden[&format!("{case}.pred")]).unwrap();
        let target = &golden[&format!("{case}.target")];
        for (name, loss) in [
            (
                "atanh_square",
                arctanh_square_loss(pred.as_tensor(), target).unwrap(),
            ),
            ("mse", mse_loss(pred.as_tensor(), target).unwrap()),
        ] {
            let key = format!("{case}.{name}");
            let (got, want) = (scalar(&loss), scalar(&golden[&key]));
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 1e-9,
                "{key}: {got} vs {want}"
            );
            let grads = loss.backward().unwrap();
            let grad = grads.get(pred.as_tensor()).expect("gradient w.r.t. pred");
            let expected = &golden[&format!("{key}.grad_pred")];
            // Gradients reach ~1e6 at saturation: compare relative to the largest entry, with a
            // small absolute floor for the all-but-zero `identical` case.
            let (g, e) = (values(grad), values(expected));
            let scale = e.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (k, (x, y)) in g.iter().zip(&e).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-4 * scale + 1e-6,
                    "{key} grad[{k}]: {x} vs {y} (scale {scale})"
                );
            }
        }
    }
}
