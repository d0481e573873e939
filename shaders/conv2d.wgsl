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
// Two variants of every pass, chosen on the Rust side by the adapter (`ConvPath`):
//   tiled   (GPUs)  tiles staged in workgroup memory, as described above, with barriers;
//   direct  (CPUs)  no workgroup memory and no barriers: each invocation reads its operands
//                   straight from the storage buffers into registers (see "Direct variant").
// On lavapipe a workgroup barrier splits the shader into coroutines that save and restore all
// live state, 30-45% of the K loop; the direct variant avoids that.
//
// Every pass has two entry points sharing one body: `_aligned` for channel counts that are
// multiples of TILE_K (every WideResNet layer but the RGB stem), where a K tile never crosses a
// kernel tap, so the tap is the same for the whole tile and is walked with counters (no
// divisions), and loads are vec4s; `_general` for any channel count, decoding every index. The
// choice is a constant argument, folded away at compile time: on lavapipe the general path left
// behind a runtime branch, even a uniform one, slowed the aligned K loop by about 40%.

// TILE_M, TILE_N, TILE_K (tile sizes), THREAD_M (rows per invocation), THREAD_NQ (blocks of 4
// columns per invocation: 1 for 8 x 4 outputs, 2 for 8 x 8), and the direct
// variant's DIRECT_M x DIRECT_N outputs per invocation and DIRECT_WG workgroup size are WGSL
// consts that src/kernels/conv2d.rs (WGSL_CONSTANTS) writes ahead of this file, and checks there:
// TILE_K a multiple of 4, TILE_M of THREAD_M and of TILE_K, TILE_N of 4, TILE_M a multiple of WG
// (each invocation stages whole A rows). The tile products below are unrolled for THREAD_M = 8,
// the direct ones for 16 x 8 (two halves of 8 rows, see `Block`): on lavapipe 16 x 8 beat 8 x 8 by
// 10-15% (fewer loads per multiply-add) and 24 x 8 or 32 x 8 (register spills).
const WG: u32 = (TILE_M / THREAD_M) * TNQ;
// Invocations along a tile's columns.
const TNQ: u32 = TILE_N / (4u * THREAD_NQ);
// vec4s per tile row in each packing.
const KQ: u32 = TILE_K / 4u;
const MQ: u32 = TILE_M / 4u;
const NQ: u32 = TILE_N / 4u;
const A_VEC4S: u32 = TILE_M * KQ;
const B_VEC4S: u32 = TILE_K * NQ;
// A rows each invocation stages (forward, backward data), B vec4s (rounded up).
const A_ROWS: u32 = TILE_M / WG;
const B_LOADS: u32 = (B_VEC4S + WG - 1u) / WG;

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
// vec4 views of the outputs (direct variant, channel counts that are multiples of 4).
@group(0) @binding(13) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> residual4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> partials4: array<vec4<f32>>;

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
// Tile products. A product for (tm, tn) accumulates rows 8tm..8tm+7 and columns 4tn..4tn+3 of
// the tile; acc[i] holds row i's four columns. An invocation runs one product (8 x 4 outputs),
// or two on neighbouring column blocks when THREAD_NQ is 2 (8 x 8): each output still sums its
// reduction in the same order, so the register tile changes speed, never bits. Unrolled by hand: compilers keep the accumulators in
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
    // The second block of 4 columns when THREAD_NQ is 2 (unused, and compiled away, when 1).
    var acc2: array<vec4<f32>, 8>;
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
        product_ak_bn(&acc, lid / TNQ, (lid % TNQ) * THREAD_NQ);
        if (THREAD_NQ == 2u) {
            product_ak_bn(&acc2, lid / TNQ, (lid % TNQ) * THREAD_NQ + 1u);
        }
        workgroupBarrier();
        tap = next_tap(tap, p.in_c);
    }

    let m = m0 + (lid / TNQ) * THREAD_M;
    let n = n0 + (lid % TNQ) * THREAD_NQ * 4u;
    store_forward(m, n, acc[0]);
    store_forward(m + 1u, n, acc[1]);
    store_forward(m + 2u, n, acc[2]);
    store_forward(m + 3u, n, acc[3]);
    store_forward(m + 4u, n, acc[4]);
    store_forward(m + 5u, n, acc[5]);
    store_forward(m + 6u, n, acc[6]);
    store_forward(m + 7u, n, acc[7]);
    if (THREAD_NQ == 2u) {
        for (var i = 0u; i < 8u; i++) {
            store_forward(m + i, n + 4u, acc2[i]);
        }
    }
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
    var acc2: array<vec4<f32>, 8>;
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
        product_ak_bk(&acc, lid / TNQ, (lid % TNQ) * THREAD_NQ);
        if (THREAD_NQ == 2u) {
            product_ak_bk(&acc2, lid / TNQ, (lid % TNQ) * THREAD_NQ + 1u);
        }
        workgroupBarrier();
        tap = next_phase_tap(f, tap);
    }

    let m = m0 + (lid / TNQ) * THREAD_M;
    let n = n0 + (lid % TNQ) * THREAD_NQ * 4u;
    store_backward_data(f, m, n, acc[0]);
    store_backward_data(f, m + 1u, n, acc[1]);
    store_backward_data(f, m + 2u, n, acc[2]);
    store_backward_data(f, m + 3u, n, acc[3]);
    store_backward_data(f, m + 4u, n, acc[4]);
    store_backward_data(f, m + 5u, n, acc[5]);
    store_backward_data(f, m + 6u, n, acc[6]);
    store_backward_data(f, m + 7u, n, acc[7]);
    if (THREAD_NQ == 2u) {
        for (var i = 0u; i < 8u; i++) {
            store_backward_data(f, m + i, n + 4u, acc2[i]);
        }
    }
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
    var acc2: array<vec4<f32>, 8>;
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
        product_am_bn(&acc, lid / TNQ, (lid % TNQ) * THREAD_NQ);
        if (THREAD_NQ == 2u) {
            product_am_bn(&acc2, lid / TNQ, (lid % TNQ) * THREAD_NQ + 1u);
        }
        workgroupBarrier();
    }

    let m = m0 + (lid / TNQ) * THREAD_M;
    let n = n0 + (lid % TNQ) * THREAD_NQ * 4u;
    store_partial(chunk, m, n, acc[0]);
    store_partial(chunk, m + 1u, n, acc[1]);
    store_partial(chunk, m + 2u, n, acc[2]);
    store_partial(chunk, m + 3u, n, acc[3]);
    store_partial(chunk, m + 4u, n, acc[4]);
    store_partial(chunk, m + 5u, n, acc[5]);
    store_partial(chunk, m + 6u, n, acc[6]);
    store_partial(chunk, m + 7u, n, acc[7]);
    if (THREAD_NQ == 2u) {
        for (var i = 0u; i < 8u; i++) {
            store_partial(chunk, m + i, n + 4u, acc2[i]);
        }
    }
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
    let i = linear_index(wid, nwg, lid, REDUCE_WG);
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

