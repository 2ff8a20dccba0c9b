//! Killing `cargo xtask reproduce` ends its `pixreg` children (they would otherwise keep
//! training, and a rerun would start a second trainer on the same run).

// Shared test helpers: this test needs only the fake data directory.
#[allow(dead_code)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn killing_xtask_ends_its_pixreg_children() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::fake_data_dir(&data);
    let pid_file = tmp.path().join("child.pid");
    let stub = tmp.path().join("pixreg");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 60\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let mut xtask = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "reproduce",
            "table1",
            "--profile",
            "smoke",
            "--rows",
            "mnist",
        ])
        .args(["--runs-dir", &arg(&tmp.path().join("runs"))])
        .args(["--data-dir", &arg(&data)])
        .args(["--out", &arg(&tmp.path().join("out"))])
        .args(["--pixreg", &arg(&stub)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the child to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<i32>().is_ok())
    });
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child));
    // SAFETY: kill(2) with a pid this test spawned.
    unsafe {
        libc::kill(xtask.id() as libc::pid_t, libc::SIGTERM);
    }
    xtask.wait().unwrap();
    wait_for("the child to end", Duration::from_secs(10), || {
        !alive(child)
    });
}
