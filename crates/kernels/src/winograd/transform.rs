//! The tile transforms of the Winograd kernels: `V = Bᵀ d B` of the input tiles, `Y = Aᵀ M A`
//! of the GEMM results and `A dY Aᵀ` of the output-gradient tiles, in portable loops over
//! blocks of [`LANES`] tiles and, on CPUs with AVX-512, in `avx512`'s masked vector
//! versions (bit-identical, tested below). The weight transforms, which run once per call
//! rather than per band, stay with the drivers in [`super`].

use super::POSITIONS;
use crate::gemm::Geometry;

/// Tiles the transforms handle at once, one per lane of a fixed-size array (so that the
/// compiler turns each transform step into a few vector instructions: loops over the 2–16
/// tiles of a tile row are too short for its loop vectoriser).
pub(super) const LANES: usize = 8;

/// One value per tile of a block.
type Lanes = [f32; LANES];

// The helpers below are plain loops over fixed-size arrays, not `array::from_fn`/`map`:
// those were left as calls inside the AVX-512 versions of the transforms (measured: a fifth
// of the forward time).

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    let mut r = a;
    for l in 0..LANES {
        r[l] += b[l];
    }
    r
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    let mut r = a;
    for l in 0..LANES {
        r[l] -= b[l];
    }
    r
}

#[inline(always)]
fn neg(a: Lanes) -> Lanes {
    let mut r = a;
    for v in &mut r {
        *v = -*v;
    }
    r
}

/// `Bᵀ d` of a 4-vector, `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`.
#[inline(always)]
fn bt(d: [Lanes; 4]) -> [Lanes; 4] {
    [
        sub(d[0], d[2]),
        add(d[1], d[2]),
        sub(d[2], d[1]),
        sub(d[1], d[3]),
    ]
}

/// `Aᵀ m` of a 4-vector, `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`.
#[inline(always)]
fn at(m: [Lanes; 4]) -> [Lanes; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `A y` of a 2-vector (`A` the transpose of [`at`]'s `Aᵀ`).
#[inline(always)]
fn a2(y: [Lanes; 2]) -> [Lanes; 4] {
    [y[0], add(y[0], y[1]), sub(y[0], y[1]), neg(y[1])]
}

/// Applies [`bt`] to the columns and then to the rows of a 4×4 block (`Bᵀ d B`).
#[inline(always)]
fn bt2(d: [[Lanes; 4]; 4]) -> [[Lanes; 4]; 4] {
    let mut cols = d;
    for j in 0..4 {
        let c = bt([d[0][j], d[1][j], d[2][j], d[3][j]]);
        for i in 0..4 {
            cols[i][j] = c[i];
        }
    }
    let mut v = cols;
    for i in 0..4 {
        v[i] = bt(cols[i]);
    }
    v
}

/// Tiles of a tile row rounded up to whole blocks of [`LANES`]: the length of each half of a
/// row in the transforms' deinterleaved planes, so that every block reads fixed-size runs.
fn padded_tiles(tw: usize) -> usize {
    tw.div_ceil(LANES) * LANES
}

/// Scratch values of one image's padded, deinterleaved plane (a task's `pad` holds one per
/// image of its group, see [`transform_input`]), also enough for the output rows of
/// [`transform_output`] and the planes of [`transform_output_grad`].
pub(super) fn plane_scratch(g: &Geometry) -> usize {
    let (th, half) = (g.oh.div_ceil(2), padded_tiles(g.ow.div_ceil(2)) + 1);
    (2 * th + 2) * 2 * half
}

/// `even[k] = row[2k]`, `odd[k] = row[2k + 1]` for the values of `row`.
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let half = row.len() / 2;
    let (even, odd) = (&mut even[..row.len().div_ceil(2)], &mut odd[..half]);
    for ((pair, e), o) in row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
    if row.len() % 2 == 1 {
        even[half] = row[row.len() - 1];
    }
}

/// `row[2k] = even[k]`, `row[2k + 1] = odd[k]` for the values of `row`.
#[inline(always)]
fn interleave(even: &[f32], odd: &[f32], row: &mut [f32]) {
    let half = row.len() / 2;
    let (even, odd) = (&even[..row.len().div_ceil(2)], &odd[..half]);
    for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e;
        pair[1] = o;
    }
    if row.len() % 2 == 1 {
        row[2 * half] = even[half];
    }
}

