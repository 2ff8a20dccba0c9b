//! PGD and FGSM on a linear model with analytic margins.

mod common;

use common::*;
use pixreg_attacks::{ExtremaScope, Fgsm, Pgd, PgdNorm};

#[test]
fn pgd_finds_adversarials_exactly_above_the_margin() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(4, 0.2, bounds, 9);
    for norm in [PgdNorm::L2, PgdNorm::Linf] {
        for (i, u) in imgs.iter().enumerate() {
            let x = to_model(std::slice::from_ref(u), bounds);
            let m = match norm {
                PgdNorm::L2 => model.l2_margin_unit(u),
                PgdNorm::Linf => model.linf_margin_unit(u),
            };
            let base = match norm {
                PgdNorm::L2 => Pgd::l2(0.0),
                PgdNorm::Linf => Pgd::linf(0.0),
            };
            let pgd = |eps: f64| Pgd {
                epsilon: eps,
                steps: 100,
                ..base.clone()
            };
            let above = pgd(1.05 * m).run(&model, &x, &[1], i as u64).unwrap();
            assert!(
                above.report.success[0],
                "{norm:?}: no adversarial at 1.05·margin"
            );
            assert!(above.report.perturbation_norm[0] <= 1.05 * m * (1.0 + 1e-4));
            let below = pgd(0.95 * m).run(&model, &x, &[1], i as u64).unwrap();
            assert!(
                !below.report.success[0],
                "{norm:?}: adversarial below the margin"
            );
            assert_eq!(below.report.robust_accuracy, 1.0);
        }
    }
}

#[test]
fn fgsm_matches_the_analytic_linf_flip() {
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(12, 0.05, bounds, 10);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let eps: Vec<f64> = vec![0.0, 0.004, 0.008, 0.012, 0.02];
    let fgsm = Fgsm {
        extrema: ExtremaScope::Global,
        ..Fgsm::new(eps.clone())
    };
    let curve = fgsm.run_white_box(&model, &x, &labels).unwrap();
    for (k, &e) in eps.iter().enumerate() {
        let expect = imgs
            .iter()
            .filter(|u| model.g_unit(u) > 0.0 && model.linf_margin_unit(u) > e)
            .count() as f64
            / imgs.len() as f64;
        assert_eq!(curve.accuracy[k], expect, "eps {e}");
    }
    assert!(
        curve.accuracy[0] > curve.accuracy[4] + 0.3,
        "{:?}",
        curve.accuracy
    );
    // transferred with the model as its own surrogate = white box
    let t = fgsm.run_transferred(&model, &model, &x, &labels).unwrap();
    assert_eq!(t.accuracy, curve.accuracy);
    // reference batch extrema: same for these images since each group's range is the same order
    let r = Fgsm::new(eps).run_white_box(&model, &x, &labels).unwrap();
    assert_eq!(r.accuracy[0], curve.accuracy[0]);
}
