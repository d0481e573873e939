//! The step's inputs on the GPU: the batch's u8 images, labels and augmentation parameters, and
//! the ops that turn them into the views of the main pass's input rows.

use anyhow::{bail, Result};

use crate::data::image_bytes;
use crate::gpu::{GpuContext, Op, Tensor};
use crate::input::InputScale;
use crate::kernels::augment;

use super::batch::HostBatch;
use super::config::TrainConfig;

/// The batch's buffers and the augmentation ops writing the views into the main input:
/// rows [labeled weak, labeled strong, target weak, target strong] (the target rows only for
/// algorithms that use the target).
pub(super) struct StepInputs {
    /// The L labeled images: B source images, then any labeled target images.
    labeled_pixels: Tensor,
    target_pixels: Tensor,
    /// Weak and strong parameters for the labeled and the target images.
    params: [Tensor; 4],
    pub(super) labels: Tensor,
    pub(super) aug_ops: Vec<Op>,
}

/// The augmentation op writing the views of `n` images of side `size` into rows
/// `start..start + n` of `input`.
pub(super) fn augment_rows(
    ctx: &GpuContext,
    input: &Tensor,
    start: usize,
    (pixels, params): (&Tensor, &Tensor),
    n: usize,
    size: usize,
    scale: InputScale,
) -> Op {
    let b = image_bytes(size);
    let rows = Tensor::view(&input.buffer, input.offset as usize / 4 + start * b, &[n * b]);
    augment::augment_images(ctx, n, size, pixels, params, &rows, scale)
}

impl StepInputs {
    pub(super) fn new(ctx: &GpuContext, cfg: &TrainConfig, input: &Tensor) -> StepInputs {
        let s = cfg.network.image_size;
        let (l, ub) = (cfg.labeled_batch(), cfg.target_batch());
        let labeled_pixels = augment::image_tensor(ctx, "labeled pixels", l, s);
        let target_pixels = augment::image_tensor(ctx, "target pixels", ub, s);
        let params = [
            augment::params_tensor(ctx, "labeled weak params", l),
            augment::params_tensor(ctx, "labeled strong params", l),
            augment::params_tensor(ctx, "target weak params", ub),
            augment::params_tensor(ctx, "target strong params", ub),
        ];
        let scale = cfg.input_scale;
        let mut aug_ops = vec![
            augment_rows(ctx, input, 0, (&labeled_pixels, &params[0]), l, s, scale),
            augment_rows(ctx, input, l, (&labeled_pixels, &params[1]), l, s, scale),
        ];
        if cfg.algorithm.uses_target() {
            aug_ops.push(augment_rows(
                ctx,
                input,
                2 * l,
                (&target_pixels, &params[2]),
                ub,
                s,
                scale,
            ));
            aug_ops.push(augment_rows(
                ctx,
                input,
                2 * l + ub,
                (&target_pixels, &params[3]),
                ub,
                s,
                scale,
            ));
        }
        StepInputs {
            labels: Tensor::zeros(ctx, "labels", &[l]),
            labeled_pixels,
            target_pixels,
            params,
            aug_ops,
        }
    }

    /// The labeled images' pixels and weak parameters (source then labeled target rows).
    pub(super) fn weak_labeled(&self) -> (Tensor, Tensor) {
        (self.labeled_pixels.clone(), self.params[0].clone())
    }

    /// The target images' pixels and weak parameters.
    pub(super) fn weak_target(&self) -> (&Tensor, &Tensor) {
        (&self.target_pixels, &self.params[2])
    }

    /// Writes a batch's images, labels and parameters (small writes, no readback).
    pub(super) fn upload(&self, ctx: &GpuContext, batch: &HostBatch, classes: usize, uses_target: bool) -> Result<()> {
        if let Some(bad) = batch.labels.iter().find(|&&l| l as usize >= classes) {
            bail!("source label {bad} is out of range for {classes} classes");
        }
        augment::write_images(ctx, &self.labeled_pixels, &batch.source_images);
        ctx.queue.write_buffer(
            &self.labels.buffer,
            self.labels.offset,
            bytemuck::cast_slice(&batch.labels),
        );
        for (t, params) in self.params.iter().zip(&batch.aug) {
            if !params.is_empty() {
                augment::write_params(ctx, t, params);
            }
        }
        if uses_target {
            augment::write_images(ctx, &self.target_pixels, &batch.target_images);
        }
        Ok(())
    }
}
