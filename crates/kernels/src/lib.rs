//! # pixreg-kernels
//!
//! pixreg's CPU backend: fast kernels for the model's heavy operations, as candle custom ops.
//! It imports no pixreg crate; `pixreg-models`' `ops` module is the one place that chooses
//! between these kernels (CPU, float32, [`enabled`]) and candle's own composition (any other
//! device or type), as candle-nn does for its fused ops.
//!
//! candle 0.11's CPU convolution backward is a direct dot-product loop and its batch norm is a
//! chain of full-tensor passes; these kernels replace them on the CPU (CUDA keeps candle's
//! ops). Each kernel is a [`candle_core::CustomOp1`]/[`CustomOp2`](candle_core::CustomOp2)/
//! [`CustomOp3`](candle_core::CustomOp3) whose `bwd` builds the gradients with further CPU
//! kernels, so candle's autograd (first order) works through them.
//!
//! * [`gemm`]: the convolution geometry and the GEMM call every convolution kernel makes
//!   (the `gemm` crate, AVX-512 kernels selected at run time, portable fallback otherwise).
//! * [`conv`]: 2-D convolution (no bias, dilation 1, one group, any stride and padding):
//!   forward = im2col + GEMM, input gradient = GEMM (`Wᵀ·dY`) + col2im, weight gradient =
//!   GEMM (`dY·colᵀ`); rayon-parallel over groups of images (the column matrices and their
//!   adjoint: the private `columns` module, stride-2 3×3 taps through phase sub-planes). 3×3
//!   stride-1 "same" convolutions with at least 16 channels go to [`winograd`] instead.
//! * [`winograd`]: Winograd F(2×2, 3×3) forward, input and weight gradients (2.25× fewer
//!   multiplications than im2col; 16 GEMMs over transformed tiles per band).
//! * [`norm`]: training-mode batch norm (one pass for the statistics, one to normalise; two
//!   passes backward) with PyTorch's CPU accuracy (float64 sums), the per-channel affine used
//!   by eval-mode batch norm, ReLU with PyTorch's gradient convention, and the fused
//!   batch norm + ReLU and residual add + ReLU.
//! * [`conv_bn`]: a convolution, training-mode batch norm and optional ReLU as one op (the
//!   convolution's output stays inside the op).
//! * [`block`]: a whole ResNet basic block in training mode as one op (its intermediate
//!   tensors and their gradients stay inside it).
//! * [`sgd`]: the SGD momentum update in place (candle in-place ops, no backward).
//! * [`pair`]: the similarity head's centred cosine of feature pairs and their per-channel
//!   mean (one pass forward, one backward).
//! * [`heap`]: glibc heap settings for training processes.
//!
//! Layout assumptions: every tensor is float32, row-major and contiguous (the callers make
//! them so); images are NCHW, convolution weights `[O, C, kh, kw]`, per-channel vectors
//! `[C]`. Outputs are freshly allocated contiguous tensors.
//!
//! The elementwise and reduction loops are compiled for AVX-512 and for baseline x86-64 and
//! picked at run time (`simd_fn!`); the im2col/col2im scratch matrices are reused per thread.
//!
//! [`set_enabled`] switches every fast kernel off (for benchmarks and comparisons); it is on
//! by default.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use pixreg_kernels::conv::Conv2dOp;
//!
//! let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! assert!(pixreg_kernels::applies(&[&x, &w]));
//! let y = x.apply_op2(&w, Conv2dOp { stride: 1, padding: 1 })?;
//! assert_eq!(y.dims(), &[2, 4, 8, 8]);
//! // An interior output sees all 27 ones of the 3×3×3 window.
//! assert_eq!(y.get(0)?.get(0)?.get(4)?.get(4)?.to_scalar::<f32>()?, 27.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{bail, CpuStorage, DType, Layout, Tensor};
use rayon::prelude::*;

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

