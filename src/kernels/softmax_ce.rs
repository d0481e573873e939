//! Rust side of `shaders/softmax_ce.wgsl`: softmax cross-entropy with hard or soft targets and
//! per-row weights (masks), numerically stable for large logits.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/softmax_ce.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!("softmax_ce.wgsl", &[("WG", WG)], &[Params::WGSL]);

const WG: u32 = 64;

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        rows: u32,
        classes: u32,
        scale: f32,
        /// 1: dlogits += grad instead of dlogits = grad.
        accumulate: u32,
    }
}

/// What each row of logits is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// A class index per row (u32 tensor `[rows]`). An index `>= classes` means "no target":
    /// that row's loss and gradient are 0.
    Hard(&'a Tensor),
    /// A distribution per row (f32 `[rows, classes]`); need not sum to 1.
    Soft(&'a Tensor),
}

impl Targets<'_> {
    fn check(&self, what: &str, rows: usize, classes: usize) {
        match self {
            Targets::Hard(t) => assert_eq!(t.len(), rows, "{what}: hard targets size"),
            Targets::Soft(t) => assert_eq!(t.len(), rows * classes, "{what}: soft targets size"),
        }
    }

    /// The entry point of these targets' kind (`hard` or `soft`), and their binding.
    fn entry_and_binding(&self, hard: &'static str, soft: &'static str) -> (&'static str, (&'static str, &Tensor)) {
        match self {
            Targets::Hard(t) => (hard, ("labels", t)),
            Targets::Soft(t) => (soft, ("targets", t)),
        }
    }
}

fn params(rows: usize, classes: usize, scale: f32, accumulate: bool) -> Params {
    assert!(classes > 0, "softmax_ce: classes must be at least 1");
    assert!(
        rows.checked_mul(classes).is_some_and(|v| v <= u32::MAX as usize),
        "softmax_ce: rows * classes does not fit in u32"
    );
    Params {
        rows: rows as u32,
        classes: classes as u32,
        scale,
        accumulate: accumulate as u32,
    }
}

/// `row_loss[i] = -sum_k t_ik * log_softmax(logits_i)_k` (unweighted), then
/// `loss[0] = scale * sum_i row_weight[i] * row_loss[i]`, reduced in a fixed order by one
/// workgroup. Returns two ops (per-row losses, then the weighted sum) to run in order.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce_forward(
    ctx: &GpuContext,
    rows: usize,
    classes: usize,
    logits: &Tensor,
    targets: Targets,
    row_weight: &Tensor,
    scale: f32,
    row_loss: &Tensor,
    loss: &Tensor,
) -> Vec<Op> {
    let p = params(rows, classes, scale, false);
    assert_eq!(logits.len(), rows * classes, "softmax_ce_forward: logits size");
    targets.check("softmax_ce_forward", rows, classes);
    assert_eq!(row_weight.len(), rows, "softmax_ce_forward: row_weight size");
    assert_eq!(row_loss.len(), rows, "softmax_ce_forward: row_loss size");
    assert_eq!(loss.len(), 1, "softmax_ce_forward: loss size");
    let uniform = Some(bytemuck::bytes_of(&p));
    let (entry, targets) = targets.entry_and_binding("softmax_ce_forward_hard", "softmax_ce_forward_soft");
    let per_row = Op::new(
        ctx,
        &SHADER,
        entry,
        uniform,
        &[("logits", logits), targets, ("row_loss", row_loss)],
        grid_1d(rows, WG),
    );
    let sum = Op::new(
        ctx,
        &SHADER,
        "softmax_ce_loss_sum",
        uniform,
        &[("row_weight", row_weight), ("row_loss", row_loss), ("loss", loss)],
        [1, 1, 1],
    );
    vec![per_row, sum]
}

/// `dlogits[i, k] (+)= scale * row_weight[i] * (softmax_ik * sum_k t_ik - t_ik)`, the gradient
/// of the forward's `loss[0]`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce_backward(
    ctx: &GpuContext,
    rows: usize,
    classes: usize,
    logits: &Tensor,
    targets: Targets,
    row_weight: &Tensor,
    scale: f32,
    dlogits: &Tensor,
    accumulate: bool,
) -> Op {
    let p = params(rows, classes, scale, accumulate);
    assert_eq!(logits.len(), rows * classes, "softmax_ce_backward: logits size");
    targets.check("softmax_ce_backward", rows, classes);
    assert_eq!(row_weight.len(), rows, "softmax_ce_backward: row_weight size");
    assert_eq!(dlogits.len(), rows * classes, "softmax_ce_backward: dlogits size");
    let uniform = Some(bytemuck::bytes_of(&p));
    let (entry, targets) = targets.entry_and_binding("softmax_ce_backward_hard", "softmax_ce_backward_soft");
    Op::new(
        ctx,
        &SHADER,
        entry,
        uniform,
        &[
            ("logits", logits),
            targets,
            ("row_weight", row_weight),
            ("dlogits", dlogits),
        ],
        grid_1d(rows, WG),
    )
}

/// One weighted cross-entropy term of a loss, as the losses of a step use it: the forward
/// (per-row losses in a scratch buffer, then `loss[0]`) followed by the backward that overwrites
/// `dlogits`, in recording order. The rows are `row_weight`'s.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce_term(
    ctx: &GpuContext,
    classes: usize,
    logits: &Tensor,
    targets: Targets,
    row_weight: &Tensor,
    scale: f32,
    loss: &Tensor,
    dlogits: &Tensor,
) -> Vec<Op> {
    let rows = row_weight.len();
    let row_loss = Tensor::zeros(ctx, "softmax_ce row loss", &[rows]);
    let mut ops = softmax_ce_forward(ctx, rows, classes, logits, targets, row_weight, scale, &row_loss, loss);
    ops.push(softmax_ce_backward(
        ctx, rows, classes, logits, targets, row_weight, scale, dlogits, false,
    ));
    ops
}
