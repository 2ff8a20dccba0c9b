//! Where a result came from: the checkpoint it evaluated (path and sha256), the pixreg
//! version and git commit that evaluated it, and when. Every entry of `results.json` carries
//! one, so a table can refuse to put side by side numbers of different models.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of this pixreg (`Cargo.toml`).
pub const PIXREG_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Git commit this binary was built from, `-dirty` when the tree had uncommitted changes
/// (`unknown` outside a git checkout); see `build.rs`.
pub const GIT_COMMIT: &str = env!("PIXREG_GIT_COMMIT");

/// What `pixreg train` adds to the architecture in every checkpoint's safetensors
/// `__metadata__`: the input scaling the model was trained with (`x = scale·u + offset` of
/// unit-range pixels `u = byte / 255`, as JSON `{"scale": s, "offset": o}`), the pixreg
/// version and git commit that wrote it.
pub fn checkpoint_metadata(scale: pixreg_datasets::ModelScale) -> Vec<(String, String)> {
    vec![
        (
            "input_scaling".into(),
            serde_json::json!({ "scale": scale.scale, "offset": scale.offset }).to_string(),
        ),
        (
            "input_scaling_rule".into(),
            "x = scale * u + offset, u = pixel / 255 in [0, 1]".into(),
        ),
        ("pixreg_version".into(), PIXREG_VERSION.into()),
        ("git_commit".into(), GIT_COMMIT.into()),
    ]
}

/// Lowercase hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The current time as RFC 3339 UTC, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The provenance of one result entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Checkpoint evaluated, relative to the run folder.
    pub checkpoint: String,
    /// Its sha256.
    pub checkpoint_sha256: String,
    /// The epoch it was saved after.
    pub epoch: usize,
    /// pixreg version of the evaluation.
    pub pixreg_version: String,
    /// Git commit of the evaluating binary.
    pub git_commit: String,
    /// When the evaluation ended (RFC 3339, UTC).
    pub evaluated_at: String,
    /// True when the run was still training: the checkpoint is the best *so far*.
    pub provisional: bool,
}

impl Provenance {
    /// The provenance of an evaluation of `checkpoint` (saved after `epoch`) ending now.
    pub fn now(checkpoint: &str, checkpoint_sha256: &str, epoch: usize, provisional: bool) -> Self {
        Self {
            checkpoint: checkpoint.to_string(),
            checkpoint_sha256: checkpoint_sha256.to_string(),
            epoch,
            pixreg_version: PIXREG_VERSION.to_string(),
            git_commit: GIT_COMMIT.to_string(),
            evaluated_at: now_rfc3339(),
            provisional,
        }
    }
}
