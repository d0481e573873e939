// The AdaMatch loss around the softmax cross-entropy kernels (softmax_ce.wgsl), REFERENCE.md
// "The AdaMatch step", steps 3-7. B = batch (source images), L = labeled_rows (B, or B + T with
// T labeled target images in semi-supervised domain adaptation), uB = target_rows, C = classes.
//
//   joint logits   [2L + 2uB, C]: labeled_weak(L), labeled_strong(L), tgt_weak(uB), tgt_strong(uB)
//   source logits  [2L, C]:       labeled_weak(L), labeled_strong(L)  (the second forward pass)
//
// The labeled rows of each view are the B source images, then the T labeled target images. They
// all enter the logit interpolation and the supervised loss; the alignment's source distribution
// and c_tau come from the B source rows alone (the official SSDA code's p_labeled and
// confidence ratio).
//
// Order of the dispatches (src/kernels/adamatch.rs):
//   adamatch_prepare_rows    z = lambda * joint[:2L] + (1 - lambda) * source; softmax of the
//                            labeled-weak rows of z and of the target-weak rows; labels repeated
//                            for both labeled views; target-strong rows copied out contiguously
//                            (storage views must start at 256-byte offsets, rows need not).
//   adamatch_align           one workgroup: batch means, alignment state update, ratio, c_tau.
//   adamatch_pseudo_labels   per target row: y_tilde, its argmax, the confidence mask.
//   softmax_ce_* (other file) source CE on z, target CE on the target-strong rows.
//   adamatch_assemble_grads  d_joint / d_source from dz and the target-strong gradient.
//   adamatch_metrics         one workgroup: losses, mask rate, c_tau, mu.
//
// Only the two cross-entropy terms carry gradient: y_tilde, the pseudo-labels and the mask are
// constants of the step (stop-gradient), and c_tau enters only through the mask comparison.
// Everything reduces in a fixed order, so results are bitwise reproducible.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/adamatch.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> joint: array<f32>;
@group(0) @binding(2) var<storage, read> source: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> lambdas: array<f32>;
// Per-step host scalars; index 4 is mu (StepScalars in optimizer.rs).
@group(0) @binding(5) var<storage, read> scalars: array<f32>;
@group(0) @binding(6) var<storage, read_write> z: array<f32>;
@group(0) @binding(7) var<storage, read_write> source_labels: array<u32>;
// Softmax rows: [0, L) labeled-weak rows of z, [L, L + uB) target-weak rows of joint.
@group(0) @binding(8) var<storage, read_write> probs: array<f32>;
@group(0) @binding(9) var<storage, read_write> target_strong: array<f32>;
// Paper alignment state: EMA of the source means [C], ring of target means [history, C],
// and (next slot, slots filled) stored as f32 so every state tensor reads back as f32.
@group(0) @binding(10) var<storage, read_write> ema_state: array<f32>;
@group(0) @binding(11) var<storage, read_write> history: array<f32>;
@group(0) @binding(12) var<storage, read_write> history_state: array<f32>;
// [0, C): distribution-alignment ratio; [C]: c_tau.
@group(0) @binding(13) var<storage, read_write> align: array<f32>;
@group(0) @binding(14) var<storage, read_write> y_tilde: array<f32>;
@group(0) @binding(15) var<storage, read_write> pseudo: array<u32>;
@group(0) @binding(16) var<storage, read_write> mask: array<f32>;
@group(0) @binding(17) var<storage, read> dz: array<f32>;
@group(0) @binding(18) var<storage, read> d_target_strong: array<f32>;
@group(0) @binding(19) var<storage, read_write> d_joint: array<f32>;
@group(0) @binding(20) var<storage, read_write> d_source: array<f32>;
@group(0) @binding(21) var<storage, read> source_loss: array<f32>;
@group(0) @binding(22) var<storage, read> target_loss: array<f32>;
@group(0) @binding(23) var<storage, read_write> metrics: LossMetrics;

// probs[out_row] = softmax(z[row]), max subtracted first.
fn softmax_of_z(row: u32, out_row: u32) {
    let c = p.classes;
    let base = row * c;
    var m = z[base];
    for (var k = 1u; k < c; k++) {
        m = max(m, z[base + k]);
    }
    var s = 0.0;
    for (var k = 0u; k < c; k++) {
        s += exp(z[base + k] - m);
    }
    for (var k = 0u; k < c; k++) {
        probs[out_row * c + k] = exp(z[base + k] - m) / s;
    }
}

// probs[out_row] = softmax(joint[row]).
fn softmax_of_joint(row: u32, out_row: u32) {
    let c = p.classes;
    let base = row * c;
    var m = joint[base];
    for (var k = 1u; k < c; k++) {
        m = max(m, joint[base + k]);
    }
    var s = 0.0;
    for (var k = 0u; k < c; k++) {
        s += exp(joint[base + k] - m);
    }
    for (var k = 0u; k < c; k++) {
        probs[out_row * c + k] = exp(joint[base + k] - m) / s;
    }
}

// One invocation per joint row (2B + 2uB rows).
@compute @workgroup_size(WG)
fn adamatch_prepare_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid, WG);
    let l = p.labeled_rows;
    let ub = p.target_rows;
    let c = p.classes;
    let source_rows = 2u * l;
    if (r >= source_rows + 2u * ub) {
        return;
    }
    if (r < source_rows) {
        // Random logit interpolation (step 3), elementwise.
        let base = r * c;
        for (var k = 0u; k < c; k++) {
            let lam = lambdas[base + k];
            z[base + k] = lam * joint[base + k] + (1.0 - lam) * source[base + k];
        }
        // Both labeled views share the batch's labels.
        source_labels[r] = labels[r % l];
        if (r < l) {
            softmax_of_z(r, r);
        }
    } else if (r < source_rows + ub) {
        softmax_of_joint(r, l + (r - source_rows));
    } else {
        let dst = (r - source_rows - ub) * c;
        for (var k = 0u; k < c; k++) {
            target_strong[dst + k] = joint[r * c + k];
        }
    }
}

