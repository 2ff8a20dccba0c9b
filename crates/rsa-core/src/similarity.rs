//! Pixel similarity: the centred cosine similarity of flattened grayscale images.
//!
//! The reference (`utils.similarity_matrix`) averages RGB channels (a plain mean, not luma),
//! flattens every image to a row, subtracts the mean image (each pixel centred across the `N`
//! images), L2-normalises every row and takes `S = U Uᵀ`. We split this in two steps:
//! [`centered_unit_rows`] computes `U` once (O(N·D) memory) and [`pixel_similarity_matrix`]
//! forms the dense `S`. Large `N` never needs the dense matrix: see [`crate::pairs`], which
//! computes `U Uᵀ` in row strips.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rsa_core::pixel_similarity_matrix;
//!
//! # fn main() -> rsa_core::Result<()> {
//! let images = Tensor::rand(0f32, 1.0, (6, 1, 8, 8), &Device::Cpu)?;
//! let s = pixel_similarity_matrix(&images)?;
//! assert_eq!(s.dims(), &[6, 6]);
//! let rows: Vec<Vec<f32>> = s.to_vec2()?;
//! assert!((0..6).all(|i| (rows[i][i] - 1.0).abs() < 1e-5));
//! # Ok(()) }
//! ```

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// A centred image whose norm is below this fraction of the largest one is treated as equal to
/// the mean image: its direction would be rounding noise.
pub const ZERO_NORM_RELATIVE: f32 = 1e-5;

/// Flattens images to `[N, D]` f32 rows, averaging channels first when there are several.
///
/// Accepts `[N, D]` (already flat, used as is) or `[N, C, H, W]`.
pub fn flatten_grayscale(images: &Tensor) -> Result<Tensor> {
    let images = images.to_dtype(DType::F32)?;
    let flat = match images.rank() {
        2 => images,
        4 => {
            let gray = if images.dim(1)? > 1 {
                images.mean(1)?
            } else {
                images.squeeze(1)?
            };
            gray.flatten_from(1)?
        }
        _ => return Err(Error::ImageRank(images.dims().to_vec())),
    };
    let n = flat.dim(0)?;
    if n < 2 {
        return Err(Error::TooFewImages(n));
    }
    Ok(flat.contiguous()?)
}

/// Returns the index of the first row of `x` (`[N, D]`) holding a non-finite value, if any.
fn first_non_finite_row(x: &Tensor) -> Result<Option<usize>> {
    let total = x.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if total.is_finite() {
        return Ok(None);
    }
    let rows: Vec<Vec<f32>> = x.to_vec2()?;
    Ok(rows.iter().position(|r| r.iter().any(|v| !v.is_finite())))
}

/// The reference's normalised, centred image matrix `U` (`[N, D]`, f32): every pixel centred
/// across images, every row scaled to unit L2 norm, so that `S = U Uᵀ`.
///
/// Errors on non-finite pixels and on an image equal to the mean image (zero norm), naming the
/// image index.
pub fn centered_unit_rows(images: &Tensor) -> Result<Tensor> {
    let x = flatten_grayscale(images)?;
    if let Some(index) = first_non_finite_row(&x)? {
        return Err(Error::NonFiniteImage { index });
    }
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let norms = centred.sqr()?.sum_keepdim(1)?.sqrt()?;
    let norm_values: Vec<f32> = norms.flatten_all()?.to_vec1()?;
    // An image equal to the mean image leaves only rounding noise after centring.
    let largest = norm_values.iter().fold(0f32, |m, &v| m.max(v));
    let floor = largest * ZERO_NORM_RELATIVE;
    if let Some(index) = norm_values.iter().position(|&v| v <= floor) {
        return Err(Error::ZeroNormImage { index });
    }
    Ok(centred.broadcast_div(&norms)?.contiguous()?)
}

/// The dense pixel similarity matrix `S` (`[N, N]`, f32) of `[N, C, H, W]` or `[N, D]` images.
///
/// Symmetric, with unit diagonal, entries in `[−1, 1]` up to rounding. Memory is `N²` floats:
/// for large `N` select pairs with [`crate::pairs::PairSelection`] instead.
pub fn pixel_similarity_matrix(images: &Tensor) -> Result<Tensor> {
    let u = centered_unit_rows(images)?;
    Ok(u.matmul(&u.t()?)?)
}
