//! Pair selection: which `(i, j)` pairs (`i < j`) the regularizer trains on.
//!
//! The reference (`utils.select_indices`) keeps pairs by comparing their similarity `s` with the
//! threshold `Th` (strictly), and lists them as a concatenation of groups, each group in
//! row-major `(i, then j)` order:
//!
//! | range | groups, in order |
//! |---|---|
//! | `all` | every pair |
//! | `high` | `s > Th`, then `s < −Th` |
//! | `low` | `|s| < Th` |
//! | `positive` | `s > Th`, then `|s| < Th` |
//! | `negative` | `s < −Th`, then `|s| < Th` |
//! | `high_positive` | `s > Th` |
//! | `double` | `|s| < Th2`, then `|s| > Th` |
//!
//! Two representations are offered, both computed from row strips of `S` so that the dense
//! matrix is never needed:
//! * [`select_pairs`] materialises the list with its targets ([`PairList`]); this is what the
//!   `pixreg rsa` command writes.
//! * [`PairSelection`] keeps one bit per candidate pair and group (`N(N−1)/16` bytes each;
//!   nothing at all for `all`) and answers "the r-th selected pair" in `O(log N)`, which the
//!   training sampler needs. `N = 50 000` fits in a few hundred megabytes for every range.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use rsa_core::{select_pairs, PairRange, SimilaritySource, ThresholdedTargets};
//!
//! # fn main() -> rsa_core::Result<()> {
//! let images = Tensor::rand(0f32, 1.0, (10, 1, 6, 6), &Device::Cpu)?;
//! let source = SimilaritySource::from_images(&images)?;
//! let rule = ThresholdedTargets::new(0.1)?;
//! let list = select_pairs(&source, PairRange::High, &rule)?;
//! assert!(list.targets.iter().all(|&t| t == 1.0 || t == -1.0));
//! assert!(list.pairs.iter().all(|&[i, j]| i < j));
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::targets::{DoubleThresholdMode, SecondThreshold};
use crate::{Error, Result, SimilaritySource, ThresholdedTargets};

/// The reference's `reg_range` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PairRange {
    /// Every pair.
    #[default]
    All,
    /// `|s| > Th`.
    High,
    /// `|s| < Th`.
    Low,
    /// `s > Th` or `|s| < Th`.
    Positive,
    /// `s < −Th` or `|s| < Th`.
    Negative,
    /// `s > Th`.
    HighPositive,
    /// `|s| < Th2` or `|s| > Th`.
    Double,
}

impl PairRange {
    /// Every range, in the order of the reference's documentation.
    pub const ALL: [PairRange; 7] = [
        Self::All,
        Self::High,
        Self::Low,
        Self::Positive,
        Self::Negative,
        Self::HighPositive,
        Self::Double,
    ];

    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::High => "high",
            Self::Low => "low",
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::HighPositive => "high_positive",
            Self::Double => "double",
        }
    }

    fn groups(self) -> &'static [Group] {
        use Group::*;
        match self {
            Self::All => &[Every],
            Self::High => &[Above, Below],
            Self::Low => &[Within],
            Self::Positive => &[Above, Within],
            Self::Negative => &[Below, Within],
            Self::HighPositive => &[Above],
            Self::Double => &[WithinSecond, Outside],
        }
    }
}

impl FromStr for PairRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| Error::UnknownRange(s.to_string()))
    }
}

impl fmt::Display for PairRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One group of the reference's concatenated pair list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Every,
    Above,
    Below,
    Within,
    WithinSecond,
    Outside,
}

/// Thresholds resolved for fast classification of one similarity value.
#[derive(Debug, Clone, Copy)]
struct Classifier {
    th: f32,
    th2: f32,
}

impl Classifier {
    fn new(range: PairRange, rule: &ThresholdedTargets) -> Result<Self> {
        let th2 = match (range, rule.second_threshold()) {
            (PairRange::Double, Some(second)) => second.value,
            (PairRange::Double, None) => {
                return Err(Error::InvalidDoubleThreshold(
                    "pair range `double` needs a second threshold (lower than the first)".into(),
                ))
            }
            (_, second) => second.map_or(0.0, |s| s.value),
        };
        Ok(Self {
            th: rule.threshold(),
            th2,
        })
    }

    fn matches(self, group: Group, s: f32) -> bool {
        match group {
            Group::Every => true,
            Group::Above => s > self.th,
            Group::Below => s < -self.th,
            Group::Within => s.abs() < self.th,
            Group::WithinSecond => s.abs() < self.th2,
            Group::Outside => s.abs() > self.th,
        }
    }