// ---------------------------------------------------------------------------------------------
// Direct variant: no workgroup memory, no barriers. Invocation t owns a block of DIRECT_M = 16
// rows by DIRECT_N = 8 columns of its GEMM output (blocks numbered column-fastest, so neighbouring
// invocations share rows and read the same A values) and reads its operands straight from the
// storage buffers. The rows come in two halves of 8 (`top`, `bottom`), each with its own `Block`
// of accumulators; per-row quantities of a half are pairs of vec4s, `lo` for its rows 0..3 and
// `hi` for rows 4..7. Each invocation sums its K in a fixed order.
//
// `_aligned` needs in_c % 4 == 0 and out_c % 4 == 0: every load and store is a vec4 (on lavapipe
// a vec4 load costs about what a scalar one does, so this is ~4x fewer loads per multiply-add).
// `_general` loads scalars. Column quads past the edge of the output read a valid quad again
// (never stored), so no load leaves its buffer.

// The accumulators of 8 rows x 8 columns: acc[2i + j] holds row i's columns 4j..4j+3.
alias Block = array<vec4<f32>, 16>;

// Element indices of 8 rows' operands (-1: zero, e.g. padding): rows 0..3 in lo, 4..7 in hi.
struct Bases {
    lo: vec4<i32>,
    hi: vec4<i32>,
}

fn direct_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return linear_index(wid, nwg, lid, DIRECT_WG);
}

// Which block of a GEMM output with `columns` columns invocation t owns: (first row, first
// column), blocks numbered column-fastest.
fn direct_block(t: u32, columns: u32) -> vec2<u32> {
    return direct_block_n(t, columns, DIRECT_N);
}

// The same for blocks `width` columns wide (DIRECT_N, or 2 * DIRECT_N for `_wide` entry points).
fn direct_block_n(t: u32, columns: u32, width: u32) -> vec2<u32> {
    let col_blocks = (columns + width - 1u) / width;
    return vec2<u32>((t / col_blocks) * DIRECT_M, (t % col_blocks) * width);
}

// Rows m..m+3.
fn quad_rows(m: u32) -> vec4<u32> {
    return m + vec4<u32>(0u, 1u, 2u, 3u);
}

// Component-wise div_small.
fn div_small4(a: vec4<u32>, b: u32) -> vec4<u32> {
    var q = vec4<u32>(vec4<f32>(a) / f32(b));
    q = select(q, q - 1u, q * b > a);
    return select(q, q + 1u, (q + 1u) * b <= a);
}

// Column quad j (0 or 1) of a block starting at column n0, in units of 4 columns; a quad past
// the edge is replaced by the block's first (its results are never stored).
fn quad_of(n0: u32, j: u32, columns: u32) -> u32 {
    return select(n0, n0 + 4u * j, n0 + 4u * j < columns) / 4u;
}

