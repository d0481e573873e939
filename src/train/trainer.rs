//! One AdaMatch (or FixMatch, or source-only) optimizer step, entirely on the GPU.
//!
//! Per step the host uploads the u8 batches, each image's augmentation parameters, the
//! interpolation lambdas and the step's scalars (lr, mu, ...): small writes, no readback. The whole
//! step — augmentation, the two forward passes, the loss reductions, both backward passes, the
//! gradient check, the optimizer and the EMA — is recorded into one command encoder.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{image_bytes, ImageSource};
use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::adamatch::{
    AdaMatchLoss, AdaMatchLossConfig, Alignment, PseudoLabel, METRIC_C_TAU, METRIC_MASK_RATE, METRIC_MU,
    METRIC_SOURCE_LOSS, METRIC_TARGET_LOSS, METRIC_TOTAL_LOSS,
};
use crate::kernels::augment::{self, AugParams, StrongKind, Symmetries, WeakKind};
use crate::kernels::fixmatch::{FixMatchLoss, FixMatchLossConfig};
use crate::kernels::optimizer::{self, StepScalars};
use crate::kernels::softmax_ce::{softmax_ce_term, Targets};
use crate::network::{Pass, WideResNet, Workspace};
use crate::weights::Weights;

use super::config::{
    Algorithm, AlignmentKind, AugmentStyle, InvertViews, LrSchedule, Optimizer, PseudoLabels, SourcePassBn, TrainConfig,
};

/// Loss values and health of one step, read at the logging interval.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub total_loss: f32,
    pub source_loss: f32,
    pub target_loss: f32,
    pub mask_rate: f32,
    pub c_tau: f32,
    pub mu: f32,
    pub lr: f32,
    pub grad_norm: f32,
    /// A gradient was NaN or infinite, or the loss is.
    pub non_finite: bool,
    /// Distribution alignment ratio p_s / p_t of this step (AdaMatch): smallest and largest
    /// class entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align_ratio_min: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align_ratio_max: Option<f32>,
    /// Diagnosis only, where the target training set has labels (never used in training): the
    /// fraction of this step's target rows whose pseudo-label is right, and of the masked ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_label_acc: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked_pseudo_label_acc: Option<f32>,
}

/// Everything random about one step, drawn on the host: the images, labels, each view's
/// augmentation parameters and the logit-interpolation lambdas.
#[derive(Clone, Debug, Default)]
pub struct HostBatch {
    /// The L labeled images, u8 NHWC: B source images, then any labeled target images.
    pub source_images: Vec<u8>,
    pub labels: Vec<u32>,
    /// uB target images (empty for source-only).
    pub target_images: Vec<u8>,
    /// Their labels when the target set has them: for diagnostics only, never uploaded.
    pub target_labels: Vec<crate::data::Label>,
    /// Source weak, source strong, target weak, target strong.
    pub aug: [Vec<AugParams>; 4],
    /// [2B, classes] interpolation weights (AdaMatch only).
    pub lambdas: Vec<f32>,
}

enum Loss {
    AdaMatch(Box<AdaMatchLoss>),
    /// FixMatch on the joint pass alone.
    FixMatch(Box<FixMatchLoss>),
    /// Mean CE over the 2B source rows (labels repeated for both views).
    SourceOnly {
        ops: Vec<Op>,
        loss: Tensor,
        labels2: Tensor,
    },
}

/// A named group of consecutive ops of one step (see [`Trainer::step_phases`]).
pub struct StepPhase<'a> {
    pub name: &'static str,
    /// Part of the main (joint) pass's forward or backward: what `bench --step` compares the
    /// whole step with.
    pub main_pass: bool,
    pub ops: Vec<&'a Op>,
}

/// Optimizer state, same flat layout as the parameters.
pub enum OptState {
    Sgd { velocity: Tensor },
    Adam { m: Tensor, v: Tensor },
}

impl OptState {
    /// Named state tensors, for checkpoints.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            OptState::Sgd { velocity } => vec![("opt.velocity", velocity)],
            OptState::Adam { m, v } => vec![("opt.m", m), ("opt.v", v)],
        }
    }
}

