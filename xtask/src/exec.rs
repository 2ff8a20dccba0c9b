//! Local execution of a plan: `pixreg train` for every unfinished run (in parallel with
//! `--jobs`), then one `pixreg eval` per run for what the table still lacks: the transferred
//! FGSM (`--surrogate …`, once the surrogate is trained) and the attacks of this table that a
//! run reused from another table was not evaluated with.
//!
//! Each child writes its stdout and stderr to `<runs-dir>/<id>.xtask.log`; xtask records the
//! wall time of the training child in `<runs-dir>/<id>.xtask.json` (the run's own
//! `state.json` has its training time, target preparation time and peak memory).
//! A failed run is reported with its log path and does not stop the others.

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pixreg_runner::attack::AttackName;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{Plan, PlannedRun};
use crate::progress::{last_phase, Watch};
use crate::util::{format_duration, write_atomic};

/// Where things are (absolute paths: children run in `runs_dir`).
#[derive(Debug, Clone)]
pub struct Paths {
    /// The `pixreg` binary.
    pub pixreg: PathBuf,
    /// Folder of the run folders.
    pub runs_dir: PathBuf,
    /// Data directory passed to `pixreg`.
    pub data_dir: PathBuf,
}

impl Paths {
    /// The folder of run `id`.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runs_dir.join(id)
    }
    /// Generated config of run `id`, given to `pixreg train`.
    pub fn config_file(&self, id: &str) -> PathBuf {
        self.runs_dir
            .join("xtask-configs")
            .join(format!("{id}.toml"))
    }
    /// Captured output of the `pixreg` children of run `id`.
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.runs_dir.join(format!("{id}.xtask.log"))
    }
    /// [`Measurement`] of run `id`.
    pub fn measurement_file(&self, id: &str) -> PathBuf {
        self.runs_dir.join(format!("{id}.xtask.json"))
    }
}

/// Wall time of a training child, as measured by xtask (the run's own `state.json` holds
/// its training time, target preparation time and peak memory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// Wall time of `pixreg train` (data loading and final evaluation included).
    pub wall_seconds: f64,
}

/// Where a run stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// No folder.
    New,
    /// Started, not finished (resumable).
    Partial,
    /// Trained and evaluated.
    Finished,
}

/// The state of run `id` under `runs_dir`.
pub fn run_state(runs_dir: &Path, id: &str) -> RunState {
    let dir = runs_dir.join(id);
    let state: Option<Value> = std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    match state {
        Some(s) if s["status"] == "finished" && dir.join("results.json").is_file() => {
            RunState::Finished
        }
        _ if dir.exists() => RunState::Partial,
        _ => RunState::New,
    }
}

/// The attacks of `run` still to evaluate: those of `planned` absent from its `results.json`
/// or not from its current best checkpoint (stale, provisional, older format: all of them
/// then), and FGSM when the table needs it and there is no FGSM result from the expected
/// surrogate.
pub fn missing_attacks(
    runs_dir: &Path,
    planned: &PlannedRun,
    surrogate: Option<&str>,
) -> Vec<AttackName> {
    let results = crate::assemble::current_results(&runs_dir.join(&planned.id)).ok();
    let current = |name: AttackName| {
        results.as_ref().and_then(|r| {
            r.attacks
                .get(name)
                .filter(|entry| entry.is_current_for(&r.checkpoint_sha256, false))
        })
    };
    let mut missing: Vec<AttackName> = planned
        .attacks
        .iter()
        .copied()
        .filter(|&name| current(name).is_none())
        .collect();
    let fgsm_current = current(AttackName::Fgsm)
        .and_then(|entry| entry.result.as_curve())
        .is_some_and(|curve| curve.surrogate.as_deref() == surrogate);
    if planned.needs_fgsm && !fgsm_current {
        missing.push(AttackName::Fgsm);
    }
    missing
}