/// Threads the kernels spread their work over (rayon's global pool).
///
/// Rayon rather than candle's own barrier pool: candle's main thread spin-waits for its
/// workers, which collapses when the cores are shared (measured in `experiments/results/perf/2026-11-rounds.md`);
/// rayon's idle threads sleep.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` on a thread of a rayon pool of [`threads`] threads (rayon's defaults:
/// `RAYON_NUM_THREADS`, else one per core), blocking the caller until it returns; the
/// kernels `f` calls then spread their work over that pool. With one thread, `f` runs on
/// the caller.
///
/// Why: a kernel called from outside the pool hands all its tasks to the pool's threads and
/// puts the caller to sleep until they are done, one wake-up and one sleep per kernel call;
/// called from a pool thread, it runs its first tasks itself while the other thread takes the
/// rest. A width-8 ResNet18 training step with two threads (1×28×28, 64 images + 16 pairs,
/// idle machine, three alternating runs): 52–66 ms from outside the pool, 48–55 ms inside.
/// Binaries wrap their whole run in it (`pixreg`'s commands, the benchmarks); code that
/// already runs on a rayon thread gains nothing from it.
///
/// Its threads, the caller's for the duration of `f` included, flush subnormal floats to
/// zero (x86-64: MXCSR's FTZ and DAZ; elsewhere nothing changes). Why: every operation on a
/// subnormal costs a microcode assist of the order of a hundred cycles, and training can
/// make them: table7's α 20, Th 0.2 run of seed 2 (Fashion-MNIST, width 8) had 4 982
/// subnormal values in its momentum buffers after two epochs (the weights of channels whose
/// gradients had all but vanished) and trained at 580–620 s an epoch against 81 s for the
/// other cells beside it. Results change only where a value below 1.2e-38 would have been
/// kept, as with PyTorch's `torch.set_flush_denormal(True)`.
///
/// ```
/// let sum = pixreg_kernels::on_kernel_pool(|| (0..10).sum::<i32>());
/// assert_eq!(sum, 45);
/// ```
pub fn on_kernel_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let _restore = subnormals::FlushedHere::new();
    let pool = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| subnormals::flush_on_this_thread())
        .build();
    match pool {
        Ok(pool) if pool.current_num_threads() > 1 => pool.install(f),
        // One thread (the kernels run on their caller then), or no pool because threads
        // could not be spawned (the kernels fall back to the global one).
        _ => f(),
    }
}

/// While alive, the other threads of the caller's rayon pool wait for work spinning instead
/// of sleeping.
///
/// Why: between two kernels rayon puts its idle threads to sleep, and every kernel call
/// wakes them again. A width-8 ResNet18 training step with two threads (1×28×28, 64 images
/// and 16 pairs, this 2-vCPU VM) spent 12 % of its samples in the scheduler (futex wake-ups
/// and sleeps, `perf`), and its second thread sat idle for about 13 of its 54–59 ms; with the
/// threads spinning through the steps it takes 47–50 ms (width 16: 131 → 122 ms). Spinning
/// threads burn their cores, so hold one over a loop of kernel calls (a training epoch's
/// steps), not over idle waits; a spinning thread that finds no work for a while yields its
/// core to the OS scheduler, so that other processes on an oversubscribed machine still run.
/// Outside a pool, with one thread, or with [`SPIN_VAR`] set to `0`, nothing spins.
///
/// ```
/// let total = pixreg_kernels::on_kernel_pool(|| {
///     let _spinning = pixreg_kernels::SpinningThreads::start();
///     (0..100).sum::<i32>()
/// });
/// assert_eq!(total, 4950);
/// ```
#[derive(Debug)]
#[must_use = "the threads stop spinning when this is dropped"]
pub struct SpinningThreads {
    done: Option<Arc<AtomicBool>>,
}

impl SpinningThreads {
    /// Sets the pool's other threads spinning (see the type).
    pub fn start() -> Self {
        let (Some(owner), helpers) = (rayon::current_thread_index(), threads().saturating_sub(1))
        else {
            return Self { done: None };
        };
        if helpers == 0 || !spinning_allowed() {
            return Self { done: None };
        }
        let done = Arc::new(AtomicBool::new(false));
        for _ in 0..helpers {
            let done = Arc::clone(&done);
            rayon::spawn(move || {
                // The starting thread never spins: it may pick one of these jobs up itself
                // while it waits for a stolen task, and would then wait for its own drop.
                if rayon::current_thread_index() != Some(owner) {
                    spin_until(&done);
                }
            });
        }
        Self { done: Some(done) }
    }
}

/// The environment variable that, set to `0`, keeps [`SpinningThreads`] from spinning (the
/// threads then sleep between kernels as rayon's do). Processes that share the cores with
/// others of their kind set it, e.g. `cargo xtask reproduce --jobs N` for its children; the
/// arithmetic is the same either way.
pub const SPIN_VAR: &str = "PIXREG_SPIN_THREADS";

/// Whether [`SPIN_VAR`] leaves spinning on (read once per process).
fn spinning_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var_os(SPIN_VAR).is_none_or(|v| v != "0"))
}

impl Drop for SpinningThreads {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.store(true, Ordering::Release);
        }
    }
}

