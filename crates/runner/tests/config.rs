//! Experiment configs: defaults, presets, overrides, validation, stable run ids.

mod common;

use pixreg_runner::config::{
    preset, Arch, DatasetName, ExperimentConfig, PairRange, SimilarityLoss,
};

fn parse(text: &str, overrides: &[&str]) -> anyhow::Result<ExperimentConfig> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::from_toml(text, &overrides)
}

const MINIMAL: &str = "[task]\ndataset = \"fashion-mnist\"\n";

#[test]
fn defaults_are_the_official_code_s() {
    let c = parse(MINIMAL, &[]).unwrap();
    assert_eq!(c.model.arch, Arch::ResNet18);
    assert_eq!(c.model.base_channels, 64);
    assert!(c.regularization.is_none());
    let t = &c.training;
    assert_eq!((t.epochs, t.batch_size), (40, 64));
    assert_eq!((t.lr, t.momentum, t.weight_decay), (0.1, 0.9, 0.0));
    assert_eq!((t.phase_num, t.phase_duration, t.decay_rate), (5, 4, 0.3));
    assert_eq!((t.valid_portion, t.seed), (0.01, 0));
    assert_eq!(c.device, "cpu");
}

#[test]
fn regularization_section_takes_the_readme_preset() {
    let c = parse(&format!("{MINIMAL}[regularization]\n"), &[]).unwrap();
    let r = c.regularization.unwrap();
    assert_eq!((r.alpha, r.threshold), (10.0, 0.8));
    assert_eq!(r.source, DatasetName::FashionMnist);
    assert_eq!((r.n_images, r.pairs_per_batch), (5000, 16));
    assert_eq!(
        (r.range, r.loss, r.boosting),
        (PairRange::All, SimilarityLoss::ArctanhSquare, true)
    );
    let m = parse("[task]\ndataset = \"mnist\"\n[regularization]\n", &[]).unwrap();
    let r = m.regularization.unwrap();
    assert_eq!((r.alpha, r.threshold), (4.0, 0.2));
    use DatasetName::*;
    assert_eq!(preset(FashionMnist, Mnist), Some((10.0, 0.4)));
    assert_eq!(preset(Cifar10Jpeg, TinyImagenet), Some((10.0, 0.8)));
    assert_eq!(preset(Mnist, Mnist), Some((4.0, 0.2)));
    assert_eq!(preset(Mnist, FashionMnist), Some((10.0, 0.8)));
    assert_eq!(preset(FashionMnist, FashionMnist), Some((10.0, 0.8)));
    assert_eq!(preset(Cifar100, Imagenet), Some((10.0, 0.8)));
    assert_eq!(preset(Mnist, Cifar10), None);
    let no_preset = parse(
        "[task]\ndataset = \"mnist\"\n[regularization]\nsource = \"tiny-imagenet\"\n",
        &[],
    );
    assert!(no_preset.unwrap_err().to_string().contains("no preset"));
}

#[test]
fn overrides_set_dotted_keys_with_toml_values() {
    let c = parse(
        MINIMAL,
        &[
            "training.epochs=3",
            "regularization.alpha=2.5",
            "regularization.range=high",
            "model.arch=\"resnet34\"",
        ],
    )
    .unwrap();
    assert_eq!(c.training.epochs, 3);
    let r = c.regularization.unwrap();
    assert_eq!(r.alpha, 2.5);
    assert_eq!(r.range, PairRange::High);
    assert_eq!(c.model.arch, Arch::ResNet34);
}

#[test]
fn bad_values_are_rejected_before_anything_runs() {
    let cases: &[(&[&str], &str)] = &[
        (&["regularization.alpha=-1"], "alpha"),
        (&["regularization.threshold=1.5"], "threshold"),
        (&["regularization.range=middle"], "unknown pair range"),
        (&["regularization.pairs_per_batch=0"], "pairs_per_batch"),
        (&["regularization.n_images=1"], "n_images"),
        (&["regularization.range=double"], "threshold2"),
        (&["regularization.loss=huber"], "unknown similarity loss"),
        (&["training.epochs=0"], "epochs"),
        (
            &["training.bn_recalibration_images=100"],
            "multiple of training.batch_size (64)",
        ),
        (&["training.lr=0"], "lr"),
        (&["model.arch=vgg"], "model.arch"),
        (&["task.dataset=svhn"], "task.dataset"),
        (&["device=tpu"], "device"),
        (&["training.epoch=3"], "unknown field"),
        (&["evaluation.hsj_steps=0"], "hsj_steps"),
        (&["evaluation.hsj_gradient_evals=0"], "hsj_gradient_evals"),
        (
            &["training.adversarial={attack=\"bim\", epsilon=0.1}"],
            "`fgsm` or `pgd`",
        ),
        (
            &["training.adversarial={attack=\"pgd\", epsilon=0.0}"],
            "adversarial.epsilon",
        ),
        (
            &["training.adversarial={attack=\"fgsm\", epsilon=0.1, steps=3}"],
            "`pgd` only",
        ),
        (
            &["training.adversarial={attack=\"pgd\", epsilon=0.1, steps=0}"],
            "adversarial.steps",
        ),
        (
            &["training.adversarial={attack=\"pgd\", epsilon=0.1, fraction=1.5}"],
            "adversarial.fraction",
        ),
        (&["training.noise_augmentation={std=-0.1}"], "std"),
        (
            &["training.noise_augmentation={std=0.1, fraction=0}"],
            "fraction",
        ),
        (
            &["training.noise_augmentation={sigma=0.1}"],
            "unknown field",
        ),
        (
            &[
                "training.noise_augmentation={std=0.1}",
                "training.adversarial={attack=\"fgsm\", epsilon=0.1}",
            ],
            "separate defenses",
        ),
    ];
    for (overrides, expected) in cases {
        let err = parse(&format!("{MINIMAL}[regularization]\n"), overrides).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(expected),
            "{overrides:?}: `{text}` lacks `{expected}`"
        );
    }
}

