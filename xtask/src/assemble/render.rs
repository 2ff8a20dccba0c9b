//! Writing an assembled table: `table.md` (cells, the §4.2 selection, the paper's numbers,
//! paired verdicts, sweeps, curves), `table.csv` and `table.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::*;
use crate::util::write_atomic;

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `table.md`: the headline table, then every curve at each ε.
pub fn markdown(t: &TableResult) -> String {
    let mut md = headline_markdown(t);
    md.push_str(&paired_markdown(t));
    md.push_str(&paper_markdown(t));
    md.push_str(&selection_markdown(t));
    md.push_str(&sweep_markdown(t));
    md.push_str(&curves_markdown(t));
    md
}

/// The selection rule's verdict per row.
fn selection_markdown(t: &TableResult) -> String {
    let mut md = String::new();
    for row in &t.rows {
        let Some(sel) = &row.selection else { continue };
        let _ = writeln!(
            md,
            "\n## Selection rule (§4.2): {}\n\nKept: clean accuracy ≥ {} × the baseline's and \
             {} accuracy at ε = {} above the baseline's; selected: the kept variant with the \
             largest robustness ratio.\n\n| Variant | Clean ratio | Robustness ratio | Kept |\n\
             |---|---:|---:|---|",
            md_escape(&row.label),
            sel.rule.min_clean_ratio,
            column_header(&sel.rule.column),
            sel.epsilon.map_or("?".into(), trim_float),
        );
        let ratio = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.3}"));
        for c in &sel.candidates {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                md_escape(&c.variant),
                ratio(c.clean_ratio),
                ratio(c.robust_ratio),
                if c.passes { "yes" } else { "" }
            );
        }
        let _ = writeln!(
            md,
            "\nSelected: {}",
            sel.selected.as_deref().map_or(
                "none (no variant passes, or cells are missing)".to_string(),
                |v| format!("**{}**", md_escape(v))
            )
        );
    }
    md
}

/// The paper's numbers beside ours.
fn paper_markdown(t: &TableResult) -> String {
    if t.paper.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "\n## The paper's numbers beside ours\n\nThe paper publishes no table: its values were \
         read off its figures ({}); see `../shared/specs/paper-claims.md`. Ours: profile `{}`, \
         mean ± SEM over seeds.\n\n| Dataset | Model | Column | ε | Paper | Ours | Source |\n\
         |---|---|---|---:|---:|---:|---|\n",
        t.paper_figure.as_deref().unwrap_or("see each source"),
        t.profile
    );
    for c in &t.paper {
        let p = &c.paper;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            md_escape(p.row.as_deref().unwrap_or(&p.dataset)),
            md_escape(&p.variant),
            column_header(&p.column),
            p.epsilon.map_or("—".into(), trim_float),
            format_value(&p.column, p.value),
            md_escape(&c.ours.display(&p.column)),
            md_escape(&p.source)
        );
    }
    md
}

