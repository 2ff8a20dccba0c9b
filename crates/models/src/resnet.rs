//! The reference ResNet (`models.py`: `ResBlock`, `ResNetCore`, `ResNet`).

use candle_core::{DType, Device, Tensor, Var};

use crate::config::{BlockKind, ModelConfig, POOL_SIZE};
use crate::error::{Error, Result};
use crate::layers::{BatchNorm2d, Conv2d, Init, Linear, StateMut, BN_EPS};
use crate::ops;

/// Decay of the similarity head's running means (`ResNet.beta`).
pub const SIMILARITY_BETA: f64 = 0.9;

/// Number of layers compared by the pair forward: the stem and the four sections.
pub const NUM_LAYERS: usize = 5;

/// How a forward pass through the layers runs: `None` in evaluation mode; `Some(segments)` in
/// training mode, the batch split into `segments` (image counts, in order) that every batch
/// norm normalises with their own statistics, as if each had been a forward pass of its own.
type Mode<'a> = Option<&'a [usize]>;

/// A conv → BN pair (the `nn.Sequential(conv, bn)` pieces of the reference).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn new(
        init: &mut Init,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        padding: usize,
        dev: &Device,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(init, in_c, out_c, k, stride, padding, dev)?,
            bn: BatchNorm2d::new(out_c, dev)?,
        })
    }

    /// Training mode runs the convolution and the batch norm as one fused op.
    fn forward(&mut self, x: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        match mode {
            Some(segments) => self.bn.forward_train_conv(&self.conv, x, false, segments),
            None => self.forward_eval(x),
        }
    }

    /// `relu(forward(x, mode))`, with the ReLU fused too in training mode.
    fn forward_relu(&mut self, x: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        match mode {
            Some(segments) => self.bn.forward_train_conv(&self.conv, x, true, segments),
            None => self.forward_eval_relu(x),
        }
    }

    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward_eval(&self.conv.forward(x)?)
    }

    /// `relu(forward_eval(x))`, the ReLU in the batch norm's pass.
    fn forward_eval_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward_eval_relu(&self.conv.forward(x)?)
    }

    /// [`ConvBn::forward_eval`] (then a ReLU with `relu`) without parameter gradients.
    fn forward_inference(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        self.bn.forward_conv_inference(&self.conv, x, relu)
    }

    /// `conv_idx` / `bn_idx`: positions inside the reference's `nn.Sequential`.
    fn state<'a>(
        &'a mut self,
        prefix: &str,
        conv_idx: usize,
        bn_idx: usize,
        out: &mut Vec<(String, StateMut<'a>)>,
    ) {
        self.conv.state(&format!("{prefix}.{conv_idx}"), out);
        self.bn.state(&format!("{prefix}.{bn_idx}"), out);
    }
}

/// `ResBlock`: `layer0` = conv (stride s) → BN; `layer1` = ReLU → conv 3×3 → BN;
/// `layer2` (bottleneck only) = ReLU → conv 1×1 → BN; then `relu(out + shortcut(x))`.
#[derive(Debug, Clone)]
struct ResBlock {
    layer0: ConvBn,
    layer1: ConvBn,
    layer2: Option<ConvBn>,
    shortcut: Option<ConvBn>,
}

impl ResBlock {
    fn new(
        init: &mut Init,
        in_c: usize,
        width: usize,
        stride: usize,
        kind: BlockKind,
        dev: &Device,
    ) -> Result<Self> {
        let out_c = kind.expansion() * width;
        let (k0, p0) = match kind {
            BlockKind::Basic => (3, 1),
            BlockKind::Bottleneck => (1, 0),
        };
        let layer0 = ConvBn::new(init, in_c, width, k0, stride, p0, dev)?;
        let layer1 = ConvBn::new(init, width, width, 3, 1, 1, dev)?;
        let layer2 = match kind {
            BlockKind::Basic => None,
            BlockKind::Bottleneck => Some(ConvBn::new(init, width, out_c, 1, 1, 0, dev)?),
        };
        let shortcut = if stride == 1 && in_c == out_c {
            None
        } else {
            Some(ConvBn::new(init, in_c, out_c, 1, stride, 0, dev)?)
        };
        Ok(Self {
            layer0,
            layer1,
            layer2,
            shortcut,
        })
    }

