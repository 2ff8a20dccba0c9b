//! The four architectures: shapes, state-dict structure, parameter counts, initialisation and
//! configuration files.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use pixreg_models::{ops, Arch, Error, ModelConfig, ResNet, CONFIG_FILE_NAME};

fn randn(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    // Deterministic, non-trivial inputs without a global RNG.
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let data: Vec<f32> = (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 1000.0) - 0.5)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Every value of `t` (any dtype, any shape) as float32, in order.
fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn param_count(model: &ResNet) -> usize {
    model
        .named_parameters()
        .iter()
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum()
}

#[test]
fn parameter_counts_match_the_reference_models() {
    // The reference models at base 64 on RGB 32×32 with 10 classes: the well-known CIFAR
    // ResNet counts with a 7×7 instead of 3×3 stem (+7680), plus the 5 `layer_weight`s.
    for (arch, expected) in [
        (Arch::ResNet18, 11_181_647),
        (Arch::ResNet34, 21_289_807),
        (Arch::ResNet50, 23_528_527),
        (Arch::ResNet101, 42_520_655),
    ] {
        let config = ModelConfig::new(arch, [3, 32, 32], 10, 64);
        let model = ResNet::new(&config, 0, &Device::Cpu).unwrap();
        assert_eq!(param_count(&model), expected, "{arch}");
    }
}

#[test]
fn resnet34_and_resnet50_shapes_and_keys() {
    for (arch, in_shape, expansion, blocks) in [
        (Arch::ResNet34, [3, 32, 32], 1, [3, 4, 6, 3]),
        (Arch::ResNet50, [1, 28, 28], 4, [3, 4, 6, 3]),
    ] {
        let base = 4;
        let config = ModelConfig::new(arch, in_shape, 7, base);
        let mut model = ResNet::new(&config, 1, &Device::Cpu).unwrap();
        let x = randn((3, in_shape[0], in_shape[1], in_shape[2]), 1);
        let y = randn((3, in_shape[0], in_shape[1], in_shape[2]), 2);
        assert_eq!(model.forward(&x).unwrap().dims(), &[3, 7]);
        assert_eq!(model.forward_eval(&x).unwrap().dims(), &[3, 7]);
        let pair = model.forward_pair_detailed(&x, &y).unwrap();
        assert_eq!(pair.scores.dims(), &[3]);
        assert_eq!(pair.layer_scores.len(), 5);
        let channels: Vec<usize> = model
            .similarity_running_means()
            .iter()
            .map(|m| m.dims()[0])
            .collect();
        let e = expansion;
        assert_eq!(
            channels,
            vec![base, base * e, 2 * base * e, 4 * base * e, 8 * base * e]
        );

        let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
        for (s, &n) in blocks.iter().enumerate() {
            assert!(state.contains_key(&format!(
                "core.sections.{}.{}.layer0.0.weight",
                s + 1,
                n - 1
            )));
            assert!(!state.contains_key(&format!("core.sections.{}.{n}.layer0.0.weight", s + 1)));
        }
        let last_conv = "core.sections.1.0.layer2.1.weight";
        let first_shortcut = "core.sections.1.0.shortcut.0.weight";
        if expansion == 4 {
            // Bottleneck: 1×1 (strided) → 3×3 → 1×1 to 4w; the first block widens, so it has
            // a projection shortcut even in section 1.
            assert_eq!(
                state["core.sections.1.0.layer0.0.weight"].dims(),
                &[base, base, 1, 1]
            );
            assert_eq!(
                state["core.sections.2.0.layer0.0.weight"].dims(),
                &[2 * base, 4 * base, 1, 1]
            );
            assert_eq!(
                state["core.sections.1.0.layer1.1.weight"].dims(),
                &[base, base, 3, 3]
            );
            assert_eq!(state[last_conv].dims(), &[4 * base, base, 1, 1]);
            assert_eq!(
                state["core.sections.1.0.layer2.2.running_var"].dims(),
                &[4 * base]
            );
            assert_eq!(state[first_shortcut].dims(), &[4 * base, base, 1, 1]);
            assert!(!state.contains_key("core.sections.1.1.shortcut.0.weight"));
        } else {
            assert!(!state.contains_key(last_conv));
            assert!(!state.contains_key(first_shortcut));
            assert_eq!(
                state["core.sections.2.0.shortcut.0.weight"].dims(),
                &[2 * base, base, 1, 1]
            );
        }
        assert_eq!(state["linear.weight"].dims(), &[7, 8 * base * e]);
        assert_eq!(
            state["core.sections.0.0.weight"].dims(),
            &[base, in_shape[0], 7, 7]
        );
    }
}

