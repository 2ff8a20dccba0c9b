//! Flushing subnormal floats to zero on the kernels' threads (see [`crate::on_kernel_pool`]).

/// MXCSR's flush-to-zero (results) and denormals-are-zero (inputs) bits.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: `stmxcsr` stores the 32-bit register into the local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn set_mxcsr(csr: u32) {
    // SAFETY: `ldmxcsr` loads a value read from the register with only the FTZ/DAZ bits
    // changed, which are valid on every x86-64 CPU with SSE2.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly)) };
}

/// Makes this thread flush subnormal results and inputs to zero, for good (pool threads).
pub(crate) fn flush_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    set_mxcsr(mxcsr() | FTZ_DAZ);
}

/// Flushes subnormals on this thread until dropped, then restores what was there.
pub(crate) struct FlushedHere {
    #[cfg(target_arch = "x86_64")]
    previous: u32,
}

impl FlushedHere {
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let previous = mxcsr();
            set_mxcsr(previous | FTZ_DAZ);
            FlushedHere { previous }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushedHere {}
    }
}

impl Drop for FlushedHere {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        set_mxcsr(self.previous);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::hint::black_box;

    /// Half the smallest normal float32: a subnormal result unless flushed.
    fn half_of_smallest_normal() -> f32 {
        black_box(f32::MIN_POSITIVE) / black_box(2.0)
    }

    #[test]
    fn the_kernel_pool_flushes_subnormals_and_the_caller_gets_its_mode_back() {
        assert!(
            half_of_smallest_normal() > 0.0,
            "subnormals are kept by default"
        );
        assert_eq!(crate::on_kernel_pool(half_of_smallest_normal), 0.0);
        let on_workers = crate::on_kernel_pool(|| {
            crate::par_map((0..8).collect(), |_| half_of_smallest_normal())
        });
        assert!(on_workers.iter().all(|&v| v == 0.0), "{on_workers:?}");
        assert!(half_of_smallest_normal() > 0.0, "restored after the call");
    }
}