    /// The ReLUs of `layer1`/`layer2` are applied to the previous layer's output, so they are
    /// fused with the batch norm before them; the final ReLU with the residual add.
    fn forward(&mut self, x: &Tensor, mode: Mode<'_>) -> Result<Tensor> {
        if let (Some(segments), None) = (mode, &self.layer2) {
            if let Some(y) = self.forward_fused(x, segments)? {
                return Ok(y);
            }
        }
        let out = self.layer0.forward_relu(x, mode)?;
        let out = match &mut self.layer2 {
            Some(layer2) => layer2.forward(&self.layer1.forward_relu(&out, mode)?, mode)?,
            None => self.layer1.forward(&out, mode)?,
        };
        let skip = match &mut self.shortcut {
            Some(s) => s.forward(x, mode)?,
            None => x.clone(),
        };
        ops::add_relu(&out, &skip)
    }

    /// A basic block in training mode as one fused kernel
    /// ([`ops::basic_block_train_segments`]); `None` where it does not apply.
    fn forward_fused(&mut self, x: &Tensor, segments: &[usize]) -> Result<Option<Tensor>> {
        let parts = (
            self.layer0.bn.spec(&self.layer0.conv),
            self.layer1.bn.spec(&self.layer1.conv),
        );
        let shortcut = self.shortcut.as_ref().map(|s| s.bn.spec(&s.conv));
        let Some((y, moments)) =
            ops::basic_block_train_segments(x, parts, shortcut, BN_EPS, segments)?
        else {
            return Ok(None);
        };
        self.layer0.bn.track_all(moments.first)?;
        self.layer1.bn.track_all(moments.second)?;
        if let Some(s) = &mut self.shortcut {
            s.bn.track_all(moments.shortcut)?;
        }
        Ok(Some(y))
    }

    fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.layer0.forward_eval_relu(x)?;
        let out = match &self.layer2 {
            Some(layer2) => layer2.forward_eval(&self.layer1.forward_eval_relu(&out)?)?,
            None => self.layer1.forward_eval(&out)?,
        };
        let skip = match &self.shortcut {
            Some(s) => s.forward_eval(x)?,
            None => x.clone(),
        };
        ops::add_relu(&out, &skip)
    }

    /// [`ResBlock::forward_eval`] without parameter gradients.
    fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.layer0.forward_inference(x, true)?;
        let out = match &self.layer2 {
            Some(layer2) => {
                layer2.forward_inference(&self.layer1.forward_inference(&out, true)?, false)?
            }
            None => self.layer1.forward_inference(&out, false)?,
        };
        let skip = match &self.shortcut {
            Some(s) => s.forward_inference(x, false)?,
            None => x.clone(),
        };
        ops::add_relu(&out, &skip)
    }

    fn batch_norms<'a>(&'a mut self, out: &mut Vec<&'a mut BatchNorm2d>) {
        out.push(&mut self.layer0.bn);
        out.push(&mut self.layer1.bn);
        out.extend(self.layer2.as_mut().map(|l| &mut l.bn));
        out.extend(self.shortcut.as_mut().map(|s| &mut s.bn));
    }

    fn state<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, StateMut<'a>)>) {
        self.layer0.state(&format!("{prefix}.layer0"), 0, 1, out);
        self.layer1.state(&format!("{prefix}.layer1"), 1, 2, out);
        if let Some(layer2) = &mut self.layer2 {
            layer2.state(&format!("{prefix}.layer2"), 1, 2, out);
        }
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.state(&format!("{prefix}.shortcut"), 0, 1, out);
        }
    }
}

/// `ResNetCore`: the stem (section 0: conv 7×7 stride 1 pad 3 → BN → ReLU, no max-pool) and
/// four sections of residual blocks.
#[derive(Debug, Clone)]
struct Core {
    stem: ConvBn,
    sections: Vec<Vec<ResBlock>>,
}

