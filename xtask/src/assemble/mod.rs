//! Assembly: the planned runs' files → every cell of the table (mean ± SEM over seeds, with
//! n), the paired per-seed differences of every variant against its row's baseline and a
//! verdict per claim, written as `table.md`, `table.csv` and `table.json`.
//!
//! A cell is a number or a reason: "data not available: …", "not implemented: …", a failed run
//! with its log, "no successful attack" — never an empty or invented value.
//!
//! `results` reads one run's value of a column with its checks; this module turns the values
//! into cells, selections and paired verdicts; `render` writes the table files.

use pixreg_runner::results::CurveResult;
use serde::Serialize;

mod render;
mod results;

pub use render::{csv, headline_markdown, markdown, write_tables};
pub use results::current_results;
use results::{run_value, ColumnValue};

use crate::exec::{run_state, ExecReport, Paths, RunState};
use crate::plan::{Plan, RowPlan, VariantPlan};

/// Attacks reported as accuracy-vs-ε curves.
pub const CURVE_COLUMNS: [&str; 6] = [
    "gaussian",
    "uniform",
    "saltpepper",
    "fgsm",
    "pgd-linf",
    "pgd-l2",
];

/// A number (mean over seeds, sample std and standard error of the mean when more than one)
/// or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Cell {
    /// Mean over `n` seeds.
    Value {
        /// Mean.
        mean: f64,
        /// Sample standard deviation (n > 1 only).
        std: Option<f64>,
        /// Standard error of the mean, std / √n (n > 1 only).
        sem: Option<f64>,
        /// Seeds.
        n: usize,
    },
    /// No number, with the reason.
    Missing {
        /// Why.
        missing: String,
    },
}

impl Cell {
    fn missing(reason: impl Into<String>) -> Cell {
        Cell::Missing {
            missing: reason.into(),
        }
    }

    /// Mean, sample std and SEM of `values` (n = their count).
    pub fn from_values(values: &[f64]) -> Cell {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        let sem = std.map(|s| s / (n as f64).sqrt());
        Cell::Value { mean, std, sem, n }
    }

    /// The standard error, if a number of more than one seed.
    pub fn sem(&self) -> Option<f64> {
        match self {
            Cell::Value { sem, .. } => *sem,
            Cell::Missing { .. } => None,
        }
    }

    /// The mean, if a number.
    pub fn mean(&self) -> Option<f64> {
        match self {
            Cell::Value { mean, .. } => Some(*mean),
            Cell::Missing { .. } => None,
        }
    }

    /// Text for Markdown and the terminal.
    pub fn display(&self, column: &str) -> String {
        match self {
            Cell::Value { mean, sem, n, .. } => {
                let f = |v: f64| format_value(column, v);
                match sem {
                    Some(s) => format!("{} ± {} (n={n})", f(*mean), f(*s)),
                    None => f(*mean),
                }
            }
            Cell::Missing { missing } => missing.clone(),
        }
    }
}

/// Formats a value with the precision of its column.
pub fn format_value(column: &str, v: f64) -> String {
    match column {
        "boundary" | "boundary-converged" | "hsj" => format!("{v:.3e}"),
        "peak_rss_mib" => format!("{v:.0}"),
        "targets_seconds" | "ratio" => format!("{v:.3}"),
        _ => format!("{v:.1}"),
    }
}

/// Column header with its unit.
pub fn column_header(column: &str) -> &'static str {
    match column {
        "clean" => "Clean (%)",
        "gaussian" => "Gaussian (%)",
        "uniform" => "Uniform (%)",
        "saltpepper" => "Salt & Pepper (%)",
        "fgsm" => "Transferred FGSM (%)",
        "pgd-linf" => "PGD L∞ (%)",
        "pgd-l2" => "PGD L2 (%)",
        "boundary" => "Boundary median",
        "boundary-converged" => "Boundary (converged) median",
        "hsj" => "HopSkipJump median",
        "corruptions" => "Corruptions (%)",
        "corruptions-low" => "Low-freq. corruptions, sev. 4 (%)",
        "corruptions-medium" => "Medium-freq. corruptions, sev. 4 (%)",
        "corruptions-high" => "High-freq. corruptions, sev. 4 (%)",
        "epoch_seconds" => "Time / epoch (s)",
        "train_seconds" => "Training time (s)",
        "peak_rss_mib" => "Peak memory (MiB)",
        "targets_seconds" => "Targets pre-processing (s)",
        _ => "?",
    }
}

