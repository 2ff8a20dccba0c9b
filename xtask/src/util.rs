//! Small helpers shared by the modules.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `contents` to `path` atomically (temporary file in the same folder, then rename), so
/// an interrupted `reproduce` never leaves a half-written table, figure or sidecar.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// `path` relative to `base` when it lies under it (or beside it, as `../x`), else unchanged;
/// keeps generated scripts and manifests free of machine-specific absolute paths.
pub fn relative_to(path: &Path, base: &Path) -> std::path::PathBuf {
    if let Ok(rel) = path.strip_prefix(base) {
        return if rel.as_os_str().is_empty() {
            ".".into()
        } else {
            rel.to_path_buf()
        };
    }
    if let (Some(parent), Ok(rel)) = (
        base.parent(),
        path.strip_prefix(base.parent().unwrap_or(base)),
    ) {
        if parent.as_os_str().len() > 1 {
            return Path::new("..").join(rel);
        }
    }
    path.to_path_buf()
}

/// Human-readable duration (`1h02m`, `3m05s`, `42s`).
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