/// `run[..LANES]` as a block.
#[inline(always)]
fn load(run: &[f32]) -> Lanes {
    let mut r = [0f32; LANES];
    r.copy_from_slice(&run[..LANES]);
    r
}

/// [`transform_input`] without explicit SIMD: blocks of [`LANES`] tiles along a tile row,
/// each `(channel, image)` plane padded on its own into `pad`. Writes up to `LANES − 1`
/// values past the end of a matrix row (`stride ≥ C·T + LANES`: the next block, the next row
/// or the slack takes them). The fallback for CPUs without AVX-512 (and the reference the
/// AVX-512 version is tested against).
fn transform_input_portable(
    g: &Geometry,
    x_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    v: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    let (c_n, h, w) = (g.c, g.h, g.w);
    let tw = w.div_ceil(2);
    let half = padded_tiles(tw) + 1;
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    // Only the interior is ever written: the border stays zero.
    let pad = &mut pad[..(2 * h.div_ceil(2) + 2) * 2 * half];
    pad.fill(0.0);
    let (y0, y1) = ((2 * rows.0).saturating_sub(1), (2 * rows.1 + 1).min(h));
    for c in 0..c_n {
        for img in 0..imgs {
            let plane = &x_imgs[(img * c_n + c) * h * w..][..h * w];
            for y in y0..y1 {
                let (e, o) = pad[(y + 1) * 2 * half..][..2 * half].split_at_mut(half);
                deinterleave(&plane[y * w..][..w], o, &mut e[1..]);
            }
            for ty in rows.0..rows.1 {
                let t_row = c * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    // d[k][j]: padded row 2ty + k, padded column 2(tx0 + l) + j.
                    let mut d = [[[0f32; LANES]; 4]; 4];
                    for (k, dk) in d.iter_mut().enumerate() {
                        let (e, o) = pad[(2 * ty + k) * 2 * half..][..2 * half].split_at(half);
                        *dk = [
                            load(&e[tx0..]),
                            load(&o[tx0..]),
                            load(&e[tx0 + 1..]),
                            load(&o[tx0 + 1..]),
                        ];
                    }
                    for (i, vi) in bt2(d).into_iter().enumerate() {
                        for (j, value) in vi.into_iter().enumerate() {
                            v[(4 * i + j) * stride + t_row + tx0..][..LANES]
                                .copy_from_slice(&value);
                        }
                    }
                }
            }
        }
    }
}

/// `V = Bᵀ d B` of the input tiles of tile rows `rows` of `imgs` images (`x_imgs`, NCHW),
/// into 16 matrices `[C × T]` at `v[ξ·stride..]` (`stride ≥ C·T + LANES`), `Bᵀ` as in
/// [`bt`]. The tile of output tile `(ty, tx)` covers input rows `2ty − 1 ..= 2ty + 2` and
/// columns `2tx − 1 ..= 2tx + 2`. Each plane is first copied into `pad` with a zero border,
/// each padded row `q` (input row `q − 1`) split into its even and odd padded columns
/// (`e[k]` = column `2k − 1`, `o[k]` = column `2k`), so that the four columns of the tiles of
/// a block are the contiguous runs `e[tx..]`, `o[tx..]`, `e[tx + 1..]`, `o[tx + 1..]`; `pad`
/// holds [`plane_scratch`] values per image.
pub(super) fn transform_input(
    g: &Geometry,
    x_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    v: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_input(g, x_imgs, imgs, rows, v, stride, pad) };
    }
    transform_input_portable(g, x_imgs, imgs, rows, v, stride, pad)
}

#[cfg(target_arch = "x86_64")]
mod avx512;

