//! The step's loss, one of three, as a part: its ops, what it uploads per step, what it reports
//! and the state a checkpoint keeps. Every difference between AdaMatch, FixMatch and
//! source-only training in the step lives here. (An enum rather than a trait object: reading the
//! metrics is async, for the browser, and async methods do not make object-safe traits.)

use anyhow::Result;

use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::adamatch::{AdaMatchLoss, AdaMatchLossConfig, Alignment, LossMetrics, PseudoLabel};
use crate::kernels::fixmatch::{FixMatchLoss, FixMatchLossConfig};
use crate::kernels::softmax_ce::{softmax_ce_term, Targets};
use crate::network::{WideResNet, Workspace};

use super::batch::HostBatch;
use super::config::{Algorithm, AlignmentKind, PseudoLabels, TrainConfig};
use super::step_metrics::StepMetrics;

pub(super) enum StepLoss {
    /// With the source-only pass (`second`) that reads the first 2L rows of the main input.
    AdaMatch {
        loss: Box<AdaMatchLoss>,
        second: Box<Workspace>,
    },
    /// FixMatch on the joint pass alone.
    FixMatch(Box<FixMatchLoss>),
    /// Mean CE over the 2L labeled rows (labels repeated for both views).
    SourceOnly {
        ops: Vec<Op>,
        loss: Tensor,
        labels2: Tensor,
    },
}

/// Images in the second (source-only) pass of a step of `cfg`: both views of the labeled
/// batch (AdaMatch's source logits with the batch-norm statistics of the source alone); None
/// for the algorithms without that pass.
pub(super) fn second_pass_rows(cfg: &TrainConfig) -> Option<usize> {
    (cfg.algorithm == Algorithm::Adamatch).then(|| 2 * cfg.labeled_batch())
}

impl StepLoss {
    /// The loss of `cfg.algorithm` over `main`'s logits, reading `labels` and the step's
    /// `scalars` (mu), writing `main`'s logit gradients (and the second pass's).
    pub(super) fn new(
        ctx: &GpuContext,
        cfg: &TrainConfig,
        net: &WideResNet,
        main: &Workspace,
        labels: &Tensor,
        scalars: &Tensor,
    ) -> StepLoss {
        let (b, l, classes) = (cfg.batch, cfg.labeled_batch(), cfg.network.num_classes);
        match cfg.algorithm {
            Algorithm::Adamatch => {
                let s = cfg.network.image_size;
                let rows = second_pass_rows(cfg).expect("AdaMatch has a second pass");
                let input = Tensor::view(&main.input.buffer, 0, &[rows, s, s, 3]);
                let second = Workspace::with_input(ctx, net, input, false);
                let lcfg = AdaMatchLossConfig {
                    batch: b,
                    uratio: cfg.uratio,
                    classes,
                    tau: cfg.tau,
                    alignment: match cfg.alignment {
                        // The official code starts both averages at uniform and always averages
                        // the full 128-slot history.
                        AlignmentKind::Paper => Alignment::Paper {
                            ema_momentum: 0.999,
                            history: 128,
                            prefill_uniform: true,
                        },
                        AlignmentKind::Keras => Alignment::Keras,
                    },
                    pseudo: match cfg.pseudo_labels {
                        PseudoLabels::Hard => PseudoLabel::Hard,
                        PseudoLabels::Soft => PseudoLabel::Soft,
                    },
                    source_scale: cfg.source_scale,
                    labeled_target: cfg.labeled_target_batch,
                };
                let (z, dz) = (&main.logits, &main.d_logits);
                let loss = AdaMatchLoss::new(ctx, &lcfg, z, &second.logits, labels, scalars, dz, &second.d_logits);
                StepLoss::AdaMatch {
                    loss: Box::new(loss),
                    second: Box::new(second),
                }
            }
            Algorithm::Fixmatch => {
                let lcfg = FixMatchLossConfig {
                    batch: l,
                    uratio: cfg.uratio,
                    classes,
                    threshold: cfg.confidence,
                };
                StepLoss::FixMatch(Box::new(FixMatchLoss::new(
                    ctx,
                    &lcfg,
                    &main.logits,
                    labels,
                    &main.d_logits,
                )))
            }
            Algorithm::SourceOnly => {
                let labels2 = Tensor::zeros(ctx, "labels x2", &[2 * l]);
                let weights = Tensor::from_f32(ctx, "row weights", &[2 * l], &vec![1.0; 2 * l]);
                let loss = Tensor::zeros(ctx, "loss", &[1]);
                let scale = cfg.source_scale / b as f32;
                let t = Targets::Hard(&labels2);
                let ops = softmax_ce_term(ctx, classes, &main.logits, t, &weights, scale, &loss, &main.d_logits);
                StepLoss::SourceOnly { ops, loss, labels2 }
            }
        }
    }

