//! Readers on small files written by the tests, and every error case.

mod common;

use pixreg_datasets::folder::{load_image_folder, Decode, CIFAR10_CLASSES};
use pixreg_datasets::{
    cifar, idx, load_split, locate, resolve_data_dir_from, DatasetName, Download, Error,
    LoadOptions, Split,
};

fn err_text(e: &Error) -> String {
    e.to_string()
}

#[test]
fn idx_gz_and_raw_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    common::write_mini_idx(&dir.path().join("gz"), 5, true);
    common::write_mini_idx(&dir.path().join("raw"), 5, false);
    let a = idx::read_split(DatasetName::Mnist, &dir.path().join("gz"), Split::Train).unwrap();
    let b = idx::read_split(DatasetName::Mnist, &dir.path().join("raw"), Split::Train).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.n, a.height, a.width), (5, 2, 3));
    assert_eq!(a.image(1).unwrap(), [6, 7, 8, 9, 10, 11]);
    let t = idx::read_split(DatasetName::Mnist, &dir.path().join("gz"), Split::Test).unwrap();
    assert_eq!(t.image(0).unwrap()[0], 100);
}

#[test]
fn idx_wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = common::idx_images(1, 2, 2, &[0; 4]);
    bytes[3] = 1; // labels magic in an image file
    let p = dir.path().join("img");
    std::fs::write(&p, bytes).unwrap();
    let e = idx::parse_images(std::fs::read(&p).unwrap(), &p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadMagic {
                found: 0x801,
                expected: 0x803,
                ..
            }
        ),
        "{e}"
    );
    assert!(err_text(&e).contains("img") && err_text(&e).contains("magic"));
}

#[test]
fn idx_truncated_raw_and_gz() {
    let dir = tempfile::tempdir().unwrap();
    common::write_mini_idx(dir.path(), 4, false);
    let p = dir.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { ref path, .. } if path == &p),
        "{e}"
    );
    // Header itself cut.
    std::fs::write(&p, &bytes[..10]).unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
    // Gzip stream cut.
    let gz = dir.path().join("x-idx3-ubyte.gz");
    let full = common::gzip(&common::idx_images(50, 28, 28, &vec![7; 50 * 784]));
    std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
    let e = pixreg_datasets::idx::read_pair(DatasetName::Mnist, &gz, &gz, 10).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { ref path, .. } if path == &gz),
        "{e}"
    );
    // Extra bytes are refused too.
    std::fs::write(&p, [bytes.as_slice(), &[1, 2]].concat()).unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
}

#[test]
fn idx_count_mismatch_and_label_range() {
    let dir = tempfile::tempdir().unwrap();
    common::write_mini_idx(dir.path(), 4, false);
    let labels = dir.path().join("train-labels-idx1-ubyte");
    std::fs::write(&labels, common::idx_labels(&[1, 2, 3])).unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CountMismatch {
                images: 4,
                labels: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(err_text(&e).contains("train-labels-idx1-ubyte"));
    std::fs::write(&labels, common::idx_labels(&[1, 2, 10, 3])).unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                index: 2,
                label: 10,
                num_classes: 10,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_files_and_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let e = idx::read_split(DatasetName::Mnist, dir.path(), Split::Train).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(err_text(&e).contains("train-images-idx3-ubyte.gz"));
    let e = cifar::read_cifar10_split(dir.path(), Split::Test, false).unwrap_err();
    assert!(matches!(e, Error::MissingFile { ref path, .. } if path.ends_with("test_batch.bin")));
    // Offline: a dataset absent from the data directory is an error, no network.
    for name in DatasetName::ALL {
        let opts = LoadOptions::new(dir.path()).download(Download::Offline);
        let e = locate(name, &opts).unwrap_err();
        assert!(matches!(e, Error::DatasetNotFound { .. }), "{e}");
        assert!(err_text(&e).contains(name.as_str()));
    }
    let e = load_split(
        DatasetName::Cifar100,
        Split::Train,
        &LoadOptions::new(dir.path()),
    )
    .unwrap_err();
    // With the hub the message says how to download; without it, that this build cannot.
    let hint = if cfg!(feature = "hub") {
        "--download"
    } else {
        "`hub` feature"
    };
    assert!(err_text(&e).contains(hint), "{e}");
}

#[test]
fn dataset_names() {
    for name in DatasetName::ALL {
        assert_eq!(name.as_str().parse::<DatasetName>().unwrap(), name);
        assert_eq!(name.to_string(), name.as_str());
    }
    let e = "cifar-10".parse::<DatasetName>().unwrap_err();
    assert!(matches!(e, Error::UnknownDataset { .. }));
    let text = err_text(&e);
    for valid in [
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "cifar10-jpeg",
        "tiny-imagenet",
        "imagenet",
    ] {
        assert!(text.contains(valid), "{text}");
    }
}

#[test]
fn data_dir_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let flag = resolve_data_dir_from(Some(dir.path()), Some(other.path().into())).unwrap();
    assert_eq!(flag, dir.path());
    let env = resolve_data_dir_from(None, Some(other.path().into())).unwrap();
    assert_eq!(env, other.path());
    let e = resolve_data_dir_from(None, None).unwrap_err();
    assert!(err_text(&e).contains("PIXREG_DATA_DIR"));
    let e = resolve_data_dir_from(Some(&dir.path().join("nope")), None).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }));
}

