//! Fault injection for the crash tests: `PIXREG_FAULT_KILL_AT=<point>@<epoch>` makes the
//! process kill itself with `SIGKILL` (no destructor, no flush, exactly like `kill -9`) when
//! the epoch commit of epoch `<epoch>` reaches `<point>`. The points, in commit order, are
//! [`COMMIT_POINTS`]; each one names the file that has just been written.
//!
//! Unset (always, outside tests), [`maybe_kill`] costs one environment lookup per commit step.

/// The steps of an epoch commit after which a crash test can kill the process: the last
/// weights, the optimizer state and the best checkpoint written, `metrics.jsonl`,
/// `steps.jsonl` and the TensorBoard event file rewritten, `state.json` committed, the
/// superseded files removed.
pub const COMMIT_POINTS: [&str; 8] = [
    "last",
    "optimizer",
    "best",
    "metrics",
    "steps",
    "events",
    "state",
    "cleanup",
];

/// Environment variable read by [`maybe_kill`].
pub const FAULT_ENV: &str = "PIXREG_FAULT_KILL_AT";

/// Kills the process when [`FAULT_ENV`] names this `point` of `epoch`.
pub fn maybe_kill(point: &str, epoch: usize) {
    let Ok(spec) = std::env::var(FAULT_ENV) else {
        return;
    };
    if spec == format!("{point}@{epoch}") {
        // SAFETY: kill(2) on our own pid with a constant signal has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
