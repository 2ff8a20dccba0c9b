//! `pixreg rsa`: compute pixel similarities, thresholded targets and selected pairs for a set of
//! images, and write them for inspection or for other tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rsa_core::{
    select_pairs, select_pairs_with_matrix, DoubleThresholdMode, PairRange, SimilaritySource,
    ThresholdedTargets,
};

use crate::output::{save_safetensors, RawTensor};

/// Arguments of `pixreg rsa`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    pixreg rsa --images imgs.safetensors --threshold 0.8 --range high --out targets.safetensors\n  \
    pixreg rsa --dataset fashion-mnist --count 5000 --data-dir ../shared/datasets \\\n      \
    --threshold 0.8 --range all --no-matrix --out fmnist.safetensors")]
pub struct RsaArgs {
    /// Images as a safetensors file holding an [N, C, H, W] or [N, D] tensor in [0, 1].
    #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
    pub images: Option<PathBuf>,
    /// Name of the images tensor inside --images.
    #[arg(long, default_value = "images")]
    pub key: String,
    /// Use the first --count training images of a dataset instead of --images (grayscale, in
    /// file order, no augmentation).
    #[arg(long, requires = "count")]
    pub dataset: Option<String>,
    /// Number of images taken from --dataset.
    #[arg(long)]
    pub count: Option<usize>,
    /// Data directory (default: $PIXREG_DATA_DIR; required when that is unset: pixreg has no
    /// built-in default, `cargo xtask` defaults to ../shared/datasets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download --dataset from the Hugging Face hub if the data directory lacks it.
    #[arg(long)]
    pub download: bool,
    /// Threshold Th in [0, 1]: targets are +1 where s > Th, -1 where s < -Th, 0 elsewhere.
    #[arg(long)]
    pub threshold: f64,
    /// Pair range: all, high, low, positive, negative, high_positive, double.
    #[arg(long, default_value = "all")]
    pub range: String,
    /// Second threshold Th2 < Th (needed by --range double).
    #[arg(long)]
    pub double_threshold: Option<f64>,
    /// Use the graded two-threshold rule (raw similarity between Th2 and Th) instead of the
    /// reference's, which equals single thresholding.
    #[arg(long, requires = "double_threshold")]
    pub graded_double: bool,
    /// Write raw similarities as targets instead of thresholded ones (--no-reg_boosting).
    #[arg(long)]
    pub no_boosting: bool,
    /// Do not write the [N, N] similarity matrix (for large N).
    #[arg(long)]
    pub no_matrix: bool,
    /// Output safetensors file (similarity, targets, pairs).
    #[arg(long)]
    pub out: PathBuf,
}

fn load_images(path: &Path, key: &str) -> Result<Tensor> {
    if !path.is_file() {
        bail!("images file {} does not exist", path.display());
    }
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("cannot read {} as safetensors", path.display()))?;
    let Some(images) = tensors.remove(key) else {
        let mut names: Vec<_> = tensors.keys().cloned().collect();
        names.sort();
        bail!(
            "{} has no tensor `{key}` (it holds: {}); pass --key",
            path.display(),
            names.join(", ")
        );
    };
    Ok(images)
}

fn target_rule(args: &RsaArgs) -> Result<ThresholdedTargets> {
    let mut rule = ThresholdedTargets::new(args.threshold)?;
    if let Some(th2) = args.double_threshold {
        let mode = if args.graded_double {
            DoubleThresholdMode::Graded
        } else {
            DoubleThresholdMode::Reference
        };
        rule = rule.with_second_threshold(th2, mode)?;
    }
    if args.no_boosting {
        rule = rule.without_boosting();
    }
    Ok(rule)
}

/// Runs the command and prints its summary.
pub fn run(args: &RsaArgs) -> Result<()> {
    let start = Instant::now();
    crate::output::refuse_non_regular(&args.out)?;
    let range: PairRange = args.range.parse()?;
    let rule = target_rule(args)?;
    let images = match (&args.images, &args.dataset) {
        (Some(path), _) => load_images(path, &args.key)?,
        (None, Some(name)) => crate::data::first_training_images(
            name,
            args.count.unwrap_or_default(),
            args.data_dir.as_deref(),
            args.download,
        )?,
        (None, None) => bail!("give --images FILE or --dataset NAME --count N"),
    };
    let source = SimilaritySource::from_images(&images)?;
    let n = source.len();
    if !args.no_matrix {
        // The dense matrix is N² f32 values, held whole until it is written.
        crate::limits::check_fits(
            4.0 * (n as f64).powi(2),
            &format!("the dense {n} × {n} similarity matrix"),
            "pass --no-matrix to write only the selected pairs and their targets",
        )?;
    }
    let (list, matrix) = if args.no_matrix {
        (select_pairs(&source, range, &rule)?, None)
    } else {
        let (list, matrix) = select_pairs_with_matrix(&source, range, &rule)?;
        (list, Some(matrix))
    };
    let computed = start.elapsed();

    let mut tensors = Vec::with_capacity(3);
    if let Some(matrix) = &matrix {
        tensors.push(("similarity", RawTensor::f32(matrix, vec![n, n])));
    }
    tensors.push(("targets", RawTensor::f32(&list.targets, vec![list.len()])));
    tensors.push(("pairs", RawTensor::i64_pairs(&list.pairs)));
    save_safetensors(&args.out, &tensors)?;

    let total = rsa_core::pairs::pair_count(n);
    // The summary is informational: a closed pipe (`| head`) must not turn success into a
    // crash, so write errors are ignored.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "N = {n} images, range {range}, Th = {}: {} of {total} pairs selected ({:.4} %)",
        args.threshold,
        list.len(),
        100.0 * list.len() as f64 / total as f64
    );
    let _ = writeln!(
        out,
        "computed in {:.3} s, written to {} in {:.3} s total",
        computed.as_secs_f64(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
