//! The shapes of a convolution ([`Geometry`]) and the one GEMM call every convolution kernel
//! makes (`matmul`: `gemm`'s microkernels on strided operands), shared by the im2col
//! ([`crate::conv`]) and Winograd ([`crate::winograd`]) paths.

use ::gemm::Parallelism;
use candle_core::bail;

#[cfg(target_arch = "x86_64")]
mod row_dots;
#[cfg(target_arch = "x86_64")]
mod short_k;

use crate::threads;

/// The shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (all four sides).
    pub padding: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// The geometry of convolving `x_dims` (`[N, C, H, W]`) with `w_dims` (`[O, C, kh, kw]`).
    pub fn new(
        x_dims: &[usize],
        w_dims: &[usize],
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        let (&[n, c, h, w], &[o, wc, kh, kw]) = (x_dims, w_dims) else {
            bail!("conv2d: input {x_dims:?} and weight {w_dims:?} must both be 4-D");
        };
        if wc != c {
            bail!("conv2d: input has {c} channels but the weight expects {wc}");
        }
        if stride == 0 || kh == 0 || kw == 0 {
            bail!("conv2d: stride {stride} and kernel {kh}×{kw} must be positive");
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            bail!("conv2d: kernel {kh}×{kw} larger than the padded input {h}×{w} (+{padding})");
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            padding,
            oh: (h + 2 * padding - kh) / stride + 1,
            ow: (w + 2 * padding - kw) / stride + 1,
        })
    }

    /// Rows of the column matrix, `C·kh·kw`.
    pub(crate) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    pub(crate) fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    pub(crate) fn chw(&self) -> usize {
        self.c * self.h * self.w
    }

    /// For a stride-1 square-kernel convolution with padding `p < k` (not pointwise): the
    /// geometry of its input gradient as a forward convolution of `dy` (`[N, O, OH, OW]`)
    /// with the flipped, transposed kernel (`[C, O, kh, kw]`) and padding `k − 1 − p`.
    ///
    /// Why: that runs im2col + `W'·col` GEMMs (`C × O·k² × columns`, the forward's shape) in
    /// place of `Wᵀ·dY` GEMMs with the short inner dimension O (`C·k² × O × columns`) plus
    /// col2im's accumulation; see `experiments/results/perf/2026-11-rounds.md` for the measured gain.
    pub(crate) fn input_gradient_as_conv(&self) -> Option<Self> {
        let square = self.kh == self.kw && self.padding < self.kh;
        if self.stride != 1 || !square || self.pointwise() {
            return None;
        }
        let (x_dims, w_dims) = (
            [self.n, self.o, self.oh, self.ow],
            [self.c, self.o, self.kh, self.kw],
        );
        Self::new(&x_dims, &w_dims, 1, self.kh - 1 - self.padding).ok()
    }

    /// A 1×1, stride-1, unpadded convolution: the image is its own column matrix.
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output positions `lo..hi` along one axis whose input index `pos·stride + offset −
    /// padding` falls inside `0..len`.
    pub(crate) fn valid(&self, out_len: usize, len: usize, offset: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.padding.saturating_sub(offset).div_ceil(s);
        let hi = (len + self.padding)
            .saturating_sub(offset)
            .div_ceil(s)
            .min(out_len);
        (lo.min(hi), hi)
    }

    pub(crate) fn output_dims(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }

    /// For stride 1 with `OW = W` ("same" padding horizontally), the valid output positions of
    /// tap `(i, j)` in rows `oy0..oy1` (`oy0 < oy1`, columns `ox0..ox1`, non-empty) form one
    /// contiguous run of output positions `oy·OW + ox` that maps onto one contiguous run of
    /// the input plane, shifted by `(i − p)·W + j − p`: `Some((first output position, first
    /// input index, length))`. The run also covers the columns outside `ox0..ox1` of the rows
    /// between (they read/write the neighbouring row's edge, so the callers zero them).
    pub(crate) fn shifted_run(
        &self,
        (oy0, oy1): (usize, usize),
        (ox0, ox1): (usize, usize),
        (i, j): (usize, usize),
    ) -> Option<(usize, usize, usize)> {
        if self.stride != 1 || self.ow != self.w || oy0 >= oy1 || ox0 >= ox1 {
            return None;
        }
        let start = oy0 * self.ow + ox0;
        let end = (oy1 - 1) * self.ow + ox1;
        let src = (oy0 + i - self.padding) * self.w + ox0 + j - self.padding;
        Some((start, src, end - start))
    }
}

