//! `cargo xtask fetch-data`: downloads datasets from their public sources into a data
//! directory and verifies them before they are put in place.
//!
//! Where each dataset comes from is declared in `experiments/datasets.toml` (`download`
//! tables: base URLs tried in order, file names, how to unpack). Every download is unpacked
//! into a staging folder beside the data directory, checked, and only then moved into place,
//! so an interrupted or corrupted download never leaves a dataset the loaders would read:
//! - files named in the shipped `SHA256SUMS` ([`Checksums::shipped`], the same list the
//!   loaders verify on first use) must match it. For MNIST and Fashion-MNIST the list holds
//!   the sha256 of the *uncompressed* IDX files: the canonical `.gz` files are gunzipped on
//!   arrival, so a copy re-gzipped by a mirror (as ours is) verifies the same;
//! - a `tree_sha256` checks a whole folder of files no list names one by one (the 60 000
//!   JPEGs of the CIFAR-10 copy): the sha256 of `sha256sum`'s output for its files sorted by
//!   path, i.e. `find train test -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`;
//! - a dataset with neither (CIFAR-10/100 binaries, whose canonical archives were never on the
//!   machine that wrote the list) is fetched and reported as not verified.
//!
//! Offline, each failure names the URLs tried and says where to put a file fetched by hand.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pixreg_datasets::checksum::{sha256_file, Checksums};
use pixreg_datasets::DatasetName;
use sha2::{Digest, Sha256};

use crate::catalogue::{DatasetInfo, DownloadSpec, Unpack};

/// What `fetch-data` does.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Data directory (created when missing).
    pub data_dir: PathBuf,
    /// A base URL tried instead of the declared ones (a mirror, or a test server).
    pub from: Option<String>,
    /// Download timeout per file, in seconds.
    pub timeout_s: u64,
}

/// What happened to one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Already in the data directory; `verified` files matched the shipped checksums.
    Present {
        /// Files checked against `SHA256SUMS`.
        verified: usize,
    },
    /// Downloaded and put in place; `verified` files or folders matched their checksums.
    Downloaded {
        /// Files and folders checked (0: nothing shipped to check them against).
        verified: usize,
    },
}

/// Fetches (or checks) one dataset. The error says which URL failed and, offline, where to
/// put the file fetched by hand.
pub fn fetch_dataset(
    name: DatasetName,
    info: &DatasetInfo,
    opts: &FetchOptions,
) -> Result<Fetched> {
    let data_dir = &opts.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    if let Some(source) = pixreg_datasets::find_local(name, data_dir)? {
        let verified = match source.folder_in(data_dir) {
            Some(folder) => {
                Checksums::shipped().verify_folder(data_dir, &folder)?;
                listed_files_present(data_dir, &folder)
            }
            None => 0,
        };
        return Ok(Fetched::Present { verified });
    }
    let Some(spec) = &info.download else {
        bail!(
            "{name}: no public download is declared; {}",
            by_hand(info, data_dir)
        );
    };
    let staging = tempfile::Builder::new()
        .prefix(&format!(".fetch-{name}-"))
        .tempdir_in(data_dir)
        .with_context(|| format!("cannot create a staging folder in {}", data_dir.display()))?;
    let unpacked = staging.path().join("unpacked");
    let into = safe_relative(&spec.into)?;
    let dest_root = unpacked.join(&into);
    std::fs::create_dir_all(&dest_root)?;
    let bases: Vec<&str> = match &opts.from {
        Some(from) => vec![from.as_str()],
        None => spec.base_urls.iter().map(String::as_str).collect(),
    };
    // One client (one connection pool) for all of a dataset's files.
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(opts.timeout_s))
        .build()
        .context("cannot start an HTTP client")?;
    for file in &spec.files {
        let download = staging.path().join(file);
        fetch_first(&client, &bases, file, &download).map_err(|err| {
            anyhow::anyhow!(
                "{name}: cannot download {err:#}; {}",
                by_hand(info, data_dir)
            )
        })?;
        unpack(spec, &download, &dest_root)
            .with_context(|| format!("{name}: cannot unpack {file}"))?;
        std::fs::remove_file(&download).ok();
    }
    let verified = verify_staged(spec, &unpacked, &into)?;
    move_into_place(&dest_root, &data_dir.join(&into))?;
    if pixreg_datasets::find_local(name, data_dir)?.is_none() {
        bail!(
            "{name}: the downloaded files are not the layout the loader expects; {}",
            by_hand(info, data_dir)
        );
    }
    Ok(Fetched::Downloaded { verified })
}

