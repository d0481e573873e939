// 2D convolution (NHWC activations, HWIO weights, no bias, TensorFlow "SAME" padding) as
// implicit GEMM: the im2col matrix is never stored; each workgroup gathers its tile of it into
// workgroup memory and multiplies tiles there.
//
//   forward            y[M=N*Ho*Wo, Cout] = im2col(x)[M, K=KH*KW*Cin] * w[K, Cout] (+ residual)
//   backward_data      dx[M=N*H*W, Cin]   = gather(dy)[M, K=KH*KW*Cout] * w^T[K, Cin]
//   backward_weights   dw[M=KH*KW*Cin, Cout] = sum over R=N*Ho*Wo rows of im2col(x)^T * dy,
//                      the R rows cut into `splits` chunks (split-K); each chunk writes its
//                      partial product, and `conv2d_backward_weights_reduce` adds the chunks in
//                      fixed order (deterministic, no atomics).
//
// Each invocation owns a 4x4 block of outputs. Tiles live in workgroup memory as vec4s, always
// packed along the direction that is contiguous in global memory (channels), so both staging
// (global -> workgroup) and the inner products use vec4 loads: on CPU adapters (lavapipe) every
// load is a per-lane loop, so a vec4 load costs about what a scalar one does.
// When the packed channel count is not a multiple of 4 (the RGB stem, odd test shapes) the
// staging falls back to scalar loads; the inner loops are the same.

// Tile sizes; mirrored in src/kernels/conv2d.rs. TILE_K must be a multiple of 4, TILE_M and
// TILE_N multiples of 4, and WG a multiple of TILE_M / 4 and of TILE_K / 4.
const TILE_M: u32 = 128u;
const TILE_N: u32 = 32u;
const TILE_K: u32 = 16u;
// One invocation per 4x4 output block.
const WG: u32 = (TILE_M / 4u) * (TILE_N / 4u);
// vec4s per tile, and how many each invocation stages (rounded up; extra ones are skipped).
const A_VEC4S: u32 = TILE_M * TILE_K / 4u;
const B_VEC4S: u32 = TILE_K * TILE_N / 4u;
const A_LOADS: u32 = (A_VEC4S + WG - 1u) / WG;
const B_LOADS: u32 = (B_VEC4S + WG - 1u) / WG;
const REDUCE_WG: u32 = 256u;

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    kernel: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    // 1: out += result instead of out = result (gradients; forward: add `residual`).
    accumulate: u32,
    gemm_m: u32,
    gemm_n: u32,
    gemm_k: u32,
    // Number of M tiles; they may be spread over workgroup_id.y and .z (65,535 per dimension).
    tiles_m: u32,
    // backward_weights: rows of the reduction per split-K chunk (a multiple of TILE_K), chunks.
    split_rows: u32,
    splits: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Inputs are bound twice, as scalars and as vec4s (same range): the vec4 view serves aligned
// channel counts, the scalar one the rest.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read> residual: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;
@group(0) @binding(10) var<storage, read_write> partials: array<f32>;
@group(0) @binding(11) var<storage, read> partials_in: array<f32>;
@group(0) @binding(12) var<storage, read_write> dw: array<f32>;

var<workgroup> tile_a: array<vec4<f32>, A_VEC4S>;
var<workgroup> tile_b: array<vec4<f32>, B_VEC4S>;

// ---------------------------------------------------------------------------------------------
// Index helpers

// A kernel tap and a channel: the decomposition of a GEMM index k = (kh * KW + kw) * C + c.
struct Tap {
    kh: i32,
    kw: i32,
    c: u32,
}

fn decode_tap(k: u32, channels: u32) -> Tap {
    let t = k / channels;
    return Tap(i32(t / p.kernel), i32(t % p.kernel), k % channels);
}

// An output position (n, oh, ow) seen from the input: its top-left input pixel under SAME padding.
struct Window {
    // First element of image n in x.
    image: u32,
    h0: i32,
    w0: i32,
}

fn decode_window(r: u32) -> Window {
    let ow = r % p.out_w;
    let t = r / p.out_w;
    let oh = t % p.out_h;
    let n = t / p.out_h;
    return Window(
        n * p.in_h * p.in_w * p.in_c,
        i32(oh * p.stride) - i32(p.pad_top),
        i32(ow * p.stride) - i32(p.pad_left),
    );
}

// Element index in x of channel c under tap t of window v, or -1 in the padding.
fn window_index(v: Window, t: Tap, c: u32) -> i32 {
    let ih = v.h0 + t.kh;
    let iw = v.w0 + t.kw;
    if (ih < 0 || iw < 0 || ih >= i32(p.in_h) || iw >= i32(p.in_w)) {
        return -1;
    }
    return i32(v.image + (u32(ih) * p.in_w + u32(iw)) * p.in_c + c);
}

