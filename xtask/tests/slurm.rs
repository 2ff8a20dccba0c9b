//! The Slurm launcher: the generated scripts parse (`bash -n`) and the array maps every index
//! to exactly one planned run (checked by executing the array script with a stub `pixreg`).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use xtask::exec::Paths;
use xtask::slurm::{write_scripts, SlurmOptions};

fn bash_n(path: &Path) {
    let out = Command::new("bash").arg("-n").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn array_covers_every_run_once_and_scripts_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    common::fake_data_dir(&data);
    let plan = common::plan_table("table1", "quick", Some(2), &data);
    // 3 available datasets × 2 variants × 2 seeds; CIFAR-100 is missing.
    assert_eq!(plan.runs.len(), 12);

    // A stub pixreg that prints its arguments instead of training.
    let stub = root.join("target/release/pixreg");
    std::fs::create_dir_all(stub.parent().unwrap()).unwrap();
    std::fs::write(&stub, "#!/bin/sh\necho \"$@\"\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let paths = Paths {
        pixreg: stub.clone(),
        runs_dir: root.join("runs"),
        data_dir: data.clone(),
    };
    let dir = root.join("experiments/results/table1/quick/slurm");
    let args = ["table1".to_string(), "--profile".into(), "quick".into()];
    let directives = ["--gres=gpu:1".to_string(), "--time=04:00:00".into()];
    let scripts = write_scripts(
        &plan,
        &paths,
        &SlurmOptions {
            root: &root,
            dir: &dir,
            directives: &directives,
            reproduce_args: &args,
            xtask: &root.join("target/release/xtask"),
            build_pixreg: false,
        },
    )
    .unwrap();
    for script in [&scripts.array, &scripts.assemble, &scripts.submit] {
        bash_n(script);
        let text = std::fs::read_to_string(script).unwrap();
        assert!(
            !text.contains(root.to_str().unwrap()),
            "{} holds an absolute path:\n{text}",
            script.display()
        );
    }
    let array = std::fs::read_to_string(&scripts.array).unwrap();
    assert!(array.contains(&format!("#SBATCH --array=0-{}", plan.runs.len() - 1)));
    assert!(array.contains("#SBATCH --gres=gpu:1"));
    let assemble = std::fs::read_to_string(&scripts.assemble).unwrap();
    // No toolchain on the compute nodes: the assembly job runs the xtask binary.
    assert!(!assemble.contains("cargo"), "{assemble}");
    assert!(assemble.contains("\"$XTASK\" reproduce table1 --profile quick"));
    assert!(assemble.contains("XTASK=\"${XTASK:-target/release/xtask}\""));
    assert!(assemble.contains("--no-train"));
    let submit = std::fs::read_to_string(&scripts.submit).unwrap();
    assert!(submit.contains("--dependency=afterany:"));
    assert!(
        !submit.contains("cargo build"),
        "a given pixreg is not rebuilt"
    );

    let mut seen = BTreeSet::new();
    for index in 0..plan.runs.len() {
        let out = Command::new("bash")
            .arg(&scripts.array)
            .env("SLURM_ARRAY_TASK_ID", index.to_string())
            .env("SLURM_SUBMIT_DIR", &root)
            .output()
            .unwrap();
        assert!(out.status.success(), "index {index}: {:?}", out);
        let line = String::from_utf8(out.stdout).unwrap();
        let config = line
            .split_whitespace()
            .skip_while(|w| *w != "--config")
            .nth(1)
            .unwrap()
            .to_string();
        let id = Path::new(&config)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(id, plan.runs[index].id, "index {index}");
        assert!(line.starts_with("train "), "{line}");
        assert!(seen.insert(id), "index {index} repeats a run");
    }
    let planned: BTreeSet<String> = plan.runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(seen, planned);
    for bad in [plan.runs.len(), plan.runs.len() + 3] {
        let out = Command::new("bash")
            .arg(&scripts.array)
            .env("SLURM_ARRAY_TASK_ID", bad.to_string())
            .env("SLURM_SUBMIT_DIR", &root)
            .output()
            .unwrap();
        assert!(!out.status.success(), "index {bad} must not map to a run");
    }
}

#[test]
fn shell_quote_round_trips_through_bash() {
    for s in ["plain", "with space", "it's", "$HOME", "a\"b"] {
        let quoted = xtask::slurm::shell_quote(s);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
    }
}
