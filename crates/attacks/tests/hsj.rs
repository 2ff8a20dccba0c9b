//! HopSkipJump on a linear model with an analytic minimal L2 distance.

mod common;

use common::*;
use pixreg_attacks::{DecisionBasedAttack, HopSkipJump};

#[test]
fn hsj_reaches_minimal_distance_and_is_reproducible() {
    let bounds = (-2.5, 2.5);
    let (model, imgs) = fixture(4, 0.3, bounds, 8);
    let x = to_model(&imgs, bounds);
    let labels = vec![1u32; imgs.len()];
    let hsj = HopSkipJump::default();
    let out = hsj.run(&model, &x, &labels, 2).unwrap();
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
            "HSJ distance {} vs minimal {m} (init {})",
            o.l2,
            o.init_l2
        );
        assert!(model.g_unit(&o.adversarial) <= 0.0);
    }
    let small = HopSkipJump {
        max_batch: 37,
        ..hsj
    };
    assert_eq!(small.run(&model, &x, &labels, 2).unwrap(), out);
}
