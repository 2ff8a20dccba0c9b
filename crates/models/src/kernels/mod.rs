//! Fast CPU kernels for the model's heavy operations, as candle custom ops.
//!
//! candle 0.11's CPU convolution backward is a direct dot-product loop and its batch norm is a
//! chain of full-tensor passes; these kernels replace them on the CPU (CUDA keeps candle's
//! ops). Each kernel is a [`candle_core::CustomOp1`]/[`CustomOp2`](candle_core::CustomOp2)/
//! [`CustomOp3`](candle_core::CustomOp3) whose `bwd` builds the gradients with further CPU
//! kernels, so candle's autograd (first order) works through them.
//!
//! * [`conv`]: 2-D convolution (no bias, dilation 1, one group, any stride and padding):
//!   forward = im2col + GEMM, input gradient = GEMM (`Wᵀ·dY`) + col2im, weight gradient =
//!   GEMM (`dY·colᵀ`); rayon-parallel over batch chunks, GEMMs by the `gemm` crate (AVX-512
//!   kernels selected at run time, portable fallback otherwise).
//! * [`norm`]: training-mode batch norm (one pass for the statistics, one to normalise; two
//!   passes backward) with PyTorch's CPU accuracy (float64 sums), the per-channel affine used
//!   by eval-mode batch norm, and ReLU with PyTorch's gradient convention.
//!
//! Layout assumptions: every tensor is float32, row-major and contiguous (the callers in
//! [`crate::ops`] make them so); images are NCHW, convolution weights `[O, C, kh, kw]`,
//! per-channel vectors `[C]`. Outputs are freshly allocated contiguous tensors.
//!
//! [`set_enabled`] switches the fast path off (for benchmarks and comparisons); it is on by
//! default.

pub mod conv;
pub mod norm;

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{bail, CpuStorage, DType, Layout, Tensor};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fast CPU kernels on (the default) or off (candle's own ops everywhere),
/// process-wide.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the fast CPU kernels are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the fast kernels apply to these tensors: switched on, all on the CPU, all float32.
pub fn applies(tensors: &[&Tensor]) -> bool {
    enabled()
        && tensors
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The contiguous float32 data of a custom-op argument.
pub(crate) fn f32_data<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("{what}: expected float32"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: the kernel needs a contiguous tensor"),
    }
}

/// How many parallel tasks to split `items` independent items into.
pub(crate) fn task_count(items: usize) -> usize {
    rayon::current_num_threads().clamp(1, items.max(1))
}
