//! Sizes checked before anything is allocated: a config whose training step (or an `rsa`
//! matrix) cannot fit in this machine's memory fails with one line saying how much it needs,
//! instead of an allocator abort minutes later.

use anyhow::{bail, Result};

/// Memory the kernel says can be allocated without swapping (`MemAvailable` of
/// `/proc/meminfo`), in bytes; `None` where it does not report it (the check is then skipped).
pub fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// `bytes` in GiB, for messages.
pub fn gib(bytes: f64) -> f64 {
    bytes / f64::from(1u32 << 30)
}

/// Fails when `needed_bytes` exceed the available memory; `what` names the thing and `hint`
/// says what to change.
pub fn check_fits(needed_bytes: f64, what: &str, hint: &str) -> Result<()> {
    if !needed_bytes.is_finite() {
        bail!("{what} is too large to size; {hint}");
    }
    if let Some(available) = available_memory_bytes() {
        if needed_bytes > available as f64 {
            bail!(
                "{what} needs at least {:.1} GiB of memory and {:.1} GiB is available; {hint}",
                gib(needed_bytes),
                gib(available as f64)
            );
        }
    }
    Ok(())
}

/// A lower bound on the memory of one training step of a ResNet with `base_channels` on
/// `images` inputs (classification batch plus both halves of the pair batch) of
/// `pixels_per_image`, in bytes: weights, gradients and momentum of its parameters, plus the
/// activations of its first stage, which backward keeps (input and output of two blocks of
/// two convolutions with batch norm: at least 8 maps of `base_channels × pixels` per image).
pub fn training_step_bytes(base_channels: usize, images: usize, pixels_per_image: usize) -> f64 {
    let w = base_channels as f64;
    // ResNet18 has 11.2 M parameters at width 64, all in 3×3 (and 1×1) convolutions whose
    // count grows with the square of the width.
    let parameters = 11.2e6 * (w / 64.0).powi(2);
    let first_stage = 8.0 * w * pixels_per_image as f64 * images as f64;
    4.0 * (3.0 * parameters + first_stage)
}
