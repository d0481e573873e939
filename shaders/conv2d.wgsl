// 2D convolution (NHWC activations, HWIO weights, no bias, TensorFlow "SAME" padding) as
// implicit GEMM: the im2col matrix is never stored; each workgroup gathers its tile of it into
// workgroup memory and multiplies tiles there.
//
//   forward            y[M=N*Ho*Wo, Cout] = im2col(x)[M, K=KH*KW*Cin] * w[K, Cout] (+ residual)
//   backward_data      dx[M=N*H*W, Cin]   = gather(dy)[M, K=KH*KW*Cout] * w^T[K, Cin]
//   backward_weights   dw[M=KH*KW*Cin, Cout] = sum over R=N*Ho*Wo rows of im2col(x)^T * dy;
//                      the R rows are cut into chunks (split-K), each chunk writes its partial
//                      product, and `conv2d_backward_weights_reduce` adds the chunks in fixed
//                      order (deterministic, no atomics).
//
// Each invocation owns an 8 x 4 block of outputs (8 rows of vec4 accumulators). Tiles live in
// workgroup memory as vec4s, packed along whichever direction is contiguous in global memory
// (channels), so staging (global -> workgroup) and the inner products both use vec4 loads. On CPU
// adapters (lavapipe) each load is a loop over SIMD lanes, so a vec4 load costs about what a
// scalar one does, and big register tiles (more multiply-adds per load) pay off.
//
// Every pass has two entry points sharing one body: `_aligned` for channel counts that are
// multiples of TILE_K (every WideResNet layer but the RGB stem), where a K tile never crosses a
// kernel tap, so the tap is the same for the whole tile and is walked with counters (no
// divisions), and loads are vec4s; `_general` for any channel count, decoding every index. The
// choice is a constant argument, folded away at compile time: on lavapipe the general path left
// behind a runtime branch, even a uniform one, slowed the aligned K loop by about 40%.

// Tile sizes; mirrored in src/kernels/conv2d.rs. TILE_K must be a multiple of 4, TILE_M of
// THREAD_M and of TILE_K, TILE_N of 4, and TILE_M a multiple of WG (each invocation stages whole
// A rows). TILE_M = 9 * 16 divides the weight-gradient rows (9 * Cin) of every 3x3 layer.
const TILE_M: u32 = 144u;
const TILE_N: u32 = 32u;
const TILE_K: u32 = 16u;
// Rows per invocation. The tile products below are unrolled for exactly 8.
const THREAD_M: u32 = 8u;
const WG: u32 = (TILE_M / THREAD_M) * (TILE_N / 4u);
// vec4s per tile row in each packing.
const KQ: u32 = TILE_K / 4u;
const MQ: u32 = TILE_M / 4u;
const NQ: u32 = TILE_N / 4u;
const A_VEC4S: u32 = TILE_M * KQ;
const B_VEC4S: u32 = TILE_K * NQ;
// A rows each invocation stages (forward, backward data), B vec4s (rounded up).
const A_ROWS: u32 = TILE_M / WG;
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
    // 1: out += result instead of out = result (gradients); forward: add `residual`.
    accumulate: u32,
    gemm_m: u32,
    gemm_n: u32,
    gemm_k: u32,
    // Number of M tiles; they may be spread over workgroup_id.y and .z (65,535 per dimension).
    tiles_m: u32,
    // backward_weights: reduction rows per split-K chunk (a multiple of TILE_K), chunks.
    split_rows: u32,
    splits: u32,
    // backward_data: M tiles per stride phase (tiles_m = stride^2 * phase_tiles).
    phase_tiles: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Inputs are bound twice, as scalars and as vec4s (same range): the vec4 view serves channel
// counts that are multiples of 4, the scalar one the rest.
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

// a / b for a < 2^24 without an integer division (scalarized on CPUs): the f32 quotient is off
// by at most one, then corrected.
fn div_small(a: u32, b: u32) -> u32 {
    var q = u32(f32(a) / f32(b));
    q = select(q, q - 1u, q * b > a);
    return select(q, q + 1u, (q + 1u) * b <= a);
}

// A kernel tap and a channel: the decomposition of a GEMM index k = (kh * KW + kw) * C + c.
struct Tap {
    kh: u32,
    kw: u32,
    c: u32,
}