impl Core {
    fn new(init: &mut Init, config: &ModelConfig, dev: &Device) -> Result<Self> {
        let kind = config.arch.block_kind();
        let base = config.base_channels;
        let stem = ConvBn::new(init, config.in_shape[0], base, 7, 1, 3, dev)?;
        let mut in_c = base;
        let mut sections = Vec::with_capacity(4);
        for (i, &blocks) in config.arch.block_nums().iter().enumerate() {
            let width = base << i;
            let first_stride = if i == 0 { 1 } else { 2 };
            let mut section = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 { first_stride } else { 1 };
                section.push(ResBlock::new(init, in_c, width, stride, kind, dev)?);
                in_c = kind.expansion() * width;
            }
            sections.push(section);
        }
        Ok(Self { stem, sections })
    }

    /// The five features (stem and sections 1-4, all post-ReLU).
    fn forward(&mut self, x: &Tensor, mode: Mode<'_>) -> Result<Vec<Tensor>> {
        let mut features = Vec::with_capacity(NUM_LAYERS);
        let mut h = self.stem.forward_relu(x, mode)?;
        features.push(h.clone());
        for section in &mut self.sections {
            for block in section.iter_mut() {
                h = block.forward(&h, mode)?;
            }
            features.push(h.clone());
        }
        Ok(features)
    }

    fn forward_eval(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut features = Vec::with_capacity(NUM_LAYERS);
        let mut h = self.stem.forward_eval_relu(x)?;
        features.push(h.clone());
        for section in &self.sections {
            for block in section {
                h = block.forward_eval(&h)?;
            }
            features.push(h.clone());
        }
        Ok(features)
    }

    /// The last feature of [`Core::forward_eval`], without parameter gradients.
    fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.stem.forward_inference(x, true)?;
        for block in self.sections.iter().flatten() {
            h = block.forward_inference(&h)?;
        }
        Ok(h)
    }

    /// Every batch norm of the core.
    fn batch_norms(&mut self) -> Vec<&mut BatchNorm2d> {
        let mut out = vec![&mut self.stem.bn];
        for block in self.sections.iter_mut().flatten() {
            block.batch_norms(&mut out);
        }
        out
    }

    fn state<'a>(&'a mut self, prefix: &str, out: &mut Vec<(String, StateMut<'a>)>) {
        self.stem.state(&format!("{prefix}.sections.0"), 0, 1, out);
        for (s, section) in self.sections.iter_mut().enumerate() {
            for (b, block) in section.iter_mut().enumerate() {
                block.state(&format!("{prefix}.sections.{}.{b}", s + 1), out);
            }
        }
    }
}

/// The reference `ResNet`: classification forward, pair-similarity forward, and the
/// similarity head's parameters (`layer_weight`, `running_mean.{i}`).
///
/// The mode is explicit: [`ResNet::set_training`] switches between PyTorch's `train()` (BN
/// batch statistics, running statistics updated) and `eval()`. [`ResNet::forward_eval`] is
/// always eval mode and never changes the model. For an independent copy use
/// [`ResNet::deep_copy`] (or keep a [`ResNet::state_dict`]).
#[derive(Debug)]
pub struct ResNet {
    config: ModelConfig,
    device: Device,
    core: Core,
    linear: Linear,
    layer_weight: Var,
    running_means: Vec<Tensor>,
    training: bool,
    pair_updates_bn_statistics: bool,
}

/// A batch-norm recalibration in progress ([`ResNet::recalibrate_bn_statistics`]); it ends
/// when dropped or [`finish`](BnRecalibration::finish)ed. Ended early (an error between two
/// batches), the statistics are the average of the batches observed so far.
#[derive(Debug)]
pub struct BnRecalibration<'a> {
    model: &'a mut ResNet,
    images: usize,
}

impl BnRecalibration<'_> {
    /// Adds the batch `[N, C, H, W]` (model scale) to the averaged statistics.
    pub fn observe(&mut self, x: &Tensor) -> Result<()> {
        self.model.check_images(x, "recalibration images")?;
        let whole = [x.dim(0)?];
        self.model.core.forward(&x.detach(), Some(&whole))?;
        self.images += whole[0];
        Ok(())
    }

    /// Ends the recalibration; returns the number of images it averaged over.
    pub fn finish(self) -> usize {
        self.images
    }
}

impl Drop for BnRecalibration<'_> {
    fn drop(&mut self) {
        for bn in self.model.core.batch_norms() {
            bn.end_recalibration();
        }
    }
}

/// Outputs of a pair forward.
#[derive(Debug, Clone)]
pub struct PairOutput {
    /// Combined similarity per pair, `[k]`.
    pub scores: Tensor,
    /// Centred cosine per layer, `[L]` tensors of shape `[k]` (stem, sections 1-4).
    pub layer_scores: Vec<Tensor>,
}

