//! Figures: `pixreg plot` draws the training curves of one or several runs in one figure,
//! and every figure pixreg or xtask draws is written twice, as SVG (for papers) and as PNG
//! (for a quick look, a README or a notebook), by [`write_svg_and_png`].
//!
//! ```no_run
//! use pixreg_runner::plot::{curves_svg, write_svg_and_png, RunCurves};
//!
//! # fn main() -> anyhow::Result<()> {
//! let runs = vec![RunCurves::load("runs/mnist-base-54a95723469946b8".as_ref())?];
//! let written = write_svg_and_png("figures/curves.svg".as_ref(), &curves_svg(&runs)?)?;
//! assert_eq!(written.len(), 2); // curves.svg, curves.png
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use resvg::usvg;

use crate::curves::StepScalars;
use crate::output::{write_bytes, write_text};
use crate::results::EpochMetrics;
use crate::run_dir::RunDir;

/// One number of a metric line, where the line has it.
type Metric = fn(&EpochMetrics) -> Option<f64>;

/// The curves of one run folder, as committed.
#[derive(Debug, Clone)]
pub struct RunCurves {
    /// Legend label: the run id, with α and Th for a regularized run.
    pub label: String,
    /// `steps.jsonl` (empty for runs written before it existed).
    pub steps: Vec<StepScalars>,
    /// `metrics.jsonl`.
    pub metrics: Vec<EpochMetrics>,
}

impl RunCurves {
    /// Reads the committed curves of the run folder `root`.
    pub fn load(root: &Path) -> Result<Self> {
        let run = RunDir::open(root)?;
        let state = run
            .state()?
            .with_context(|| format!("{} has no committed epoch yet", root.display()))?;
        let epochs = state.completed_epochs;
        let mut label = run.id();
        if let Ok(text) = std::fs::read_to_string(run.config()) {
            let config: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{} is corrupt", run.config().display()))?;
            let reg = config.get("regularization").and_then(|r| r.as_table());
            let number = |key: &str| {
                reg.and_then(|r| r.get(key))
                    .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            };
            if let Some(alpha) = number("alpha") {
                label.push_str(&format!(" (α {alpha}"));
                if let Some(th) = number("threshold") {
                    label.push_str(&format!(", Th {th}"));
                }
                label.push(')');
            }
        }
        Ok(Self {
            label,
            steps: run.step_lines(epochs)?,
            metrics: run.metric_lines(epochs)?,
        })
    }

    /// (x in epochs, value) of a per-step scalar, else of the per-epoch metric `epoch_metric`
    /// (runs written before steps.jsonl existed).
    fn per_step(
        &self,
        step: fn(&StepScalars) -> Option<f64>,
        epoch_metric: Metric,
    ) -> Vec<(f64, f64)> {
        let points: Vec<(f64, f64)> = self
            .steps
            .iter()
            .filter_map(|s| Some((s.epoch_position(), step(s)?)))
            .collect();
        if points.is_empty() {
            // An epoch mean describes the whole epoch: drawn at its middle.
            self.per_epoch(epoch_metric)
                .into_iter()
                .map(|(x, y)| (x - 0.5, y))
                .collect()
        } else {
            points
        }
    }

    /// (epoch, value) of a per-epoch metric.
    fn per_epoch(&self, metric: Metric) -> Vec<(f64, f64)> {
        self.metrics
            .iter()
            .filter_map(|m| Some((m.epoch as f64, metric(m)?)))
            .filter(|(_, y)| y.is_finite())
            .collect()
    }
}

/// Colour of the `i`-th curve (the table figures use the same order: baseline first).
pub fn colour(i: usize) -> RGBColor {
    const FIXED: [RGBColor; 6] = [
        RGBColor(40, 40, 40),
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
    ];
    match FIXED.get(i) {
        Some(c) => *c,
        None => {
            let (r, g, b) = Palette99::pick(i).rgb();
            RGBColor(r, g, b)
        }
    }
}

/// Turns a drawing error into an error line.
pub fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// One curve of a panel: run index (its colour), points, dashed.
type PanelLine = (usize, Vec<(f64, f64)>, bool);