    /// Index of the group `s` belongs to, if any (groups of a range are disjoint).
    fn group_of(self, groups: &[Group], s: f32) -> Option<usize> {
        groups.iter().position(|&g| self.matches(g, s))
    }
}

/// Number of strip rows so that one strip holds about 16 M similarities (64 MB).
fn strip_rows(n: usize) -> usize {
    (16 * 1024 * 1024 / n.max(1)).clamp(1, 1024)
}

/// Calls `visit(r0, rows, strip)` for consecutive row strips covering all `N` rows, where
/// `strip` is `S[r0..r0+rows, r0..N]` row-major (so it includes the diagonal).
fn for_each_strip(
    source: &SimilaritySource,
    mut visit: impl FnMut(usize, usize, &[f32]),
) -> Result<()> {
    let n = source.len();
    let rows = strip_rows(n);
    let mut strip = Vec::new();
    let mut r0 = 0;
    while r0 < n {
        let b = rows.min(n - r0);
        source.strip_into(r0, b, &mut strip)?;
        visit(r0, b, &strip);
        r0 += b;
    }
    Ok(())
}

/// Calls `visit(i, j, s)` for every pair `i < j`, row by row, computing `S` strip by strip.
fn for_each_pair(
    source: &SimilaritySource,
    mut visit: impl FnMut(usize, usize, f32),
) -> Result<()> {
    let n = source.len();
    for_each_strip(source, |r0, b, strip| {
        let width = n - r0;
        for di in 0..b {
            let row = &strip[di * width..(di + 1) * width];
            for (dj, &s) in row.iter().enumerate().skip(di + 1) {
                visit(r0 + di, r0 + dj, s);
            }
        }
    })
}

/// A materialised pair list in the reference's order, with one target per pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairList {
    /// `(i, j)` with `i < j`.
    pub pairs: Vec<[u32; 2]>,
    /// The target of each pair under the [`ThresholdedTargets`] rule.
    pub targets: Vec<f32>,
}

impl PairList {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair was selected.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Collects selected pairs per group, then concatenates the groups in the reference's order.
struct Collector<'a> {
    classifier: Classifier,
    groups: &'static [Group],
    rule: &'a ThresholdedTargets,
    parts: Vec<PairList>,
}

impl<'a> Collector<'a> {
    fn new(
        source: &SimilaritySource,
        range: PairRange,
        rule: &'a ThresholdedTargets,
    ) -> Result<Self> {
        let groups = range.groups();
        let mut parts = vec![PairList::default(); groups.len()];
        if range == PairRange::All {
            let total = pair_count(source.len()) as usize;
            parts[0].pairs.reserve_exact(total);
            parts[0].targets.reserve_exact(total);
        }
        Ok(Self {
            classifier: Classifier::new(range, rule)?,
            groups,
            rule,
            parts,
        })
    }

    fn visit(&mut self, i: usize, j: usize, s: f32) {
        if let Some(g) = self.classifier.group_of(self.groups, s) {
            self.parts[g].pairs.push([i as u32, j as u32]);
            self.parts[g].targets.push(self.rule.target(s));
        }
    }

    fn finish(mut self) -> PairList {
        let mut list = self.parts.remove(0);
        for part in self.parts {
            list.pairs.extend(part.pairs);
            list.targets.extend(part.targets);
        }
        list
    }
}

/// Selects the pairs of `range` from `source` in the reference's order, with their targets,
/// reading `S` in row strips (peak memory: one strip plus the output).
pub fn select_pairs(
    source: &SimilaritySource,
    range: PairRange,
    rule: &ThresholdedTargets,
) -> Result<PairList> {
    if range == PairRange::All {
        return select_all_pairs(source, rule);
    }
    let mut collector = Collector::new(source, range, rule)?;
    for_each_pair(source, |i, j, s| collector.visit(i, j, s))?;
    Ok(collector.finish())
}

