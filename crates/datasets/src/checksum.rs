//! Checksums of the data files: every file a loader reads that the shipped list names
//! ([`SHIPPED_SHA256SUMS`]: the project's `../shared/datasets/SHA256SUMS`, followed by the
//! uncompressed MNIST and Fashion-MNIST IDX files, which `cargo xtask fetch-data` writes from the
//! canonical `.gz` files and which equal the published md5s) is checked against its sha256
//! before it is used, so a corrupted or substituted copy fails with one line
//! naming the file instead of training on wrong data.
//!
//! Hashing the 80 MB of shipped data takes about a second; a verdict is cached by file size
//! and modification time (in `$PIXREG_CACHE_DIR`, else `$XDG_CACHE_HOME/pixreg`, else
//! `~/.cache/pixreg`), so later loads cost one `stat` per file. Files the list does not name
//! (a dataset fetched elsewhere, CIFAR-100) are not checked; [`LoadOptions::verify`] turns the
//! check off (`--no-verify`, `PIXREG_NO_VERIFY=1`).
//!
//! ```
//! use pixreg_datasets::checksum::Checksums;
//!
//! let sums = Checksums::parse("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  mnist/empty\n")?;
//! assert_eq!(sums.under("mnist").count(), 1);
//! # Ok::<(), pixreg_datasets::Error>(())
//! ```
//!
//! [`LoadOptions::verify`]: crate::LoadOptions::verify

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The checksum list shipped with the crate (paths relative to the data directory).
pub const SHIPPED_SHA256SUMS: &str = include_str!("../SHA256SUMS");

/// Environment variable that turns verification off when set to `1`.
pub const NO_VERIFY_ENV: &str = "PIXREG_NO_VERIFY";

/// Whether loaders verify by default: unless `PIXREG_NO_VERIFY=1`.
pub fn verify_by_default() -> bool {
    std::env::var_os(NO_VERIFY_ENV).is_none_or(|v| v != "1")
}

/// Environment variable naming the folder of the verdict cache.
pub const CACHE_DIR_ENV: &str = "PIXREG_CACHE_DIR";

/// A parsed `SHA256SUMS` (`<hex>  <path>` per line).
#[derive(Debug, Clone, Default)]
pub struct Checksums {
    entries: BTreeMap<String, String>,
}

impl Checksums {
    /// Parses `sha256sum` output.
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (hex, path) = line
                .split_once("  ")
                .filter(|(h, p)| h.len() == 64 && !p.is_empty())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "SHA256SUMS line {}: expected `<sha256>  <path>`",
                        n + 1
                    ))
                })?;
            entries.insert(path.to_string(), hex.to_ascii_lowercase());
        }
        Ok(Self { entries })
    }

    /// The shipped list.
    pub fn shipped() -> &'static Checksums {
        static SHIPPED: std::sync::OnceLock<Checksums> = std::sync::OnceLock::new();
        SHIPPED.get_or_init(|| Checksums::parse(SHIPPED_SHA256SUMS).unwrap_or_default())
    }

    /// Entries whose path lies under `folder/` (relative to the data directory).
    pub fn under<'a>(&'a self, folder: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        let prefix = format!("{folder}/");
        self.entries
            .iter()
            .filter(move |(p, _)| p.starts_with(&prefix))
            .map(|(p, h)| (p.as_str(), h.as_str()))
    }

    /// Checks every listed file under `data_dir/folder/` that exists (a loader may read only
    /// some of them, e.g. raw IDX files beside the `.gz` ones). A mismatch is an error naming
    /// the file.
    pub fn verify_folder(&self, data_dir: &Path, folder: &str) -> Result<()> {
        let mut cache = VerdictCache::load();
        let pending: Vec<(PathBuf, &str, FileStamp)> = self
            .under(folder)
            .filter_map(|(rel, hex)| {
                let path = data_dir.join(rel);
                let stamp = FileStamp::of(&path)?;
                (!cache.knows(&path, hex, stamp)).then_some((path, hex, stamp))
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let results: Vec<Result<()>> = pending
            .par_iter()
            .map(|(path, hex, _)| {
                let found = sha256_file(path)?;
                if found == *hex {
                    Ok(())
                } else {
                    Err(Error::ChecksumMismatch {
                        path: path.clone(),
                        expected: hex.to_string(),
                        found,
                    })
                }
            })
            .collect();
        for ((path, hex, stamp), result) in pending.iter().zip(&results) {
            if result.is_ok() {
                cache.record(path, hex, *stamp);
            }
        }
        cache.save();
        results.into_iter().collect()
    }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Size and modification time of a file: a cached verdict holds while both are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: u128,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let mtime_ns = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        Some(Self {
            size: meta.len(),
            mtime_ns,
        })
    }
}

/// Verified files: `sha256 \t size \t mtime_ns \t path` lines. Best effort: an unreadable or
/// unwritable cache only means hashing again next time.
struct VerdictCache {
    file: Option<PathBuf>,
    entries: BTreeMap<PathBuf, (String, FileStamp)>,
    changed: bool,
}

impl VerdictCache {
    fn dir() -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env(CACHE_DIR_ENV)
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("pixreg")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("pixreg")))
    }

    fn load() -> Self {
        let file = Self::dir().map(|d| d.join("verified-sha256.tsv"));
        let mut entries = BTreeMap::new();
        if let Some(text) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines() {
                let parts: Vec<&str> = line.splitn(4, '\t').collect();
                if let [hex, size, mtime, path] = parts[..] {
                    if let (Ok(size), Ok(mtime_ns)) = (size.parse(), mtime.parse()) {
                        entries.insert(
                            PathBuf::from(path),
                            (hex.to_string(), FileStamp { size, mtime_ns }),
                        );
                    }
                }
            }
        }
        Self {
            file,
            entries,
            changed: false,
        }
    }

    fn key(path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }

    fn knows(&self, path: &Path, hex: &str, stamp: FileStamp) -> bool {
        self.entries
            .get(&Self::key(path))
            .is_some_and(|(h, s)| h == hex && *s == stamp)
    }

    fn record(&mut self, path: &Path, hex: &str, stamp: FileStamp) {
        self.entries
            .insert(Self::key(path), (hex.to_string(), stamp));
        self.changed = true;
    }

    fn save(&self) {
        let Some(file) = self.file.as_ref().filter(|_| self.changed) else {
            return;
        };
        let mut text = String::new();
        for (path, (hex, s)) in &self.entries {
            text.push_str(&format!(
                "{hex}\t{}\t{}\t{}\n",
                s.size,
                s.mtime_ns,
                path.display()
            ));
        }
        let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, file));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