impl ResNet {
    /// A freshly initialised model (PyTorch's default initialisation, drawn from a ChaCha8
    /// stream seeded with `seed`), in training mode.
    ///
    /// Unlike the reference constructor, no dummy forward pass touches the BN running
    /// statistics: they start at mean 0, variance 1, counter 0.
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, Init::seeded(seed), device)
    }

    pub(crate) fn build(config: &ModelConfig, mut init: Init, device: &Device) -> Result<Self> {
        config.validate()?;
        let core = Core::new(&mut init, config, device)?;
        let linear = Linear::new(
            &mut init,
            config.linear_in_features(),
            config.num_classes,
            device,
        )?;
        let layer_weight = Var::zeros(NUM_LAYERS, DType::F32, device)?;
        let running_means = config
            .feature_channels()
            .iter()
            .map(|&c| Tensor::zeros(c, DType::F32, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            device: device.clone(),
            core,
            linear,
            layer_weight,
            running_means,
            training: true,
            pair_updates_bn_statistics: true,
        })
    }

    /// An independent copy (parameters and buffers copied, same mode and device).
    pub fn deep_copy(&self) -> Result<Self> {
        let mut copy = ResNet::build(&self.config, Init::Skeleton, &self.device)?;
        copy.load_state_dict(self.state_dict()?.into_iter().collect(), "model copy")?;
        copy.training = self.training;
        copy.pair_updates_bn_statistics = self.pair_updates_bn_statistics;
        Ok(copy)
    }

    /// A second handle on the same parameters (the `Var`s and tensors are shared, not copied),
    /// so the state listing, which needs `&mut`, can run from `&self`.
    fn shared_view(&self) -> Self {
        Self {
            config: self.config.clone(),
            device: self.device.clone(),
            core: self.core.clone(),
            linear: self.linear.clone(),
            layer_weight: self.layer_weight.clone(),
            running_means: self.running_means.clone(),
            training: self.training,
            pair_updates_bn_statistics: self.pair_updates_bn_statistics,
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// PyTorch's `model.train()` (`true`) / `model.eval()` (`false`).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Whether the model is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Whether a training-mode pair forward updates the batch norms' running statistics with
    /// each half's batch statistics: `true` (the default) as the reference does (its quirk
    /// Q13); `false` leaves them to the classification batches, the pairs still normalised
    /// with their own batch statistics.
    ///
    /// The running statistics serve only eval mode (training batches normalise with their
    /// own statistics), so the weights train identically either way; the option tells how
    /// much of an eval-mode accuracy the pairs' statistics move. Measured on range `high`,
    /// seed 1 of the `cpu` profile (Fashion-MNIST): the model was at chance in eval mode with
    /// either setting (10.0 and 9.8 %) and at 76.4 % once its running statistics were
    /// re-estimated from training images (`tools/bn_recalibration.py`): there the collapse is
    /// in the classification batches' statistics too, not the pairs'.
    ///
    /// ```
    /// # use candle_core::{Device, Tensor};
    /// # use pixreg_models::{Arch, ModelConfig, ResNet};
    /// let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
    /// let mut model = ResNet::new(&config, 0, &Device::Cpu)?;
    /// model.set_pair_updates_bn_statistics(false);
    /// let running_var = |m: &ResNet| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    ///     let state = m.state_dict()?;
    ///     let (_, t) = state.iter().find(|(k, _)| k == "core.sections.0.1.running_var").unwrap();
    ///     Ok(t.to_vec1()?)
    /// };
    /// let before = running_var(&model)?;
    /// let a = Tensor::rand(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu)?;
    /// let b = Tensor::rand(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu)?;
    /// model.forward_pair(&a, &b)?;
    /// assert_eq!(running_var(&model)?, before);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_pair_updates_bn_statistics(&mut self, updates: bool) {
        self.pair_updates_bn_statistics = updates;
    }

    /// Starts re-estimating every batch norm's running statistics ("precise BN", Wu & Johnson
    /// 2021): each batch passed to [`BnRecalibration::observe`] runs through the core in
    /// training mode, and when the recalibration ends each batch norm's running mean and
    /// variance are the plain average of those batches' moments (PyTorch's `momentum=None`)
    /// instead of the exponential average of the training steps. Weights, the batch counters
    /// and the similarity head's running means are untouched.
    ///
    /// Why: eval mode normalises with the running statistics, and an exponential average over
    /// the last few dozen training steps can be far from the statistics of the final weights.
    /// Measured on range `high`, seed 1 of the `cpu` profile (Fashion-MNIST): at chance in eval
    /// mode after training, 76.4 % with its statistics re-estimated from 12 800 training images
    /// (`tools/bn_recalibration.py`).
    ///
    /// ```
    /// # use candle_core::{Device, Tensor};
    /// # use pixreg_models::{Arch, ModelConfig, ResNet};
    /// let config = ModelConfig::new(Arch::ResNet18, [1, 28, 28], 10, 4);
    /// let mut model = ResNet::new(&config, 0, &Device::Cpu)?;
    /// let mut recalibration = model.recalibrate_bn_statistics();
    /// for _ in 0..2 {
    ///     recalibration.observe(&Tensor::rand(0f32, 1.0, (8, 1, 28, 28), &Device::Cpu)?)?;
    /// }
    /// assert_eq!(recalibration.finish(), 16);
    /// let logits = model.forward_eval(&Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu)?)?;
    /// assert_eq!(logits.dims(), &[2, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recalibrate_bn_statistics(&mut self) -> BnRecalibration<'_> {
        for bn in self.core.batch_norms() {
            bn.begin_recalibration();
        }
        BnRecalibration {
            model: self,
            images: 0,
        }
    }

    /// Logits `[N, classes]` of a batch `[N, C, H, W]` at model scale, in the current mode
    /// (training mode updates the BN running statistics).
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x, "images")?;
        let whole = [x.dim(0)?];
        let features = self.core.forward(x, self.training.then_some(&whole[..]))?;
        self.head(&features)
    }

    /// Logits in eval mode whatever the current mode, without changing anything: the
    /// classifier used for evaluation and attacks.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x, "images")?;
        let features = self.core.forward_eval(x)?;
        self.head(&features)
    }

    /// [`ResNet::forward_eval`] for callers that need no gradient of the parameters
    /// (accuracy, noise and corruption grids, decision-based attacks; a white-box attack's
    /// gradient with respect to `x` still flows): the parameters enter detached, and on the
    /// CPU, when `x` needs no gradient either, each convolution and the batch norm and ReLU
    /// after it are one kernel pass. The same logits as `forward_eval`, bit for bit (tested).
    ///
    /// Why: the evaluation of a run is thousands of such forward passes; width 16 on CIFAR
    /// (`perf`, one thread), the separate batch-norm pass was 12.5 % of them.
    pub fn forward_inference(&self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x, "images")?;
        let last = self.core.forward_inference(x)?;
        let pooled = ops::avg_pool2d(&last, POOL_SIZE)?;
        self.linear.forward_detached(&pooled.flatten_from(1)?)
    }

    /// Pair-similarity scores `[k]` of two batches `[k, C, H, W]` (the reference's
    /// `model(a, b)`): see [`ResNet::forward_pair_detailed`].
    pub fn forward_pair(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(self.forward_pair_detailed(a, b)?.scores)
    }

    /// The pair forward with its per-layer cosines. The core runs on `a` and on `b` as the
    /// reference's two passes do (in training mode each uses its own batch statistics and
    /// updates the BN running statistics, `a` first), here as one pass over both whose batch
    /// norms treat the halves separately; then, for each layer, `running_mean ← β·running_mean +
    /// (1−β)·mean(features of a and b)` (also in eval mode, as the reference) and the
    /// features centred with the updated mean are compared by cosine; the layer cosines are
    /// combined with `softmax(layer_weight)`.
    pub fn forward_pair_detailed(&mut self, a: &Tensor, b: &Tensor) -> Result<PairOutput> {
        self.check_pair_images(a, "pair batch a")?;
        self.check_pair_images(b, "pair batch b")?;
        if a.dims() != b.dims() {
            return Err(Error::Input(format!(
                "pair batches differ in shape: {:?} vs {:?}",
                a.dims(),
                b.dims()
            )));
        }
        // Both sides in one pass: in training mode each half keeps its own batch-norm
        // statistics and running-statistics update (a first, then b), as two passes would.
        let k = a.dim(0)?;
        let halves = [k, k];
        let mode = self.training.then_some(&halves[..]);
        // A clone of the core shares its parameters and holds the running statistics as they
        // were (the forward replaces those tensors rather than writing into them).
        let untouched =
            (self.training && !self.pair_updates_bn_statistics).then(|| self.core.clone());
        let features = self.core.forward(&Tensor::cat(&[a, b], 0)?, mode)?;
        if let Some(core) = untouched {
            self.core = core;
        }
        let mut layer_scores = Vec::with_capacity(NUM_LAYERS);
        for (l, f) in features.iter().enumerate() {
            let mean = crate::ops::update_running_mean(
                &self.running_means[l],
                &f.narrow(0, 0, k)?,
                &f.narrow(0, k, k)?,
                SIMILARITY_BETA,
            )?;
            layer_scores.push(crate::ops::centered_cosine_halves(f, &mean)?);
            self.running_means[l] = mean;
        }
        let scores = rsa_core::model_side::combine_layer_scores(
            &layer_scores,
            self.layer_weight.as_tensor(),
        )?;
        Ok(PairOutput {
            scores,
            layer_scores,
        })
    }

    fn head(&self, features: &[Tensor]) -> Result<Tensor> {
        let last = features
            .last()
            .ok_or_else(|| Error::Input("the core returned no features".into()))?;
        let pooled = ops::avg_pool2d(last, POOL_SIZE)?;
        self.linear.forward(&pooled.flatten_from(1)?)
    }

    fn check_images(&self, x: &Tensor, what: &str) -> Result<()> {
        ops::ensure_f32(x, what)?;
        let dims = x.dims();
        if dims.len() != 4 || dims[1..] != self.config.in_shape[..] || dims[0] == 0 {
            return Err(Error::Input(format!(
                "{what} must have shape [N>0, {}, {}, {}], got {dims:?}",
                self.config.in_shape[0], self.config.in_shape[1], self.config.in_shape[2]
            )));
        }
        Ok(())
    }

    /// Pair images need the model's channels, not its height and width: the core is fully
    /// convolutional and the similarity head compares features of any size, so the
    /// reference's 36×64 ImageNet photos regularize a 32×32 CIFAR model (spec §4).
    fn check_pair_images(&self, x: &Tensor, what: &str) -> Result<()> {
        ops::ensure_f32(x, what)?;
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.config.in_shape[0] || dims[0] == 0 {
            return Err(Error::Input(format!(
                "{what} must have shape [N>0, {}, H, W], got {dims:?}",
                self.config.in_shape[0]
            )));
        }
        if dims[2] == 0 || dims[3] == 0 {
            return Err(Error::Input(format!("{what} has empty images: {dims:?}")));
        }
        Ok(())
    }

    /// `layer_weight` `[5]` (softmaxed to weight the layer cosines).
    pub fn layer_weight(&self) -> &Var {
        &self.layer_weight
    }

    /// The similarity head's running means `running_mean.{0..4}`.
    pub fn similarity_running_means(&self) -> &[Tensor] {
        &self.running_means
    }

    /// Every state-dict entry under its PyTorch name, in the reference's registration order
    /// (`layer_weight`, `core.*`, `linear.*`, `running_mean.*`), with mutable access to the
    /// buffers.
    pub(crate) fn state_mut(&mut self) -> Vec<(String, StateMut<'_>)> {
        let mut out = Vec::new();
        out.push((
            "layer_weight".to_string(),
            StateMut::Param(&self.layer_weight),
        ));
        self.core.state("core", &mut out);
        self.linear.state("linear", &mut out);
        for (i, m) in self.running_means.iter_mut().enumerate() {
            out.push((format!("running_mean.{i}"), StateMut::Buffer(m)));
        }
        out
    }

    /// The trainable parameters with their PyTorch names (what `model.parameters()` yields
    /// with `requires_grad`; the similarity running means are not among them). The `Var`s
    /// share storage with the model: updating them updates the model.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        // The view shares every parameter's storage, so the Vars listed from it are the
        // model's own.
        let mut view = self.shared_view();
        view.state_mut()
            .into_iter()
            .filter_map(|(name, entry)| match entry {
                StateMut::Param(v) => Some((name, v.clone())),
                StateMut::Buffer(_) | StateMut::Counter(_) => None,
            })
            .collect()
    }

    /// The complete state dict (parameters and buffers, `num_batches_tracked` as int64
    /// scalars) under the reference's key names: a detached deep copy, unaffected by later
    /// training (use it to keep a best-so-far state).
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut view = self.shared_view();
        let device = self.device.clone();
        view.state_mut()
            .into_iter()
            .map(|(name, entry)| {
                let t = match entry {
                    StateMut::Param(v) => v.as_detached_tensor().copy()?,
                    StateMut::Buffer(t) => t.detach(),
                    StateMut::Counter(c) => Tensor::new(*c, &device)?,
                };
                Ok((name, t))
            })
            .collect()
    }
}