/// [`transform_output`] without explicit SIMD: blocks of [`LANES`] tiles along a tile row,
/// each output row assembled in `rows_buf` (reads up to `LANES − 1` values past the end of a
/// matrix row: `stride ≥ O·T + LANES`). The fallback for CPUs without AVX-512 (and the
/// reference the AVX-512 version is tested against).
fn transform_output_portable(
    g: &Geometry,
    m: &[f32],
    stride: usize,
    imgs: usize,
    rows: (usize, usize),
    out_imgs: &mut [f32],
    rows_buf: &mut [f32],
) {
    let (o_n, oh, ow) = (g.o, g.oh, g.ow);
    let tw = ow.div_ceil(2);
    let rw = padded_tiles(tw);
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let rows_buf = &mut rows_buf[..4 * rw];
    for oc in 0..o_n {
        for img in 0..imgs {
            let plane = &mut out_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            for ty in rows.0..rows.1 {
                let t_row = oc * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    let mut mv = [[[0f32; LANES]; 4]; 4];
                    for (i, mi) in mv.iter_mut().enumerate() {
                        for (j, mij) in mi.iter_mut().enumerate() {
                            let src = &m[(4 * i + j) * stride + t_row + tx0..][..LANES];
                            mij.copy_from_slice(src);
                        }
                    }
                    // Aᵀ over i (per column j), then A over j.
                    let mut s = [[[0f32; LANES]; 2]; 4];
                    for (j, sj) in s.iter_mut().enumerate() {
                        *sj = at([mv[0][j], mv[1][j], mv[2][j], mv[3][j]]);
                    }
                    for r in 0..2 {
                        let [y0, y1] = at([s[0][r], s[1][r], s[2][r], s[3][r]]);
                        rows_buf[2 * r * rw + tx0..][..LANES].copy_from_slice(&y0);
                        rows_buf[(2 * r + 1) * rw + tx0..][..LANES].copy_from_slice(&y1);
                    }
                }
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy < oh {
                        let (even, odd) = rows_buf[2 * r * rw..][..2 * rw].split_at(rw);
                        interleave(even, odd, &mut plane[oy * ow..][..ow]);
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` of the GEMM results (16 matrices `[O × T]` at `m[ξ·stride..]`,
/// `stride ≥ O·T + LANES`) of tile rows
/// `rows` of `imgs` images, into their `[O, OH, OW]` outputs (`out_imgs`), `Aᵀ` as in
/// [`at`]; the even and odd columns of each output row are assembled in `rows_buf` and
/// its `OW` values interleaved into the output, so outputs outside the map are dropped; `rows_buf` holds
/// [`plane_scratch`] values per image.
pub(super) fn transform_output(
    g: &Geometry,
    m: &[f32],
    stride: usize,
    imgs: usize,
    rows: (usize, usize),
    out_imgs: &mut [f32],
    rows_buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_output(g, m, stride, imgs, rows, out_imgs, rows_buf) };
    }
    transform_output_portable(g, m, stride, imgs, rows, out_imgs, rows_buf)
}

/// [`transform_output_grad`] without explicit SIMD: blocks of [`LANES`] tiles along a tile
/// row, each `(channel, image)` plane on its own in `pad`. The fallback for CPUs without
/// AVX-512 (and the reference the AVX-512 version is tested against).
fn transform_output_grad_portable(
    g: &Geometry,
    dy_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    d: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    let (o_n, oh, ow) = (g.o, g.oh, g.ow);
    let tw = ow.div_ceil(2);
    let rw = padded_tiles(tw);
    let band = rows.1 - rows.0;
    let t_len = imgs * band * tw;
    let pad = &mut pad[..2 * oh.div_ceil(2) * 2 * rw];
    pad.fill(0.0);
    let (y0, y1) = (2 * rows.0, (2 * rows.1).min(oh));
    for oc in 0..o_n {
        for img in 0..imgs {
            let plane = &dy_imgs[(img * o_n + oc) * oh * ow..][..oh * ow];
            for y in y0..y1 {
                let (even, odd) = pad[y * 2 * rw..][..2 * rw].split_at_mut(rw);
                deinterleave(&plane[y * ow..][..ow], even, odd);
            }
            for ty in rows.0..rows.1 {
                let t_row = oc * t_len + (img * band + ty - rows.0) * tw;
                for tx0 in (0..tw).step_by(LANES) {
                    // dy[r][c]: output row 2ty + r, column 2(tx0 + l) + c.
                    let mut dy = [[[0f32; LANES]; 2]; 2];
                    for (r, dyr) in dy.iter_mut().enumerate() {
                        let (even, odd) = pad[(2 * ty + r) * 2 * rw..][..2 * rw].split_at(rw);
                        *dyr = [load(&even[tx0..]), load(&odd[tx0..])];
                    }
                    // A over r (per column c), then Aᵀ over c.
                    let cols = [a2([dy[0][0], dy[1][0]]), a2([dy[0][1], dy[1][1]])];
                    for i in 0..4 {
                        for (j, value) in a2([cols[0][i], cols[1][i]]).into_iter().enumerate() {
                            d[(4 * i + j) * stride + t_row + tx0..][..LANES]
                                .copy_from_slice(&value);
                        }
                    }
                }
            }
        }
    }
}

/// `A dY Aᵀ` of the 2×2 output-gradient tiles of tile rows `rows` of `imgs` images
/// (`dy_imgs`, `[O, OH, OW]` each), into 16 matrices `[O × T]` at `d[ξ·stride..]`
/// (`stride ≥ O·T + LANES`, as in [`transform_input`]), `A` as in [`a2`]; gradients
/// outside the map are zero (each plane is first copied into `pad`, zero outside the
/// map, each row split into its even and odd columns, whole blocks wide); `pad` holds [`plane_scratch`] values per image.
pub(super) fn transform_output_grad(
    g: &Geometry,
    dy_imgs: &[f32],
    imgs: usize,
    rows: (usize, usize),
    d: &mut [f32],
    stride: usize,
    pad: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::has_avx512() {
        // SAFETY: AVX-512F was detected on this CPU.
        return unsafe { avx512::transform_output_grad(g, dy_imgs, imgs, rows, d, stride, pad) };
    }
    transform_output_grad_portable(g, dy_imgs, imgs, rows, d, stride, pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::winograd::Tiling;

    /// Whether the `len` values of each of the 16 matrices at `a[ξ·stride..]` and
    /// `b[ξ·stride..]` have the same bits.
    fn same_matrices(a: &[f32], b: &[f32], stride: usize, len: usize) -> bool {
        (0..POSITIONS).all(|xi| {
            let (a, b) = (&a[xi * stride..][..len], &b[xi * stride..][..len]);
            a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
        })
    }

    /// The AVX-512 input, output and output-gradient transforms write the same bits as the
    /// portable ones, for maps whose tile rows fill 1–16 lanes or spill over blocks, groups of images
    /// and bands of rows.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_transforms_are_bit_identical_to_the_portable_ones() {
        if !crate::has_avx512() {
            return;
        }
        let shapes = [
            (3, 2, 5, 6),
            (2, 3, 7, 9),
            (5, 4, 2, 3),
            (3, 1, 1, 17),
            (3, 3, 20, 19),
            (1, 2, 40, 37),
            (6, 5, 4, 4),
            (40, 2, 8, 8),
            (20, 3, 16, 16),
            (2, 2, 32, 32),
            (1, 2, 70, 66),
        ];
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed) % 1009) as f32 / 37.0 - 13.0)
                .collect()
        };
        for (n, c, h, w) in shapes {
            let o = c + 1;
            let g = Geometry::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            let (x, dy) = (values(n * c * h * w, 1), values(n * o * h * w, 2));
            let tiling = Tiling::new(&g);
            let stride = c.max(o) * tiling.max_tiles() + LANES;
            let mut pad = vec![0f32; tiling.group * plane_scratch(&g)];
            let groups = x
                .chunks(tiling.group * c * h * w)
                .zip(dy.chunks(tiling.group * o * h * w));
            for (x_g, dy_g) in groups {
                let imgs = x_g.len() / (c * h * w);
                for rows in tiling.bands(imgs) {
                    let t_len = imgs * (rows.1 - rows.0) * tiling.tw;
                    let case = format!("{:?} {rows:?}", (n, c, h, w));
                    let (mut want, mut got) = (vec![7.0; 16 * stride], vec![-3.0; 16 * stride]);
                    transform_input_portable(&g, x_g, imgs, rows, &mut want, stride, &mut pad);
                    // SAFETY: AVX-512 was detected above.
                    unsafe {
                        avx512::transform_input(&g, x_g, imgs, rows, &mut got, stride, &mut pad)
                    };
                    assert!(
                        same_matrices(&want, &got, stride, c * t_len),
                        "input {case}"
                    );
                    transform_output_grad_portable(
                        &g, dy_g, imgs, rows, &mut want, stride, &mut pad,
                    );
                    // SAFETY: as above.
                    unsafe {
                        avx512::transform_output_grad(
                            &g, dy_g, imgs, rows, &mut got, stride, &mut pad,
                        )
                    };
                    assert!(same_matrices(&want, &got, stride, o * t_len), "dY {case}");
                    let products = values(16 * stride, 3);
                    let (mut want, mut got) =
                        (vec![5.0; imgs * o * h * w], vec![5.0; imgs * o * h * w]);
                    transform_output_portable(
                        &g, &products, stride, imgs, rows, &mut want, &mut pad,
                    );
                    // SAFETY: as above.
                    unsafe {
                        avx512::transform_output(
                            &g, &products, stride, imgs, rows, &mut got, &mut pad,
                        )
                    };
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "output {case}");
                }
            }
        }
    }
}
