//! # xtask
//!
//! Project automation behind `cargo xtask`. `cargo xtask reproduce <table>` turns the crates
//! into the paper's results: it plans the runs a table of the catalogue (`experiments/`) needs
//! ([`plan`]), trains and evaluates them with the `pixreg` binary, reusing finished runs
//! ([`exec`]) or as a Slurm job array ([`slurm`]), and writes the table ([`assemble`]), the
//! figures ([`figures`]) and a manifest ([`manifest`]) to `results/<table>/<profile>/`
//! (untracked), or, with `--update-reference`, to the committed reference results in
//! `experiments/results/<table>/<profile>/`.
//!
//! `cargo xtask fetch-data` ([`fetch`]) downloads the datasets from their public sources and
//! verifies them against the shipped `SHA256SUMS` before putting them in place.

pub mod assemble;
pub mod catalogue;
pub mod exec;
pub mod fetch;
pub mod figures;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod slurm;
pub mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::assemble::TableResult;
use crate::catalogue::Catalogue;
use crate::exec::{ExecOptions, ExecReport, Paths, RunState};
use crate::plan::{Plan, PlanRequest};
use crate::util::{format_duration, relative_to, write_atomic};

/// The workspace root (this crate's parent folder).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The data directory: the flag, else `$PIXREG_DATA_DIR`, else `../shared/datasets` beside the
/// repository when it exists.
pub fn resolve_data_dir(root: &Path, flag: Option<&Path>) -> Result<PathBuf> {
    let dir = match (flag, std::env::var_os(pixreg_datasets::DATA_DIR_ENV)) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => {
            let beside = root
                .parent()
                .unwrap_or(root)
                .join("shared")
                .join("datasets");
            if !beside.is_dir() {
                bail!(
                    "no data directory: pass --data-dir or set {} (../shared/datasets does not \
                     exist beside the repository)",
                    pixreg_datasets::DATA_DIR_ENV
                );
            }
            beside
        }
    };
    if !dir.is_dir() {
        bail!("data directory {} does not exist", dir.display());
    }
    std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))
}

/// How the runs are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    /// Child processes on this machine (`--jobs` at a time).
    Local,
    /// An `sbatch` job array plus a dependent assembly job.
    Slurm,
}

/// Options of [`reproduce`] (the flags of `cargo xtask reproduce`).
#[derive(Debug, Clone)]
pub struct ReproduceOptions {
    /// Table name.
    pub table: String,
    /// Profile name.
    pub profile: String,
    /// Seeds per variant (default: the profile's).
    pub seeds: Option<usize>,
    /// The first seed (0 unless `--first-seed`).
    pub first_seed: usize,
    /// Parallel runs.
    pub jobs: usize,
    /// Redo finished runs.
    pub force: bool,
    /// Folder of run folders.
    pub runs_dir: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Output folder (default `results/<table>/<profile>`, or with `update_reference` the
    /// committed `experiments/results/<table>/<profile>`).
    pub out_dir: Option<PathBuf>,
    /// Write the table over the committed reference results (when `out_dir` is unset).
    pub update_reference: bool,
    /// The `pixreg` binary; `None`: build it with cargo and use `release/pixreg` of the
    /// target directory (`$CARGO_TARGET_DIR`, else `target/`).
    pub pixreg: Option<PathBuf>,
    /// Local or Slurm.
    pub launcher: Launcher,
    /// Submit the Slurm scripts.
    pub submit: bool,
    /// Extra `#SBATCH` options for every job (partition, account, time, memory).
    pub slurm_args: Vec<String>,
    /// Do not train; evaluate FGSM of finished runs and assemble.
    pub no_train: bool,
    /// `key=value` overrides for every run config.
    pub overrides: Vec<String>,
    /// Only the rows of these task datasets (empty: all).
    pub rows: Vec<String>,
    /// Only these variants (and the surrogates) of every row (empty: all).
    pub variants: Vec<String>,
    /// Draw a progress bar.
    pub progress_bar: bool,
}

/// What [`reproduce`] produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The output folder.
    pub out_dir: PathBuf,
    /// The plan.
    pub plan: Plan,
    /// The assembled table (`None` for the Slurm launcher, which only writes scripts).
    pub table: Option<TableResult>,
    /// Figures written.
    pub figures: Vec<PathBuf>,
    /// Run failures.
    pub report: ExecReport,
}