/// One column of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnResult {
    /// Column name.
    pub column: String,
    /// Headline value (curves: mean accuracy over ε > 0).
    pub summary: Cell,
    /// ε grid of a curve column (empty otherwise).
    pub epsilons: Vec<f64>,
    /// Accuracy (%) at each ε.
    pub curve: Vec<Cell>,
    /// The headline value of each run, in the order of the variant's `runs` (seed order);
    /// empty when the column has no number.
    pub per_seed: Vec<f64>,
    /// Test images each run's attack evaluated (when every seed used the same number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_images: Option<u64>,
}

/// One variant of one row.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// Variant name.
    pub name: String,
    /// Run ids, one per seed (of the chosen point for a swept variant).
    pub runs: Vec<String>,
    /// Columns in table order.
    pub columns: Vec<ColumnResult>,
    /// Every point of a swept variant with its clean accuracy (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<SweepResult>,
    /// The sweep point reported: the one whose clean accuracy is closest to the target's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
}

impl VariantResult {
    /// Name and, for a swept variant, the chosen value (`Noise augmentation (std = 0.2)`).
    pub fn label(&self) -> String {
        match &self.chosen {
            Some(setting) => {
                let short = match setting.split_once(" = ") {
                    Some((key, value)) => {
                        format!("{} = {value}", key.rsplit('.').next().unwrap_or(key))
                    }
                    None => setting.clone(),
                };
                format!("{} ({short})", self.name)
            }
            None => self.name.clone(),
        }
    }
}

/// One point of a swept variant.
#[derive(Debug, Clone, Serialize)]
pub struct SweepResult {
    /// `key = value`.
    pub setting: String,
    /// Run ids, one per seed.
    pub runs: Vec<String>,
    /// Clean accuracy (%).
    pub clean: Cell,
    /// Clean accuracy of the matched variant (%), the target of the choice.
    pub target_clean: Option<f64>,
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// Label.
    pub label: String,
    /// Task dataset.
    pub dataset: String,
    /// `data not available: …` for a row without data.
    pub unavailable: Option<String>,
    /// Variants.
    pub variants: Vec<VariantResult>,
    /// Every other variant against the row's first (its baseline), seed by seed.
    pub paired: Vec<PairedResult>,
    /// The table's selection rule applied to this row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionResult>,
}

/// A selection rule's verdict on every variant of one row.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionResult {
    /// The rule.
    pub rule: crate::catalogue::SelectionRule,
    /// The grid point used for the robustness condition.
    pub epsilon: Option<f64>,
    /// One entry per regularized variant.
    pub candidates: Vec<SelectionCandidate>,
    /// The selected variant (None when no candidate passes or numbers are missing).
    pub selected: Option<String>,
}

/// One variant under the selection rule.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionCandidate {
    /// Variant name.
    pub variant: String,
    /// Mean clean accuracy over the baseline's.
    pub clean_ratio: Option<f64>,
    /// Mean accuracy at the rule's ε over the baseline's.
    pub robust_ratio: Option<f64>,
    /// Both conditions hold.
    pub passes: bool,
}

/// Applies `rule` to a row whose first variant is the baseline.
fn select(rule: &crate::catalogue::SelectionRule, variants: &[VariantResult]) -> SelectionResult {
    let column =
        |v: &VariantResult, name: &str| v.columns.iter().find(|c| c.column == name).cloned();
    let baseline = variants.first();
    let epsilon = baseline
        .and_then(|b| column(b, &rule.column))
        .and_then(|c| {
            c.epsilons.iter().copied().min_by(|a, b| {
                (a - rule.epsilon)
                    .abs()
                    .total_cmp(&(b - rule.epsilon).abs())
            })
        });
    let at_epsilon = |v: &VariantResult| -> Option<f64> {
        let c = column(v, &rule.column)?;
        let k = c.epsilons.iter().position(|e| Some(*e) == epsilon)?;
        c.curve.get(k)?.mean()
    };
    let clean = |v: &VariantResult| column(v, "clean").and_then(|c| c.summary.mean());
    let candidates: Vec<SelectionCandidate> = variants
        .iter()
        .skip(1)
        .map(|v| {
            let ratio = |f: &dyn Fn(&VariantResult) -> Option<f64>| {
                Some(f(v)? / f(baseline?)?).filter(|r| r.is_finite())
            };
            let clean_ratio = ratio(&clean);
            let robust_ratio = ratio(&at_epsilon);
            let passes = clean_ratio.is_some_and(|r| r >= rule.min_clean_ratio)
                && robust_ratio.is_some_and(|r| r > 1.0);
            SelectionCandidate {
                variant: v.label(),
                clean_ratio,
                robust_ratio,
                passes,
            }
        })
        .collect();
    let selected = candidates
        .iter()
        .filter(|c| c.passes)
        .max_by(|a, b| {
            a.robust_ratio
                .unwrap_or(0.0)
                .total_cmp(&b.robust_ratio.unwrap_or(0.0))
        })
        .map(|c| c.variant.clone());
    SelectionResult {
        rule: rule.clone(),
        epsilon,
        candidates,
        selected,
    }
}

