//! The training loop of `classification_and_regularization.py`, without its bugs: per step CE
//! on a classification batch plus α·(similarity loss) on the next pair batch, SGD with
//! momentum, the cyclic step LR per epoch, evaluation after every epoch (and before the first),
//! and the checkpoint with the lowest validation loss kept as `best` (the reference keeps only
//! the live weights on CPU, so its "best" is the last epoch there).
//!
//! A run resumes from its last completed epoch: the model, the optimizer's momentum buffers,
//! the pair sampler's position and the epoch's data order are all restored or re-derived from
//! the seed, so an interrupted CPU run ends with the same weights as an uninterrupted one.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use pixreg_attacks::{FnClassifier, GaussianAugmentation, Pgd};
use pixreg_datasets::{ClassificationData, ModelScale};
use pixreg_models::{Arch, ModelConfig, PairBatch, Regularization, ResNet, SgdMomentum};
use rsa_core::model_side::score_target_correlation;

use crate::config::{parse_device, ExperimentConfig, TrainingConfig};
use crate::curves::{self, StepScalars};
use crate::data::{load_task_data, DataSource};
use crate::eval::evaluate;
use crate::fault;
use crate::output::write_text;
use crate::regularization::{build_regularization, RegState};
use crate::results::{EpochMetrics, EpochSplit};
use crate::run_dir::{
    peak_rss_mib, RunDir, RunLock, RunState, RunStatus, SamplerPosition, RUN_LAYOUT,
};

/// How `train` reports progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrainOptions {
    /// No progress bars or per-epoch lines on the terminal (the log file is still written).
    pub quiet: bool,
    /// Stop after this many epochs of this invocation (the run stays resumable). For tests
    /// and for splitting long runs.
    pub max_epochs: Option<usize>,
}

/// What a finished (or stopped) `train` call produced. It holds the run's lock until dropped,
/// so the final evaluation runs under the same lock as the training.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The run folder.
    pub run: RunDir,
    /// Its state after this call.
    pub state: RunState,
    /// True when the run was already finished and nothing was done.
    pub already_finished: bool,
    /// The task's data as trained on (absent when nothing was done), so the final evaluation
    /// does not load it again.
    pub data: Option<ClassificationData>,
    /// The run's lock.
    pub lock: RunLock,
}

/// The model architecture for a config and its data.
pub fn model_config(config: &ExperimentConfig, data: &ClassificationData) -> Result<ModelConfig> {
    let arch: Arch = config.model.arch;
    let set = &data.train_set;
    Ok(ModelConfig::new(
        arch,
        [set.channels, set.height, set.width],
        set.num_classes,
        config.model.base_channels,
    ))
}

/// A training-time input perturbation: the defense baselines the regularizer is compared
/// with (Gaussian-noise augmentation, FGSM/PGD adversarial training).
enum Defense {
    Noise(GaussianAugmentation),
    Adversarial(Pgd),
}

/// A [`Defense`] applied to the first `⌈fraction·B⌉` images of every batch (batches are
/// shuffled, so these are a random share of the data).
struct BatchDefense {
    defense: Defense,
    fraction: f64,
    /// The model-scale input box (the image of the unit range under the task's scaling).
    bounds: (f32, f32),
}

impl BatchDefense {
    fn from_config(t: &TrainingConfig, scale: ModelScale) -> Result<Option<Self>> {
        let bounds = (scale.offset, scale.offset + scale.scale);
        let (defense, fraction) = match (&t.noise_augmentation, &t.adversarial) {
            (Some(noise), _) => (
                Defense::Noise(GaussianAugmentation::new(noise.std)?),
                noise.fraction,
            ),
            (None, Some(adversarial)) => (
                Defense::Adversarial(adversarial.attack()?),
                adversarial.fraction,
            ),
            (None, None) => return Ok(None),
        };
        Ok(Some(Self {
            defense,
            fraction,
            bounds,
        }))
    }