/// The cargo target directory of the workspace: `$CARGO_TARGET_DIR` (relative to the
/// workspace root when relative), else `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Builds `pixreg` with the release profile and returns its path.
fn build_pixreg(root: &Path) -> Result<PathBuf> {
    eprintln!("building pixreg (cargo build --release -p pixreg-runner) ...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "pixreg-runner"])
        .current_dir(root)
        .status()
        .context("cannot run cargo to build pixreg")?;
    if !status.success() {
        bail!("building pixreg failed ({status})");
    }
    Ok(target_dir(root).join("release").join("pixreg"))
}

/// `cargo xtask reproduce`: plan, run (or write Slurm scripts), assemble, draw, record.
pub fn reproduce(root: &Path, opts: &ReproduceOptions) -> Result<Outcome> {
    let started = Instant::now();
    if opts.submit && opts.launcher != Launcher::Slurm {
        bail!("--submit needs --launcher slurm");
    }
    let catalogue = Catalogue::load(&root.join("experiments"))?;
    let plan = plan_table(root, opts, &catalogue)?;
    let out_dir = output_dir(root, opts, &plan);
    announce(&plan, opts);
    let paths = Paths {
        pixreg: pixreg_binary(root, opts, &plan)?,
        runs_dir: opts.runs_dir.clone(),
        data_dir: opts.data_dir.clone(),
    };
    if opts.launcher == Launcher::Slurm {
        submit_to_slurm(root, opts, &catalogue, &plan, &paths, &out_dir)?;
        return Ok(Outcome {
            out_dir,
            plan,
            table: None,
            figures: Vec::new(),
            report: ExecReport::default(),
        });
    }
    if !plan.runs.is_empty() && !paths.pixreg.is_file() {
        bail!(
            "pixreg binary {} not found (build it with `cargo build --release -p pixreg-runner`)",
            paths.pixreg.display()
        );
    }
    let report = exec::execute(
        &plan,
        &paths,
        ExecOptions {
            jobs: opts.jobs.max(1),
            force: opts.force,
            progress_bar: opts.progress_bar,
            train: !opts.no_train,
        },
    )?;
    let (table, figures) = write_outputs(root, &plan, &paths, &report, &out_dir, started)?;
    for (id, why) in report.failures.iter().chain(&report.eval_failures) {
        eprintln!("FAILED {id}: {why}");
    }
    for why in report.untrained.values() {
        eprintln!("NOT TRAINED {why}");
    }
    eprintln!(
        "{} written to {} in {}",
        plan.table.name,
        relative_to(&out_dir, root).display(),
        format_duration(started.elapsed().as_secs_f64())
    );
    Ok(Outcome {
        out_dir,
        plan,
        table: Some(table),
        figures,
        report,
    })
}

/// The runs and rows of the requested table (data directories named relative to `root`).
fn plan_table(root: &Path, opts: &ReproduceOptions, catalogue: &Catalogue) -> Result<Plan> {
    let data_dir_label = relative_to(&opts.data_dir, root).display().to_string();
    plan::plan(
        catalogue,
        PlanRequest {
            table: &opts.table,
            profile: &opts.profile,
            seeds: opts.seeds,
            first_seed: opts.first_seed,
            overrides: &opts.overrides,
            data_dir: &opts.data_dir,
            data_dir_label: &data_dir_label,
            rows: &opts.rows,
            variants: &opts.variants,
        },
    )
}

/// Where the table goes: `--out`, else `results/` (or, with `--update-reference`,
/// `experiments/results/`) `<table>/<profile>[-<rows>][-<variants>][-seeds-<first>-<last>]`; a
/// table of some rows, variants or seeds goes beside the full one instead of replacing it.
fn output_dir(root: &Path, opts: &ReproduceOptions, plan: &Plan) -> PathBuf {
    opts.out_dir.clone().unwrap_or_else(|| {
        let mut name = opts.profile.clone();
        for row in &opts.rows {
            name.push('-');
            name.push_str(row);
        }
        for variant in &opts.variants {
            name.push('-');
            name.push_str(&plan::slug(variant));
        }
        if plan.first_seed > 0 {
            // The seeds go into the name only when they do not start at 0, so the
            // committed folders of every other table keep their names.
            let last = plan.first_seed + plan.seeds - 1;
            name.push_str(&format!("-seeds-{}-{last}", plan.first_seed));
        }
        let base = if opts.update_reference {
            root.join("experiments").join("results")
        } else {
            root.join("results")
        };
        base.join(&opts.table).join(name)
    })
}

/// The table, its size and what is already done, and every unavailable row, on stderr.
fn announce(plan: &Plan, opts: &ReproduceOptions) {
    let finished = plan
        .runs
        .iter()
        .filter(|r| exec::run_state(&opts.runs_dir, &r.id) == RunState::Finished)
        .count();
    eprintln!(
        "{}: {} (profile {}, {}): {} runs, {} already finished",
        plan.table.name,
        plan.table.title,
        plan.profile,
        assemble::seeds_label(plan.seeds, plan.first_seed),
        plan.runs.len(),
        if opts.force { 0 } else { finished }
    );
    for row in &plan.rows {
        if let Some(why) = &row.unavailable {
            eprintln!("  {}: {why}", row.label);
        }
    }
}

/// The `pixreg` binary the runs use: `--pixreg`, else the target dir's (built here for a
/// local launch; none needed when nothing is trained).
fn pixreg_binary(root: &Path, opts: &ReproduceOptions, plan: &Plan) -> Result<PathBuf> {
    let pixreg = match (&opts.pixreg, opts.launcher) {
        (Some(p), _) => p.clone(),
        (None, Launcher::Slurm) => target_dir(root).join("release").join("pixreg"),
        (None, Launcher::Local) if opts.no_train && plan.runs.is_empty() => PathBuf::new(),
        (None, Launcher::Local) => build_pixreg(root)?,
    };
    if !pixreg.as_os_str().is_empty() {
        eprintln!("pixreg binary: {}", pixreg.display());
    }
    Ok(pixreg)
}

/// Writes the run configs and the Slurm scripts (an array of the runs, an assembly job that
/// runs this binary with the same table arguments), and submits them with `--submit`.
fn submit_to_slurm(
    root: &Path,
    opts: &ReproduceOptions,
    catalogue: &Catalogue,
    plan: &Plan,
    paths: &Paths,
    out_dir: &Path,
) -> Result<()> {
    for run in &plan.runs {
        write_atomic(&paths.config_file(&run.id), run.config_toml.as_bytes())?;
    }
    let mut args = vec![
        plan.table.name.clone(),
        "--profile".into(),
        plan.profile.clone(),
        "--seeds".into(),
        plan.seeds.to_string(),
    ];
    if plan.first_seed > 0 {
        args.extend(["--first-seed".into(), plan.first_seed.to_string()]);
    }
    for item in &opts.overrides {
        args.extend(["--set".into(), item.clone()]);
    }
    if !opts.rows.is_empty() {
        args.extend(["--rows".into(), opts.rows.join(",")]);
    }
    if !opts.variants.is_empty() {
        args.extend(["--variants".into(), opts.variants.join(",")]);
    }
    // The assembly job writes where this call would have written.
    args.extend(["--out".into(), out_dir.display().to_string()]);
    let profile = catalogue.profile(&plan.table, &plan.profile)?;
    let directives: Vec<String> = profile
        .sbatch
        .iter()
        .chain(&opts.slurm_args)
        .cloned()
        .collect();
    // The assembly job runs this very binary (no toolchain needed on the nodes).
    let xtask = std::env::current_exe().context("cannot locate the xtask binary")?;
    let scripts = slurm::write_scripts(
        plan,
        paths,
        &slurm::SlurmOptions {
            root,
            dir: &out_dir.join("slurm"),
            directives: &directives,
            reproduce_args: &args,
            xtask: &xtask,
            build_pixreg: opts.pixreg.is_none(),
        },
    )?;
    eprintln!(
        "wrote {} ({} array tasks), {} and {}",
        scripts.array.display(),
        plan.runs.len(),
        scripts.assemble.display(),
        scripts.submit.display()
    );
    if opts.submit {
        slurm::submit(&scripts)?;
    } else {
        eprintln!(
            "submit with: bash {}",
            relative_to(&scripts.submit, root).display()
        );
    }
    Ok(())
}

/// Assembles the table from the finished runs and writes it, its figures (results and
/// training curves) and the manifest to `out_dir`.
fn write_outputs(
    root: &Path,
    plan: &Plan,
    paths: &Paths,
    report: &ExecReport,
    out_dir: &Path,
    started: Instant,
) -> Result<(TableResult, Vec<PathBuf>)> {
    let table = assemble::assemble(plan, paths, report);
    assemble::write_tables(&table, out_dir)?;
    let mut figures = figures::write_figures(&table, out_dir)?;
    figures.extend(figures::write_training_figures(
        &table,
        &paths.runs_dir,
        out_dir,
    )?);
    let command = manifest::portable_command(&std::env::args().collect::<Vec<_>>(), root);
    let manifest = manifest::manifest(
        plan,
        paths,
        root,
        report,
        started.elapsed().as_secs_f64(),
        &command,
    );
    write_atomic(
        &out_dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok((table, figures))
}
