//! The model against the reference PyTorch outputs in `../shared/golden/model/`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use common::*;
use pixreg_models::{PairBatch, Regularization, SgdMomentum, SimilarityLoss, StepOutput};

const ALPHA: f64 = 10.0;

fn inputs() -> HashMap<String, Tensor> {
    load_golden("inputs.safetensors")
}

/// One training step's forward exactly as in `grads.safetensors`.
fn step_forward(model: &mut pixreg_models::ResNet, inp: &HashMap<String, Tensor>) -> StepOutput {
    let reg = Regularization {
        pairs: PairBatch {
            a: get(inp, "pairs.a"),
            b: get(inp, "pairs.b"),
            targets: get(inp, "pairs.targets"),
        },
        alpha: ALPHA,
        criterion: SimilarityLoss::ArctanhSquare,
    };
    model
        .training_step_loss(get(inp, "images"), get(inp, "labels"), Some(reg))
        .unwrap()
}

#[test]
fn checkpoint_keys_match_the_reference_state_dict() {
    let weights = load_golden("weights.safetensors");
    let model = golden_model();
    let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    let mut expected: Vec<&String> = weights.keys().collect();
    let mut actual: Vec<&String> = state.keys().collect();
    expected.sort();
    actual.sort();
    assert_eq!(actual, expected);
    for (key, w) in &weights {
        let s = &state[key];
        assert_eq!(s.dtype(), w.dtype(), "{key}");
        assert_eq!(s.dims(), w.dims(), "{key}");
        if w.dtype() == DType::I64 {
            assert_eq!(s.to_scalar::<i64>().unwrap(), w.to_scalar::<i64>().unwrap());
        } else {
            assert_eq!(rel_err(s, w), 0.0, "{key} not loaded bit-exactly");
        }
    }
}

#[test]
fn eval_logits() {
    let model = golden_model();
    let logits = model.forward_eval(get(&inputs(), "images")).unwrap();
    let err = assert_close(
        "logits",
        &logits,
        get(&load_golden("eval_forward.safetensors"), "logits"),
        1e-5,
    );
    println!("eval_forward logits: relative error {err:.3e}");
}

#[test]
fn eval_mode_forward_changes_nothing() {
    let mut model = golden_model();
    let before = model.state_dict().unwrap();
    model.set_training(false);
    let a = model.forward(get(&inputs(), "images")).unwrap();
    let b = model.forward_eval(get(&inputs(), "images")).unwrap();
    assert_eq!(rel_err(&a, &b), 0.0);
    for ((name, x), (_, y)) in before.iter().zip(model.state_dict().unwrap().iter()) {
        if x.dtype() == DType::I64 {
            assert_eq!(
                x.to_scalar::<i64>().unwrap(),
                y.to_scalar::<i64>().unwrap(),
                "{name}"
            );
        } else {
            assert_eq!(rel_err(x, y), 0.0, "{name}");
        }
    }
}

#[test]
fn train_logits_and_bn_buffers() {
    let golden = load_golden("train_forward.safetensors");
    let mut model = golden_model();
    model.set_training(true);
    let logits = model.forward(get(&inputs(), "images")).unwrap();
    let mut worst = Worst::default();
    worst.record(
        "logits",
        assert_close("logits", &logits, get(&golden, "logits"), 1e-5),
    );
    let checked = check_after_buffers(&model, &golden, &mut worst);
    assert_eq!(checked, 60);
    worst.report("train_forward");
}

#[test]
fn pair_forward_train_mode() {
    let golden = load_golden("pair_forward_train.safetensors");
    let inp = inputs();
    let mut model = golden_model();
    model.set_training(true);
    let scores = model
        .forward_pair(get(&inp, "pairs.a"), get(&inp, "pairs.b"))
        .unwrap();
    let mut worst = Worst::default();
    worst.record(
        "scores",
        assert_close("scores", &scores, get(&golden, "scores"), 1e-5),
    );
    // 60 BN buffers and the 5 similarity running means.
    assert_eq!(check_after_buffers(&model, &golden, &mut worst), 65);
    worst.report("pair_forward_train");
}