fn decode_tap(k: u32, channels: u32) -> Tap {
    let t = div_small(k, channels);
    let kh = div_small(t, p.kernel);
    return Tap(kh, t - kh * p.kernel, k - t * channels);
}

// The next TILE_K indices after `t` when channels is a multiple of TILE_K (uniform counters).
fn next_tap(t: Tap, channels: u32) -> Tap {
    var n = Tap(t.kh, t.kw, t.c + TILE_K);
    if (n.c >= channels) {
        n.c = 0u;
        n.kw += 1u;
        if (n.kw == p.kernel) {
            n.kw = 0u;
            n.kh += 1u;
        }
    }
    return n;
}

// An output position r = (n, oh, ow) seen from the input: its top-left input pixel.
struct Window {
    // First element of image n in x.
    image: u32,
    h0: i32,
    w0: i32,
}

fn decode_window(r: u32) -> Window {
    let t = div_small(r, p.out_w);
    let ow = r - t * p.out_w;
    let n = div_small(t, p.out_h);
    let oh = t - n * p.out_h;
    return Window(
        n * p.in_h * p.in_w * p.in_c,
        i32(oh * p.stride) - i32(p.pad_top),
        i32(ow * p.stride) - i32(p.pad_left),
    );
}

// Element index in x of channel t.c under tap t of window v, or -1 in the padding.
fn window_index(v: Window, t: Tap) -> i32 {
    let ih = v.h0 + i32(t.kh);
    let iw = v.w0 + i32(t.kw);
    if (ih < 0 || iw < 0 || ih >= i32(p.in_h) || iw >= i32(p.in_w)) {
        return -1;
    }
    return i32(v.image + (u32(ih) * p.in_w + u32(iw)) * p.in_c + t.c);
}