/// One variant against its row's baseline, paired by seed.
#[derive(Debug, Clone, Serialize)]
pub struct PairedResult {
    /// The variant.
    pub variant: String,
    /// The baseline it is compared with.
    pub baseline: String,
    /// One entry per column.
    pub columns: Vec<PairedColumn>,
}

/// The paired comparison of one column.
#[derive(Debug, Clone, Serialize)]
pub struct PairedColumn {
    /// Column name.
    pub column: String,
    /// `difference` (variant − baseline, in the column's unit) for accuracies, `ratio`
    /// (variant / baseline) for decision-attack medians and for the clean-accuracy rule.
    pub kind: String,
    /// Mean ± SEM over seeds of the per-seed difference or ratio.
    pub value: Cell,
    /// Plain words: the claim and whether the seeds support it.
    pub verdict: String,
}

/// The assembled table (`table.json`).
#[derive(Debug, Clone, Serialize)]
pub struct TableResult {
    /// Table name.
    pub table: String,
    /// Title.
    pub title: String,
    /// Profile.
    pub profile: String,
    /// Seeds per variant.
    pub seeds: usize,
    /// The first of them (written when not 0: seeds `first_seed..first_seed + seeds`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_seed: usize,
    /// Columns.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<RowResult>,
    /// The paper figure(s) the table reproduces.
    pub paper_figure: Option<String>,
    /// The paper's numbers beside ours.
    pub paper: Vec<PaperComparison>,
}

fn is_zero(value: &usize) -> bool {
    *value == 0
}

/// "1 seed", "3 seeds", or with a first seed other than 0 "seed 3", "3 seeds (3–5)": how
/// titles and headers name the seeds of a table.
pub fn seeds_label(seeds: usize, first_seed: usize) -> String {
    match (seeds, first_seed) {
        (1, 0) => "1 seed".into(),
        (1, first) => format!("seed {first}"),
        (n, 0) => format!("{n} seeds"),
        (n, first) => format!("{n} seeds ({first}–{})", first + n - 1),
    }
}

/// A number of the paper and ours for the same cell.
#[derive(Debug, Clone, Serialize)]
pub struct PaperComparison {
    /// What the paper reports.
    #[serde(flatten)]
    pub paper: crate::catalogue::PaperValue,
    /// Ours (mean ± SEM over seeds), or why there is none.
    pub ours: Cell,
}

/// Our cell for each of the paper's values.
fn paper_comparisons(
    paper: &[crate::catalogue::PaperValue],
    rows: &[RowResult],
) -> Vec<PaperComparison> {
    let row_of = |p: &crate::catalogue::PaperValue| {
        rows.iter().find(|r| {
            r.dataset == p.dataset && p.row.as_ref().is_none_or(|label| &r.label == label)
        })
    };
    paper
        .iter()
        // A table restricted to some rows or variants (`--rows`, `--variants`) shows the
        // paper's numbers of those (the catalogue's check makes every name a planned one).
        .filter_map(|p| {
            let variant = row_of(p)?.variants.iter().find(|v| v.name == p.variant)?;
            Some((p, variant))
        })
        .map(|(p, variant)| {
            let ours = variant
                .columns
                .iter()
                .find(|c| c.column == p.column)
                .map_or_else(
                    || Cell::missing("not in this table (column not planned)"),
                    |c| match p.epsilon {
                        None => c.summary.clone(),
                        Some(eps) => c
                            .epsilons
                            .iter()
                            .position(|e| (e - eps).abs() < 1e-6)
                            .and_then(|k| c.curve.get(k).cloned())
                            .unwrap_or_else(|| {
                                if c.epsilons.is_empty() {
                                    c.summary.clone()
                                } else {
                                    Cell::missing(format!("our ε grid has no ε = {eps}"))
                                }
                            }),
                    },
                );
            PaperComparison {
                paper: p.clone(),
                ours,
            }
        })
        .collect()
}