fn cifar10_record(label: u8, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(fill));
    r
}

#[test]
fn cifar10_binary_reader() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    for (k, f) in cifar::cifar10_files(Split::Train)
        .iter()
        .chain(cifar::cifar10_files(Split::Test))
        .enumerate()
    {
        // Two records per file: planes R = k, G = 100 + k, B = 200 + label.
        let mut bytes = Vec::new();
        for label in [k as u8 % 10, 9] {
            bytes.extend(cifar10_record(label, |i| match i / 1024 {
                0 => k as u8,
                1 => 100 + k as u8,
                _ => 200 + label,
            }));
        }
        std::fs::write(root.join(f), bytes).unwrap();
    }
    let opts = LoadOptions::new(dir.path()).rgb(true);
    let train = load_split(DatasetName::Cifar10, Split::Train, &opts).unwrap();
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (10, 3, 32, 32)
    );
    assert_eq!(train.labels, [0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
    let img = train.image(2).unwrap();
    assert_eq!((img[0], img[1024], img[2048]), (1, 101, 201));
    let gray = load_split(
        DatasetName::Cifar10,
        Split::Test,
        &LoadOptions::new(dir.path()),
    )
    .unwrap();
    assert_eq!((gray.n, gray.channels), (2, 1));
    let (r, g, b) = (5u8, 105u8, 205u8);
    assert_eq!(
        gray.image(0).unwrap()[0],
        pixreg_datasets::transform::pil_luma(r, g, b)
    );
    // The .bin files directly in cifar10/ are accepted too.
    let flat = tempfile::tempdir().unwrap();
    let flat_root = flat.path().join("cifar10");
    std::fs::create_dir_all(&flat_root).unwrap();
    for f in cifar::cifar10_files(Split::Train)
        .iter()
        .chain(cifar::cifar10_files(Split::Test))
    {
        std::fs::copy(root.join(f), flat_root.join(f)).unwrap();
    }
    let again = load_split(
        DatasetName::Cifar10,
        Split::Test,
        &LoadOptions::new(flat.path()),
    )
    .unwrap();
    assert_eq!(again, gray);
    // Errors: truncated record, label out of range.
    let test = root.join("test_batch.bin");
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 1]).unwrap();
    let e = cifar::read_cifar10_split(&root, Split::Test, false).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { ref path, .. } if path == &test),
        "{e}"
    );
    std::fs::write(&test, cifar10_record(10, |_| 0)).unwrap();
    let e = cifar::read_cifar10_split(&root, Split::Test, false).unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { label: 10, .. }), "{e}");
}

