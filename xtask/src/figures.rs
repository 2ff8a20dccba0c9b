//! Figures in the paper's style, drawn with `plotters` as SVG (with a PNG rendering beside
//! each): accuracy vs ε per attack and
//! row (one line per variant, baseline vs regularized), and bars of the decision-attack
//! medians per row and variant. With more than one seed every point and bar carries a ±1 SEM
//! error bar; titles name the profile and the number of seeds. A table with a selection rule
//! also gets its rule's plane per row (clean ratio against robustness ratio, the candidates
//! that pass filled, the selected one ringed).

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::assemble::{column_header, TableResult, CURVE_COLUMNS};
use pixreg_runner::plot::{colour, plot_err, write_svg_and_png};
use pixreg_runner::results::EpochMetrics;

/// Bars of one dataset: (variant, value, SEM) with `None` for a missing value.
type BarGroup = (String, Vec<(String, Option<f64>, Option<f64>)>);

/// One curve: its name and (ε, mean, SEM) points.
type CurveLine = (String, Vec<(f64, f64, Option<f64>)>);

/// The test images every variant's `column` evaluated, when they agree.
fn images_of<'a>(
    mut variants: impl Iterator<Item = &'a crate::assemble::VariantResult>,
    column: &str,
) -> Option<u64> {
    let count = |v: &crate::assemble::VariantResult| {
        v.columns
            .iter()
            .find(|c| c.column == column)
            .and_then(|c| c.n_images)
    };
    let first = count(variants.next()?)?;
    variants.all(|v| count(v) == Some(first)).then_some(first)
}

/// "profile cpu, 10000 images, n = 3 seeds, ± SEM" for titles (the images when known).
fn provenance_title_with(t: &TableResult, images: Option<u64>) -> String {
    let base = provenance_title(t);
    match images {
        Some(n) => match base.split_once(", ") {
            Some((profile, seeds)) => format!("{profile}, {n} images, {seeds}"),
            None => format!("{base}, {n} images"),
        },
        None => base,
    }
}