#[test]
fn bottleneck_model_trains_every_parameter() {
    let config = ModelConfig::new(Arch::ResNet50, [1, 28, 28], 10, 2);
    let mut model = ResNet::new(&config, 3, &Device::Cpu).unwrap();
    let x = randn((2, 1, 28, 28), 3);
    let y = randn((2, 1, 28, 28), 4);
    let labels = Tensor::new(&[3i64, 5], &Device::Cpu).unwrap();
    let logits = model.forward(&x).unwrap();
    let ce = pixreg_models::cross_entropy(&logits, &labels).unwrap();
    let scores = model.forward_pair(&x, &y).unwrap();
    let loss = (ce + scores.sum_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.named_parameters() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
}

#[test]
fn larger_inputs_pool_to_more_positions() {
    // 64×64 (Tiny ImageNet): the last feature map is 8×8, pooled to 2×2.
    let config = ModelConfig::new(Arch::ResNet18, [3, 64, 64], 200, 2);
    assert_eq!(config.linear_in_features(), 16 * 4);
    let model = ResNet::new(&config, 0, &Device::Cpu).unwrap();
    assert_eq!(
        model
            .forward_eval(&randn((1, 3, 64, 64), 5))
            .unwrap()
            .dims(),
        &[1, 200]
    );
}

#[test]
fn pairs_of_another_size_regularize_the_model() {
    // The reference's ImageNet regularization photos are 36×64 on a 32×32 CIFAR model (spec
    // §4): the core is fully convolutional and the head compares features of any size.
    let config = ModelConfig::new(Arch::ResNet18, [1, 32, 32], 10, 2);
    let mut model = ResNet::new(&config, 0, &Device::Cpu).unwrap();
    let (a, b) = (randn((4, 1, 36, 64), 1), randn((4, 1, 36, 64), 2));
    let scores = model.forward_pair(&a, &b).unwrap();
    assert_eq!(scores.dims(), &[4]);
    let grads = scores.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(model.layer_weight().as_tensor()).is_some());
    // The channels must still match.
    let rgb = randn((4, 3, 36, 64), 3);
    assert!(matches!(
        model.forward_pair(&rgb, &rgb),
        Err(Error::Input(_))
    ));
}

#[test]
fn bad_inputs_are_errors() {
    let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 2);
    let mut model = ResNet::new(&config, 0, &Device::Cpu).unwrap();
    let wrong_channels = randn((2, 3, 28, 28), 0);
    assert!(matches!(
        model.forward_eval(&wrong_channels),
        Err(Error::Input(_))
    ));
    let f64_input = randn((2, 1, 28, 28), 0).to_dtype(DType::F64).unwrap();
    assert!(matches!(model.forward(&f64_input), Err(Error::Input(_))));
    let a = randn((2, 1, 28, 28), 0);
    let b = randn((3, 1, 28, 28), 0);
    assert!(matches!(model.forward_pair(&a, &b), Err(Error::Input(_))));
    // One value per channel cannot be batch-normalised in training mode (as in PyTorch).
    let one = Tensor::ones((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let gamma = Tensor::ones(2, DType::F32, &Device::Cpu).unwrap();
    let beta = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        ops::batch_norm(&one, &gamma, &beta, 1e-5, ops::BatchNormStats::Batch),
        Err(Error::Input(_))
    ));
    // Small inputs are rejected when the configuration is checked.
    let tiny = ModelConfig::new(Arch::ResNet18, [1, 24, 24], 10, 2);
    assert!(matches!(
        ResNet::new(&tiny, 0, &Device::Cpu),
        Err(Error::Config(_))
    ));
}

