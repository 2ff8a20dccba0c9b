//! Serde helpers for numbers that may be NaN (the median of a repeat where every image
//! failed): JSON has no NaN, serde_json writes it as `null`, and these read `null` back as
//! NaN, so a report survives a round trip through a file.
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Summary {
//!     #[serde(deserialize_with = "pixreg_attacks::nan_as_null::number")]
//!     median: f64,
//! }
//! let text = serde_json::to_string(&Summary { median: f64::NAN })?;
//! assert_eq!(text, r#"{"median":null}"#);
//! let back: Summary = serde_json::from_str(&text)?;
//! assert!(back.median.is_nan());
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Deserializer};

/// A number, `null` read as NaN.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A list of numbers, each `null` read as NaN.
pub fn numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let values = Vec::<Option<f64>>::deserialize(d)?;
    Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}
