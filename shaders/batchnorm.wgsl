// Batch norm fused with the following leaky ReLU (slope 0 = ReLU), on NHWC data seen as `rows`
// rows of `channels` values (channel fastest):
//   z = gamma * (x - mean) / sqrt(var + eps) + beta,   y = z if z > 0 else slope * z.
// The derivative of the activation at exactly 0 is `slope`, as in activation.wgsl.
//
// Every kernel that walks the rows uses one tiling: workgroup (wid.x, wid.y) covers the chunk of
// rows [wid.x * rows_per_chunk, ...) and the channel tile wid.y; its 256 threads are
// `channel_lanes` consecutive channel lanes x `256 / channel_lanes` row lanes, so consecutive
// threads read consecutive addresses of a row, and each thread walks several rows (its
// per-channel constants loaded once, no per-element index division). A channel lane is one
// channel in the scalar kernels, up to 16 channels (4 quads) in the *_vec4 kernels below. Which
// rows a row lane walks (interleaved or one contiguous block) is up to the host: see `lane`.
//
// Per-channel reductions (batch statistics, parameter gradients) are deterministic and atomic-free:
// a `*_partial` kernel writes partials per channel to scratch (the scalar kernels one per chunk,
// reduced over the workgroup by a fixed tree; the vec4 ones one per row lane); a `*_finalize`
// kernel (one workgroup per channel) then combines them in a fixed order.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/batchnorm.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> var_: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
// Scratch partials, planes of partials * channels (partial-major): stats (count, mean, M2),
// backward (sum dz, sum dz*xhat).
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
// The same buffers seen as channel quads, for the *_vec4 kernels (channels % 4 == 0).
@group(0) @binding(20) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(21) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(22) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(23) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(24) var<storage, read> addend4: array<vec4<f32>>;
@group(0) @binding(25) var<storage, read> mean4: array<vec4<f32>>;
@group(0) @binding(26) var<storage, read> var_4: array<vec4<f32>>;
@group(0) @binding(27) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(28) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(29) var<storage, read> coef4: array<vec4<f32>>;
@group(0) @binding(30) var<storage, read_write> partials_out4: array<vec4<f32>>;

// Finalize kernels: one workgroup per channel, combining at most a few thousand partials.
const FWG: u32 = 64u;

// The part of the tiling one thread owns: channel lane `c` (may be past the last channel) and
// rows `row_begin, row_begin + row_step, ... < row_end`.
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
    let begin = chunk_begin + lane_r * p.lane_stride;
    // A chunk is exactly row lanes x rows_per_lane rows, so this stays inside the chunk.
    let end = min(p.rows, begin + p.rows_per_lane * p.row_step);
    return Lane(wid.y * lanes + lid % lanes, lane_r, begin, end, p.row_step);
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
        let plane = p.partials * p.channels;
        let i = wid.x * p.channels + c;
        let r = sh_moments[lid];
        partials_out[i] = r.n;
        partials_out[plane + i] = r.mean;
        partials_out[2u * plane + i] = r.m2;
    }
}

// Workgroup = one channel: combines its partials (thread t takes partials t, t + FWG, ... in
// order, then a fixed tree), writes mean and biased variance, optionally updates running stats.
@compute @workgroup_size(FWG)
fn batchnorm_stats_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x;
    let plane = p.partials * p.channels;
    var m = Moments(0.0, 0.0, 0.0);
    for (var k = lid; k < p.partials; k += FWG) {
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
        let plane = p.partials * p.channels;
        let i = wid.x * p.channels + c;
        partials_out[i] = sh_sums[lid].x;
        partials_out[plane + i] = sh_sums[lid].y;
    }
}

