//! Rust side of `shaders/fixmatch.wgsl`: the FixMatch loss of one step (Sohn et al. 2020), the
//! semi-supervised baseline the AdaMatch paper compares against, on AdaMatch's joint pass and
//! built on the softmax cross-entropy kernels of [`softmax_ce`](crate::kernels::softmax_ce).
//!
//! `loss = mean_B CE(src_weak, y) + mean_uB mask * CE(tgt_strong, argmax p(tgt_weak))`, with
//! `mask = max p(tgt_weak) >= threshold`: a fixed confidence threshold (0.95 in the FixMatch
//! paper), hard pseudo-labels, no distribution alignment, no logit interpolation and no warm-up
//! of the target weight. (The official AdaMatch repository's `fixmatch_da.py` adds distribution
//! alignment and uses 0.9; this is the plain method.) The metrics have the layout of
//! [`METRIC_NAMES`](crate::kernels::adamatch::METRIC_NAMES), with the threshold in the c_tau slot
//! and a target weight of 1.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::kernels::adamatch::{LossMetrics, METRIC_NAMES};
use crate::kernels::softmax_ce::{softmax_ce_term, Targets};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/fixmatch.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!("fixmatch.wgsl", &[("WG", WG)], &[Params::WGSL, LossMetrics::WGSL]);

const WG: u32 = 64;

/// The FixMatch paper's confidence threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixMatchLossConfig {
    /// Labeled source images per step (B).
    pub batch: usize,
    /// Unlabeled target images per source image (uB = uratio * B).
    pub uratio: usize,
    pub classes: usize,
    /// A target row trains on its pseudo-label when its weak view's top probability reaches this.
    pub threshold: f32,
}

impl FixMatchLossConfig {
    /// uB.
    pub fn target_rows(&self) -> usize {
        self.batch * self.uratio
    }

    /// Rows of the joint logits: 2B + 2uB.
    pub fn joint_rows(&self) -> usize {
        2 * self.batch + 2 * self.target_rows()
    }
}

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        batch: u32,
        target_rows: u32,
        classes: u32,
        threshold: f32,
    }
}

/// The loss of one FixMatch step, its ops built once for fixed tensors.
pub struct FixMatchLoss {
    pub config: FixMatchLossConfig,
    /// `[METRIC_NAMES.len()]`, rewritten by every step.
    pub metrics: Tensor,
    /// argmax of the target-weak rows `[uB]` (u32).
    pub pseudo: Tensor,
    /// Confidence mask `[uB]` (0 or 1).
    pub mask: Tensor,
    ops: Vec<Op>,
}

impl FixMatchLoss {
    /// Builds the step's ops. `joint_logits` `[2B + 2uB, C]`, `labels` `[B]` (u32); the ops
    /// write `d_joint` (same shape as `joint_logits`), overwriting it.
    pub fn new(
        ctx: &GpuContext,
        cfg: &FixMatchLossConfig,
        joint_logits: &Tensor,
        labels: &Tensor,
        d_joint: &Tensor,
    ) -> FixMatchLoss {
        let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
        assert!(
            b > 0 && ub > 0 && c > 0,
            "fixmatch loss: batch, uratio and classes must be positive"
        );
        let joint_len = cfg.joint_rows() * c;
        assert!(joint_len <= u32::MAX as usize, "fixmatch loss: joint logits too large");
        assert_eq!(joint_logits.len(), joint_len, "fixmatch loss: joint_logits size");
        assert_eq!(d_joint.len(), joint_len, "fixmatch loss: d_joint size");
        assert_eq!(labels.len(), b, "fixmatch loss: labels size");

        let t = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape);
        let metrics = t("fixmatch metrics", &[METRIC_NAMES.len()]);
        let target_strong = t("fixmatch target strong logits", &[ub, c]);
        let pseudo = t("fixmatch pseudo", &[ub]);
        let mask = t("fixmatch mask", &[ub]);
        let ones = Tensor::from_f32(ctx, "fixmatch source weights", &[b], &vec![1.0; b]);
        let source_loss = t("fixmatch source loss", &[1]);
        let target_loss = t("fixmatch target loss", &[1]);
        let d_source_weak = t("fixmatch d source weak", &[b, c]);
        let d_target_strong = t("fixmatch d target strong", &[ub, c]);
        // The source-weak rows come first: a view at the joint logits' own offset.
        let source_weak = Tensor {
            buffer: joint_logits.buffer.clone(),
            offset: joint_logits.offset,
            shape: vec![b, c],
        };

        let params = Params {
            batch: b as u32,
            target_rows: ub as u32,
            classes: c as u32,
            threshold: cfg.threshold,
        };
        let u = Some(bytemuck::bytes_of(&params));
        let shader = &SHADER;
        let detail = format!("B={b} uB={ub} C={c}");

        let mut ops = vec![Op::new(
            ctx,
            shader,
            "fixmatch_pseudo_labels",
            u,
            &[
                ("joint", joint_logits),
                ("target_strong", &target_strong),
                ("pseudo", &pseudo),
                ("mask", &mask),
            ],
            grid_1d(ub, WG),
        )];
        let source_targets = Targets::Hard(labels);
        let source_scale = 1.0 / b as f32;
        ops.extend(softmax_ce_term(
            ctx,
            c,
            &source_weak,
            source_targets,
            &ones,
            source_scale,
            &source_loss,
            &d_source_weak,
        ));
        let target_targets = Targets::Hard(&pseudo);
        let target_scale = 1.0 / ub as f32;
        ops.extend(softmax_ce_term(
            ctx,
            c,
            &target_strong,
            target_targets,
            &mask,
            target_scale,
            &target_loss,
            &d_target_strong,
        ));
        ops.push(Op::new(
            ctx,
            shader,
            "fixmatch_assemble_grads",
            u,
            &[
                ("d_source_weak", &d_source_weak),
                ("d_target_strong", &d_target_strong),
                ("d_joint", d_joint),
            ],
            grid_1d(joint_len, WG),
        ));
        ops.push(Op::new(
            ctx,
            shader,
            "fixmatch_metrics",
            u,
            &[
                ("mask", &mask),
                ("source_loss", &source_loss),
                ("target_loss", &target_loss),
                ("metrics", &metrics),
            ],
            [1, 1, 1],
        ));
        let ops = ops.into_iter().map(|op| op.with_detail(detail.clone())).collect();
        FixMatchLoss {
            config: *cfg,
            metrics,
            pseudo,
            mask,
            ops,
        }
    }

    /// Every dispatch of the step, in order, to record after the joint forward pass and before
    /// its backward pass.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}