// The four GEMM indices k..k+3 (= (kh, kw, ci)) of x under window v; `t` is decode_tap(k).
// Zeros in the padding and past KH*KW*Cin. With in_c a multiple of 4 the quad is one tap and
// four contiguous channels; otherwise each index is decoded on its own.
fn load_x_window(v: Window, k: u32, t: Tap) -> vec4<f32> {
    let k_end = p.kernel * p.kernel * p.in_c;
    if ((p.in_c & 3u) == 0u) {
        let i = window_index(v, t, t.c);
        if (k >= k_end || i < 0) {
            return vec4<f32>(0.0);
        }
        return x4[u32(i) / 4u];
    }
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < k_end) {
            let tj = decode_tap(k + j, p.in_c);
            let i = window_index(v, tj, tj.c);
            if (i >= 0) {
                r[j] = x[u32(i)];
            }
        }
    }
    return r;
}

// Which M tile this workgroup computes (M tiles may spill from .y into .z).
fn tile_m_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.z * nwg.y + wid.y;
}

// ---------------------------------------------------------------------------------------------
// Tile products. Invocation (tm, tn) owns rows 4tm..4tm+3 and columns 4tn..4tn+3 of the tile;
// acc[i] holds row i's four columns.

// A packed along k ([TILE_M][TILE_K/4]), B packed along n ([TILE_K][TILE_N/4]).
fn product_ak_bn(acc: ptr<function, array<vec4<f32>, 4>>, tm: u32, tn: u32) {
    for (var kq = 0u; kq < TILE_K / 4u; kq++) {
        let b = mat4x4<f32>(
            tile_b[(kq * 4u + 0u) * (TILE_N / 4u) + tn],
            tile_b[(kq * 4u + 1u) * (TILE_N / 4u) + tn],
            tile_b[(kq * 4u + 2u) * (TILE_N / 4u) + tn],
            tile_b[(kq * 4u + 3u) * (TILE_N / 4u) + tn],
        );
        for (var i = 0u; i < 4u; i++) {
            // b * a = sum over the 4 k of a[k] * (row k of B).
            (*acc)[i] += b * tile_a[(tm * 4u + i) * (TILE_K / 4u) + kq];
        }
    }
}

// A packed along k ([TILE_M][TILE_K/4]), B packed along k ([TILE_N][TILE_K/4]).
fn product_ak_bk(acc: ptr<function, array<vec4<f32>, 4>>, tm: u32, tn: u32) {
    for (var kq = 0u; kq < TILE_K / 4u; kq++) {
        let b = mat4x4<f32>(
            tile_b[(tn * 4u + 0u) * (TILE_K / 4u) + kq],
            tile_b[(tn * 4u + 1u) * (TILE_K / 4u) + kq],
            tile_b[(tn * 4u + 2u) * (TILE_K / 4u) + kq],
            tile_b[(tn * 4u + 3u) * (TILE_K / 4u) + kq],
        );
        for (var i = 0u; i < 4u; i++) {
            // a * b = the dot products of a with each column j of the tile.
            (*acc)[i] += tile_a[(tm * 4u + i) * (TILE_K / 4u) + kq] * b;
        }
    }
}