/// The `all` range: every pair's place in the output is known (row-major), so each strip's
/// rows are filled in parallel.
fn select_all_pairs(source: &SimilaritySource, rule: &ThresholdedTargets) -> Result<PairList> {
    let n = source.len();
    let total = pair_count(n) as usize;
    let mut pairs = vec![[0u32; 2]; total];
    let mut targets = vec![0f32; total];
    let mut done = 0usize;
    for_each_strip(source, |r0, b, strip| {
        let width = n - r0;
        let len: usize = (r0..r0 + b).map(|i| n - 1 - i).sum();
        let mut pair_rest = &mut pairs[done..done + len];
        let mut target_rest = &mut targets[done..done + len];
        let mut rows = Vec::with_capacity(b);
        for i in r0..r0 + b {
            let (p, p_next) = std::mem::take(&mut pair_rest).split_at_mut(n - 1 - i);
            let (t, t_next) = std::mem::take(&mut target_rest).split_at_mut(n - 1 - i);
            rows.push((i, p, t));
            pair_rest = p_next;
            target_rest = t_next;
        }
        rows.into_par_iter().for_each(|(i, p, t)| {
            let di = i - r0;
            let sims = &strip[di * width + di + 1..(di + 1) * width];
            for (k, &sim) in sims.iter().enumerate() {
                p[k] = [i as u32, (i + 1 + k) as u32];
                t[k] = rule.target(sim);
            }
        });
        done += len;
    })?;
    Ok(PairList { pairs, targets })
}

/// [`select_pairs`] plus the dense `[N, N]` similarity matrix, from the same strips: each
/// product is computed once and mirrored, so `S` costs half a full matrix product.
pub fn select_pairs_with_matrix(
    source: &SimilaritySource,
    range: PairRange,
    rule: &ThresholdedTargets,
) -> Result<(PairList, Vec<f32>)> {
    let n = source.len();
    let mut collector = Collector::new(source, range, rule)?;
    let mut matrix = vec![0f32; n * n];
    for_each_strip(source, |r0, b, strip| {
        let width = n - r0;
        for di in 0..b {
            let i = r0 + di;
            let row = &strip[di * width..(di + 1) * width];
            matrix[i * n + i] = row[di];
            for (dj, &s) in row.iter().enumerate().skip(di + 1) {
                let j = r0 + dj;
                matrix[i * n + j] = s;
                matrix[j * n + i] = s;
                collector.visit(i, j, s);
            }
        }
    })?;
    Ok((collector.finish(), matrix))
}

/// Number of pairs `i < j` among `n` images.
pub fn pair_count(n: usize) -> u64 {
    let n = n as u64;
    n * n.saturating_sub(1) / 2
}