/// "profile `cpu`, n = 3 seeds" for titles.
fn provenance_title(t: &TableResult) -> String {
    let label = crate::assemble::seeds_label(t.seeds, t.first_seed);
    let seeds = if t.seeds == 1 {
        label
    } else {
        format!("n = {label}, ± SEM")
    };
    let profile = if t.profile == "smoke" {
        "smoke: not a result".to_string()
    } else {
        format!("profile {}", t.profile)
    };
    format!("{profile}, {seeds}")
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 480;

/// A file-name-safe slug of a label.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Draws every figure of `t` into `out_dir/figures/`; returns the files written.
pub fn write_figures(t: &TableResult, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = out_dir.join("figures");
    let mut written = Vec::new();
    for column in t
        .columns
        .iter()
        .filter(|c| CURVE_COLUMNS.contains(&c.as_str()))
    {
        for row in &t.rows {
            let lines: Vec<CurveLine> = row
                .variants
                .iter()
                .filter_map(|v| {
                    let c = v.columns.iter().find(|c| &c.column == column)?;
                    let points: Vec<(f64, f64, Option<f64>)> = c
                        .epsilons
                        .iter()
                        .zip(&c.curve)
                        .filter_map(|(e, cell)| cell.mean().map(|m| (*e, m, cell.sem())))
                        .collect();
                    (!points.is_empty()).then(|| (v.name.clone(), points))
                })
                .collect();
            if lines.is_empty() {
                continue;
            }
            let path = dir.join(format!("{}-{}.svg", slug(&row.label), column));
            let title = format!(
                "{}: {} ({})",
                row.label,
                curve_title(column),
                provenance_title_with(t, images_of(row.variants.iter(), column))
            );
            written.extend(write_svg_and_png(&path, &curve_svg(&title, &lines)?)?);
        }
    }
    for column in t
        .columns
        .iter()
        .filter(|c| ["boundary", "boundary-converged", "hsj"].contains(&c.as_str()))
    {
        let groups: Vec<BarGroup> = t
            .rows
            .iter()
            .filter(|r| r.unavailable.is_none())
            .map(|r| {
                let bars = r
                    .variants
                    .iter()
                    .map(|v| {
                        let summary = v
                            .columns
                            .iter()
                            .find(|c| &c.column == column)
                            .map(|c| &c.summary);
                        (
                            v.name.clone(),
                            summary.and_then(|c| c.mean()),
                            summary.and_then(|c| c.sem()),
                        )
                    })
                    .collect();
                (r.label.clone(), bars)
            })
            .collect();
        if groups
            .iter()
            .all(|(_, bars)| bars.iter().all(|(_, v, _)| v.is_none()))
        {
            continue;
        }
        let path = dir.join(format!("{column}-median.svg"));
        let variants = t.rows.iter().flat_map(|r| r.variants.iter());
        let title = format!(
            "{} per dataset ({})",
            column_header(column),
            provenance_title_with(t, images_of(variants, column))
        );
        written.extend(write_svg_and_png(&path, &bars_svg(&title, &groups)?)?);
    }
    for row in &t.rows {
        let Some(selection) = &row.selection else {
            continue;
        };
        let path = dir.join(format!("{}-selection.svg", slug(&row.label)));
        // Means of the per-seed ratios, without error bars.
        let provenance = provenance_title(t).replace(", ± SEM", ", means");
        let title = format!("{}: the selection rule ({provenance})", row.label);
        let svg = selection_svg(&title, selection)?;
        written.extend(write_svg_and_png(&path, &svg)?);
    }
    Ok(written)
}

/// The selection rule's plane: each candidate at (clean accuracy, accuracy at the rule's ε),
/// both as ratios to the baseline's means, labelled; the rule's two thresholds as lines, the
/// candidates that pass filled, the selected one ringed. The trade-off the rule cuts through
/// reads off it at a glance, which thirteen curves do not show.
fn selection_svg(title: &str, selection: &crate::assemble::SelectionResult) -> Result<String> {
    let points: Vec<(&str, f64, f64, bool)> = selection
        .candidates
        .iter()
        .filter_map(|c| {
            Some((
                c.variant.as_str(),
                c.clean_ratio?,
                c.robust_ratio?,
                c.passes,
            ))
        })
        .collect();
    let rule = &selection.rule;
    let xs = points
        .iter()
        .map(|p| p.1)
        .chain([rule.min_clean_ratio, 1.0]);
    let ys = points.iter().map(|p| p.2).chain([1.0]);
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (y_lo, y_hi) = ys.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (xm, ym) = (0.05 * (x_hi - x_lo) + 0.01, 0.08 * (y_hi - y_lo) + 0.05);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let area = below_title(&root, title, 20)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo - xm..x_hi + 3.0 * xm, y_lo - ym..y_hi + ym)
            .map_err(plot_err)?;
        let eps = selection
            .epsilon
            .map_or(String::new(), |e| format!(" at ε = {e:.3}"));
        chart
            .configure_mesh()
            .x_desc("clean accuracy / baseline's")
            .y_desc(format!(
                "{} accuracy{eps} / baseline's",
                column_header(&rule.column)
            ))
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        let grey = BLACK.mix(0.5).stroke_width(1);
        let (x0, x1, y0, y1) = (x_lo - xm, x_hi + 3.0 * xm, y_lo - ym, y_hi + ym);
        let thresholds = [
            vec![(rule.min_clean_ratio, y0), (rule.min_clean_ratio, y1)],
            vec![(x0, 1.0), (x1, 1.0)],
        ];
        chart
            .draw_series(thresholds.into_iter().map(|l| PathElement::new(l, grey)))
            .map_err(plot_err)?;
        for (i, &(name, x, y, passes)) in points.iter().enumerate() {
            let c = colour(i + 1);
            let style = if passes {
                c.filled()
            } else {
                c.stroke_width(2)
            };
            chart
                .draw_series([Circle::new((x, y), 5, style)])
                .map_err(plot_err)?;
            if selection.selected.as_deref() == Some(name) {
                chart
                    .draw_series([Circle::new((x, y), 10, BLACK.stroke_width(2))])
                    .map_err(plot_err)?;
            }
            // The label's position is an offset in pixels from the point.
            let label = Text::new(name.to_string(), (8, -6), ("sans-serif", 13).into_font());
            chart
                .draw_series([EmptyElement::at((x, y)) + label])
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Caption of an accuracy-vs-ε figure.
fn curve_title(column: &str) -> &'static str {
    match column {
        "gaussian" => "Gaussian noise",
        "uniform" => "uniform noise",
        "saltpepper" => "salt-and-pepper noise",
        "fgsm" => "transferred FGSM",
        "pgd-linf" => "PGD (L∞)",
        "pgd-l2" => "PGD (L2)",
        _ => column_header(column),
    }
}

/// Accuracy (%) vs ε, one line with markers per variant.
/// The axes of a line figure.
struct Axes<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    /// `None`: from 0 to the largest value (plus its SEM), with a margin.
    y_range: Option<(f64, f64)>,
}

