//! CPU kernels of the similarity head: the centred cosine of feature pairs (one pass forward,
//! one pass backward) and the per-channel mean of a pair batch.
//!
//! Why: composed from candle ops, one layer's centred cosine is about a dozen full passes
//! over both feature maps forward and twice that backward (each op's gradient plus candle's
//! zero tensor and add per gradient), all single-threaded on the thread that runs the
//! backward pass while the convolution kernels' threads wait. For the paper's model (five
//! layers, 16 pairs of 32×32 images) that was ≈ 160 ms of a training step on one thread.
//!
//! Layout: float32 feature maps `[k, C, S…]` (contiguous; `S` the product of the trailing
//! dimensions, 1 for `[k, C]`), a per-channel mean `[C]`. Sums are float32 within a channel's
//! run in 16 lanes, float64 across channels and for the cosine itself.
//!
//! `pixreg-models`' `ops` uses these on CPU float32 tensors and `rsa-core`'s candle
//! composition (`model_side`) elsewhere; `crates/models/tests/pair_kernels.rs` checks one
//! against the other.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::f32_data;
use rayon::prelude::*;

/// Lanes of the float32 partial sums (one AVX-512 register, four SSE ones).
const LANES: usize = 16;

/// `(k, C, S)` of a `[k, C, S…]` shape.
fn kcs(dims: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
    match dims {
        [k, c, rest @ ..] => Ok((*k, *c, rest.iter().product())),
        _ => bail!("feature maps need shape [k, C, ...], got {dims:?}"),
    }
}

