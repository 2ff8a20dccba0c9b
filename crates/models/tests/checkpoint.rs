//! Saving and strict loading of safetensors checkpoints.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use pixreg_models::{Arch, Error, ModelConfig, ResNet};

fn weights() -> HashMap<String, Tensor> {
    load_golden("weights.safetensors")
}

fn write(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(tensors, &path).unwrap();
    path
}

fn load_err(path: &Path, config: &ModelConfig) -> Error {
    match ResNet::load(path, config, test_device()) {
        Ok(_) => panic!("loading {} should fail", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    let key = "core.sections.2.0.shortcut.1.running_var";
    w.remove(key).unwrap();
    let err = load_err(&write(dir.path(), "m.safetensors", &w), &golden_config());
    assert!(
        matches!(&err, Error::MissingKey { key: k, .. } if k == key),
        "{err}"
    );
    assert!(err.to_string().contains(key));
}

#[test]
fn extra_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    w.insert(
        "core.sections.1.0.shortcut.0.weight".into(),
        Tensor::zeros((8, 8, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_err(&write(dir.path(), "m.safetensors", &w), &golden_config());
    assert!(
        matches!(&err, Error::UnexpectedKey { key, .. } if key == "core.sections.1.0.shortcut.0.weight"),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("core.sections.1.0.shortcut.0.weight"));
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    w.insert(
        "linear.bias".into(),
        Tensor::zeros(11, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_err(&write(dir.path(), "m.safetensors", &w), &golden_config());
    assert!(
        matches!(&err, Error::ShapeMismatch { key, expected, found, .. }
            if key == "linear.bias" && expected == &[10] && found == &[11]),
        "{err}"
    );
    assert!(err.to_string().contains("linear.bias"));
}

#[test]
fn wrong_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for (key, dtype) in [
        ("core.sections.0.1.num_batches_tracked", DType::F32),
        ("layer_weight", DType::F64),
    ] {
        let mut w = weights();
        let t = w[key].to_dtype(dtype).unwrap();
        w.insert(key.into(), t);
        let err = load_err(&write(dir.path(), "m.safetensors", &w), &golden_config());
        assert!(
            matches!(&err, Error::DTypeMismatch { key: k, found, .. } if k == key && *found == dtype),
            "{err}"
        );
    }
}

#[test]
fn wrong_architecture_is_rejected() {
    let path = golden_path("weights.safetensors");
    let resnet34 = ModelConfig::new(Arch::ResNet34, [1, 28, 28], 10, 8);
    assert!(matches!(
        load_err(Path::new(&path), &resnet34),
        Error::MissingKey { .. }
    ));
    let wider = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 16);
    assert!(matches!(
        load_err(Path::new(&path), &wider),
        Error::ShapeMismatch { .. }
    ));
    let rgb = ModelConfig::new(Arch::ResNet18, [3, 28, 28], 10, 8);
    assert!(matches!(
        load_err(Path::new(&path), &rgb),
        Error::ShapeMismatch { key, .. } if key == "core.sections.0.0.weight"
    ));
}

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(&dir.path().join("absent.safetensors"), &golden_config());
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn failed_load_leaves_the_model_unchanged() {
    let mut model = golden_model();
    let before = model.state_dict().unwrap();
    let mut w = weights();
    w.remove("linear.bias");
    let zeros: HashMap<String, Tensor> = w
        .into_iter()
        .map(|(k, t)| (k, t.zeros_like().unwrap()))
        .collect();
    assert!(model.load_state_dict(zeros, "test").is_err());
    for ((name, a), (_, b)) in before.iter().zip(model.state_dict().unwrap().iter()) {
        if a.dtype() != DType::I64 {
            assert_eq!(rel_err(a, b), 0.0, "{name}");
        }
    }
}

#[test]
fn save_then_load_round_trips_after_training() {
    let dir = tempfile::tempdir().unwrap();
    let inp = load_golden("inputs.safetensors");
    let mut model = golden_model();
    model.set_training(true);
    model.forward(get(&inp, "images")).unwrap();
    model
        .forward_pair(get(&inp, "pairs.a"), get(&inp, "pairs.b"))
        .unwrap();
    let path = dir.path().join("ckpt.safetensors");
    model.save(&path).unwrap();

    // The file holds exactly the reference's keys, dtypes and shapes.
    let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let reference = weights();
    let mut a: Vec<&String> = saved.keys().collect();
    let mut b: Vec<&String> = reference.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for (k, t) in &reference {
        assert_eq!(saved[k].dtype(), t.dtype(), "{k}");
        assert_eq!(saved[k].dims(), t.dims(), "{k}");
    }
    assert_eq!(
        saved["core.sections.3.1.layer1.2.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap(),
        37 + 3,
        "the golden counter 37, one classification and two pair passes"
    );
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let loaded = ResNet::load(&path, &golden_config(), test_device()).unwrap();
    assert!(!loaded.is_training());
    for ((name, x), (name2, y)) in model
        .state_dict()
        .unwrap()
        .iter()
        .zip(loaded.state_dict().unwrap().iter())
    {
        assert_eq!(name, name2);
        if x.dtype() == DType::I64 {
            assert_eq!(x.to_scalar::<i64>().unwrap(), y.to_scalar::<i64>().unwrap());
        } else {
            assert_eq!(rel_err(x, y), 0.0, "{name}");
        }
    }
    let images = get(&inp, "images");
    assert_eq!(
        rel_err(
            &model.forward_eval(images).unwrap(),
            &loaded.forward_eval(images).unwrap()
        ),
        0.0
    );
}

#[test]
fn state_dict_is_a_deep_copy() {
    let model = golden_model();
    let snapshot = model.state_dict().unwrap();
    let (name, var) = &model.named_parameters()[1];
    var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
    let (_, kept) = snapshot.iter().find(|(n, _)| n == name).unwrap();
    assert!(rel_err(kept, &get(&weights(), name).clone()) == 0.0);
}

#[test]
fn deep_copy_is_independent() {
    let model = golden_model();
    let copy = model.deep_copy().unwrap();
    let images = get(&load_golden("inputs.safetensors"), "images").clone();
    let before = model.forward_eval(&images).unwrap();
    for (_, var) in copy.named_parameters() {
        var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
    }
    assert_eq!(rel_err(&model.forward_eval(&images).unwrap(), &before), 0.0);
    assert!(rel_err(&copy.forward_eval(&images).unwrap(), &before) > 0.0);
}

#[test]
fn model_and_errors_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ResNet>();
    send_sync::<Error>();
    send_sync::<pixreg_models::SgdMomentum>();
}

#[test]
fn checkpoints_describe_their_architecture_and_save_byte_identically() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
    let model = ResNet::new(&config, 3, test_device()).unwrap();
    let extra = [
        ("git_commit".to_string(), "abc".to_string()),
        ("input_scaling".to_string(), "{}".to_string()),
    ];
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    // Many saves, so that a per-save random key order would show.
    for _ in 0..8 {
        model.save_with_metadata(&a, &extra).unwrap();
        model.save_with_metadata(&b, &extra).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    }
    let metadata = pixreg_models::checkpoint::read_metadata(&a).unwrap();
    assert_eq!(metadata["git_commit"], "abc");
    assert_eq!(metadata["num_classes"], "10");
    assert_eq!(
        pixreg_models::checkpoint::config_from_metadata(&a).unwrap(),
        Some(config.clone())
    );
    // Still a plain safetensors file that loads strictly, with the same weights.
    let loaded = ResNet::load(&a, &config, test_device()).unwrap();
    for ((k, x), (_, y)) in model
        .state_dict()
        .unwrap()
        .iter()
        .zip(&loaded.state_dict().unwrap())
    {
        let diff = (x.to_dtype(DType::F64).unwrap() - y.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{k}");
    }
    // The architecture's own keys cannot be overwritten.
    let clash = [("arch".to_string(), "resnet50".to_string())];
    assert!(model.save_with_metadata(&a, &clash).is_err());
}
