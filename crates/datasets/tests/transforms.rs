//! Grayscale, augmentation, photo crop, model scaling, splits and batching.

mod common;

use candle_core::Device;
use pixreg_datasets::transform::{
    photo_to_reg, pil_luma, rgb_interleaved_to_chw, rgb_planar_to_luma, CropFlip,
};
use pixreg_datasets::{
    permutation, preprocess, split_train_valid, BatchOptions, Batcher, DatasetName, ImageSet,
    ModelScale, RegImages, ValidSplit,
};
use rand::SeedableRng;

#[test]
fn pil_grayscale_by_hand() {
    // L = (19595 R + 38470 G + 7471 B + 32768) >> 16, values checked against Pillow's
    // Image.convert("L"):
    // (255,0,0): 19595·255 = 4996725, +32768 = 5029493, >>16 = 76
    assert_eq!(pil_luma(255, 0, 0), 76);
    // (0,255,0): 9809850 + 32768 = 9842618 >> 16 = 150
    assert_eq!(pil_luma(0, 255, 0), 150);
    // (0,0,255): 1905105 + 32768 = 1937873 >> 16 = 29
    assert_eq!(pil_luma(0, 0, 255), 29);
    // (0,0,250): 1867750 + 32768 = 1900518 >> 16 = 28 (float rounding of 28.5 would give 29)
    assert_eq!(pil_luma(0, 0, 250), 28);
    // (0,207,35): 7963290 + 261485 + 32768 = 8257543 >> 16 = 126 (float: 125.499 → 125)
    assert_eq!(pil_luma(0, 207, 35), 126);
    // (12,200,77): 235140 + 7694000 + 575267 + 32768 = 8537175 >> 16 = 130
    assert_eq!(pil_luma(12, 200, 77), 130);
    assert_eq!(pil_luma(255, 255, 255), 255);
    assert_eq!(pil_luma(0, 0, 0), 0);
    // Planar and interleaved helpers agree.
    let planar = [255, 0, 12, 0, 255, 200, 0, 0, 77];
    assert_eq!(rgb_planar_to_luma(&planar), [76, 150, 130]);
    let interleaved = [255, 0, 0, 0, 255, 0, 12, 200, 77];
    assert_eq!(rgb_interleaved_to_chw(&interleaved, false), [76, 150, 130]);
    assert_eq!(rgb_interleaved_to_chw(&interleaved, true), planar);
}

/// A 1×3×5 image: value = 10·row + col.
fn small() -> Vec<u8> {
    (0..3)
        .flat_map(|r| (0..5).map(move |c| 10 * r + c))
        .collect()
}