// The four im2col indices k..k+3 (= (kh, kw, ci)) of window v, each decoded on its own (any
// channel count); zeros in the padding and past KH*KW*Cin.
fn load_x_window_scalar(v: Window, k: u32) -> vec4<f32> {
    let k_end = p.kernel * p.kernel * p.in_c;
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < k_end) {
            let i = window_index(v, decode_tap(k + j, p.in_c));
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
// Tile products. Invocation (tm, tn) owns rows 8tm..8tm+7 and columns 4tn..4tn+3 of the tile;
// acc[i] holds row i's four columns. Unrolled by hand: compilers keep the accumulators in
// registers only when every index is a constant.

// A packed along k ([TILE_M][KQ]), B packed along n ([TILE_K][NQ]).
fn product_ak_bn(acc: ptr<function, array<vec4<f32>, 8>>, tm: u32, tn: u32) {
    for (var kq = 0u; kq < KQ; kq++) {
        // b * a = sum over the 4 k of a[k] * (row k of B).
        let b = mat4x4<f32>(
            tile_b[(kq * 4u + 0u) * NQ + tn],
            tile_b[(kq * 4u + 1u) * NQ + tn],
            tile_b[(kq * 4u + 2u) * NQ + tn],
            tile_b[(kq * 4u + 3u) * NQ + tn],
        );
        let a = tm * THREAD_M * KQ + kq;
        (*acc)[0] += b * tile_a[a];
        (*acc)[1] += b * tile_a[a + KQ];
        (*acc)[2] += b * tile_a[a + 2u * KQ];
        (*acc)[3] += b * tile_a[a + 3u * KQ];
        (*acc)[4] += b * tile_a[a + 4u * KQ];
        (*acc)[5] += b * tile_a[a + 5u * KQ];
        (*acc)[6] += b * tile_a[a + 6u * KQ];
        (*acc)[7] += b * tile_a[a + 7u * KQ];
    }
}

// A packed along k ([TILE_M][KQ]), B packed along k ([TILE_N][KQ]).
fn product_ak_bk(acc: ptr<function, array<vec4<f32>, 8>>, tm: u32, tn: u32) {
    for (var kq = 0u; kq < KQ; kq++) {
        // a * b = the dot products of a with each of the four B columns.
        let b = mat4x4<f32>(
            tile_b[(tn * 4u + 0u) * KQ + kq],
            tile_b[(tn * 4u + 1u) * KQ + kq],
            tile_b[(tn * 4u + 2u) * KQ + kq],
            tile_b[(tn * 4u + 3u) * KQ + kq],
        );
        let a = tm * THREAD_M * KQ + kq;
        (*acc)[0] += tile_a[a] * b;
        (*acc)[1] += tile_a[a + KQ] * b;
        (*acc)[2] += tile_a[a + 2u * KQ] * b;
        (*acc)[3] += tile_a[a + 3u * KQ] * b;
        (*acc)[4] += tile_a[a + 4u * KQ] * b;
        (*acc)[5] += tile_a[a + 5u * KQ] * b;
        (*acc)[6] += tile_a[a + 6u * KQ] * b;
        (*acc)[7] += tile_a[a + 7u * KQ] * b;
    }
}

// A packed along m ([TILE_K][MQ]), B packed along n ([TILE_K][NQ]).
fn product_am_bn(acc: ptr<function, array<vec4<f32>, 8>>, tm: u32, tn: u32) {
    for (var k = 0u; k < TILE_K; k++) {
        let a0 = tile_a[k * MQ + tm * 2u];
        let a1 = tile_a[k * MQ + tm * 2u + 1u];
        let b = tile_b[k * NQ + tn];
        (*acc)[0] += a0.x * b;
        (*acc)[1] += a0.y * b;
        (*acc)[2] += a0.z * b;
        (*acc)[3] += a0.w * b;
        (*acc)[4] += a1.x * b;
        (*acc)[5] += a1.y * b;
        (*acc)[6] += a1.z * b;
        (*acc)[7] += a1.w * b;
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: rows m = (n, oh, ow), k = (kh, kw, ci), columns co.

// Four output channels co..co+3 of weight row k (zeros past the edges).
fn load_w_row(k: u32, co: u32, fast: bool) -> vec4<f32> {
    if (k >= p.gemm_k) {
        return vec4<f32>(0.0);
    }
    if (fast) {
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

// y[m, n..n+3] = v (+ residual), within bounds.
fn store_forward(m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.gemm_m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.gemm_n) {
            let o = m * p.gemm_n + n + j;
            if (p.accumulate != 0u) {
                y[o] = v[j] + residual[o];
            } else {
                y[o] = v[j];
            }
        }
    }
}

// `fast`: in_c % TILE_K == 0 and out_c % 4 == 0.
fn forward(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, fast: bool) {
    let tile_m = tile_m_index(wid, nwg);
    if (tile_m >= p.tiles_m) {
        return;
    }
    let m0 = tile_m * TILE_M;
    let n0 = wid.x * TILE_N;

    // The A rows this invocation stages are the same in every K step: decode them once.
    var windows: array<Window, A_ROWS>;
    for (var r = 0u; r < A_ROWS; r++) {
        windows[r] = decode_window(m0 + lid + r * WG);
    }
    var tap = Tap(0u, 0u, 0u);

    var acc: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < p.gemm_k; k0 += TILE_K) {
        for (var r = 0u; r < A_ROWS; r++) {
            let row = lid + r * WG;
            let ok = m0 + row < p.gemm_m;
            if (fast) {
                // One tap for the whole tile: four contiguous vec4s of one pixel.
                var i = -1;
                if (ok) {
                    i = window_index(windows[r], tap);
                }
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (i >= 0) {
                        v = x4[u32(i) / 4u + q];
                    }
                    tile_a[row * KQ + q] = v;
                }
            } else {
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (ok) {
                        v = load_x_window_scalar(windows[r], k0 + q * 4u);
                    }
                    tile_a[row * KQ + q] = v;
                }
            }
        }
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            if (i < B_VEC4S) {
                tile_b[i] = load_w_row(k0 + i / NQ, n0 + (i % NQ) * 4u, fast);
            }
        }
        workgroupBarrier();
        product_ak_bn(&acc, lid / NQ, lid % NQ);
        workgroupBarrier();
        tap = next_tap(tap, p.in_c);
    }

    let m = m0 + (lid / NQ) * THREAD_M;
    let n = n0 + (lid % NQ) * 4u;
    store_forward(m, n, acc[0]);
    store_forward(m + 1u, n, acc[1]);
    store_forward(m + 2u, n, acc[2]);
    store_forward(m + 3u, n, acc[3]);
    store_forward(m + 4u, n, acc[4]);
    store_forward(m + 5u, n, acc[5]);
    store_forward(m + 6u, n, acc[6]);
    store_forward(m + 7u, n, acc[7]);
}

@compute @workgroup_size(WG)
fn conv2d_forward_aligned(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    forward(wid, nwg, lid, true);
}

