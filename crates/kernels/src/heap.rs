//! glibc heap settings for training processes.
//!
//! Why: a training step allocates and frees the same few hundred buffers of up to tens of
//! megabytes every step (activations, gradients, candle's zero tensors for gradient
//! accumulation). With glibc's defaults, freed memory at the top of the heap is returned to
//! the kernel (`M_TRIM_THRESHOLD`, 128 KiB) and large blocks are `mmap`ed afresh, so every
//! step page-faults its working set back in; with more than one thread each of those faults
//! that replaces a zero page also sends a TLB-shootdown interrupt to the other cores. Most of
//! them land on the thread that runs candle's backward pass, which the kernel threads then
//! wait for. Measured on the 2-core development machine (ResNet18 base 64 + 16 pairs, batch
//! 64): 10–12 % off the step time, with one thread and with two (`experiments/results/perf/2026-11-rounds.md`).
//!
//! [`retain_freed_memory`] keeps freed memory in the process (no trimming) and serves blocks
//! up to 32 MiB from the heap, so after the first step the working set stays mapped. The
//! peak resident set does not grow (the same blocks are reused); memory freed after the peak
//! is simply not handed back until the process ends, which suits a process that trains.
//! It is for binaries to call once at start-up (`pixreg`, `cargo xtask bench` do): a
//! library should not change its host's allocator.
//!
//! ```
//! let outcome = pixreg_kernels::heap::retain_freed_memory();
//! println!("heap: {outcome}");
//! ```

use std::fmt;

/// Environment variable that, when set to anything but `0` or the empty string, leaves
/// glibc's heap settings alone.
pub const KEEP_DEFAULTS_VAR: &str = "PIXREG_KEEP_MALLOC_DEFAULTS";

/// glibc's own environment variables and tunables for these settings: when the user set any
/// of them, theirs win.
const GLIBC_VARS: [&str; 3] = [
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
];

/// Largest block served from the heap rather than by `mmap`: glibc's maximum for this
/// setting on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`); larger values are refused.
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;

/// What [`retain_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapOutcome {
    /// Trimming off, blocks up to [`MMAP_THRESHOLD_BYTES`] from the heap.
    Retained,
    /// [`KEEP_DEFAULTS_VAR`] is set: nothing changed.
    KeptByRequest,
    /// The user configured glibc's heap through its own environment variables (named):
    /// nothing changed.
    KeptForEnvironment(&'static str),
    /// Not glibc on Linux: nothing to change.
    Unsupported,
    /// glibc refused a setting (`mallopt` returned 0).
    Refused,
}

impl fmt::Display for HeapOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retained => write!(
                f,
                "freed memory retained (no trimming, blocks up to {} MiB from the heap)",
                MMAP_THRESHOLD_BYTES >> 20
            ),
            Self::KeptByRequest => write!(f, "glibc defaults kept ({KEEP_DEFAULTS_VAR} is set)"),
            Self::KeptForEnvironment(var) => write!(f, "glibc settings from {var} kept"),
            Self::Unsupported => write!(f, "not glibc: allocator left as it is"),
            Self::Refused => write!(f, "glibc refused the heap settings: defaults kept"),
        }
    }
}

/// Whether to change the heap settings, given a reader of environment variables.
fn decide(var: impl Fn(&str) -> Option<String>) -> Option<HeapOutcome> {
    if var(KEEP_DEFAULTS_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
        return Some(HeapOutcome::KeptByRequest);
    }
    GLIBC_VARS.iter().find_map(|&name| match var(name) {
        Some(value) if name != "GLIBC_TUNABLES" || value.contains("glibc.malloc.") => {
            Some(HeapOutcome::KeptForEnvironment(name))
        }
        _ => None,
    })
}

/// Keeps freed heap memory in the process and serves blocks up to 32 MiB from the heap
/// (glibc's `mallopt(M_TRIM_THRESHOLD)` and `mallopt(M_MMAP_THRESHOLD)`), unless
/// [`KEEP_DEFAULTS_VAR`] or glibc's own `MALLOC_*` variables say otherwise. Call it once,
/// early, from a binary's `main`; see the module documentation for why.
pub fn retain_freed_memory() -> HeapOutcome {
    if let Some(outcome) = decide(|name| std::env::var(name).ok()) {
        return outcome;
    }
    glibc::retain_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::os::raw::c_int;

    use super::{HeapOutcome, MMAP_THRESHOLD_BYTES};

    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn retain_freed_memory() -> HeapOutcome {
        // SAFETY: `mallopt` only changes the allocator's parameters (under its own lock);
        // both values are in the ranges glibc documents for these parameters.
        let ok = unsafe {
            mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1
        };
        if ok {
            HeapOutcome::Retained
        } else {
            HeapOutcome::Refused
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    use super::HeapOutcome;

    pub(super) fn retain_freed_memory() -> HeapOutcome {
        HeapOutcome::Unsupported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_change_only_without_user_configuration() {
        assert_eq!(decide(env(&[])), None);
        assert_eq!(decide(env(&[(KEEP_DEFAULTS_VAR, "0")])), None);
        assert_eq!(decide(env(&[(KEEP_DEFAULTS_VAR, "")])), None);
        assert_eq!(
            decide(env(&[(KEEP_DEFAULTS_VAR, "1")])),
            Some(HeapOutcome::KeptByRequest)
        );
        assert_eq!(
            decide(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])),
            Some(HeapOutcome::KeptForEnvironment("MALLOC_TRIM_THRESHOLD_"))
        );
        assert_eq!(
            decide(env(&[("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")])),
            Some(HeapOutcome::KeptForEnvironment("GLIBC_TUNABLES"))
        );
        assert_eq!(
            decide(env(&[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")])),
            None
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        assert_eq!(glibc::retain_freed_memory(), HeapOutcome::Retained);
    }
}
