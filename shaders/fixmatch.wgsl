// The FixMatch loss (Sohn et al. 2020) on AdaMatch's joint pass, the baseline the official
// AdaMatch code compares against, around the softmax cross-entropy kernels (softmax_ce.wgsl).
// B = batch, uB = target_rows, C = classes.
//
//   joint logits [2B + 2uB, C]: src_weak(B), src_strong(B), tgt_weak(uB), tgt_strong(uB)
//
//   loss = mean_B CE(src_weak, y) + mean_uB mask * CE(tgt_strong, argmax softmax(tgt_weak)),
//   mask = max softmax(tgt_weak) >= threshold (a fixed confidence, 0.95 by default).
//
// No logit interpolation, no distribution alignment, no warm-up of the target weight, and the
// source-strong rows carry no loss (they are in the pass, as in the official code's FixMatch,
// so batch norm sees the same images as AdaMatch's). Order of the dispatches
// (src/kernels/fixmatch.rs):
//   fixmatch_pseudo_labels   per target row: the weak row's softmax, its argmax (first maximum)
//                            and mask; the strong row copied out contiguously (storage views
//                            must start at 256-byte offsets, rows need not).
//   softmax_ce_* (other file) source CE on the src_weak rows, target CE on the strong copy.
//   fixmatch_assemble_grads  d_joint from the two cross-entropy gradients.
//   fixmatch_metrics         one workgroup: losses and mask rate.
// The pseudo-labels and the mask are constants of the step (stop-gradient); everything reduces
// in a fixed order, so results are bitwise reproducible.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/fixmatch.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> joint: array<f32>;
@group(0) @binding(2) var<storage, read_write> target_strong: array<f32>;
@group(0) @binding(3) var<storage, read_write> pseudo: array<u32>;
@group(0) @binding(4) var<storage, read_write> mask: array<f32>;
@group(0) @binding(5) var<storage, read> d_source_weak: array<f32>;
@group(0) @binding(6) var<storage, read> d_target_strong: array<f32>;
@group(0) @binding(7) var<storage, read_write> d_joint: array<f32>;
@group(0) @binding(8) var<storage, read> source_loss: array<f32>;
@group(0) @binding(9) var<storage, read> target_loss: array<f32>;
@group(0) @binding(10) var<storage, read_write> metrics: LossMetrics;

// One invocation per target row j.
@compute @workgroup_size(WG)
fn fixmatch_pseudo_labels(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = linear_index(wid, nwg, lid, WG);
    let ub = p.target_rows;
    if (j >= ub) {
        return;
    }
    let c = p.classes;
    let weak = (2u * p.batch + j) * c;
    // The argmax of the softmax is the argmax of the logits (first maximum), and its
    // probability is 1 / sum_k exp(z_k - max).
    var best = 0u;
    var m = joint[weak];
    for (var k = 1u; k < c; k++) {
        if (joint[weak + k] > m) {
            m = joint[weak + k];
            best = k;
        }
    }
    var s = 0.0;
    for (var k = 0u; k < c; k++) {
        s += exp(joint[weak + k] - m);
    }
    pseudo[j] = best;
    mask[j] = select(0.0, 1.0, 1.0 / s >= p.threshold);
    let strong = (2u * p.batch + ub + j) * c;
    for (var k = 0u; k < c; k++) {
        target_strong[j * c + k] = joint[strong + k];
    }
}

// One invocation per element of the joint logits: the source-weak rows take the source CE
// gradient, the target-strong rows the target CE gradient, every other row exactly 0.
@compute @workgroup_size(WG)
fn fixmatch_assemble_grads(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    let c = p.classes;
    let b = p.batch;
    let ub = p.target_rows;
    if (i >= (2u * b + 2u * ub) * c) {
        return;
    }
    let r = i / c;
    if (r < b) {
        d_joint[i] = d_source_weak[i];
    } else if (r >= 2u * b + ub) {
        d_joint[i] = d_target_strong[i - (2u * b + ub) * c];
    } else {
        d_joint[i] = 0.0;
    }
}

// LossMetrics (src/kernels/adamatch.rs), with the threshold as c_tau and a target weight of 1: the layout of
// adamatch_metrics, so both losses report through the same code.
@compute @workgroup_size(REDUCE_WG)
fn fixmatch_metrics(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var j = lid; j < p.target_rows; j += REDUCE_WG) {
        acc += mask[j];
    }
    let masked = workgroup_sum(lid, acc);
    if (lid == 0u) {
        let src = source_loss[0];
        let tgt = target_loss[0];
        metrics.total_loss = src + tgt;
        metrics.source_loss = src;
        metrics.target_loss = tgt;
        metrics.mask_rate = masked / f32(p.target_rows);
        metrics.c_tau = p.threshold;
        metrics.mu = 1.0;
    }
}
