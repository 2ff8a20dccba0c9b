//! A run as a folder: `runs/<id>/` holds everything one experiment produced, so runs can be
//! inspected, compared, re-evaluated and resumed.
//!
//! ```text
//! runs/<id>/
//!   config.toml                          resolved config (the id is its hash)
//!   metrics.jsonl                        one JSON object per evaluated epoch (0 = untrained)
//!   steps.jsonl                          scalars of every `display_every`-th step
//!   events.out.tfevents.pixreg           both as a TensorBoard event file
//!   checkpoints/model.json               architecture
//!   checkpoints/last-EEEE.safetensors    weights after epoch EEEE (the last committed one)
//!   checkpoints/optimizer-EEEE.safetensors  SGD momentum buffers after epoch EEEE
//!   checkpoints/best-EEEE.safetensors    weights of the epoch with the lowest validation loss
//!   state.json                           the commit record: completed epochs, best epoch,
//!                                        sampler position, layout version
//!   results.json                         evaluation of the best checkpoint, with provenance
//!   log.txt                              training log
//! runs/.<id>.lock                        held (flock) by the one process working on the run
//! ```
//!
//! # The epoch commit
//! An epoch writes its files under names that carry the epoch number, each atomically
//! (temporary file + rename), then `metrics.jsonl`, and commits them all with one rename of
//! `state.json`, which names the epoch. Only then are the previous epoch's files removed.
//! Whatever instant a crash hits, the committed `state.json` names files that exist and
//! belong together; files of an epoch that was not committed (and temporary files of a
//! killed write) are removed by the next start ([`RunDir::remove_uncommitted`]), and metric
//! and step lines after the committed epoch are ignored and dropped. So a resumed run retrains exactly
//! the uncommitted epoch from exactly the committed weights, momentum and sampler position,
//! and ends bit-identical to an uninterrupted run (tests/train.rs kills a real process at
//! every step of the commit).
//!
//! Folders written before this layout (`state.json` without `layout`) used fixed names
//! (`last.safetensors`, `optimizer.safetensors`, `best.safetensors`) renamed one by one; a
//! trained one is migrated on first use, an unfinished one cannot be resumed exactly and is
//! refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::output::write_text;
use crate::results::EpochMetrics;

/// Layout version written to `state.json` by this pixreg (see the module docs).
pub const RUN_LAYOUT: u32 = 2;

/// Layout of a `state.json` that has no `layout` field: the fixed-name files of pixreg 0.1.
const LEGACY_LAYOUT: u32 = 1;

fn legacy_layout() -> u32 {
    LEGACY_LAYOUT
}

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

/// `state.json`: the commit record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// File layout of the folder ([`RUN_LAYOUT`]; 1 for folders of pixreg 0.1).
    #[serde(default = "legacy_layout")]
    pub layout: u32,
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

/// The exclusive lock of one run folder, held for as long as this value lives (and released
/// by the kernel when the process dies, however it dies).
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

/// The files a committed `state.json` says the run consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFiles {
    /// Weights after the last completed epoch (none before the first).
    pub last: Option<PathBuf>,
    /// Momentum buffers after the last completed epoch (none before the first).
    pub optimizer: Option<PathBuf>,
    /// The best checkpoint.
    pub best: PathBuf,
}

impl CommittedFiles {
    fn contains(&self, path: &Path) -> bool {
        self.last.as_deref() == Some(path)
            || self.optimizer.as_deref() == Some(path)
            || self.best == path
    }
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
            bail!("{} is not a run folder (no config.toml)", root.display());
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

