//! The SGD momentum update in place on the CPU: two passes per parameter and no allocation,
//! where the candle-op formulation takes six full-size temporaries.
//!
//! The arithmetic is the candle-op formulation's, in float32 with the same roundings (Rust
//! never contracts `a·b + c` into FMA): `d = g + p·wd` (only with weight decay),
//! `buf = buf·μ + d`, `p = p − buf·lr` (or `p − d·lr` without momentum), so both paths give
//! bit-identical parameters and buffers.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout};

use super::{f32_data, par_planes};

/// Minimum number of values per parallel task.
const MIN_TASK: usize = 1 << 15;

/// The contiguous float32 data of an in-place op's destination.
fn f32_data_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_mut_slice(),
        _ => bail!("{what}: expected float32"),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => bail!("{what}: the kernel needs a contiguous tensor"),
    }
}

simd_fn! {
    /// `buf = buf·μ + (g [+ p·wd])` over a run starting at `first`.
    fn buffer_run(
        buf: &mut [f32],
        first: usize,
        g: &[f32],
        p: &[f32],
        momentum: f32,
        weight_decay: Option<f32>,
    ) {
        let g = &g[first..first + buf.len()];
        let p = &p[first..first + buf.len()];
        match weight_decay {
            Some(wd) => {
                for ((b, &gv), &pv) in buf.iter_mut().zip(g).zip(p) {
                    *b = *b * momentum + (gv + pv * wd);
                }
            }
            None => {
                for (b, &gv) in buf.iter_mut().zip(g) {
                    *b = *b * momentum + gv;
                }
            }
        }
    }
}

simd_fn! {
    /// `p = p − (d [+ p·wd])·lr` over a run starting at `first`.
    fn param_run(p: &mut [f32], first: usize, d: &[f32], lr: f32, weight_decay: Option<f32>) {
        let d = &d[first..first + p.len()];
        match weight_decay {
            Some(wd) => {
                for (pv, &dv) in p.iter_mut().zip(d) {
                    *pv = *pv - (dv + *pv * wd) * lr;
                }
            }
            None => {
                for (pv, &dv) in p.iter_mut().zip(d) {
                    *pv -= dv * lr;
                }
            }
        }
    }
}

/// The momentum buffer update, in place on the buffer, from `(gradient, parameter)`:
/// `buf = buf·μ + (g + p·wd)` (`+ p·wd` only with weight decay).
#[derive(Debug, Clone, Copy)]
pub struct MomentumBufferUpdate {
    /// Momentum μ.
    pub momentum: f32,
    /// Weight decay, `None` for none.
    pub weight_decay: Option<f32>,
}

impl InplaceOp3 for MomentumBufferUpdate {
    fn name(&self) -> &'static str {
        "pixreg-sgd-momentum-buffer"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        if l1.dims() != l2.dims() || l1.dims() != l3.dims() {
            bail!(
                "sgd: buffer {:?}, gradient {:?} and parameter {:?} differ in shape",
                l1.dims(),
                l2.dims(),
                l3.dims()
            );
        }
        let buf = f32_data_mut(s1, l1, "momentum buffer")?;
        let g = f32_data(s2, l2, "gradient")?;
        let p = f32_data(s3, l3, "parameter")?;
        let (momentum, weight_decay) = (self.momentum, self.weight_decay);
        par_planes(buf, 1, MIN_TASK, |first, run| {
            buffer_run(run, first, g, p, momentum, weight_decay);
        });
        Ok(())
    }
}

/// The parameter update, in place on the parameter, from a direction `d`:
/// `p = p − (d + p·wd)·lr` (`+ p·wd` only with weight decay, i.e. when `d` is the raw
/// gradient of plain SGD).
#[derive(Debug, Clone, Copy)]
pub struct ParamUpdate {
    /// Learning rate.
    pub lr: f32,
    /// Weight decay to add to `d`, `None` for none.
    pub weight_decay: Option<f32>,
}

impl InplaceOp2 for ParamUpdate {
    fn name(&self) -> &'static str {
        "pixreg-sgd-param-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        if l1.dims() != l2.dims() {
            bail!(
                "sgd: parameter {:?} and direction {:?} differ in shape",
                l1.dims(),
                l2.dims()
            );
        }
        let p = f32_data_mut(s1, l1, "parameter")?;
        let d = f32_data(s2, l2, "update direction")?;
        let (lr, weight_decay) = (self.lr, self.weight_decay);
        par_planes(p, 1, MIN_TASK, |first, run| {
            param_run(run, first, d, lr, weight_decay);
        });
        Ok(())
    }
}
