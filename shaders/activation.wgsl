// Leaky ReLU, standalone: y = x if x > 0 else slope * x (slope 0 is plain ReLU).
// The derivative at exactly 0 is taken as `slope`, matching the CPU reference.
// Batch norm fuses the same activation into its apply/backward kernels (batchnorm.wgsl);
// these entry points serve places where no batch norm precedes the activation.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/activation.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn activation_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.len) {
        return;
    }
    let v = x[i];
    y[i] = select(p.slope * v, v, v > 0.0);
}

@compute @workgroup_size(WG)
fn activation_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= p.len) {
        return;
    }
    let g = select(p.slope, 1.0, x[i] > 0.0) * dy[i];
    if (p.accumulate != 0u) {
        dx[i] = dx[i] + g;
    } else {
        dx[i] = g;
    }
}
