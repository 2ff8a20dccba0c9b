//! Where pair similarities come from: pixel embeddings (`U`, with `S = U Uᵀ` never stored) or a
//! dense matrix (a small pixel `S`, or a neural RSM supplied by the user).

use candle_core::{DType, Device, Tensor};

use crate::similarity::centered_unit_rows;
use crate::{Error, Result};

/// A provider of pairwise similarities for `N` images.
///
/// Pair selection reads it in row strips (`S[r0..r1, r0..N]`), so the dense matrix is never
/// needed; the training sampler asks for single pairs on demand.
#[derive(Debug, Clone)]
pub enum SimilaritySource {
    /// Normalised centred pixel rows `U` (`[N, D]`); `S = U Uᵀ`.
    Pixel {
        /// `U` on its compute device (strips are matrix products there).
        rows: Tensor,
        /// A host copy of `U` for on-demand single-pair dot products.
        host: Vec<f32>,
        /// Row length `D`.
        dim: usize,
    },
    /// An explicit row-major `[N, N]` similarity matrix.
    Matrix {
        /// Row-major values.
        values: Vec<f32>,
        /// Number of images `N`.
        n: usize,
    },
}

impl SimilaritySource {
    /// Pixel similarities of `[N, C, H, W]` or `[N, D]` images (see
    /// [`crate::similarity::centered_unit_rows`]).
    pub fn from_images(images: &Tensor) -> Result<Self> {
        let rows = centered_unit_rows(images)?;
        let dim = rows.dim(1)?;
        let host = rows.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::Pixel { rows, host, dim })
    }

    /// A dense `[N, N]` matrix (validated only for shape here; see
    /// [`crate::external::load_similarity_matrix`] for full validation of user files).
    pub fn from_matrix(s: &Tensor) -> Result<Self> {
        let (n, m) = s.dims2()?;
        if n != m || n < 2 {
            return Err(Error::InvalidArgument(format!(
                "a similarity matrix must be square with N >= 2, got [{n}, {m}]"
            )));
        }
        let values = s.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(Self::Matrix { values, n })
    }

    /// Number of images `N`.
    pub fn len(&self) -> usize {
        match self {
            Self::Pixel { host, dim, .. } => host.len() / dim,
            Self::Matrix { n, .. } => *n,
        }
    }

    /// Always false: a source holds at least two images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `S[r0..r0+rows, r0..N]` row-major into `out` (resized to `rows · (N − r0)`).
    ///
    /// Only the upper part of `S` is ever computed (columns from `r0`), so a full sweep costs
    /// about half of `U Uᵀ`. On the CPU the product goes straight into `out` through SGEMM; on
    /// other devices it is a tensor product copied back.
    pub fn strip_into(&self, r0: usize, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        let n = self.len();
        if rows == 0 || r0 + rows > n {
            return Err(Error::InvalidArgument(format!(
                "strip rows {r0}..{} out of range for {n} images",
                r0 + rows
            )));
        }
        let width = n - r0;
        match self {
            Self::Pixel { rows: u, host, dim } if u.device().is_cpu() => {
                out.clear();
                out.resize(rows * width, 0.0);
                let d = *dim;
                let block = &host[r0 * d..(r0 + rows) * d];
                let rest = &host[r0 * d..];
                // SAFETY: `out` holds rows×width f32 written row-major (column stride 1, row
                // stride width); `block` is rows×d row-major; `rest` read as the d×width
                // matrix `restᵀ` (element (k, j) at j·d + k) lies within its n−r0 rows of d
                // values. With `read_dst` false the destination is only written.
                unsafe {
                    gemm::gemm(
                        rows,
                        width,
                        d,
                        out.as_mut_ptr(),
                        1,
                        width as isize,
                        false,
                        block.as_ptr(),
                        1,
                        d as isize,
                        rest.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    );
                }
            }
            Self::Pixel { rows: u, .. } => {
                let block = u.narrow(0, r0, rows)?;
                let rest = u.narrow(0, r0, width)?;
                *out = block.matmul(&rest.t()?)?.flatten_all()?.to_vec1()?;
            }
            Self::Matrix { values, .. } => {
                out.clear();
                for i in r0..r0 + rows {
                    out.extend_from_slice(&values[i * n + r0..(i + 1) * n]);
                }
            }
        }
        Ok(())
    }

    /// The similarity of one pair, computed on demand (a length-`D` dot product for pixel
    /// sources). It may differ from the strip value in the last bits.
    pub fn pair(&self, i: usize, j: usize) -> f32 {
        match self {
            Self::Pixel { host, dim, .. } => {
                let a = &host[i * dim..(i + 1) * dim];
                let b = &host[j * dim..(j + 1) * dim];
                a.iter().zip(b).map(|(x, y)| x * y).sum()
            }
            Self::Matrix { values, n } => values[i * n + j],
        }
    }

    /// The device strips are computed on.
    pub fn device(&self) -> Device {
        match self {
            Self::Pixel { rows, .. } => rows.device().clone(),
            Self::Matrix { .. } => Device::Cpu,
        }
    }
}