// Columns n0..n0+3, clamped to the last column (scalar loads of partial blocks).
fn columns_of(n0: u32, columns: u32) -> vec4<u32> {
    return min(quad_rows(n0), vec4<u32>(columns - 1u));
}

// Loads. `_run`: vec4 number q of the run at element index `base` (a multiple of 4), zeros when
// base < 0. `_scalars`: element base + c of each of four rows, zero where base < 0. `_rows`: the
// vec4 runs of 8 rows. `_gather`: four elements, or four vec4s as the columns of a matrix.

fn x4_run(base: i32, q: u32) -> vec4<f32> {
    if (base < 0) {
        return vec4<f32>(0.0);
    }
    return x4[u32(base) / 4u + q];
}

fn dy4_run(base: i32, q: u32) -> vec4<f32> {
    if (base < 0) {
        return vec4<f32>(0.0);
    }
    return dy4[u32(base) / 4u + q];
}

fn x_scalars(base: vec4<i32>, c: u32) -> vec4<f32> {
    let i = vec4<u32>(max(base, vec4<i32>(0))) + c;
    return select(vec4<f32>(0.0), vec4<f32>(x[i.x], x[i.y], x[i.z], x[i.w]), base >= vec4<i32>(0));
}

fn dy_scalars(base: vec4<i32>, c: u32) -> vec4<f32> {
    let i = vec4<u32>(max(base, vec4<i32>(0))) + c;
    return select(vec4<f32>(0.0), vec4<f32>(dy[i.x], dy[i.y], dy[i.z], dy[i.w]), base >= vec4<i32>(0));
}

fn x4_rows(b: Bases, q: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        x4_run(b.lo.x, q), x4_run(b.lo.y, q), x4_run(b.lo.z, q), x4_run(b.lo.w, q),
        x4_run(b.hi.x, q), x4_run(b.hi.y, q), x4_run(b.hi.z, q), x4_run(b.hi.w, q),
    );
}

fn dy4_rows(b: Bases, q: u32) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        dy4_run(b.lo.x, q), dy4_run(b.lo.y, q), dy4_run(b.lo.z, q), dy4_run(b.lo.w, q),
        dy4_run(b.hi.x, q), dy4_run(b.hi.y, q), dy4_run(b.hi.z, q), dy4_run(b.hi.w, q),
    );
}

fn w_gather(i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(w[i.x], w[i.y], w[i.z], w[i.w]);
}

fn w4_gather(i: vec4<u32>) -> mat4x4<f32> {
    return mat4x4<f32>(w4[i.x], w4[i.y], w4[i.z], w4[i.w]);
}

// Products into one half's Block, unrolled by hand (accumulators stay in registers only when
// every index is a constant).

// acc += A * B over four k: a[i] holds row i's four k values, b0 / b1 the four k rows of column
// quads 0 / 1 (one k row per matrix column), so b * a = sum over k of a[k] * (row k of B).
fn direct_product_bn(acc: ptr<function, Block>, a: array<vec4<f32>, 8>, b0: mat4x4<f32>, b1: mat4x4<f32>) {
    (*acc)[0] += b0 * a[0];
    (*acc)[1] += b1 * a[0];
    (*acc)[2] += b0 * a[1];
    (*acc)[3] += b1 * a[1];
    (*acc)[4] += b0 * a[2];
    (*acc)[5] += b1 * a[2];
    (*acc)[6] += b0 * a[3];
    (*acc)[7] += b1 * a[3];
    (*acc)[8] += b0 * a[4];
    (*acc)[9] += b1 * a[4];
    (*acc)[10] += b0 * a[5];
    (*acc)[11] += b1 * a[5];
    (*acc)[12] += b0 * a[6];
    (*acc)[13] += b1 * a[6];
    (*acc)[14] += b0 * a[7];
    (*acc)[15] += b1 * a[7];
}

// acc += A * B over four k: a[i] as above, b0 / b1 the four k values of columns 0..3 / 4..7 (one
// column per matrix column), so a * b = the dot products of a with each column.
fn direct_product_bk(acc: ptr<function, Block>, a: array<vec4<f32>, 8>, b0: mat4x4<f32>, b1: mat4x4<f32>) {
    (*acc)[0] += a[0] * b0;
    (*acc)[1] += a[0] * b1;
    (*acc)[2] += a[1] * b0;
    (*acc)[3] += a[1] * b1;
    (*acc)[4] += a[2] * b0;
    (*acc)[5] += a[2] * b1;
    (*acc)[6] += a[3] * b0;
    (*acc)[7] += a[3] * b1;
    (*acc)[8] += a[4] * b0;
    (*acc)[9] += a[4] * b1;
    (*acc)[10] += a[5] * b0;
    (*acc)[11] += a[5] * b1;
    (*acc)[12] += a[6] * b0;
    (*acc)[13] += a[6] * b1;
    (*acc)[14] += a[7] * b0;
    (*acc)[15] += a[7] * b1;
}

