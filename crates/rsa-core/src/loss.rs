//! Similarity losses between model scores and targets.
//!
//! The reference's default criterion (`utils.ATanhSquare`) compares scores and targets after the
//! map `g(v) = ln(1 + v + ε) − ln(1 − v + ε)` with `ε = 1e-5`. `g` is *twice* the inverse
//! hyperbolic tangent, regularised so that `g(±1) = ±12.2061` stays finite; the loss is therefore
//! four times a squared-atanh loss, which is why the paper's α values look large. We keep the
//! exact form (and the evaluation order `((a − b) − c) + d`) so that gradients match the
//! reference.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rsa_core::loss::SimilarityLoss;
//!
//! # fn main() -> rsa_core::Result<()> {
//! let pred = Tensor::new(&[0.5f32, -0.2], &Device::Cpu)?;
//! let target = Tensor::new(&[1f32, 0.0], &Device::Cpu)?;
//! let loss = SimilarityLoss::ArctanhSquare.compute(&pred, &target)?;
//! assert!(loss.to_scalar::<f32>()? > 0.0);
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::{Error, Result};

/// The ε inside the logarithms of the reference's arctanh loss.
pub const ARCTANH_EPS: f64 = 1e-5;

/// Which criterion compares model scores with similarity targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimilarityLoss {
    /// `mean((g(p) − g(t))²)`, the reference default (`--arctanh True`).
    #[default]
    ArctanhSquare,
    /// `mean((p − t)²)` (`--arctanh False`).
    Mse,
}

impl SimilarityLoss {
    /// Evaluates the loss; differentiable with candle's autograd.
    pub fn compute(self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self {
            Self::ArctanhSquare => arctanh_square_loss(pred, target),
            Self::Mse => mse_loss(pred, target),
        }
    }
}

impl FromStr for SimilarityLoss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "arctanh" | "atanh" | "arctanh_square" => Ok(Self::ArctanhSquare),
            "mse" => Ok(Self::Mse),
            other => Err(Error::UnknownLoss(other.to_string())),
        }
    }
}

impl fmt::Display for SimilarityLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ArctanhSquare => "arctanh",
            Self::Mse => "mse",
        })
    }
}

fn check_same_shape(pred: &Tensor, target: &Tensor) -> Result<()> {
    if pred.dims() != target.dims() || pred.elem_count() == 0 {
        return Err(Error::InvalidArgument(format!(
            "prediction {:?} and target {:?} must have the same non-empty shape",
            pred.dims(),
            target.dims()
        )));
    }
    Ok(())
}

/// `ln(1 + v + ε)` and `ln(1 − v + ε)`, each summed in the reference's order.
fn log_terms(v: &Tensor) -> Result<(Tensor, Tensor)> {
    let plus = ((v + 1.0)? + ARCTANH_EPS)?.log()?;
    let minus = (v.affine(-1.0, 1.0)? + ARCTANH_EPS)?.log()?;
    Ok((plus, minus))
}

/// The reference's `ATanhSquare`: `mean((ln(1+p+ε) − ln(1−p+ε) − ln(1+t+ε) + ln(1−t+ε))²)`.
pub fn arctanh_square_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_same_shape(pred, target)?;
    let (pa, pb) = log_terms(pred)?;
    let (ta, tb) = log_terms(&target.to_dtype(pred.dtype())?)?;
    let diff = (((pa - pb)? - ta)? + tb)?;
    Ok(diff.sqr()?.mean_all()?)
}

/// Mean squared error, `torch.nn.MSELoss()` with mean reduction.
pub fn mse_loss(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_same_shape(pred, target)?;
    Ok((pred - target.to_dtype(pred.dtype())?)?.sqr()?.mean_all()?)
}
