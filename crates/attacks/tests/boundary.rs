//! Boundary Attack: geometry of the proposals, initialisation, the 50-step protocol's
//! "no adaptation" property, reproducibility, and convergence on a linear model.

mod common;

use common::*;
use pixreg_attacks::{
    blended::blend, draw_proposal, BlendedUniformNoiseInit, BoundaryAttack, Classifier,
    DecisionBasedAttack,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

#[test]
fn proposal_radii() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let x0: Vec<f32> = (0..D).map(|_| rng.random_range(0.3..0.7)).collect();
        let x: Vec<f32> = x0
            .iter()
            .map(|&v| v + rng.random_range(-0.05..0.05))
            .collect();
        let eta: Vec<f32> = (0..D).map(|_| rng.sample(StandardNormal)).collect();
        let r = l2(&x0, &x);
        let p = draw_proposal(&x0, &x, &eta, 0.01, 0.01).unwrap();
        let rs = l2(&p.spherical, &x0);
        assert!((rs / r - 1.0).abs() < 1e-5, "spherical radius {rs} vs {r}");
        let rc = l2(&p.candidate, &x0);
        assert!(
            (rc / (0.99 * r) - 1.0).abs() < 1e-5,
            "candidate radius {rc} vs 0.99·{r}"
        );
        // orthogonal step of relative length sigma
        let step = l2(&p.spherical, &x);
        assert!(
            (step / r - 0.01).abs() < 1e-3,
            "spherical step {step} vs σ·r"
        );
    }
    assert!(draw_proposal(&[0.5; 4], &[0.5; 4], &[1.0; 4], 0.01, 0.01).is_none());
}

#[test]
fn init_is_blend_at_first_adversarial_grid_point() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(6, 0.3, bounds, 1);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let init = BlendedUniformNoiseInit::default();
    let out = init.run(&model, &x, &labels, 3, 256).unwrap();
    let grid = init.grid();
    assert_eq!(grid.len(), 51);
    assert_eq!((grid[0], grid[50]), (0.0, 1.0));
    for (o, x0) in out.iter().zip(&imgs) {
        assert!(o.success && o.noise_found);
        assert!(o.noise.iter().all(|&v| (0.0..1.0).contains(&v)));
        let k = grid
            .iter()
            .position(|&e| e == o.blend)
            .expect("blend on the grid");
        // x0 went through model scale and back, so compare up to float rounding
        let expect = blend(x0, &o.noise, o.blend);
        assert!(o
            .point
            .iter()
            .zip(&expect)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        // first adversarial: every earlier grid point is classified 1 (g > 0), this one not
        for &e in &grid[..k] {
            assert!(model.g_unit(&blend(x0, &o.noise, e)) > 0.0);
        }
        assert!(model.g_unit(&o.point) <= 0.0);
        assert_eq!(o.queries, o.noise_draws + k + 1);
    }
}

#[test]
fn fifty_steps_never_adapt_and_shrink_by_powers_of_099() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(8, 0.3, bounds, 2);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let attack = BoundaryAttack::paper();
    assert_eq!(attack.steps, 50);
    let out = attack.run(&model, &x, &labels, 11).unwrap();
    let mut accepted_total = 0;
    for o in &out {
        assert!(o.success);
        assert_eq!(o.spherical_step, 0.01);
        assert_eq!(o.source_step, 0.01);
        assert_eq!(o.steps_run, 50);
        accepted_total += o.accepted_steps;
        // d_final / d_init = 0.99^(2k) for squared distances
        let ratio = (o.l2 / o.init_l2).powi(2);
        let expect = 0.99f64.powi(2 * o.accepted_steps as i32);
        assert!(
            (ratio / expect - 1.0).abs() < 1e-4,
            "ratio {ratio} vs 0.99^(2·{}) = {expect}",
            o.accepted_steps
        );
        assert!((0.366 - 1e-6..=1.0).contains(&ratio));
        // 1 init check-free count: init queries + 50 candidates + 5 spherical + final
        assert_eq!(
            o.queries,
            o.init_noise_draws + init_grid_queries(o.init_blend) + 55 + 1
        );
        assert!(model.g_unit(&o.adversarial) <= 0.0);
    }
    assert!(accepted_total > 0);
}