#[test]
fn cifar100_binary_reader() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar100").join("cifar-100-binary");
    std::fs::create_dir_all(&root).unwrap();
    let record = |coarse: u8, fine: u8| {
        let mut r = vec![coarse, fine];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    std::fs::write(
        root.join("train.bin"),
        [record(19, 99), record(0, 3), record(4, 50)].concat(),
    )
    .unwrap();
    std::fs::write(root.join("test.bin"), record(1, 1)).unwrap();
    let opts = LoadOptions::new(dir.path()).rgb(true);
    let train = load_split(DatasetName::Cifar100, Split::Train, &opts).unwrap();
    assert_eq!(train.labels, [99, 3, 50]);
    assert_eq!(train.coarse_labels.as_deref(), Some(&[19, 0, 4][..]));
    assert_eq!(train.num_classes, 100);
    assert_eq!(train.image(1).unwrap()[..3], [0, 1, 2]);
    let test = load_split(
        DatasetName::Cifar100,
        Split::Test,
        &LoadOptions::new(dir.path()),
    )
    .unwrap();
    assert_eq!((test.n, test.channels), (1, 1));
    std::fs::write(root.join("test.bin"), record(20, 1)).unwrap();
    let e = cifar::read_cifar100_split(&root, Split::Test, true).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                num_classes: 20,
                ..
            }
        ),
        "{e}"
    );
    std::fs::write(root.join("test.bin"), record(2, 100)).unwrap();
    let e = cifar::read_cifar100_split(&root, Split::Test, true).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                num_classes: 100,
                ..
            }
        ),
        "{e}"
    );
}

fn check_mini_tree(set: &pixreg_datasets::ImageSet) {
    // Sorted classes: ant (c=1, 3 files), bee (c=2, 4 files), cat (c=0, 2 files).
    assert_eq!(set.n, 9);
    assert_eq!(set.num_classes, 3);
    assert_eq!(set.labels, [0, 0, 0, 1, 1, 1, 1, 2, 2]);
    assert_eq!((set.channels, set.height, set.width), (3, 4, 4));
    let reds: Vec<u8> = (0..set.n).map(|i| set.image(i).unwrap()[0]).collect();
    assert_eq!(reds, [10, 11, 12, 20, 21, 22, 23, 0, 1]);
    // Green plane = 10·x.
    assert_eq!(set.image(0).unwrap()[16..20], [0, 10, 20, 30]);
}