#[test]
fn reflect_padding_crop_and_flip() {
    let img = small();
    // Offsets (4, 4): the identity crop.
    let id = CropFlip {
        top: 4,
        left: 4,
        flip: false,
    };
    assert_eq!(id.apply(&img, 1, 3, 5), img);
    // Columns of a 5-pixel line [0 1 2 3 4] padded by 4 (numpy np.pad(.., 4, "reflect")):
    // [4 3 2 1 | 0 1 2 3 4 | 3 2 1 0]; the crop at column offset j takes 5 from position j.
    let one_row: Vec<u8> = (0..5).collect();
    let left0 = CropFlip {
        top: 4,
        left: 0,
        flip: false,
    };
    assert_eq!(left0.apply(&one_row, 1, 1, 5), [4, 3, 2, 1, 0]);
    let left2 = CropFlip {
        top: 4,
        left: 2,
        flip: false,
    };
    assert_eq!(left2.apply(&one_row, 1, 1, 5), [2, 1, 0, 1, 2]);
    let left8 = CropFlip {
        top: 4,
        left: 8,
        flip: false,
    };
    assert_eq!(left8.apply(&one_row, 1, 1, 5), [4, 3, 2, 1, 0]);
    let left6 = CropFlip {
        top: 4,
        left: 6,
        flip: false,
    };
    assert_eq!(left6.apply(&one_row, 1, 1, 5), [2, 3, 4, 3, 2]);
    // Flip after the crop.
    let flip6 = CropFlip {
        top: 4,
        left: 6,
        flip: true,
    };
    assert_eq!(flip6.apply(&one_row, 1, 1, 5), [2, 3, 4, 3, 2]);
    let flip5 = CropFlip {
        top: 4,
        left: 5,
        flip: true,
    };
    assert_eq!(flip5.apply(&one_row, 1, 1, 5), [3, 4, 3, 2, 1]);
    // Lines shorter than the padding keep reflecting like numpy:
    // np.pad([0 1 2 3], 4, "reflect") = [2 3 2 1 | 0 1 2 3 | 2 1 0 1].
    let four: Vec<u8> = (0..4).collect();
    let far_left = CropFlip {
        top: 4,
        left: 0,
        flip: false,
    };
    assert_eq!(far_left.apply(&four, 1, 1, 4), [2, 3, 2, 1]);
    let far_right = CropFlip {
        top: 4,
        left: 8,
        flip: false,
    };
    assert_eq!(far_right.apply(&four, 1, 1, 4), [2, 1, 0, 1]);
    // Rows of a 5×5 image behave the same; channels are cropped alike.
    let sq: Vec<u8> = (0..2)
        .flat_map(|ch| (0..5).flat_map(move |r| (0..5).map(move |c| 100 * ch + 10 * r + c)))
        .collect();
    let top1 = CropFlip {
        top: 1,
        left: 4,
        flip: false,
    };
    let out = top1.apply(&sq, 2, 5, 5);
    let rows: Vec<u8> = (0..5).map(|r| out[r * 5]).collect();
    assert_eq!(rows, [30, 20, 10, 0, 10]);
    assert_eq!(out[25..30], [130, 131, 132, 133, 134]);
}

#[test]
fn crop_flip_sampling() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let draws: Vec<CropFlip> = (0..20000).map(|_| CropFlip::sample(&mut rng)).collect();
    let mut tops = [0usize; 9];
    for d in &draws {
        tops[d.top] += 1;
        assert!(d.left <= 8);
    }
    assert!(tops.iter().all(|&c| c > 1900 && c < 2550), "{tops:?}");
    let flips = draws.iter().filter(|d| d.flip).count();
    assert!((9500..10500).contains(&flips));
    let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    assert_eq!(CropFlip::sample(&mut again), draws[0]);
}

fn toy_set(dataset: DatasetName, n: usize) -> ImageSet {
    ImageSet {
        dataset,
        images: (0..n * 3 * 4 * 4).map(|v| (v * 7 % 256) as u8).collect(),
        labels: (0..n as u32).map(|i| i % 10).collect(),
        coarse_labels: None,
        num_classes: 10,
        n,
        channels: 3,
        height: 4,
        width: 4,
    }
}

