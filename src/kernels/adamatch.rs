//! Rust side of `shaders/adamatch.wgsl`: the AdaMatch loss of one step (REFERENCE.md, "The
//! AdaMatch step", steps 3-7) for the `paper` and `keras-example` presets, built on the softmax
//! cross-entropy kernels of [`softmax_ce`](crate::kernels::softmax_ce).
//!
//! Inputs each step: the joint logits `[2L + 2uB, C]` (rows labeled_weak, labeled_strong,
//! tgt_weak, tgt_strong), the source-pass logits `[2L, C]`, the labels `[L]`, the interpolation
//! weights [`AdaMatchLoss::lambdas`] `[2L, C]` (written by the host) and the per-step scalars (index
//! [`SCALAR_MU_INDEX`] is mu). Outputs: the gradients of the total loss w.r.t. both logit
//! tensors and [`AdaMatchLoss::metrics`] (see [`METRIC_NAMES`]), all on the device.
//!
//! L = B labeled rows per view in domain adaptation; in semi-supervised domain adaptation
//! (`labeled_target` = T > 0) the B source rows are followed by T labeled target rows, which join
//! the interpolation and the supervised loss (each labeled row weighs `source_scale / B`, so with
//! T = B the loss is the official SSDA code's `xe + xet`), while the alignment's source
//! distribution and c_tau come from the B source rows alone.
//!
//! Decisions beyond the reference text (the paper preset follows google-research/adamatch):
//! - The source EMA starts at the uniform distribution 1/C (objax `ExponentialMovingAverage`
//!   with `init_value = 1 / nclass`) and is updated before use: `ema += (1 - m) * (batch - ema)`.
//! - The target history is updated before use too. With `prefill_uniform: false` the ring starts
//!   empty and p_t is the mean of the batch means present (at most `history`); with `true` it
//!   starts full of 1/C, which is exactly objax `MovingAverage(buffer_size=128, init_value=1/C)`.
//! - Only the two cross-entropy terms carry gradient (y_tilde, pseudo-labels, mask and c_tau are
//!   step constants), so the target-weak rows of `d_joint` are exactly 0.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::kernels::optimizer::StepScalars;
use crate::kernels::softmax_ce::{softmax_ce_term, Targets};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/adamatch.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!(
    "adamatch.wgsl",
    &[("WG", WG), ("MU_INDEX", SCALAR_MU_INDEX as u32)],
    &[Params::WGSL, LossMetrics::WGSL]
);

const WG: u32 = 64;

/// Index of mu in the per-step scalars tensor ([`StepScalars`]).
pub const SCALAR_MU_INDEX: usize = std::mem::offset_of!(StepScalars, mu) / 4;

wgsl_struct! {
    /// What the AdaMatch and FixMatch steps report, written by their metrics kernels into
    /// [`AdaMatchLoss::metrics`] (one f32 each, in this order).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, serde::Serialize)]
    pub struct LossMetrics {
        /// `source_loss + mu * target_loss` (weight decay not included).
        pub total_loss: f32,
        /// The source cross-entropy term, scaled as the preset says.
        pub source_loss: f32,
        /// `(1/uB) * sum_i mask_i * CE_i`, not multiplied by mu.
        pub target_loss: f32,
        /// Fraction of target rows whose mask is 1.
        pub mask_rate: f32,
        /// The relative confidence threshold of the step (FixMatch: its fixed threshold).
        pub c_tau: f32,
        /// The target-loss weight read from the scalars (FixMatch: 1).
        pub mu: f32,
    }
}

/// Names of the entries of [`AdaMatchLoss::metrics`], in order.
pub const METRIC_NAMES: &[&str] = LossMetrics::FIELDS;
/// Indices of [`LossMetrics`]' fields in the metrics tensor.
pub const METRIC_TOTAL_LOSS: usize = std::mem::offset_of!(LossMetrics, total_loss) / 4;
pub const METRIC_SOURCE_LOSS: usize = std::mem::offset_of!(LossMetrics, source_loss) / 4;
pub const METRIC_TARGET_LOSS: usize = std::mem::offset_of!(LossMetrics, target_loss) / 4;
pub const METRIC_MASK_RATE: usize = std::mem::offset_of!(LossMetrics, mask_rate) / 4;
pub const METRIC_C_TAU: usize = std::mem::offset_of!(LossMetrics, c_tau) / 4;
pub const METRIC_MU: usize = std::mem::offset_of!(LossMetrics, mu) / 4;

