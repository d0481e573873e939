// Optimizer updates, EMA and a gradient health check, elementwise over the flat parameter /
// gradient buffers (gaps between tensors included: they hold zeros and stay zero).
//
// The learning rate and the other per-step values live in a small storage buffer (StepScalars)
// that the host rewrites before each step with queue.write_buffer, so the ops are built once
// and a step never reads anything back. Constants of a run (momentum, betas, eps, EMA decay)
// are in the op's uniform.

// The uniform `Params`, `StepScalars` and the constants shared with the host (WG ...) are
// declared in src/kernels/optimizer.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: StepScalars;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
// SGD velocity, or Adam first moment.
@group(0) @binding(4) var<storage, read_write> moment1: array<f32>;
// Adam second moment.
@group(0) @binding(5) var<storage, read_write> moment2: array<f32>;
// 1.0 where weight decay applies (conv and dense kernels), 0.0 elsewhere.
@group(0) @binding(6) var<storage, read> decay_mask: array<f32>;
@group(0) @binding(7) var<storage, read_write> ema: array<f32>;
@group(0) @binding(8) var<storage, read> ema_source: array<f32>;
// grad_check: (sum of squares, non-finite flag) per first-pass workgroup.
@group(0) @binding(9) var<storage, read_write> partials: array<f32>;
@group(0) @binding(10) var<storage, read_write> metrics: array<f32>;

// The gradient with the (masked) L2 term: g + wd * w on decayed tensors only.
fn decayed_grad(i: u32) -> f32 {
    return grads[i] + s.weight_decay * decay_mask[i] * params[i];
}

// objax Momentum: v = m * v + g; p -= lr * v, or with Nesterov p -= lr * (g + m * v) using the
// updated v.
@compute @workgroup_size(WG)
fn sgd_momentum_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.len) {
        return;
    }
    let g = decayed_grad(i);
    let v = p.decay * moment1[i] + g;
    moment1[i] = v;
    let step = select(v, g + p.decay * v, p.nesterov != 0u);
    params[i] = params[i] - s.lr * step;
}

// Keras 3 Adam: m += (g - m) * (1 - b1); v += (g^2 - v) * (1 - b2);
// alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); p -= (m * alpha) / (sqrt(v) + eps).
// Same operation order as keras.optimizers.Adam.update_step.
@compute @workgroup_size(WG)
fn adam_step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.len) {
        return;
    }
    let g = decayed_grad(i);
    let m = moment1[i] + (g - moment1[i]) * p.one_minus_decay;
    let v = moment2[i] + (g * g - moment2[i]) * p.one_minus_beta2;
    moment1[i] = m;
    moment2[i] = v;
    let alpha = s.lr * sqrt(s.adam_bias2) / s.adam_bias1;
    params[i] = params[i] - (m * alpha) / (sqrt(v) + p.eps);
}

// ema = decay * ema + (1 - decay) * x (objax ExponentialMovingAverage without debias).
@compute @workgroup_size(WG)
fn ema_update(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.len) {
        return;
    }
    ema[i] = p.decay * ema[i] + p.one_minus_decay * ema_source[i];
}

// Elements per first-pass workgroup: each invocation sums 16 strided elements in order.

var<workgroup> sum_sq: array<f32, WG>;
var<workgroup> bad: array<u32, WG>;

// Inf or NaN by the bit pattern (all exponent bits set), so no float comparison can be folded
// away by a compiler that assumes finite math.
fn is_non_finite(g: f32) -> bool {
    return (bitcast<u32>(g) & 0x7f800000u) == 0x7f800000u;
}

// Fixed tree over the workgroup's 256 values; the order never depends on timing.
fn reduce_workgroup(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            sum_sq[lid] += sum_sq[lid + stride];
            bad[lid] |= bad[lid + stride];
        }
        workgroupBarrier();
    }
}

// First pass: workgroup k writes partials[2k] = sum of g^2 over its 4096-element chunk and
// partials[2k + 1] = 1.0 if any of those g is NaN/Inf.
@compute @workgroup_size(WG)
fn grad_check_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroup-uniform, so no early return before the barriers.
    let group = wid.y * nwg.x + wid.x;
    let start = group * CHECK_CHUNK;
    var acc = 0.0;
    var flag = 0u;
    for (var k = 0u; k < CHECK_CHUNK / WG; k++) {
        let i = start + k * WG + lid;
        if (i < p.len) {
            let g = grads[i];
            acc += g * g;
            flag |= select(0u, 1u, is_non_finite(g));
        }
    }
    sum_sq[lid] = acc;
    bad[lid] = flag;
    reduce_workgroup(lid);
    if (lid == 0u && group < p.n_partials) {
        partials[2u * group] = sum_sq[0];
        partials[2u * group + 1u] = f32(bad[0]);
    }
}

// Second pass, one workgroup: metrics[0] = sum of the partial sums, metrics[1] = any flag.
@compute @workgroup_size(WG)
fn grad_check_combine(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    var flag = 0u;
    for (var j = lid; j < p.n_partials; j += WG) {
        acc += partials[2u * j];
        flag |= select(0u, 1u, partials[2u * j + 1u] != 0.0);
    }
    sum_sq[lid] = acc;
    bad[lid] = flag;
    reduce_workgroup(lid);
    if (lid == 0u) {
        metrics[0] = sum_sq[0];
        metrics[1] = f32(bad[0]);
    }
}
