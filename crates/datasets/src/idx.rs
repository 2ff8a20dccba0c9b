//! IDX files (MNIST, Fashion-MNIST), gzipped or raw, with canonical names.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::name::{DatasetName, Split};
use crate::ImageSet;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The canonical file stems of a split: (images, labels).
pub fn canonical_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// Finds `dir/stem.gz`, else `dir/stem`; the error names the `.gz` path.
pub fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    let raw = dir.join(stem);
    if gz.is_file() {
        Ok(gz)
    } else if raw.is_file() {
        Ok(raw)
    } else {
        Err(Error::MissingFile {
            path: gz,
            hint: format!(" (nor {})", raw.display()),
        })
    }
}

/// Whether the canonical files of both splits are present in `dir`.
pub fn dir_has_dataset(dir: &Path) -> bool {
    [Split::Train, Split::Test].into_iter().all(|s| {
        let (i, l) = canonical_names(s);
        find_file(dir, i).is_ok() && find_file(dir, l).is_ok()
    })
}

/// Largest IDX payload read (2 GiB; EMNIST's largest file is 0.7 GB): a header announcing
/// more is corrupt or hostile, and is refused before anything is allocated.
pub const MAX_IDX_BYTES: u64 = 2 << 30;

/// Reads an IDX file, gunzipping it when its name ends in `.gz`, as a stream: the header is
/// read first, and at most the payload it announces plus one byte is inflated (one more byte
/// proves the file too long), so a small `.gz` that inflates to gigabytes costs nothing.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let read_error = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Truncated {
            path: path.to_path_buf(),
            what: format!("stream ends early ({e})"),
        },
        _ if gz => Error::format(path, format!("invalid gzip data: {e}")),
        _ => Error::io(path, e),
    };
    let mut header = Vec::with_capacity(24);
    (&mut reader)
        .take(4)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    // Byte 2 is the element type (0x08 = ubyte), byte 3 the number of dimensions; anything
    // else is left to the magic check of the parser.
    let dims = match header.as_slice() {
        [0, 0, 0x08, d @ 1..=4] => usize::from(*d),
        _ => return Ok(header),
    };
    (&mut reader)
        .take(4 * dims as u64)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    if header.len() < 4 + 4 * dims {
        return Ok(header);
    }
    let payload = header[4..]
        .chunks_exact(4)
        .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        .try_fold(1u64, u64::checked_mul)
        .filter(|&n| n <= MAX_IDX_BYTES)
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "the header announces more than {} GiB of data: corrupt, or not an IDX file",
                    MAX_IDX_BYTES >> 30
                ),
            )
        })?;
    let mut bytes = header;
    bytes.reserve_exact(payload as usize + 1);
    reader
        .take(payload + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}

fn be_u32(bytes: &[u8], at: usize, path: &Path) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::Truncated {
            path: path.to_path_buf(),
            what: format!("{} bytes, too short for the IDX header", bytes.len()),
        })
}

fn check_magic(bytes: &[u8], expected: u32, what: &'static str, path: &Path) -> Result<()> {
    let found = be_u32(bytes, 0, path)?;
    if found == expected {
        Ok(())
    } else {
        Err(Error::BadMagic {
            path: path.to_path_buf(),
            found,
            expected,
            what,
        })
    }
}

fn check_payload(bytes: &[u8], header: usize, expected: usize, path: &Path) -> Result<()> {
    let found = bytes.len() - header;
    match found.cmp(&expected) {
        std::cmp::Ordering::Less => Err(Error::Truncated {
            path: path.to_path_buf(),
            what: format!("header announces {expected} data bytes, file holds {found}"),
        }),
        std::cmp::Ordering::Greater => Err(Error::format(
            path,
            format!("data continues after the {expected} bytes the header announces"),
        )),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Parses an IDX image file: returns `(n, rows, cols, pixels)`, the pixels reusing the file's
/// buffer (no copy).
pub fn parse_images(mut bytes: Vec<u8>, path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    check_magic(
        &bytes,
        IMAGES_MAGIC,
        "IDX images: ubyte, 3 dimensions",
        path,
    )?;
    let n = be_u32(&bytes, 4, path)? as usize;
    let rows = be_u32(&bytes, 8, path)? as usize;
    let cols = be_u32(&bytes, 12, path)? as usize;
    if rows == 0 || cols == 0 {
        return Err(Error::format(path, format!("bad image size {rows}x{cols}")));
    }
    let expected = n
        .checked_mul(rows * cols)
        .ok_or_else(|| Error::format(path, format!("absurd dimensions {n}x{rows}x{cols}")))?;
    check_payload(&bytes, 16, expected, path)?;
    bytes.drain(..16);
    Ok((n, rows, cols, bytes))
}

/// Parses an IDX label file and checks every label is `< num_classes`.
pub fn parse_labels(bytes: &[u8], num_classes: usize, path: &Path) -> Result<Vec<u32>> {
    check_magic(bytes, LABELS_MAGIC, "IDX labels: ubyte, 1 dimension", path)?;
    let n = be_u32(bytes, 4, path)? as usize;
    check_payload(bytes, 8, n, path)?;
    bytes[8..]
        .iter()
        .enumerate()
        .map(|(index, &l)| {
            if usize::from(l) < num_classes {
                Ok(u32::from(l))
            } else {
                Err(Error::LabelOutOfRange {
                    path: path.to_path_buf(),
                    index,
                    label: u64::from(l),
                    num_classes,
                })
            }
        })
        .collect()
}

/// Reads an image file and a label file (each `.gz` or raw) into a 1-channel [`ImageSet`].
pub fn read_pair(
    dataset: DatasetName,
    images_path: &Path,
    labels_path: &Path,
    num_classes: usize,
) -> Result<ImageSet> {
    let (n, height, width, images) = parse_images(read_maybe_gz(images_path)?, images_path)?;
    let labels = parse_labels(&read_maybe_gz(labels_path)?, num_classes, labels_path)?;
    if labels.len() != n {
        return Err(Error::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: n,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Ok(ImageSet {
        dataset,
        images,
        labels,
        coarse_labels: None,
        num_classes,
        n,
        channels: 1,
        height,
        width,
    })
}

/// Reads one split of an IDX dataset from `dir` (canonical names, `.gz` preferred).
pub fn read_split(dataset: DatasetName, dir: &Path, split: Split) -> Result<ImageSet> {
    let (images, labels) = canonical_names(split);
    read_pair(
        dataset,
        &find_file(dir, images)?,
        &find_file(dir, labels)?,
        10,
    )
}
