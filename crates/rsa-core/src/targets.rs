//! Thresholded ("boosted") similarity targets.
//!
//! The paper does not ask the network to match raw pixel similarities: it thresholds them to
//! `{−1, 0, +1}` (`utils.boosting`): `+v` where `s > Th`, `−v` where `s < −Th` (strict), `0`
//! elsewhere, with an identity diagonal. [`ThresholdedTargets`] holds that rule once so that pair
//! selection, the training sampler and the CLI agree on every target.
//!
//! ## The second threshold
//! The reference accepts a second threshold `Th2 < Th` but its implementation is a no-op: it
//! writes 0 where `|s| < Th2`, which is already 0 (its authors flag it as "not working
//! properly"). [`DoubleThresholdMode::Reference`] reproduces that (the default), and
//! [`DoubleThresholdMode::Graded`] is the two-threshold rule the name suggests: `±v` beyond `Th`,
//! `0` below `Th2`, and the raw similarity in between. With the `double` pair range the middle
//! band is never selected, so both modes agree there; they differ for ranges such as `all`.
//!
//! ```
//! use rsa_core::ThresholdedTargets;
//!
//! # fn main() -> rsa_core::Result<()> {
//! let rule = ThresholdedTargets::new(0.8)?;
//! assert_eq!(rule.target(0.9), 1.0);
//! assert_eq!(rule.target(-0.85), -1.0);
//! assert_eq!(rule.target(0.8), 0.0); // strict comparison
//! # Ok(()) }
//! ```

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// How a second threshold changes the targets (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DoubleThresholdMode {
    /// The reference's behaviour: identical to single thresholding.
    #[default]
    Reference,
    /// `±v` where `|s| > Th`, `0` where `|s| < Th2`, raw `s` in between.
    Graded,
}

/// A validated second threshold and how it is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondThreshold {
    /// `Th2`, strictly below the main threshold.
    pub value: f32,
    /// Reference (no-op) or graded behaviour.
    pub mode: DoubleThresholdMode,
}

/// The rule turning a similarity `s` into a training target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdedTargets {
    threshold: f32,
    value: f32,
    second: Option<SecondThreshold>,
    boosting: bool,
}

fn check_threshold(value: f64) -> Result<f32> {
    if !(0.0..=1.0).contains(&value) {
        return Err(Error::InvalidThreshold { value });
    }
    Ok(value as f32)
}

impl ThresholdedTargets {
    /// Boosted targets at threshold `Th ∈ [0, 1]` with magnitude 1, as the reference default.
    pub fn new(threshold: f64) -> Result<Self> {
        Ok(Self {
            threshold: check_threshold(threshold)?,
            value: 1.0,
            second: None,
            boosting: true,
        })
    }

    /// Sets the magnitude `v` of the `±v` targets (`--reg_boost_val_1`).
    pub fn with_value(mut self, value: f32) -> Result<Self> {
        if !value.is_finite() || !(0.0..=1.0).contains(&value) {
            return Err(Error::InvalidArgument(format!(
                "target magnitude {value} is invalid: it must lie in [0, 1]"
            )));
        }
        self.value = value;
        Ok(self)
    }

    /// Adds a second threshold `Th2 < Th` (`--reg_thresh_2`).
    pub fn with_second_threshold(mut self, value: f64, mode: DoubleThresholdMode) -> Result<Self> {
        let th2 = check_threshold(value)?;
        if th2 >= self.threshold {
            return Err(Error::InvalidDoubleThreshold(format!(
                "the second threshold ({value}) must be lower than the first ({})",
                self.threshold
            )));
        }
        self.second = Some(SecondThreshold { value: th2, mode });
        Ok(self)
    }

    /// Disables boosting: targets are the raw similarities (`--no-reg_boosting`).
    pub fn without_boosting(mut self) -> Self {
        self.boosting = false;
        self
    }

    /// The main threshold `Th`.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The second threshold, if any.
    pub fn second_threshold(&self) -> Option<SecondThreshold> {
        self.second
    }

    /// The magnitude `v` of the boosted targets.
    pub fn value(&self) -> f32 {
        self.value
    }

    /// Whether similarities are thresholded (true) or used raw.
    pub fn boosting(&self) -> bool {
        self.boosting
    }

    /// The target for one similarity value.
    pub fn target(&self, s: f32) -> f32 {
        if !self.boosting {
            return s;
        }
        if s > self.threshold {
            return self.value;
        }
        if s < -self.threshold {
            return -self.value;
        }
        match self.second {
            Some(SecondThreshold {
                value,
                mode: DoubleThresholdMode::Graded,
            }) if s.abs() >= value => s,
            _ => 0.0,
        }
    }

    /// Applies the rule to a dense `[N, N]` similarity matrix as the reference's `boosting`,
    /// which starts from the identity and overwrites the entries beyond the threshold: a
    /// diagonal entry is therefore `v` (as `s_ii = 1 > Th`), or 1 when `Th = 1`. The diagonal
    /// is never used for training (pairs have `i < j`).
    pub fn apply_matrix(&self, s: &Tensor) -> Result<Tensor> {
        let (n, m) = s.dims2()?;
        if n != m {
            return Err(Error::InvalidArgument(format!(
                "a similarity matrix must be square, got [{n}, {m}]"
            )));
        }
        let mut values: Vec<f32> = s.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        for (k, v) in values.iter_mut().enumerate() {
            let target = self.target(*v);
            *v = if k / n == k % n && self.boosting && target == 0.0 {
                1.0
            } else {
                target
            };
        }
        Ok(Tensor::from_vec(values, (n, n), s.device())?)
    }
}