fn init_grid_queries(blend: f32) -> usize {
    (blend * 50.0).round() as usize + 1
}

#[test]
fn seeded_runs_reproduce_and_do_not_depend_on_chunking() {
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(7, 0.3, bounds, 3);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let a = BoundaryAttack {
        steps: 120,
        ..BoundaryAttack::paper()
    };
    let r1 = a.run(&model, &x, &labels, 5).unwrap();
    let r2 = a.run(&model, &x, &labels, 5).unwrap();
    assert_eq!(r1, r2);
    let small = BoundaryAttack { max_batch: 3, ..a };
    assert_eq!(small.run(&model, &x, &labels, 5).unwrap(), r1);
    let other = a.run(&model, &x, &labels, 6).unwrap();
    assert_ne!(other, r1);
    // per-image streams: attacking a subset with the same ids gives the same outcomes
    let ids: Vec<u64> = vec![2, 5];
    let sub = to_model(&[imgs[2].clone(), imgs[5].clone()], bounds);
    let rs = a.run_with_ids(&model, &sub, &[1, 1], &ids, 5).unwrap();
    assert_eq!(rs[0], r1[2]);
    assert_eq!(rs[1], r1[5]);
}

#[test]
fn converged_boundary_attack_reaches_minimal_distance() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(4, 0.3, bounds, 4);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let out = BoundaryAttack::converged(5000)
        .run(&model, &x, &labels, 1)
        .unwrap();
    for (o, x0) in out.iter().zip(&imgs) {
        let m = model.l2_margin_unit(x0);
        assert!(o.success);
        assert!(
            o.l2 >= m * (1.0 - 1e-4),
            "below the true minimum: {} < {m}",
            o.l2
        );
        assert!(
            o.l2 <= 1.05 * m,
            "BA distance {} vs minimal {m} (init {})",
            o.l2,
            o.init_l2
        );
        assert!(
            o.spherical_step != 0.01 || o.source_step != 0.01,
            "adaptation should happen"
        );
        assert!(o.steps_run == 5000 || o.source_step < 1e-7);
        eprintln!("converged BA: distance / minimum = {:.4}", o.l2 / m);
    }
}

#[test]
fn failures_are_reported_not_dropped() {
    // A constant classifier: nothing is ever adversarial.
    let bounds = (0.0, 1.0);
    let (model, imgs) = fixture(3, 0.3, bounds, 5);
    let constant = pixreg_attacks::FnClassifier::new(
        |x: &candle_core::Tensor| {
            let n = x.dims()[0];
            candle_core::Tensor::from_vec([0f32, 1.0].repeat(n), (n, 2), x.device())
        },
        bounds,
    );
    let x = to_model(&imgs, bounds);
    let a = BoundaryAttack {
        init: BlendedUniformNoiseInit {
            directions: 20,
            steps: 50,
        },
        ..BoundaryAttack::paper()
    };
    let out = a.run(&constant, &x, &[1, 1, 1], 0).unwrap();
    assert!(out.iter().all(|o| !o.success && o.accepted_steps == 0));
    assert!(out.iter().all(|o| o.init_noise_draws == 20));
    let _ = model.input_bounds();
}

#[test]
fn unit_space_makes_the_attack_scale_free() {
    // The fixture defines the same unit-space decision function for any model scale, so the
    // attack must make the same decisions (spec §2.5 affine equivariance) up to the rounding of
    // the model evaluation.
    let (m1, imgs) = fixture(5, 0.3, (0.0, 1.0), 6);
    let (m2, _) = fixture(5, 0.3, (-2.5, 2.5), 6);
    let labels = vec![1u32; imgs.len()];
    let a = BoundaryAttack::paper();
    let r1 = a
        .run(&m1, &to_model(&imgs, (0.0, 1.0)), &labels, 9)
        .unwrap();
    let r2 = a
        .run(&m2, &to_model(&imgs, (-2.5, 2.5)), &labels, 9)
        .unwrap();
    for (o1, o2) in r1.iter().zip(&r2) {
        assert_eq!(o1.init_blend, o2.init_blend);
        assert_eq!(o1.accepted_steps, o2.accepted_steps);
        assert!((o1.l2 / o2.l2 - 1.0).abs() < 1e-5);
    }
}
