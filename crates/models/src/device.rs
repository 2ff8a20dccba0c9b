//! Device names as configs and command lines spell them: `cpu` or `cuda:N`.
//!
//! Checking a name is separate from opening the device so that a GPU config can be validated
//! (and its run id computed) on a machine without a GPU, e.g. a cluster login node.
//!
//! ```
//! use pixreg_models::device::{cuda_ordinal, open_device};
//!
//! assert_eq!(cuda_ordinal("cuda:1")?, Some(1));
//! assert_eq!(cuda_ordinal("cpu")?, None);
//! assert!(cuda_ordinal("gpu").is_err());
//! assert!(open_device("cpu")?.is_cpu());
//! # Ok::<(), pixreg_models::Error>(())
//! ```

use candle_core::Device;

use crate::error::{Error, Result};

/// The CUDA ordinal of `cuda:N`, `None` for `cpu`; any other name is an error.
pub fn cuda_ordinal(name: &str) -> Result<Option<usize>> {
    if name == "cpu" {
        return Ok(None);
    }
    name.strip_prefix("cuda:")
        .and_then(|n| n.parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| Error::DeviceName(name.to_string()))
}

/// Opens the device `cpu` or `cuda:N` (the latter needs a build with the `cuda` feature and
/// a GPU; candle's error says which is missing).
pub fn open_device(name: &str) -> Result<Device> {
    match cuda_ordinal(name)? {
        None => Ok(Device::Cpu),
        Some(ordinal) => Ok(Device::new_cuda(ordinal)?),
    }
}