/// Runs pending pool work until `done` is set: spinning while work keeps coming, yielding
/// the core to the OS after [`IDLE_SPINS`] rounds without any.
fn spin_until(done: &AtomicBool) {
    let mut idle = 0u32;
    while !done.load(Ordering::Acquire) {
        if let Some(rayon::Yield::Executed) = rayon::yield_now() {
            idle = 0;
        } else if idle < IDLE_SPINS {
            idle += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Idle rounds of a spinning thread before it yields its core to the OS on each further
/// round. Why this many: alone on the machine the count made no difference (a width-8 step
/// with two threads took 47–51 ms yielding at once, after 1 024 or 65 536 rounds, or never);
/// with two such steps running at once on 2 cores, yielding at once took 98–101 ms a step
/// (a storm of `sched_yield` calls) and yielding after 1 024 idle rounds 81–95 ms, as without
/// spinning (79–83 ms).
const IDLE_SPINS: u32 = 1 << 10;

/// Runs `f` on every item in parallel; returns the results in order.
///
/// A single item, or a pool of one thread, runs on the calling thread. Why: the training
/// step's caller is not a pool thread, so handing work to the pool costs a wake-up of the
/// worker and a sleep of the caller per call; with one thread that was ≈ 7 % of a base-16
/// step (scheduler time in `perf`).
pub(crate) fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync + Send) -> Vec<R> {
    if items.len() <= 1 || threads() == 1 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().map(f).collect()
}

/// Splits `out` into runs of whole `plane`-sized blocks (at least `min_len` values each) and
/// runs `f(first_plane_index, run)` on them in parallel.
pub(crate) fn par_planes(
    out: &mut [f32],
    plane: usize,
    min_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if plane == 0 || out.is_empty() {
        return;
    }
    let planes = out.len() / plane;
    let by_size = (min_len / plane).max(1);
    let by_threads = planes.div_ceil(4 * threads()).max(1);
    let per = by_size.max(by_threads);
    let tasks: Vec<(usize, &mut [f32])> = out
        .chunks_mut(per * plane)
        .enumerate()
        .map(|(i, run)| (i * per, run))
        .collect();
    par_map(tasks, |(first, run)| f(first, run));
}

/// Whether this CPU runs the AVX-512 versions of the kernels' loops (checked once, cached).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// Defines a kernel loop compiled twice, for AVX-512 and for baseline x86-64 (or any other
/// target), and dispatched at run time. The crate is compiled for baseline x86-64, so the
/// fallback is portable; Rust never contracts `a·b + c` into FMA implicitly, so both versions
/// round identically.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,avx,sse4.2")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::has_avx512() {
                // SAFETY: the target features of `avx512` were detected on this CPU.
                return unsafe { avx512($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}

pub mod block;
pub mod candle_pool;
mod columns;
pub mod conv;
pub mod conv_bn;
pub mod direct;
pub mod gemm;
pub mod heap;
pub mod norm;
pub mod pair;
pub mod sgd;
mod subnormals;
pub mod winograd;

/// A buffer of `len` float32 values whose contents are not initialised, for kernel outputs
/// that are written in full before anything reads them.
///
/// Why: the outputs are 1–17 MB, and glibc serves such sizes from its heap once a buffer of
/// that size has been freed, where `vec![0.0; len]` (`calloc`) must `memset` it; the kernels
/// then overwrite every value anyway (the `memset`s were ≈ 2.5 % of a base-64 training step
/// in `perf`). The same allocation (and the same lint allowance) as candle's own
/// `CpuDevice::alloc_uninit`: float32 is `Copy`, has no drop glue and every bit pattern is a
/// value, but Rust still counts reading an uninitialised value as undefined behaviour, hence
/// the contract below (clippy's `uninit_vec` lint flags every such `set_len`).
///
/// # Safety
///
/// The caller must write every element before any element is read, and must not let the
/// buffer escape (return it, wrap it in a tensor) until it has.
#[allow(clippy::uninit_vec)]
pub(crate) unsafe fn uninit_vec(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`; the caller writes every element before reading (above).
    unsafe { v.set_len(len) };
    v
}

thread_local! {
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with two scratch buffers of at least `a` and `b` values, kept per thread between
/// calls (so the large im2col matrices are neither re-allocated nor zero-filled). Their
/// contents are arbitrary: `f` must write before reading.
pub(crate) fn with_scratch<R>(
    a: usize,
    b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let [buf_a, buf_b] = &mut *bufs;
            if buf_a.len() < a {
                buf_a.resize(a, 0.0);
            }
            if buf_b.len() < b {
                buf_b.resize(b, 0.0);
            }
            f(&mut buf_a[..a], &mut buf_b[..b])
        }
        // Re-entered on this thread: use fresh buffers.
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}