/// `(Σ a'², Σ b'², Σ a'·b')` of one pair, `x' = x − mean[channel]`.
fn pair_sums(a: &[f32], b: &[f32], mean: &[f32], s: usize) -> [f64; 3] {
    let mut total = [0f64; 3];
    for ((ar, br), &m) in a.chunks_exact(s).zip(b.chunks_exact(s)).zip(mean) {
        let (mut aa, mut bb, mut ab) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        let (a_blocks, b_blocks) = (ar.chunks_exact(LANES), br.chunks_exact(LANES));
        let (a_tail, b_tail) = (a_blocks.remainder(), b_blocks.remainder());
        for (xa, xb) in a_blocks.zip(b_blocks) {
            for l in 0..LANES {
                let (x, y) = (xa[l] - m, xb[l] - m);
                aa[l] += x * x;
                bb[l] += y * y;
                ab[l] += x * y;
            }
        }
        for (&x, &y) in a_tail.iter().zip(b_tail) {
            let (x, y) = (x - m, y - m);
            aa[0] += x * x;
            bb[0] += y * y;
            ab[0] += x * y;
        }
        for (t, lanes) in total.iter_mut().zip([aa, bb, ab]) {
            *t += lanes.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    total
}

/// The [`PairStats`] of `k` pairs of `d`-value rows (`d = C·s`).
fn pair_stats(
    a: &[f32],
    b: &[f32],
    mean: &[f32],
    k: usize,
    d: usize,
    s: usize,
    eps: f64,
) -> Vec<PairStats> {
    if d == 0 {
        let clamped = PairStats {
            norms: [eps; 2],
            unclamped: [false; 2],
            cosine: 0.0,
        };
        return vec![clamped; k];
    }
    a.par_chunks(d)
        .zip(b.par_chunks(d))
        .map(|(pa, pb)| {
            let [aa, bb, ab] = pair_sums(pa, pb, mean, s);
            let (na, nb) = (aa.sqrt(), bb.sqrt());
            let norms = [na.max(eps), nb.max(eps)];
            PairStats {
                norms,
                unclamped: [na > eps, nb > eps],
                cosine: ab / (norms[0] * norms[1]),
            }
        })
        .collect()
}

/// Keeps `stats` for the backward pass; returns the cosines.
fn publish(
    slot: &OnceLock<Vec<PairStats>>,
    stats: Vec<PairStats>,
) -> candle_core::Result<Vec<f32>> {
    let out = stats.iter().map(|p| p.cosine as f32).collect();
    if slot.set(stats).is_err() {
        bail!("centred cosine: the op ran its forward pass twice");
    }
    Ok(out)
}

/// What the forward pass keeps for the backward pass, per pair.
#[derive(Debug, Clone, Copy)]
struct PairStats {
    /// `max(‖a'‖, eps)`, `max(‖b'‖, eps)`.
    norms: [f64; 2],
    /// Whether each norm was above `eps` (otherwise it is the constant `eps`).
    unclamped: [bool; 2],
    /// The cosine.
    cosine: f64,
}

/// `(a, b, mean) ↦ [k]` centred cosines (as a two-tensor op, of the two halves of one
/// tensor), PyTorch's `cosine_similarity` semantics (each side divided by `max(‖x'‖, eps)`);
/// gradients for `a` and `b` (the mean is a constant).
#[derive(Debug)]
pub struct CenteredCosine {
    eps: f64,
    stats: OnceLock<Vec<PairStats>>,
}

impl CenteredCosine {
    /// The op with PyTorch's norm clamp `eps` (`cosine_similarity`'s default is 1e-8).
    pub fn new(eps: f64) -> Self {
        Self {
            eps,
            stats: OnceLock::new(),
        }
    }
}

impl CustomOp3 for CenteredCosine {
    fn name(&self) -> &'static str {
        "rsa-centered-cosine"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
        sm: &CpuStorage,
        lm: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, c, s) = kcs(la.dims())?;
        if la.dims() != lb.dims() || lm.dims() != [c] {
            bail!(
                "centred cosine: shapes {:?}, {:?} and mean {:?} do not match",
                la.dims(),
                lb.dims(),
                lm.dims()
            );
        }
        let a = f32_data(sa, la, "centred cosine: a")?;
        let b = f32_data(sb, lb, "centred cosine: b")?;
        let mean = f32_data(sm, lm, "centred cosine: mean")?;
        let out = publish(&self.stats, pair_stats(a, b, mean, k, c * s, s, self.eps))?;
        Ok((CpuStorage::F32(out), Shape::from(k)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        mean: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.get() else {
            bail!("centred cosine backward: the forward pass did not run");
        };
        let (want_a, want_b) = (a.track_op(), b.track_op());
        if !want_a && !want_b {
            return Ok((None, None, None));
        }
        let (_, c, s) = kcs(a.dims())?;
        let grad: Vec<f32> = grad.to_vec1()?;
        let (a, b, mean) = (a.contiguous()?, b.contiguous()?, mean.contiguous()?);
        let (da, db) = with_data(&a, "centred cosine backward: a", |av| {
            with_data(&b, "centred cosine backward: b", |bv| {
                with_data(&mean, "centred cosine backward: mean", |mv| {
                    if grad.len() != stats.len() || av.len() != stats.len() * c * s {
                        bail!(
                            "centred cosine backward: gradient and inputs do not match the forward"
                        );
                    }
                    let mut da = want_a.then(|| vec![0f32; av.len()]);
                    let mut db = want_b.then(|| vec![0f32; av.len()]);
                    pair_gradients_into(
                        (av, bv, mv, s),
                        stats,
                        &grad,
                        da.as_deref_mut(),
                        db.as_deref_mut(),
                    );
                    Ok((da, db))
                })
            })
        })?;
        let to_tensor = |g: Option<Vec<f32>>| {
            g.map(|g| Tensor::from_vec(g, a.shape(), a.device()))
                .transpose()
        };
        Ok((to_tensor(da)?, to_tensor(db)?, None))
    }
}

/// `(k, C, S)` of one half of a `[2k, C, S…]` shape.
fn half_kcs(dims: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, s) = kcs(dims)?;
    if n % 2 != 0 {
        bail!("centred cosine of halves: {n} rows do not split into two halves");
    }
    Ok((n / 2, c, s))
}

/// As a two-tensor op, `(x, mean) ↦ [k]`: the centred cosines of the halves of `x`
/// (`[2k, C, …]`, pair `i` = rows `i` and `k + i`); gradient for `x`, none for the mean.
impl CustomOp2 for CenteredCosine {
    fn name(&self) -> &'static str {
        "rsa-centered-cosine-halves"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sm: &CpuStorage,
        lm: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, c, s) = half_kcs(lx.dims())?;
        if lm.dims() != [c] {
            bail!(
                "centred cosine of halves: mean {:?} does not match {:?}",
                lm.dims(),
                lx.dims()
            );
        }
        let (a, b) = f32_data(sx, lx, "centred cosine of halves: features")?.split_at(k * c * s);
        let mean = f32_data(sm, lm, "centred cosine of halves: mean")?;
        let out = publish(&self.stats, pair_stats(a, b, mean, k, c * s, s, self.eps))?;
        Ok((CpuStorage::F32(out), Shape::from(k)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        mean: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(stats) = self.stats.get() else {
            bail!("centred cosine of halves backward: the forward pass did not run");
        };
        if !x.track_op() {
            return Ok((None, None));
        }
        let (k, c, s) = half_kcs(x.dims())?;
        let grad: Vec<f32> = grad.to_vec1()?;
        let (x, mean) = (x.contiguous()?, mean.contiguous()?);
        let dx = with_data(&x, "centred cosine of halves backward: features", |xv| {
            with_data(&mean, "centred cosine of halves backward: mean", |mv| {
                if grad.len() != stats.len() || xv.len() != 2 * stats.len() * c * s {
                    bail!("centred cosine of halves backward: gradient and input do not match the forward");
                }
                let (a, b) = xv.split_at(k * c * s);
                let mut dx = vec![0f32; xv.len()];
                let (da, db) = dx.split_at_mut(k * c * s);
                pair_gradients_into((a, b, mv, s), stats, &grad, Some(da), Some(db));
                Ok(dx)
            })
        })?;
        Ok((Some(Tensor::from_vec(dx, x.shape(), x.device())?), None))
    }
}

/// `∂cos/∂a' = b'/(‖a'‖‖b'‖) − cos·a'/‖a'‖²` (second term absent where the norm is the
/// constant `eps`), and symmetrically for `b`, each scaled by the pair's output gradient,
/// written into `da` and `db` (each as long as `a`) where given.
fn pair_gradients_into(
    (a, b, mean, s): (&[f32], &[f32], &[f32], usize),
    stats: &[PairStats],
    grad: &[f32],
    da: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) {
    let d = a.len() / stats.len().max(1);
    if d == 0 || s == 0 {
        return;
    }
    let coefficients: Vec<[f32; 4]> = stats
        .iter()
        .zip(grad)
        .map(|(p, &g)| {
            let g = f64::from(g);
            let [na, nb] = p.norms;
            let cross = g / (na * nb);
            let own = |n: f64, unclamped: bool| {
                if unclamped {
                    g * p.cosine / (n * n)
                } else {
                    0.0
                }
            };
            [
                cross as f32,
                own(na, p.unclamped[0]) as f32,
                cross as f32,
                own(nb, p.unclamped[1]) as f32,
            ]
        })
        .collect();
    // Writes `dx = u·other' − v·own'` over every value of the pair.
    let fill = |out: &mut [f32], own: &[f32], other: &[f32], u: f32, v: f32| {
        for (((o, x), y), &m) in out
            .chunks_exact_mut(s)
            .zip(own.chunks_exact(s))
            .zip(other.chunks_exact(s))
            .zip(mean)
        {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = u * (y - m) - v * (x - m);
            }
        }
    };
    let side = |out: &mut [f32], own: &[f32], other: &[f32], first: usize| {
        out.par_chunks_mut(d)
            .zip(own.par_chunks(d).zip(other.par_chunks(d)))
            .zip(&coefficients)
            .for_each(|((o, (x, y)), co)| fill(o, x, y, co[first], co[first + 1]));
    };
    if let Some(da) = da {
        side(da, a, b, 0);
    }
    if let Some(db) = db {
        side(db, b, a, 2);
    }
}

/// The CPU data of a contiguous float32 tensor, for `f`.
fn with_data<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (guard, layout) = t.storage_and_layout();
    match &*guard {
        candle_core::Storage::Cpu(storage) => f(f32_data(storage, layout, what)?),
        _ => bail!("{what}: the kernel runs on the CPU only"),
    }
}

/// Per-channel mean of `a` and `b` together (`[k, C, S…]` each, float32 on the CPU) over
/// images and trailing positions, float64 sums: `[C]`.
pub fn channel_mean(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (k, c, s) = kcs(a.dims())?;
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let count = (2 * k * s) as f64;
    let means = with_data(&a, "channel mean: a", |av| {
        with_data(&b, "channel mean: b", |bv| {
            Ok((0..c)
                .into_par_iter()
                .map(|ch| {
                    let sum: f64 = (0..k)
                        .flat_map(|img| [av, bv].map(|v| &v[(img * c + ch) * s..][..s]))
                        .map(|run| run.iter().map(|&x| f64::from(x)).sum::<f64>())
                        .sum();
                    (sum / count) as f32
                })
                .collect::<Vec<f32>>())
        })
    })?;
    Tensor::from_vec(means, c, a.device())
}