    fn describe(&self) -> String {
        let what = match &self.defense {
            Defense::Noise(n) => format!("Gaussian-noise augmentation, σ {}", n.sigma),
            Defense::Adversarial(p) if p.steps == 1 && !p.random_start => {
                format!("FGSM adversarial training, ε {}", p.epsilon)
            }
            Defense::Adversarial(p) => format!(
                "PGD adversarial training, L∞ ε {}, {} steps of {} ε",
                p.epsilon, p.steps, p.rel_stepsize
            ),
        };
        format!(
            "defense: {what}, on {} % of every batch",
            100.0 * self.fraction
        )
    }

    /// The batch the model trains on; `seed` must differ between steps.
    fn apply(&self, model: &ResNet, images: &Tensor, labels: &Tensor, seed: u64) -> Result<Tensor> {
        let n = images.dim(0)?;
        let m = ((self.fraction * n as f64).ceil() as usize).min(n);
        if m == 0 {
            return Ok(images.clone());
        }
        let head = images.narrow(0, 0, m)?;
        let perturbed = match &self.defense {
            Defense::Noise(noise) => noise.apply(&head, self.bounds, seed)?,
            Defense::Adversarial(attack) => {
                let y: Vec<u32> = labels.narrow(0, 0, m)?.to_dtype(DType::U32)?.to_vec1()?;
                let classifier = FnClassifier::new(
                    |x: &Tensor| model.forward_inference(x).map_err(candle_core::Error::wrap),
                    self.bounds,
                );
                attack.perturb(&classifier, &head, &y, seed)?
            }
        };
        if m == n {
            return Ok(perturbed);
        }
        Ok(Tensor::cat(&[&perturbed, &images.narrow(0, m, n - m)?], 0)?)
    }
}

/// Seed of the defense's draws at (epoch, step): distinct for every step of a run and
/// re-derived on resume.
fn step_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    [epoch as u64, step as u64]
        .iter()
        .fold(seed ^ 0xde7e_45e5, |h, &v| {
            (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
        })
}

fn finite(value: f64, what: &str, epoch: usize) -> Result<f64> {
    if !value.is_finite() {
        bail!("{what} became {value} in epoch {epoch}: training diverged (lower the learning rate or alpha)");
    }
    Ok(value)
}

/// Seed offset of the batches [`recalibrate_bn_statistics`] draws: apart from the training
/// and `eval_train` streams of the same run seed.
const RECALIBRATION_SEED: u64 = 0xb47c_4a11;

/// With `training.bn_recalibration_images` > 0, replaces the batch norms' running statistics
/// by their average over that many training images (whole batches of an epoch-`epoch`
/// draw, augmented as in training) before an evaluation; the weights stay as they are.
fn recalibrate_bn_statistics(
    model: &mut ResNet,
    config: &ExperimentConfig,
    data: &ClassificationData,
    epoch: usize,
    device: &Device,
) -> Result<()> {
    let t = &config.training;
    let images = t.bn_recalibration_images;
    if images == 0 {
        return Ok(());
    }
    let scale = data.model_scale()?;
    let batcher = data.train_batcher(t.batch_size, t.seed ^ RECALIBRATION_SEED, scale, device)?;
    let mut recalibration = model.recalibrate_bn_statistics();
    for batch in batcher.epoch(epoch as u64).take(images / t.batch_size) {
        recalibration.observe(&batch?.images)?;
    }
    recalibration.finish();
    Ok(())
}