// (next slot, slots filled) of the history ring, read once by invocation 0.
var<workgroup> ring: vec2<u32>;

// Step 4 (alignment) and step 5 (c_tau), in one workgroup. Invocation k handles classes
// k, k + 256, ...: it owns column k of the EMA and of the history ring, so no two invocations
// touch the same state element. Only invocation 0 reads and writes history_state.
@compute @workgroup_size(REDUCE_WG)
fn adamatch_align(@builtin(local_invocation_index) lid: u32) {
    let b = p.batch;
    let l = p.labeled_rows;
    let ub = p.target_rows;
    let c = p.classes;
    let keras = p.keras_alignment != 0u;

    // c_tau = tau * mean over source-weak rows of the max softmax of z: strided partials, then
    // a fixed tree.
    var acc = 0.0;
    for (var r = lid; r < b; r += REDUCE_WG) {
        var m = probs[r * c];
        for (var k = 1u; k < c; k++) {
            m = max(m, probs[r * c + k]);
        }
        acc += m;
    }
    if (lid == 0u && !keras) {
        ring = vec2<u32>(u32(history_state[0]), u32(history_state[1]));
    }
    let c_tau = p.tau * (workgroup_sum(lid, acc) / f32(b));

    // Update first, then use: the current batch is part of the averages it is aligned with.
    let next = ring.x;
    let filled = min(ring.y + 1u, p.history);
    for (var k = lid; k < c; k += REDUCE_WG) {
        var ps = 0.0;
        for (var r = 0u; r < b; r++) {
            ps += probs[r * c + k];
        }
        ps /= f32(b);
        var pt = 0.0;
        for (var j = 0u; j < ub; j++) {
            pt += probs[(l + j) * c + k];
        }
        pt /= f32(ub);
        var ratio: f32;
        if (keras) {
            ratio = clamp((ps + 1e-8) / (pt + 1e-8), 0.1, 10.0);
        } else {
            let ema = ema_state[k] + (1.0 - p.ema_momentum) * (ps - ema_state[k]);
            ema_state[k] = ema;
            history[next * c + k] = pt;
            // Mean of the filled slots, in slot order.
            var h = 0.0;
            for (var s = 0u; s < filled; s++) {
                h += history[s * c + k];
            }
            ratio = (1e-6 + ema) / (1e-6 + h / f32(filled));
        }
        align[k] = ratio;
    }
    if (lid == 0u) {
        align[c] = c_tau;
        if (!keras) {
            history_state[0] = f32((next + 1u) % p.history);
            history_state[1] = f32(filled);
        }
    }
}

// Steps 4-5 per target row j: y_tilde = normalize_L1(softmax(tgt_weak_j) * ratio), the hard
// pseudo-label argmax(y_tilde) (first maximum), and mask = max(y_tilde) >= c_tau.
@compute @workgroup_size(WG)
fn adamatch_pseudo_labels(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let j = linear_index(wid, nwg, lid, WG);
    if (j >= p.target_rows) {
        return;
    }
    let c = p.classes;
    let base = (p.labeled_rows + j) * c;
    var s = 0.0;
    for (var k = 0u; k < c; k++) {
        s += probs[base + k] * align[k];
    }
    var best = 0u;
    var best_value = -1.0;
    for (var k = 0u; k < c; k++) {
        let y = probs[base + k] * align[k] / s;
        y_tilde[j * c + k] = y;
        if (y > best_value) {
            best_value = y;
            best = k;
        }
    }
    pseudo[j] = best;
    mask[j] = select(0.0, 1.0, best_value >= align[c]);
}

// One invocation per element of the joint logits. Labeled rows: dz splits by lambda between
// the two passes. Target-weak rows: exactly 0 (pseudo-labels carry no gradient).
// Target-strong rows: mu times the target cross-entropy gradient.
@compute @workgroup_size(WG)
fn adamatch_assemble_grads(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    let c = p.classes;
    let source_rows = 2u * p.labeled_rows;
    let ub = p.target_rows;
    if (i >= (source_rows + 2u * ub) * c) {
        return;
    }
    let r = i / c;
    if (r < source_rows) {
        let lam = lambdas[i];
        let g = dz[i];
        d_joint[i] = lam * g;
        d_source[i] = (1.0 - lam) * g;
    } else if (r < source_rows + ub) {
        d_joint[i] = 0.0;
    } else {
        d_joint[i] = scalars[MU_INDEX] * d_target_strong[i - (source_rows + ub) * c];
    }
}

// LossMetrics (src/kernels/adamatch.rs): total, source, target (unweighted by mu), mask rate, c_tau, mu.
@compute @workgroup_size(REDUCE_WG)
fn adamatch_metrics(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var j = lid; j < p.target_rows; j += REDUCE_WG) {
        acc += mask[j];
    }
    let masked = workgroup_sum(lid, acc);
    if (lid == 0u) {
        let mu = scalars[MU_INDEX];
        let src = source_loss[0];
        let tgt = target_loss[0];
        metrics.total_loss = src + mu * tgt;
        metrics.source_loss = src;
        metrics.target_loss = tgt;
        metrics.mask_rate = masked / f32(p.target_rows);
        metrics.c_tau = align[p.classes];
        metrics.mu = mu;
    }
}
