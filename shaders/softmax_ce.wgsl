// Softmax cross-entropy over logits [rows, classes] with hard targets (a u32 class index per row)
// or soft targets (an f32 distribution per row that need not sum to 1), and per-row weights
// (masks). Hard and soft targets bind different buffers, so each has its own entry points.
//
//   row_loss[i] = sum_k t_ik * (lse_i - z_ik),   lse_i = m_i + log(sum_k exp(z_ik - m_i))
//   loss[0]     = scale * sum_i row_weight[i] * row_loss[i]
//   dlogits_ik (+)= scale * row_weight[i] * (softmax_ik * sum_k t_ik - t_ik)
//
// Numerically stable: every exponent is z - m <= 0 (m the row max), and lse - z is formed as
// (m - z) + log(sum), both non-negative, so no large values cancel. A hard label >= classes
// means "no target": the row's loss and gradient are 0.
// One invocation per row (classes may be any size); the loss sum is one workgroup reducing in a
// fixed order, so everything is bitwise reproducible.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/softmax_ce.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> targets: array<f32>;
@group(0) @binding(4) var<storage, read> row_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;
@group(0) @binding(7) var<storage, read_write> dlogits: array<f32>;

struct RowStats {
    // Row maximum.
    max: f32,
    // sum_k exp(z_k - max), in [1, classes].
    sum_exp: f32,
}

fn row_stats(base: u32) -> RowStats {
    var m = logits[base];
    for (var k = 1u; k < p.classes; k++) {
        m = max(m, logits[base + k]);
    }
    var s = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        s += exp(logits[base + k] - m);
    }
    return RowStats(m, s);
}

fn write_grad(idx: u32, g: f32) {
    if (p.accumulate != 0u) {
        dlogits[idx] = dlogits[idx] + g;
    } else {
        dlogits[idx] = g;
    }
}

@compute @workgroup_size(WG)
fn softmax_ce_forward_hard(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid, WG);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.classes;
    let st = row_stats(base);
    let label = labels[r];
    var l = 0.0;
    if (label < p.classes) {
        l = (st.max - logits[base + label]) + log(st.sum_exp);
    }
    row_loss[r] = l;
}

@compute @workgroup_size(WG)
fn softmax_ce_forward_soft(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid, WG);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.classes;
    let st = row_stats(base);
    let log_sum = log(st.sum_exp);
    var l = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        l += targets[base + k] * ((st.max - logits[base + k]) + log_sum);
    }
    row_loss[r] = l;
}

// loss[0] = scale * sum_i row_weight[i] * row_loss[i]: each invocation sums a fixed strided
// subset of rows in order, then a fixed tree combines the 256 partials.
@compute @workgroup_size(REDUCE_WG)
fn softmax_ce_loss_sum(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.rows; i += REDUCE_WG) {
        acc += row_weight[i] * row_loss[i];
    }
    let total = workgroup_sum(lid, acc);
    if (lid == 0u) {
        loss[0] = p.scale * total;
    }
}

@compute @workgroup_size(WG)
fn softmax_ce_backward_hard(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid, WG);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.classes;
    let st = row_stats(base);
    let coef = p.scale * row_weight[r];
    let label = labels[r];
    // sum_k t_k is 1 for a valid label, 0 for "no target".
    let sum_t = select(0.0, 1.0, label < p.classes);
    for (var k = 0u; k < p.classes; k++) {
        let prob = exp(logits[base + k] - st.max) / st.sum_exp;
        let t = select(0.0, 1.0, k == label);
        write_grad(base + k, coef * (prob * sum_t - t));
    }
}

@compute @workgroup_size(WG)
fn softmax_ce_backward_soft(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_index(wid, nwg, lid, WG);
    if (r >= p.rows) {
        return;
    }
    let base = r * p.classes;
    let st = row_stats(base);
    let coef = p.scale * row_weight[r];
    var sum_t = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        sum_t += targets[base + k];
    }
    for (var k = 0u; k < p.classes; k++) {
        let prob = exp(logits[base + k] - st.max) / st.sum_exp;
        write_grad(base + k, coef * (prob * sum_t - targets[base + k]));
    }
}