/// The axes of an accuracy-vs-ε figure.
const ACCURACY_AXES: Axes<'static> = Axes {
    x_desc: "ε (perturbation size, unit pixel scale)",
    y_desc: "Accuracy (%)",
    y_range: Some((0.0, 100.0)),
};

/// The largest font size in `min..=max` at which `text` fits `width` pixels: DejaVu Sans
/// (what the PNGs render with) averages about 0.6 em a character.
fn font_size_to_fit(text: &str, width: u32, min: u32, max: u32) -> u32 {
    let fits = f64::from(width) / (0.6 * text.chars().count().max(1) as f64);
    (fits.floor() as u32).clamp(min, max)
}

/// Rows of the legend strip under a line figure, and each row's height in pixels.
const LEGEND_COLUMNS: usize = 2;
const LEGEND_ROW: u32 = 22;

/// The height of the legend strip under a line figure of `entries` lines.
///
/// Why a strip and not a box inside the plot: no corner of the plot is free of curves in
/// every table (table3's Gaussian figure ran its baseline through the lower-left box at
/// ε ≈ 0.22; validation losses fall into any corner), and a box over a curve hides it.
fn legend_strip_height(entries: usize) -> u32 {
    let rows = entries.div_ceil(LEGEND_COLUMNS) as u32;
    if rows == 0 {
        0
    } else {
        rows * LEGEND_ROW + 12
    }
}

/// Each line's marker and name in `strip`, row-major over [`LEGEND_COLUMNS`] columns.
fn draw_legend_strip<DB: DrawingBackend>(
    strip: &DrawingArea<DB, Shift>,
    names: &[&str],
) -> Result<()> {
    let column_width = ((WIDTH - 40) as usize / LEGEND_COLUMNS) as i32;
    for (i, name) in names.iter().enumerate() {
        let c = colour(i);
        let x = 40 + (i % LEGEND_COLUMNS) as i32 * column_width;
        // Long variant names shrink to their column.
        let size = font_size_to_fit(name, (column_width - 40) as u32, 9, 16);
        let y = 6 + (i / LEGEND_COLUMNS) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        strip
            .draw(&PathElement::new(
                vec![(x, y), (x + 24, y)],
                c.stroke_width(2),
            ))
            .map_err(plot_err)?;
        strip
            .draw(&Circle::new((x + 12, y), 3, c.filled()))
            .map_err(plot_err)?;
        strip
            .draw(&Text::new(
                name.to_string(),
                (x + 32, y - size as i32 / 2),
                ("sans-serif", size),
            ))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// The part of `root` below `title`: one line when it fits the figure's width at `size`
/// pixels, else two, broken before the parenthesised provenance, each shrunk until it fits.
///
/// Why: with the profile, image count and seeds in them, titles run to 90 characters and
/// more, and plotters' caption clipped them at both edges of the 720-pixel figures.
fn below_title<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    size: u32,
) -> Result<DrawingArea<SVGBackend<'a>, Shift>> {
    let line_size = |line: &str| font_size_to_fit(line, WIDTH - 24, 10, size);
    let split = title
        .rfind(" (")
        .filter(|_| line_size(title) < size)
        .map(|i| (&title[..i], &title[i + 1..]));
    let (first, second) = split.map_or((title, None), |(a, b)| (a, Some(b)));
    let area = root
        .titled(first, ("sans-serif", line_size(first)))
        .map_err(plot_err)?;
    match second {
        Some(line) => area
            .titled(line, ("sans-serif", line_size(line)))
            .map_err(plot_err),
        None => Ok(area),
    }
}