/// One column of a variant over its seeds.
fn column_result(
    paths: &Paths,
    runs: &[String],
    column: &str,
    report: &ExecReport,
) -> ColumnResult {
    let mut values = Vec::new();
    for id in runs {
        if let Some(f) = report.failures.get(id) {
            return missing_column(column, format!("failed: {f}"));
        }
        if let Some(why) = report.untrained.get(id) {
            return missing_column(column, why.clone());
        }
        if run_state(&paths.runs_dir, id) != RunState::Finished {
            return missing_column(column, format!("not run yet: {id}"));
        }
        match run_value(paths, id, column) {
            Ok(v) => values.push(v),
            Err(e) => {
                let why = match report.eval_failures.get(id) {
                    Some(f) => format!("failed: {f}"),
                    None => e,
                };
                return missing_column(column, why);
            }
        }
    }
    let n_images = common_value(values.iter().map(|v| v.n_images));
    let scalars: Vec<f64> = values
        .iter()
        .filter_map(|v| match &v.value {
            ColumnValue::Scalar(s) => Some(*s),
            ColumnValue::Curve(_) => None,
        })
        .collect();
    if scalars.len() == values.len() {
        return ColumnResult {
            column: column.into(),
            summary: Cell::from_values(&scalars),
            epsilons: Vec::new(),
            curve: Vec::new(),
            per_seed: scalars,
            n_images,
        };
    }
    let curves: Vec<&CurveResult> = values
        .iter()
        .filter_map(|v| match &v.value {
            ColumnValue::Curve(c) => Some(c),
            ColumnValue::Scalar(_) => None,
        })
        .collect();
    let eps = curves[0].epsilons.clone();
    if curves.iter().any(|c| c.epsilons != eps) {
        return missing_column(column, "seeds were evaluated on different ε grids".into());
    }
    let curve = (0..eps.len())
        .map(|i| Cell::from_values(&curves.iter().map(|c| c.accuracy[i]).collect::<Vec<_>>()))
        .collect();
    let means: Vec<f64> = curves.iter().map(|c| grid_mean(c)).collect();
    ColumnResult {
        column: column.into(),
        summary: Cell::from_values(&means),
        epsilons: eps,
        curve,
        per_seed: means,
        n_images,
    }
}

/// The headline number of a curve: its mean over ε > 0, or over the whole grid when it has
/// no positive ε.
fn grid_mean(curve: &CurveResult) -> f64 {
    curve
        .grid_mean()
        .unwrap_or_else(|| curve.accuracy.iter().sum::<f64>() / curve.accuracy.len() as f64)
}

/// The number of test images behind a column, if the same in every run.
fn common_value(counts: impl Iterator<Item = Option<usize>>) -> Option<u64> {
    let counts: Vec<Option<usize>> = counts.collect();
    let first = *counts.first()?;
    counts
        .iter()
        .all(|c| *c == first)
        .then_some(first)
        .flatten()
        .map(|n| n as u64)
}

fn missing_column(column: &str, reason: String) -> ColumnResult {
    ColumnResult {
        column: column.into(),
        summary: Cell::missing(reason),
        epsilons: Vec::new(),
        curve: Vec::new(),
        per_seed: Vec::new(),
        n_images: None,
    }
}

/// The paper's selection rule (§4.2): a regularized model must keep at least this share of
/// its baseline's clean accuracy.
pub const CLEAN_RATIO_RULE: f64 = 0.9;

/// Columns compared as a ratio (decision-attack medians: higher = more robust, on a log-like
/// scale where a difference means little).
fn is_ratio_column(column: &str) -> bool {
    matches!(column, "boundary" | "boundary-converged" | "hsj")
}

/// Cost columns, not claims.
fn is_cost_column(column: &str) -> bool {
    matches!(
        column,
        "epoch_seconds" | "train_seconds" | "peak_rss_mib" | "targets_seconds"
    )
}

