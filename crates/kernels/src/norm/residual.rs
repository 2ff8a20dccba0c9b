//! The residual add of a ResNet block and the ReLU after it: the [`AddRelu`] op, and the
//! fused passes the whole-block kernel ([`crate::block`]) uses, the second batch norm's affine
//! with the add and the ReLU, and the in-place gradient sums.

use super::{masked, par_planes, relu1, ReluBackward, MIN_TASK};
use crate::{f32_data, uninit_vec};
use candle_core::{bail, CpuStorage, CustomOp2, Layout, Shape, Tensor};

simd_fn! {
    /// `y = (a + b)·[a + b > 0]`.
    fn add_relu_run(y: &mut [f32], a: &[f32], b: &[f32]) {
        for ((yv, &av), &bv) in y.iter_mut().zip(a).zip(b) {
            *yv = relu1(av + bv);
        }
    }
}

simd_fn! {
    /// `y = (x·alpha[c] + beta[c] + skip)·[· > 0]` over a run of whole `hw` planes starting
    /// at plane `first`: a batch norm's affine, a residual add and the ReLU after it, rounded
    /// exactly as the affine and [`add_relu_run`] one after the other.
    fn affine_add_relu_run(
        y: &mut [f32],
        x: &[f32],
        skip: &[f32],
        first: usize,
        hw: usize,
        alpha: &[f32],
        beta: &[f32],
    ) {
        let c = alpha.len();
        for (p, ((yp, xp), sp)) in y
            .chunks_mut(hw)
            .zip(x.chunks(hw))
            .zip(skip.chunks(hw))
            .enumerate()
        {
            let ch = (first + p) % c;
            let (a, b) = (alpha[ch], beta[ch]);
            for ((yv, &xv), &sv) in yp.iter_mut().zip(xp).zip(sp) {
                *yv = relu1((xv * a + b) + sv);
            }
        }
    }
}

simd_fn! {
    /// `acc += dy·[y > 0]`.
    fn add_masked_run(acc: &mut [f32], dy: &[f32], y: &[f32]) {
        for ((a, &g), &yv) in acc.iter_mut().zip(dy).zip(y) {
            *a += masked(g, yv);
        }
    }
}

simd_fn! {
    /// `acc += b`.
    fn add_run(acc: &mut [f32], b: &[f32]) {
        for (a, &bv) in acc.iter_mut().zip(b) {
            *a += bv;
        }
    }
}

/// `y = relu(x·alpha[c] + beta[c] + skip)` over an NCHW buffer (`skip` and `y` as long as
/// `x`; `hw` and `alpha` non-empty), every value written.
pub(crate) fn channel_affine_add_relu_into(
    x: &[f32],
    (alpha, beta): (&[f32], &[f32]),
    skip: &[f32],
    hw: usize,
    y: &mut [f32],
) {
    par_planes(y, hw, MIN_TASK, |first, run| {
        let range = first * hw..first * hw + run.len();
        affine_add_relu_run(run, &x[range.clone()], &skip[range], first, hw, alpha, beta);
    });
}

/// `acc += dy·[y > 0]` (with `y`), else `acc += dy`, elementwise (`dy`, `y` as long as `acc`).
pub(crate) fn accumulate(acc: &mut [f32], dy: &[f32], y: Option<&[f32]>) {
    par_planes(acc, 1, MIN_TASK, |first, run| {
        let range = first..first + run.len();
        match y {
            Some(y) => add_masked_run(run, &dy[range.clone()], &y[range]),
            None => add_run(run, &dy[range]),
        }
    });
}

/// `(a, b) ↦ max(a + b, 0)` (computed as `v·[v > 0]`, so NaN propagates): the residual add and
/// the ReLU after it in one pass. Backward: `dy·[y > 0]` for both inputs (one tensor, shared),
/// which is exact since `y > 0` exactly where `a + b > 0`; this also saves the separate ReLU's
/// backward pass and candle's gradient bookkeeping for the intermediate sum.
#[derive(Debug, Clone, Copy)]
pub struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "pixreg-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            bail!("add + relu: {:?} vs {:?}", l1.dims(), l2.dims());
        }
        let a = f32_data(s1, l1, "add + relu lhs")?;
        let b = f32_data(s2, l2, "add + relu rhs")?;
        // SAFETY: `a` and `b` have the same dims (checked above), `par_planes` hands out all of
        // `y` in runs, and `add_relu_run` writes every value of its run, before `y` is returned.
        let mut y = unsafe { uninit_vec(a.len()) };
        par_planes(&mut y, 1, MIN_TASK, |first, run| {
            let range = first..first + run.len();
            add_relu_run(run, &a[range.clone()], &b[range]);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        if !a.track_op() && !b.track_op() {
            return Ok((None, None));
        }
        let d = res
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, &ReluBackward)?;
        Ok((a.track_op().then(|| d.clone()), b.track_op().then_some(d)))
    }
}