@compute @workgroup_size(WG)
fn conv2d_forward_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    forward(wid, nwg, lid, false);
}

// ---------------------------------------------------------------------------------------------
// Backward data: dx[n, ih, iw, ci] = sum over the taps (kh, kw) for which
// oh = (ih + pad_top - kh) / stride is whole and in range (likewise ow) of
// dy[n, oh, ow, co] * w[kh, kw, ci, co].
//
// With stride s, whether oh is whole depends only on the phase (ih + pad_top) mod s: the input
// positions of one phase (ph, pw) all take the taps kh = ph, ph + s, ... and kw = pw, pw + s, ...
// So the GEMM runs per phase (s * s of them, M tiles numbered phase by phase): rows m = the
// phase's positions (n, jh, jw), k = (tap row a, tap column b, co) over the phase's taps only,
// columns ci. Stride 2 thereby skips the 3/4 of (position, tap) pairs that are zero.

struct Phase {
    // Taps kh = kh0 + stride * a, kw = kw0 + stride * b.
    kh0: u32,
    kw0: u32,
    taps_w: u32,
    // Input positions ih = ih0 + stride * jh for jh < count_h (likewise iw).
    ih0: u32,
    iw0: u32,
    count_h: u32,
    count_w: u32,
    // GEMM sizes of this phase.
    rows: u32,
    k: u32,
}

// (x - d) mod s for d < s, the count of x0, x0 + s, ... below `size`, and of taps below kernel.
fn phase_start(x: u32, d: u32) -> u32 {
    return (x + p.stride - d) % p.stride;
}

fn strided_count(start: u32, size: u32) -> u32 {
    return select(0u, (size - start + p.stride - 1u) / p.stride, start < size);
}

fn decode_phase(phase: u32) -> Phase {
    let ph = phase / p.stride;
    let pw = phase % p.stride;
    var f: Phase;
    f.kh0 = ph;
    f.kw0 = pw;
    f.taps_w = strided_count(pw, p.kernel);
    f.ih0 = phase_start(ph, p.pad_top % p.stride);
    f.iw0 = phase_start(pw, p.pad_left % p.stride);
    f.count_h = strided_count(f.ih0, p.in_h);
    f.count_w = strided_count(f.iw0, p.in_w);
    f.rows = p.batch * f.count_h * f.count_w;
    f.k = strided_count(ph, p.kernel) * f.taps_w * p.out_c;
    return f;
}

// Phase row m as seen from dy.
struct Pixel {
    // First element of image n in dy.
    image: u32,
    // ih + pad_top and iw + pad_left.
    h: i32,
    w: i32,
    // Position (n, ih, iw) in dx.
    dx_row: u32,
}

fn decode_pixel(f: Phase, m: u32) -> Pixel {
    let t = div_small(m, f.count_w);
    let jw = m - t * f.count_w;
    let n = div_small(t, f.count_h);
    let jh = t - n * f.count_h;
    let ih = f.ih0 + jh * p.stride;
    let iw = f.iw0 + jw * p.stride;
    return Pixel(
        n * p.out_h * p.out_w * p.out_c,
        i32(ih + p.pad_top),
        i32(iw + p.pad_left),
        (n * p.in_h + ih) * p.in_w + iw,
    );
}

// The k-th (kh, kw, co) of phase f (any channel count).
fn decode_phase_tap(f: Phase, k: u32) -> Tap {
    let t = div_small(k, p.out_c);
    let a = div_small(t, f.taps_w);
    return Tap(f.kh0 + a * p.stride, f.kw0 + (t - a * f.taps_w) * p.stride, k - t * p.out_c);
}

// The next TILE_K indices of phase f after `t` when out_c is a multiple of TILE_K.
fn next_phase_tap(f: Phase, t: Tap) -> Tap {
    var n = Tap(t.kh, t.kw, t.c + TILE_K);
    if (n.c >= p.out_c) {
        n.c = 0u;
        n.kw += p.stride;
        if (n.kw >= p.kernel) {
            n.kw = f.kw0;
            n.kh += p.stride;
        }
    }
    return n;
}

// Output coordinate (v - d) / stride, whole by the choice of phase; -1 when out of range.
fn source_coord(v: i32, d: u32, size: u32) -> i32 {
    let s = v - i32(d);
    if (s < 0) {
        return -1;
    }
    var o = u32(s);
    if (p.stride != 1u) {
        o = div_small(o, p.stride);
    }
    return select(-1, i32(o), o < size);
}