fn by_hand(info: &DatasetInfo, data_dir: &Path) -> String {
    format!(
        "to fetch it by hand: {}",
        info.how_to_get
            .replace("<data-dir>", &data_dir.display().to_string())
    )
}

/// Listed files of `folder` that exist (what [`Checksums::verify_folder`] checked).
fn listed_files_present(data_dir: &Path, folder: &str) -> usize {
    Checksums::shipped()
        .under(folder)
        .filter(|(rel, _)| data_dir.join(rel).is_file())
        .count()
}

/// A relative path without `..` or a root (archive members and `into` values).
fn safe_relative(path: &str) -> Result<PathBuf> {
    let path = Path::new(path);
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => bail!("unsafe path `{}` in a download", path.display()),
        }
    }
    Ok(out)
}

fn fetch_first(
    client: &reqwest::blocking::Client,
    bases: &[&str],
    file: &str,
    to: &Path,
) -> Result<()> {
    let mut failures = Vec::new();
    for base in bases {
        let url = format!("{}/{file}", base.trim_end_matches('/'));
        eprintln!("fetch-data: downloading {url}");
        match download(client, &url, to) {
            Ok(bytes) => {
                eprintln!("fetch-data: {bytes} bytes from {url}");
                return Ok(());
            }
            Err(err) => failures.push(format!("{url}: {err:#}")),
        }
    }
    bail!("{}", failures.join("; "))
}

fn download(client: &reqwest::blocking::Client, url: &str, to: &Path) -> Result<u64> {
    let mut response = client.get(url).send()?.error_for_status()?;
    let announced = response.content_length();
    let mut file = File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    let bytes = response.copy_to(&mut file)?;
    if let Some(expected) = announced {
        if expected != bytes {
            bail!("truncated: {bytes} of {expected} bytes");
        }
    }
    file.sync_all()?;
    Ok(bytes)
}

fn unpack(spec: &DownloadSpec, download: &Path, dest: &Path) -> Result<()> {
    let open =
        || File::open(download).with_context(|| format!("cannot open {}", download.display()));
    let name = download
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match spec.unpack {
        Unpack::None => {
            std::fs::copy(download, dest.join(&name))?;
        }
        Unpack::Gunzip => {
            let out = dest.join(name.strip_suffix(".gz").unwrap_or(&name));
            let mut decoder = flate2::read::GzDecoder::new(open()?);
            let mut file = File::create(&out)?;
            std::io::copy(&mut decoder, &mut file)
                .with_context(|| format!("{name} is not a valid gzip file"))?;
            file.flush()?;
        }
        Unpack::TarGz => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(open()?));
            for entry in archive.entries()? {
                let mut entry = entry?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let member = entry.path()?.to_string_lossy().into_owned();
                if let Some(rel) = kept_member(spec, &member)? {
                    write_member(&mut entry, &dest.join(rel))?;
                }
            }
        }
        Unpack::Zip => {
            let mut archive = zip::ZipArchive::new(open()?)?;
            for i in 0..archive.len() {
                let mut entry = archive.by_index(i)?;
                if !entry.is_file() {
                    continue;
                }
                let member = entry.name()?.to_string();
                if let Some(rel) = kept_member(spec, &member)? {
                    write_member(&mut entry, &dest.join(rel))?;
                }
            }
        }
    }
    Ok(())
}

