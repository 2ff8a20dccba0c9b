//! Records the git commit the binary was built from (`PIXREG_GIT_COMMIT`, with `-dirty` when
//! the work tree had uncommitted changes), so every result can name the code that made it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(sha) => {
            // Committed run folders and tables are data the binary does not read: a
            // finished run updating them does not make the code dirty.
            let dirty = git(&[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)experiments/runs",
                ":(top,exclude)experiments/results",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{sha}-dirty")
            } else {
                sha
            }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=PIXREG_GIT_COMMIT={commit}");
    // Re-run when HEAD moves or the index changes (a commit, a checkout, a `git add`).
    for path in ["../../.git/HEAD", "../../.git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