#[test]
fn run_id_is_stable_and_depends_on_the_config() {
    let a = parse(MINIMAL, &[]).unwrap().run_id().unwrap();
    let b = parse(MINIMAL, &[]).unwrap().run_id().unwrap();
    let c = parse(MINIMAL, &["training.seed=1"])
        .unwrap()
        .run_id()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.starts_with("fashion-mnist-base-"), "{a}");
    let explicit = parse(&format!("{MINIMAL}[training]\nepochs = 40\n"), &[]).unwrap();
    assert_eq!(
        explicit.run_id().unwrap(),
        a,
        "defaults written out give the same id"
    );
    let defended = parse(MINIMAL, &["training.noise_augmentation={std=0.1}"]).unwrap();
    assert_ne!(
        defended.run_id().unwrap(),
        a,
        "a defense is a different model"
    );
    assert!(
        !toml::to_string(&parse(MINIMAL, &[]).unwrap())
            .unwrap()
            .contains("adversarial"),
        "undefended configs keep the canonical form (and ids) they had before defenses existed"
    );
}

#[test]
fn pair_bn_statistics_option_is_written_only_when_off() {
    let reg = format!("{MINIMAL}[regularization]\n");
    let on = parse(&reg, &[]).unwrap();
    assert!(
        on.regularization
            .as_ref()
            .unwrap()
            .pair_updates_bn_statistics
    );
    assert!(
        !on.training_toml()
            .unwrap()
            .contains("pair_updates_bn_statistics"),
        "the reference behaviour keeps the canonical form (and ids) it had before the option"
    );
    let off = parse(&reg, &["regularization.pair_updates_bn_statistics=false"]).unwrap();
    assert!(
        !off.regularization
            .as_ref()
            .unwrap()
            .pair_updates_bn_statistics
    );
    assert!(off
        .training_toml()
        .unwrap()
        .contains("pair_updates_bn_statistics = false"));
    assert_ne!(off.run_id().unwrap(), on.run_id().unwrap());
}

#[test]
fn adversarial_training_settings_become_the_attack() {
    let attack = |section: &str| {
        parse(MINIMAL, &[&format!("training.adversarial={section}")])
            .unwrap()
            .training
            .adversarial
            .unwrap()
            .attack()
            .unwrap()
    };
    let pgd = attack("{attack=\"pgd\", epsilon=0.2}");
    assert_eq!((pgd.steps, pgd.random_start, pgd.epsilon), (7, true, 0.2));
    assert!((pgd.rel_stepsize - 2.5 / 7.0).abs() < 1e-12);
    let fgsm = attack("{attack=\"fgsm\", epsilon=0.1}");
    assert_eq!(
        (fgsm.steps, fgsm.random_start, fgsm.rel_stepsize),
        (1, false, 1.0)
    );
}

#[test]
fn lr_schedule_matches_the_reference_golden_values() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/golden/schedule/schedule.safetensors"
    );
    let golden = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    for (name, toml) in [
        ("default", ""),
        (
            "custom",
            "[training]\nlr = 0.2\nphase_num = 2\nphase_duration = 3\ndecay_rate = 0.5\n",
        ),
    ] {
        let c = parse(&format!("{MINIMAL}{toml}"), &[]).unwrap();
        let epochs: Vec<i64> = golden[&format!("{name}.epoch")].to_vec1().unwrap();
        let lrs: Vec<f64> = golden[&format!("{name}.lr")].to_vec1().unwrap();
        for (e, lr) in epochs.iter().zip(&lrs) {
            let got = c.training.lr_at(*e as usize);
            assert!(
                (got - lr).abs() <= 1e-12 * lr.abs(),
                "{name} epoch {e}: {got} vs {lr}"
            );
        }
    }
}

/// The committed runs of the reporting profiles are found by the hash of their resolved
/// config: any change to the config types that changed the canonical TOML would orphan
/// them (and silently retrain). Each folder's own config.toml must hash to its name.
#[test]
fn committed_runs_keep_their_ids() {
    let mut checked = 0;
    for dir in common::committed_runs() {
        let config = dir.join("config.toml");
        let parsed = ExperimentConfig::load(&config, &[]).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(parsed.run_id().unwrap(), name, "{}", config.display());
        // And the canonical TOML reads back to itself.
        let again = ExperimentConfig::from_toml(&toml::to_string(&parsed).unwrap(), &[]).unwrap();
        assert_eq!(again.run_id().unwrap(), name);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} committed runs found");
}