#[test]
fn image_folder_directory_and_archives() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::mini_tree();
    common::write_tree(&dir.path().join("tree"), &files);
    let rgb = Decode::Fixed { rgb: true };
    let from_dir = load_image_folder(
        DatasetName::Imagenet,
        &dir.path().join("tree"),
        "train",
        None,
        rgb,
        None,
    )
    .unwrap();
    check_mini_tree(&from_dir);
    for (name, prefix) in [("a.tar", ""), ("b.tar.gz", "top/"), ("c.tar.xz", "")] {
        let p = dir.path().join(name);
        common::write_tar(&p, prefix, &files);
        let set = load_image_folder(DatasetName::Imagenet, &p, "train", None, rgb, None).unwrap();
        assert_eq!(set, from_dir, "{name}");
    }
    // Given class order.
    let p = dir.path().join("c.tar.xz");
    let ordered = load_image_folder(
        DatasetName::Imagenet,
        &p,
        "test",
        Some(&["cat", "ant", "bee"]),
        rgb,
        None,
    )
    .unwrap();
    assert_eq!(ordered.labels, [0, 0, 1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(ordered.image(0).unwrap()[0], 100);
    // Limit: first files in class order.
    let limited = load_image_folder(DatasetName::Imagenet, &p, "test", None, rgb, Some(4)).unwrap();
    assert_eq!(limited.n, 4);
    // Grayscale = PIL luma of the RGB pixels.
    let gray = load_image_folder(
        DatasetName::Imagenet,
        &dir.path().join("tree"),
        "train",
        None,
        Decode::Fixed { rgb: false },
        None,
    )
    .unwrap();
    assert_eq!(gray.channels, 1);
    assert_eq!(
        gray.image(0).unwrap()[5],
        pixreg_datasets::transform::pil_luma(10, 10, 10)
    );
    // A class list that does not match the folders is refused.
    let e = load_image_folder(
        DatasetName::Cifar10Jpeg,
        &p,
        "train",
        Some(&CIFAR10_CLASSES),
        rgb,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
}

#[test]
fn image_folder_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let mut files = common::mini_tree();
    common::write_tree(&tree, &files);
    let rgb = Decode::Fixed { rgb: true };
    // Empty class folder (directory).
    std::fs::create_dir_all(tree.join("train/dog")).unwrap();
    let e = load_image_folder(DatasetName::Imagenet, &tree, "train", None, rgb, None).unwrap_err();
    assert!(
        matches!(e, Error::EmptyClass { ref path } if path.ends_with("train/dog")),
        "{e}"
    );
    std::fs::remove_dir(tree.join("train/dog")).unwrap();
    // Undecodable image (directory and archive).
    std::fs::write(tree.join("train/bee/0001.png"), b"not a png").unwrap();
    let e = load_image_folder(DatasetName::Imagenet, &tree, "train", None, rgb, None).unwrap_err();
    assert!(
        matches!(e, Error::Decode { ref path, .. } if path.ends_with("train/bee/0001.png")),
        "{e}"
    );
    files[1].1 = b"garbage".to_vec();
    let bad = dir.path().join("bad.tar");
    common::write_tar(&bad, "", &files);
    let e = load_image_folder(DatasetName::Imagenet, &bad, "train", None, rgb, None).unwrap_err();
    assert!(err_text(&e).contains("bad.tar:train/cat/0001.png"), "{e}");
    // Empty class folder inside an archive (directory entry only).
    let mut with_empty = common::mini_tree();
    with_empty.push(("train/dog/readme.txt".into(), b"no images".to_vec()));
    let p = dir.path().join("empty.tar.gz");
    common::write_tar(&p, "", &with_empty);
    let e = load_image_folder(DatasetName::Imagenet, &p, "train", None, rgb, None).unwrap_err();
    assert!(matches!(e, Error::EmptyClass { .. }), "{e}");
    assert!(err_text(&e).contains("dog"));
    // Truncated archive.
    let good = dir.path().join("good.tar.xz");
    common::write_tar(&good, "", &common::mini_tree());
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.tar.xz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_image_folder(DatasetName::Imagenet, &cut, "train", None, rgb, None).unwrap_err();
    assert!(err_text(&e).contains("cut.tar.xz"), "{e}");
    // Images of different sizes in a fixed-size set.
    let mut mixed = common::mini_tree();
    mixed[0].1 = common::png_rgb(5, 4, |_, _| [0, 0, 0]);
    let m = dir.path().join("mixed");
    common::write_tree(&m, &mixed);
    let e = load_image_folder(DatasetName::Imagenet, &m, "train", None, rgb, None).unwrap_err();
    assert!(matches!(e, Error::ImageSize { .. }), "{e}");
    // Missing split folder.
    let e = load_image_folder(DatasetName::Imagenet, &m, "val", None, rgb, None).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
}

#[test]
fn cifar10_jpeg_layouts_under_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar10-jpeg");
    let mut files = Vec::new();
    for split in ["train", "test"] {
        for (c, class) in CIFAR10_CLASSES.iter().enumerate() {
            files.push((
                format!("{split}/{class}/0000.png"),
                common::png_rgb(32, 32, move |_, _| [c as u8, 0, 0]),
            ));
        }
    }
    common::write_tree(&root, &files);
    let opts = LoadOptions::new(dir.path()).rgb(true);
    let from_tree = load_split(DatasetName::Cifar10Jpeg, Split::Train, &opts).unwrap();
    assert_eq!(from_tree.labels, (0..10).collect::<Vec<u32>>());
    assert_eq!(from_tree.image(3).unwrap()[0], 3);
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    common::write_tar(&root.join("any-name.tar.gz"), "", &files);
    let from_tar = load_split(DatasetName::Cifar10Jpeg, Split::Train, &opts).unwrap();
    assert_eq!(from_tar, from_tree);
}