/// Evaluates train (optional), validation and test sets; returns the metric line.
fn epoch_metrics(
    model: &ResNet,
    config: &ExperimentConfig,
    data: &ClassificationData,
    epoch: usize,
    device: &Device,
) -> Result<EpochMetrics> {
    let bs = config.training.batch_size;
    let scale = data.model_scale()?;
    let (mut train_loss, mut train_acc, mut valid_loss, mut valid_acc) = (None, None, None, None);
    if config.training.eval_train {
        let train = data.train_batcher(bs, config.training.seed ^ 0x7e57, scale, device)?;
        let (loss, acc) = evaluate(model, &train)?;
        train_loss = Some(finite(loss, "train loss", epoch)?);
        train_acc = Some(acc);
    }
    if !data.split.valid.is_empty() {
        let (loss, acc) = evaluate(model, &data.valid_batcher(bs, scale, device)?)?;
        valid_loss = Some(finite(loss, "validation loss", epoch)?);
        valid_acc = Some(acc);
    }
    let (loss, acc) = evaluate(model, &data.test_batcher(bs, scale, device)?)?;
    Ok(EpochMetrics {
        epoch,
        test_loss: finite(loss, "test loss", epoch)?,
        test_acc: acc,
        train_loss,
        train_acc,
        valid_loss,
        valid_acc,
        // When the evaluation ended (not reproducible; the TensorBoard wall time of the epoch).
        time: Some(crate::curves::unix_seconds()),
        epoch_seconds: None,
        lr: None,
        train_ce: None,
        reg_loss: None,
        score_target_corr: None,
        split_seconds: None,
    })
}

