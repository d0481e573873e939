//! Rust side of `shaders/optimizer.wgsl`: SGD with momentum (objax semantics), Adam (Keras 3
//! semantics), the EMA of the weights, a deterministic gradient check, and the host-side
//! schedules (learning rate, AdaMatch's `mu`).
//!
//! Every kernel is elementwise over the flat buffers (`WideResNet::params` / `grads` and tensors
//! of the same length), one op each. Values that change every step (learning rate, weight
//! decay, Adam bias corrections, `mu`) are read from a [`StepScalars`] storage tensor that the
//! host rewrites with [`write_step_scalars`] before each step, so the ops are built once and a
//! step needs no readback.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/optimizer.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!(
    "optimizer.wgsl",
    &[("WG", WG), ("CHECK_CHUNK", CHECK_CHUNK as u32)],
    &[StepScalars::WGSL, Params::WGSL]
);

const WG: u32 = 256;
/// Gradient elements reduced by one first-pass workgroup of [`grad_check`] (16 per invocation).
const CHECK_CHUNK: usize = 4096;

wgsl_struct! {
    /// Per-step scalars, rewritten by the host before each step (one small write, no readback).
    /// `optimizer.wgsl` reads it, and the loss kernels read `mu` from the same tensor.
    #[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq)]
    pub struct StepScalars {
        pub lr: f32,
        /// Coefficient of the masked gradient term `g += weight_decay * w` (0 disables it).
        pub weight_decay: f32,
        /// `1 - beta1^t` for Adam, `t` counting from 1 ([`bias_correction`]).
        pub adam_bias1: f32,
        /// `1 - beta2^t` for Adam.
        pub adam_bias2: f32,
        /// AdaMatch target-loss weight, used by the loss kernels ([`mu_warmup`]).
        pub mu: f32,
        pub _pad0: f32,
        pub _pad1: f32,
        pub _pad2: f32,
    }
}

/// Number of f32 in a [`StepScalars`] tensor.
pub const STEP_SCALARS_LEN: usize = std::mem::size_of::<StepScalars>() / 4;

/// A zero-filled tensor of [`STEP_SCALARS_LEN`] (8) f32 for [`write_step_scalars`].
pub fn step_scalars_tensor(ctx: &GpuContext) -> Tensor {
    Tensor::zeros(ctx, "step scalars", &[STEP_SCALARS_LEN])
}

/// Queues `s` into `t` (`queue.write_buffer`): it lands before the next submission, so write it
/// before submitting the step that uses it.
pub fn write_step_scalars(ctx: &GpuContext, t: &Tensor, s: &StepScalars) {
    assert_eq!(t.len(), STEP_SCALARS_LEN, "write_step_scalars: tensor must hold 8 f32");
    ctx.queue.write_buffer(&t.buffer, t.offset, bytemuck::bytes_of(s));
}

/// `1 - beta^t` in f64 (Adam's bias correction for step `t`, counting from 1), for
/// [`StepScalars::adam_bias1`] / [`StepScalars::adam_bias2`].
pub fn bias_correction(beta: f64, t: u64) -> f32 {
    (1.0 - beta.powf(t as f64)) as f32
}

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable, Default)]
    struct Params {
        len: u32,
        /// SGD: 1 = Nesterov momentum.
        nesterov: u32,
        /// SGD momentum, or EMA decay.
        decay: f32,
        /// 1 - EMA decay, or Adam 1 - beta1. Computed in f64 on the host, as Keras and objax form
        /// it from a Python float: 1 - 0.999f32 would be 5e-5 off.
        one_minus_decay: f32,
        /// Adam 1 - beta2 (also from f64).
        one_minus_beta2: f32,
        eps: f32,
        /// grad_check: number of first-pass partials.
        n_partials: u32,
        _pad: u32,
    }
}

/// `1 - x` for a hyperparameter given as f32, formed the way Keras / objax form it from a Python
/// float: from the shortest decimal that round-trips `x` ("0.999"), in f64, then rounded once.
/// `1 - 0.999f32` in f32 would be 0.0010000467 (5e-5 off); this gives 0.001.
fn one_minus(x: f32) -> f32 {
    let decimal: f64 = x.to_string().parse().expect("an f32 prints as a decimal");
    (1.0 - decimal) as f32
}