/// How the target pseudo-label distribution is aligned with the source (step 4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alignment {
    /// ratio = (1e-6 + p_s) / (1e-6 + p_t), p_s an EMA of the source-weak batch means (initial
    /// value 1/C), p_t the mean of the last `history` target-weak batch means.
    Paper {
        ema_momentum: f32,
        history: usize,
        /// Start the history full of 1/C (objax) instead of empty (mean of the means present).
        prefill_uniform: bool,
    },
    /// Per-batch means, ratio = (p_s + 1e-8) / (p_t + 1e-8) clipped to [0.1, 10].
    Keras,
}

/// The target of the target-strong cross-entropy (step 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoLabel {
    /// argmax(y_tilde) (paper).
    Hard,
    /// y_tilde itself (keras-example).
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaMatchLossConfig {
    /// Labeled source images per step (B).
    pub batch: usize,
    /// Unlabeled target images per source image (uB = uratio * B).
    pub uratio: usize,
    pub classes: usize,
    /// Relative confidence threshold factor (0.9).
    pub tau: f32,
    pub alignment: Alignment,
    pub pseudo: PseudoLabel,
    /// Source loss = source_scale * (CE_weak + CE_strong), each a mean over B: 0.5 paper, 1 keras.
    pub source_scale: f32,
    /// Labeled target images per step (T), after the B source images in each labeled view; 0
    /// outside semi-supervised domain adaptation.
    pub labeled_target: usize,
}

impl AdaMatchLossConfig {
    /// The paper's loss: EMA 0.999 / 128-batch history alignment, hard pseudo-labels, source
    /// loss 0.5 * (CE_weak + CE_strong).
    pub fn paper(batch: usize, uratio: usize, classes: usize) -> Self {
        AdaMatchLossConfig {
            batch,
            uratio,
            classes,
            tau: 0.9,
            alignment: Alignment::Paper {
                ema_momentum: 0.999,
                history: 128,
                prefill_uniform: false,
            },
            pseudo: PseudoLabel::Hard,
            source_scale: 0.5,
            labeled_target: 0,
        }
    }

    /// The Keras example's loss: per-batch clipped alignment, soft pseudo-labels, source loss
    /// CE_weak + CE_strong.
    pub fn keras_example(batch: usize, uratio: usize, classes: usize) -> Self {
        AdaMatchLossConfig {
            batch,
            uratio,
            classes,
            tau: 0.9,
            alignment: Alignment::Keras,
            pseudo: PseudoLabel::Soft,
            source_scale: 1.0,
            labeled_target: 0,
        }
    }

    /// uB.
    pub fn target_rows(&self) -> usize {
        self.batch * self.uratio
    }

    /// Labeled rows per view (L): the B source images and the T labeled target images.
    pub fn labeled_rows(&self) -> usize {
        self.batch + self.labeled_target
    }

    /// Rows of the joint logits: 2L + 2uB.
    pub fn joint_rows(&self) -> usize {
        2 * self.labeled_rows() + 2 * self.target_rows()
    }

    /// Slots of the target history ring (1 for Keras, whose state is unused).
    pub fn history(&self) -> usize {
        match self.alignment {
            Alignment::Paper { history, .. } => history,
            Alignment::Keras => 1,
        }
    }
}

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        batch: u32,
        target_rows: u32,
        classes: u32,
        /// Ring length of the paper's target-mean history.
        history: u32,
        tau: f32,
        ema_momentum: f32,
        /// 0: paper alignment (EMA / history state); 1: Keras per-batch alignment with clipping.
        keras_alignment: u32,
        /// L: the labeled rows of each view (B, plus the labeled target images).
        labeled_rows: u32,
    }
}

