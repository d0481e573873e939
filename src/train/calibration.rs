//! Batch-norm recalibration of the evaluation weights ("precise BN").
//!
//! Running statistics are an average over the last ~1/(1 - momentum) steps, taken while the
//! weights moved; in a short run they no longer fit the final (or EMA) weights, and inference
//! with them falls far below training-mode accuracy (measured on real MNIST with the tiny preset:
//! 14.6% against 90.8% on the same images). Before each
//! evaluation and the export, a copy of the evaluation weights runs `batches` training-mode
//! forward passes on fresh weak views of the training batch's images (its source, labeled target
//! and target rows, in its proportions) and its running statistics are set to the mean of the
//! batch statistics.
//! The training state is not touched.

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, ImageSource};
use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::augment::{self, AugParams};
use crate::network::{Pass, WideResNet, Workspace};

use super::batch::{draw_indices, weak_view};
use super::config::TrainConfig;
use super::step_inputs::{augment_rows, StepInputs};

/// The evaluation network with its batch-norm statistics recomputed for its own weights.
pub(super) struct BnCalibration {
    net: WideResNet,
    ws: Workspace,
    /// The step's labeled pixels and weak parameters (source then labeled target rows), and
    /// the step's target pixels and weak parameters.
    labeled: (Tensor, Tensor),
    target: (Tensor, Tensor),
    /// Weak views of the labeled then the target images into `ws`'s input.
    aug_ops: Vec<Op>,
    batches: usize,
    /// The step `net` was last calibrated at: evaluating and exporting at one step (the end of
    /// a run) calibrate once. Cleared by anything that changes the weights or the data.
    done_at: Option<u64>,
}

/// Images in one calibration batch: the training batch's labeled rows and, when the
/// algorithm uses the target, its target rows (one view of each).
pub(super) fn calibration_rows(cfg: &TrainConfig) -> usize {
    cfg.labeled_batch()
        + if cfg.algorithm.uses_target() {
            cfg.target_batch()
        } else {
            0
        }
}

impl BnCalibration {
    /// With `cfg.bn_calibration` batches, a calibration sharing the step's input buffers; None
    /// when it is 0.
    pub(super) fn new(ctx: &GpuContext, cfg: &TrainConfig, inputs: &StepInputs) -> Result<Option<BnCalibration>> {
        let batches = cfg.bn_calibration;
        if batches == 0 {
            return Ok(None);
        }
        let (l, s, scale) = (cfg.labeled_batch(), cfg.network.image_size, cfg.input_scale);
        let ub = calibration_rows(cfg) - l;
        // Momentum 0: every pass leaves its own batch statistics, which the host averages.
        // The config keeps the real momentum so an exported file records it.
        let mut net_cfg = cfg.network.clone();
        net_cfg.bn_momentum = 0.0;
        let mut net = WideResNet::new(ctx, net_cfg, cfg.seed)?;
        let mut ws = Workspace::new(ctx, &net, l + ub, false);
        ws.ops(ctx, &net, Pass::ForwardTrain { update_running: true });
        net.config.bn_momentum = cfg.network.bn_momentum;
        let labeled = inputs.weak_labeled();
        let (tp, tw) = inputs.weak_target();
        let target = (tp.clone(), tw.clone());
        let mut aug_ops = vec![augment_rows(ctx, &ws.input, 0, (&labeled.0, &labeled.1), l, s, scale)];
        if ub > 0 {
            aug_ops.push(augment_rows(ctx, &ws.input, l, (&target.0, &target.1), ub, s, scale));
        }
        Ok(Some(BnCalibration {
            net,
            ws,
            labeled,
            target,
            aug_ops,
            batches,
            done_at: None,
        }))
    }

    /// Forgets the calibration: the weights or the data it was drawn from changed.
    pub(super) fn forget(&mut self) {
        self.done_at = None;
    }

    /// `eval`'s weights with batch-norm statistics recomputed for them at `step` (once per
    /// step). The batches come from their own RNG, seeded by the run's seed and the step, so
    /// training draws the same batches with or without calibration.
    pub(super) async fn run(
        &mut self,
        ctx: &GpuContext,
        cfg: &TrainConfig,
        eval: &WideResNet,
        step: u64,
        (source, labeled_target, target): (&dyn ImageSource, Option<&Dataset>, &dyn ImageSource),
    ) -> Result<&WideResNet> {
        if self.done_at == Some(step) {
            return Ok(&self.net);
        }
        let ((weak, sym), size) = (weak_view(cfg), cfg.network.image_size);
        let (b, l) = (cfg.batch, cfg.labeled_batch());
        let ub = if cfg.algorithm.uses_target() {
            cfg.target_batch()
        } else {
            0
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&eval.params, 0, &self.net.params, 0, eval.params.size());
        ctx.queue.submit([encoder.finish()]);
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6361_6c69_6272_6174 ^ step.rotate_left(32));
        let running = Tensor::view(&self.net.running, 0, &[self.net.running_len()]);
        let mut sum = vec![0f64; running.len()];
        for _ in 0..self.batches {
            let (mut images, mut labels) = (Vec::new(), Vec::new());
            source.gather(&draw_indices(&mut rng, source, b), &mut images, &mut labels);
            if l > b {
                let labeled = labeled_target.context("semi-supervised calibration needs its labeled target images")?;
                labeled.gather(&draw_indices(&mut rng, labeled, l - b), &mut images, &mut labels);
            }
            augment::write_images(ctx, &self.labeled.0, &images);
            let params: Vec<AugParams> = (0..l).map(|_| augment::draw_weak(&mut rng, size, weak, sym)).collect();
            augment::write_params(ctx, &self.labeled.1, &params);
            if ub > 0 {
                images.clear();
                target.gather(&draw_indices(&mut rng, target, ub), &mut images, &mut labels);
                augment::write_images(ctx, &self.target.0, &images);
                let params: Vec<AugParams> = (0..ub).map(|_| augment::draw_weak(&mut rng, size, weak, sym)).collect();
                augment::write_params(ctx, &self.target.1, &params);
            }
            let mut ops: Vec<&Op> = self.aug_ops.iter().collect();
            ops.extend(
                self.ws
                    .built_ops(Pass::ForwardTrain { update_running: true })
                    .expect("built in BnCalibration::new"),
            );
            ctx.submit(&ops);
            for (s, v) in sum.iter_mut().zip(running.read_f32_async(ctx).await?) {
                *s += v as f64;
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / self.batches as f64) as f32).collect();
        running.write_f32(ctx, &mean);
        self.done_at = Some(step);
        Ok(&self.net)
    }
}