#[test]
fn batcher_determinism_and_order() {
    let set = toy_set(DatasetName::Cifar10, 150);
    let dev = Device::Cpu;
    let collect = |opts: BatchOptions, epoch: u64| {
        let b = Batcher::new(&set, None, opts, &dev).unwrap();
        b.epoch(epoch)
            .map(|r| {
                let b = r.unwrap();
                (
                    b.indices,
                    b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = collect(BatchOptions::train(64, 1, true), 0);
    assert_eq!(a.len(), 3);
    assert_eq!(a[2].0.len(), 22);
    assert_eq!(a, collect(BatchOptions::train(64, 1, true), 0));
    assert_ne!(a, collect(BatchOptions::train(64, 2, true), 0));
    assert_ne!(a, collect(BatchOptions::train(64, 1, true), 1));
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.0.clone()).collect();
    assert_ne!(seen, (0..150).collect::<Vec<_>>());
    seen.sort();
    assert_eq!(seen, (0..150).collect::<Vec<_>>());
    // Evaluation: in order, values u8/255, labels as given.
    let b = Batcher::new(&set, Some(vec![5, 1]), BatchOptions::eval(64), &dev).unwrap();
    let batch = b.epoch(0).next().unwrap().unwrap();
    assert_eq!(batch.indices, [5, 1]);
    assert_eq!(batch.images.dims(), [2, 3, 4, 4]);
    assert_eq!(batch.labels.to_vec1::<u32>().unwrap(), [5, 1]);
    let v = batch
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(v[0], f32::from(set.image(5).unwrap()[0]) / 255.0);
    // Model scale for CIFAR: 5(u − 0.5).
    let scaled = Batcher::new(
        &set,
        Some(vec![5]),
        BatchOptions::eval(8).with_scale(ModelScale::CIFAR),
        &dev,
    )
    .unwrap();
    let s = scaled
        .epoch(0)
        .next()
        .unwrap()
        .unwrap()
        .images
        .flatten_all()
        .unwrap();
    let s = s.to_vec1::<f32>().unwrap();
    assert!((s[0] - (5.0 * (v[0] - 0.5))).abs() < 1e-6);
    // Bad inputs are errors, not panics.
    assert!(Batcher::new(&set, Some(vec![150]), BatchOptions::eval(8), &dev).is_err());
    assert!(Batcher::new(&set, None, BatchOptions::eval(0), &dev).is_err());
}

#[test]
fn augmentation_in_batches_matches_crop_flip() {
    let set = toy_set(DatasetName::Cifar10, 3);
    let b = Batcher::new(&set, None, BatchOptions::train(3, 9, true), &Device::Cpu).unwrap();
    let batch = b.epoch(4).next().unwrap().unwrap();
    // Reproduce: stream 4 of seed 9, shuffle, then one CropFlip per image in batch order.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    rng.set_stream(4);
    let mut order: Vec<usize> = (0..3).collect();
    pixreg_datasets::split::shuffle(&mut order, &mut rng);
    assert_eq!(batch.indices, order);
    let got = batch
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut expect = Vec::new();
    for &i in &order {
        let aug = CropFlip::sample(&mut rng).apply(set.image(i).unwrap(), 3, 4, 4);
        expect.extend(aug.iter().map(|&v| f32::from(v) / 255.0));
    }
    assert_eq!(got, expect);
}

#[test]
fn valid_split_sizes_and_disjointness() {
    for (name, n, k) in [
        (DatasetName::Mnist, 60000, 600),
        (DatasetName::FashionMnist, 60000, 600),
        (DatasetName::Cifar10, 50000, 500),
        (DatasetName::Cifar100, 50000, 500),
    ] {
        let tv = split_train_valid(name, n, &ValidSplit::random(0)).unwrap();
        assert_eq!(tv.valid.len(), k);
        assert_eq!(tv.train.len(), n - k);
        let mut all: Vec<usize> = tv.train.iter().chain(&tv.valid).copied().collect();
        all.sort();
        assert_eq!(
            all,
            (0..n).collect::<Vec<_>>(),
            "{name}: disjoint and complete"
        );
        assert_eq!(
            tv,
            split_train_valid(name, n, &ValidSplit::random(0)).unwrap()
        );
        assert_ne!(
            tv.valid,
            split_train_valid(name, n, &ValidSplit::random(1))
                .unwrap()
                .valid
        );
    }
    let custom = ValidSplit::Random {
        fraction: 0.1,
        seed: 0,
    };
    assert_eq!(
        split_train_valid(DatasetName::Mnist, 1000, &custom)
            .unwrap()
            .valid
            .len(),
        100
    );
    let none = split_train_valid(DatasetName::Mnist, 10, &ValidSplit::None).unwrap();
    assert_eq!((none.train.len(), none.valid.len()), (10, 0));
    let bad = ValidSplit::Random {
        fraction: 1.5,
        seed: 0,
    };
    assert!(split_train_valid(DatasetName::Mnist, 10, &bad).is_err());
    let official = ValidSplit::Official {
        path: common::official_indices_json(),
    };
    assert!(split_train_valid(DatasetName::TinyImagenet, 10000, &official).is_err());
    let missing = ValidSplit::Official {
        path: "no/such.json".into(),
    };
    assert!(split_train_valid(DatasetName::Mnist, 60000, &missing).is_err());
}

#[test]
fn permutation_is_portable() {
    // Fixed values: guards against a change of RNG or shuffle algorithm.
    let p = permutation(10, 0);
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_eq!(p, permutation(10, 0));
    assert_ne!(p, permutation(10, 1));
    assert_eq!(p, [1, 4, 0, 2, 7, 8, 3, 5, 9, 6]);
}

#[test]
fn model_scale_table() {
    use DatasetName::*;
    assert_eq!(
        ModelScale::for_pair(Cifar10, Cifar10).unwrap(),
        ModelScale::CIFAR
    );
    assert_eq!(
        ModelScale::for_pair(Cifar100, Mnist).unwrap(),
        ModelScale::CIFAR
    );
    assert_eq!(
        ModelScale::for_pair(Mnist, Cifar10).unwrap(),
        ModelScale::CIFAR
    );
    assert_eq!(
        ModelScale::for_pair(FashionMnist, Mnist).unwrap(),
        ModelScale::UNIT
    );
    assert_eq!(
        ModelScale::for_pair(Mnist, Mnist).unwrap(),
        ModelScale::UNIT
    );
    assert_eq!(
        ModelScale::for_pair(TinyImagenet, Cifar10).unwrap(),
        ModelScale::CIFAR
    );
    assert_eq!(
        ModelScale::for_pair(Imagenet, Mnist).unwrap(),
        ModelScale::RAW_255
    );
    assert_eq!(
        ModelScale::for_pair(Cifar10Jpeg, Cifar10Jpeg).unwrap(),
        ModelScale::CIFAR
    );
    assert!(ModelScale::for_pair(Mnist, Imagenet).is_err());
    let u = candle_core::Tensor::new(&[0f32, 0.5, 1.0], &Device::Cpu).unwrap();
    let x = preprocess(&u, Cifar10, Cifar10)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(x, [-2.5, 0.0, 2.5]);
    let x = preprocess(&u, Imagenet, Mnist)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(x, [0.0, 127.5, 255.0]);
    let x = preprocess(&u, Mnist, Mnist)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(x, [0.0, 0.5, 1.0]);
}

#[test]
fn photo_reduction() {
    // Large photo: fixed 144×256 centre crop, every 4th pixel.
    let (h, w) = (200usize, 300usize);
    let img: Vec<u8> = (0..h * w)
        .map(|p| ((p / w) as u8) ^ ((p % w) as u8))
        .collect();
    let out = photo_to_reg(&img, h, w);
    assert_eq!(out.len(), 36 * 64);
    let (top, left) = (100 - 72, 150 - 128);
    assert_eq!(out[0], img[top * w + left]);
    assert_eq!(out[64 + 1], img[(top + 4) * w + left + 4]);
    assert_eq!(out[35 * 64 + 63], img[(top + 140) * w + left + 252]);
    // 64×64 (Tiny-ImageNet): rows 14..50, unchanged.
    let tiny: Vec<u8> = (0..64 * 64).map(|p| (p % 251) as u8).collect();
    assert_eq!(photo_to_reg(&tiny, 64, 64), tiny[14 * 64..50 * 64]);
}

#[test]
fn reg_images_from_train_set() {
    let set = toy_set(DatasetName::Mnist, 20);
    let reg = RegImages::from_train_set(&set, 10, 3).unwrap();
    assert_eq!(reg.len(), 10);
    assert_eq!(reg.source_indices, permutation(10, 3));
    for k in 0..10 {
        assert_eq!(reg.images.image(k), set.image(reg.source_indices[k]));
    }
    assert!(RegImages::from_train_set(&set, 21, 3).is_err());
    let t = reg.tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), [10, 3, 4, 4]);
    // CIFAR sources are augmented once with the same stream, after the permutation.
    let cifar = toy_set(DatasetName::Cifar10, 20);
    let reg = RegImages::from_train_set(&cifar, 10, 3).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut order: Vec<usize> = (0..10).collect();
    pixreg_datasets::split::shuffle(&mut order, &mut rng);
    for (k, &i) in order.iter().enumerate() {
        let aug = CropFlip::sample(&mut rng).apply(cifar.image(i).unwrap(), 3, 4, 4);
        assert_eq!(reg.images.image(k).unwrap(), aug);
    }
}