#[test]
fn tiny_imagenet_layout_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tiny-imagenet");
    std::fs::create_dir_all(root.join("val/images")).unwrap();
    std::fs::write(root.join("wnids.txt"), "n2\nn1\n").unwrap();
    let jpeg = {
        let img =
            image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    };
    std::fs::write(root.join("val/images/val_0.JPEG"), &jpeg).unwrap();
    std::fs::write(root.join("val/images/val_1.JPEG"), &jpeg).unwrap();
    std::fs::write(
        root.join("val/val_annotations.txt"),
        "val_0.JPEG\tn2\t0\t0\t1\t1\nval_1.JPEG\tn1\t0\t0\t1\t1\n",
    )
    .unwrap();
    let opts = LoadOptions::new(dir.path());
    let val = load_split(DatasetName::TinyImagenet, Split::Test, &opts).unwrap();
    // Labels follow the sorted wnids: n1 = 0, n2 = 1.
    assert_eq!(val.labels, [1, 0]);
    assert_eq!((val.height, val.width), (64, 64));
    std::fs::write(
        root.join("val/val_annotations.txt"),
        "val_0.JPEG\tn3\t0\t0\t1\t1\n",
    )
    .unwrap();
    let e = load_split(DatasetName::TinyImagenet, Split::Test, &opts).unwrap_err();
    assert!(
        err_text(&e).contains("val_annotations.txt") && err_text(&e).contains("n3"),
        "{e}"
    );
    std::fs::write(root.join("val/val_annotations.txt"), "val_9.JPEG\tn1\n").unwrap();
    let e = load_split(DatasetName::TinyImagenet, Split::Test, &opts).unwrap_err();
    assert!(
        matches!(e, Error::MissingFile { ref path, .. } if path.ends_with("val_9.JPEG")),
        "{e}"
    );
}

#[cfg(feature = "hub")]
fn write_parquet(path: &std::path::Path, images: &[Vec<u8>], labels: &[i64]) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::writer::SerializedFileWriter;
    let schema = "message schema {
        optional group image { optional binary bytes; optional binary path (STRING); }
        optional int64 label;
    }";
    let schema = std::sync::Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let n = images.len();
    let values: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&values, Some(&vec![2; n]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&[], Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(labels, Some(&vec![1; n]), None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    writer.close().unwrap();
}

#[cfg(feature = "hub")]
#[test]
fn hub_parquet_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.parquet");
    let images: Vec<Vec<u8>> = (0..3u8)
        .map(|k| common::png_rgb(32, 32, move |x, y| [k * 50, x as u8, y as u8]))
        .collect();
    write_parquet(&p, &images, &[4, 0, 9]);
    let set =
        pixreg_datasets::hub::read_parquet(DatasetName::Cifar10, &p, "label", 10, true).unwrap();
    assert_eq!((set.n, set.channels, set.height, set.width), (3, 3, 32, 32));
    assert_eq!(set.labels, [4, 0, 9]);
    let img = set.image(2).unwrap();
    // Planar CHW: R = 100 everywhere, G = x, B = y (no H/W transposition).
    assert_eq!((img[0], img[1024 + 5], img[2048 + 32 * 7]), (100, 5, 7));
    write_parquet(&p, &images, &[4, 10, 9]);
    let e = pixreg_datasets::hub::read_parquet(DatasetName::Cifar10, &p, "label", 10, true)
        .unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { index: 1, .. }), "{e}");
    std::fs::write(&p, b"PAR1 nonsense").unwrap();
    let e = pixreg_datasets::hub::read_parquet(DatasetName::Cifar10, &p, "label", 10, true)
        .unwrap_err();
    assert!(err_text(&e).contains("train.parquet"), "{e}");
}

#[test]
fn idx_gz_bombs_are_refused_without_inflating_them() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // A valid 10-image header and payload followed by 256 MiB of zeros: ~250 KB compressed.
    let bomb = dir.path().join("bomb-idx3-ubyte.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    enc.write_all(&common::idx_images(10, 28, 28, &vec![1; 10 * 784]))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap();
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let e = idx::read_pair(DatasetName::Mnist, &bomb, &bomb, 10).unwrap_err();
    // The reader stops one byte after the announced payload (it used to inflate all of it,
    // then count the extra bytes).
    assert!(
        matches!(e, Error::Format { .. }) && err_text(&e).contains("continues after the 7840"),
        "{e}"
    );

    // A header announcing more than any IDX file holds is refused before reading on.
    let huge = dir.path().join("huge-idx3-ubyte.gz");
    std::fs::write(
        &huge,
        common::gzip(&common::idx_images(u32::MAX, 28, 28, &[0; 100])),
    )
    .unwrap();
    let e = idx::read_pair(DatasetName::Mnist, &huge, &huge, 10).unwrap_err();
    assert!(err_text(&e).contains("announces more than 2 GiB"), "{e}");
}