#[test]
fn default_initialisation_is_pytorch_like_and_seeded() {
    let config = ModelConfig::new(Arch::ResNet18, [3, 32, 32], 10, 16);
    let a = ResNet::new(&config, 42, &Device::Cpu).unwrap();
    let b = ResNet::new(&config, 42, &Device::Cpu).unwrap();
    let c = ResNet::new(&config, 43, &Device::Cpu).unwrap();
    let sa: HashMap<String, Tensor> = a.state_dict().unwrap().into_iter().collect();
    let sb: HashMap<String, Tensor> = b.state_dict().unwrap().into_iter().collect();
    let sc: HashMap<String, Tensor> = c.state_dict().unwrap().into_iter().collect();
    for (name, t) in &sa {
        assert_eq!(
            values(t),
            values(&sb[name]),
            "{name}: same seed, same values"
        );
        let v = values(t);
        let dims = t.dims();
        if name.ends_with("num_batches_tracked") {
            assert_eq!(t.dtype(), DType::I64);
            assert_eq!(t.to_scalar::<i64>().unwrap(), 0);
        } else if name == "layer_weight"
            || name.starts_with("running_mean.")
            || name.ends_with(".running_mean")
        {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else if name.ends_with(".running_var") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else if dims.len() == 1 && name.starts_with("core.") {
            let expected = if name.ends_with(".weight") { 1.0 } else { 0.0 };
            assert!(v.iter().all(|&x| x == expected), "{name}: BN γ=1, β=0");
        } else {
            // conv / linear: U(±1/√fan_in) with fan_in = in·kh·kw (the bias too for linear).
            let fan_in = if name == "linear.bias" {
                sa["linear.weight"].dims()[1]
            } else {
                dims[1..].iter().product()
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(v.iter().all(|&x| x.abs() <= bound), "{name}");
            assert_ne!(v, values(&sc[name]), "{name}: another seed, other values");
            if v.len() >= 1000 {
                let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
                let expected = bound * bound / 3.0;
                assert!(
                    (var / expected - 1.0).abs() < 0.1,
                    "{name}: variance {var} vs {expected}"
                );
            }
        }
    }
}

#[test]
fn config_names_and_json() {
    for arch in Arch::ALL {
        assert_eq!(arch.to_string().parse::<Arch>().unwrap(), arch);
    }
    assert_eq!("ResNet50".parse::<Arch>().unwrap(), Arch::ResNet50);
    assert!(matches!("resnet152".parse::<Arch>(), Err(Error::Config(_))));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CONFIG_FILE_NAME);
    let config = ModelConfig::new(Arch::ResNet50, [3, 32, 32], 100, 64);
    config.save_json(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"arch\": \"resnet50\""), "{text}");
    assert_eq!(ModelConfig::load_json(&path).unwrap(), config);

    std::fs::write(
        &path,
        r#"{"arch":"resnet18","in_shape":[1,8,8],"num_classes":10,"base_channels":8}"#,
    )
    .unwrap();
    assert!(matches!(
        ModelConfig::load_json(&path),
        Err(Error::Config(_))
    ));
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(
        ModelConfig::load_json(&path),
        Err(Error::Json { .. })
    ));
    assert!(ModelConfig::new(Arch::ResNet18, [1, 28, 28], 0, 8)
        .validate()
        .is_err());
}

/// Every batch-norm running statistic of the core (not the similarity head's own
/// `running_mean.L`, which every pair forward updates), by name.
fn core_bn_statistics(model: &ResNet) -> Vec<(String, Vec<f32>)> {
    model
        .state_dict()
        .unwrap()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("core.")
                && (name.ends_with("running_mean")
                    || name.ends_with("running_var")
                    || name.ends_with("num_batches_tracked"))
        })
        .map(|(name, t)| {
            let v = values(&t);
            (name, v)
        })
        .collect()
}

#[test]
fn pair_forwards_can_leave_the_batch_norm_statistics_to_the_classification_batches() {
    let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
    let mut reference = ResNet::new(&config, 3, &Device::Cpu).unwrap();
    let mut frozen = reference.deep_copy().unwrap();
    frozen.set_pair_updates_bn_statistics(false);
    let before = core_bn_statistics(&frozen);
    assert_eq!(before.len(), 3 * 20, "ResNet18: 20 batch norms");
    let (a, b) = (randn((4, 1, 28, 28), 1), randn((4, 1, 28, 28), 2));
    let scores: Vec<f32> = reference.forward_pair(&a, &b).unwrap().to_vec1().unwrap();
    let frozen_scores: Vec<f32> = frozen.forward_pair(&a, &b).unwrap().to_vec1().unwrap();
    assert_eq!(
        scores, frozen_scores,
        "the pairs still use their batch statistics"
    );
    assert_eq!(core_bn_statistics(&frozen), before);
    let moved = core_bn_statistics(&reference);
    assert!(
        moved.iter().zip(&before).all(|(m, b)| m != b),
        "the reference moves every one"
    );
    // The option survives a copy, and classification batches still update the statistics.
    let mut copy = frozen.deep_copy().unwrap();
    copy.forward_pair(&a, &b).unwrap();
    assert_eq!(core_bn_statistics(&copy), before);
    frozen.forward(&randn((4, 1, 28, 28), 3)).unwrap();
    assert_ne!(core_bn_statistics(&frozen), before);
}