// Index in dy of channel t.c at the output position that reaches pixel q under tap t (-1: none).
fn gather_index(q: Pixel, t: Tap) -> i32 {
    let oh = source_coord(q.h, t.kh, p.out_h);
    let ow = source_coord(q.w, t.kw, p.out_w);
    if (oh < 0 || ow < 0) {
        return -1;
    }
    return i32(q.image + (u32(oh) * p.out_w + u32(ow)) * p.out_c + t.c);
}

// Phase GEMM indices k..k+3 of the gathered dy for pixel q, each decoded on its own.
fn load_dy_gather_scalar(f: Phase, q: Pixel, k: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < f.k) {
            let i = gather_index(q, decode_phase_tap(f, k + j));
            if (i >= 0) {
                r[j] = dy[u32(i)];
            }
        }
    }
    return r;
}

fn w_index(t: Tap, ci: u32) -> u32 {
    return ((t.kh * p.kernel + t.kw) * p.in_c + ci) * p.out_c + t.c;
}

// Phase GEMM indices k..k+3 of w^T for input channel ci, each decoded on its own.
fn load_w_transposed_scalar(f: Phase, k: u32, ci: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (k + j < f.k && ci < p.in_c) {
            r[j] = w[w_index(decode_phase_tap(f, k + j), ci)];
        }
    }
    return r;
}

// dx[row m of phase f, n..n+3] (+)= v, within bounds.
fn store_backward_data(f: Phase, m: u32, n: u32, v: vec4<f32>) {
    if (m >= f.rows) {
        return;
    }
    let row = decode_pixel(f, m).dx_row;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.gemm_n) {
            let o = row * p.gemm_n + n + j;
            if (p.accumulate != 0u) {
                dx[o] = dx[o] + v[j];
            } else {
                dx[o] = v[j];
            }
        }
    }
}

// `fast`: out_c % TILE_K == 0.
fn backward_data(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, fast: bool) {
    let tile = tile_m_index(wid, nwg);
    if (tile >= p.tiles_m) {
        return;
    }
    let f = decode_phase(tile / p.phase_tiles);
    let m0 = (tile % p.phase_tiles) * TILE_M;
    let n0 = wid.x * TILE_N;

    var pixels: array<Pixel, A_ROWS>;
    for (var r = 0u; r < A_ROWS; r++) {
        pixels[r] = decode_pixel(f, m0 + lid + r * WG);
    }
    var tap = Tap(f.kh0, f.kw0, 0u);

    var acc: array<vec4<f32>, 8>;
    for (var k0 = 0u; k0 < f.k; k0 += TILE_K) {
        for (var r = 0u; r < A_ROWS; r++) {
            let row = lid + r * WG;
            let ok = m0 + row < f.rows;
            if (fast) {
                var i = -1;
                if (ok) {
                    i = gather_index(pixels[r], tap);
                }
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (i >= 0) {
                        v = dy4[u32(i) / 4u + q];
                    }
                    tile_a[row * KQ + q] = v;
                }
            } else {
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (ok) {
                        v = load_dy_gather_scalar(f, pixels[r], k0 + q * 4u);
                    }
                    tile_a[row * KQ + q] = v;
                }
            }
        }
        // B is w^T packed along k: [TILE_N][KQ].
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            if (i < B_VEC4S) {
                let ci = n0 + i / KQ;
                let q = i % KQ;
                var v = vec4<f32>(0.0);
                if (fast) {
                    if (ci < p.in_c) {
                        v = w4[w_index(tap, ci) / 4u + q];
                    }
                } else {
                    v = load_w_transposed_scalar(f, k0 + q * 4u, ci);
                }
                tile_b[i] = v;
            }
        }
        workgroupBarrier();
        product_ak_bk(&acc, lid / NQ, lid % NQ);
        workgroupBarrier();
        tap = next_phase_tap(f, tap);
    }

    let m = m0 + (lid / NQ) * THREAD_M;
    let n = n0 + (lid % NQ) * 4u;
    store_backward_data(f, m, n, acc[0]);
    store_backward_data(f, m + 1u, n, acc[1]);
    store_backward_data(f, m + 2u, n, acc[2]);
    store_backward_data(f, m + 3u, n, acc[3]);
    store_backward_data(f, m + 4u, n, acc[4]);
    store_backward_data(f, m + 5u, n, acc[5]);
    store_backward_data(f, m + 6u, n, acc[6]);
    store_backward_data(f, m + 7u, n, acc[7]);
}

