//! `--launcher slurm`: an `sbatch` job array with one task per planned run (each calls the same
//! `pixreg train` on a shared runs directory) and a dependent job that evaluates the transferred
//! FGSM and assembles the table with the `xtask` binary (`xtask reproduce … --no-train`): the
//! compute nodes need the two binaries and the data, not a Rust toolchain or `cargo`.
//!
//! `submit.sh` builds `pixreg` first unless a binary was given (`--pixreg`; with
//! `PIXREG_FEATURES=cuda` for GPUs) and submits both jobs. The assembly job runs after every
//! array task has ended, failed or not (`afterany`), so a failed run shows in the table as a
//! failed cell of its row instead of leaving the table unwritten.
//! Every path in the scripts is relative to the repository root (the scripts `cd` to the
//! submit directory), so they work on any cluster checkout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::Paths;
use crate::plan::Plan;
use crate::util::{relative_to, write_atomic};

/// Quotes a string for bash (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What [`write_scripts`] produced.
#[derive(Debug, Clone)]
pub struct SlurmScripts {
    /// The array job (`array.sbatch`).
    pub array: PathBuf,
    /// The dependent assembly job (`assemble.sbatch`).
    pub assemble: PathBuf,
    /// `submit.sh`, which submits both with the dependency.
    pub submit: PathBuf,
}

/// Inputs of the scripts besides the plan.
#[derive(Debug, Clone)]
pub struct SlurmOptions<'a> {
    /// Repository root (the submit directory).
    pub root: &'a Path,
    /// Folder of the scripts.
    pub dir: &'a Path,
    /// Extra `#SBATCH` options of the profile (`--gres=gpu:1`, `--time=…`).
    pub directives: &'a [String],
    /// The `cargo xtask reproduce` arguments that identify this table (table, profile, seeds,
    /// overrides), repeated by the assembly job.
    pub reproduce_args: &'a [String],
    /// The `xtask` binary the assembly job runs.
    pub xtask: &'a Path,
    /// Whether `submit.sh` builds `pixreg` (false when the user gave a binary).
    pub build_pixreg: bool,
}

/// Writes `array.sbatch`, `assemble.sbatch` and `submit.sh` into `opts.dir`.
pub fn write_scripts(plan: &Plan, paths: &Paths, opts: &SlurmOptions) -> Result<SlurmScripts> {
    if plan.runs.is_empty() {
        bail!(
            "{} has no runnable runs under profile {} (every row lacks data or is not implemented)",
            plan.table.name,
            plan.profile
        );
    }
    let rel = |p: &Path| shell_quote(&relative_to(p, opts.root).display().to_string());
    let mut directives = String::new();
    for d in opts.directives {
        let _ = writeln!(directives, "#SBATCH {d}");
    }
    let shared = Shared {
        name: format!("pixreg-{}-{}", plan.table.name, plan.profile),
        runs_dir: rel(&paths.runs_dir),
        data_dir: rel(&paths.data_dir),
        pixreg: rel(&paths.pixreg),
        xtask: rel(opts.xtask),
        directives,
    };
    let scripts = SlurmScripts {
        array: opts.dir.join("array.sbatch"),
        assemble: opts.dir.join("assemble.sbatch"),
        submit: opts.dir.join("submit.sh"),
    };
    write_atomic(
        &scripts.array,
        array_script(plan, paths, opts, &shared).as_bytes(),
    )?;
    write_atomic(
        &scripts.assemble,
        assemble_script(paths, opts, &shared).as_bytes(),
    )?;
    write_atomic(&scripts.submit, submit_script(opts, &shared).as_bytes())?;
    Ok(scripts)
}

/// What the three scripts share: the job name and the quoted paths, relative to the root.
struct Shared {
    name: String,
    runs_dir: String,
    data_dir: String,
    pixreg: String,
    xtask: String,
    directives: String,
}

