//! Tests on the shipped datasets (`../shared/datasets`).

mod common;

use std::sync::OnceLock;

use candle_core::Device;
use pixreg_datasets::{
    first_n_train_images, load_split, load_train_test, split_train_valid, BatchOptions, Batcher,
    DatasetName, Error, ImageSet, LoadOptions, RegImages, Split, ValidSplit,
};

fn opts() -> LoadOptions {
    LoadOptions::new(common::shared_data_dir())
}

fn mnist() -> &'static (ImageSet, ImageSet) {
    static SETS: OnceLock<(ImageSet, ImageSet)> = OnceLock::new();
    SETS.get_or_init(|| load_train_test(DatasetName::Mnist, &opts()).unwrap())
}

/// The CIFAR-10 JPEG archive, loaded once (grayscale, both splits).
fn cifar_jpeg() -> &'static (ImageSet, ImageSet) {
    static SETS: OnceLock<(ImageSet, ImageSet)> = OnceLock::new();
    SETS.get_or_init(|| load_train_test(DatasetName::Cifar10Jpeg, &opts()).unwrap())
}

#[test]
fn mnist_counts_shapes_and_first_label() {
    let (train, test) = mnist();
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (60000, 1, 28, 28)
    );
    assert_eq!(
        (test.n, test.channels, test.height, test.width),
        (10000, 1, 28, 28)
    );
    assert_eq!(train.images.len(), 47_040_000);
    assert_eq!(
        train.class_counts(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.class_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(test.labels[..3], [7, 2, 1]);
    // Pixel sanity: first image's border is black, some stroke reaches 255, mean ≈ 33.32.
    let first = train.image(0).unwrap();
    assert_eq!(first[0], 0);
    assert_eq!(*first.iter().max().unwrap(), 255);
    let mean = train.images.iter().map(|&v| f64::from(v)).sum::<f64>() / train.images.len() as f64;
    assert!((mean - 33.32).abs() < 0.01, "mean {mean}");
}

#[test]
fn mnist_batches_and_valid_split() {
    let (train, _) = mnist();
    let tv = split_train_valid(DatasetName::Mnist, train.n, &ValidSplit::random(0)).unwrap();
    assert_eq!((tv.train.len(), tv.valid.len()), (59400, 600));
    let batcher = Batcher::new(
        train,
        Some(tv.train),
        BatchOptions::train(64, 0, false),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(batcher.num_batches(), 929);
    let batches: Vec<_> = batcher.epoch(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 929);
    assert_eq!(batches[928].images.dims(), [8, 1, 28, 28]);
    assert_eq!(batches[0].images.dims(), [64, 1, 28, 28]);
    assert_eq!(batches[0].labels.dims(), [64]);
}

#[test]
fn classification_data_like_the_reference_loaders() {
    let data = pixreg_datasets::ClassificationData::load(
        DatasetName::FashionMnist,
        &opts(),
        &ValidSplit::random(0),
    )
    .unwrap();
    let dev = Device::Cpu;
    let scale = data.model_scale().unwrap();
    assert_eq!(scale, pixreg_datasets::ModelScale::UNIT);
    let train = data.train_batcher(64, 0, scale, &dev).unwrap();
    assert_eq!((train.len(), train.num_batches()), (59400, 929));
    assert!(!train.options().augment);
    let valid = data.valid_batcher(64, scale, &dev).unwrap();
    assert_eq!((valid.len(), valid.num_batches()), (600, 10));
    let test = data.test_batcher(64, scale, &dev).unwrap();
    assert_eq!((test.len(), test.num_batches()), (10000, 157));
    let first = test.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.indices, (0..64).collect::<Vec<_>>());
    assert!(pixreg_datasets::ClassificationData::load(
        DatasetName::TinyImagenet,
        &opts(),
        &ValidSplit::None
    )
    .is_err());
}

#[test]
fn official_seed0_valid_split() {
    let (train, _) = mnist();
    let how = ValidSplit::Official {
        path: common::official_indices_json(),
    };
    let tv = split_train_valid(DatasetName::Mnist, train.n, &how).unwrap();
    assert_eq!(tv.valid.len(), 600);
    assert_eq!(tv.valid[..5], [55340, 25247, 49673, 58343, 27562]);
    assert_eq!(tv.train.len(), 59400);
    let cifar = split_train_valid(DatasetName::Cifar10Jpeg, 50000, &how).unwrap();
    assert_eq!(cifar.valid[..3], [25247, 49673, 27562]);
    assert_eq!(cifar.valid.len(), 500);
    // Size mismatch is refused.
    assert!(split_train_valid(DatasetName::Cifar10, 60000, &how).is_err());
}

#[test]
fn fashion_mnist_counts() {
    let (train, test) = load_train_test(DatasetName::FashionMnist, &opts()).unwrap();
    assert_eq!((train.n, train.height, train.width), (60000, 28, 28));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // Label of the first test image (Fashion-MNIST: ankle boot = 9).
    assert_eq!(test.labels[0], 9);
}

#[test]
fn cifar10_jpeg_counts_and_shapes() {
    let (train, test) = cifar_jpeg();
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (50000, 1, 32, 32)
    );
    assert_eq!(test.n, 10000);
    assert_eq!(train.class_counts(), vec![5000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    // Class-grouped file order: airplane first, truck last.
    assert_eq!((train.labels[0], train.labels[49999]), (0, 9));
    assert_eq!(train.dataset, DatasetName::Cifar10Jpeg);
    let tv = split_train_valid(DatasetName::Cifar10Jpeg, train.n, &ValidSplit::random(3)).unwrap();
    assert_eq!(tv.valid.len(), 500);
    // The reference's CIFAR epoch: 49,500 images, 774 batches, the last of 28, augmented.
    let scale =
        pixreg_datasets::ModelScale::for_pair(DatasetName::Cifar10Jpeg, DatasetName::Cifar10Jpeg)
            .unwrap();
    let b = Batcher::new(
        train,
        Some(tv.train),
        BatchOptions::train(64, 0, true).with_scale(scale),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(b.num_batches(), 774);
    let last = b.epoch(0).last().unwrap().unwrap();
    assert_eq!(last.images.dims(), [28, 1, 32, 32]);
}

#[test]
fn cifar10_jpeg_rgb_is_luma_of_rgb() {
    let rgb = pixreg_datasets::load_split_limited(
        DatasetName::Cifar10Jpeg,
        Split::Test,
        &opts().rgb(true),
        Some(20),
    )
    .unwrap();
    assert_eq!(
        (rgb.n, rgb.channels, rgb.height, rgb.width),
        (20, 3, 32, 32)
    );
    let (_, gray_test) = cifar_jpeg();
    for i in 0..20 {
        let px = rgb.image(i).unwrap();
        let luma = pixreg_datasets::transform::rgb_planar_to_luma(px);
        assert_eq!(luma, gray_test.image(i).unwrap());
    }
}

#[test]
fn cifar10_jpeg_reg_images_are_augmented_and_deterministic() {
    let (train, _) = cifar_jpeg();
    let a = RegImages::from_train_set(train, 5000, 0).unwrap();
    let b = RegImages::from_train_set(train, 5000, 0).unwrap();
    let c = RegImages::from_train_set(train, 5000, 1).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.images.images, c.images.images);
    assert_eq!(a.len(), 5000);
    assert!(a.source_indices.iter().all(|&i| i < 5000));
    let t = a.model_tensor(DatasetName::Cifar10, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [5000, 1, 32, 32]);
    let min = t
        .flatten_all()
        .unwrap()
        .min(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(min >= -2.5);
    // At least one image differs from its source (crop/flip applied).
    let changed = (0..a.len())
        .filter(|&k| a.images.image(k) != train.image(a.source_indices[k]))
        .count();
    assert!(changed > 4000, "{changed}");
}

#[test]
fn tiny_imagenet_val() {
    let val = load_split(DatasetName::TinyImagenet, Split::Test, &opts()).unwrap();
    assert_eq!(
        (val.n, val.channels, val.height, val.width),
        (10000, 1, 64, 64)
    );
    assert_eq!(val.num_classes, 200);
    assert_eq!(val.class_counts(), vec![50; 200]);
    // val_0 is n03444034, whose index among the sorted wnids:
    let classes = pixreg_datasets::folder::tiny_imagenet_classes(
        &common::shared_data_dir().join("tiny-imagenet-200"),
    )
    .unwrap();
    assert_eq!(classes[val.labels[0] as usize], "n03444034");
    // No train split shipped.
    assert!(load_split(DatasetName::TinyImagenet, Split::Train, &opts()).is_err());
}

#[test]
fn tiny_imagenet_reg_photos() {
    let reg = RegImages::build(DatasetName::TinyImagenet, 50, 0, &opts()).unwrap();
    assert_eq!(
        (
            reg.images.n,
            reg.images.channels,
            reg.images.height,
            reg.images.width
        ),
        (50, 1, 36, 64)
    );
    let x = first_n_train_images(
        DatasetName::TinyImagenet,
        3,
        &LoadOptions::new(common::shared_data_dir()),
    )
    .unwrap();
    assert_eq!(x.dims(), [3, 1, 36, 64]);
    // Photo = rows 14..50 of the 64x64 grayscale image.
    let full = pixreg_datasets::load_split_limited(
        DatasetName::TinyImagenet,
        Split::Test,
        &opts(),
        Some(1),
    )
    .unwrap();
    let crop: Vec<f32> = full.image(0).unwrap()[14 * 64..50 * 64]
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    assert_eq!(
        x.get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        crop
    );
    // MNIST-task scaling of ImageNet photos is raw 0..255.
    let raw = reg.model_tensor(DatasetName::Mnist, &Device::Cpu).unwrap();
    let max = raw
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(max > 1.0 && max <= 255.0);
}

#[test]
fn first_n_mnist_and_reg_images() {
    let dir = common::shared_data_dir();
    let x = first_n_train_images(DatasetName::Mnist, 10, &LoadOptions::new(&dir)).unwrap();
    assert_eq!(x.dims(), [10, 1, 28, 28]);
    let (train, _) = mnist();
    let expect: Vec<f32> = train.images[..7840]
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expect);
    let reg = RegImages::build(DatasetName::Mnist, 5000, 0, &opts()).unwrap();
    // No augmentation for MNIST: every image is its source image.
    for k in 0..reg.len() {
        assert_eq!(reg.images.image(k), train.image(reg.source_indices[k]));
    }
    let mut sorted = reg.source_indices.clone();
    sorted.sort();
    assert_eq!(sorted, (0..5000).collect::<Vec<_>>());
    assert_ne!(reg.source_indices, sorted);
    let cj = first_n_train_images(DatasetName::Cifar10Jpeg, 4, &LoadOptions::new(&dir)).unwrap();
    assert_eq!(cj.dims(), [4, 1, 32, 32]);
}

#[test]
fn a_corrupted_byte_in_a_dataset_copy_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mnist");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(opts().data_dir.join("mnist")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    let options = LoadOptions::new(dir.path());
    let (train, _) = load_train_test(DatasetName::Mnist, &options).unwrap();
    assert_eq!(train.n, 60_000, "the shipped copy passes");

    let labels = copy.join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&labels).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 0x01;
    std::fs::write(&labels, &bytes).unwrap();
    let err = load_train_test(DatasetName::Mnist, &options).unwrap_err();
    assert!(
        matches!(&err, Error::ChecksumMismatch { path, .. } if path == &labels),
        "{err}"
    );
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    // Unverified, the same byte is read (and fails later, as whatever the format makes of it).
    let err = load_train_test(DatasetName::Mnist, &options.clone().verify(false)).unwrap_err();
    assert!(!matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}