// acc += the outer product of one k: a_lo / a_hi the A values of rows 0..3 / 4..7, b0 / b1 the
// B values of columns 0..3 / 4..7.
fn direct_product_outer(acc: ptr<function, Block>, a_lo: vec4<f32>, a_hi: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    (*acc)[0] += a_lo.x * b0;
    (*acc)[1] += a_lo.x * b1;
    (*acc)[2] += a_lo.y * b0;
    (*acc)[3] += a_lo.y * b1;
    (*acc)[4] += a_lo.z * b0;
    (*acc)[5] += a_lo.z * b1;
    (*acc)[6] += a_lo.w * b0;
    (*acc)[7] += a_lo.w * b1;
    (*acc)[8] += a_hi.x * b0;
    (*acc)[9] += a_hi.x * b1;
    (*acc)[10] += a_hi.y * b0;
    (*acc)[11] += a_hi.y * b1;
    (*acc)[12] += a_hi.z * b0;
    (*acc)[13] += a_hi.z * b1;
    (*acc)[14] += a_hi.w * b0;
    (*acc)[15] += a_hi.w * b1;
}

// ---------------------------------------------------------------------------------------------
// Direct forward: rows m = (n, oh, ow), k = (kh, kw, ci), columns co.

// Four output positions seen from the input (see Window), one per component.
struct Windows {
    image: vec4<u32>,
    h0: vec4<i32>,
    w0: vec4<i32>,
    valid: vec4<bool>,
}

// Rows m..m+3; rows past gemm_m are not `valid`.
fn decode_windows(m: u32) -> Windows {
    let r = quad_rows(m);
    let t = div_small4(r, p.out_w);
    let ow = r - t * p.out_w;
    let n = div_small4(t, p.out_h);
    let oh = t - n * p.out_h;
    return Windows(
        n * (p.in_h * p.in_w * p.in_c),
        vec4<i32>(oh * p.stride) - i32(p.pad_top),
        vec4<i32>(ow * p.stride) - i32(p.pad_left),
        r < vec4<u32>(p.gemm_m),
    );
}

// Element index in x of channel 0 of each window's pixel under tap (kh, kw); -1 in the padding
// and for rows that are not valid.
fn window_bases(v: Windows, kh: u32, kw: u32) -> vec4<i32> {
    let ih = v.h0 + i32(kh);
    let iw = v.w0 + i32(kw);
    // WGSL requires the parentheses (naga accepts them missing, browsers do not).
    let inside = (ih >= vec4<i32>(0)) & (iw >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.in_h))) & (iw < vec4<i32>(i32(p.in_w)));
    let i = v.image + (vec4<u32>(ih) * p.in_w + vec4<u32>(iw)) * p.in_c;
    return select(vec4<i32>(-1), vec4<i32>(i), inside & v.valid);
}

// y[m, n..n+7] = (v0, v1) (+ residual), within bounds; vec4 stores when `fast`.
fn store_forward_direct(m: u32, n: u32, v0: vec4<f32>, v1: vec4<f32>, fast: bool) {
    if (!fast) {
        store_forward(m, n, v0);
        store_forward(m, n + 4u, v1);
        return;
    }
    if (m >= p.gemm_m) {
        return;
    }
    let o = (m * p.gemm_n + n) / 4u;
    let second = n + 4u < p.gemm_n;
    if (p.accumulate != 0u) {
        y4[o] = v0 + residual4[o];
        if (second) {
            y4[o + 1u] = v1 + residual4[o + 1u];
        }
    } else {
        y4[o] = v0;
        if (second) {
            y4[o + 1u] = v1;
        }
    }
}

// Rows m..m+7 of y from one half's accumulators.
fn store_forward_block(m: u32, n: u32, acc: Block, fast: bool) {
    store_forward_direct(m, n, acc[0], acc[1], fast);
    store_forward_direct(m + 1u, n, acc[2], acc[3], fast);
    store_forward_direct(m + 2u, n, acc[4], acc[5], fast);
    store_forward_direct(m + 3u, n, acc[6], acc[7], fast);
    store_forward_direct(m + 4u, n, acc[8], acc[9], fast);
    store_forward_direct(m + 5u, n, acc[10], acc[11], fast);
    store_forward_direct(m + 6u, n, acc[12], acc[13], fast);
    store_forward_direct(m + 7u, n, acc[14], acc[15], fast);
}