// A packed along m ([TILE_K][TILE_M/4]), B packed along n ([TILE_K][TILE_N/4]).
fn product_am_bn(acc: ptr<function, array<vec4<f32>, 4>>, tm: u32, tn: u32) {
    for (var k = 0u; k < TILE_K; k++) {
        let a = tile_a[k * (TILE_M / 4u) + tm];
        let b = tile_b[k * (TILE_N / 4u) + tn];
        for (var i = 0u; i < 4u; i++) {
            (*acc)[i] += a[i] * b;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: rows m = (n, oh, ow), k = (kh, kw, ci), columns co.

// Four output channels co..co+3 of weight row k (zeros past the edges).
fn load_w_row(k: u32, co: u32) -> vec4<f32> {
    if (k >= p.gemm_k) {
        return vec4<f32>(0.0);
    }
    if ((p.out_c & 3u) == 0u) {
        if (co >= p.out_c) {
            return vec4<f32>(0.0);
        }
        return w4[(k * p.out_c + co) / 4u];
    }
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (co + j < p.out_c) {
            r[j] = w[k * p.out_c + co + j];
        }
    }
    return r;
}

@compute @workgroup_size(WG)
fn conv2d_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile_m = tile_m_index(wid, nwg);
    if (tile_m >= p.tiles_m) {
        return;
    }
    let m0 = tile_m * TILE_M;
    let n0 = wid.x * TILE_N;

    // The A rows this invocation stages stay the same over the K loop: decode them once.
    // It always stages the same k quad (WG is a multiple of TILE_K / 4).
    let stage_kq = lid % (TILE_K / 4u);
    var rows: array<Window, A_LOADS>;
    var row_ok: array<bool, A_LOADS>;
    for (var j = 0u; j < A_LOADS; j++) {
        let m = m0 + (lid + j * WG) / (TILE_K / 4u);
        rows[j] = decode_window(m);
        row_ok[j] = m < p.gemm_m && lid + j * WG < A_VEC4S;
    }

    let tm = lid / (TILE_N / 4u);
    let tn = lid % (TILE_N / 4u);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.gemm_k; k0 += TILE_K) {
        let k = k0 + stage_kq * 4u;
        let tap = decode_tap(k, p.in_c);
        for (var j = 0u; j < A_LOADS; j++) {
            if (row_ok[j]) {
                tile_a[lid + j * WG] = load_x_window(rows[j], k, tap);
            } else if (lid + j * WG < A_VEC4S) {
                tile_a[lid + j * WG] = vec4<f32>(0.0);
            }
        }
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            if (i < B_VEC4S) {
                tile_b[i] = load_w_row(k0 + i / (TILE_N / 4u), n0 + (i % (TILE_N / 4u)) * 4u);
            }
        }
        workgroupBarrier();
        product_ak_bn(&acc, tm, tn);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm * 4u + i;
        if (m >= p.gemm_m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tn * 4u + j;
            if (n < p.gemm_n) {
                let o = m * p.gemm_n + n;
                var v = acc[i][j];
                if (p.accumulate != 0u) {
                    v += residual[o];
                }
                y[o] = v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward data: rows m = input positions (n, ih, iw), k = (kh, kw, co), columns ci.
// dx[n, ih, iw, ci] = sum over taps whose output position oh = (ih + pad_top - kh) / stride is
// whole and in range of dy[n, oh, ow, co] * w[kh, kw, ci, co].

struct Pixel {
    // First element of image n in dy.
    image: u32,
    // ih + pad_top and iw + pad_left.
    h: i32,
    w: i32,
}

fn decode_pixel(m: u32) -> Pixel {
    let iw = m % p.in_w;
    let t = m / p.in_w;
    let ih = t % p.in_h;
    let n = t / p.in_h;
    return Pixel(n * p.out_h * p.out_w * p.out_c, i32(ih + p.pad_top), i32(iw + p.pad_left));
}

// The output coordinate that tap offset `d` reaches from padded input coordinate `v`,
// or -1 when there is none (negative, between strides, or past `size`).
fn strided_source(v: i32, d: i32, size: u32) -> i32 {
    let s = v - d;
    if (s < 0) {
        return -1;
    }
    if (p.stride == 1u) {
        return select(-1, s, s < i32(size));
    }
    let o = u32(s) / p.stride;
    if (o * p.stride != u32(s) || o >= size) {
        return -1;
    }
    return i32(o);
}

// dy at the output position that reaches pixel q under tap t, channel co (-1: none).
fn gather_index(q: Pixel, t: Tap) -> i32 {
    let oh = strided_source(q.h, t.kh, p.out_h);
    let ow = strided_source(q.w, t.kw, p.out_w);
    if (oh < 0 || ow < 0) {
        return -1;
    }
    return i32(q.image + (u32(oh) * p.out_w + u32(ow)) * p.out_c + t.c);
}

// GEMM indices k..k+3 (= (kh, kw, co)) of the gathered dy for pixel q; `t` is decode_tap(k).
fn load_dy_gather(q: Pixel, k: u32, t: Tap) -> vec4<f32> {
    if ((p.out_c & 3u) == 0u) {
        let i = gather_index(q, t);
        if (k >= p.gemm_k || i < 0) {
            return vec4<f32>(0.0);
        }
        return dy4[u32(i) / 4u];
    }
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < p.gemm_k) {
            let i = gather_index(q, decode_tap(k + j, p.out_c));
            if (i >= 0) {
                r[j] = dy[u32(i)];
            }
        }
    }
    return r;
}

fn w_index(t: Tap, ci: u32) -> u32 {
    return ((u32(t.kh) * p.kernel + u32(t.kw)) * p.in_c + ci) * p.out_c + t.c;
}

// GEMM indices k..k+3 (= (kh, kw, co)) of the weights for input channel ci: w^T[k, ci].
fn load_w_transposed(k: u32, t: Tap, ci: u32) -> vec4<f32> {
    if (ci >= p.in_c) {
        return vec4<f32>(0.0);
    }
    if ((p.out_c & 3u) == 0u) {
        if (k >= p.gemm_k) {
            return vec4<f32>(0.0);
        }
        return w4[w_index(t, ci) / 4u];
    }
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < p.gemm_k) {
            r[j] = w[w_index(decode_tap(k + j, p.out_c), ci)];
        }
    }
    return r;
}