fn check_len(what: &str, t: &Tensor) -> u32 {
    u32::try_from(t.len()).unwrap_or_else(|_| panic!("{what}: {} elements do not fit in u32", t.len()))
}

fn check_same(what: &str, name: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: {name} has {} elements, params {}",
        b.len(),
        a.len()
    );
}

fn check_scalars(what: &str, scalars: &Tensor) {
    assert_eq!(
        scalars.len(),
        STEP_SCALARS_LEN,
        "{what}: scalars must be a step_scalars_tensor"
    );
}

/// SGD with momentum, objax semantics, using `scalars.lr` and `scalars.weight_decay`:
/// `g' = g + wd * mask * p; v = momentum * v + g'; p -= lr * v`, or with `nesterov`
/// `p -= lr * (g' + momentum * v)` with the updated `v`. `grads` is only read.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    ctx: &GpuContext,
    params: &Tensor,
    grads: &Tensor,
    velocity: &Tensor,
    decay_mask: &Tensor,
    scalars: &Tensor,
    momentum: f32,
    nesterov: bool,
) -> Op {
    let len = check_len("sgd_step", params);
    check_same("sgd_step", "grads", params, grads);
    check_same("sgd_step", "velocity", params, velocity);
    check_same("sgd_step", "decay_mask", params, decay_mask);
    check_scalars("sgd_step", scalars);
    let p = Params {
        len,
        nesterov: nesterov as u32,
        decay: momentum,
        ..Default::default()
    };
    Op::new(
        ctx,
        &SHADER,
        "sgd_momentum_step",
        Some(bytemuck::bytes_of(&p)),
        &[
            ("s", scalars),
            ("params", params),
            ("grads", grads),
            ("moment1", velocity),
            ("decay_mask", decay_mask),
        ],
        grid_1d(params.len(), WG),
    )
    .with_detail(format!("sgd momentum {momentum} nesterov {nesterov}, {len} params"))
}

/// Adam, Keras 3 semantics, using `scalars.lr`, `.weight_decay`, `.adam_bias1` (`1 - b1^t`) and
/// `.adam_bias2` (`1 - b2^t`): `g' = g + wd * mask * p; m += (g' - m)(1 - b1);
/// v += (g'^2 - v)(1 - b2); alpha = lr sqrt(bias2) / bias1; p -= m alpha / (sqrt(v) + eps)`.
/// `1 - b1` and `1 - b2` are formed in f64 from the decimal hyperparameters, as Keras does.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    ctx: &GpuContext,
    params: &Tensor,
    grads: &Tensor,
    m: &Tensor,
    v: &Tensor,
    decay_mask: &Tensor,
    scalars: &Tensor,
    beta1: f32,
    beta2: f32,
    eps: f32,
) -> Op {
    let len = check_len("adam_step", params);
    check_same("adam_step", "grads", params, grads);
    check_same("adam_step", "m", params, m);
    check_same("adam_step", "v", params, v);
    check_same("adam_step", "decay_mask", params, decay_mask);
    check_scalars("adam_step", scalars);
    let p = Params {
        len,
        decay: beta1,
        one_minus_decay: one_minus(beta1),
        one_minus_beta2: one_minus(beta2),
        eps,
        ..Default::default()
    };
    Op::new(
        ctx,
        &SHADER,
        "adam_step",
        Some(bytemuck::bytes_of(&p)),
        &[
            ("s", scalars),
            ("params", params),
            ("grads", grads),
            ("moment1", m),
            ("moment2", v),
            ("decay_mask", decay_mask),
        ],
        grid_1d(params.len(), WG),
    )
    .with_detail(format!("adam b1 {beta1} b2 {beta2} eps {eps}, {len} params"))
}

