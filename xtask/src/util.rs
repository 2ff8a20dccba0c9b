//! Small helpers shared by the modules.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `contents` to `path` atomically (the runner's temporary-file-then-rename, which
/// also creates the folder), so an interrupted `reproduce` never leaves a half-written table,
/// figure or sidecar.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    pixreg_runner::output::write_atomically(path, |tmp| {
        std::fs::write(tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))
    })
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