/// The training curves of `runs` in one figure: a legend strip naming the runs above six
/// panels (training cross-entropy, regularizer loss, score–target correlation, validation and
/// test loss, validation and test accuracy, learning rate) against epochs; per-step scalars
/// where the run logged them, else per-epoch means.
pub fn curves_svg(runs: &[RunCurves]) -> Result<String> {
    if runs.is_empty() {
        bail!("no run to plot");
    }
    const WIDTH: u32 = 1260;
    const PANEL_HEIGHT: u32 = 330;
    let legend_height = 44 + 22 * runs.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, legend_height + 2 * PANEL_HEIGHT))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (legend, panels) = root.split_vertically(legend_height);
        legend
            .draw(&Text::new(
                "training curves (solid: validation, dashed: test)",
                (16, 10),
                ("sans-serif", 20).into_font(),
            ))
            .map_err(plot_err)?;
        for (i, run) in runs.iter().enumerate() {
            let y = 44 + 22 * i as i32;
            let c = colour(i);
            legend
                .draw(&PathElement::new(
                    vec![(20, y + 8), (50, y + 8)],
                    c.stroke_width(3),
                ))
                .map_err(plot_err)?;
            legend
                .draw(&Text::new(
                    run.label.as_str(),
                    (60, y),
                    ("sans-serif", 16).into_font(),
                ))
                .map_err(plot_err)?;
        }
        let areas = panels.split_evenly((2, 3));
        let lines_of = |f: &dyn Fn(&RunCurves) -> Vec<(f64, f64)>| -> Vec<PanelLine> {
            runs.iter()
                .enumerate()
                .map(|(i, r)| (i, f(r), false))
                .collect()
        };
        let both = |valid: Metric, test: Metric| -> Vec<PanelLine> {
            let mut lines = Vec::new();
            for (i, r) in runs.iter().enumerate() {
                lines.push((i, r.per_epoch(valid), false));
                lines.push((i, r.per_epoch(test), true));
            }
            lines
        };
        let panels: [(&str, Vec<PanelLine>); 6] = [
            (
                "training cross-entropy",
                lines_of(&|r| r.per_step(|s| Some(s.ce), |m| m.train_ce)),
            ),
            (
                "regularizer loss",
                lines_of(&|r| r.per_step(|s| s.reg, |m| m.reg_loss)),
            ),
            (
                "score–target correlation",
                lines_of(&|r| r.per_step(|s| s.corr, |m| m.score_target_corr.flatten())),
            ),
            (
                "cross-entropy",
                both(|m| m.valid_loss, |m| Some(m.test_loss)),
            ),
            ("accuracy (%)", both(|m| m.valid_acc, |m| Some(m.test_acc))),
            (
                "learning rate",
                lines_of(&|r| r.per_step(|s| Some(s.lr), |m| m.lr)),
            ),
        ];
        for (area, (title, lines)) in areas.iter().zip(panels) {
            draw_panel(area, title, &lines)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    lines: &[PanelLine],
) -> Result<()> {
    let points = || lines.iter().flat_map(|(_, p, _)| p.iter().copied());
    if points().next().is_none() {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: not logged"), ("sans-serif", 18))
            .margin(10)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .draw()
            .map_err(plot_err)?;
        return Ok(());
    }
    let x_max = points().map(|(x, _)| x).fold(0.0f64, f64::max).max(1.0);
    let (lo, hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, y)| {
        (lo.min(y), hi.max(y))
    });
    let margin = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
    // Enough decimals to tell ten ticks apart (accuracy in %: none; a loss of 0.2–0.9: two).
    let digits = (-((hi - lo + 2.0 * margin) / 10.0).log10())
        .ceil()
        .clamp(0.0, 6.0) as usize;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (lo - margin)..(hi + margin))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .axis_desc_style(("sans-serif", 14))
        .label_style(("sans-serif", 12))
        .y_label_formatter(&|y| format!("{y:.digits$}"))
        .draw()
        .map_err(plot_err)?;
    for (run, points, dashed) in lines {
        let style = colour(*run).stroke_width(2);
        if *dashed {
            chart
                .draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, style))
                .map_err(plot_err)?;
        } else {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(plot_err)?;
        }
        if points.len() <= 30 {
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 2, colour(*run).filled())),
                )
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

/// The system's fonts, loaded once, with `sans-serif` mapped to a face that exists.
fn fonts() -> Result<Arc<usvg::fontdb::Database>> {
    static FONTS: OnceLock<Option<Arc<usvg::fontdb::Database>>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            let families: Vec<String> = db
                .faces()
                .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
                .collect();
            // plotters writes font-family="sans-serif"; fontdb maps it to Arial by default.
            let sans = ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"]
                .into_iter()
                .map(str::to_string)
                .find(|f| families.contains(f))
                .or_else(|| families.first().cloned())?;
            db.set_sans_serif_family(sans);
            Some(Arc::new(db))
        })
        .clone()
        .context(
            "no font is installed for the PNG figures' text (install e.g. Debian's \
             fonts-dejavu-core)",
        )
}

/// Renders an SVG figure to PNG bytes at its own size.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>> {
    let options = usvg::Options {
        fontdb: fonts()?,
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).context("rendering a figure to PNG")?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .context("rendering a figure to PNG: empty figure")?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| anyhow!("encoding a PNG figure: {e}"))
}

/// Writes `svg` to `svg_path` (which must end in `.svg`) and its rendering beside it as
/// `.png`, both atomically; returns the two paths.
pub fn write_svg_and_png(svg_path: &Path, svg: &str) -> Result<Vec<PathBuf>> {
    if svg_path.extension().and_then(|e| e.to_str()) != Some("svg") {
        bail!("figure path {} does not end in .svg", svg_path.display());
    }
    let png_path = svg_path.with_extension("png");
    let png = svg_to_png(svg)?;
    if let Some(dir) = svg_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_text(svg_path, svg)?;
    write_bytes(&png_path, &png)?;
    Ok(vec![svg_path.to_path_buf(), png_path])
}

/// Arguments of `pixreg plot`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    pixreg plot runs/mnist-base-54a95723469946b8 --out figures\n  \
    pixreg plot experiments/runs/fashion-mnist-* --out /tmp/fashion")]
pub struct PlotArgs {
    /// Run folders to draw in one figure (each with its config.toml and state.json).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for `curves.svg` and `curves.png`.
    #[arg(long)]
    pub out: PathBuf,
}

/// `pixreg plot`: the training curves of the runs, as `curves.svg` and `curves.png`.
pub fn plot_command(args: &PlotArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|r| RunCurves::load(r))
        .collect::<Result<Vec<_>>>()?;
    let svg = curves_svg(&runs)?;
    for path in write_svg_and_png(&args.out.join("curves.svg"), &svg)? {
        println!("{}", path.display());
    }
    Ok(())
}
