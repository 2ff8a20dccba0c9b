//! `torch.optim.SGD` with momentum and weight decay (dampening 0, no Nesterov).

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use crate::checkpoint::{read_safetensors, write_safetensors};
use crate::error::{Error, Result};
use pixreg_kernels::{
    self as kernels,
    sgd::{MomentumBufferUpdate, ParamUpdate},
};

/// Key prefix of the momentum buffers in a saved optimizer state.
pub const MOMENTUM_BUFFER_PREFIX: &str = "momentum_buffer.";

/// SGD with PyTorch's exact update, per parameter `p` with gradient `g`:
/// `d = g + wd·p`; `buf = d` on the parameter's first step, else `buf = μ·buf + d`;
/// `p ← p − lr·buf` (with `μ = 0`: `p ← p − lr·d`). Parameters without a gradient in the
/// [`GradStore`] are skipped and keep their buffer.
#[derive(Debug)]
pub struct SgdMomentum {
    params: Vec<(String, Var)>,
    buffers: HashMap<String, Tensor>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl SgdMomentum {
    /// An optimizer over named parameters (e.g. [`crate::ResNet::named_parameters`]).
    pub fn new(params: Vec<(String, Var)>, lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self {
            params,
            buffers: HashMap::new(),
            lr,
            momentum,
            weight_decay,
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (the schedule changes it every epoch; buffers are kept).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The momentum factor μ.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// The weight decay.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    /// The parameters being optimised.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The momentum buffer of a parameter, once it has taken a step.
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }

    /// One update of every parameter that has a gradient in `grads`.
    ///
    /// On the CPU (float32) the parameters and momentum buffers are updated in place by the
    /// kernels of [`kernels::sgd`] (same float32 arithmetic as the candle ops used elsewhere,
    /// bit for bit): a buffer returned by [`SgdMomentum::momentum_buffer`] changes with later
    /// steps, so copy it to keep a snapshot.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (name, var) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_detached_tensor();
            if kernels::applies(&[&p, g]) {
                let hyper = (self.lr, self.momentum, self.weight_decay);
                step_in_place(&mut self.buffers, hyper, name, &p, &g.contiguous()?)?;
                continue;
            }
            let mut d = g.detach();
            if self.weight_decay != 0.0 {
                d = (d + (&p * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                let buf = match self.buffers.remove(name) {
                    Some(buf) => ((buf * self.momentum)? + d)?,
                    None => d,
                };
                d = buf.clone();
                self.buffers.insert(name.clone(), buf);
            }
            var.set(&(p - (d * self.lr)?)?)?;
        }
        Ok(())
    }

    /// Writes the momentum buffers (`momentum_buffer.<param name>`) to a safetensors file,
    /// atomically, for resuming.
    pub fn save_state(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .buffers
            .iter()
            .map(|(name, buf)| (format!("{MOMENTUM_BUFFER_PREFIX}{name}"), buf.clone()))
            .collect();
        write_safetensors(path.as_ref(), &tensors)
    }

    /// Restores the momentum buffers saved by [`SgdMomentum::save_state`]. Every key must be
    /// the buffer of one of the optimizer's parameters, with its shape and dtype; parameters
    /// absent from the file start afresh (they had not taken a step).
    pub fn load_state(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let checkpoint = path.display().to_string();
        let device: Device = match self.params.first() {
            Some((_, v)) => v.device().clone(),
            None => Device::Cpu,
        };
        let tensors = read_safetensors(path, &device)?;
        let mut buffers = HashMap::with_capacity(tensors.len());
        for (key, t) in tensors {
            let unexpected = || Error::UnexpectedKey {
                checkpoint: checkpoint.clone(),
                key: key.clone(),
            };
            let name = key
                .strip_prefix(MOMENTUM_BUFFER_PREFIX)
                .ok_or_else(unexpected)?;
            let (_, var) = self
                .params
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(unexpected)?;
            if t.dtype() != var.dtype() {
                return Err(Error::DTypeMismatch {
                    checkpoint,
                    key,
                    expected: var.dtype(),
                    found: t.dtype(),
                });
            }
            if t.dims() != var.dims() {
                return Err(Error::ShapeMismatch {
                    checkpoint,
                    key,
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
            buffers.insert(name.to_string(), t);
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// The update of one CPU float32 parameter `p` (contiguous, as every `Var`) with its gradient
/// `g`, in place; `(lr, momentum, weight_decay)` and the buffers are the optimizer's.
fn step_in_place(
    buffers: &mut HashMap<String, Tensor>,
    (lr, momentum, weight_decay): (f64, f64, f64),
    name: &str,
    p: &Tensor,
    g: &Tensor,
) -> Result<()> {
    let decay = (weight_decay != 0.0).then_some(weight_decay as f32);
    if momentum == 0.0 {
        p.inplace_op2(
            g,
            &ParamUpdate {
                lr: lr as f32,
                weight_decay: decay,
            },
        )?;
        return Ok(());
    }
    let update = ParamUpdate {
        lr: lr as f32,
        weight_decay: None,
    };
    match buffers.get(name) {
        Some(buf) => {
            let op = MomentumBufferUpdate {
                momentum: momentum as f32,
                weight_decay: decay,
            };
            buf.inplace_op3(g, p, &op)?;
            p.inplace_op2(buf, &update)?;
        }
        None => {
            // First step: the buffer is `d` itself, in storage of its own (the gradient's
            // storage belongs to the caller's GradStore and must not be updated later).
            let buf = match decay {
                Some(_) => (g + (p * weight_decay)?)?,
                None => g.copy()?,
            };
            p.inplace_op2(&buf, &update)?;
            buffers.insert(name.to_string(), buf);
        }
    }
    Ok(())
}
