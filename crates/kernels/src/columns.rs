//! The column matrices of im2col (each kernel tap's input values under every output
//! position) and their adjoint col2im, for [`super::conv`]'s GEMM convolutions.
//!
//! Stride-2 convolutions whose kernel covers the stride (ResNet's stride-2 3×3 ones) go
//! through phase planes ([`Phases`]): each input plane is split once into its four sub-planes
//! of every other row and column, in which every kernel tap's values under the output
//! positions form one shifted block, copied as one run like a stride-1 tap (and added back
//! as one run in col2im). Why: read from the plane itself, each tap was a strided gather per
//! output row (14, 7 or 4 values at base width 8), and at base width 8 (1×28×28, one thread)
//! the stride-2 convolutions' im2col and col2im were 7.1 % and 3.0 % of a training step; the
//! first stride-2 3×3 convolution of base width 8 (96 images, 32×32, one thread) now takes
//! 5.3–5.6 ms forward and backward instead of 7.2–7.3 (`cargo xtask bench ops`).

use crate::gemm::Geometry;

/// `dst[k] = src[k·s]` for every `k` (`src` holds at least `(dst.len() − 1)·s + 1` values).
/// Stride 2, the network's, is written over pairs so that it vectorises (a `step_by`
/// iterator copies one value at a time).
#[inline(always)]
fn gather_strided(dst: &mut [f32], src: &[f32], s: usize) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    if s == 2 {
        for (v, pair) in dst[..last].iter_mut().zip(src[..2 * last].chunks_exact(2)) {
            *v = pair[0];
        }
    } else {
        for (k, v) in dst[..last].iter_mut().enumerate() {
            *v = src[k * s];
        }
    }
    dst[last] = src[last * s];
}

/// `dst[k·s] += src[k]` for every `k`: the adjoint of [`gather_strided`].
#[inline(always)]
fn scatter_add_strided(dst: &mut [f32], src: &[f32], s: usize) {
    let Some(last) = src.len().checked_sub(1) else {
        return;
    };
    if s == 2 {
        for (pair, &v) in dst[..2 * last].chunks_exact_mut(2).zip(&src[..last]) {
            pair[0] += v;
        }
    } else {
        for (k, &v) in src[..last].iter().enumerate() {
            dst[k * s] += v;
        }
    }
    dst[last * s] += src[last];
}