/// Panics, naming the tensor, where the inputs of [`AdaMatchLoss::new`] do not fit `cfg` (a bug
/// in the caller).
fn check_inputs(cfg: &AdaMatchLossConfig, tensors: [&Tensor; 6]) {
    let [joint_logits, source_logits, labels, scalars, d_joint, d_source] = tensors;
    let history = cfg.history();
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let l = cfg.labeled_rows();
    assert!(
        b > 0 && ub > 0 && c > 0,
        "adamatch loss: batch, uratio and classes must be positive"
    );
    if let Alignment::Paper { ema_momentum, .. } = cfg.alignment {
        assert!(history > 0, "adamatch loss: the target history needs at least one slot");
        assert!(
            (0.0..=1.0).contains(&ema_momentum),
            "adamatch loss: EMA momentum must be in [0, 1]"
        );
    }
    let joint_len = cfg.joint_rows() * c;
    assert!(joint_len <= u32::MAX as usize, "adamatch loss: joint logits too large");
    assert_eq!(joint_logits.len(), joint_len, "adamatch loss: joint_logits size");
    assert_eq!(d_joint.len(), joint_len, "adamatch loss: d_joint size");
    assert_eq!(source_logits.len(), 2 * l * c, "adamatch loss: source_logits size");
    assert_eq!(d_source.len(), 2 * l * c, "adamatch loss: d_source size");
    assert_eq!(labels.len(), l, "adamatch loss: labels size");
    assert!(
        scalars.len() > SCALAR_MU_INDEX,
        "adamatch loss: scalars must hold mu at index 4"
    );
}

impl Params {
    fn of(cfg: &AdaMatchLossConfig) -> Params {
        let (ema_momentum, keras_alignment) = match cfg.alignment {
            Alignment::Paper { ema_momentum, .. } => (ema_momentum, 0),
            Alignment::Keras => (0.0, 1),
        };
        Params {
            batch: cfg.batch as u32,
            target_rows: cfg.target_rows() as u32,
            classes: cfg.classes as u32,
            history: cfg.history() as u32,
            tau: cfg.tau,
            ema_momentum,
            keras_alignment,
            labeled_rows: cfg.labeled_rows() as u32,
        }
    }
}

/// The loss of one AdaMatch step, its ops built once for fixed tensors.
pub struct AdaMatchLoss {
    pub config: AdaMatchLossConfig,
    /// Interpolation weights lambda `[2L, C]` in [0, 1): the host writes them before each step.
    pub lambdas: Tensor,
    /// `[METRIC_NAMES.len()]`, rewritten by every step.
    pub metrics: Tensor,
    /// Paper alignment state (persists across steps; save and restore it with a checkpoint, see
    /// [`AdaMatchLoss::state_tensors`]). Unused by the Keras alignment.
    /// EMA of the source-weak batch means `[C]`.
    pub p_source_ema: Tensor,
    /// Ring of target-weak batch means `[history, C]`; slot order is irrelevant to the mean.
    pub p_target_history: Tensor,
    /// `[2]`: next slot to write, slots filled (f32 holding small integers).
    pub history_state: Tensor,
    /// Intermediates, for inspection: interpolated labeled logits `[2L, C]`.
    pub z: Tensor,
    /// `[C + 1]`: the alignment ratio per class, then c_tau.
    pub align: Tensor,
    /// Aligned target distribution `[uB, C]`.
    pub y_tilde: Tensor,
    /// argmax of y_tilde `[uB]` (u32).
    pub pseudo: Tensor,
    /// Confidence mask `[uB]` (0 or 1).
    pub mask: Tensor,
    /// Gradient of the total loss w.r.t. z `[2L, C]`.
    pub dz: Tensor,
    work: Work,
    ops: Vec<Op>,
}

/// The loss's intermediates that only its own ops read.
struct Work {
    source_labels: Tensor,
    probs: Tensor,
    target_strong: Tensor,
    source_weights: Tensor,
    source_loss: Tensor,
    target_loss: Tensor,
    d_target_strong: Tensor,
}