/// Options of [`execute`].
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    /// Parallel children.
    pub jobs: usize,
    /// Delete and redo every run of the plan.
    pub force: bool,
    /// Show a progress bar (lines are printed either way).
    pub progress_bar: bool,
    /// Train unfinished runs; `false` only evaluates FGSM of finished runs (the Slurm
    /// assembly job, where the array trained them).
    pub train: bool,
}

/// What happened to the runs.
#[derive(Debug, Clone, Default)]
pub struct ExecReport {
    /// Runs that failed or did not finish: id → message naming the log.
    pub failures: BTreeMap<String, String>,
    /// Runs whose evaluation after training (FGSM, or attacks a reused run lacked) failed or
    /// was skipped: id → message.
    pub eval_failures: BTreeMap<String, String>,
    /// Runs left untrained because training was off (`--no-train`): id → what state they are
    /// in. Not failures: nothing was tried.
    pub untrained: BTreeMap<String, String>,
    /// Wall seconds xtask spent on each run in this invocation (training and evaluation).
    pub wall_seconds: BTreeMap<String, f64>,
    /// Runs reused as they were.
    pub reused: Vec<String>,
}

/// A child to run for one run.
struct Job {
    id: String,
    args: Vec<String>,
    measure: bool,
}

/// Trains what is missing and evaluates the transferred FGSM; never fails because of a run
/// (failures are in the report), only on I/O errors of xtask itself.
pub fn execute(plan: &Plan, paths: &Paths, options: ExecOptions) -> Result<ExecReport> {
    std::fs::create_dir_all(&paths.runs_dir)
        .with_context(|| format!("cannot create {}", paths.runs_dir.display()))?;
    let mut report = ExecReport::default();
    let mut train_jobs = Vec::new();
    for run in &plan.runs {
        write_atomic(&paths.config_file(&run.id), run.config_toml.as_bytes())?;
        if options.force {
            remove_run(paths, &run.id)?;
        }
        if run_state(&paths.runs_dir, &run.id) == RunState::Finished {
            report.reused.push(run.id.clone());
        } else if options.train {
            train_jobs.push(train_job(run, paths));
        } else {
            report
                .untrained
                .insert(run.id.clone(), untrained_reason(&paths.runs_dir, &run.id));
        }
    }
    // Finished runs reused from other tables are evaluated with what this table lacks before
    // anything trains, so a long table has its reference rows early; FGSM waits for a
    // surrogate still to train. Then every run is checked once more after training.
    let early = eval_jobs(plan, paths, &mut report, true);
    let total = early.len() + train_jobs.len() + plan.runs.len();
    let multi = if options.progress_bar {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let bar = multi.add(ProgressBar::new(total as u64));
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} steps {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let bars = Bars {
        multi: &multi,
        total: &bar,
    };
    for id in &report.reused {
        multi.suspend(|| eprintln!("reuse  {id} (finished)"));
    }
    let record = |report: &mut ExecReport, outcomes: Vec<JobOutcome>, eval: bool| {
        for (id, seconds, error) in outcomes {
            *report.wall_seconds.entry(id.clone()).or_default() += seconds;
            if let Some(e) = error {
                if eval {
                    report.eval_failures.insert(id, e);
                } else {
                    report.failures.insert(id, e);
                }
            }
        }
    };
    let outcomes = run_pool(early, paths, options.jobs, &bars, "eval ");
    record(&mut report, outcomes, true);
    let outcomes = run_pool(train_jobs, paths, options.jobs, &bars, "train");
    record(&mut report, outcomes, false);
    let late = eval_jobs(plan, paths, &mut report, false);
    bar.inc((plan.runs.len() - late.len()) as u64);
    let outcomes = run_pool(late, paths, options.jobs, &bars, "eval ");
    record(&mut report, outcomes, true);
    bar.finish_and_clear();
    Ok(report)
}

/// Why run `id` has no result when training is off: never started, or stopped part-way.
fn untrained_reason(runs_dir: &Path, id: &str) -> String {
    match run_state(runs_dir, id) {
        RunState::Partial => {
            format!("partly trained: {id} (resumes from its last checkpoint without --no-train)")
        }
        RunState::New | RunState::Finished => {
            format!("not trained yet: {id} (trains without --no-train)")
        }
    }
}

/// `pixreg eval` jobs for the finished runs of `plan` that lack attacks of the table, with
/// the plan's `[evaluation]` settings (a reused run's own config may have other image
/// counts). With `early`, FGSM is left out where its surrogate is not finished yet.
fn eval_jobs(plan: &Plan, paths: &Paths, report: &mut ExecReport, early: bool) -> Vec<Job> {
    let mut jobs = Vec::new();
    for run in &plan.runs {
        if report.failures.contains_key(&run.id)
            || report.eval_failures.contains_key(&run.id)
            || run_state(&paths.runs_dir, &run.id) != RunState::Finished
        {
            continue;
        }
        let surrogate = run.surrogate.map(|s| plan.runs[s].id.as_str());
        let mut missing = missing_attacks(&paths.runs_dir, run, surrogate);
        if let Some(s) = surrogate {
            let surrogate_ready = !report.failures.contains_key(s)
                && run_state(&paths.runs_dir, s) == RunState::Finished;
            if !surrogate_ready && missing.contains(&AttackName::Fgsm) {
                if !early {
                    report.eval_failures.insert(
                        run.id.clone(),
                        format!("skipped: the surrogate {s} failed or did not finish"),
                    );
                }
                missing.retain(|&a| a != AttackName::Fgsm);
            }
        }
        if missing.is_empty() {
            continue;
        }
        let mut args = vec![
            "eval".to_string(),
            "--run".into(),
            run.id.clone(),
            "--attacks".into(),
            missing
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
            "--data-dir".into(),
            paths.data_dir.display().to_string(),
        ];
        if let Some(s) = surrogate.filter(|_| missing.contains(&AttackName::Fgsm)) {
            args.extend(["--surrogate".to_string(), s.to_string()]);
        }
        args.extend(evaluation_overrides(&run.config_toml));
        jobs.push(Job {
            id: run.id.clone(),
            args,
            measure: false,
        });
    }
    jobs
}

/// `--set evaluation.<key>=<value>` for every `[evaluation]` setting of a planned config
/// except the attack list (given by `--attacks`).
fn evaluation_overrides(config_toml: &str) -> Vec<String> {
    let config: toml::Table = toml::from_str(config_toml).unwrap_or_default();
    let Some(toml::Value::Table(evaluation)) = config.get("evaluation") else {
        return Vec::new();
    };
    evaluation
        .iter()
        .filter(|(key, _)| key.as_str() != "attacks")
        .flat_map(|(key, value)| ["--set".to_string(), format!("evaluation.{key}={value}")])
        .collect()
}

fn train_job(run: &PlannedRun, paths: &Paths) -> Job {
    Job {
        id: run.id.clone(),
        args: vec![
            "train".into(),
            "--config".into(),
            format!("xtask-configs/{}.toml", run.id),
            "--runs-dir".into(),
            ".".into(),
            "--data-dir".into(),
            paths.data_dir.display().to_string(),
            "--quiet".into(),
        ],
        measure: true,
    }
}

/// Deletes a run's folder and sidecars (`--force`).
fn remove_run(paths: &Paths, id: &str) -> Result<()> {
    let dir = paths.run_dir(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    for file in [paths.log_file(id), paths.measurement_file(id)] {
        if file.exists() {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(())
}

/// The progress display: one bar per running child above the bar of the whole plan.
struct Bars<'a> {
    multi: &'a MultiProgress,
    total: &'a ProgressBar,
}

/// Progress shared by the workers.
struct PoolState {
    queue: VecDeque<Job>,
    done: usize,
    seconds_done: f64,
    running: usize,
    /// (seconds left, estimated duration) of each running child that has an estimate.
    estimates: BTreeMap<String, (f64, f64)>,
}

impl PoolState {
    /// Seconds until the pool is done: the longest running child, then the queued jobs at the
    /// mean duration (of finished jobs, else of the running estimates), `workers` at a time.
    fn eta(&self, workers: usize) -> Option<f64> {
        let longest = self
            .estimates
            .values()
            .map(|e| e.0)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let mean = if self.done > 0 {
            Some(self.seconds_done / self.done as f64)
        } else if !self.estimates.is_empty() {
            Some(self.estimates.values().map(|e| e.1).sum::<f64>() / self.estimates.len() as f64)
        } else {
            None
        }?;
        Some(longest.unwrap_or(0.0) + mean * self.queue.len() as f64 / workers as f64)
    }
}

/// Outcome of one job: run id, wall seconds, error.
type JobOutcome = (String, f64, Option<String>);

/// Runs `jobs` with `workers` children at a time: a bar per running child (its epoch and
/// step, or attack, from its `log.txt`, with an ETA from the wall time), one line per started
/// job naming its log and per finished job with the pool's ETA.
fn run_pool(
    jobs: Vec<Job>,
    paths: &Paths,
    workers: usize,
    bars: &Bars,
    verb: &str,
) -> Vec<JobOutcome> {
    let total = jobs.len();
    if total == 0 {
        return Vec::new();
    }
    let state = Arc::new(Mutex::new(PoolState {
        queue: jobs.into(),
        done: 0,
        seconds_done: 0.0,
        running: 0,
        estimates: BTreeMap::new(),
    }));
    let results: Arc<Mutex<Vec<JobOutcome>>> = Arc::default();
    let workers = workers.clamp(1, total);
    let quiet = quiet_threads(workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let state = Arc::clone(&state);
            let results = Arc::clone(&results);
            scope.spawn(move || loop {
                let job = {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(job) = s.queue.pop_front() else {
                        break;
                    };
                    s.running += 1;
                    job
                };
                let log = paths.run_dir(&job.id).join("log.txt");
                bars.multi
                    .suspend(|| eprintln!("{verb} {} ... (log: {})", job.id, log.display()));
                let child_bar = bars.multi.insert_before(bars.total, ProgressBar::new(1000));
                child_bar.set_style(
                    ProgressStyle::with_template("  {prefix} [{bar:24}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                child_bar.set_prefix(job.id.clone());
                let started = Instant::now();
                let on_progress = |left: Option<f64>| {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    match left {
                        Some(l) => {
                            let elapsed = started.elapsed().as_secs_f64();
                            s.estimates.insert(job.id.clone(), (l, elapsed + l));
                        }
                        None => {
                            s.estimates.remove(&job.id);
                        }
                    }
                    if let Some(eta) = s.eta(workers) {
                        bars.total
                            .set_message(format!("ETA {}", format_duration(eta)));
                    }
                };
                let outcome = run_child(&job, paths, quiet, &child_bar, &on_progress);
                child_bar.finish_and_clear();
                let seconds = started.elapsed().as_secs_f64();
                let error = outcome.err().map(|e| format!("{e:#}"));
                let line = {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    s.done += 1;
                    s.running -= 1;
                    s.seconds_done += seconds;
                    s.estimates.remove(&job.id);
                    let eta = s.eta(workers).unwrap_or(0.0);
                    let status = match &error {
                        None => "done".to_string(),
                        Some(e) => format!("FAILED: {e}"),
                    };
                    format!(
                        "{verb} {} {status} in {} [{}/{total}, ETA {}]",
                        job.id,
                        format_duration(seconds),
                        s.done,
                        format_duration(eta)
                    )
                };
                bars.total.inc(1);
                bars.multi.suspend(|| eprintln!("{line}"));
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((job.id, seconds, error));
            });
        }
    });
    let outcomes = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    outcomes
}

/// Whether children running `workers` at a time are told not to spin their kernel threads
/// (`pixreg_kernels::SPIN_VAR`), unless the environment says otherwise.
///
/// Why: each child takes every core (its thread count stays the machine's, because results
/// depend on it: a width-16 demo epoch with one and with two threads ends with 108 of 128
/// weight tensors different, and a table must not depend on `--jobs`), so several children
/// oversubscribe the cores, and spinning threads then take time from the other children: two
/// width-8 training steps of two threads each at once on 2 cores took 79–83 ms each with
/// sleeping threads and 81–95 ms with spinning ones, against 47–50 ms for one alone.
fn quiet_threads(workers: usize) -> bool {
    workers > 1 && std::env::var_os(pixreg_models::kernels::SPIN_VAR).is_none()
}

/// Runs one `pixreg` child (its kernel threads sleeping between kernels when `quiet`) with
/// its output appended to the run's xtask log, showing on `bar` what its `log.txt` says
/// (lines written before it started are not its progress) and telling `on_progress` the
/// seconds it has left, once it can tell.
fn run_child(
    job: &Job,
    paths: &Paths,
    quiet: bool,
    bar: &ProgressBar,
    on_progress: &dyn Fn(Option<f64>),
) -> Result<()> {
    let log_path = paths.log_file(&job.id);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let started = Instant::now();
    let run_log = paths.run_dir(&job.id).join("log.txt");
    let old_log = std::fs::metadata(&run_log).map_or(0, |m| m.len());
    let mut command = Command::new(&paths.pixreg);
    end_with_parent(&mut command);
    if quiet {
        command.env(pixreg_models::kernels::SPIN_VAR, "0");
    }
    // Children run in the runs folder and name runs relative to it, so what they print (and
    // the captured logs, committed with the runs) holds no machine-specific path.
    let mut child = command
        .current_dir(&paths.runs_dir)
        .args(&job.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", paths.pixreg.display()))?;
    let mut watch = Watch::new();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for pixreg {}", job.args[0]))?
        {
            break status;
        }
        if let Some((phase, left)) = watch.update(last_phase(&run_log, old_log)) {
            bar.set_position((phase.fraction * 1000.0).round() as u64);
            let eta = left.map_or(String::new(), |l| format!(", ETA {}", format_duration(l)));
            bar.set_message(format!(
                "{} ({} elapsed{eta})",
                phase.what,
                format_duration(watch.elapsed())
            ));
            on_progress(left);
        }
        // A log line comes every `display_every` steps (seconds apart): polling twice a
        // second reads at most 8 KiB each time.
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    if !status.success() {
        anyhow::bail!(
            "pixreg {} exited with {status}; see {id}.xtask.log and {id}/log.txt in the runs \
             directory",
            job.args[0],
            id = job.id
        );
    }
    if job.measure {
        if run_state(&paths.runs_dir, &job.id) != RunState::Finished {
            anyhow::bail!(
                "pixreg train returned without finishing the run; see {}.xtask.log in the runs \
                 directory",
                job.id
            );
        }
        let m = Measurement {
            wall_seconds: started.elapsed().as_secs_f64(),
        };
        write_atomic(
            &paths.measurement_file(&job.id),
            serde_json::to_string_pretty(&m)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// Makes the child receive `SIGTERM` when the xtask thread waiting for it dies, so that
/// killing (or interrupting) `cargo xtask reproduce` stops its `pixreg` children instead of
/// leaving them training (and holding their runs' locks). A killed child loses at most the
/// epoch in progress: run folders commit whole epochs.
#[cfg(target_os = "linux")]
fn end_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only the
    // async-signal-safe prctl(2), getppid(2) and _exit(2).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Elsewhere children outlive an interrupted xtask; the run locks keep a rerun from
/// starting a second trainer on the same run.
#[cfg(not(target_os = "linux"))]
fn end_with_parent(_command: &mut Command) {}