/// The job array: one task per run, each `pixreg train` of its config.
fn array_script(plan: &Plan, paths: &Paths, opts: &SlurmOptions, shared: &Shared) -> String {
    let Shared {
        name,
        runs_dir,
        data_dir,
        pixreg,
        directives,
        ..
    } = shared;
    let mut array = String::new();
    let _ = writeln!(array, "#!/bin/bash");
    let _ = writeln!(array, "#SBATCH --job-name={name}");
    let _ = writeln!(array, "#SBATCH --array=0-{}", plan.runs.len() - 1);
    let _ = writeln!(
        array,
        "#SBATCH --output={}/slurm-%A_%a.out",
        relative_to(&paths.runs_dir, opts.root).display()
    );
    array.push_str(directives);
    let _ = writeln!(
        array,
        "# One array task per run of {} (profile {}).",
        plan.table.name, plan.profile
    );
    let _ = writeln!(array, "set -euo pipefail");
    let _ = writeln!(array, "cd \"${{SLURM_SUBMIT_DIR:-.}}\"");
    let _ = writeln!(array, "PIXREG=\"${{PIXREG:-{pixreg}}}\"");
    let _ = writeln!(array, "RUNS=(");
    for (i, run) in plan.runs.iter().enumerate() {
        let _ = writeln!(array, "  {}  # {i}", shell_quote(&run.id));
    }
    let _ = writeln!(array, ")");
    let _ = writeln!(
        array,
        "task=\"${{SLURM_ARRAY_TASK_ID:?run this script as a Slurm array task}}\""
    );
    let _ = writeln!(
        array,
        "if (( task < 0 || task >= ${{#RUNS[@]}} )); then echo \"no run for array index $task\" >&2; exit 2; fi"
    );
    let _ = writeln!(array, "id=\"${{RUNS[$task]}}\"");
    let _ = writeln!(
        array,
        "exec \"$PIXREG\" train --config {runs_dir}/xtask-configs/\"$id\".toml --runs-dir {runs_dir} --data-dir {data_dir} --quiet"
    );
    array
}

/// The assembly job: this xtask binary with the same table arguments and `--no-train`.
fn assemble_script(paths: &Paths, opts: &SlurmOptions, shared: &Shared) -> String {
    let Shared {
        name,
        runs_dir,
        data_dir,
        pixreg,
        xtask,
        directives,
    } = shared;
    let mut assemble = String::new();
    let _ = writeln!(assemble, "#!/bin/bash");
    let _ = writeln!(assemble, "#SBATCH --job-name={name}-assemble");
    let _ = writeln!(
        assemble,
        "#SBATCH --output={}/slurm-%j-assemble.out",
        relative_to(&paths.runs_dir, opts.root).display()
    );
    assemble.push_str(directives);
    let _ = writeln!(
        assemble,
        "# Transferred FGSM of the finished runs, then the table; failed runs are marked in it."
    );
    let _ = writeln!(assemble, "set -euo pipefail");
    let _ = writeln!(assemble, "cd \"${{SLURM_SUBMIT_DIR:-.}}\"");
    let args: Vec<String> = opts.reproduce_args.iter().map(|a| shell_quote(a)).collect();
    let _ = writeln!(assemble, "XTASK=\"${{XTASK:-{}}}\"", xtask);
    let _ = writeln!(assemble, "PIXREG=\"${{PIXREG:-{pixreg}}}\"");
    let _ = writeln!(
        assemble,
        "exec \"$XTASK\" reproduce {} --runs-dir {runs_dir} --data-dir {data_dir} --pixreg \"$PIXREG\" --no-train",
        args.join(" ")
    );
    assemble
}

/// `submit.sh`: the array, then the assembly job depending on it, from the repository root.
fn submit_script(opts: &SlurmOptions, shared: &Shared) -> String {
    let runs_dir = &shared.runs_dir;
    let dir_rel = relative_to(opts.dir, opts.root);
    // From the scripts' folder back to the repository root: relative when the scripts lie
    // inside the repository, else the root as it is.
    let to_root = if dir_rel.is_absolute() {
        shell_quote(&opts.root.display().to_string())
    } else {
        let up: PathBuf = dir_rel.components().map(|_| "..").collect();
        format!("\"$(dirname \"$0\")/{}\"", up.display())
    };
    let mut submit = String::new();
    let _ = writeln!(submit, "#!/bin/bash");
    let _ = writeln!(
        submit,
        "# Submits the run array and the dependent assembly job; run from anywhere."
    );
    let _ = writeln!(submit, "set -euo pipefail");
    let _ = writeln!(submit, "cd {to_root}");
    let _ = writeln!(submit, "mkdir -p {runs_dir}");
    if opts.build_pixreg {
        let _ = writeln!(
            submit,
            "cargo build --release -p pixreg-runner ${{PIXREG_FEATURES:+--features \"$PIXREG_FEATURES\"}}"
        );
    }
    let _ = writeln!(
        submit,
        "array=$(sbatch --parsable {})",
        shell_quote(&dir_rel.join("array.sbatch").display().to_string())
    );
    let _ = writeln!(submit, "array=\"${{array%%;*}}\"");
    let _ = writeln!(
        submit,
        "assemble=$(sbatch --parsable --dependency=afterany:\"$array\" {})",
        shell_quote(&dir_rel.join("assemble.sbatch").display().to_string())
    );
    let _ = writeln!(
        submit,
        "echo \"submitted run array $array and assembly job ${{assemble%%;*}}\""
    );
    submit
}

/// Runs `submit.sh` (needs `sbatch` on PATH).
pub fn submit(scripts: &SlurmScripts) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg(&scripts.submit)
        .status()
        .context("cannot run bash")?;
    if !status.success() {
        bail!(
            "{} failed ({status}); is sbatch on PATH?",
            scripts.submit.display()
        );
    }
    Ok(())
}