/// Row-major linear index of pair `(i, j)`, `i < j`, among `n` images.
pub fn pair_to_linear(n: usize, i: usize, j: usize) -> u64 {
    let (n, i, j) = (n as u64, i as u64, j as u64);
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

/// Inverse of [`pair_to_linear`].
pub fn linear_to_pair(n: usize, t: u64) -> (usize, usize) {
    let nn = n as u64;
    let row_start = |i: u64| i * (2 * nn - i - 1) / 2;
    let b = (2 * nn - 1) as f64;
    let mut i = ((b - (b * b - 8.0 * t as f64).max(0.0).sqrt()) / 2.0) as u64;
    i = i.min(nn.saturating_sub(2));
    while i > 0 && row_start(i) > t {
        i -= 1;
    }
    while i + 1 < nn - 1 && row_start(i + 1) <= t {
        i += 1;
    }
    let j = t - row_start(i) + i + 1;
    (i as usize, j as usize)
}

/// A bit per candidate pair, with a rank directory for `select`.
#[derive(Debug, Clone)]
struct RankedBits {
    words: Vec<u64>,
    /// Set bits before each block of [`BLOCK_WORDS`] words.
    block_ranks: Vec<u64>,
    ones: u64,
}

const BLOCK_WORDS: usize = 8;

impl RankedBits {
    fn new(len: u64) -> Self {
        Self {
            words: vec![0; len.div_ceil(64) as usize],
            block_ranks: Vec::new(),
            ones: 0,
        }
    }

    fn set(&mut self, t: u64) {
        self.words[(t / 64) as usize] |= 1 << (t % 64);
    }

    fn finish(&mut self) {
        let mut acc = 0u64;
        self.block_ranks = self
            .words
            .chunks(BLOCK_WORDS)
            .map(|block| {
                let before = acc;
                acc += block.iter().map(|w| w.count_ones() as u64).sum::<u64>();
                before
            })
            .collect();
        self.ones = acc;
    }

    /// Position of the `r`-th set bit (`r < ones`).
    fn select(&self, r: u64) -> u64 {
        let block = self.block_ranks.partition_point(|&before| before <= r) - 1;
        let mut remaining = r - self.block_ranks[block];
        let mut w = block * BLOCK_WORDS;
        loop {
            let c = self.words[w].count_ones() as u64;
            if remaining < c {
                break;
            }
            remaining -= c;
            w += 1;
        }
        let mut word = self.words[w];
        for _ in 0..remaining {
            word &= word - 1;
        }
        w as u64 * 64 + word.trailing_zeros() as u64
    }
}

/// How the members of one group are stored.
#[derive(Debug, Clone)]
enum Members {
    /// Every pair (the `all` range): nothing stored.
    Every,
    /// One bit per candidate pair.
    Bits(RankedBits),
}

/// A compact pair selection for training: rank `r` (in the reference's order) → pair and
/// target, without materialising the list.
#[derive(Debug, Clone)]
pub struct PairSelection {
    source: SimilaritySource,
    rule: ThresholdedTargets,
    range: PairRange,
    groups: Vec<(Group, Members)>,
    /// Cumulative member counts: `starts[g]` is the rank of group `g`'s first pair.
    starts: Vec<u64>,
    len: u64,
}

impl PairSelection {
    /// Classifies every pair of `source` (strip by strip) and keeps the selection as bitsets.
    ///
    /// For `all`, nothing is computed up front: targets come on demand from single-pair
    /// similarities (`O(N·D)` memory).
    pub fn build(
        source: SimilaritySource,
        range: PairRange,
        rule: ThresholdedTargets,
    ) -> Result<Self> {
        let classifier = Classifier::new(range, &rule)?;
        let n = source.len();
        let total = pair_count(n);
        let kinds = range.groups();
        let mut groups: Vec<(Group, Members)> = kinds
            .iter()
            .map(|&g| {
                let members = if g == Group::Every {
                    Members::Every
                } else {
                    Members::Bits(RankedBits::new(total))
                };
                (g, members)
            })
            .collect();
        if range != PairRange::All {
            let mut t = 0u64;
            for_each_pair(&source, |_, _, s| {
                if let Some(g) = classifier.group_of(kinds, s) {
                    if let Members::Bits(bits) = &mut groups[g].1 {
                        bits.set(t);
                    }
                }
                t += 1;
            })?;
        }
        let mut starts = Vec::with_capacity(groups.len());
        let mut len = 0u64;
        for (_, members) in &mut groups {
            starts.push(len);
            len += match members {
                Members::Every => total,
                Members::Bits(bits) => {
                    bits.finish();
                    bits.ones
                }
            };
        }
        Ok(Self {
            source,
            rule,
            range,
            groups,
            starts,
            len,
        })
    }

    /// Number of selected pairs.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no pair was selected.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of images `N`.
    pub fn image_count(&self) -> usize {
        self.source.len()
    }

    /// The range this selection was built for.
    pub fn range(&self) -> PairRange {
        self.range
    }

    /// The target rule.
    pub fn rule(&self) -> &ThresholdedTargets {
        &self.rule
    }

    /// Fraction of all `N(N−1)/2` pairs that are selected.
    pub fn fraction(&self) -> f64 {
        self.len as f64 / pair_count(self.source.len()) as f64
    }

    /// The `rank`-th selected pair in the reference's order and its target.
    ///
    /// Errors when `rank >= len()`.
    pub fn get(&self, rank: u64) -> Result<(u32, u32, f32)> {
        if rank >= self.len {
            return Err(Error::InvalidArgument(format!(
                "pair rank {rank} is out of range: {} pairs are selected",
                self.len
            )));
        }
        let g = self.starts.partition_point(|&start| start <= rank) - 1;
        let within = rank - self.starts[g];
        let (group, members) = &self.groups[g];
        let t = match members {
            Members::Every => within,
            Members::Bits(bits) => bits.select(within),
        };
        let (i, j) = linear_to_pair(self.source.len(), t);
        let graded = matches!(
            self.rule.second_threshold(),
            Some(SecondThreshold {
                mode: DoubleThresholdMode::Graded,
                ..
            })
        );
        // Group membership fixes the boosted target exactly; only raw (or graded) values need
        // the similarity itself.
        let target = match (group, self.rule.boosting()) {
            (Group::Above, true) => self.rule.value(),
            (Group::Below, true) => -self.rule.value(),
            (Group::WithinSecond, true) => 0.0,
            (Group::Outside, true) if self.source.pair(i, j) > 0.0 => self.rule.value(),
            (Group::Outside, true) => -self.rule.value(),
            (Group::Within, true) if !graded => 0.0,
            _ => self.rule.target(self.source.pair(i, j)),
        };
        Ok((i as u32, j as u32, target))
    }
}
