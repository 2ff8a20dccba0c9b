//! The noise formula reproduces `../shared/golden/noise` (reference outputs for stored draws).

use candle_core::{Device, Tensor};
use pixreg_attacks::{noisy_inputs, NoiseDraws};
use std::collections::HashMap;

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/golden/noise/noise.safetensors"
);

fn v(m: &HashMap<String, Tensor>, k: &str) -> Vec<f32> {
    m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn noise_matches_golden_bit_for_bit() {
    let m = candle_core::safetensors::load(PATH, &Device::Cpu).expect("golden noise file");
    let mut checked = 0;
    for set in ["gray", "rgb"] {
        let inputs = &m[&format!("{set}.inputs")];
        let per_image = inputs.dims()[1..].iter().product::<usize>();
        let x = v(&m, &format!("{set}.inputs"));
        for kind in ["Gaussian", "Uniform", "SaltPepper"] {
            for k in 0..2 {
                let p = format!("{set}.{kind}.{k}");
                let eps = m[&format!("{p}.epsilon")].to_scalar::<f64>().unwrap();
                let expected = v(&m, &format!("{p}.output"));
                let a;
                let b;
                let draws = match kind {
                    "Gaussian" => {
                        a = v(&m, &format!("{p}.randn"));
                        NoiseDraws::Gaussian { randn: &a }
                    }
                    "Uniform" => {
                        a = v(&m, &format!("{p}.rand"));
                        NoiseDraws::Uniform { rand: &a }
                    }
                    _ => {
                        a = v(&m, &format!("{p}.rand"));
                        b = v(&m, &format!("{p}.randint"));
                        NoiseDraws::SaltPepper {
                            rand: &a,
                            randint: &b,
                        }
                    }
                };
                let out = noisy_inputs(&x, per_image, eps, draws).unwrap();
                assert_eq!(out.len(), expected.len());
                let mismatches = out
                    .iter()
                    .zip(&expected)
                    .filter(|(o, e)| o.to_bits() != e.to_bits())
                    .count();
                assert_eq!(mismatches, 0, "{p}: {mismatches} values differ (eps {eps})");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
}

#[test]
fn noise_formula_rejects_bad_inputs() {
    let x = vec![0.5f32; 8];
    let r = vec![0.1f32; 8];
    assert!(noisy_inputs(&x, 3, 0.1, NoiseDraws::Gaussian { randn: &r }).is_err());
    assert!(noisy_inputs(&x, 4, f64::NAN, NoiseDraws::Gaussian { randn: &r }).is_err());
    assert!(noisy_inputs(&x, 4, 0.1, NoiseDraws::Gaussian { randn: &r[..4] }).is_err());
}