fn curve_svg(title: &str, lines: &[CurveLine]) -> Result<String> {
    lines_svg(title, lines, &ACCURACY_AXES)
}

fn lines_svg(title: &str, lines: &[CurveLine], axes: &Axes) -> Result<String> {
    let mut svg = String::new();
    {
        let strip = legend_strip_height(lines.len());
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT + strip)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (plot, legend) = root.split_vertically(HEIGHT);
        let x_max = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(x, _, _)| *x))
            .fold(0.0f64, f64::max)
            .max(1e-6);
        let (y_lo, y_hi) = axes.y_range.unwrap_or_else(|| {
            let top = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, y, e)| y + e.unwrap_or(0.0)))
                .fold(0.0f64, f64::max);
            (0.0, (top * 1.1).max(1e-9))
        });
        let area = below_title(&plot, title, 22)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.02, y_lo..y_hi)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        for (i, (_, points)) in lines.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(x, y, _)| (x, y)),
                    c.stroke_width(2),
                ))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y, _)| Circle::new((x, y), 3, c.filled())),
                )
                .map_err(plot_err)?;
            chart
                .draw_series(points.iter().filter_map(|&(x, y, sem)| {
                    let e = sem?;
                    Some(PathElement::new(
                        vec![(x, y - e), (x, y + e)],
                        c.stroke_width(1),
                    ))
                }))
                .map_err(plot_err)?;
        }
        let names: Vec<&str> = lines.iter().map(|(name, _)| name.as_str()).collect();
        draw_legend_strip(&legend, &names)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Grouped bars: one group per row, one bar per variant; a missing value draws no bar.