/// Whether `cell` (a paired difference, or a ratio when `ratio`) is clearly above or below
/// `null` (0 or 1): by more than two standard errors.
fn direction(cell: &Cell, null: f64) -> Option<std::cmp::Ordering> {
    let (Some(mean), Some(sem)) = (cell.mean(), cell.sem()) else {
        return None;
    };
    if mean - 2.0 * sem > null {
        Some(std::cmp::Ordering::Greater)
    } else if mean + 2.0 * sem < null {
        Some(std::cmp::Ordering::Less)
    } else {
        Some(std::cmp::Ordering::Equal)
    }
}

/// `variant` against `baseline`, seed by seed (the i-th run of each has seed i).
fn paired_result(variant: &VariantResult, baseline: &VariantResult) -> PairedResult {
    let columns = variant
        .columns
        .iter()
        .zip(&baseline.columns)
        .filter(|(c, _)| !is_cost_column(&c.column))
        .map(|(v, b)| paired_column(v, b))
        .collect();
    PairedResult {
        variant: variant.label(),
        baseline: baseline.label(),
        columns,
    }
}

fn paired_column(v: &ColumnResult, b: &ColumnResult) -> PairedColumn {
    let column = v.column.clone();
    let ratio = column == "clean" || is_ratio_column(&column);
    let kind = if ratio { "ratio" } else { "difference" }.to_string();
    if v.per_seed.is_empty() || v.per_seed.len() != b.per_seed.len() {
        let why = if v.per_seed.is_empty() || b.per_seed.is_empty() {
            "no paired value: a cell of the pair has no number".to_string()
        } else {
            format!(
                "no paired value: {} seeds against {}",
                v.per_seed.len(),
                b.per_seed.len()
            )
        };
        return PairedColumn {
            column,
            kind,
            value: Cell::missing(why.clone()),
            verdict: why,
        };
    }
    let values: Vec<f64> = v
        .per_seed
        .iter()
        .zip(&b.per_seed)
        .map(|(x, y)| if ratio { x / y } else { x - y })
        .collect();
    let value = Cell::from_values(&values);
    let n = values.len();
    let shown = value.display(if ratio { "ratio" } else { &column });
    let verdict = if column == "fgsm" {
        // The baseline is the FGSM surrogate: its own FGSM is white-box, the variant's is
        // transferred, so their difference is not a robustness gain.
        format!(
            "not like for like: the baseline is attacked white-box (it is the surrogate), the \
             variant by transfer ({kind} {shown})"
        )
    } else if column == "clean" {
        let mean = value.mean().unwrap_or(f64::NAN);
        let keeps = if mean >= CLEAN_RATIO_RULE {
            "keeps"
        } else {
            "does not keep"
        };
        let sure = match direction(&value, CLEAN_RATIO_RULE) {
            None => " (1 seed: no error bar)".to_string(),
            Some(std::cmp::Ordering::Equal) => " (within 2 SEM of the rule)".to_string(),
            Some(_) => String::new(),
        };
        format!(
            "{keeps} ≥ {CLEAN_RATIO_RULE} of the baseline's clean accuracy: ratio {shown}{sure}"
        )
    } else {
        let null = if ratio { 1.0 } else { 0.0 };
        match direction(&value, null) {
            None => format!("1 seed, no verdict ({} {shown})", kind),
            Some(std::cmp::Ordering::Greater) => {
                format!("more robust: {kind} {shown}, above {null} by > 2 SEM over {n} seeds")
            }
            Some(std::cmp::Ordering::Less) => {
                format!("less robust: {kind} {shown}, below {null} by > 2 SEM over {n} seeds")
            }
            Some(std::cmp::Ordering::Equal) => {
                format!("no clear difference: {kind} {shown}, within 2 SEM of {null}")
            }
        }
    };
    PairedColumn {
        column,
        kind,
        value,
        verdict,
    }
}

