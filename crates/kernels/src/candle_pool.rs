//! Keeps candle's own CPU thread pool off the cores the kernels' threads use.
//!
//! Why: the kernels run on rayon's pool ([`crate::threads`]), but candle's elementwise ops of
//! 64 Ki values or more (the gradient sums of its backward pass: a residual block's input
//! gets two gradients to add) run on candle's separate "barrier pool", whose workers spin
//! for 25 000 rounds after each op before they sleep. With two threads on a 2-core machine
//! that spinning took the core a rayon thread was about to use: 18 % of the samples of a
//! width-8 training step were candle's idle workers (`perf`), and the step took 88–101 ms;
//! with candle's ops on the calling thread it took 70–72 ms (ResNet18 base 8, 1×28×28, 64
//! images + 16 pairs, two threads, idle machine, 2026-12-06). With one thread candle starts
//! no workers, so nothing changes there.
//!
//! [`run_candle_ops_on_caller`] sets `CANDLE_NUM_THREADS=1` (candle then starts no workers)
//! unless the user set it. It is for binaries to call once at start-up, before any thread
//! is spawned and before the first candle op (`pixreg`, `cargo xtask bench` do): a library
//! should not change its host's environment.
//!
//! ```
//! let outcome = pixreg_kernels::candle_pool::run_candle_ops_on_caller();
//! println!("candle pool: {outcome}");
//! ```

use std::fmt;

/// candle's variable for the size of its CPU pool (the caller counts as one thread).
pub const THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// What [`run_candle_ops_on_caller`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolOutcome {
    /// `CANDLE_NUM_THREADS=1`: candle's ops run on the thread that calls them.
    OnCaller,
    /// The user set `CANDLE_NUM_THREADS` (to the value kept here): nothing changed.
    KeptForEnvironment(String),
}

impl fmt::Display for PoolOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OnCaller => write!(f, "candle's ops on the calling thread ({THREADS_VAR}=1)"),
            Self::KeptForEnvironment(v) => write!(f, "{THREADS_VAR}={v} kept from the environment"),
        }
    }
}

/// Runs candle's own CPU ops on the calling thread (`CANDLE_NUM_THREADS=1`) unless the user
/// set `CANDLE_NUM_THREADS`. Call it once, first thing in a binary's `main` (it sets an
/// environment variable, which must not race with other threads reading the environment);
/// see the module documentation for why.
pub fn run_candle_ops_on_caller() -> PoolOutcome {
    match std::env::var(THREADS_VAR) {
        Ok(value) => PoolOutcome::KeptForEnvironment(value),
        Err(_) => {
            std::env::set_var(THREADS_VAR, "1");
            PoolOutcome::OnCaller
        }
    }
}
