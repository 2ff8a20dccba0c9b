//! `manifest.json`: what produced a table (git commit, crate versions, machine, profile, run
//! ids and configs, wall times), so a reader can tell exactly which code and settings gave
//! each number.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::exec::{ExecReport, Measurement, Paths};
use crate::plan::Plan;
use crate::util::relative_to;

/// `git rev-parse HEAD` and whether the work tree has uncommitted changes.
fn git_state(root: &Path) -> Value {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "commit": run(&["rev-parse", "HEAD"]),
        "dirty": run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
    })
}

/// Versions of the workspace crates and of candle, from `Cargo.lock`.
fn crate_versions(root: &Path) -> BTreeMap<String, String> {
    const NAMES: [&str; 8] = [
        "candle-core",
        "candle-nn",
        "rsa-core",
        "pixreg-models",
        "pixreg-datasets",
        "pixreg-attacks",
        "pixreg-runner",
        "xtask",
    ];
    let lock: Option<toml::Table> = std::fs::read_to_string(root.join("Cargo.lock"))
        .ok()
        .and_then(|t| toml::from_str(&t).ok());
    let mut versions = BTreeMap::new();
    let packages = lock
        .as_ref()
        .and_then(|l| l.get("package"))
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    for p in packages {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|v| v.as_str()),
            p.get("version").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        if NAMES.contains(&name) {
            versions.insert(name.to_string(), version.to_string());
        }
    }
    versions
}

/// Host name, OS, CPU model and core count.
fn machine() -> Value {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
    });
    let memory_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    json!({
        "hostname": hostname,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_mib": memory_kib.map(|k| k / 1024),
    })
}

/// The invocation `args` (the program first) as a manifest records it: the program as
/// `cargo xtask`, every absolute path relative to the checkout `root` where it lies under it
/// or beside it (`../shared/...`), and one elsewhere (a binary in `/tmp`, say) as its file
/// name, so that a committed manifest names no path of the machine that wrote it.
pub fn portable_command(args: &[String], root: &Path) -> String {
    let portable = |arg: &str| -> String {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (Some(flag), value),
            _ => (None, arg),
        };
        let path = Path::new(value);
        if !path.is_absolute() {
            return arg.to_string();
        }
        let relative = relative_to(path, root);
        let value = if relative.is_absolute() {
            path.file_name()
                .map_or(value.into(), |n| n.to_string_lossy().into_owned())
        } else {
            relative.display().to_string()
        };
        flag.map_or(value.clone(), |f| format!("{f}={value}"))
    };
    std::iter::once("cargo xtask".to_string())
        .chain(args.iter().skip(1).map(|a| portable(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything about this invocation that belongs in `manifest.json`.
pub fn manifest(
    plan: &Plan,
    paths: &Paths,
    root: &Path,
    report: &ExecReport,
    total_seconds: f64,
    command: &str,
) -> Value {
    let runs: Vec<Value> = plan
        .runs
        .iter()
        .map(|r| {
            let state: Option<Value> =
                std::fs::read_to_string(paths.run_dir(&r.id).join("state.json"))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
            let measured: Option<Measurement> =
                std::fs::read_to_string(paths.measurement_file(&r.id))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
            json!({
                "id": r.id,
                "config": r.config_toml,
                "fgsm_surrogate": r.surrogate.map(|s| plan.runs[s].id.clone()),
                "reused": report.reused.contains(&r.id),
                "failed": report.failures.get(&r.id),
                "untrained": report.untrained.get(&r.id),
                "train_seconds": state.as_ref().and_then(|s| s["train_seconds"].as_f64()),
                "train_wall_seconds": measured.as_ref().map(|m| m.wall_seconds),
                "peak_rss_mib": state.as_ref().and_then(|s| s["peak_rss_mib"].as_f64()),
                "targets_seconds": state.as_ref().and_then(|s| s["targets_seconds"].as_f64()),
                "xtask_wall_seconds_this_invocation": report.wall_seconds.get(&r.id),
            })
        })
        .collect();
    json!({
        "table": plan.table.name,
        "title": plan.table.title,
        "profile": plan.profile,
        "seeds": plan.seeds,
        "first_seed": plan.first_seed,
        "command": command,
        "git": git_state(root),
        "crates": crate_versions(root),
        "machine": machine(),
        "runs_dir": relative_to(&paths.runs_dir, root),
        "data_dir": relative_to(&paths.data_dir, root),
        "wall_seconds": total_seconds,
        "runs": runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_commands_name_no_path_of_this_machine() {
        let args: Vec<String> = [
            "/opt/tools/xtask",
            "reproduce",
            "table1",
            "--runs-dir",
            "/home/alice/pixreg/experiments/runs",
            "--pixreg",
            "/opt/tools/pixreg",
            "--data-dir=/home/alice/shared/datasets",
            "--variants",
            "k 8",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            portable_command(&args, Path::new("/home/alice/pixreg")),
            "cargo xtask reproduce table1 --runs-dir experiments/runs --pixreg pixreg \
             --data-dir=../shared/datasets --variants k 8"
        );
    }
}