impl AdaMatchLoss {
    /// Builds the step's ops. `joint_logits` `[2L + 2uB, C]`, `source_logits` `[2L, C]`, `labels`
    /// `[L]` (u32), `scalars` the per-step scalars (mu at [`SCALAR_MU_INDEX`]); the ops write
    /// `d_joint` (same shape as `joint_logits`) and `d_source` (same shape as `source_logits`),
    /// overwriting them. The alignment state starts reset.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        cfg: &AdaMatchLossConfig,
        joint_logits: &Tensor,
        source_logits: &Tensor,
        labels: &Tensor,
        scalars: &Tensor,
        d_joint: &Tensor,
        d_source: &Tensor,
    ) -> AdaMatchLoss {
        check_inputs(cfg, [joint_logits, source_logits, labels, scalars, d_joint, d_source]);
        let (ub, c) = (cfg.target_rows(), cfg.classes);
        let (l, history) = (cfg.labeled_rows(), cfg.history());
        let t = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape);
        let lambdas = t("adamatch lambdas", &[2 * l, c]);
        let metrics = t("adamatch metrics", &[METRIC_NAMES.len()]);
        let p_source_ema = t("adamatch p_source_ema", &[c]);
        let p_target_history = t("adamatch p_target_history", &[history, c]);
        let history_state = t("adamatch history_state", &[2]);
        let z = t("adamatch z", &[2 * l, c]);
        let source_labels = t("adamatch source labels", &[2 * l]);
        let probs = t("adamatch weak probs", &[l + ub, c]);
        let target_strong = t("adamatch target strong logits", &[ub, c]);
        let align = t("adamatch align", &[c + 1]);
        let y_tilde = t("adamatch y_tilde", &[ub, c]);
        let pseudo = t("adamatch pseudo", &[ub]);
        let mask = t("adamatch mask", &[ub]);
        let source_weights = Tensor::from_f32(ctx, "adamatch source weights", &[2 * l], &vec![1.0; 2 * l]);
        let source_loss = t("adamatch source loss", &[1]);
        let target_loss = t("adamatch target loss", &[1]);
        let dz = t("adamatch dz", &[2 * l, c]);
        let d_target_strong = t("adamatch d target strong", &[ub, c]);

        let work = Work {
            source_labels,
            probs,
            target_strong,
            source_weights,
            source_loss,
            target_loss,
            d_target_strong,
        };
        let mut loss = AdaMatchLoss {
            config: *cfg,
            lambdas,
            metrics,
            p_source_ema,
            p_target_history,
            history_state,
            z,
            align,
            y_tilde,
            pseudo,
            mask,
            dz,
            work,
            ops: Vec::new(),
        };
        loss.ops = loss.build_ops(ctx, [joint_logits, source_logits, labels, scalars, d_joint, d_source]);
        loss.reset_state(ctx);
        loss
    }

    /// The step's ops over this loss's tensors and the caller's (see [`AdaMatchLoss::new`]).
    fn build_ops(&self, ctx: &GpuContext, inputs: [&Tensor; 6]) -> Vec<Op> {
        let [joint_logits, source_logits, labels, scalars, d_joint, d_source] = inputs;
        let cfg = &self.config;
        let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
        let (l, joint_len) = (cfg.labeled_rows(), cfg.joint_rows() * c);
        let params = Params::of(cfg);
        let u = Some(bytemuck::bytes_of(&params));
        let shader = &SHADER;
        let detail = if l == b {
            format!("B={b} uB={ub} C={c}")
        } else {
            format!("B={b} T={} uB={ub} C={c}", l - b)
        };

        let mut ops = vec![
            Op::new(
                ctx,
                shader,
                "adamatch_prepare_rows",
                u,
                &[
                    ("joint", joint_logits),
                    ("source", source_logits),
                    ("labels", labels),
                    ("lambdas", &self.lambdas),
                    ("z", &self.z),
                    ("source_labels", &self.work.source_labels),
                    ("probs", &self.work.probs),
                    ("target_strong", &self.work.target_strong),
                ],
                grid_1d(cfg.joint_rows(), WG),
            ),
            Op::new(
                ctx,
                shader,
                "adamatch_align",
                u,
                &[
                    ("probs", &self.work.probs),
                    ("ema_state", &self.p_source_ema),
                    ("history", &self.p_target_history),
                    ("history_state", &self.history_state),
                    ("align", &self.align),
                ],
                [1, 1, 1],
            ),
            Op::new(
                ctx,
                shader,
                "adamatch_pseudo_labels",
                u,
                &[
                    ("probs", &self.work.probs),
                    ("align", &self.align),
                    ("y_tilde", &self.y_tilde),
                    ("pseudo", &self.pseudo),
                    ("mask", &self.mask),
                ],
                grid_1d(ub, WG),
            ),
        ];

        // Source: source_scale * (mean_B CE(z_weak, y) + mean_B CE(z_strong, y)), plus the same
        // weight per row for labeled target rows.
        let source_scale = cfg.source_scale / b as f32;
        let source_targets = Targets::Hard(&self.work.source_labels);
        ops.extend(softmax_ce_term(
            ctx,
            c,
            &self.z,
            source_targets,
            &self.work.source_weights,
            source_scale,
            &self.work.source_loss,
            &self.dz,
        ));

        // Target: (1/uB) * sum_i mask_i * CE(tgt_strong_i, pseudo_i); mu is applied on assembly
        // because it lives on the device.
        let target_scale = 1.0 / ub as f32;
        let target_targets = match cfg.pseudo {
            PseudoLabel::Hard => Targets::Hard(&self.pseudo),
            PseudoLabel::Soft => Targets::Soft(&self.y_tilde),
        };
        ops.extend(softmax_ce_term(
            ctx,
            c,
            &self.work.target_strong,
            target_targets,
            &self.mask,
            target_scale,
            &self.work.target_loss,
            &self.work.d_target_strong,
        ));

        ops.push(Op::new(
            ctx,
            shader,
            "adamatch_assemble_grads",
            u,
            &[
                ("lambdas", &self.lambdas),
                ("scalars", scalars),
                ("dz", &self.dz),
                ("d_target_strong", &self.work.d_target_strong),
                ("d_joint", d_joint),
                ("d_source", d_source),
            ],
            grid_1d(joint_len, WG),
        ));
        ops.push(Op::new(
            ctx,
            shader,
            "adamatch_metrics",
            u,
            &[
                ("scalars", scalars),
                ("align", &self.align),
                ("mask", &self.mask),
                ("source_loss", &self.work.source_loss),
                ("target_loss", &self.work.target_loss),
                ("metrics", &self.metrics),
            ],
            [1, 1, 1],
        ));
        ops.into_iter().map(|op| op.with_detail(detail.clone())).collect()
    }

    /// Every dispatch of the step, in order, to record into the step's compute pass after both
    /// forward passes and before the backward passes.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Puts the alignment state back to its start: EMA = 1/C, empty history (or full of 1/C
    /// with `prefill_uniform`). Written through the queue, so it lands before the next submit.
    pub fn reset_state(&self, ctx: &GpuContext) {
        let c = self.config.classes;
        let history = self.config.history();
        let uniform = 1.0 / c as f32;
        let prefill = matches!(
            self.config.alignment,
            Alignment::Paper {
                prefill_uniform: true,
                ..
            }
        );
        self.p_source_ema.write_f32(ctx, &vec![uniform; c]);
        let (fill, filled) = if prefill { (uniform, history) } else { (0.0, 0) };
        self.p_target_history.write_f32(ctx, &vec![fill; history * c]);
        self.history_state.write_f32(ctx, &[0.0, filled as f32]);
    }

    /// The tensors a checkpoint must save and restore (all f32), with stable names.
    pub fn state_tensors(&self) -> [(&'static str, &Tensor); 3] {
        [
            ("adamatch.p_source_ema", &self.p_source_ema),
            ("adamatch.p_target_history", &self.p_target_history),
            ("adamatch.history_state", &self.history_state),
        ]
    }
}
