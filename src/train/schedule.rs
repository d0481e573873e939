//! What changes from step to step without the data: the learning rate, the target-loss weight and
//! Adam's bias corrections, written to the GPU as one [`StepScalars`] per step.

use crate::kernels::optimizer::{self, StepScalars};

use super::config::{LrSchedule, Optimizer, TrainConfig};

/// The scalars of step `t` (0-based) of a run of `cfg`.
pub fn step_scalars(cfg: &TrainConfig, t: u64) -> StepScalars {
    let total = cfg.steps;
    let base = cfg.lr as f64;
    let lr = match cfg.lr_schedule {
        LrSchedule::PaperCosine => optimizer::lr_paper(base, t, total),
        LrSchedule::KerasCosine { alpha } => optimizer::lr_keras_cosine(base, t, total, alpha as f64),
        LrSchedule::Constant => base,
    };
    // SGD reads no bias corrections: 1 leaves a value that would be read unchanged.
    let (adam_bias1, adam_bias2) = match cfg.optimizer {
        Optimizer::Adam { beta1, beta2, .. } => (
            optimizer::bias_correction(beta1 as f64, t + 1),
            optimizer::bias_correction(beta2 as f64, t + 1),
        ),
        Optimizer::Sgd { .. } => (1.0, 1.0),
    };
    StepScalars {
        lr: lr as f32,
        weight_decay: cfg.weight_decay,
        adam_bias1,
        adam_bias2,
        mu: optimizer::mu_warmup(t, total) as f32,
        _pad0: 0.0,
        _pad1: 0.0,
        _pad2: 0.0,
    }
}