fn progress_bar(len: u64, quiet: bool, prefix: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// Trains (or resumes, or recognises as finished) the run of `config` under `runs_dir`,
/// holding the run's lock (a second process on the same run fails at once).
///
/// A run that fails before committing its first epoch leaves no folder behind.
pub fn train(
    config: &ExperimentConfig,
    runs_dir: &Path,
    data: &DataSource,
    options: TrainOptions,
) -> Result<TrainOutcome> {
    let run = RunDir::new(runs_dir, &config.run_id()?);
    let lock = run.lock()?;
    let mut previous = run.state()?;
    if let Some(state) = previous.as_mut() {
        run.migrate_legacy(state)?;
        if state.status == RunStatus::Finished {
            return Ok(TrainOutcome {
                run,
                state: state.clone(),
                already_finished: true,
                data: None,
                lock,
            });
        }
        run.remove_uncommitted(Some(state))?;
        run.check_committed_files(state)?;
    } else {
        // Nothing was committed: whatever a killed or failed start left is garbage.
        run.remove()?;
    }
    let result = train_locked(config, &run, previous, data, options);
    match result {
        Ok((state, data)) => Ok(TrainOutcome {
            run,
            state,
            already_finished: false,
            data: Some(data),
            lock,
        }),
        Err(err) => {
            if run.state().ok().flatten().is_none() {
                // Best effort: the error below is the one to report.
                let _ = run.remove();
            }
            Err(err)
        }
    }
}

/// The initial state of a new run.
fn fresh_state(config: &ExperimentConfig) -> RunState {
    RunState {
        layout: RUN_LAYOUT,
        status: RunStatus::Running,
        completed_epochs: 0,
        best_epoch: 0,
        best_valid_loss: f64::INFINITY,
        sampler: None,
        seed: config.training.seed,
        train_seconds: 0.0,
        targets_seconds: None,
        peak_rss_mib: None,
    }
}

/// Commits one epoch: the epoch's weights, momentum and (if better) best checkpoint under
/// names that carry the epoch, then the metric lines, then `state.json` (the commit), then
/// the files the new state no longer names. See the `run_dir` module docs.
fn commit_epoch(
    run: &RunDir,
    model: &ResNet,
    optimizer: &SgdMomentum,
    state: &RunState,
    improved: bool,
    curves: &Curves,
    metadata: &[(String, String)],
) -> Result<()> {
    let epoch = state.completed_epochs;
    model.save_with_metadata(run.last_checkpoint_at(epoch), metadata)?;
    fault::maybe_kill("last", epoch);
    optimizer.save_state(run.optimizer_at(epoch))?;
    fault::maybe_kill("optimizer", epoch);
    if improved {
        model.save_with_metadata(run.best_checkpoint_at(epoch), metadata)?;
    }
    fault::maybe_kill("best", epoch);
    run.save_metrics(&curves.metrics)?;
    fault::maybe_kill("metrics", epoch);
    run.save_steps(&curves.steps)?;
    fault::maybe_kill("steps", epoch);
    curves::write_event_file(run, &curves.steps, &curves.metrics)?;
    fault::maybe_kill("events", epoch);
    run.save_state(state)?;
    fault::maybe_kill("state", epoch);
    run.remove_uncommitted(Some(state))?;
    fault::maybe_kill("cleanup", epoch);
    Ok(())
}

/// Seconds since `clock`, which restarts.
fn lap(clock: &mut Instant) -> f64 {
    let now = Instant::now();
    let seconds = now.duration_since(*clock).as_secs_f64();
    *clock = now;
    seconds
}

/// The committed training curves of a run: one metric line per evaluated epoch and the
/// logged steps ([`curves`]).
struct Curves {
    metrics: Vec<EpochMetrics>,
    steps: Vec<StepScalars>,
}

/// The body of [`train`], under the run's lock, after the folder was cleaned.
fn train_locked(
    config: &ExperimentConfig,
    run: &RunDir,
    previous: Option<RunState>,
    data_source: &DataSource,
    options: TrainOptions,
) -> Result<(RunState, ClassificationData)> {
    let data = load_task_data(config, data_source)?;
    if let Some(state) = previous.as_ref().filter(|s| s.status == RunStatus::Trained) {
        // Every epoch is committed: only the final evaluation is left.
        return Ok((state.clone(), data));
    }
    let mut trainer = Trainer::start_or_resume(config, run, previous, &data, data_source)?;
    let t = &config.training;
    let batcher = data.train_batcher(t.batch_size, t.seed, trainer.scale, &trainer.device)?;
    let first = trainer.state.completed_epochs;
    let end = options
        .max_epochs
        .map_or(t.epochs, |m| (first + m).min(t.epochs));
    let epochs_bar = progress_bar(t.epochs as u64, options.quiet, "epochs".into());
    epochs_bar.set_position(first as u64);
    for epoch in first..end {
        let started = Instant::now();
        let totals = trainer.train_epoch(epoch, &batcher, options.quiet)?;
        let summary = trainer.end_epoch(epoch, totals, started)?;
        if !options.quiet {
            epochs_bar.println(summary);
        }
        epochs_bar.inc(1);
    }
    epochs_bar.finish_and_clear();
    let state = trainer.state;
    Ok((state, data))
}

/// A run being trained: the model, its optimizer and regularizer, and what has been
/// committed. [`Trainer::train_epoch`] runs the steps of one epoch, [`Trainer::end_epoch`]
/// evaluates and commits it.
struct Trainer<'a> {
    config: &'a ExperimentConfig,
    run: &'a RunDir,
    data: &'a ClassificationData,
    device: Device,
    scale: ModelScale,
    model: ResNet,
    optimizer: SgdMomentum,
    reg: Option<RegState>,
    defense: Option<BatchDefense>,
    state: RunState,
    curves: Curves,
    /// What every checkpoint's safetensors header records besides the architecture.
    metadata: Vec<(String, String)>,
}

/// Sums over the steps of one epoch.
#[derive(Debug, Default)]
struct EpochTotals {
    lr: f64,
    steps: usize,
    ce: f64,
    reg: f64,
    corr: f64,
    /// Steps whose correlation was defined.
    corr_steps: usize,
    split: EpochSplit,
}

/// What one step measured.
struct StepStats {
    ce: f64,
    reg: Option<f64>,
    /// `None` where undefined (constant targets) or unregularized.
    corr: Option<f64>,
    /// Accuracy (%) on the step's batch, when asked for.
    batch_acc: Option<f64>,
}

impl StepStats {
    /// The progress-bar and log text: `ce 0.300 reg 0.027 corr 0.53` (`corr –` when
    /// undefined, e.g. targets of one sign only at Th 0.8).
    fn message(&self) -> String {
        let mut message = format!("ce {:.3}", self.ce);
        if let Some(r) = self.reg {
            let corr = self.corr.map_or("–".to_string(), |c| format!("{c:.2}"));
            message.push_str(&format!(" reg {r:.3} corr {corr}"));
        }
        message
    }
}