/// The member's path after `strip_components`, when `keep` selects it.
fn kept_member(spec: &DownloadSpec, member: &str) -> Result<Option<PathBuf>> {
    let rel = safe_relative(member)?;
    let stripped: PathBuf = rel.components().skip(spec.strip_components).collect();
    if stripped.as_os_str().is_empty() {
        return Ok(None);
    }
    let text = stripped.to_string_lossy();
    let kept = spec.keep.is_empty() || spec.keep.iter().any(|k| text.starts_with(k.as_str()));
    Ok(kept.then_some(stripped))
}

fn write_member(reader: &mut impl Read, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    std::io::copy(reader, &mut file)?;
    Ok(())
}

/// Checks the staged files: those `SHA256SUMS` names, and each `tree_sha256` folder.
fn verify_staged(spec: &DownloadSpec, unpacked: &Path, into: &Path) -> Result<usize> {
    let folder = into.to_string_lossy();
    let listed = if folder.is_empty() {
        // A download into the data directory itself (an archive holding its own folder).
        let mut tops: Vec<String> = std::fs::read_dir(unpacked)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        tops.sort();
        tops
    } else {
        vec![folder.into_owned()]
    };
    let mut verified = 0;
    for top in &listed {
        Checksums::shipped()
            .verify_folder(unpacked, top)
            .map_err(|err| match err {
                pixreg_datasets::Error::ChecksumMismatch {
                    path,
                    expected,
                    found,
                } => anyhow::anyhow!(
                    "{}: sha256 mismatch (expected {expected}, found {found}): the download is \
                     corrupt or not the file the project verified; nothing was written",
                    path.strip_prefix(unpacked).unwrap_or(&path).display()
                ),
                other => other.into(),
            })?;
        verified += listed_files_present(unpacked, top);
    }
    for (sub, expected) in &spec.tree_sha256 {
        let root = unpacked.join(into).join(safe_relative(sub)?);
        let found = tree_sha256(&root, sub)?;
        if &found != expected {
            bail!(
                "{}: sha256 mismatch of the folder's listing (expected {expected}, found {found})",
                into.join(sub).display()
            );
        }
        verified += 1;
    }
    Ok(verified)
}

/// Sha256 of `sha256sum`'s output for every file under `root`, sorted by path (bytewise),
/// paths written relative to `root` and prefixed with `<label>/` unless `label` is `.`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a"), b"")?;
/// // The same as `cd dir && find . -type f | sed 's|^./||' | xargs sha256sum | sha256sum`.
/// let digest = xtask::fetch::tree_sha256(dir.path(), ".")?;
/// assert_eq!(digest, "fba1930570cf2d33a2a05ff43a4fea532382611f43876988fc9c31fd9ce102d1");
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn tree_sha256(root: &Path, label: &str) -> Result<String> {
    let mut files = Vec::new();
    collect_files(root, &mut files)?;
    let prefix = match label {
        "" | "." => String::new(),
        label => format!("{}/", label.trim_end_matches('/')),
    };
    let mut lines: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            (format!("{prefix}{}", rel.to_string_lossy()), path)
        })
        .collect();
    lines.sort();
    let mut hasher = Sha256::new();
    for (name, path) in &lines {
        hasher.update(format!("{}  {name}\n", sha256_file(path)?));
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Moves every entry of `staged` into `dest`, refusing to overwrite anything there.
fn move_into_place(staged: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let entries: Vec<_> = std::fs::read_dir(staged)?.filter_map(|e| e.ok()).collect();
    for entry in &entries {
        let target = dest.join(entry.file_name());
        if target.exists() {
            bail!(
                "{} exists but the dataset there is incomplete; move it away and run again",
                target.display()
            );
        }
    }
    for entry in entries {
        let target = dest.join(entry.file_name());
        std::fs::rename(entry.path(), &target)
            .with_context(|| format!("cannot move the download to {}", target.display()))?;
    }
    Ok(())
}
