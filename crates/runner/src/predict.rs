//! `pixreg predict`: the logits (and pair-similarity scores) of a checkpoint on a batch of
//! images, for checking a model against the reference implementation.
//!
//! The architecture comes from the `model.json` saved next to the checkpoint, if there is
//! one, else from the checkpoint's own metadata; the `--arch`, `--in-shape`, `--classes` and
//! `--base-channels` flags override its fields (and are all required when there is neither).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use pixreg_models::checkpoint::{read_safetensors, write_safetensors};
use pixreg_models::{Arch, ModelConfig, ResNet, CONFIG_FILE_NAME};

/// Arguments of `pixreg predict`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    pixreg predict --checkpoint ckpt.safetensors --arch resnet18 --in-shape 1,28,28 \\\n      \
    --classes 10 --base-channels 8 --images inputs.safetensors --pairs pairs.a,pairs.b \\\n      \
    --out out.safetensors")]
pub struct PredictArgs {
    /// Model checkpoint (safetensors state dict with the reference's key names).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Architecture: resnet18, resnet34, resnet50 or resnet101 (default: from model.json).
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Input shape C,H,W, e.g. 1,28,28 (default: from model.json).
    #[arg(long, value_delimiter = ',')]
    pub in_shape: Option<Vec<usize>>,
    /// Number of classes (default: from model.json).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Width of the stem and first section (default: from model.json).
    #[arg(long)]
    pub base_channels: Option<usize>,
    /// Safetensors file with the images, [N, C, H, W] float at model scale.
    #[arg(long)]
    pub images: PathBuf,
    /// Name of the images tensor inside --images.
    #[arg(long, default_value = "images")]
    pub key: String,
    /// Also compute pair scores: the names A_KEY,B_KEY of two [k, C, H, W] tensors in --images.
    #[arg(long, value_name = "A_KEY,B_KEY")]
    pub pairs: Option<String>,
    /// Run in training mode (BatchNorm batch statistics) instead of eval mode.
    #[arg(long)]
    pub train_mode: bool,
    /// Output safetensors file: `logits` `[N, classes]` and, with --pairs, `scores` `[k]`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `pixreg predict`.
pub fn run(args: &PredictArgs) -> Result<()> {
    crate::output::refuse_non_regular(&args.out)?;
    let device = Device::Cpu;
    let config = model_config(args)?;
    let pair_keys = args.pairs.as_deref().map(parse_pair_keys).transpose()?;

    let mut model = ResNet::load(&args.checkpoint, &config, &device).with_context(|| {
        format!(
            "cannot load checkpoint {} as {} {:?} with {} classes and base width {}",
            args.checkpoint.display(),
            config.arch,
            config.in_shape,
            config.num_classes,
            config.base_channels
        )
    })?;
    model.set_training(args.train_mode);

    let inputs = read_safetensors(&args.images, &device)
        .with_context(|| format!("cannot read images from {}", args.images.display()))?;
    let images = input_tensor(&inputs, &args.key, &args.images)?;

    let mut out = HashMap::new();
    let logits = model
        .forward(&images)
        .with_context(|| format!("forward pass on `{}` failed", args.key))?;
    out.insert("logits".to_string(), logits);
    if let Some((a_key, b_key)) = pair_keys {
        let a = input_tensor(&inputs, a_key, &args.images)?;
        let b = input_tensor(&inputs, b_key, &args.images)?;
        let scores = model
            .forward_pair(&a, &b)
            .with_context(|| format!("pair forward on `{a_key}`, `{b_key}` failed"))?;
        out.insert("scores".to_string(), scores);
    }
    write_safetensors(&args.out, &out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

/// The model configuration: `model.json` beside the checkpoint (if present) with the flags
/// overriding its fields.
fn model_config(args: &PredictArgs) -> Result<ModelConfig> {
    if !args.checkpoint.is_file() {
        bail!("checkpoint {} does not exist", args.checkpoint.display());
    }
    let json = args
        .checkpoint
        .parent()
        .map(|dir| dir.join(CONFIG_FILE_NAME))
        .filter(|p| p.is_file());
    let saved = match &json {
        Some(path) => Some(
            ModelConfig::load_json(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        // A checkpoint found alone describes itself (pixreg train writes the metadata).
        None => pixreg_models::checkpoint::config_from_metadata(&args.checkpoint)?,
    };
    let in_shape = match &args.in_shape {
        Some(v) => match <[usize; 3]>::try_from(v.as_slice()) {
            Ok(shape) => Some(shape),
            Err(_) => bail!("--in-shape needs three numbers C,H,W, got {v:?}"),
        },
        None => None,
    };
    let missing = |flag: &str| {
        anyhow::anyhow!(
            "{flag} is required: no {CONFIG_FILE_NAME} next to {} and no architecture in its metadata",
            args.checkpoint.display()
        )
    };
    let config = ModelConfig::new(
        args.arch
            .or(saved.as_ref().map(|c| c.arch))
            .ok_or_else(|| missing("--arch"))?,
        in_shape
            .or(saved.as_ref().map(|c| c.in_shape))
            .ok_or_else(|| missing("--in-shape"))?,
        args.classes
            .or(saved.as_ref().map(|c| c.num_classes))
            .ok_or_else(|| missing("--classes"))?,
        args.base_channels
            .or(saved.as_ref().map(|c| c.base_channels))
            .ok_or_else(|| missing("--base-channels"))?,
    );
    config.validate()?;
    Ok(config)
}

fn parse_pair_keys(s: &str) -> Result<(&str, &str)> {
    match s.split_once(',') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(',') => Ok((a, b)),
        _ => bail!("--pairs needs two tensor names A_KEY,B_KEY, got `{s}`"),
    }
}

/// A float tensor of the images file, as float32.
fn input_tensor(inputs: &HashMap<String, Tensor>, key: &str, file: &Path) -> Result<Tensor> {
    let t = inputs.get(key).with_context(|| {
        let mut names: Vec<&String> = inputs.keys().collect();
        names.sort();
        format!(
            "{} has no tensor `{key}` (it has: {names:?})",
            file.display()
        )
    })?;
    if !t.dtype().is_float() {
        bail!(
            "tensor `{key}` in {} is {:?}, expected float images",
            file.display(),
            t.dtype()
        );
    }
    Ok(t.to_dtype(DType::F32)?)
}