@compute @workgroup_size(WG)
fn conv2d_backward_data(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile_m = tile_m_index(wid, nwg);
    if (tile_m >= p.tiles_m) {
        return;
    }
    let m0 = tile_m * TILE_M;
    let n0 = wid.x * TILE_N;

    // Both tiles are packed along k, and this invocation always stages the same k quad of both.
    let stage_kq = lid % (TILE_K / 4u);
    var pixels: array<Pixel, A_LOADS>;
    var pixel_ok: array<bool, A_LOADS>;
    for (var j = 0u; j < A_LOADS; j++) {
        let m = m0 + (lid + j * WG) / (TILE_K / 4u);
        pixels[j] = decode_pixel(m);
        pixel_ok[j] = m < p.gemm_m && lid + j * WG < A_VEC4S;
    }

    let tm = lid / (TILE_N / 4u);
    let tn = lid % (TILE_N / 4u);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.gemm_k; k0 += TILE_K) {
        let k = k0 + stage_kq * 4u;
        let tap = decode_tap(k, p.out_c);
        for (var j = 0u; j < A_LOADS; j++) {
            let i = lid + j * WG;
            if (pixel_ok[j]) {
                tile_a[i] = load_dy_gather(pixels[j], k, tap);
            } else if (i < A_VEC4S) {
                tile_a[i] = vec4<f32>(0.0);
            }
        }
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            if (i < B_VEC4S) {
                tile_b[i] = load_w_transposed(k, tap, n0 + i / (TILE_K / 4u));
            }
        }
        workgroupBarrier();
        product_ak_bk(&acc, tm, tn);
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm * 4u + i;
        if (m >= p.gemm_m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tn * 4u + j;
            if (n < p.gemm_n) {
                let o = m * p.gemm_n + n;
                if (p.accumulate != 0u) {
                    dx[o] = dx[o] + acc[i][j];
                } else {
                    dx[o] = acc[i][j];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward weights: rows m = (kh, kw, ci), columns co, reduction over r = (n, oh, ow) in
// chunk wid.z: partials[chunk, m, co] = sum over its r of x[window(r) under tap m] * dy[r, co].

// Four output channels co..co+3 of dy row r (zeros past the edges).
fn load_dy_row(r: u32, co: u32) -> vec4<f32> {
    if ((p.out_c & 3u) == 0u) {
        if (co >= p.out_c) {
            return vec4<f32>(0.0);
        }
        return dy4[(r * p.out_c + co) / 4u];
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (co + j < p.out_c) {
            v[j] = dy[r * p.out_c + co + j];
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn conv2d_backward_weights(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let m0 = wid.y * TILE_M;
    let n0 = wid.x * TILE_N;
    let chunk = wid.z;
    let r_begin = chunk * p.split_rows;
    let r_end = min(r_begin + p.split_rows, p.gemm_k);

    // This invocation always stages the same four rows m (one tap, channels c..c+3).
    let stage_m = m0 + (lid % (TILE_M / 4u)) * 4u;
    let tap = decode_tap(stage_m, p.in_c);

    let tm = lid / (TILE_N / 4u);
    let tn = lid % (TILE_N / 4u);
    var acc: array<vec4<f32>, 4>;
    for (var k0 = r_begin; k0 < r_end; k0 += TILE_K) {
        for (var j = 0u; j < A_LOADS; j++) {
            let i = lid + j * WG;
            let r = k0 + i / (TILE_M / 4u);
            if (i < A_VEC4S) {
                var v = vec4<f32>(0.0);
                if (r < r_end) {
                    v = load_x_window(decode_window(r), stage_m, tap);
                }
                tile_a[i] = v;
            }
        }
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            let r = k0 + i / (TILE_N / 4u);
            if (i < B_VEC4S) {
                var v = vec4<f32>(0.0);
                if (r < r_end) {
                    v = load_dy_row(r, n0 + (i % (TILE_N / 4u)) * 4u);
                }
                tile_b[i] = v;
            }
        }
        workgroupBarrier();
        product_am_bn(&acc, tm, tn);
        workgroupBarrier();
    }

    let base = chunk * p.gemm_m * p.gemm_n;
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm * 4u + i;
        if (m >= p.gemm_m) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tn * 4u + j;
            if (n < p.gemm_n) {
                partials[base + m * p.gemm_n + n] = acc[i][j];
            }
        }
    }
}

// dw (+)= the split-K partials, added in chunk order.
@compute @workgroup_size(REDUCE_WG)
fn conv2d_backward_weights_reduce(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.y * nwg.x + wid.x) * REDUCE_WG + lid;
    let len = p.gemm_m * p.gemm_n;
    if (i >= len) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < p.splits; c++) {
        s += partials_in[c * len + i];
    }
    if (p.accumulate != 0u) {
        dw[i] = dw[i] + s;
    } else {
        dw[i] = s;
    }
}