/// A read-only strided matrix: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl Mat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// How a GEMM destination `m×n` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DstLayout {
    /// Element `(i, j)` at `i·row_stride + j` (`row_stride ≥ n`: a block of a wider matrix).
    RowMajor(usize),
    /// Element `(i, j)` at `j·m + i` (the layout `gemm`'s microkernels write natively: for the
    /// weight gradient it lets `gemm` pack the small `dY` block instead of the 9× larger
    /// column matrix, see `crate::conv`'s `weight_grad_layout`).
    ColMajor,
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, `dst` stored as `layout` says.
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    layout: DstLayout,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // (column stride, row stride, extent, whether distinct elements are distinct addresses)
    let (dst_cs, dst_rs, dst_len, distinct) = match layout {
        DstLayout::RowMajor(rs) => (1, rs, (m - 1) * rs + n, rs >= n),
        DstLayout::ColMajor => (m, 1, m * n, true),
    };
    // Memory-safety guard for the raw GEMM call below; the geometry is validated before any
    // kernel runs, so this never fires on user input.
    assert!(
        distinct && dst.len() >= dst_len && lhs.fits(m, k) && rhs.fits(k, n),
        "conv2d kernel: GEMM operands out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return;
    }
    // Short inner dimensions over contiguous `rhs` rows, and small products of rows that are
    // both contiguous along the inner dimension, skip `gemm`'s packing (see `short_k` and
    // `row_dots`); a single task keeps `gemm`, which splits one product across the pool.
    #[cfg(target_arch = "x86_64")]
    if let DstLayout::RowMajor(rs) = layout {
        let serial = matches!(parallelism, Parallelism::None);
        let small = m <= row_dots::MAX_MN && n <= row_dots::MAX_MN;
        let short_k = rhs.cs == 1 && k <= short_k::MAX_K;
        let row_dots = lhs.cs == 1 && rhs.rs == 1 && small;
        if serial && (short_k || row_dots) && crate::has_avx512() {
            let product = RawProduct::new((m, n, k), dst, rs, accumulate, lhs, rhs);
            // SAFETY: AVX-512 is available; every element the product addresses lies inside
            // its slice and `rs ≥ n` (checked above); each kernel's layout condition holds.
            unsafe {
                if short_k {
                    short_k::run(&product);
                } else {
                    row_dots::run(&product);
                }
            }
            return;
        }
    }
    // SAFETY: element (i, j) of `dst` is at i·dst_rs + j·dst_cs < dst_len ≤ dst.len() and
    // distinct elements do not alias (checked above); every element of `lhs` (m×k) and `rhs` (k×n) addressed through
    // their strides lies inside its slice (checked above); the three slices do not overlap
    // (`dst` is borrowed mutably). With `accumulate` false, `dst` is only written.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// One product `dst = [dst +] lhs · rhs` as raw pointers and strides, for the AVX-512
/// kernels of `short_k` and `row_dots`: element `(i, p)` of `lhs` at `a + i·a_rs + p·a_cs`,
/// `(p, j)` of `rhs` at `b + p·b_rs + j·b_cs`, `(i, j)` of `dst` at `d + i·d_rs + j`.
#[cfg(target_arch = "x86_64")]
struct RawProduct {
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    d: *mut f32,
    d_rs: usize,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
impl RawProduct {
    fn new(
        (m, n, k): (usize, usize, usize),
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        lhs: Mat<'_>,
        rhs: Mat<'_>,
    ) -> Self {
        Self {
            m,
            n,
            k,
            a: lhs.data.as_ptr(),
            a_rs: lhs.rs,
            a_cs: lhs.cs,
            b: rhs.data.as_ptr(),
            b_rs: rhs.rs,
            b_cs: rhs.cs,
            d: dst.as_mut_ptr(),
            d_rs: dst_rs,
            accumulate,
        }
    }
}

/// GEMM parallelism inside a task: the whole pool when there is a single task.
pub(crate) fn gemm_parallelism(tasks: usize) -> Parallelism {
    let threads = threads();
    if tasks == 1 && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}