// `fast`: in_c % 4 == 0 and out_c % 4 == 0. `wide` (with `fast`, out_c % 16 == 0): 16 columns
// per invocation instead of 8, two more Blocks (`top_r`, `bottom_r`) for columns 8..15. On
// lavapipe every load from a storage buffer is a loop over the SIMD lanes and costs ~20x a
// multiply-add, so the wider block's extra accumulators pay: 16 x 16 does 1024 multiply-adds
// per 32 vec4 loads (16 x 8: 512 per 24).
fn forward_direct(t: u32, fast: bool, wide: bool) {
    let block = direct_block_n(t, p.gemm_n, select(DIRECT_N, 2u * DIRECT_N, wide));
    let m0 = block.x;
    let n0 = block.y;
    if (m0 >= p.gemm_m) {
        return;
    }
    // Rows m0..m0+7 (top half) and m0+8..m0+15 (bottom half), four at a time.
    let top_lo = decode_windows(m0);
    let top_hi = decode_windows(m0 + 4u);
    let bottom_lo = decode_windows(m0 + 8u);
    let bottom_hi = decode_windows(m0 + 12u);
    // Weight rows are out_c long: vec4s per row, the block's two column quads, and its columns.
    let wq = p.out_c / 4u;
    let q0 = quad_of(n0, 0u, p.out_c);
    let q1 = quad_of(n0, 1u, p.out_c);
    let cols_lo = columns_of(n0, p.out_c);
    let cols_hi = columns_of(n0 + 4u, p.out_c);

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var kh = 0u; kh < p.kernel; kh++) {
        for (var kw = 0u; kw < p.kernel; kw++) {
            let xt = Bases(window_bases(top_lo, kh, kw), window_bases(top_hi, kh, kw));
            let xb = Bases(window_bases(bottom_lo, kh, kw), window_bases(bottom_hi, kh, kw));
            // Weight row of (kh, kw, ci = 0).
            let k_tap = (kh * p.kernel + kw) * p.in_c;
            if (fast) {
                for (var c = 0u; c < p.in_c; c += 4u) {
                    // Weight rows k_tap + c .. k_tap + c + 3, as vec4 indices of each quad.
                    let r = (k_tap + c) * wq + wq * vec4<u32>(0u, 1u, 2u, 3u);
                    let b0 = w4_gather(r + q0);
                    let b1 = w4_gather(r + q1);
                    let at = x4_rows(xt, c / 4u);
                    let ab = x4_rows(xb, c / 4u);
                    direct_product_bn(&top, at, b0, b1);
                    direct_product_bn(&bottom, ab, b0, b1);
                    if (wide) {
                        let b2 = w4_gather(r + q0 + 2u);
                        let b3 = w4_gather(r + q0 + 3u);
                        direct_product_bn(&top_r, at, b2, b3);
                        direct_product_bn(&bottom_r, ab, b2, b3);
                    }
                }
            } else {
                for (var c = 0u; c < p.in_c; c++) {
                    let r = (k_tap + c) * p.out_c;
                    let b0 = w_gather(r + cols_lo);
                    let b1 = w_gather(r + cols_hi);
                    direct_product_outer(&top, x_scalars(xt.lo, c), x_scalars(xt.hi, c), b0, b1);
                    direct_product_outer(&bottom, x_scalars(xb.lo, c), x_scalars(xb.hi, c), b0, b1);
                }
            }
        }
    }

    store_forward_block(m0, n0, top, fast);
    store_forward_block(m0 + 8u, n0, bottom, fast);
    if (wide) {
        store_forward_block(m0, n0 + 8u, top_r, fast);
        store_forward_block(m0 + 8u, n0 + 8u, bottom_r, fast);
    }
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_direct_wide(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    forward_direct(direct_index(wid, nwg, lid), true, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_direct_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    forward_direct(direct_index(wid, nwg, lid), false, false);
}

// ---------------------------------------------------------------------------------------------
// Direct backward data: one GEMM per stride phase as in the tiled variant (invocations numbered
// phase by phase, `phase_tiles` row blocks per phase); rows m = the phase's positions,
// k = (tap a, tap b, co), columns ci.

// Four phase rows as seen from dy: tap (a, b) of the phase reaches output position
// (oh0 - a, ow0 - b) of image `image`.
struct Sources {
    image: vec4<u32>,
    oh0: vec4<i32>,
    ow0: vec4<i32>,
    valid: vec4<bool>,
    // Position (n, ih, iw) in dx.
    dx_row: vec4<u32>,
}

// Rows m..m+3 of phase f; rows past its positions are not `valid`.
fn decode_sources(f: Phase, m: u32) -> Sources {
    let r = quad_rows(m);
    let t = div_small4(r, f.count_w);
    let jw = r - t * f.count_w;
    let n = div_small4(t, f.count_h);
    let jh = t - n * f.count_h;
    let ih = f.ih0 + jh * p.stride;
    let iw = f.iw0 + jw * p.stride;
    // oh = (ih + pad_top - kh) / stride with kh = kh0 + a * stride is jh - a + (ih0 + pad_top -
    // kh0) / stride, a whole non-negative quotient by the choice of phase (likewise ow).
    let ch = (f.ih0 + p.pad_top - f.kh0) / p.stride;
    let cw = (f.iw0 + p.pad_left - f.kw0) / p.stride;
    return Sources(
        n * (p.out_h * p.out_w * p.out_c),
        vec4<i32>(jh + ch),
        vec4<i32>(jw + cw),
        r < vec4<u32>(f.rows),
        (n * p.in_h + ih) * p.in_w + iw,
    );
}

// Element index in dy of channel 0 of the output position that reaches each row under tap
// (a, b); -1 where there is none and for rows that are not valid.
fn source_bases(q: Sources, a: u32, b: u32) -> vec4<i32> {
    let oh = q.oh0 - i32(a);
    let ow = q.ow0 - i32(b);
    // Parenthesised as WGSL requires (see window_bases).
    let inside = (oh >= vec4<i32>(0)) & (ow >= vec4<i32>(0)) & (oh < vec4<i32>(i32(p.out_h))) & (ow < vec4<i32>(i32(p.out_w)));
    let i = q.image + (vec4<u32>(oh) * p.out_w + vec4<u32>(ow)) * p.out_c;
    return select(vec4<i32>(-1), vec4<i32>(i), inside & q.valid);
}

// dx[row, n..n+3] (+)= v, within bounds.
fn store_dx(row: u32, n: u32, v: vec4<f32>, fast: bool) {
    if (n >= p.in_c) {
        return;
    }
    if (fast) {
        let o = (row * p.in_c + n) / 4u;
        if (p.accumulate != 0u) {
            dx4[o] = dx4[o] + v;
        } else {
            dx4[o] = v;
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.in_c) {
            let o = row * p.in_c + n + j;
            if (p.accumulate != 0u) {
                dx[o] = dx[o] + v[j];
            } else {
                dx[o] = v[j];
            }
        }
    }
}

fn store_dx_row(valid: bool, row: u32, n: u32, v0: vec4<f32>, v1: vec4<f32>, fast: bool) {
    if (valid) {
        store_dx(row, n, v0, fast);
        store_dx(row, n + 4u, v1, fast);
    }
}

// The 8 rows of one half (lo: rows 0..3, hi: rows 4..7) from its accumulators.
fn store_dx_block(lo: Sources, hi: Sources, n: u32, acc: Block, fast: bool) {
    store_dx_row(lo.valid.x, lo.dx_row.x, n, acc[0], acc[1], fast);
    store_dx_row(lo.valid.y, lo.dx_row.y, n, acc[2], acc[3], fast);
    store_dx_row(lo.valid.z, lo.dx_row.z, n, acc[4], acc[5], fast);
    store_dx_row(lo.valid.w, lo.dx_row.w, n, acc[6], acc[7], fast);
    store_dx_row(hi.valid.x, hi.dx_row.x, n, acc[8], acc[9], fast);
    store_dx_row(hi.valid.y, hi.dx_row.y, n, acc[10], acc[11], fast);
    store_dx_row(hi.valid.z, hi.dx_row.z, n, acc[12], acc[13], fast);
    store_dx_row(hi.valid.w, hi.dx_row.w, n, acc[14], acc[15], fast);
}

// `fast`: in_c % 4 == 0 and out_c % 4 == 0; `wide` (with `fast`, in_c % 16 == 0): 16 columns per
// invocation, as in `forward_direct`.
fn backward_data_direct(t: u32, fast: bool, wide: bool) {
    let width = select(DIRECT_N, 2u * DIRECT_N, wide);
    let col_blocks = (p.in_c + width - 1u) / width;
    let per_phase = p.phase_tiles * col_blocks;
    let phase = t / per_phase;
    if (phase >= p.stride * p.stride) {
        return;
    }
    let f = decode_phase(phase);
    let block = direct_block_n(t - phase * per_phase, p.in_c, width);
    let m0 = block.x;
    let n0 = block.y;
    if (m0 >= f.rows) {
        return;
    }
    let top_lo = decode_sources(f, m0);
    let top_hi = decode_sources(f, m0 + 4u);
    let bottom_lo = decode_sources(f, m0 + 8u);
    let bottom_hi = decode_sources(f, m0 + 12u);
    // The block's input channels (clamped: columns past in_c are computed but not stored).
    let cols_lo = columns_of(n0, p.in_c);
    let cols_hi = columns_of(n0 + 4u, p.in_c);
    let taps_h = strided_count(f.kh0, p.kernel);
    let wq = p.out_c / 4u;

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var a = 0u; a < taps_h; a++) {
        for (var b = 0u; b < f.taps_w; b++) {
            let dt = Bases(source_bases(top_lo, a, b), source_bases(top_hi, a, b));
            let db = Bases(source_bases(bottom_lo, a, b), source_bases(bottom_hi, a, b));
            // Weight row of (kh, kw, ci = 0); rows are out_c long (k runs along them).
            let w_tap = ((f.kh0 + a * p.stride) * p.kernel + f.kw0 + b * p.stride) * p.in_c;
            if (fast) {
                for (var q = 0u; q < wq; q++) {
                    let b0 = w4_gather((w_tap + cols_lo) * wq + q);
                    let b1 = w4_gather((w_tap + cols_hi) * wq + q);
                    let at = dy4_rows(dt, q);
                    let ab = dy4_rows(db, q);
                    direct_product_bk(&top, at, b0, b1);
                    direct_product_bk(&bottom, ab, b0, b1);
                    if (wide) {
                        let b2 = w4_gather((w_tap + cols_lo + 8u) * wq + q);
                        let b3 = w4_gather((w_tap + cols_hi + 8u) * wq + q);
                        direct_product_bk(&top_r, at, b2, b3);
                        direct_product_bk(&bottom_r, ab, b2, b3);
                    }
                }
            } else {
                for (var c = 0u; c < p.out_c; c++) {
                    let b0 = w_gather((w_tap + cols_lo) * p.out_c + c);
                    let b1 = w_gather((w_tap + cols_hi) * p.out_c + c);
                    direct_product_outer(&top, dy_scalars(dt.lo, c), dy_scalars(dt.hi, c), b0, b1);
                    direct_product_outer(&bottom, dy_scalars(db.lo, c), dy_scalars(db.hi, c), b0, b1);
                }
            }
        }
    }

    store_dx_block(top_lo, top_hi, n0, top, fast);
    store_dx_block(bottom_lo, bottom_hi, n0, bottom, fast);
    if (wide) {
        store_dx_block(top_lo, top_hi, n0 + 8u, top_r, fast);
        store_dx_block(bottom_lo, bottom_hi, n0 + 8u, bottom_r, fast);
    }
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_direct_wide(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_data_direct(direct_index(wid, nwg, lid), true, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_direct_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_data_direct(direct_index(wid, nwg, lid), false, false);
}

// ---------------------------------------------------------------------------------------------
// Direct backward weights: rows m = (kh, kw, ci), columns co, reduction over the rows
// r = (n, oh, ow) of split-K chunk `chunk` (invocations numbered chunk by chunk); the partials
// are added by `conv2d_backward_weights_reduce` as in the tiled variant.

// Four weight rows m = (kh, kw, ci): their taps, and the offset of their x element from the
// window's top-left pixel.
struct TapRows {
    kh: vec4<i32>,
    kw: vec4<i32>,
    offset: vec4<i32>,
    valid: vec4<bool>,
}

// Rows m..m+3; rows past gemm_m are not `valid`.
fn decode_tap_rows(m: u32) -> TapRows {
    let r = quad_rows(m);
    let tap = div_small4(r, p.in_c);
    let kh = div_small4(tap, p.kernel);
    let kw = tap - kh * p.kernel;
    let c = r - tap * p.in_c;
    return TapRows(
        vec4<i32>(kh),
        vec4<i32>(kw),
        vec4<i32>((kh * p.in_w + kw) * p.in_c + c),
        r < vec4<u32>(p.gemm_m),
    );
}

// Element index in x of each row's element in the window with top-left pixel (h0, w0) whose
// pixel (0, 0) would be at element `corner`; -1 in the padding and for rows that are not valid.
fn tap_bases(t: TapRows, corner: i32, h0: i32, w0: i32) -> vec4<i32> {
    let ih = h0 + t.kh;
    let iw = w0 + t.kw;
    // WGSL requires the parentheses (naga accepts them missing, browsers do not).
    let inside = (ih >= vec4<i32>(0)) & (iw >= vec4<i32>(0)) & (ih < vec4<i32>(i32(p.in_h))) & (iw < vec4<i32>(i32(p.in_w)));
    return select(vec4<i32>(-1), corner + t.offset, inside & t.valid);
}

// partials[chunk, m, n..n+7] = (v0, v1), within bounds.
fn store_partial_direct(chunk: u32, m: u32, n: u32, v0: vec4<f32>, v1: vec4<f32>, fast: bool) {
    if (!fast) {
        store_partial(chunk, m, n, v0);
        store_partial(chunk, m, n + 4u, v1);
        return;
    }
    if (m >= p.gemm_m) {
        return;
    }
    let o = ((chunk * p.gemm_m + m) * p.gemm_n + n) / 4u;
    partials4[o] = v0;
    if (n + 4u < p.gemm_n) {
        partials4[o + 1u] = v1;
    }
}

fn store_partial_block(chunk: u32, m: u32, n: u32, acc: Block, fast: bool) {
    store_partial_direct(chunk, m, n, acc[0], acc[1], fast);
    store_partial_direct(chunk, m + 1u, n, acc[2], acc[3], fast);
    store_partial_direct(chunk, m + 2u, n, acc[4], acc[5], fast);
    store_partial_direct(chunk, m + 3u, n, acc[6], acc[7], fast);
    store_partial_direct(chunk, m + 4u, n, acc[8], acc[9], fast);
    store_partial_direct(chunk, m + 5u, n, acc[10], acc[11], fast);
    store_partial_direct(chunk, m + 6u, n, acc[12], acc[13], fast);
    store_partial_direct(chunk, m + 7u, n, acc[14], acc[15], fast);
}

// The output position (image n, row oh, column ow) of the weight gradient's reduction row r. The
// reduction kernels walk it one row at a time (`next_out_pos`), without divisions.
struct OutPos {
    n: u32,
    oh: u32,
    ow: u32,
}

fn out_pos(r: u32) -> OutPos {
    let t = r / p.out_w;
    let n = t / p.out_h;
    return OutPos(n, t - n * p.out_h, r - t * p.out_w);
}

// The position of the next reduction row: `ow` is 0 exactly when a new output row begins.
fn next_out_pos(q: OutPos) -> OutPos {
    var s = q;
    s.ow += 1u;
    if (s.ow == p.out_w) {
        s.ow = 0u;
        s.oh += 1u;
        if (s.oh == p.out_h) {
            s.oh = 0u;
            s.n += 1u;
        }
    }
    return s;
}

// The x element bases of eight weight-gradient rows (`lo`, `hi`: four each) under the window of
// output position q.
fn reduction_bases(q: OutPos, lo: TapRows, hi: TapRows) -> Bases {
    // The window's top-left input pixel, and where its pixel (0, 0) would be in x.
    let h0 = i32(q.oh * p.stride) - i32(p.pad_top);
    let w0 = i32(q.ow * p.stride) - i32(p.pad_left);
    let corner = i32(q.n * p.in_h * p.in_w * p.in_c) + (h0 * i32(p.in_w) + w0) * i32(p.in_c);
    return Bases(tap_bases(lo, corner, h0, w0), tap_bases(hi, corner, h0, w0));
}

// `fast`: in_c % 4 == 0 and out_c % 4 == 0; then each four rows m..m+3 (m a multiple of 4) are
// four consecutive channels of one tap, one vec4 of x. `wide` (with `fast`, out_c % 16 == 0): 16
// columns per invocation, as in `forward_direct`.
fn backward_weights_direct(t: u32, fast: bool, wide: bool) {
    let width = select(DIRECT_N, 2u * DIRECT_N, wide);
    let per_chunk = ((p.gemm_m + DIRECT_M - 1u) / DIRECT_M) * ((p.gemm_n + width - 1u) / width);
    let chunk = t / per_chunk;
    if (chunk >= p.splits) {
        return;
    }
    let block = direct_block_n(t - chunk * per_chunk, p.gemm_n, width);
    let m0 = block.x;
    let n0 = block.y;
    let r_begin = chunk * p.split_rows;
    let r_end = min(r_begin + p.split_rows, p.gemm_k);

    let top_lo = decode_tap_rows(m0);
    let top_hi = decode_tap_rows(m0 + 4u);
    let bottom_lo = decode_tap_rows(m0 + 8u);
    let bottom_hi = decode_tap_rows(m0 + 12u);
    let cols_lo = columns_of(n0, p.out_c);
    let cols_hi = columns_of(n0 + 4u, p.out_c);
    let oq = p.out_c / 4u;
    let q0 = quad_of(n0, 0u, p.out_c);
    let q1 = quad_of(n0, 1u, p.out_c);

    // The output position of r_begin, then walked one step per reduction row.
    var q = out_pos(r_begin);

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var r = r_begin; r < r_end; r++) {
        let xt = reduction_bases(q, top_lo, top_hi);
        let xb = reduction_bases(q, bottom_lo, bottom_hi);
        if (fast) {
            let b0 = dy4[r * oq + q0];
            let b1 = dy4[r * oq + q1];
            let at_lo = x4_run(xt.lo.x, 0u);
            let at_hi = x4_run(xt.hi.x, 0u);
            let ab_lo = x4_run(xb.lo.x, 0u);
            let ab_hi = x4_run(xb.hi.x, 0u);
            direct_product_outer(&top, at_lo, at_hi, b0, b1);
            direct_product_outer(&bottom, ab_lo, ab_hi, b0, b1);
            if (wide) {
                let b2 = dy4[r * oq + q0 + 2u];
                let b3 = dy4[r * oq + q0 + 3u];
                direct_product_outer(&top_r, at_lo, at_hi, b2, b3);
                direct_product_outer(&bottom_r, ab_lo, ab_hi, b2, b3);
            }
        } else {
            let d = r * p.out_c;
            let b0 = vec4<f32>(dy[d + cols_lo.x], dy[d + cols_lo.y], dy[d + cols_lo.z], dy[d + cols_lo.w]);
            let b1 = vec4<f32>(dy[d + cols_hi.x], dy[d + cols_hi.y], dy[d + cols_hi.z], dy[d + cols_hi.w]);
            direct_product_outer(&top, x_scalars(xt.lo, 0u), x_scalars(xt.hi, 0u), b0, b1);
            direct_product_outer(&bottom, x_scalars(xb.lo, 0u), x_scalars(xb.hi, 0u), b0, b1);
        }
        q = next_out_pos(q);
    }

    store_partial_block(chunk, m0, n0, top, fast);
    store_partial_block(chunk, m0 + 8u, n0, bottom, fast);
    if (wide) {
        store_partial_block(chunk, m0, n0 + 8u, top_r, fast);
        store_partial_block(chunk, m0 + 8u, n0 + 8u, bottom_r, fast);
    }
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_weights_direct_wide(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_weights_direct(direct_index(wid, nwg, lid), true, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_weights_direct_general(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    backward_weights_direct(direct_index(wid, nwg, lid), false, false);
}