fn entry(state: &[(String, Tensor)], name: &str) -> Vec<f32> {
    let (_, t) = state.iter().find(|(k, _)| k == name).unwrap();
    values(t)
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}: {x} vs {y}"
        );
    }
}

fn recalibrated(model: &ResNet, batches: &[&Tensor]) -> Vec<(String, Tensor)> {
    let mut copy = model.deep_copy().unwrap();
    let mut recalibration = copy.recalibrate_bn_statistics();
    for batch in batches {
        recalibration.observe(batch).unwrap();
    }
    let images: usize = batches.iter().map(|b| b.dim(0).unwrap()).sum();
    assert_eq!(recalibration.finish(), images);
    copy.state_dict().unwrap()
}

#[test]
fn bn_recalibration_averages_batch_statistics_and_changes_nothing_else() {
    let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
    let mut model = ResNet::new(&config, 5, &Device::Cpu).unwrap();
    model.forward(&randn((6, 1, 28, 28), 9)).unwrap();
    let before = model.state_dict().unwrap();
    let (a, b) = (randn((4, 1, 28, 28), 1), randn((4, 1, 28, 28), 2));

    // One batch: the stem's statistics are its convolution's batch moments.
    let only_a = recalibrated(&model, &[&a]);
    let stem = Tensor::from_vec(
        entry(&before, "core.sections.0.0.weight"),
        (4, 1, 7, 7),
        &Device::Cpu,
    )
    .unwrap();
    let y = a.conv2d(&stem, 3, 1, 1, 1).unwrap();
    let mean = y
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap();
    let count = (4 * 28 * 28) as f64;
    let var = y
        .broadcast_sub(&mean)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_keepdim(0)
        .unwrap()
        .sum_keepdim(2)
        .unwrap()
        .sum_keepdim(3)
        .unwrap()
        .affine(1.0 / (count - 1.0), 0.0)
        .unwrap();
    let stem_mean = values(&mean);
    assert_close(
        &entry(&only_a, "core.sections.0.1.running_mean"),
        &stem_mean,
        "stem mean",
    );
    assert_close(
        &entry(&only_a, "core.sections.0.1.running_var"),
        &values(&var),
        "stem variance",
    );

    // Two batches: every batch norm holds the average of the two one-batch estimates; the
    // weights, batch counters and similarity means are those of before.
    let only_b = recalibrated(&model, &[&b]);
    let both = recalibrated(&model, &[&a, &b]);
    let mut statistics = 0;
    for (name, _) in &before {
        let value = entry(&both, name);
        if name.starts_with("core.")
            && (name.ends_with("running_mean") || name.ends_with("running_var"))
        {
            let average: Vec<f32> = entry(&only_a, name)
                .iter()
                .zip(entry(&only_b, name))
                .map(|(x, y)| 0.5 * (x + y))
                .collect();
            assert_close(&value, &average, name);
            assert_ne!(value, entry(&before, name), "{name} was not re-estimated");
            statistics += 1;
        } else {
            assert_eq!(value, entry(&before, name), "{name} changed");
        }
    }
    assert_eq!(statistics, 2 * 20, "ResNet18: 20 batch norms");

    // Once finished, training batches blend in with PyTorch's momentum again.
    let mut model = model.deep_copy().unwrap();
    let mut recalibration = model.recalibrate_bn_statistics();
    recalibration.observe(&b).unwrap();
    drop(recalibration);
    model.forward(&a).unwrap();
    let blended: Vec<f32> = entry(&only_b, "core.sections.0.1.running_mean")
        .iter()
        .zip(&stem_mean)
        .map(|(r, m)| 0.9 * r + 0.1 * m)
        .collect();
    let after = model.state_dict().unwrap();
    assert_close(
        &entry(&after, "core.sections.0.1.running_mean"),
        &blended,
        "momentum",
    );
    assert_eq!(
        entry(&after, "core.sections.0.1.num_batches_tracked"),
        vec![entry(&before, "core.sections.0.1.num_batches_tracked")[0] + 1.0]
    );
}
