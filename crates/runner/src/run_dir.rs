//! A run as a folder: `runs/<id>/` holds everything one experiment produced, so runs can be
//! inspected, compared, re-evaluated and resumed.
//!
//! ```text
//! runs/<id>/
//!   config.toml                 resolved config (the id is its hash)
//!   metrics.jsonl               one JSON object per evaluated epoch (0 = before training)
//!   checkpoints/last.safetensors, best.safetensors, model.json
//!   optimizer.safetensors       SGD momentum buffers of the last epoch
//!   state.json                  progress: completed epochs, best epoch, sampler position
//!   results.json                final evaluation
//!   log.txt                     training log
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::output::write_text;

/// Paths of one run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Training started and has not completed every epoch.
    Running,
    /// Every epoch is trained; the final evaluation has not completed.
    Trained,
    /// Trained and evaluated.
    Finished,
}

/// Position of the pair sampler, saved so a resumed run draws the same pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    /// Sampler seed.
    pub seed: u64,
    /// Completed passes.
    pub pass: u64,
    /// Batches drawn in the current pass.
    pub batch_in_pass: u64,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Progress.
    pub status: RunStatus,
    /// Epochs trained so far.
    pub completed_epochs: usize,
    /// Epoch of the best checkpoint (0 = untrained).
    pub best_epoch: usize,
    /// Its validation loss.
    pub best_valid_loss: f64,
    /// Pair sampler position after the last completed epoch.
    pub sampler: Option<SamplerPosition>,
    /// Seed of the run.
    pub seed: u64,
    /// Wall time spent training (all sessions).
    pub train_seconds: f64,
    /// Seconds the regularization images, similarities and pair targets took to prepare (in
    /// the last session); absent without a regularizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_seconds: Option<f64>,
    /// Peak resident memory of the training process in MiB (the largest over sessions);
    /// absent where the system does not report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), in MiB;
/// `None` where `/proc` does not exist.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
}

impl RunDir {
    /// The folder `runs_dir/id`.
    pub fn new(runs_dir: &Path, id: &str) -> Self {
        Self {
            root: runs_dir.join(id),
        }
    }

    /// An existing run folder.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("config.toml").is_file() {
            anyhow::bail!("{} is not a run folder (no config.toml)", root.display());
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Creates the folder and its `checkpoints/`.
    pub fn create(&self) -> Result<()> {
        fs::create_dir_all(self.checkpoints())
            .with_context(|| format!("cannot create run folder {}", self.root.display()))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The run id (folder name).
    pub fn id(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    /// `checkpoints/best.safetensors`.
    pub fn best_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }
    /// `checkpoints/model.json`.
    pub fn model_json(&self) -> PathBuf {
        self.checkpoints().join(pixreg_models::CONFIG_FILE_NAME)
    }
    /// `optimizer.safetensors`.
    pub fn optimizer(&self) -> PathBuf {
        self.root.join("optimizer.safetensors")
    }
    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// `results.json`.
    pub fn results(&self) -> PathBuf {
        self.root.join("results.json")
    }
    /// `log.txt`.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("log.txt")
    }

    /// The saved state, if any.
    pub fn state(&self) -> Result<Option<RunState>> {
        let path = self.state_path();
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path)?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        Ok(Some(state))
    }

    /// Writes `state.json` atomically.
    pub fn save_state(&self, state: &RunState) -> Result<()> {
        write_text(&self.state_path(), &serde_json::to_string_pretty(state)?)
    }

    /// The metric lines of epochs `0..=last_epoch` (later lines belong to an interrupted epoch).
    pub fn metric_lines(&self, last_epoch: usize) -> Result<Vec<serde_json::Value>> {
        let path = self.metrics();
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let mut lines = Vec::new();
        for (n, line) in fs::read_to_string(&path)?.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{} line {} is corrupt", path.display(), n + 1))?;
            if value["epoch"]
                .as_u64()
                .is_some_and(|e| e as usize <= last_epoch)
            {
                lines.push(value);
            }
        }
        Ok(lines)
    }

    /// Rewrites `metrics.jsonl` atomically with `lines`.
    pub fn save_metrics(&self, lines: &[serde_json::Value]) -> Result<()> {
        let mut text = String::new();
        for line in lines {
            text.push_str(&serde_json::to_string(line)?);
            text.push('\n');
        }
        write_text(&self.metrics(), &text)
    }

    /// Appends one line to `log.txt` (a log, not a result: appending is fine).
    pub fn log(&self, line: &str) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(file, "{line}")?;
        Ok(())
    }
}
