// Batch norm fused with the following leaky ReLU (slope 0 = ReLU), on NHWC data seen as `rows`
// rows of `channels` values (channel fastest):
//   z = gamma * (x - mean) / sqrt(var + eps) + beta,   y = z if z > 0 else slope * z.
// The derivative of the activation at exactly 0 is `slope`, as in activation.wgsl.
//
// Every kernel that walks the rows uses one tiling: workgroup (wid.x, wid.y) covers the chunk of
// rows [wid.x * rows_per_chunk, ...) and the channel tile wid.y; its 256 threads are
// `channel_lanes` consecutive channels x `256 / channel_lanes` row lanes, so consecutive threads
// read consecutive addresses of a row, and each thread walks several rows of one channel (its
// per-channel constants loaded once, no per-element index division).
//
// Per-channel reductions (batch statistics, parameter gradients) are deterministic and atomic-free:
// a `*_partial` kernel writes one partial per (chunk, channel) to scratch; a `*_finalize` kernel
// (one workgroup per channel) then combines the partials in a fixed order.

struct Params {
    rows: u32,
    channels: u32,
    // Rows handled by one workgroup (the last chunk may be shorter).
    rows_per_chunk: u32,
    chunks: u32,
    // Channels per workgroup tile: a power of two dividing WG.
    channel_lanes: u32,
    eps: f32,
    slope: f32,
    // Running statistics: running = momentum * running + (1 - momentum) * batch.
    momentum: f32,
    // Stats: bit 0 = update the running statistics.
    // Backward: bit 0 = batch-statistics (training-mode) formula, bit 1 = accumulate dgamma/dbeta.
    flags: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> var_: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
// Scratch partials, planes of chunks * channels: stats (count, mean, M2), backward (sum dz, sum dz*xhat).
@group(0) @binding(8) var<storage, read_write> partials_out: array<f32>;
@group(0) @binding(9) var<storage, read> partials_in: array<f32>;
@group(0) @binding(10) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(11) var<storage, read_write> var_out: array<f32>;
@group(0) @binding(12) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(13) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(14) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(15) var<storage, read_write> dbeta: array<f32>;
// Per-channel coefficients of the input gradient, 5 planes of `channels`:
// mean, scale = gamma * rstd, beta, a, b with dx = scale * dz + a * (x - mean) + b.
@group(0) @binding(16) var<storage, read_write> coef_out: array<f32>;
@group(0) @binding(17) var<storage, read> coef: array<f32>;
@group(0) @binding(18) var<storage, read_write> dx: array<f32>;
@group(0) @binding(19) var<storage, read> addend: array<f32>;

const WG: u32 = 256u;
// Finalize kernels: one workgroup per channel, combining at most a few thousand partials.
const FWG: u32 = 64u;

const FLAG_BATCH_STATS: u32 = 1u;
const FLAG_UPDATE_RUNNING: u32 = 1u;
const FLAG_ACCUMULATE: u32 = 2u;

// The part of the tiling one thread owns: channel `c` (valid if < channels) and rows
// `row_begin, row_begin + row_step, ... < row_end`.
struct Lane {
    c: u32,
    lane_r: u32,
    row_begin: u32,
    row_end: u32,
    row_step: u32,
}

fn lane(wid: vec3<u32>, lid: u32) -> Lane {
    let lanes = p.channel_lanes;
    let chunk_begin = wid.x * p.rows_per_chunk;
    let lane_r = lid / lanes;
    return Lane(
        wid.y * lanes + lid % lanes,
        lane_r,
        chunk_begin + lane_r,
        min(p.rows, chunk_begin + p.rows_per_chunk),
        WG / lanes,
    );
}

fn act(z: f32) -> f32 {
    return select(p.slope * z, z, z > 0.0);
}

fn act_grad(z: f32) -> f32 {
    return select(p.slope, 1.0, z > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Batch statistics: (count, mean, M2) per thread by Welford, merged with Chan's formula, so the
// variance has two-pass accuracy (no E[x^2] - E[x]^2 cancellation).

struct Moments {
    n: f32,
    mean: f32,
    m2: f32,
}

fn combine(a: Moments, b: Moments) -> Moments {
    if (b.n == 0.0) {
        return a;
    }
    if (a.n == 0.0) {
        return b;
    }
    let n = a.n + b.n;
    let d = b.mean - a.mean;
    let f = b.n / n;
    return Moments(n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f);
}

var<workgroup> sh_moments: array<Moments, WG>;

// Workgroup (chunk, channel tile) -> partial moments of each channel over the chunk's rows.
@compute @workgroup_size(WG)
fn batchnorm_stats_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let c = l.c;
    var m = Moments(0.0, 0.0, 0.0);
    if (c < p.channels) {
        for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
            let v = x[r * p.channels + c];
            m.n += 1.0;
            let d = v - m.mean;
            m.mean += d / m.n;
            m.m2 += d * (v - m.mean);
        }
    }
    sh_moments[lid] = m;
    workgroupBarrier();
    // Fixed tree over the row lanes of each channel lane.
    // Bound from the uniform directly: barriers need uniform control flow.
    for (var s = WG / p.channel_lanes / 2u; s > 0u; s /= 2u) {
        if (l.lane_r < s) {
            sh_moments[lid] = combine(sh_moments[lid], sh_moments[lid + s * p.channel_lanes]);
        }
        workgroupBarrier();
    }
    if (l.lane_r == 0u && c < p.channels) {
        let plane = p.chunks * p.channels;
        let i = wid.x * p.channels + c;
        let r = sh_moments[lid];
        partials_out[i] = r.n;
        partials_out[plane + i] = r.mean;
        partials_out[2u * plane + i] = r.m2;
    }
}

// Workgroup = one channel: combines its chunk partials (thread t takes chunks t, t + FWG, ... in
// order, then a fixed tree), writes mean and biased variance, optionally updates running stats.
@compute @workgroup_size(FWG)
fn batchnorm_stats_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x;
    let plane = p.chunks * p.channels;
    var m = Moments(0.0, 0.0, 0.0);
    for (var k = lid; k < p.chunks; k += FWG) {
        let i = k * p.channels + c;
        m = combine(m, Moments(partials_in[i], partials_in[plane + i], partials_in[2u * plane + i]));
    }
    sh_moments[lid] = m;
    workgroupBarrier();
    for (var s = FWG / 2u; s > 0u; s /= 2u) {
        if (lid < s) {
            sh_moments[lid] = combine(sh_moments[lid], sh_moments[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let r = sh_moments[0];
        let batch_mean = r.mean;
        let batch_var = r.m2 / r.n;
        mean_out[c] = batch_mean;
        var_out[c] = batch_var;
        if ((p.flags & FLAG_UPDATE_RUNNING) != 0u) {
            running_mean[c] = p.momentum * running_mean[c] + (1.0 - p.momentum) * batch_mean;
            running_var[c] = p.momentum * running_var[c] + (1.0 - p.momentum) * batch_var;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: y = act(gamma * (x - mean) * rstd + beta).

@compute @workgroup_size(WG)
fn batchnorm_apply(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let c = l.c;
    if (c >= p.channels) {
        return;
    }
    let m = mean[c];
    let scale = gamma[c] * inverseSqrt(var_[c] + p.eps);
    let b = beta[c];
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let i = r * p.channels + c;
        // x - mean first: exact for x near a large mean, unlike scale * x + shift.
        y[i] = act((x[i] - m) * scale + b);
    }
}

// ---------------------------------------------------------------------------------------------
// Backward. With dz = dy * act'(z) and xhat = (x - mean) * rstd:
//   dbeta = sum dz, dgamma = sum dz * xhat (both modes, with the statistics the forward used);
//   training: dx = gamma * rstd * (dz - mean(dz) - xhat * mean(dz * xhat));
//   inference: dx = gamma * rstd * dz.

var<workgroup> sh_sums: array<vec2<f32>, WG>;

// Workgroup (chunk, channel tile) -> (sum dz, sum dz * xhat) of each channel over the chunk.
@compute @workgroup_size(WG)
fn batchnorm_backward_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let c = l.c;
    var acc = vec2<f32>(0.0, 0.0);
    if (c < p.channels) {
        let m = mean[c];
        let rstd = inverseSqrt(var_[c] + p.eps);
        let scale = gamma[c] * rstd;
        let b = beta[c];
        for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
            let i = r * p.channels + c;
            let centered = x[i] - m;
            // z exactly as batchnorm_apply computes it, so act' agrees with the forward.
            let dz = dy[i] * act_grad(centered * scale + b);
            acc += vec2<f32>(dz, dz * centered * rstd);
        }
    }
    sh_sums[lid] = acc;
    workgroupBarrier();
    // Bound from the uniform directly: barriers need uniform control flow.
    for (var s = WG / p.channel_lanes / 2u; s > 0u; s /= 2u) {
        if (l.lane_r < s) {
            sh_sums[lid] = sh_sums[lid] + sh_sums[lid + s * p.channel_lanes];
        }
        workgroupBarrier();
    }
    if (l.lane_r == 0u && c < p.channels) {
        let plane = p.chunks * p.channels;
        let i = wid.x * p.channels + c;
        partials_out[i] = sh_sums[lid].x;
        partials_out[plane + i] = sh_sums[lid].y;
    }
}

// Workgroup = one channel: sums its chunk partials in a fixed order, writes dgamma/dbeta
// (optionally accumulating) and the coefficients the input-gradient kernel needs.
@compute @workgroup_size(FWG)
fn batchnorm_backward_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x;
    let plane = p.chunks * p.channels;
    var acc = vec2<f32>(0.0, 0.0);
    for (var k = lid; k < p.chunks; k += FWG) {
        let i = k * p.channels + c;
        acc += vec2<f32>(partials_in[i], partials_in[plane + i]);
    }
    sh_sums[lid] = acc;
    workgroupBarrier();
    for (var s = FWG / 2u; s > 0u; s /= 2u) {
        if (lid < s) {
            sh_sums[lid] = sh_sums[lid] + sh_sums[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let sum_dz = sh_sums[0].x;
        let sum_dz_xhat = sh_sums[0].y;
        if ((p.flags & FLAG_ACCUMULATE) != 0u) {
            dbeta[c] = dbeta[c] + sum_dz;
            dgamma[c] = dgamma[c] + sum_dz_xhat;
        } else {
            dbeta[c] = sum_dz;
            dgamma[c] = sum_dz_xhat;
        }
        let rstd = inverseSqrt(var_[c] + p.eps);
        let scale = gamma[c] * rstd;
        var a = 0.0;
        var b = 0.0;
        if ((p.flags & FLAG_BATCH_STATS) != 0u) {
            // The batch statistics depend on x: the mean(dz) and xhat * mean(dz * xhat) terms.
            let inv_n = 1.0 / f32(p.rows);
            a = -scale * rstd * sum_dz_xhat * inv_n;
            b = -scale * sum_dz * inv_n;
        }
        let n = p.channels;
        coef_out[c] = mean[c];
        coef_out[n + c] = scale;
        coef_out[2u * n + c] = beta[c];
        coef_out[3u * n + c] = a;
        coef_out[4u * n + c] = b;
    }
}

// Input gradient: dx = scale * dz + a * (x - mean) + b (+ addend), coefficients from
// batchnorm_backward_finalize.
struct InputCoef {
    mean: f32,
    scale: f32,
    beta: f32,
    a: f32,
    b: f32,
}

fn input_coef(c: u32) -> InputCoef {
    let n = p.channels;
    return InputCoef(coef[c], coef[n + c], coef[2u * n + c], coef[3u * n + c], coef[4u * n + c]);
}

fn input_grad(i: u32, k: InputCoef) -> f32 {
    let centered = x[i] - k.mean;
    let dz = dy[i] * act_grad(centered * k.scale + k.beta);
    return k.scale * dz + k.a * centered + k.b;
}

@compute @workgroup_size(WG)
fn batchnorm_backward_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    if (l.c >= p.channels) {
        return;
    }
    let k = input_coef(l.c);
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let i = r * p.channels + l.c;
        dx[i] = input_grad(i, k);
    }
}

// Same, plus the gradient arriving through the identity shortcut (a separate buffer).
@compute @workgroup_size(WG)
fn batchnorm_backward_input_add(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    if (l.c >= p.channels) {
        return;
    }
    let k = input_coef(l.c);
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let i = r * p.channels + l.c;
        dx[i] = input_grad(i, k) + addend[i];
    }
}