fn bars_svg(title: &str, groups: &[BarGroup]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (y_min, y_max) = bar_range(groups);
        let n = groups.len();
        let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
        let area = below_title(&root, title, 22)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, (y_min..y_max).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&|x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            // Label only 1, 2 and 5 of each decade: plotters' log axis offers every mantissa
            // and the labels ran into each other near the top of a decade.
            .y_label_formatter(&|y: &f64| {
                let mantissa = y / 10f64.powf(y.log10().floor());
                let shown = [1.0, 2.0, 5.0, 10.0]
                    .iter()
                    .any(|m| (mantissa - m).abs() < 1e-6 * m);
                if shown {
                    format!("{y:.0e}")
                } else {
                    String::new()
                }
            })
            .x_desc("Dataset")
            .y_desc("Median per-pixel squared L2")
            .axis_desc_style(("sans-serif", 18))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        let variants: Vec<String> = groups
            .first()
            .map(|(_, b)| b.iter().map(|(name, _, _)| name.clone()).collect())
            .unwrap_or_default();
        let k = variants.len().max(1) as f64;
        let width = 0.8 / k;
        for (j, name) in variants.iter().enumerate() {
            draw_variant_bars(&mut chart, groups, (j, name), width, y_min)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// The log axis range of the bars: below the smallest positive value, and above the highest
/// bar plus its error room for the legend box in the upper right, whose height grows with the
/// number of variants (seven variants' legend covered three bars of table3's figure). Why
/// log: medians of different models span 10–50×, and a log axis keeps the smallest bar
/// visible.
fn bar_range(groups: &[BarGroup]) -> (f64, f64) {
    let top = groups
        .iter()
        .flat_map(|(_, b)| {
            b.iter()
                .filter_map(|(_, v, e)| v.map(|v| v + e.unwrap_or(0.0)))
        })
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let smallest = groups
        .iter()
        .flat_map(|(_, b)| b.iter().filter_map(|(_, v, _)| *v))
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let y_min = smallest.min(top * 0.3) / 3.0;
    let entries = groups.first().map_or(0, |(_, b)| b.len());
    // The bars' top 20 % below the legend's lower edge, on the log axis.
    let free = 1.0 - legend_share(entries);
    let y_max = y_min * ((top * 1.2) / y_min).powf(1.0 / free);
    (y_min, y_max)
}

/// The share of the bar chart's plotting height the legend box takes: 22 px a row and 12 px
/// of border (plotters' default at font size 16) of ≈ 370 px of plot in the 720×480 figure,
/// capped so that bars keep a third of the height.
fn legend_share(entries: usize) -> f64 {
    ((entries as f64 * 22.0 + 12.0) / 370.0).min(2.0 / 3.0)
}

/// The bars of variant `j` in every group, with their SEM error bars, its legend entry, and
/// an `n/a` mark where its value is missing (failed run, no successful attack).
fn draw_variant_bars<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, LogCoord<f64>>,
    >,
    groups: &[BarGroup],
    (j, name): (usize, &String),
    width: f64,
    y_min: f64,
) -> Result<()> {
    let c = colour(j);
    let rects: Vec<Rectangle<(f64, f64)>> = groups
        .iter()
        .enumerate()
        .filter_map(|(i, (_, bars))| {
            let v = bars.get(j)?.1?;
            let x0 = i as f64 - 0.4 + j as f64 * width;
            Some(Rectangle::new(
                [(x0, y_min), (x0 + width * 0.9, v)],
                c.filled(),
            ))
        })
        .collect();
    let error_bars: Vec<PathElement<(f64, f64)>> = groups
        .iter()
        .enumerate()
        .filter_map(|(i, (_, bars))| {
            let (_, v, e) = bars.get(j)?;
            let (v, e) = ((*v)?, (*e)?);
            let x = i as f64 - 0.4 + j as f64 * width + width * 0.45;
            Some(PathElement::new(
                vec![(x, (v - e).max(y_min)), (x, v + e)],
                BLACK.stroke_width(1),
            ))
        })
        .collect();
    chart
        .draw_series(rects)
        .map_err(plot_err)?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
    chart.draw_series(error_bars).map_err(plot_err)?;
    // A missing value (failed run, no successful attack) is marked, not left blank.
    let marks: Vec<Text<(f64, f64), String>> = groups
        .iter()
        .enumerate()
        .filter(|(_, (_, bars))| bars.get(j).is_some_and(|b| b.1.is_none()))
        .map(|(i, _)| {
            let x0 = i as f64 - 0.4 + j as f64 * width;
            Text::new(
                "n/a".to_string(),
                (x0, y_min * 1.5),
                ("sans-serif", 14).into_font(),
            )
        })
        .collect();
    chart.draw_series(marks).map_err(plot_err)?;
    Ok(())
}

/// Draws, per row, the validation loss of every variant against the epoch (mean ± SEM over
/// its seeds, from each run's `metrics.jsonl`) into `out_dir/figures/<row>-training.svg`:
/// whether the models converged is part of reading the table.
pub fn write_training_figures(
    t: &TableResult,
    runs_dir: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let dir = out_dir.join("figures");
    let mut written = Vec::new();
    for row in t.rows.iter().filter(|r| r.unavailable.is_none()) {
        let lines: Vec<CurveLine> = row
            .variants
            .iter()
            .filter_map(|v| {
                let per_run: Vec<Vec<(usize, f64)>> = v
                    .runs
                    .iter()
                    .map(|id| loss_by_epoch(&runs_dir.join(id)))
                    .collect();
                let epochs = per_run.iter().map(Vec::len).min().filter(|&n| n > 0)?;
                let points = (0..epochs)
                    .map(|k| {
                        let values: Vec<f64> = per_run.iter().map(|r| r[k].1).collect();
                        let cell = crate::assemble::Cell::from_values(&values);
                        (
                            per_run[0][k].0 as f64,
                            cell.mean().unwrap_or(f64::NAN),
                            cell.sem(),
                        )
                    })
                    .collect();
                Some((v.label(), points))
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        let path = dir.join(format!("{}-training.svg", slug(&row.label)));
        let title = format!(
            "{}: validation loss per epoch ({})",
            row.label,
            provenance_title(t)
        );
        let axes = Axes {
            x_desc: "epoch (0 = untrained)",
            y_desc: "validation cross-entropy",
            y_range: None,
        };
        written.extend(write_svg_and_png(
            &path,
            &lines_svg(&title, &lines, &axes)?,
        )?);
    }
    Ok(written)
}

/// (epoch, selection loss) of every committed epoch of a run after the untrained one (whose
/// loss of ~2.3 would flatten the curve): validation loss, test loss without a validation
/// split.
fn loss_by_epoch(run: &Path) -> Vec<(usize, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<EpochMetrics>(l).ok())
        .filter(|m| m.epoch > 0)
        .map(|m| (m.epoch, m.selection_loss()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{SelectionCandidate, SelectionResult};
    use crate::catalogue::SelectionRule;

    /// The font size of each `<text>` of an SVG figure whose content is one of `lines`.
    fn title_sizes(svg: &str, lines: &[&str]) -> Vec<(String, f64)> {
        svg.split("<text")
            .filter_map(|t| {
                let (attributes, rest) = t.split_once('>')?;
                let content = rest.split('<').next()?.trim().replace("&lt;", "<");
                let size = attributes.split("font-size=\"").nth(1)?.split('"').next()?;
                lines
                    .contains(&content.as_str())
                    .then(|| (content.clone(), size.parse().unwrap()))
            })
            .collect()
    }

    #[test]
    fn long_titles_break_before_their_provenance_and_shrink_to_fit() {
        let lines: Vec<CurveLine> = vec![("baseline".into(), vec![(0.0, 90.0, Some(1.0))])];
        let short = "MNIST: Gaussian noise";
        let sizes = title_sizes(&curve_svg(short, &lines).unwrap(), &[short]);
        assert_eq!(sizes.len(), 1, "{sizes:?}");
        let full_size = sizes[0].1;
        let (head, provenance) = (
            "MNIST <- Fashion-MNIST: Gaussian noise",
            "(profile cpu, 10000 images, n = 3 seeds, ± SEM)",
        );
        let svg = curve_svg(&format!("{head} {provenance}"), &lines).unwrap();
        let sizes = title_sizes(&svg, &[head, provenance]);
        assert_eq!(sizes.len(), 2, "two lines: {sizes:?}");
        assert!(sizes.iter().all(|(_, size)| *size <= full_size));
        // A title with nowhere to break stays one line, shrunk.
        let long = "x".repeat(150);
        let sizes = title_sizes(&curve_svg(&long, &lines).unwrap(), &[long.as_str()]);
        assert!(sizes.len() == 1 && sizes[0].1 < full_size, "{sizes:?}");
    }

    /// (x, y, font size) of each `<text>` of an SVG figure whose content is `content`.
    fn text_position(svg: &str, content: &str) -> Option<(f64, f64, f64)> {
        svg.split("<text").find_map(|t| {
            let (attributes, rest) = t.split_once('>')?;
            (rest.split('<').next()?.trim() == content).then_some(())?;
            let attribute = |name: &str| -> Option<f64> {
                let key = format!(" {name}=\"");
                attributes
                    .split(&key)
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse()
                    .ok()
            };
            Some((attribute("x")?, attribute("y")?, attribute("font-size")?))
        })
    }

    #[test]
    fn line_legends_sit_below_the_plot_and_fit_the_figure() {
        let names: Vec<String> = (0..7)
            .map(|j| format!("variant {j} with a long name (range all, Th 0.{j})"))
            .collect();
        let lines: Vec<CurveLine> = names
            .iter()
            .map(|n| {
                let curve = vec![
                    (0.0, 90.0, Some(1.0)),
                    (0.1, 50.0, None),
                    (0.3, 5.0, Some(2.0)),
                ];
                (n.clone(), curve)
            })
            .collect();
        let svg = curve_svg("MNIST: Gaussian noise", &lines).unwrap();
        for name in &names {
            let (x, y, size) = text_position(&svg, name).unwrap_or_else(|| panic!("{name}"));
            assert!(
                y > f64::from(HEIGHT),
                "{name} at y = {y} is inside the plot"
            );
            let right = x + 0.6 * size * name.chars().count() as f64;
            assert!(right <= f64::from(WIDTH), "{name} runs to x = {right}");
        }
        // Every curve (the three-point polylines; error bars and legend markers have two)
        // lies in the plot, above the strip.
        let curves: Vec<Vec<f64>> = svg
            .split("<polyline")
            .skip(1)
            .map(|p| {
                let points = p.split("points=\"").nth(1).unwrap().split('"').next();
                let y = |point: &str| point.split(',').nth(1).unwrap().parse().unwrap();
                points.unwrap().split_whitespace().map(y).collect()
            })
            .filter(|ys: &Vec<f64>| ys.len() == 3)
            .collect();
        assert_eq!(curves.len(), names.len());
        assert!(curves.iter().flatten().all(|&y| y < f64::from(HEIGHT)));
    }

    #[test]
    fn bars_stay_below_the_legend_however_many_variants() {
        for k in [1usize, 2, 7, 12] {
            let bars = (0..k)
                .map(|j| (format!("v{j}"), Some(1e-2 * (1.0 + j as f64)), Some(2e-3)))
                .collect();
            let groups = vec![("Fashion-MNIST".to_string(), bars)];
            let (lo, hi) = bar_range(&groups);
            let top = 1e-2 * k as f64 + 2e-3;
            let height = |y: f64| (y / lo).ln() / (hi / lo).ln();
            assert!(lo < 1e-2 && height(top) > 0.3, "{k}: {lo} {hi}");
            assert!(
                height(top) < 1.0 - legend_share(k),
                "{k} variants: {lo} {hi}"
            );
        }
    }

    #[test]
    fn the_selection_plane_labels_every_candidate_and_rings_the_selected_one() {
        let candidate =
            |variant: &str, clean: Option<f64>, robust: f64, passes| SelectionCandidate {
                variant: variant.into(),
                clean_ratio: clean,
                robust_ratio: Some(robust),
                passes,
            };
        let selection = SelectionResult {
            rule: SelectionRule {
                min_clean_ratio: 0.9,
                column: "gaussian".into(),
                epsilon: 0.33,
            },
            epsilon: Some(0.333),
            candidates: vec![
                candidate("α 4, Th 0.2", Some(0.77), 1.2, false),
                candidate("α 20, Th 0.4", Some(0.93), 1.85, true),
                candidate("no numbers", None, 2.0, false),
            ],
            selected: Some("α 20, Th 0.4".into()),
        };
        let svg = selection_svg("t", &selection).unwrap();
        assert!(svg.contains("α 4, Th 0.2") && svg.contains("α 20, Th 0.4"));
        assert!(
            !svg.contains("no numbers"),
            "a candidate without numbers is left out"
        );
        assert!(svg.contains("ε = 0.333"));
        // Three circles: the two candidates and the ring of the selected one.
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    }
}