/// `ema = decay * ema + (1 - decay) * x` elementwise (`1 - decay` formed in f64, as objax does). Use one op for
/// the flat parameters and one for the flat BN running statistics. Initialise `ema` with a copy
/// of `x` before the first step.
pub fn ema_update(ctx: &GpuContext, ema: &Tensor, x: &Tensor, decay: f32) -> Op {
    let len = check_len("ema_update", ema);
    assert_eq!(
        ema.len(),
        x.len(),
        "ema_update: ema has {} elements, x {}",
        ema.len(),
        x.len()
    );
    let p = Params {
        len,
        decay,
        one_minus_decay: one_minus(decay),
        ..Default::default()
    };
    Op::new(
        ctx,
        &SHADER,
        "ema_update",
        Some(bytemuck::bytes_of(&p)),
        &[("ema", ema), ("ema_source", x)],
        grid_1d(ema.len(), WG),
    )
    .with_detail(format!("ema decay {decay}, {len} values"))
}

/// Gradient health, two ops to run in order: `metrics[0]` = sum of squares of `grads` and
/// `metrics[1]` = 1.0 if any gradient is NaN/Inf, else 0.0 (both overwritten, never accumulated).
/// Deterministic: 4096-element chunks each reduced in a fixed order into a partials buffer
/// (owned by the ops), then one workgroup combines the partials in a fixed order. `metrics`
/// needs at least 2 elements; only the first 2 are written. A NaN/Inf gradient also makes the
/// sum NaN/Inf, but the flag does not depend on float comparisons.
pub fn grad_check(ctx: &GpuContext, grads: &Tensor, metrics: &Tensor) -> Vec<Op> {
    let len = check_len("grad_check", grads);
    assert!(metrics.len() >= 2, "grad_check: metrics needs 2 elements");
    let n_partials = grads.len().div_ceil(CHECK_CHUNK);
    let partials = Tensor::zeros(ctx, "grad_check partials", &[2 * n_partials.max(1)]);
    let p = Params {
        len,
        n_partials: n_partials as u32,
        ..Default::default()
    };
    let uniform = Some(bytemuck::bytes_of(&p));
    let first = Op::new(
        ctx,
        &SHADER,
        "grad_check_partials",
        uniform,
        &[("grads", grads), ("partials", &partials)],
        grid_1d(n_partials * WG as usize, WG),
    )
    .with_detail(format!("{len} grads -> {n_partials} partials"));
    let combine = Op::new(
        ctx,
        &SHADER,
        "grad_check_combine",
        uniform,
        &[("partials", &partials), ("metrics", metrics)],
        [1, 1, 1],
    )
    .with_detail(format!("{n_partials} partials"));
    vec![first, combine]
}

/// The paper's learning rate (REFERENCE.md, "Optimisation": `0.03 * cos(acos(0.25) * t/T)`,
/// ending at 0.0075): `base * cos(acos(0.25) * min(t, T) / T)`. Past `T` it holds the end value
/// `0.25 * base` (the formula itself would keep falling); `total == 0` gives the end value.
pub fn lr_paper(base: f64, t: u64, total: u64) -> f64 {
    base * (0.25f64.acos() * progress(t, total)).cos()
}

/// Keras `CosineDecay(base, decay_steps=total, alpha)`:
/// `base * ((1 - alpha) * 0.5 * (1 + cos(pi * min(t, T) / T)) + alpha)`.
pub fn lr_keras_cosine(base: f64, t: u64, total: u64, alpha: f64) -> f64 {
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress(t, total)).cos());
    base * ((1.0 - alpha) * cosine + alpha)
}

/// AdaMatch's target-loss weight (REFERENCE.md step 7): `0.5 - 0.5 * cos(min(pi, 2 pi t / T))`,
/// rising from 0 to exactly 1.0 at `t = T/2` and staying there.
pub fn mu_warmup(t: u64, total: u64) -> f64 {
    let pi = std::f64::consts::PI;
    let angle = if total == 0 {
        pi
    } else {
        (pi * (2.0 * t as f64 / total as f64)).min(pi)
    };
    0.5 - 0.5 * angle.cos()
}

/// `min(t, T) / T`, 1.0 when `T == 0`.
fn progress(t: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        t.min(total) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::one_minus;

    #[test]
    fn one_minus_uses_the_decimal_value() {
        assert_eq!(one_minus(0.999), 0.001);
        assert_eq!(one_minus(0.9), 0.1);
        assert_eq!(one_minus(0.0), 1.0);
        // The naive f32 subtraction is measurably off.
        assert_ne!(1.0 - 0.999f32, 0.001);
    }
}