/// Every variant against its row's baseline, seed by seed, with the verdicts.
fn paired_markdown(t: &TableResult) -> String {
    let mut md = String::new();
    for row in t.rows.iter().filter(|r| !r.paired.is_empty()) {
        if md.is_empty() {
            let _ = writeln!(
                md,
                "\n## Paired against the baseline: verdicts\n\nPer seed, the variant minus its \
                 baseline of the same seed (accuracy columns, in points) or the variant over the \
                 baseline (clean accuracy, against the paper's ≥ {CLEAN_RATIO_RULE} rule, and \
                 decision-attack medians); mean ± SEM over seeds. A claim is supported when the \
                 mean clears 0 (or 1) by more than two SEM.\n"
            );
        }
        for p in &row.paired {
            let _ = writeln!(
                md,
                "**{}: {} vs {}**\n",
                md_escape(&row.label),
                md_escape(&p.variant),
                md_escape(&p.baseline)
            );
            let _ = writeln!(md, "| Column | Paired | Verdict |\n|---|---:|---|");
            for c in &p.columns {
                let shown = c.value.display(if c.kind == "ratio" {
                    "ratio"
                } else {
                    &c.column
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    column_header(&c.column),
                    md_escape(&format!("{} {shown}", c.kind)),
                    md_escape(&c.verdict)
                );
            }
            md.push('\n');
        }
    }
    md
}

/// How each swept variant's point was chosen: every value with its clean accuracy.
fn sweep_markdown(t: &TableResult) -> String {
    let mut md = String::new();
    for row in &t.rows {
        for v in row.variants.iter().filter(|v| !v.sweep.is_empty()) {
            if md.is_empty() {
                md.push_str(
                    "\n## Matched clean accuracy\n\nSwept variants report the value whose clean \
                     accuracy is closest to the matched variant's.\n\n| Dataset | Model | Setting | \
                     Clean (%) | Target clean (%) | Reported |\n|---|---|---|---:|---:|---|\n",
                );
            }
            for p in &v.sweep {
                let _ = writeln!(
                    md,
                    "| {} | {} | `{}` | {} | {} | {} |",
                    md_escape(&row.label),
                    md_escape(&v.name),
                    md_escape(&p.setting),
                    md_escape(&p.clean.display("clean")),
                    p.target_clean
                        .map_or("—".into(), |c| format_value("clean", c)),
                    if v.chosen.as_ref() == Some(&p.setting) {
                        "yes"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    md
}

/// The title, legend and headline table of `table.md` (what the terminal shows).
pub fn headline_markdown(t: &TableResult) -> String {
    let mut md = String::new();
    let label = super::seeds_label(t.seeds, t.first_seed);
    let seeds = if t.seeds > 1 {
        format!("{label}, mean ± SEM")
    } else {
        label
    };
    let _ = writeln!(
        md,
        "# {}: {} (profile `{}`, {seeds})\n",
        t.table, t.title, t.profile
    );
    if let Some(figure) = &t.paper_figure {
        let _ = writeln!(md, "Reproduces the paper's {figure}.\n");
    }
    let _ = writeln!(
        md,
        "Accuracies are test accuracy in %; noise, FGSM and PGD columns give the mean over the \
         ε grid without ε = 0 (every ε below); FGSM is transferred from the row's baseline \
         (white-box for the baseline itself); Boundary/HopSkipJump give the mean over repeats \
         of the median per-pixel squared L2 perturbation of a successful attack (higher = more \
         robust).\n"
    );
    let mut header = "| Dataset | Model |".to_string();
    let mut rule = "|---|---|".to_string();
    for c in &t.columns {
        let _ = write!(header, " {} |", column_header(c));
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for row in &t.rows {
        if let Some(why) = &row.unavailable {
            let _ = write!(
                md,
                "| {} | all | {} |",
                md_escape(&row.label),
                md_escape(why)
            );
            md.push_str(&" — |".repeat(t.columns.len().saturating_sub(1)));
            md.push('\n');
            continue;
        }
        for v in &row.variants {
            let _ = write!(
                md,
                "| {} | {} |",
                md_escape(&row.label),
                md_escape(&v.label())
            );
            for c in &v.columns {
                let _ = write!(md, " {} |", md_escape(&c.summary.display(&c.column)));
            }
            md.push('\n');
        }
    }
    md
}

/// The per-ε tables of the curve columns.
fn curves_markdown(t: &TableResult) -> String {
    let mut md = String::new();
    for column in t
        .columns
        .iter()
        .filter(|c| CURVE_COLUMNS.contains(&c.as_str()))
    {
        let _ = writeln!(md, "\n## {} at each ε\n", column_header(column));
        for row in &t.rows {
            let Some(eps) = row
                .variants
                .iter()
                .flat_map(|v| v.columns.iter())
                .find(|c| &c.column == column && !c.epsilons.is_empty())
                .map(|c| c.epsilons.clone())
            else {
                continue;
            };
            let _ = writeln!(md, "**{}**\n", md_escape(&row.label));
            let mut header = "| Model |".to_string();
            let mut rule = "|---|".to_string();
            for e in &eps {
                let _ = write!(header, " ε={} |", trim_float(*e));
                rule.push_str("---:|");
            }
            let _ = writeln!(md, "{header}\n{rule}");
            for v in &row.variants {
                let Some(c) = v.columns.iter().find(|c| &c.column == column) else {
                    continue;
                };
                let _ = write!(md, "| {} |", md_escape(&v.label()));
                if c.curve.len() == eps.len() {
                    for cell in &c.curve {
                        let _ = write!(md, " {} |", cell.display(column));
                    }
                } else {
                    let _ = write!(md, " {} |", md_escape(&c.summary.display(column)));
                    md.push_str(&" |".repeat(eps.len() - 1));
                }
                md.push('\n');
            }
            md.push('\n');
        }
    }
    md
}

/// `ε` printed with at most 4 decimals and no trailing zeros.
fn trim_float(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.into()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `table.csv`: one line per cell; `epsilon` empty for the headline value of a column.
pub fn csv(t: &TableResult) -> String {
    let mut out = "row,dataset,variant,column,epsilon,mean,std,sem,n,runs,note\n".to_string();
    for row in &t.rows {
        for v in &row.variants {
            let runs = v.runs.join(" ");
            for c in &v.columns {
                let points = std::iter::once((None, &c.summary))
                    .chain(c.epsilons.iter().map(Some).zip(c.curve.iter()));
                for (eps, cell) in points {
                    let (mean, std, sem, n, note) = match cell {
                        Cell::Value { mean, std, sem, n } => (
                            mean.to_string(),
                            std.map(|s| s.to_string()).unwrap_or_default(),
                            sem.map(|s| s.to_string()).unwrap_or_default(),
                            n.to_string(),
                            String::new(),
                        ),
                        Cell::Missing { missing } => (
                            String::new(),
                            String::new(),
                            String::new(),
                            "0".into(),
                            missing.clone(),
                        ),
                    };
                    let fields = [
                        csv_field(&row.label),
                        csv_field(&row.dataset),
                        csv_field(&v.label()),
                        c.column.clone(),
                        eps.map(|e| e.to_string()).unwrap_or_default(),
                        mean,
                        std,
                        sem,
                        n,
                        runs.clone(),
                        csv_field(&note),
                    ];
                    out.push_str(&fields.join(","));
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// Writes `table.md`, `table.csv` and `table.json` into `out_dir`.
pub fn write_tables(t: &TableResult, out_dir: &Path) -> Result<()> {
    write_atomic(&out_dir.join("table.md"), markdown(t).as_bytes())?;
    write_atomic(&out_dir.join("table.csv"), csv(t).as_bytes())?;
    write_atomic(
        &out_dir.join("table.json"),
        serde_json::to_string_pretty(t)?.as_bytes(),
    )
}