impl<'a> Trainer<'a> {
    /// Builds the model, optimizer and regularizer of a new run, or loads the committed
    /// epoch of an interrupted one (weights, momentum, sampler position, curves).
    fn start_or_resume(
        config: &'a ExperimentConfig,
        run: &'a RunDir,
        previous: Option<RunState>,
        data: &'a ClassificationData,
        data_source: &DataSource,
    ) -> Result<Self> {
        let device = parse_device(&config.device)?;
        let (recalibration, available) = (
            config.training.bn_recalibration_images,
            data.split.train.len(),
        );
        if recalibration > available {
            bail!("training.bn_recalibration_images = {recalibration} exceeds the {available} training images");
        }
        run.create()?;
        write_text(&run.config(), &toml::to_string_pretty(config)?)?;
        let model_cfg = model_config(config, data)?;
        model_cfg.save_json(run.model_json())?;

        let mut state = previous.unwrap_or_else(|| fresh_state(config));
        let resuming = state.completed_epochs > 0;
        let committed = run.committed_files(&state);
        let mut model = match &committed.last {
            Some(last) => {
                run.log(&format!("resuming after epoch {}", state.completed_epochs))?;
                ResNet::load(last, &model_cfg, &device)
                    .with_context(|| format!("resuming {}", run.root().display()))?
            }
            None => {
                run.log(&format!(
                    "run {} started: {}",
                    run.id(),
                    toml::to_string(config)?
                ))?;
                ResNet::new(&model_cfg, config.training.seed, &device)?
            }
        };
        if let Some(r) = &config.regularization {
            model.set_pair_updates_bn_statistics(r.pair_updates_bn_statistics);
        }
        let t = &config.training;
        let mut optimizer =
            SgdMomentum::new(model.named_parameters(), t.lr, t.momentum, t.weight_decay);
        if let Some(path) = &committed.optimizer {
            optimizer
                .load_state(path)
                .with_context(|| format!("resuming {}", run.root().display()))?;
        }
        let reg = match &config.regularization {
            Some(r) if r.alpha > 0.0 => Some(build_regularization(
                config,
                r,
                data,
                data_source,
                if resuming { state.sampler } else { None },
                &device,
                run,
            )?),
            _ => None,
        };
        state.targets_seconds = reg.as_ref().map(|r| r.targets_seconds);
        let scale = data.model_scale()?;
        let defense = BatchDefense::from_config(t, scale)?;
        if let Some(d) = &defense {
            run.log(&d.describe())?;
        }
        let metadata = crate::provenance::checkpoint_metadata(scale);
        let mut curves = Curves {
            metrics: run.metric_lines(state.completed_epochs)?,
            steps: run.step_lines(state.completed_epochs)?,
        };
        if !resuming {
            // Epoch 0 (the untrained model) is the first best checkpoint; it is committed
            // with epoch 1, so a crash before that restarts the run from scratch, identically.
            recalibrate_bn_statistics(&mut model, config, data, 0, &device)?;
            let line = epoch_metrics(&model, config, data, 0, &device)?;
            state.best_valid_loss = line.selection_loss();
            state.best_epoch = 0;
            model.save_with_metadata(run.best_checkpoint_at(0), &metadata)?;
            curves = Curves {
                metrics: vec![line],
                steps: Vec::new(),
            };
        }
        Ok(Self {
            config,
            run,
            data,
            device,
            scale,
            model,
            optimizer,
            reg,
            defense,
            state,
            curves,
            metadata,
        })
    }