/// The training state on the GPU and the host RNG, with every op of the step built once.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub net: WideResNet,
    /// The EMA copy used for evaluation (None: evaluate `net`).
    pub ema_net: Option<WideResNet>,
    /// Images of the (joint) pass: [src weak, src strong, tgt weak, tgt strong] for AdaMatch,
    /// [src weak, src strong] for source-only.
    main: Workspace,
    /// The AdaMatch source-only pass, reading the first 2B rows of `main`'s input.
    second: Option<Workspace>,
    src_pixels: Tensor,
    tgt_pixels: Tensor,
    /// Weak and strong parameters for source and target images.
    aug_params: [Tensor; 4],
    labels: Tensor,
    scalars: Tensor,
    grad_metrics: Tensor,
    loss: Loss,
    pub opt: OptState,
    aug_ops: Vec<Op>,
    /// Gradient check, optimizer and EMA, after the backward passes.
    update_ops: Vec<Op>,
    pub rng: ChaCha8Rng,
    /// Steps done.
    pub step: u64,
    last_lr: f32,
    /// The last step's target labels (diagnostics, see [`StepMetrics::pseudo_label_acc`]).
    last_target_labels: Vec<crate::data::Label>,
    /// The labeled target images of semi-supervised domain adaptation
    /// ([`Trainer::set_labeled_target`]).
    labeled_target: Option<crate::data::Dataset>,
    /// Batch-norm recalibration of the evaluation weights (`bn_calibration` batches), if on.
    calibration: Option<BnCalibration>,
}

/// The evaluation network with its batch-norm statistics recomputed for its own weights.
///
/// Running statistics are an average over the last ~1/(1 - momentum) steps, taken while the
/// weights moved; in a short run they no longer fit the final (or EMA) weights, and inference
/// with them falls far below training-mode accuracy (measured on real MNIST with the tiny preset:
/// 14.6% against 90.8% on the same images). Before each evaluation and the export, a copy of the
/// evaluation weights runs `batches` training-mode forward passes on fresh weak views of source
/// and target images (the training batch's source:target ratio) and its running statistics are
/// set to the mean of the batch statistics ("precise BN"). The training state is not touched.
struct BnCalibration {
    net: WideResNet,
    ws: Workspace,
    /// The first B rows of the trainer's labeled pixels and weak parameters (calibration draws
    /// source images only).
    source_pixels: Tensor,
    source_params: Tensor,
    /// Weak views of the source then the target images into `ws`'s input.
    aug_ops: Vec<Op>,
    batches: usize,
    /// The step `net` was last calibrated at: evaluating and exporting at one step (the end of
    /// a run) calibrate once. Cleared by anything that changes the weights or the data
    /// ([`Trainer::forget_calibration`]).
    done_at: Option<u64>,
}

/// Refuses a batch whose largest buffer (the first stage's activations of the main pass) the
/// adapter cannot hold, naming the flags and the limit, instead of a panic inside wgpu.
fn check_fits(ctx: &GpuContext, cfg: &TrainConfig) -> Result<()> {
    let n = &cfg.network;
    let rows = if cfg.algorithm.uses_target() {
        cfg.joint_batch()
    } else {
        2 * cfg.labeled_batch()
    };
    let channels = 16 * n.width.max(1);
    let bytes = rows as u128 * (n.image_size * n.image_size) as u128 * channels as u128 * 4;
    let l = &ctx.limits;
    let (limit, name) = if l.max_storage_buffer_binding_size < l.max_buffer_size {
        (l.max_storage_buffer_binding_size, "max_storage_buffer_binding_size")
    } else {
        (l.max_buffer_size, "max_buffer_size")
    };
    let params = crate::network::Architecture::new(n)?.params_len() as u128 * 4;
    if params > limit as u128 {
        bail!(
            "--depth {} --width {} has {:.1} MB of parameters in one buffer; this adapter allows {:.1} MB per \
             buffer ({name}). Use a smaller network.",
            n.depth,
            n.width,
            params as f64 / 1e6,
            limit as f64 / 1e6
        );
    }
    if bytes > limit as u128 {
        bail!(
            "--batch {} with --uratio {} is {rows} images per step, whose first-stage activations need a \
             {:.1} MB buffer; this adapter allows {:.1} MB per buffer ({name}). Lower --batch or --uratio.",
            cfg.batch,
            cfg.uratio,
            bytes as f64 / 1e6,
            limit as f64 / 1e6
        );
    }
    Ok(())
}

/// Indices of a batch: uniform with replacement over a finite source, any u64 for a stream.
fn draw_indices(rng: &mut ChaCha8Rng, source: &dyn ImageSource, n: usize) -> Vec<u64> {
    let len = source.len();
    (0..n)
        .map(|_| match len {
            Some(len) => rng.random_range(0..len as u64),
            None => rng.random::<u64>() >> 1,
        })
        .collect()
}

/// The first `n` of the `total` equal rows of `t`.
fn leading_rows(t: &Tensor, n: usize, total: usize) -> Tensor {
    Tensor {
        buffer: t.buffer.clone(),
        offset: t.offset,
        shape: vec![t.len() / total * n],
    }
}

/// The augmentation op writing the views of `n` images of side `size` into rows
/// `start..start + n` of `input`.
#[allow(clippy::too_many_arguments)]
fn augment_rows(
    ctx: &GpuContext,
    input: &Tensor,
    start: usize,
    n: usize,
    size: usize,
    pixels: &Tensor,
    params: &Tensor,
    scale: crate::input::InputScale,
) -> Op {
    let b = image_bytes(size);
    let rows = Tensor::view(&input.buffer, input.offset as usize / 4 + start * b, &[n * b]);
    augment::augment_images(ctx, n, size, pixels, params, &rows, scale)
}