// Workgroup = one channel: sums its partials in a fixed order, writes dgamma/dbeta
// (optionally accumulating) and the coefficients the input-gradient kernel needs.
@compute @workgroup_size(FWG)
fn batchnorm_backward_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wid.x;
    let plane = p.partials * p.channels;
    var acc = vec2<f32>(0.0, 0.0);
    for (var k = lid; k < p.partials; k += FWG) {
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

// ---------------------------------------------------------------------------------------------
// vec4 variants of the row-walking kernels, for channels % 4 == 0 (every layer of the network).
// The same buffers as arrays of channel quads; a thread owns QPT consecutive quads (16 channels)
// and walks rows of them. On CPU adapters (lavapipe) every storage access is a loop over the SIMD
// lanes with a bounds check, and every thread's loop iteration has a fixed cost, so fewer, wider
// accesses and more work per thread are much faster than the scalar kernels there. When the quads do not split evenly, a thread's quads past the last one repeat the
// last quad: the elementwise kernels then write the same value twice, and the reductions leave
// the copies out of their partials, so the row loops need no per-quad bounds test.
//
// The reductions do not combine over the workgroup (no shared memory, no barriers): every row
// lane writes its own partials, entry `wid.x * row_lanes + lane_r`, and the finalize kernels
// above combine those in order (`p.partials` = chunks * row lanes).

fn act4(z: vec4<f32>) -> vec4<f32> {
    return select(p.slope * z, z, z > vec4<f32>(0.0));
}

fn act_grad4(z: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(p.slope), vec4<f32>(1.0), z > vec4<f32>(0.0));
}

// The quads of the thread in channel lane `c`: first quad q0 (the thread is idle if
// q0 >= quads) and how many of its QPT quads are real.
struct Quads {
    q0: u32,
    count: u32,
}

fn thread_quads(c: u32) -> Quads {
    let quads = p.channels / 4u;
    let q0 = c * QPT;
    return Quads(q0, min(QPT, quads - min(q0, quads)));
}

// Quad j of the thread (the last real one for j >= count).
fn quad(t: Quads, j: u32) -> u32 {
    return t.q0 + min(j, t.count - 1u);
}

// Index of quad `q` of channel plane `plane` in the vec4 view of the partials of row lane
// `lane_r` in workgroup `wid`.
fn partial_index4(wid: vec3<u32>, lane_r: u32, plane: u32, q: u32) -> u32 {
    let entry = wid.x * (WG / p.channel_lanes) + lane_r;
    return (plane * p.partials + entry) * (p.channels / 4u) + q;
}

// Moments of each channel over the row lane's rows, by Welford: the count is shared by the 16
// channels, so is the reciprocal (one division per row).
@compute @workgroup_size(WG)
fn batchnorm_stats_partial_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let t = thread_quads(l.c);
    if (t.count == 0u) {
        return;
    }
    let quads = p.channels / 4u;
    var q: array<u32, QPT>;
    for (var j = 0u; j < QPT; j++) {
        q[j] = quad(t, j);
    }
    var n = 0.0;
    var mean: array<vec4<f32>, QPT>;
    var m2: array<vec4<f32>, QPT>;
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        n += 1.0;
        let inv_n = 1.0 / n;
        let row = r * quads;
        for (var j = 0u; j < QPT; j++) {
            let v = x4[row + q[j]];
            let d = v - mean[j];
            mean[j] += d * inv_n;
            m2[j] += d * (v - mean[j]);
        }
    }
    // Constant loop bounds everywhere (not j < t.count), so the compiler can unroll the loops
    // and keep the arrays in registers (an apply kernel looping over private arrays up to a
    // uniform bound is several times slower on lavapipe).
    for (var j = 0u; j < QPT; j++) {
        if (j < t.count) {
            partials_out4[partial_index4(wid, l.lane_r, 0u, q[j])] = vec4<f32>(n);
            partials_out4[partial_index4(wid, l.lane_r, 1u, q[j])] = mean[j];
            partials_out4[partial_index4(wid, l.lane_r, 2u, q[j])] = m2[j];
        }
    }
}

// The forward formula's per-quad constants for the thread's quads (apply and the backward
// partials compute z alike).
struct ApplyCoefs4 {
    q: array<u32, QPT>,
    mean: array<vec4<f32>, QPT>,
    rstd: array<vec4<f32>, QPT>,
    scale: array<vec4<f32>, QPT>,
    beta: array<vec4<f32>, QPT>,
}

fn apply_coefs4(t: Quads) -> ApplyCoefs4 {
    var k: ApplyCoefs4;
    for (var j = 0u; j < QPT; j++) {
        let q = quad(t, j);
        k.q[j] = q;
        k.mean[j] = mean4[q];
        k.rstd[j] = inverseSqrt(var_4[q] + p.eps);
        k.scale[j] = gamma4[q] * k.rstd[j];
        k.beta[j] = beta4[q];
    }
    return k;
}

