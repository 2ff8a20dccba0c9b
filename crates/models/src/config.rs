//! Architecture description: which ResNet, for which inputs, saved as `model.json`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File name of the configuration saved next to checkpoints.
pub const CONFIG_FILE_NAME: &str = "model.json";

/// Number of pooled spatial positions per side: the head is `avg_pool2d(4)`.
pub const POOL_SIZE: usize = 4;

/// Residual block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (expansion 1).
    Basic,
    /// 1×1 (strided), 3×3, 1×1 to four times the width (expansion 4).
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block relative to its width.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The four ResNets of the reference `models.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Basic blocks [2, 2, 2, 2].
    ResNet18,
    /// Basic blocks [3, 4, 6, 3].
    ResNet34,
    /// Bottleneck blocks [3, 4, 6, 3].
    ResNet50,
    /// Bottleneck blocks [3, 4, 23, 3].
    ResNet101,
}

impl Arch {
    /// Every architecture, in size order.
    pub const ALL: [Arch; 4] = [
        Arch::ResNet18,
        Arch::ResNet34,
        Arch::ResNet50,
        Arch::ResNet101,
    ];

    /// Number of blocks in each of the four sections.
    pub fn block_nums(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
            Arch::ResNet101 => [3, 4, 23, 3],
        }
    }

    /// Block type of every section.
    pub fn block_kind(self) -> BlockKind {
        match self {
            Arch::ResNet18 | Arch::ResNet34 => BlockKind::Basic,
            Arch::ResNet50 | Arch::ResNet101 => BlockKind::Bottleneck,
        }
    }

    /// The name used on the command line and in `model.json`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
            Arch::ResNet101 => "resnet101",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == lower)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown architecture `{s}` (expected resnet18, resnet34, resnet50 or resnet101)"
                ))
            })
    }
}

/// Everything needed to build a model: the reference's
/// `ResNetXX(in_shape, num_classes, base_channels)` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which ResNet.
    pub arch: Arch,
    /// Input images `(C, H, W)`.
    pub in_shape: [usize; 3],
    /// Number of output classes.
    pub num_classes: usize,
    /// Width of the stem and of the first section (64 in the paper).
    pub base_channels: usize,
}

impl ModelConfig {
    /// A configuration; call [`ModelConfig::validate`] (done by every constructor) to check it.
    pub fn new(arch: Arch, in_shape: [usize; 3], num_classes: usize, base_channels: usize) -> Self {
        Self {
            arch,
            in_shape,
            num_classes,
            base_channels,
        }
    }

    /// Channels of the five features used by the pair forward (stem, sections 1-4).
    pub fn feature_channels(&self) -> [usize; 5] {
        let e = self.arch.block_kind().expansion();
        let b = self.base_channels;
        [b, b * e, 2 * b * e, 4 * b * e, 8 * b * e]
    }

    /// Spatial size `(H, W)` of the five features (stem, sections 1-4).
    pub fn feature_sizes(&self) -> [(usize, usize); 5] {
        // Sections 2-4 halve with a stride-2 convolution: 3×3 pad 1 (basic) or 1×1 pad 0
        // (bottleneck); both give (n - 1) / 2 + 1.
        let half = |n: usize| (n.saturating_sub(1)) / 2 + 1;
        let (h, w) = (self.in_shape[1], self.in_shape[2]);
        let mut sizes = [(h, w); 5];
        for i in 2..5 {
            let (ph, pw) = sizes[i - 1];
            sizes[i] = (half(ph), half(pw));
        }
        sizes
    }

    /// Input width of the linear head: channels × pooled positions of the last section.
    pub fn linear_in_features(&self) -> usize {
        let (h, w) = self.feature_sizes()[4];
        self.feature_channels()[4] * (h / POOL_SIZE) * (w / POOL_SIZE)
    }

    /// Checks that the configuration describes a model that can run.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.in_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::Config(format!(
                "in_shape {:?} has a zero dimension",
                self.in_shape
            )));
        }
        if self.num_classes == 0 {
            return Err(Error::Config("num_classes must be positive".into()));
        }
        if self.base_channels == 0 {
            return Err(Error::Config("base_channels must be positive".into()));
        }
        let (h4, w4) = self.feature_sizes()[4];
        if h4 < POOL_SIZE || w4 < POOL_SIZE {
            return Err(Error::Config(format!(
                "input {h}×{w} gives a {h4}×{w4} last feature map, smaller than the {POOL_SIZE}×{POOL_SIZE} average pool"
            )));
        }
        Ok(())
    }

    /// Reads a `model.json`.
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes a `model.json` (atomically: temporary file, then rename).
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        crate::checkpoint::write_atomically(path, |tmp| {
            std::fs::write(tmp, format!("{text}\n")).map_err(|source| Error::Io {
                path: tmp.to_path_buf(),
                source,
            })
        })
    }
}