    /// The second (source-only) pass of AdaMatch's step.
    pub(super) fn second_pass(&self) -> Option<&Workspace> {
        match self {
            StepLoss::AdaMatch { second, .. } => Some(second),
            _ => None,
        }
    }

    pub(super) fn second_pass_mut(&mut self) -> Option<&mut Workspace> {
        match self {
            StepLoss::AdaMatch { second, .. } => Some(second),
            _ => None,
        }
    }

    /// Interpolation weights a batch draws for this loss.
    pub(super) fn lambdas(&self) -> usize {
        match self {
            StepLoss::AdaMatch { loss, .. } => loss.lambdas.len(),
            _ => 0,
        }
    }

    pub(super) fn ops(&self) -> &[Op] {
        match self {
            StepLoss::AdaMatch { loss, .. } => loss.ops(),
            StepLoss::FixMatch(loss) => loss.ops(),
            StepLoss::SourceOnly { ops, .. } => ops,
        }
    }

    /// Writes what the loss reads of `batch` besides the images and labels.
    pub(super) fn upload(&self, ctx: &GpuContext, batch: &HostBatch) {
        match self {
            StepLoss::AdaMatch { loss, .. } => loss.lambdas.write_f32(ctx, &batch.lambdas),
            StepLoss::FixMatch(_) => {}
            StepLoss::SourceOnly { labels2, .. } => {
                let both: Vec<u32> = batch.labels.iter().chain(&batch.labels).copied().collect();
                ctx.queue
                    .write_buffer(&labels2.buffer, labels2.offset, bytemuck::cast_slice(&both));
            }
        }
    }

    /// Fills `m`'s loss fields from the last step, and with `truth` (the step's target labels,
    /// diagnostics only) how many of its pseudo-labels were right.
    pub(super) async fn read_metrics(
        &self,
        ctx: &GpuContext,
        m: &mut StepMetrics,
        truth: &[crate::data::Label],
    ) -> Result<()> {
        let (metrics, pseudo, mask) = match self {
            StepLoss::AdaMatch { loss, .. } => {
                let align = loss.align.read_f32_async(ctx).await?;
                let ratio = &align[..loss.config.classes];
                m.align_ratio_min = Some(ratio.iter().copied().fold(f32::INFINITY, f32::min));
                m.align_ratio_max = Some(ratio.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                (&loss.metrics, &loss.pseudo, &loss.mask)
            }
            StepLoss::FixMatch(loss) => (&loss.metrics, &loss.pseudo, &loss.mask),
            StepLoss::SourceOnly { loss, .. } => {
                let v = loss.read_f32_async(ctx).await?;
                m.loss.total_loss = v[0];
                m.loss.source_loss = v[0];
                return Ok(());
            }
        };
        let v = metrics.read_f32_async(ctx).await?;
        m.loss = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&v[..LossMetrics::FIELDS.len()]));
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
        Ok(())
    }

    /// The loss's state a checkpoint keeps (AdaMatch's alignment averages).
    pub(super) fn state_tensors(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            StepLoss::AdaMatch { loss, .. } => loss.state_tensors().to_vec(),
            _ => Vec::new(),
        }
    }
}
