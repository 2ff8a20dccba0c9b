//! Helpers shared by the integration tests: the shipped data directory and small files.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The shipped data (`../shared/datasets` of the repository), or `PIXREG_DATA_DIR`.
pub fn shared_data_dir() -> PathBuf {
    let dir = std::env::var_os("PIXREG_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/datasets"
            ))
        });
    assert!(
        dir.is_dir(),
        "shipped datasets not found at {} (set PIXREG_DATA_DIR)",
        dir.display()
    );
    dir
}

/// The official seed-0 index file (`../shared/specs/official_seed0_indices.json`).
pub fn official_indices_json() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/specs/official_seed0_indices.json"
    ))
}

/// IDX image file bytes for `n` images of `rows`×`cols`.
pub fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        b.extend(v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

/// IDX label file bytes.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

/// Gzips bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Writes a small valid MNIST-like folder (both splits) with `n` 2×3 images per split.
pub fn write_mini_idx(dir: &Path, n: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, offset) in [("train", 0u8), ("t10k", 100u8)] {
        let pixels: Vec<u8> = (0..n * 6).map(|v| (v as u8).wrapping_add(offset)).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let files = [
            (
                format!("{prefix}-images-idx3-ubyte"),
                idx_images(n as u32, 2, 3, &pixels),
            ),
            (format!("{prefix}-labels-idx1-ubyte"), idx_labels(&labels)),
        ];
        for (name, bytes) in files {
            if gz {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// A PNG of `w`×`h` RGB pixels given by `f(x, y)`.
pub fn png_rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The (path, bytes) files of a small image-folder tree: 2 splits × 3 classes, 4×4 PNGs whose
/// red value encodes (split, class, file).
pub fn mini_tree() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (s, split) in ["train", "test"].iter().enumerate() {
        for (c, class) in ["cat", "ant", "bee"].iter().enumerate() {
            for f in 0..(2 + c) {
                let red = (100 * s + 10 * c + f) as u8;
                files.push((
                    format!("{split}/{class}/{f:04}.png"),
                    png_rgb(4, 4, move |x, y| [red, (x * 10) as u8, (y * 10) as u8]),
                ));
            }
        }
    }
    files
}

/// Writes files into a directory tree.
pub fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// A tar archive of files (with directory entries), compressed by the extension of `path`.
pub fn write_tar(path: &Path, prefix: &str, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (name, bytes) in files {
        let full = format!("{prefix}{name}");
        let parent = Path::new(&full)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if dirs.insert(parent.clone()) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_cksum();
            builder
                .append_data(&mut h, format!("{parent}/"), std::io::empty())
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, &full, bytes.as_slice())
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let name = path.to_string_lossy().to_string();
    let bytes = if name.ends_with(".xz") {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(&tar).unwrap();
        enc.finish().unwrap()
    } else if name.ends_with(".gz") {
        gzip(&tar)
    } else {
        tar
    };
    std::fs::write(path, bytes).unwrap();
}