#[test]
fn pair_forward_eval_mode() {
    let golden = load_golden("pair_forward_eval.safetensors");
    let weights = load_golden("weights.safetensors");
    let inp = inputs();
    let mut model = golden_model();
    model.set_training(false);
    let scores = model
        .forward_pair(get(&inp, "pairs.a"), get(&inp, "pairs.b"))
        .unwrap();
    let mut worst = Worst::default();
    worst.record(
        "scores",
        assert_close("scores", &scores, get(&golden, "scores"), 1e-5),
    );
    assert_eq!(check_after_buffers(&model, &golden, &mut worst), 5);
    // BN buffers are untouched in eval mode.
    for (name, t) in model.state_dict().unwrap() {
        if name.starts_with("core.") && !name.ends_with(".weight") && !name.ends_with(".bias") {
            let w = get(&weights, &name);
            if t.dtype() == DType::I64 {
                assert_eq!(t.to_scalar::<i64>().unwrap(), w.to_scalar::<i64>().unwrap());
            } else {
                assert_eq!(rel_err(&t, w), 0.0, "{name} changed in eval mode");
            }
        }
    }
    worst.report("pair_forward_eval");
}

#[test]
fn loss_and_gradient_of_every_parameter() {
    let golden = load_golden("grads.safetensors");
    let inp = inputs();
    let mut model = golden_model();
    model.set_training(true);
    let out = step_forward(&mut model, &inp);
    let mut worst = Worst::default();
    worst.record("loss", assert_loss("loss", &out.loss, get(&golden, "loss")));
    worst.record(
        "ce_loss",
        assert_loss("ce_loss", &out.ce_loss, get(&golden, "ce_loss")),
    );
    let reg_loss = out.reg_loss.as_ref().expect("regularized step");
    worst.record(
        "reg_loss",
        assert_loss("reg_loss", reg_loss, get(&golden, "reg_loss")),
    );
    worst.record(
        "logits",
        assert_close("logits", &out.logits, get(&golden, "logits"), 1e-5),
    );
    let scores = out.scores.as_ref().expect("regularized step");
    worst.record(
        "scores",
        assert_close("scores", scores, get(&golden, "scores"), 1e-5),
    );

    let grads = out.loss.backward().unwrap();
    let params = model.named_parameters();
    let golden_grads: Vec<&String> = golden.keys().filter(|k| k.starts_with("grad.")).collect();
    assert_eq!(golden_grads.len(), 63);
    assert_eq!(
        params.len(),
        golden_grads.len(),
        "one trainable parameter per golden gradient"
    );
    let mut grad_worst = Worst::default();
    for (name, var) in &params {
        let expected = get(&golden, &format!("grad.{name}"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        grad_worst.record(name, assert_close(name, g, expected, 2e-4));
    }
    // The similarity running means are not parameters and get no gradient.
    assert!(params.iter().all(|(n, _)| !n.starts_with("running_mean.")));
    // Buffers after the three forward passes (BN counters moved by 3).
    assert_eq!(check_after_buffers(&model, &golden, &mut worst), 65);
    worst.report("grads (losses, logits, scores, buffers)");
    grad_worst.report("grads (parameter gradients)");
}

#[test]
fn two_sgd_momentum_steps() {
    let golden = load_golden("sgd.safetensors");
    let inp = inputs();
    let mut model = golden_model();
    model.set_training(true);
    let mut opt = SgdMomentum::new(model.named_parameters(), 0.1, 0.9, 0.0);
    let mut worst = Worst::default();
    for k in 1..=2 {
        let out = step_forward(&mut model, &inp);
        worst.record(
            "loss",
            assert_loss(
                &format!("step{k}.loss"),
                &out.loss,
                get(&golden, &format!("step{k}.loss")),
            ),
        );
        worst.record(
            "ce_loss",
            assert_loss(
                &format!("step{k}.ce_loss"),
                &out.ce_loss,
                get(&golden, &format!("step{k}.ce_loss")),
            ),
        );
        let reg = out.reg_loss.as_ref().expect("regularized step");
        worst.record(
            "reg_loss",
            assert_loss(
                &format!("step{k}.reg_loss"),
                reg,
                get(&golden, &format!("step{k}.reg_loss")),
            ),
        );
        let grads = out.loss.backward().unwrap();
        opt.step(&grads).unwrap();

        let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
        let mut n_params = 0;
        for (key, expected) in &golden {
            let prefix = format!("step{k}.");
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            if let Some(name) = rest.strip_prefix("param.") {
                let name_k = format!("step{k}.{name}");
                worst.record(&name_k, assert_close(&name_k, &state[name], expected, 2e-4));
                n_params += 1;
            } else if rest.starts_with("running_mean.") {
                worst.record(key, assert_close(key, &state[rest], expected, 1e-5));
            }
        }
        assert_eq!(n_params, 6);
    }
    worst.report("sgd");
}