@compute @workgroup_size(WG)
fn conv2d_backward_data_aligned(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_data(wid, nwg, lid, true);
}

@compute @workgroup_size(WG)
fn conv2d_backward_data_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_data(wid, nwg, lid, false);
}

// ---------------------------------------------------------------------------------------------
// Backward weights: rows m = (kh, kw, ci), columns co, reduction over r = (n, oh, ow) in
// chunk wid.z: partials[chunk, m, co] = sum over its r of x[window(r) under tap m] * dy[r, co].

// Four output channels co..co+3 of dy row r (zeros past the edges).
fn load_dy_row(r: u32, co: u32, fast: bool) -> vec4<f32> {
    if (fast) {
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

// partials[chunk, m, n..n+3] = v, within bounds.
fn store_partial(chunk: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.gemm_m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.gemm_n) {
            partials[(chunk * p.gemm_m + m) * p.gemm_n + n + j] = v[j];
        }
    }
}

// `fast`: in_c % TILE_K == 0 and out_c % 4 == 0.
fn backward_weights(wid: vec3<u32>, lid: u32, fast: bool) {
    let m0 = wid.y * TILE_M;
    let n0 = wid.x * TILE_N;
    let chunk = wid.z;
    let r_begin = chunk * p.split_rows;
    let r_end = min(r_begin + p.split_rows, p.gemm_k);

    // A is packed along m: [TILE_K][MQ]. Each invocation stages runs of 16 consecutive m
    // (four vec4s) of one reduction row, always the same m: with in_c % TILE_K == 0 a run is
    // one tap and 16 contiguous channels of x.
    let stage_m = m0 + (lid % (MQ / KQ)) * TILE_K;
    let tap = decode_tap(stage_m, p.in_c);
    // With `fast`, gemm_m is a multiple of 16: a run is wholly inside or past M.
    let stage_ok = stage_m < p.gemm_m;

    var acc: array<vec4<f32>, 8>;
    for (var k0 = r_begin; k0 < r_end; k0 += TILE_K) {
        for (var run = lid; run < A_VEC4S / KQ; run += WG) {
            let r = k0 + run / (MQ / KQ);
            let a = (r - k0) * MQ + (run % (MQ / KQ)) * KQ;
            var window: Window;
            if (r < r_end) {
                window = decode_window(r);
            }
            if (fast) {
                var i = -1;
                if (r < r_end && stage_ok) {
                    i = window_index(window, tap);
                }
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (i >= 0) {
                        v = x4[u32(i) / 4u + q];
                    }
                    tile_a[a + q] = v;
                }
            } else {
                for (var q = 0u; q < KQ; q++) {
                    var v = vec4<f32>(0.0);
                    if (r < r_end) {
                        v = load_x_window_scalar(window, stage_m + q * 4u);
                    }
                    tile_a[a + q] = v;
                }
            }
        }
        for (var j = 0u; j < B_LOADS; j++) {
            let i = lid + j * WG;
            if (i < B_VEC4S) {
                let r = k0 + i / NQ;
                var v = vec4<f32>(0.0);
                if (r < r_end) {
                    v = load_dy_row(r, n0 + (i % NQ) * 4u, fast);
                }
                tile_b[i] = v;
            }
        }
        workgroupBarrier();
        product_am_bn(&acc, lid / NQ, lid % NQ);
        workgroupBarrier();
    }

    let m = m0 + (lid / NQ) * THREAD_M;
    let n = n0 + (lid % NQ) * 4u;
    store_partial(chunk, m, n, acc[0]);
    store_partial(chunk, m + 1u, n, acc[1]);
    store_partial(chunk, m + 2u, n, acc[2]);
    store_partial(chunk, m + 3u, n, acc[3]);
    store_partial(chunk, m + 4u, n, acc[4]);
    store_partial(chunk, m + 5u, n, acc[5]);
    store_partial(chunk, m + 6u, n, acc[6]);
    store_partial(chunk, m + 7u, n, acc[7]);
}

@compute @workgroup_size(WG)
fn conv2d_backward_weights_aligned(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_weights(wid, lid, true);
}

@compute @workgroup_size(WG)
fn conv2d_backward_weights_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_weights(wid, lid, false);
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
