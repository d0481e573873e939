// Fully connected layer, Keras layout: x [rows, in_f], w [in_f, out_f], b [out_f], y [rows, out_f].
// All three products are 16x16-tiled GEMMs through workgroup memory: one invocation per output
// element, accumulating over k in increasing order (zero padding past the edge adds exact zeros),
// so every result is bitwise reproducible whatever the dispatch.

// The uniform `Params` and the constants shared with the host (WG ...) are declared in
// src/kernels/dense.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// tile_a[m][k], tile_b[k][n] of the current k step.
var<workgroup> tile_a: array<array<f32, TS>, TS>;
var<workgroup> tile_b: array<array<f32, TS>, TS>;

// acc + sum over the tile's k of tile_a[m][k] * tile_b[k][n], in increasing k.
fn tile_dot(acc: f32, m: u32, n: u32) -> f32 {
    var a = acc;
    for (var kk = 0u; kk < TS; kk++) {
        a += tile_a[m][kk] * tile_b[kk][n];
    }
    return a;
}

// y = x w + b. Workgroup (x: out tile, y: row tile).
@compute @workgroup_size(TS, TS)
fn dense_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * TS + lid.y;
    let col = wid.x * TS + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.in_f; k0 += TS) {
        // A[m, k] = x[m, k]: consecutive lid.x read consecutive k.
        let ka = k0 + lid.x;
        var a = 0.0;
        if (row < p.rows && ka < p.in_f) {
            a = x[row * p.in_f + ka];
        }
        tile_a[lid.y][lid.x] = a;
        // B[k, n] = w[k, n]: consecutive lid.x read consecutive n.
        let kb = k0 + lid.y;
        var bv = 0.0;
        if (kb < p.in_f && col < p.out_f) {
            bv = w[kb * p.out_f + col];
        }
        tile_b[lid.y][lid.x] = bv;
        workgroupBarrier();
        acc = tile_dot(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    if (row < p.rows && col < p.out_f) {
        y[row * p.out_f + col] = acc + b[col];
    }
}

// dx = dy w^T: C[r, i] = sum_o dy[r, o] w[i, o]. Workgroup (x: in tile, y: row tile).
@compute @workgroup_size(TS, TS)
fn dense_backward_data(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * TS + lid.y;
    let col = wid.x * TS + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.out_f; k0 += TS) {
        // A[m, k] = dy[m, k].
        let ka = k0 + lid.x;
        var a = 0.0;
        if (row < p.rows && ka < p.out_f) {
            a = dy[row * p.out_f + ka];
        }
        tile_a[lid.y][lid.x] = a;
        // B[k, n] = w[n, k], loaded transposed so consecutive lid.x read consecutive k.
        let nb = wid.x * TS + lid.y;
        let kb = k0 + lid.x;
        var bv = 0.0;
        if (nb < p.in_f && kb < p.out_f) {
            bv = w[nb * p.out_f + kb];
        }
        tile_b[lid.x][lid.y] = bv;
        workgroupBarrier();
        acc = tile_dot(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    if (row < p.rows && col < p.in_f) {
        let idx = row * p.in_f + col;
        if (p.accumulate != 0u) {
            dx[idx] = dx[idx] + acc;
        } else {
            dx[idx] = acc;
        }
    }
}

// dw (+)= x^T dy: C[i, o] = sum_r x[r, i] dy[r, o]. Workgroup (x: out tile, y: in tile).
@compute @workgroup_size(TS, TS)
fn dense_backward_weights(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * TS + lid.y;
    let col = wid.x * TS + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.rows; k0 += TS) {
        // A[m, k] = x[k, m], loaded transposed so consecutive lid.x read consecutive m.
        let ma = wid.y * TS + lid.x;
        let ka = k0 + lid.y;
        var a = 0.0;
        if (ma < p.in_f && ka < p.rows) {
            a = x[ka * p.in_f + ma];
        }
        tile_a[lid.x][lid.y] = a;
        // B[k, n] = dy[k, n].
        let kb = k0 + lid.y;
        var bv = 0.0;
        if (kb < p.rows && col < p.out_f) {
            bv = dy[kb * p.out_f + col];
        }
        tile_b[lid.y][lid.x] = bv;
        workgroupBarrier();
        acc = tile_dot(acc, lid.y, lid.x);
        workgroupBarrier();
    }
    if (row < p.in_f && col < p.out_f) {
        let idx = row * p.out_f + col;
        if (p.accumulate != 0u) {
            dw[idx] = dw[idx] + acc;
        } else {
            dw[idx] = acc;
        }
    }
}

// db (+)= column sums of dy, one invocation per output feature, rows in order.
@compute @workgroup_size(BIAS_WG)
fn dense_backward_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if (o >= p.out_f) {
        return;
    }
    var acc = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        acc += dy[r * p.out_f + o];
    }
    if (p.accumulate != 0u) {
        db[o] = db[o] + acc;
    } else {
        db[o] = acc;
    }
}
