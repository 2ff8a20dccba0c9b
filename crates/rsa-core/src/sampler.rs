//! Shuffled batches of pairs, as the reference's pair loader (`shuffle=True`, `drop_last=True`,
//! a fresh shuffle at every epoch and whenever the pairs run out) — seeded and resumable.
//!
//! A shuffle of 12.5 M (or, for `N = 50 000`, 1.25 G) pairs is never stored: each pass uses a
//! keyed pseudo-random permutation of `[0, P)` (a balanced Feistel network with cycle walking),
//! so the sampler's state is three integers and resuming is exact.
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{Device, Tensor};
//! use rsa_core::{PairRange, PairSampler, PairSelection, SimilaritySource, ThresholdedTargets};
//!
//! # fn main() -> rsa_core::Result<()> {
//! let images = Tensor::rand(0f32, 1.0, (20, 1, 4, 4), &Device::Cpu)?;
//! let source = SimilaritySource::from_images(&images)?;
//! let selection = Arc::new(PairSelection::build(source, PairRange::All, ThresholdedTargets::new(0.5)?)?);
//! let mut sampler = PairSampler::new(selection.clone(), 16, 7)?;
//! let batch = sampler.next_batch()?;
//! assert_eq!(batch.rows.len(), 16);
//! let state = sampler.state();
//! let expected = sampler.next_batch()?;
//! let mut resumed = PairSampler::resume(selection, 16, state)?;
//! assert_eq!(resumed.next_batch()?, expected);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use crate::{Error, PairSelection, Result};

/// A keyed bijection of `[0, domain)`.
#[derive(Debug, Clone)]
struct FeistelPermutation {
    domain: u64,
    half_bits: u32,
    keys: [u64; 4],
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FeistelPermutation {
    fn new(domain: u64, key: u64) -> Self {
        let bits = (64 - domain.saturating_sub(1).leading_zeros()).max(2);
        let half_bits = bits.div_ceil(2);
        let mut k = key;
        let keys = [0; 4].map(|_| {
            k = splitmix64(k);
            k
        });
        Self {
            domain,
            half_bits,
            keys,
        }
    }

    fn permute_once(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in self.keys {
            let f = splitmix64(right ^ key) & mask;
            (left, right) = (right, left ^ f);
        }
        (left << self.half_bits) | right
    }

    fn apply(&self, x: u64) -> u64 {
        let mut y = self.permute_once(x);
        while y >= self.domain {
            y = self.permute_once(y);
        }
        y
    }
}

/// Where a sampler stands: enough to continue exactly where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SamplerState {
    /// The seed the sampler was created with.
    pub seed: u64,
    /// Number of completed or abandoned passes (each pass is a fresh shuffle).
    pub pass: u64,
    /// Batches already drawn in the current pass.
    pub batch_in_pass: u64,
}

/// One batch of pairs and their targets.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBatch {
    /// First image of each pair.
    pub rows: Vec<u32>,
    /// Second image of each pair.
    pub cols: Vec<u32>,
    /// Target of each pair.
    pub targets: Vec<f32>,
}

/// Draws shuffled batches of `k` pairs from a [`PairSelection`], dropping the incomplete last
/// batch of every pass.
#[derive(Debug, Clone)]
pub struct PairSampler {
    selection: Arc<PairSelection>,
    batch_size: usize,
    state: SamplerState,
    permutation: FeistelPermutation,
}

impl PairSampler {
    /// A sampler at the start of its first pass.
    pub fn new(selection: Arc<PairSelection>, batch_size: usize, seed: u64) -> Result<Self> {
        Self::resume(
            selection,
            batch_size,
            SamplerState {
                seed,
                pass: 0,
                batch_in_pass: 0,
            },
        )
    }

    /// A sampler continuing from a saved [`SamplerState`].
    pub fn resume(
        selection: Arc<PairSelection>,
        batch_size: usize,
        state: SamplerState,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidArgument(
                "the pair batch size must be at least 1".into(),
            ));
        }
        if selection.len() < batch_size as u64 {
            return Err(Error::InvalidArgument(format!(
                "only {} pairs are selected, fewer than one batch of {batch_size}; lower the \
                 threshold, choose another range or use more images",
                selection.len()
            )));
        }
        let batches = selection.len() / batch_size as u64;
        if state.batch_in_pass > batches {
            return Err(Error::InvalidArgument(format!(
                "sampler state is at batch {} of a pass that has only {batches} batches: it \
                 was saved for another selection",
                state.batch_in_pass
            )));
        }
        let permutation = Self::pass_permutation(&selection, state);
        Ok(Self {
            selection,
            batch_size,
            state,
            permutation,
        })
    }

    fn pass_permutation(selection: &PairSelection, state: SamplerState) -> FeistelPermutation {
        FeistelPermutation::new(
            selection.len(),
            splitmix64(state.seed ^ splitmix64(state.pass)),
        )
    }

    /// Full batches per pass (`⌊P / k⌋`).
    pub fn batches_per_pass(&self) -> u64 {
        self.selection.len() / self.batch_size as u64
    }

    /// The current position.
    pub fn state(&self) -> SamplerState {
        self.state
    }

    /// Starts a fresh shuffle unless the current pass is untouched, as the reference creates a
    /// new pair iterator at the start of every epoch.
    pub fn restart_pass(&mut self) {
        if self.state.batch_in_pass > 0 {
            self.advance_pass();
        }
    }

    fn advance_pass(&mut self) {
        self.state.pass += 1;
        self.state.batch_in_pass = 0;
        self.permutation = Self::pass_permutation(&self.selection, self.state);
    }

    /// The next batch; a pass that has run out is followed by a new shuffle.
    pub fn next_batch(&mut self) -> Result<PairBatch> {
        if self.state.batch_in_pass == self.batches_per_pass() {
            self.advance_pass();
        }
        let k = self.batch_size as u64;
        let first = self.state.batch_in_pass * k;
        let mut batch = PairBatch {
            rows: Vec::with_capacity(self.batch_size),
            cols: Vec::with_capacity(self.batch_size),
            targets: Vec::with_capacity(self.batch_size),
        };
        for q in first..first + k {
            let (i, j, t) = self.selection.get(self.permutation.apply(q))?;
            batch.rows.push(i);
            batch.cols.push(j);
            batch.targets.push(t);
        }
        self.state.batch_in_pass += 1;
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::FeistelPermutation;

    #[test]
    fn feistel_is_a_permutation_for_many_domain_sizes() {
        for domain in [1u64, 2, 3, 5, 16, 17, 100, 1023, 4097] {
            let perm = FeistelPermutation::new(domain, 42);
            let mut seen = vec![false; domain as usize];
            for x in 0..domain {
                let y = perm.apply(x) as usize;
                assert!(!seen[y], "domain {domain}: {y} hit twice");
                seen[y] = true;
            }
        }
    }
}