impl Trainer {
    pub fn new(ctx: &GpuContext, cfg: TrainConfig) -> Result<Trainer> {
        cfg.validate()?;
        check_fits(ctx, &cfg)?;
        let s = cfg.network.image_size;
        let net = WideResNet::new(ctx, cfg.network.clone(), cfg.seed)?;
        let b = cfg.batch;
        // The labeled rows of each view: the B source images, then any labeled target images.
        let l = cfg.labeled_batch();
        let ub = cfg.target_batch();
        let classes = cfg.network.num_classes;
        let adamatch = cfg.algorithm == Algorithm::Adamatch;
        let uses_target = cfg.algorithm.uses_target();

        let main_rows = if uses_target { cfg.joint_batch() } else { 2 * l };
        let main = Workspace::new(ctx, &net, main_rows, false);
        let src_pixels = augment::image_tensor(ctx, "labeled pixels", l, s);
        let tgt_pixels = augment::image_tensor(ctx, "target pixels", ub, s);
        let aug_params = [
            augment::params_tensor(ctx, "labeled weak params", l),
            augment::params_tensor(ctx, "labeled strong params", l),
            augment::params_tensor(ctx, "target weak params", ub),
            augment::params_tensor(ctx, "target strong params", ub),
        ];
        let scale = cfg.input_scale;
        // The views go to rows [labeled weak, labeled strong, tgt weak, tgt strong] of the main
        // input.
        let mut aug_ops = vec![
            augment_rows(ctx, &main.input, 0, l, s, &src_pixels, &aug_params[0], scale),
            augment_rows(ctx, &main.input, l, l, s, &src_pixels, &aug_params[1], scale),
        ];
        if uses_target {
            aug_ops.push(augment_rows(
                ctx,
                &main.input,
                2 * l,
                ub,
                s,
                &tgt_pixels,
                &aug_params[2],
                scale,
            ));
            aug_ops.push(augment_rows(
                ctx,
                &main.input,
                2 * l + ub,
                ub,
                s,
                &tgt_pixels,
                &aug_params[3],
                scale,
            ));
        }
        let labels = Tensor::zeros(ctx, "labels", &[l]);
        let scalars = optimizer::step_scalars_tensor(ctx);

        let (second, loss) = if adamatch {
            let input = Tensor::view(&main.input.buffer, 0, &[2 * l, s, s, 3]);
            let second = Workspace::with_input(ctx, &net, input, false);
            let alignment = match cfg.alignment {
                // The official code starts both averages at uniform and always averages the full
                // 128-slot history.
                AlignmentKind::Paper => Alignment::Paper {
                    ema_momentum: 0.999,
                    history: 128,
                    prefill_uniform: true,
                },
                AlignmentKind::Keras => Alignment::Keras,
            };
            let lcfg = AdaMatchLossConfig {
                batch: b,
                uratio: cfg.uratio,
                classes,
                tau: cfg.tau,
                alignment,
                pseudo: match cfg.pseudo_labels {
                    PseudoLabels::Hard => PseudoLabel::Hard,
                    PseudoLabels::Soft => PseudoLabel::Soft,
                },
                source_scale: cfg.source_scale,
                labeled_target: cfg.labeled_target_batch,
            };
            let loss = AdaMatchLoss::new(
                ctx,
                &lcfg,
                &main.logits,
                &second.logits,
                &labels,
                &scalars,
                &main.d_logits,
                &second.d_logits,
            );
            (Some(second), Loss::AdaMatch(Box::new(loss)))
        } else if uses_target {
            let lcfg = FixMatchLossConfig {
                batch: l,
                uratio: cfg.uratio,
                classes,
                threshold: cfg.confidence,
            };
            let loss = FixMatchLoss::new(ctx, &lcfg, &main.logits, &labels, &main.d_logits);
            (None, Loss::FixMatch(Box::new(loss)))
        } else {
            let labels2 = Tensor::zeros(ctx, "labels x2", &[2 * l]);
            let weights = Tensor::from_f32(ctx, "row weights", &[2 * l], &vec![1.0; 2 * l]);
            let loss = Tensor::zeros(ctx, "loss", &[1]);
            let scale = cfg.source_scale / b as f32;
            let t = Targets::Hard(&labels2);
            let ops = softmax_ce_term(ctx, classes, &main.logits, t, &weights, scale, &loss, &main.d_logits);
            (None, Loss::SourceOnly { ops, loss, labels2 })
        };

        let p = net.params_len();
        let params = Tensor::view(&net.params, 0, &[p]);
        let grads = Tensor::view(&net.grads, 0, &[p]);
        let mask = Tensor::from_f32(ctx, "decay mask", &[p], &net.decay_mask());
        let grad_metrics = Tensor::zeros(ctx, "grad metrics", &[2]);
        let mut update_ops = optimizer::grad_check(ctx, &grads, &grad_metrics);
        let opt = match cfg.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                let velocity = Tensor::zeros(ctx, "sgd velocity", &[p]);
                update_ops.push(optimizer::sgd_step(
                    ctx, &params, &grads, &velocity, &mask, &scalars, momentum, nesterov,
                ));
                OptState::Sgd { velocity }
            }
            Optimizer::Adam { beta1, beta2, eps } => {
                let m = Tensor::zeros(ctx, "adam m", &[p]);
                let v = Tensor::zeros(ctx, "adam v", &[p]);
                update_ops.push(optimizer::adam_step(
                    ctx, &params, &grads, &m, &v, &mask, &scalars, beta1, beta2, eps,
                ));
                OptState::Adam { m, v }
            }
        };
        let ema_net = match cfg.ema {
            Some(decay) => {
                let ema = WideResNet::new(ctx, cfg.network.clone(), cfg.seed)?;
                let r = net.running_len();
                update_ops.push(optimizer::ema_update(
                    ctx,
                    &Tensor::view(&ema.params, 0, &[p]),
                    &params,
                    decay,
                ));
                update_ops.push(optimizer::ema_update(
                    ctx,
                    &Tensor::view(&ema.running, 0, &[r]),
                    &Tensor::view(&net.running, 0, &[r]),
                    decay,
                ));
                Some(ema)
            }
            None => None,
        };
        let calibration = match cfg.bn_calibration {
            0 => None,
            batches => {
                // Momentum 0: every pass leaves its own batch statistics, which the host averages.
                // The config keeps the real momentum so an exported file records it.
                let mut net_cfg = cfg.network.clone();
                net_cfg.bn_momentum = 0.0;
                let mut calib_net = WideResNet::new(ctx, net_cfg, cfg.seed)?;
                let rows = if uses_target { b + ub } else { b };
                let mut ws = Workspace::new(ctx, &calib_net, rows, false);
                ws.ops(ctx, &calib_net, Pass::ForwardTrain { update_running: true });
                calib_net.config.bn_momentum = cfg.network.bn_momentum;
                let source_pixels = leading_rows(&src_pixels, b, l);
                let source_params = leading_rows(&aug_params[0], b, l);
                let mut ops = vec![augment_rows(
                    ctx,
                    &ws.input,
                    0,
                    b,
                    s,
                    &source_pixels,
                    &source_params,
                    scale,
                )];
                if uses_target {
                    ops.push(augment_rows(
                        ctx,
                        &ws.input,
                        b,
                        ub,
                        s,
                        &tgt_pixels,
                        &aug_params[2],
                        scale,
                    ));
                }
                Some(BnCalibration {
                    net: calib_net,
                    ws,
                    source_pixels,
                    source_params,
                    aug_ops: ops,
                    batches,
                    done_at: None,
                })
            }
        };
        Ok(Trainer {
            calibration,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            net,
            ema_net,
            main,
            second,
            src_pixels,
            tgt_pixels,
            aug_params,
            labels,
            scalars,
            grad_metrics,
            loss,
            opt,
            aug_ops,
            update_ops,
            step: 0,
            last_lr: 0.0,
            last_target_labels: Vec::new(),
            labeled_target: None,
        })
    }

    /// The scalars of step `t` (0-based): lr, weight decay, Adam bias corrections, mu.
    pub fn scalars_at(&self, t: u64) -> StepScalars {
        let total = self.cfg.steps;
        let base = self.cfg.lr as f64;
        let lr = match self.cfg.lr_schedule {
            LrSchedule::PaperCosine => optimizer::lr_paper(base, t, total),
            LrSchedule::KerasCosine { alpha } => optimizer::lr_keras_cosine(base, t, total, alpha as f64),
            LrSchedule::Constant => base,
        };
        // SGD reads no bias corrections: 1 leaves a value that would be read unchanged.
        let (adam_bias1, adam_bias2) = match self.cfg.optimizer {
            Optimizer::Adam { beta1, beta2, .. } => (
                optimizer::bias_correction(beta1 as f64, t + 1),
                optimizer::bias_correction(beta2 as f64, t + 1),
            ),
            Optimizer::Sgd { .. } => (1.0, 1.0),
        };
        StepScalars {
            lr: lr as f32,
            weight_decay: self.cfg.weight_decay,
            adam_bias1,
            adam_bias2,
            mu: optimizer::mu_warmup(t, total) as f32,
            _pad0: 0.0,
            _pad1: 0.0,
            _pad2: 0.0,
        }
    }

    fn weak_kind(&self) -> WeakKind {
        match self.cfg.augment {
            AugmentStyle::Paper => WeakKind::Paper,
            AugmentStyle::Keras => WeakKind::Keras,
        }
    }

    /// The symmetries of the weak (`strong` false) or strong views.
    fn symmetries(&self, strong: bool) -> Symmetries {
        Symmetries {
            hflip: self.cfg.hflip,
            invert: match self.cfg.invert {
                InvertViews::None => false,
                InvertViews::Strong => strong,
                InvertViews::All => true,
            },
        }
    }

    fn strong_kind(&self) -> StrongKind {
        match self.cfg.augment {
            AugmentStyle::Paper => StrongKind::Paper,
            AugmentStyle::Keras => StrongKind::Keras,
        }
    }

    /// The labeled target images drawn from in semi-supervised domain adaptation (the config's
    /// `labeled_target_batch` per step); required when that is positive.
    pub fn set_labeled_target(&mut self, data: crate::data::Dataset) -> Result<()> {
        if data.labels.is_none() || data.is_empty() {
            bail!("{}: the labeled target set needs labeled images", data.name);
        }
        self.labeled_target = Some(data);
        Ok(())
    }

    /// Draws the next step's batch and random parameters from the host RNG, in a fixed order:
    /// source indices, labeled target indices (semi-supervised domain adaptation), target
    /// indices, the four views' augmentation parameters, the lambdas.
    pub fn draw_batch(&mut self, source: &dyn ImageSource, target: &dyn ImageSource) -> Result<HostBatch> {
        let b = self.cfg.batch;
        let t = self.cfg.labeled_target_batch;
        let l = b + t;
        let ub = self.cfg.target_batch();
        let uses_target = self.cfg.algorithm.uses_target();
        let size = self.cfg.network.image_size;
        let sources = [
            Some(source),
            self.labeled_target.as_ref().map(|d| d as &dyn ImageSource),
            uses_target.then_some(target),
        ];
        if let Some(other) = sources.into_iter().flatten().find(|d| d.image_size() != size) {
            bail!(
                "{} has {}x{} images; this run's network takes {size}x{size} (--image-size)",
                other.describe(),
                other.image_size(),
                other.image_size()
            );
        }
        let src_idx = draw_indices(&mut self.rng, source, b);
        let labeled_idx = match (&self.labeled_target, t) {
            (_, 0) => Vec::new(),
            (Some(d), _) => draw_indices(&mut self.rng, d, t),
            (None, _) => bail!("semi-supervised domain adaptation needs its labeled target images"),
        };
        let tgt_idx = if uses_target {
            draw_indices(&mut self.rng, target, ub)
        } else {
            Vec::new()
        };
        let mut batch = HostBatch::default();
        let mut labels = Vec::with_capacity(l);
        source.gather(&src_idx, &mut batch.source_images, &mut labels);
        if labels.len() != b {
            bail!("the source domain {} has no labels", source.describe());
        }
        if let Some(d) = &self.labeled_target {
            d.gather(&labeled_idx, &mut batch.source_images, &mut labels);
        }
        batch.labels = labels.iter().map(|&l| l as u32).collect();
        if uses_target {
            target.gather(&tgt_idx, &mut batch.target_images, &mut batch.target_labels);
        }
        let (weak, strong) = (self.weak_kind(), self.strong_kind());
        let (weak_sym, strong_sym) = (self.symmetries(false), self.symmetries(true));
        let views: [(usize, bool); 4] = [(l, false), (l, true), (ub, false), (ub, true)];
        for (i, (n, is_strong)) in views.into_iter().enumerate() {
            if i >= 2 && !uses_target {
                break;
            }
            batch.aug[i] = (0..n)
                .map(|_| {
                    if is_strong {
                        augment::draw_strong(&mut self.rng, size, strong, strong_sym)
                    } else {
                        augment::draw_weak(&mut self.rng, size, weak, weak_sym)
                    }
                })
                .collect();
        }
        if let Loss::AdaMatch(loss) = &self.loss {
            batch.lambdas = (0..loss.lambdas.len()).map(|_| self.rng.random::<f32>()).collect();
        }
        Ok(batch)
    }

    /// Uploads a batch and the scalars of the current step (small writes, no readback).
    fn upload_batch(&mut self, ctx: &GpuContext, batch: &HostBatch) -> Result<()> {
        let classes = self.cfg.network.num_classes;
        if let Some(bad) = batch.labels.iter().find(|&&l| l as usize >= classes) {
            bail!("source label {bad} is out of range for {classes} classes");
        }
        augment::write_images(ctx, &self.src_pixels, &batch.source_images);
        ctx.queue.write_buffer(
            &self.labels.buffer,
            self.labels.offset,
            bytemuck::cast_slice(&batch.labels),
        );
        for (t, params) in self.aug_params.iter().zip(&batch.aug) {
            if !params.is_empty() {
                augment::write_params(ctx, t, params);
            }
        }
        match &self.loss {
            Loss::AdaMatch(loss) => {
                augment::write_images(ctx, &self.tgt_pixels, &batch.target_images);
                loss.lambdas.write_f32(ctx, &batch.lambdas);
            }
            Loss::FixMatch(_) => augment::write_images(ctx, &self.tgt_pixels, &batch.target_images),
            Loss::SourceOnly { labels2, .. } => {
                let both: Vec<u32> = batch.labels.iter().chain(&batch.labels).copied().collect();
                ctx.queue
                    .write_buffer(&labels2.buffer, labels2.offset, bytemuck::cast_slice(&both));
            }
        }
        let scalars = self.scalars_at(self.step);
        self.last_lr = scalars.lr;
        self.last_target_labels.clone_from(&batch.target_labels);
        optimizer::write_step_scalars(ctx, &self.scalars, &scalars);
        Ok(())
    }

    /// Replaces the (fresh) network's parameters and running statistics with `w`'s, which must
    /// describe the same network and input scaling. Call before [`Trainer::init_ema`].
    pub fn load_weights(&self, ctx: &GpuContext, w: &Weights) -> Result<()> {
        // The tensors do not depend on the image side (global pooling before the head), so
        // weights trained at one side start a run at another.
        let at_this_side = crate::network::WideResNetConfig {
            image_size: self.cfg.network.image_size,
            ..w.config.clone()
        };
        if at_this_side != self.cfg.network {
            bail!(
                "the weights are a {} network, this run trains a {}: give the weights' architecture \
                 (--depth, --width, ...) or the preset it was trained with",
                w.config.describe(),
                self.cfg.network.describe()
            );
        }
        if w.input_scale != self.cfg.input_scale {
            bail!(
                "the weights expect input scaling '{}', this run uses '{}'",
                w.input_scale.name(),
                self.cfg.input_scale.name()
            );
        }
        ctx.queue
            .write_buffer(&self.net.params, 0, bytemuck::cast_slice(&w.params));
        ctx.queue
            .write_buffer(&self.net.running, 0, bytemuck::cast_slice(&w.running));
        Ok(())
    }

    /// Forgets the batch-norm calibration made at this step: the weights or the data it was
    /// drawn from changed.
    pub fn forget_calibration(&mut self) {
        if let Some(cal) = &mut self.calibration {
            cal.done_at = None;
        }
    }

    /// Copies the raw weights into the EMA copy (at the start of a run).
    pub fn init_ema(&self, ctx: &GpuContext) {
        if let Some(ema) = &self.ema_net {
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&self.net.params, 0, &ema.params, 0, self.net.params.size());
            encoder.copy_buffer_to_buffer(&self.net.running, 0, &ema.running, 0, self.net.running.size());
            ctx.queue.submit([encoder.finish()]);
        }
    }

    /// Runs one optimizer step on a batch drawn from the RNG (submitted, not waited for).
    pub fn step(&mut self, ctx: &GpuContext, source: &dyn ImageSource, target: &dyn ImageSource) -> Result<()> {
        let batch = self.draw_batch(source, target)?;
        self.step_with(ctx, &batch)
    }

    /// The passes of one step: (main forward, second forward, main backward, second backward).
    fn pass_kinds(&self) -> (Pass, Pass, Pass, Pass) {
        let second_batch_stats = self.cfg.source_pass_bn == SourcePassBn::Train;
        let second_fwd = if second_batch_stats {
            Pass::ForwardTrain { update_running: false }
        } else {
            Pass::ForwardInference
        };
        (
            Pass::ForwardTrain { update_running: true },
            second_fwd,
            Pass::Backward {
                batch_stats: true,
                accumulate: false,
            },
            Pass::Backward {
                batch_stats: second_batch_stats,
                accumulate: true,
            },
        )
    }

    /// Every op of one step in recording order, grouped in phases (built on the first call).
    /// [`Trainer::step_with`] records exactly these; `bench --step` times them one by one.
    pub fn step_phases(&mut self, ctx: &GpuContext) -> Vec<StepPhase<'_>> {
        let (main_fwd, second_fwd, main_bwd, second_bwd) = self.pass_kinds();
        self.main.ops(ctx, &self.net, main_fwd);
        self.main.ops(ctx, &self.net, main_bwd);
        if let Some(second) = &mut self.second {
            second.ops(ctx, &self.net, second_fwd);
            second.ops(ctx, &self.net, second_bwd);
        }
        fn built(ws: &Workspace, pass: Pass) -> Vec<&Op> {
            ws.built_ops(pass).expect("pass built above").iter().collect()
        }
        fn phase<'a>(name: &'static str, main_pass: bool, ops: Vec<&'a Op>) -> StepPhase<'a> {
            StepPhase { name, main_pass, ops }
        }
        let joint = self.cfg.algorithm.uses_target();
        let mut phases = vec![
            phase("augment", false, self.aug_ops.iter().collect()),
            phase(
                if joint { "forward (joint)" } else { "forward (source)" },
                true,
                built(&self.main, main_fwd),
            ),
        ];
        if let Some(second) = &self.second {
            phases.push(phase("forward (source)", false, built(second, second_fwd)));
        }
        let loss_ops = match &self.loss {
            Loss::AdaMatch(l) => l.ops(),
            Loss::FixMatch(l) => l.ops(),
            Loss::SourceOnly { ops, .. } => ops.as_slice(),
        };
        phases.push(phase("loss", false, loss_ops.iter().collect()));
        phases.push(phase(
            if joint { "backward (joint)" } else { "backward (source)" },
            true,
            built(&self.main, main_bwd),
        ));
        if let Some(second) = &self.second {
            phases.push(phase("backward (source)", false, built(second, second_bwd)));
        }
        phases.push(phase("update", false, self.update_ops.iter().collect()));
        phases
    }

    /// Runs one optimizer step on the given batch (submitted, not waited for).
    pub fn step_with(&mut self, ctx: &GpuContext, batch: &HostBatch) -> Result<()> {
        self.forget_calibration();
        self.upload_batch(ctx, batch)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for phase in self.step_phases(ctx) {
                for op in phase.ops {
                    op.record(&mut pass);
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
        self.step += 1;
        Ok(())
    }

    /// [`Trainer::metrics_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn metrics(&self, ctx: &GpuContext) -> Result<StepMetrics> {
        pollster::block_on(self.metrics_async(ctx))
    }

    /// Reads the last step's metrics (waits for the GPU; call at the logging interval only).
    pub async fn metrics_async(&self, ctx: &GpuContext) -> Result<StepMetrics> {
        let g = self.grad_metrics.read_f32_async(ctx).await?;
        let mut m = StepMetrics {
            step: self.step,
            lr: self.last_lr,
            grad_norm: g[0].sqrt(),
            non_finite: g[1] != 0.0,
            ..Default::default()
        };
        let (metrics, pseudo_mask) = match &self.loss {
            Loss::AdaMatch(l) => {
                let align = l.align.read_f32_async(ctx).await?;
                let ratio = &align[..l.config.classes];
                m.align_ratio_min = Some(ratio.iter().copied().fold(f32::INFINITY, f32::min));
                m.align_ratio_max = Some(ratio.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                (&l.metrics, Some((&l.pseudo, &l.mask)))
            }
            Loss::FixMatch(l) => (&l.metrics, Some((&l.pseudo, &l.mask))),
            Loss::SourceOnly { loss, .. } => (loss, None),
        };
        let v = metrics.read_f32_async(ctx).await?;
        let Some((pseudo, mask)) = pseudo_mask else {
            m.total_loss = v[0];
            m.source_loss = v[0];
            m.non_finite |= !m.total_loss.is_finite();
            return Ok(m);
        };
        m.total_loss = v[METRIC_TOTAL_LOSS];
        m.source_loss = v[METRIC_SOURCE_LOSS];
        m.target_loss = v[METRIC_TARGET_LOSS];
        m.mask_rate = v[METRIC_MASK_RATE];
        m.c_tau = v[METRIC_C_TAU];
        m.mu = v[METRIC_MU];
        let truth = &self.last_target_labels;
        if !truth.is_empty() {
            let pseudo = ctx
                .read_bytes_async(&pseudo.buffer, pseudo.offset, pseudo.bytes())
                .await?;
            let pseudo: Vec<u32> = bytemuck::pod_collect_to_vec(&pseudo);
            let mask = mask.read_f32_async(ctx).await?;
            let right = |masked_only: bool| {
                let rows = truth.iter().zip(&pseudo).zip(&mask);
                let rows: Vec<bool> = rows
                    .filter(|(_, &w)| !masked_only || w > 0.0)
                    .map(|((&t, &p), _)| t as u32 == p)
                    .collect();
                (!rows.is_empty()).then(|| rows.iter().filter(|&&r| r).count() as f32 / rows.len() as f32)
            };
            m.pseudo_label_acc = right(false);
            m.masked_pseudo_label_acc = right(true);
        }
        m.non_finite |= !m.total_loss.is_finite();
        Ok(m)
    }

    /// The network used for evaluation and export: the EMA copy when there is one.
    pub fn eval_net(&self) -> &WideResNet {
        self.ema_net.as_ref().unwrap_or(&self.net)
    }

    /// [`Trainer::calibrated_eval_net_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn calibrated_eval_net(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<&WideResNet> {
        pollster::block_on(self.calibrated_eval_net_async(ctx, source, target))
    }

    /// The network to evaluate and export now: [`Trainer::eval_net`], or with `bn_calibration`
    /// a copy of it whose batch-norm statistics are recomputed for its weights (see
    /// [`BnCalibration`]). The batches come from their own RNG, seeded by the run's seed and the
    /// step, so training draws the same batches with or without calibration.
    pub async fn calibrated_eval_net_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<&WideResNet> {
        let (weak, sym, b) = (self.weak_kind(), self.symmetries(false), self.cfg.batch);
        let size = self.cfg.network.image_size;
        let ub = if self.cfg.algorithm.uses_target() {
            self.cfg.target_batch()
        } else {
            0
        };
        let Some(cal) = &mut self.calibration else {
            return Ok(self.ema_net.as_ref().unwrap_or(&self.net));
        };
        if cal.done_at == Some(self.step) {
            return Ok(&cal.net);
        }
        let eval = self.ema_net.as_ref().unwrap_or(&self.net);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&eval.params, 0, &cal.net.params, 0, eval.params.size());
        ctx.queue.submit([encoder.finish()]);
        let mut rng = ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0x6361_6c69_6272_6174 ^ self.step.rotate_left(32));
        let running = Tensor::view(&cal.net.running, 0, &[cal.net.running_len()]);
        let mut sum = vec![0f64; running.len()];
        for _ in 0..cal.batches {
            let (mut images, mut labels) = (Vec::new(), Vec::new());
            source.gather(&draw_indices(&mut rng, source, b), &mut images, &mut labels);
            augment::write_images(ctx, &cal.source_pixels, &images);
            let params: Vec<AugParams> = (0..b).map(|_| augment::draw_weak(&mut rng, size, weak, sym)).collect();
            augment::write_params(ctx, &cal.source_params, &params);
            if ub > 0 {
                images.clear();
                target.gather(&draw_indices(&mut rng, target, ub), &mut images, &mut labels);
                augment::write_images(ctx, &self.tgt_pixels, &images);
                let params: Vec<AugParams> = (0..ub).map(|_| augment::draw_weak(&mut rng, size, weak, sym)).collect();
                augment::write_params(ctx, &self.aug_params[2], &params);
            }
            let mut ops: Vec<&Op> = cal.aug_ops.iter().collect();
            ops.extend(
                cal.ws
                    .built_ops(Pass::ForwardTrain { update_running: true })
                    .expect("built in Trainer::new"),
            );
            ctx.submit(&ops);
            for (s, v) in sum.iter_mut().zip(running.read_f32_async(ctx).await?) {
                *s += v as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / cal.batches as f64) as f32).collect();
        running.write_f32(ctx, &mean);
        cal.done_at = Some(self.step);
        Ok(&cal.net)
    }

    /// The metadata of an exported weights file besides the network and input scaling: the
    /// step, preset, which weights (EMA or raw), the calibration and the class names.
    pub fn export_metadata(&self, classes: &[String]) -> Result<BTreeMap<String, String>> {
        let cfg = &self.cfg;
        let mut extra = BTreeMap::new();
        extra.insert("step".to_string(), self.step.to_string());
        extra.insert("preset".to_string(), cfg.preset.clone());
        let which = if cfg.ema.is_some() { "ema" } else { "raw" };
        extra.insert("weights".to_string(), which.to_string());
        if cfg.bn_calibration > 0 {
            extra.insert("bn_calibration".to_string(), cfg.bn_calibration.to_string());
        }
        extra.insert("classes".to_string(), serde_json::to_string(classes)?);
        Ok(extra)
    }

    /// The weights file (`.safetensors` bytes) `train` writes as `model.safetensors` at this
    /// step: the calibrated evaluation network with [`Trainer::export_metadata`].
    pub async fn export_weights_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
        classes: &[String],
    ) -> Result<Vec<u8>> {
        let extra = self.export_metadata(classes)?;
        let scale = self.cfg.input_scale;
        let net = self.calibrated_eval_net_async(ctx, source, target).await?;
        let params = net.read_params_async(ctx).await?;
        let running = net.read_running_async(ctx).await?;
        crate::weights::to_bytes(net, &params, &running, scale, &extra)
    }

    /// Every piece of GPU state a checkpoint must hold, by name (flat f32 tensors).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "params".to_string(),
                Tensor::view(&self.net.params, 0, &[self.net.params_len()]),
            ),
            (
                "running".to_string(),
                Tensor::view(&self.net.running, 0, &[self.net.running_len()]),
            ),
        ];
        for (name, t) in self.opt.tensors() {
            out.push((name.to_string(), t.clone()));
        }
        if let Some(ema) = &self.ema_net {
            out.push(("ema.params".into(), Tensor::view(&ema.params, 0, &[ema.params_len()])));
            out.push((
                "ema.running".into(),
                Tensor::view(&ema.running, 0, &[ema.running_len()]),
            ));
        }
        if let Loss::AdaMatch(l) = &self.loss {
            for (name, t) in l.state_tensors() {
                out.push((name.to_string(), t.clone()));
            }
        }
        out
    }
}