    /// Removes the folder and everything in it (a run that never committed an epoch).
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.root.display()))
            }
            _ => Ok(()),
        }
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
    /// `steps.jsonl` ([`crate::curves::StepScalars`] lines).
    pub fn steps(&self) -> PathBuf {
        self.root.join("steps.jsonl")
    }
    /// The TensorBoard event file ([`crate::curves`]).
    pub fn events(&self) -> PathBuf {
        self.root.join("events.out.tfevents.pixreg")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last-EEEE.safetensors`: the weights after `epoch`.
    pub fn last_checkpoint_at(&self, epoch: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("last-{epoch:04}.safetensors"))
    }
    /// `checkpoints/optimizer-EEEE.safetensors`: the momentum buffers after `epoch`.
    pub fn optimizer_at(&self, epoch: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("optimizer-{epoch:04}.safetensors"))
    }
    /// `checkpoints/best-EEEE.safetensors`: the weights of `epoch`, the best so far.
    pub fn best_checkpoint_at(&self, epoch: usize) -> PathBuf {
        self.checkpoints()
            .join(format!("best-{epoch:04}.safetensors"))
    }
    /// `checkpoints/model.json`.
    pub fn model_json(&self) -> PathBuf {
        self.checkpoints().join(pixreg_models::CONFIG_FILE_NAME)
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
    /// The lock file, beside the folder so that the folder itself can be removed under it.
    pub fn lock_path(&self) -> PathBuf {
        let name = format!(".{}.lock", self.id());
        self.root.with_file_name(name)
    }

    /// Takes the run's exclusive lock, or fails at once when another process holds it.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.lock_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the run lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => bail!(
                "run {} is in use by another pixreg process (it holds {}); wait for it to end \
                 or stop it",
                self.root.display(),
                path.display()
            ),
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// The saved state, if any.
    pub fn state(&self) -> Result<Option<RunState>> {
        let path = self.state_path();
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", path.display()))?;
        Ok(Some(state))
    }

    /// Commits `state` (one atomic rename of `state.json`).
    pub fn save_state(&self, state: &RunState) -> Result<()> {
        write_text(&self.state_path(), &serde_json::to_string_pretty(state)?)
    }

    /// The files `state` commits.
    pub fn committed_files(&self, state: &RunState) -> CommittedFiles {
        if state.layout == LEGACY_LAYOUT {
            return CommittedFiles {
                last: Some(self.checkpoints().join("last.safetensors")),
                optimizer: Some(self.root.join("optimizer.safetensors")),
                best: self.checkpoints().join("best.safetensors"),
            };
        }
        let trained = state.completed_epochs > 0;
        CommittedFiles {
            last: trained.then(|| self.last_checkpoint_at(state.completed_epochs)),
            optimizer: trained.then(|| self.optimizer_at(state.completed_epochs)),
            best: self.best_checkpoint_at(state.best_epoch),
        }
    }

    /// The committed best checkpoint of a trained (or training) run.
    pub fn best_checkpoint(&self) -> Result<PathBuf> {
        let state = self.state()?.with_context(|| {
            format!(
                "{} has no state.json: no epoch of this run was committed",
                self.root.display()
            )
        })?;
        let best = self.committed_files(&state).best;
        if !best.is_file() {
            bail!(
                "{} is missing: state.json of {} names it as the best checkpoint",
                best.display(),
                self.root.display()
            );
        }
        Ok(best)
    }

    /// Checks that every file `state` commits that the run still needs exists: a resume
    /// needs them all (without the momentum buffers it would silently train a different
    /// model); a run with every epoch trained is only evaluated, from its best checkpoint
    /// (the last-epoch weights and optimizer state of such runs are not committed to the
    /// repository's `experiments/runs`).
    pub fn check_committed_files(&self, state: &RunState) -> Result<()> {
        let files = self.committed_files(state);
        let resumes = state.status == RunStatus::Running;
        let named = [
            (
                "weights of the last epoch",
                files.last.as_ref().filter(|_| resumes),
            ),
            (
                "optimizer state",
                files.optimizer.as_ref().filter(|_| resumes),
            ),
            ("best checkpoint", Some(&files.best)),
        ];
        for (what, path) in named {
            if let Some(path) = path.filter(|p| !p.is_file()) {
                bail!(
                    "{} ({what} of epoch {}) is missing; the run cannot resume exactly: restore \
                     it or remove {} to retrain",
                    path.display(),
                    state.completed_epochs,
                    self.root.display()
                );
            }
        }
        Ok(())
    }

    /// Removes what the committed `state` does not name: checkpoint files of an uncommitted
    /// epoch, superseded epochs, temporary files of killed writes, and metric lines after the
    /// committed epoch. Without a state, removes the whole content but `config.toml`.
    pub fn remove_uncommitted(&self, state: Option<&RunState>) -> Result<()> {
        let files = state.map(|s| self.committed_files(s));
        for dir in [self.root.clone(), self.checkpoints()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry
                    .with_context(|| format!("cannot list {}", dir.display()))?
                    .path();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let temporary = name.contains(".tmp-");
                let checkpoint = name.ends_with(".safetensors");
                let keep = !temporary
                    && (!checkpoint || files.as_ref().is_some_and(|f| f.contains(&path)));
                if !keep && path.is_file() {
                    fs::remove_file(&path)
                        .with_context(|| format!("cannot remove {}", path.display()))?;
                }
            }
        }
        match state {
            Some(s) => {
                let lines = self.metric_lines(s.completed_epochs)?;
                let steps = self.step_lines(s.completed_epochs)?;
                let trimmed = lines.len() != line_count(&self.metrics())?
                    || steps.len() != line_count(&self.steps())?;
                if trimmed {
                    self.save_metrics(&lines)?;
                    self.save_steps(&steps)?;
                    crate::curves::write_event_file(self, &steps, &lines)?;
                }
            }
            None => {
                for path in [
                    self.metrics(),
                    self.steps(),
                    self.events(),
                    self.results(),
                    self.log_path(),
                ] {
                    if path.is_file() {
                        fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Renames the best checkpoint of a trained pixreg 0.1 folder to this layout and drops
    /// its last-epoch files (a trained run does not resume). An unfinished 0.1 folder is
    /// refused: its epoch files were renamed one by one and may not belong together.
    pub fn migrate_legacy(&self, state: &mut RunState) -> Result<()> {
        if state.layout != LEGACY_LAYOUT {
            return Ok(());
        }
        if state.status == RunStatus::Running {
            bail!(
                "{} is an unfinished run of pixreg 0.1, whose epoch files were not committed \
                 together; it cannot be resumed exactly: remove it to retrain",
                self.root.display()
            );
        }
        let legacy = self.committed_files(state);
        let best = self.best_checkpoint_at(state.best_epoch);
        if legacy.best.is_file() {
            fs::rename(&legacy.best, &best)
                .with_context(|| format!("cannot rename {}", legacy.best.display()))?;
        } else if !best.is_file() {
            bail!(
                "{} is missing: the best checkpoint of {}",
                legacy.best.display(),
                self.root.display()
            );
        }
        state.layout = RUN_LAYOUT;
        self.save_state(state)?;
        for path in legacy.last.iter().chain(&legacy.optimizer) {
            if path.is_file() {
                fs::remove_file(path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The metric lines of epochs `0..=last_epoch` (later lines belong to an interrupted epoch).
    pub fn metric_lines(&self, last_epoch: usize) -> Result<Vec<EpochMetrics>> {
        read_json_lines(&self.metrics(), |m: &EpochMetrics| m.epoch <= last_epoch)
    }

    /// The step lines of epochs `1..=last_epoch` (later lines belong to an interrupted epoch).
    pub fn step_lines(&self, last_epoch: usize) -> Result<Vec<crate::curves::StepScalars>> {
        crate::curves::read_steps(&self.steps(), last_epoch)
    }

    /// Rewrites `steps.jsonl` atomically with `lines`.
    pub fn save_steps(&self, lines: &[crate::curves::StepScalars]) -> Result<()> {
        write_json_lines(&self.steps(), lines)
    }

    /// Rewrites `metrics.jsonl` atomically with `lines`.
    pub fn save_metrics(&self, lines: &[EpochMetrics]) -> Result<()> {
        write_json_lines(&self.metrics(), lines)
    }

    /// Appends `line` to `log.txt`, each of its lines after an RFC 3339 UTC timestamp (a log,
    /// not a result: appending is fine).
    pub fn log(&self, line: &str) -> Result<()> {
        let path = self.log_path();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let stamp = crate::provenance::now_rfc3339();
        let mut text = String::new();
        for part in line.lines().filter(|l| !l.trim().is_empty()) {
            text.push_str(&format!("{stamp} {part}\n"));
        }
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Lines of a text file (0 when it is absent).
fn line_count(path: &Path) -> Result<usize> {
    if !path.is_file() {
        return Ok(0);
    }
    Ok(fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .lines()
        .count())
}

/// The lines of a JSON-lines file that `keep` accepts (none when the file is absent); a line
/// that does not parse is an error naming the file and the line.
pub(crate) fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let value: T = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is corrupt", path.display(), n + 1))?;
        if keep(&value) {
            lines.push(value);
        }
    }
    Ok(lines)
}

/// Writes one JSON object per line to `path`, atomically.
fn write_json_lines<T: Serialize>(path: &Path, lines: &[T]) -> Result<()> {
    let mut text = String::new();
    for line in lines {
        text.push_str(&serde_json::to_string(line)?);
        text.push('\n');
    }
    write_text(path, &text)
}