/// Reads every cell of `plan` from the runs directory.
pub fn assemble(plan: &Plan, paths: &Paths, report: &ExecReport) -> TableResult {
    let columns = &plan.table.columns;
    let rows = plan
        .rows
        .iter()
        .map(|row| {
            let variants: Vec<VariantResult> = row
                .variants
                .iter()
                .map(|v| variant_result(plan, paths, report, row, v))
                .collect();
            let paired = match (&row.unavailable, variants.split_first()) {
                (None, Some((baseline, others))) => {
                    others.iter().map(|v| paired_result(v, baseline)).collect()
                }
                _ => Vec::new(),
            };
            let selection = plan
                .table
                .selection
                .as_ref()
                .filter(|_| row.unavailable.is_none())
                .map(|rule| select(rule, &variants));
            RowResult {
                label: row.label.clone(),
                dataset: row.dataset.clone(),
                unavailable: row.unavailable.clone(),
                variants,
                paired,
                selection,
            }
        })
        .collect();
    let rows: Vec<RowResult> = rows;
    TableResult {
        table: plan.table.name.clone(),
        title: plan.table.title.clone(),
        profile: plan.profile.clone(),
        seeds: plan.seeds,
        first_seed: plan.first_seed,
        columns: columns.clone(),
        paper_figure: plan.table.paper_figure.clone(),
        paper: paper_comparisons(&plan.table.paper, &rows),
        rows,
    }
}