@compute @workgroup_size(WG)
fn batchnorm_apply_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let t = thread_quads(l.c);
    if (t.count == 0u) {
        return;
    }
    let quads = p.channels / 4u;
    let k = apply_coefs4(t);
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let row = r * quads;
        for (var j = 0u; j < QPT; j++) {
            let i = row + k.q[j];
            // x - mean first, as batchnorm_apply.
            y4[i] = act4((x4[i] - k.mean[j]) * k.scale[j] + k.beta[j]);
        }
    }
}

// (sum dz, sum dz * xhat) of each channel over the row lane's rows.
@compute @workgroup_size(WG)
fn batchnorm_backward_partial_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let t = thread_quads(l.c);
    if (t.count == 0u) {
        return;
    }
    let quads = p.channels / 4u;
    let k = apply_coefs4(t);
    var sum_dz: array<vec4<f32>, QPT>;
    // sum dz * (x - mean); times rstd once at the end.
    var sum_dz_centered: array<vec4<f32>, QPT>;
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let row = r * quads;
        for (var j = 0u; j < QPT; j++) {
            let i = row + k.q[j];
            let centered = x4[i] - k.mean[j];
            // z exactly as batchnorm_apply_vec4 computes it, so act' agrees with the forward.
            let dz = dy4[i] * act_grad4(centered * k.scale[j] + k.beta[j]);
            sum_dz[j] += dz;
            sum_dz_centered[j] += dz * centered;
        }
    }
    for (var j = 0u; j < QPT; j++) {
        if (j < t.count) {
            partials_out4[partial_index4(wid, l.lane_r, 0u, k.q[j])] = sum_dz[j];
            partials_out4[partial_index4(wid, l.lane_r, 1u, k.q[j])] = sum_dz_centered[j] * k.rstd[j];
        }
    }
}

// Input gradient, as batchnorm_backward_input: coefficients of the thread's quads.
struct InputCoefs4 {
    q: array<u32, QPT>,
    mean: array<vec4<f32>, QPT>,
    scale: array<vec4<f32>, QPT>,
    beta: array<vec4<f32>, QPT>,
    a: array<vec4<f32>, QPT>,
    b: array<vec4<f32>, QPT>,
}

fn input_coefs4(t: Quads) -> InputCoefs4 {
    let n = p.channels / 4u;
    var k: InputCoefs4;
    for (var j = 0u; j < QPT; j++) {
        let q = quad(t, j);
        k.q[j] = q;
        k.mean[j] = coef4[q];
        k.scale[j] = coef4[n + q];
        k.beta[j] = coef4[2u * n + q];
        k.a[j] = coef4[3u * n + q];
        k.b[j] = coef4[4u * n + q];
    }
    return k;
}

fn input_grad4(i: u32, k: ptr<function, InputCoefs4>, j: u32) -> vec4<f32> {
    let centered = x4[i] - (*k).mean[j];
    let dz = dy4[i] * act_grad4(centered * (*k).scale[j] + (*k).beta[j]);
    return (*k).scale[j] * dz + (*k).a[j] * centered + (*k).b[j];
}

@compute @workgroup_size(WG)
fn batchnorm_backward_input_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let t = thread_quads(l.c);
    if (t.count == 0u) {
        return;
    }
    let quads = p.channels / 4u;
    var k = input_coefs4(t);
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let row = r * quads;
        for (var j = 0u; j < QPT; j++) {
            let i = row + k.q[j];
            dx4[i] = input_grad4(i, &k, j);
        }
    }
}

@compute @workgroup_size(WG)
fn batchnorm_backward_input_add_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = lane(wid, lid);
    let t = thread_quads(l.c);
    if (t.count == 0u) {
        return;
    }
    let quads = p.channels / 4u;
    var k = input_coefs4(t);
    for (var r = l.row_begin; r < l.row_end; r += l.row_step) {
        let row = r * quads;
        for (var j = 0u; j < QPT; j++) {
            let i = row + k.q[j];
            dx4[i] = input_grad4(i, &k, j) + addend4[i];
        }
    }
}
