// Global average pooling over NHWC activations with H*W flattened: x [batch, hw, channels] ->
// y [batch, channels]. Each output is summed by one invocation in a fixed order (p = 0..hw), so
// results are bitwise reproducible; neighbouring invocations read neighbouring channels.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/pool.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// One invocation per (n, c).
@compute @workgroup_size(WG)
fn global_avg_pool_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.batch * p.channels) {
        return;
    }
    let n = i / p.channels;
    let c = i % p.channels;
    var idx = n * p.hw * p.channels + c;
    var acc = 0.0;
    for (var q = 0u; q < p.hw; q++) {
        acc += x[idx];
        idx += p.channels;
    }
    y[i] = acc / f32(p.hw);
}

// One invocation per element of dx: every position receives dy / hw.
@compute @workgroup_size(WG)
fn global_avg_pool_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    let per_image = p.hw * p.channels;
    if (i >= p.batch * per_image) {
        return;
    }
    let n = i / per_image;
    let c = i % p.channels;
    let g = dy[n * p.channels + c] / f32(p.hw);
    if (p.accumulate != 0u) {
        dx[i] = dx[i] + g;
    } else {
        dx[i] = g;
    }
}