/// Every column of one variant; a swept variant reports the point whose clean accuracy is
/// closest to its `match_clean` target's.
fn variant_result(
    plan: &Plan,
    paths: &Paths,
    report: &ExecReport,
    row: &RowPlan,
    v: &VariantPlan,
) -> VariantResult {
    let columns = &plan.table.columns;
    let ids =
        |runs: &[usize]| -> Vec<String> { runs.iter().map(|&i| plan.runs[i].id.clone()).collect() };
    let all_missing = |reason: &str| -> Vec<ColumnResult> {
        columns
            .iter()
            .map(|c| missing_column(c, reason.to_string()))
            .collect()
    };
    let reason = row.unavailable.clone().or_else(|| {
        v.not_implemented
            .as_ref()
            .map(|n| format!("not implemented: {n}"))
            .or_else(|| v.waiting.clone())
    });
    let mut result = VariantResult {
        name: v.name.clone(),
        runs: ids(&v.runs),
        columns: Vec::new(),
        sweep: Vec::new(),
        chosen: None,
    };
    if let Some(reason) = reason {
        result.columns = all_missing(&reason);
        return result;
    }
    if v.sweep.is_empty() {
        result.columns = columns
            .iter()
            .map(|c| column_result(paths, &result.runs, c, report))
            .collect();
        return result;
    }
    let target_name = v.match_clean.clone().unwrap_or_default();
    let target = row
        .variants
        .iter()
        .find(|t| t.name == target_name)
        .map(|t| column_result(paths, &ids(&t.runs), "clean", report).summary);
    let goal = target.as_ref().and_then(Cell::mean);
    result.sweep = v
        .sweep
        .iter()
        .map(|p| {
            let runs = ids(&p.runs);
            SweepResult {
                setting: p.setting.clone(),
                clean: column_result(paths, &runs, "clean", report).summary,
                runs,
                target_clean: goal,
            }
        })
        .collect();
    let Some(goal) = goal else {
        result.columns = all_missing(&format!(
            "waiting for {target_name}: its clean accuracy is the one to match"
        ));
        return result;
    };
    let best = result
        .sweep
        .iter()
        .filter_map(|p| p.clean.mean().map(|m| ((m - goal).abs(), p)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| p.clone());
    match best {
        Some(point) => {
            result.columns = columns
                .iter()
                .map(|c| column_result(paths, &point.runs, c, report))
                .collect();
            result.runs = point.runs;
            result.chosen = Some(point.setting);
        }
        None => {
            let why = result.sweep[0].clean.display("clean");
            result.columns = all_missing(&format!("no sweep point has a clean accuracy: {why}"));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, per_seed: &[f64]) -> ColumnResult {
        ColumnResult {
            column: name.into(),
            summary: Cell::from_values(per_seed),
            epsilons: Vec::new(),
            curve: Vec::new(),
            per_seed: per_seed.to_vec(),
            n_images: None,
        }
    }

    #[test]
    fn paper_values_find_their_row_by_label_among_rows_of_one_dataset() {
        let row = |label: &str, clean: f64| RowResult {
            label: label.into(),
            dataset: "cifar10-jpeg".into(),
            unavailable: None,
            variants: vec![variant("regularized", clean, [clean, 0.0, 0.0])],
            paired: Vec::new(),
            selection: None,
        };
        let rows = [row("<- CIFAR-10", 70.0), row("<- Tiny-ImageNet", 80.0)];
        let paper = |row: Option<&str>| crate::catalogue::PaperValue {
            dataset: "cifar10-jpeg".into(),
            row: row.map(Into::into),
            variant: "regularized".into(),
            column: "clean".into(),
            epsilon: None,
            value: 85.0,
            source: "Fig. 5".into(),
        };
        let values = [
            paper(Some("<- Tiny-ImageNet")),
            paper(None),
            paper(Some("<- CIFAR-100")),
        ];
        let ours: Vec<_> = paper_comparisons(&values, &rows)
            .iter()
            .map(|c| (c.paper.row.clone(), c.ours.mean()))
            .collect();
        // The labelled value finds its row, the unlabelled one the first row of its dataset,
        // and a value of a row not in the table is left out.
        assert_eq!(
            ours,
            [
                (Some("<- Tiny-ImageNet".to_string()), Some(80.0)),
                (None, Some(70.0)),
            ]
        );
    }

    #[test]
    fn verdicts_need_more_than_two_standard_errors() {
        let base = column("gaussian", &[40.0, 50.0, 45.0]);
        let clear = paired_column(&column("gaussian", &[50.0, 61.0, 57.0]), &base);
        assert_eq!(clear.value.mean(), Some(11.0));
        assert!(
            clear.verdict.starts_with("more robust"),
            "{}",
            clear.verdict
        );
        let noisy = paired_column(&column("gaussian", &[35.0, 58.0, 46.0]), &base);
        assert!(
            noisy.verdict.starts_with("no clear difference"),
            "{}",
            noisy.verdict
        );
        let worse = paired_column(&column("gaussian", &[30.0, 41.0, 36.0]), &base);
        assert!(
            worse.verdict.starts_with("less robust"),
            "{}",
            worse.verdict
        );
        let one = paired_column(&column("gaussian", &[50.0]), &column("gaussian", &[40.0]));
        assert!(one.verdict.starts_with("1 seed"), "{}", one.verdict);
        let unpaired = paired_column(&column("gaussian", &[50.0, 51.0]), &base);
        assert!(unpaired.value.mean().is_none());
    }

    fn variant(name: &str, clean: f64, curve: [f64; 3]) -> VariantResult {
        let mut gaussian = column("gaussian", &[curve[1]]);
        gaussian.epsilons = vec![0.0, 0.3333333333333333, 0.5];
        gaussian.curve = curve.iter().map(|&a| Cell::from_values(&[a])).collect();
        VariantResult {
            name: name.into(),
            runs: Vec::new(),
            columns: vec![column("clean", &[clean]), gaussian],
            sweep: Vec::new(),
            chosen: None,
        }
    }

    #[test]
    fn the_selection_rule_keeps_accurate_and_robust_pairs_and_picks_the_most_robust() {
        let rule = crate::catalogue::SelectionRule {
            min_clean_ratio: 0.9,
            column: "gaussian".into(),
            epsilon: 0.3333,
        };
        let variants = [
            variant("baseline", 90.0, [90.0, 30.0, 20.0]),
            variant("too inaccurate", 70.0, [70.0, 60.0, 50.0]),
            variant("kept", 85.0, [85.0, 45.0, 30.0]),
            variant("kept, most robust", 82.0, [82.0, 50.0, 35.0]),
            variant("not more robust", 89.0, [89.0, 29.0, 25.0]),
        ];
        let sel = select(&rule, &variants);
        assert_eq!(
            sel.epsilon,
            Some(0.3333333333333333),
            "the grid point nearest 0.3333"
        );
        let passes: Vec<bool> = sel.candidates.iter().map(|c| c.passes).collect();
        assert_eq!(passes, [false, true, true, false]);
        assert_eq!(sel.selected.as_deref(), Some("kept, most robust"));
        assert!((sel.candidates[1].robust_ratio.unwrap() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn clean_accuracy_and_medians_are_compared_as_ratios() {
        let clean = paired_column(
            &column("clean", &[80.0, 81.0, 79.0]),
            &column("clean", &[90.0, 90.0, 90.0]),
        );
        assert_eq!(clean.kind, "ratio");
        assert!(
            clean.verdict.starts_with("does not keep ≥ 0.9"),
            "{}",
            clean.verdict
        );
        let boundary = paired_column(
            &column("boundary", &[0.04, 0.05, 0.045]),
            &column("boundary", &[0.01, 0.01, 0.01]),
        );
        assert!((boundary.value.mean().unwrap() - 4.5).abs() < 1e-12);
        assert!(
            boundary.verdict.starts_with("more robust"),
            "{}",
            boundary.verdict
        );
    }
}