    /// The steps of epoch `epoch` (from 0): every `display_every`-th one logged and kept as a
    /// curve point.
    fn train_epoch(
        &mut self,
        epoch: usize,
        batcher: &pixreg_datasets::Batcher<'_>,
        quiet: bool,
    ) -> Result<EpochTotals> {
        let t = &self.config.training;
        let lr = t.lr_at(epoch);
        self.optimizer.set_lr(lr);
        self.model.set_training(true);
        if let Some(r) = self.reg.as_mut() {
            r.sampler.restart_pass();
        }
        let steps_per_epoch = batcher.num_batches();
        let bar = progress_bar(
            steps_per_epoch as u64,
            quiet,
            format!("epoch {}/{}", epoch + 1, t.epochs),
        );
        let mut totals = EpochTotals {
            lr,
            ..EpochTotals::default()
        };
        let (mut window_start, mut window_steps) = (Instant::now(), 0usize);
        let mut batches = batcher.epoch(epoch as u64).enumerate();
        let _spinning = pixreg_models::kernels::SpinningThreads::start();
        loop {
            let mut clock = Instant::now();
            let Some((step, batch)) = batches.next() else {
                break;
            };
            let batch = batch?;
            totals.split.data += lap(&mut clock);
            let displayed = (step + 1) % t.display_every == 0;
            // With display_every beyond the epoch, its last step is kept, so that every epoch
            // has a curve point (otherwise not: the last batch is the short remainder).
            let last_of_short = step + 1 == steps_per_epoch && steps_per_epoch < t.display_every;
            let logged = displayed || last_of_short;
            let stats = self.step(epoch, step, &batch, logged, &mut totals.split, &mut clock)?;
            totals.steps += 1;
            totals.ce += stats.ce;
            totals.reg += stats.reg.unwrap_or(0.0);
            if let Some(c) = stats.corr {
                totals.corr += c;
                totals.corr_steps += 1;
            }
            window_steps += 1;
            let message = stats.message();
            if let Some(acc) = stats.batch_acc {
                self.curves.steps.push(StepScalars {
                    epoch: epoch + 1,
                    step: step + 1,
                    steps_per_epoch,
                    ce: stats.ce,
                    reg: stats.reg,
                    corr: stats.corr,
                    lr,
                    batch_acc: acc,
                    step_seconds: window_start.elapsed().as_secs_f64() / window_steps as f64,
                    time: curves::unix_seconds(),
                });
                (window_start, window_steps) = (Instant::now(), 0);
                if displayed {
                    self.run.log(&format!(
                        "epoch {}/{} step {}/{steps_per_epoch}: {message} batch acc {acc:.1} %",
                        epoch + 1,
                        t.epochs,
                        step + 1
                    ))?;
                }
            }
            bar.set_message(message);
            bar.inc(1);
            totals.split.bookkeeping += lap(&mut clock);
        }
        bar.finish_and_clear();
        Ok(totals)
    }