/// Writes the column matrix of output rows `lo..hi` of one image `[C, H, W]`: row
/// `(c·kh + i)·kw + j` holds, for each of these output positions, the input value under
/// kernel tap `(i, j)` (0 in the padding), at `col[row·row_stride + offset ..][.. (hi−lo)·OW]`.
#[inline(always)]
fn im2col(
    g: &Geometry,
    x_img: &[f32],
    (col, row_stride, offset): (&mut [f32], usize, usize),
    (lo, hi): (usize, usize),
    phases: Option<&mut Phases>,
) {
    let (len, hw, s) = ((hi - lo) * g.ow, g.h * g.w, g.stride);
    if let Some(phases) = phases {
        for (ch, xc) in x_img[..g.c * hw].chunks_exact(hw).enumerate() {
            phases.split(g, xc);
            for tap in 0..g.kh * g.kw {
                let row = ch * g.kh * g.kw + tap;
                let dst = &mut col[row * row_stride + offset..][..len];
                phases.copy_tap(g, (tap / g.kw, tap % g.kw), dst, (lo, hi));
            }
        }
        return;
    }
    for TapRows {
        ch,
        tap: (i, j),
        row,
        oy: (oy0, oy1),
        ox: (ox0, ox1),
    } in tap_rows(g, (lo, hi))
    {
        let xc = &x_img[ch * hw..(ch + 1) * hw];
        let dst = &mut col[row * row_stride + offset..][..len];
        dst[..(oy0 - lo) * g.ow].fill(0.0);
        dst[(oy1 - lo) * g.ow..].fill(0.0);
        if let Some((start, src, run)) = g.shifted_run((oy0, oy1), (ox0, ox1), (i, j)) {
            // One copy instead of one per output row, then the wrapped-around edge columns
            // (and those outside the run in the first and last row) zeroed.
            let first = start - lo * g.ow;
            dst[first..first + run].copy_from_slice(&xc[src..src + run]);
            for d in dst[(oy0 - lo) * g.ow..(oy1 - lo) * g.ow].chunks_exact_mut(g.ow) {
                d[..ox0].fill(0.0);
                d[ox1..].fill(0.0);
            }
            continue;
        }
        for oy in oy0..oy1 {
            let iy = oy * s + i - g.padding;
            let src = &xc[iy * g.w..(iy + 1) * g.w];
            let d = &mut dst[(oy - lo) * g.ow..(oy - lo + 1) * g.ow];
            d[..ox0].fill(0.0);
            d[ox1..].fill(0.0);
            if ox1 == ox0 {
                continue;
            }
            if s == 1 {
                let ix0 = ox0 + j - g.padding;
                d[ox0..ox1].copy_from_slice(&src[ix0..ix0 + (ox1 - ox0)]);
            } else {
                // Input columns ix0, ix0 + s, ...: every s-th value from ix0.
                let ix0 = ox0 * s + j - g.padding;
                gather_strided(&mut d[ox0..ox1], &src[ix0..], s);
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry of output rows `lo..hi` back onto the
/// input pixel it came from. May zero entries of `col` that belong to no input pixel.
#[inline(always)]
fn col2im(
    g: &Geometry,
    (col, row_stride, offset): (&mut [f32], usize, usize),
    (lo, hi): (usize, usize),
    dx_img: &mut [f32],
    phases: Option<&mut Phases>,
) {
    let (len, hw, s) = ((hi - lo) * g.ow, g.h * g.w, g.stride);
    if let Some(phases) = phases {
        for (ch, dxc) in dx_img[..g.c * hw].chunks_exact_mut(hw).enumerate() {
            phases.clear();
            for tap in 0..g.kh * g.kw {
                let row = ch * g.kh * g.kw + tap;
                let src = &mut col[row * row_stride + offset..][..len];
                phases.add_tap(g, (tap / g.kw, tap % g.kw), src, (lo, hi));
            }
            phases.join_add(g, dxc);
        }
        return;
    }
    for TapRows {
        ch,
        tap: (i, j),
        row,
        oy: (oy0, oy1),
        ox: (ox0, ox1),
    } in tap_rows(g, (lo, hi))
    {
        let dxc = &mut dx_img[ch * hw..(ch + 1) * hw];
        let src = &mut col[row * row_stride + offset..][..len];
        if let Some((start, dst, run)) = g.shifted_run((oy0, oy1), (ox0, ox1), (i, j)) {
            // Zero the entries that belong to no input pixel (the padding columns), then add
            // the whole run at once: adding 0 leaves the wrapped-around neighbours unchanged.
            for c in src[(oy0 - lo) * g.ow..(oy1 - lo) * g.ow].chunks_exact_mut(g.ow) {
                c[..ox0].fill(0.0);
                c[ox1..].fill(0.0);
            }
            let first = start - lo * g.ow;
            for (dv, cv) in dxc[dst..dst + run].iter_mut().zip(&src[first..first + run]) {
                *dv += cv;
            }
            continue;
        }
        for oy in oy0..oy1 {
            let iy = oy * s + i - g.padding;
            let d = &mut dxc[iy * g.w..(iy + 1) * g.w];
            let c = &src[(oy - lo) * g.ow..(oy - lo + 1) * g.ow];
            if ox1 == ox0 {
                continue;
            }
            if s == 1 {
                let ix0 = ox0 + j - g.padding;
                for (dv, cv) in d[ix0..ix0 + (ox1 - ox0)].iter_mut().zip(&c[ox0..ox1]) {
                    *dv += cv;
                }
            } else {
                let ix0 = ox0 * s + j - g.padding;
                scatter_add_strided(&mut d[ix0..], &c[ox0..ox1], s);
            }
        }
    }
}

/// One kernel tap of one input channel over a band of output rows: the tap's row of the
/// column matrix and the output rows (clamped to the band) and columns whose input value
/// lies inside the plane rather than in the padding.
struct TapRows {
    ch: usize,
    tap: (usize, usize),
    row: usize,
    oy: (usize, usize),
    ox: (usize, usize),
}

/// The taps of every input channel of `g` for output rows `lo..hi`, in column-matrix row
/// order: the loop [`im2col`] and its adjoint [`col2im`] share.
#[inline(always)]
fn tap_rows(g: &Geometry, (lo, hi): (usize, usize)) -> impl Iterator<Item = TapRows> + '_ {
    (0..g.c).flat_map(move |ch| {
        (0..g.kh).flat_map(move |i| {
            let (oy0, oy1) = g.valid(g.oh, g.h, i);
            let oy = (oy0.clamp(lo, hi), oy1.clamp(lo, hi));
            (0..g.kw).map(move |j| TapRows {
                ch,
                tap: (i, j),
                row: (ch * g.kh + i) * g.kw + j,
                oy,
                ox: g.valid(g.ow, g.w, j),
            })
        })
    })
}

simd_fn! {
    /// The column matrices of output rows `rows` of `imgs` images side by side in `col`
    /// (`[C·kh·kw, imgs·(hi−lo)·OW]`).
    pub(crate) fn im2col_group(
        g: &Geometry,
        x_imgs: &[f32],
        imgs: usize,
        rows: (usize, usize),
        col: &mut [f32],
    ) {
        let len = (rows.1 - rows.0) * g.ow;
        let mut phases = Phases::new(g);
        for i in 0..imgs {
            let dst = (&mut *col, imgs * len, i * len);
            im2col(g, &x_imgs[i * g.chw()..], dst, rows, phases.as_mut());
        }
    }
}

simd_fn! {
    /// Adds the column gradients of output rows `rows` of `imgs` images
    /// (`[C·kh·kw, imgs·(hi−lo)·OW]`) onto their input gradients (zeroing some of them, see
    /// [`col2im`]).
    pub(crate) fn col2im_group(
        g: &Geometry,
        dcol: &mut [f32],
        imgs: usize,
        rows: (usize, usize),
        dx_imgs: &mut [f32],
    ) {
        let (len, chw) = ((rows.1 - rows.0) * g.ow, g.chw());
        let mut phases = Phases::new(g);
        for i in 0..imgs {
            let dx_img = &mut dx_imgs[i * chw..(i + 1) * chw];
            col2im(g, (&mut *dcol, imgs * len, i * len), rows, dx_img, phases.as_mut());
        }
    }
}

/// The phase planes of one input plane of a stride-2 convolution: plane `2a + b` holds the
/// input values of rows `2r + a` and columns `2c + b` at `(r, c)`, `⌈H/2⌉ × ⌈W/2⌉` values
/// (zeros where such a row or column does not exist). Kernel tap `(i, j)` reads, under output
/// position `(oy, ox)`, the value at `(oy + qi, ox + qj)` of plane `2a + b`, where
/// `i − p = 2qi + a` and `j − p = 2qj + b` (floor division): a shifted block, one run when
/// the planes are as wide as the output (`⌈W/2⌉ = OW`: every stride-2 3×3 convolution with
/// padding 1, whatever the map).
#[derive(Debug)]
pub(crate) struct Phases {
    /// Rows of a phase plane; its width is `OW`.
    ph: usize,
    planes: Vec<f32>,
}

impl Phases {
    /// `Some` for a stride-2 geometry whose phase planes are as wide as its output and whose
    /// taps read every phase (a kernel at least 2 × 2: a 1×1 stride-2 convolution reads one
    /// plane in four, and splitting all four made its im2col slower, 2.5 → 2.9 ms forward and
    /// backward at base width 8, 32×32, 96 images). Other strides keep the row gathers.
    fn new(g: &Geometry) -> Option<Self> {
        let fits = g.stride == 2 && g.kh >= 2 && g.kw >= 2 && g.w.div_ceil(2) == g.ow;
        fits.then(|| Self {
            ph: g.h.div_ceil(2),
            planes: vec![0.0; 4 * g.h.div_ceil(2) * g.ow],
        })
    }

    /// Zeroes every phase plane (before a channel's column gradients are added onto them).
    #[inline(always)]
    fn clear(&mut self) {
        self.planes.fill(0.0);
    }

    /// Plane index and shift `(qi, qj)` of kernel tap `(i, j)`.
    #[inline(always)]
    fn tap(&self, g: &Geometry, (i, j): (usize, usize)) -> (usize, isize, isize) {
        let p = g.padding as isize;
        let (di, dj) = (i as isize - p, j as isize - p);
        let plane = (di.rem_euclid(2) * 2 + dj.rem_euclid(2)) as usize;
        (plane, di.div_euclid(2), dj.div_euclid(2))
    }

    /// Splits input plane `xc` (`H × W`) into the phase planes, written over pairs of
    /// values, which LLVM turns into vector shuffles (a loop over single values with computed
    /// indices made im2col 9.2 % of a width-8 step instead of 6 %).
    #[inline(always)]
    fn split(&mut self, g: &Geometry, xc: &[f32]) {
        if !g.h.is_multiple_of(2) || !g.w.is_multiple_of(2) {
            self.planes.fill(0.0);
        }
        for (y, row) in xc.chunks_exact(g.w).enumerate() {
            let (even, odd) = self.phase_rows(g, y);
            let pairs = row.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                *e = pair[0];
                *o = pair[1];
            }
            if let Some(v) = last {
                even[g.w / 2] = v;
            }
        }
    }

    /// `dxc[y, x] += ` its phase-plane value, over the input plane `dxc` (`H × W`).
    #[inline(always)]
    fn join_add(&mut self, g: &Geometry, dxc: &mut [f32]) {
        for (y, row) in dxc.chunks_exact_mut(g.w).enumerate() {
            let (even, odd) = self.phase_rows(g, y);
            let mut pairs = row.chunks_exact_mut(2);
            for ((e, o), pair) in even.iter().zip(odd.iter()).zip(&mut pairs) {
                pair[0] += *e;
                pair[1] += *o;
            }
            if let Some(v) = pairs.into_remainder().first_mut() {
                *v += even[g.w / 2];
            }
        }
    }

    /// The two phase rows of input row `y` (its even and its odd columns).
    #[inline(always)]
    fn phase_rows(&mut self, g: &Geometry, y: usize) -> (&mut [f32], &mut [f32]) {
        let (ow, len) = (g.ow, self.ph * g.ow);
        let first = (y % 2) * 2 * len + (y / 2) * ow;
        let (even, odd) = self.planes[first..].split_at_mut(len);
        (&mut even[..ow], &mut odd[..ow])
    }

    /// For tap `(i, j)` and output rows `lo..hi`: the output rows whose block lies in the
    /// plane `(oy0, oy1)`, the plane index of the first value of the block's run (negative
    /// when the run starts before the plane, in the first row's wrapped-around columns) and
    /// the run's plane.
    #[inline(always)]
    fn block(&self, g: &Geometry, ij: (usize, usize), (lo, hi): (usize, usize)) -> Block {
        let (plane, qi, qj) = self.tap(g, ij);
        let clamp = |r: isize| r.clamp(lo as isize, hi as isize) as usize;
        let (oy0, oy1) = (clamp(-qi), clamp(self.ph as isize - qi));
        let start = (oy0 as isize + qi) * g.ow as isize + qj;
        Block {
            rows: (oy0 - lo, oy1.max(oy0) - lo),
            start,
            plane,
            qj,
        }
    }

    /// Writes tap `(i, j)`'s column row for output rows `lo..hi` into `dst` (`(hi − lo)·OW`).
    #[inline(always)]
    fn copy_tap(&self, g: &Geometry, ij: (usize, usize), dst: &mut [f32], rows: (usize, usize)) {
        let b = self.block(g, ij, rows);
        let ow = g.ow;
        let len = self.ph * ow;
        let src = &self.planes[b.plane * len..][..len];
        dst[..b.rows.0 * ow].fill(0.0);
        dst[b.rows.1 * ow..].fill(0.0);
        let run = &mut dst[b.rows.0 * ow..b.rows.1 * ow];
        let (skip, end) = b.clip(run.len(), len);
        run[..skip].fill(0.0);
        run[end..].fill(0.0);
        if skip < end {
            let first = (b.start + skip as isize) as usize;
            run[skip..end].copy_from_slice(&src[first..first + (end - skip)]);
        }
        b.zero_wrapped(run, ow);
    }

    /// The adjoint of [`Phases::copy_tap`]: adds tap `(i, j)`'s column row (output rows
    /// `lo..hi`) onto the phase planes, after zeroing its entries that read no input value.
    #[inline(always)]
    fn add_tap(&mut self, g: &Geometry, ij: (usize, usize), src: &mut [f32], rows: (usize, usize)) {
        let b = self.block(g, ij, rows);
        let ow = g.ow;
        let len = self.ph * ow;
        let dst = &mut self.planes[b.plane * len..][..len];
        let run = &mut src[b.rows.0 * ow..b.rows.1 * ow];
        b.zero_wrapped(run, ow);
        let (skip, end) = b.clip(run.len(), len);
        let first = (b.start + skip as isize) as usize;
        for (d, v) in dst[first..first + (end - skip)]
            .iter_mut()
            .zip(&run[skip..end])
        {
            *d += v;
        }
    }
}

/// A tap's block of a phase plane (see [`Phases::block`]): output rows `rows` (relative to
/// the band) read the run of the plane from `start`.
struct Block {
    rows: (usize, usize),
    start: isize,
    plane: usize,
    qj: isize,
}

impl Block {
    /// The part `skip..end` of a run of `run` values whose plane indices lie in `0..plane_len`
    /// (the rest are wrapped-around columns, zero).
    #[inline(always)]
    fn clip(&self, run: usize, plane_len: usize) -> (usize, usize) {
        let skip = (-self.start).clamp(0, run as isize) as usize;
        let end = (plane_len as isize - self.start).clamp(skip as isize, run as isize) as usize;
        (skip, end)
    }

    /// Zeroes the columns of each row of `run` (rows of `ow`) that fall outside the plane.
    #[inline(always)]
    fn zero_wrapped(&self, run: &mut [f32], ow: usize) {
        let q = self.qj.unsigned_abs().min(ow);
        if q == 0 {
            return;
        }
        for row in run.chunks_exact_mut(ow) {
            if self.qj < 0 {
                row[..q].fill(0.0);
            } else {
                row[ow - q..].fill(0.0);
            }
        }
    }
}