    /// One SGD step on `batch` (with the step's pairs and batch defense), timed into `split`.
    fn step(
        &mut self,
        epoch: usize,
        step: usize,
        batch: &pixreg_datasets::Batch,
        with_accuracy: bool,
        split: &mut EpochSplit,
        clock: &mut Instant,
    ) -> Result<StepStats> {
        let device = &self.device;
        let pair_tensors = match self.reg.as_mut() {
            Some(r) => {
                let b = r.sampler.next_batch()?;
                let rows = Tensor::new(b.rows.as_slice(), device)?;
                let cols = Tensor::new(b.cols.as_slice(), device)?;
                Some((
                    r.images.index_select(&rows, 0)?,
                    r.images.index_select(&cols, 0)?,
                    Tensor::new(b.targets.as_slice(), device)?,
                ))
            }
            None => None,
        };
        let regularization = match (&self.reg, &pair_tensors) {
            (Some(r), Some((a, b, targets))) => Some(Regularization {
                pairs: PairBatch { a, b, targets },
                alpha: r.alpha,
                criterion: r.criterion,
            }),
            _ => None,
        };
        split.pairs += lap(clock);
        let images = match &self.defense {
            Some(d) => d.apply(
                &self.model,
                &batch.images,
                &batch.labels,
                step_seed(self.config.training.seed, epoch, step),
            )?,
            None => batch.images.clone(),
        };
        split.defense += lap(clock);
        let out = self
            .model
            .training_step_loss(&images, &batch.labels, regularization)?;
        split.forward += lap(clock);
        let grads = out.loss.backward()?;
        split.backward += lap(clock);
        self.optimizer.step(&grads)?;
        split.optimizer += lap(clock);

        let ce = out.ce_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        finite(ce, "training loss", epoch + 1)?;
        let (mut reg, mut corr) = (None, None);
        if let (Some(reg_loss), Some(scores), Some((_, _, targets))) =
            (&out.reg_loss, &out.scores, &pair_tensors)
        {
            let r = reg_loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            reg = Some(finite(r, "regularization loss", epoch + 1)?);
            let c = score_target_correlation(scores, targets)?;
            corr = c.is_finite().then_some(c);
        }
        let batch_acc = if with_accuracy {
            let predicted: Vec<u32> = out.logits.argmax(1)?.to_vec1()?;
            let labels: Vec<u32> = batch.labels.to_dtype(DType::U32)?.to_vec1()?;
            let correct = predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
            Some(100.0 * correct as f64 / labels.len() as f64)
        } else {
            None
        };
        Ok(StepStats {
            ce,
            reg,
            corr,
            batch_acc,
        })
    }

    /// Evaluates epoch `epoch` (from 0), updates the state and commits the epoch; returns the
    /// summary line it logged.
    fn end_epoch(
        &mut self,
        epoch: usize,
        mut totals: EpochTotals,
        started: Instant,
    ) -> Result<String> {
        let t = &self.config.training;
        let evaluation = Instant::now();
        recalibrate_bn_statistics(
            &mut self.model,
            self.config,
            self.data,
            epoch + 1,
            &self.device,
        )?;
        let mut line = epoch_metrics(&self.model, self.config, self.data, epoch + 1, &self.device)?;
        totals.split.evaluation = evaluation.elapsed().as_secs_f64();
        let seconds = started.elapsed().as_secs_f64();
        let steps = totals.steps.max(1) as f64;
        let lr = totals.lr;
        line.split_seconds = Some(totals.split);
        line.lr = Some(lr);
        line.train_ce = Some(totals.ce / steps);
        if self.reg.is_some() {
            line.reg_loss = Some(totals.reg / steps);
            line.score_target_corr =
                Some((totals.corr_steps > 0).then(|| totals.corr / totals.corr_steps as f64));
        }
        line.epoch_seconds = Some(seconds);

        let state = &mut self.state;
        let loss = line.selection_loss();
        let improved = loss < state.best_valid_loss;
        if improved {
            state.best_valid_loss = loss;
            state.best_epoch = epoch + 1;
        }
        self.curves.metrics.push(line.clone());
        state.completed_epochs = epoch + 1;
        state.train_seconds += seconds;
        state.peak_rss_mib = match (state.peak_rss_mib, peak_rss_mib()) {
            (Some(before), Some(now)) => Some(before.max(now)),
            (before, now) => now.or(before),
        };
        state.sampler = self.reg.as_ref().map(|r| {
            let s = r.sampler.state();
            SamplerPosition {
                seed: s.seed,
                pass: s.pass,
                batch_in_pass: s.batch_in_pass,
            }
        });
        if state.completed_epochs == t.epochs {
            state.status = RunStatus::Trained;
        }
        commit_epoch(
            self.run,
            &self.model,
            &self.optimizer,
            &self.state,
            improved,
            &self.curves,
            &self.metadata,
        )?;
        let summary = format!(
            "epoch {}/{}: lr {lr:.5} {} test acc {:.2} % ({seconds:.1} s)",
            epoch + 1,
            t.epochs,
            line.valid_loss
                .map_or(String::new(), |v| format!("valid loss {v:.4}")),
            line.test_acc,
        );
        self.run.log(&summary)?;
        Ok(summary)
    }
}
