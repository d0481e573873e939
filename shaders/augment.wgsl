// Data augmentation of square SIZExSIZEx3 u8 images (any side the host allows, 32 by default),
// written straight into the network's f32 input.
//
// One workgroup per image: the image lives in a storage scratch buffer as one packed RGB pixel
// per u32 (workgroup memory would cap the side at 44 under WebGPU's 16 KiB default) and goes
// through three op slots (the weak view, then two RandAugment ops), then an optional
// cutout square, then the input scaling. Every op is integer arithmetic (fixed-point affine
// matrices and blend factors, integer histograms with u32 atomics in workgroup memory), so the
// result is exact, order-independent and bitwise equal to the CPU reference on any device.
// The host (src/kernels/augment.rs) draws all random parameters; see its docs for the semantics.

struct Uniforms {
    // Images (augment_images) or packed u32 words (scale_images).
    count: u32,
    // Side of the images in pixels.
    size: u32,
    // The scaled value written inside the cutout square (mid-gray 127.5 under the input scaling).
    cutout_value: f32,
    _pad1: u32,
    // InputScale::apply(level) for levels 0..=255, so GPU and host scaling agree bit for bit.
    levels: array<vec4<f32>, 64>,
}

// WG, SLOTS, the OP_* and BORDER_* codes and the per-image structs `AugParams` and its `OpSlot`s
// are declared in src/kernels/augment.rs and prepended to this file by src/shaders.rs.
@group(0) @binding(0) var<uniform> u: Uniforms;
// u8 NHWC images packed 4 bytes per u32, little-endian (SIZE * SIZE * 3 / 4 words per image).
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<AugParams>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
// Two image buffers per image (ping-pong between slots): pixel p of buffer b of image i at
// (2 * i + b) * SIZE * SIZE + p.
@group(0) @binding(4) var<storage, read_write> img: array<u32>;

// Per-channel 256-bin histograms (equalize).
var<workgroup> hist: array<atomic<u32>, 768>;
// Per-channel lookup tables (autocontrast, equalize).
var<workgroup> lut: array<u32, 768>;
// Channel minima (0-2), maxima (3-5), and the sum of the luma image (6).
var<workgroup> stats: array<atomic<u32>, 7>;
// Equalize's per-channel step (0 = leave the channel alone).
var<workgroup> eq_step: array<u32, 3>;

fn side() -> i32 {
    return i32(u.size);
}

fn npix() -> u32 {
    return u.size * u.size;
}

// Orders this workgroup's scratch (storage) and statistics (workgroup) accesses.
fn sync() {
    storageBarrier();
    workgroupBarrier();
}

fn channel(px: u32, c: u32) -> u32 {
    return (px >> (8u * c)) & 255u;
}

fn rgb(r: u32, g: u32, b: u32) -> u32 {
    return r | (g << 8u) | (b << 16u);
}

// PIL's convert("L"): ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn luma(px: u32) -> u32 {
    return (channel(px, 0u) * 19595u + channel(px, 1u) * 38470u + channel(px, 2u) * 7471u + 32768u) >> 16u;
}

// PIL's ImageEnhance blend, degenerate + factor * (x - degenerate), truncated and clipped; the
// factor is Q16 and `add` (levels) shifts the result (Keras' additive brightness).
fn blend(degenerate: u32, x: u32, factor: i32, add: i32) -> u32 {
    let d = i32(degenerate);
    let t = d * 65536 + factor * (i32(x) - d) + add * 65536;
    return u32(clamp(t >> 16u, 0, 255));
}

// Index along one axis under the border rule; -1 means "outside, use the fill level".
fn border_index(i: i32, border: u32) -> i32 {
    if (i >= 0 && i < side()) {
        return i;
    }
    if (border == BORDER_CONSTANT) {
        return -1;
    }
    if (border == BORDER_REFLECT) {
        // Symmetric (... b a | a b ... y z | z y ...), period 2 * side().
        let period = 2 * side();
        let m = ((i % period) + period) % period;
        return select(m, period - 1 - m, m >= side());
    }
    if (border == BORDER_REFLECT101) {
        // Mirror without repeating the edge (... c b | a b c ... ), like tf.pad REFLECT.
        let period = 2 * side() - 2;
        let m = ((i % period) + period) % period;
        return select(m, period - m, m >= side());
    }
    return -1;
}

fn tap(base: u32, x: i32, y: i32, border: u32, fill: u32) -> u32 {
    let bx = border_index(x, border);
    let by = border_index(y, border);
    if (bx < 0 || by < 0) {
        return rgb(fill, fill, fill);
    }
    return img[base + u32(by * side() + bx)];
}

// Output pixel p sampled through the slot's inverse affine matrix (output -> input), in
// continuous coordinates where pixel i covers [i, i + 1).
fn sample_affine(base: u32, p: u32, slot: OpSlot) -> u32 {
    let x = i32(p % u.size);
    let y = i32(p / u.size);
    // Pixel centres (x + 0.5, y + 0.5) times the Q16 matrix, kept in Q17 so the half stays an
    // integer: exact, and |values| stay below 2^25.
    let sx = slot.m[0] * (2 * x + 1) + slot.m[1] * (2 * y + 1) + 2 * slot.m[2];
    let sy = slot.m[3] * (2 * x + 1) + slot.m[4] * (2 * y + 1) + 2 * slot.m[5];
    let border = (slot.mode >> 2u) & 3u;
    let fill = (slot.mode >> 8u) & 255u;
    if ((slot.mode & 1u) == 0u) {
        // Nearest, as PIL: the pixel containing the source point (floor).
        return tap(base, sx >> 17u, sy >> 17u, border, fill);
    }
    // Bilinear between the four nearest pixel centres, 8-bit weights, each tap under the border
    // rule (a constant border blends with the fill level, as TensorFlow's transforms do).
    let px = sx - 65536;
    let py = sy - 65536;
    let x0 = px >> 17u;
    let y0 = py >> 17u;
    let fx = u32((px >> 9u) & 255);
    let fy = u32((py >> 9u) & 255);
    let p00 = tap(base, x0, y0, border, fill);
    let p10 = tap(base, x0 + 1, y0, border, fill);
    let p01 = tap(base, x0, y0 + 1, border, fill);
    let p11 = tap(base, x0 + 1, y0 + 1, border, fill);
    var out = 0u;
    for (var c = 0u; c < 3u; c = c + 1u) {
        let top = channel(p00, c) * (256u - fx) + channel(p10, c) * fx;
        let bottom = channel(p01, c) * (256u - fx) + channel(p11, c) * fx;
        out = out | (((top * (256u - fy) + bottom * fy + 32768u) >> 16u) << (8u * c));
    }
    return out;
}

// PIL's ImageFilter.SMOOTH (3x3, weights 1 with 5 in the centre, / 13, rounded); PIL leaves
// the one-pixel border unfiltered.
fn smoothed(base: u32, p: u32) -> u32 {
    let x = i32(p % u.size);
    let y = i32(p / u.size);
    let centre = img[base + p];
    if (x == 0 || y == 0 || x == side() - 1 || y == side() - 1) {
        return centre;
    }
    var sum = vec3<u32>(0u);
    for (var dy = -1; dy <= 1; dy = dy + 1) {
        for (var dx = -1; dx <= 1; dx = dx + 1) {
            let q = img[base + u32((y + dy) * side() + x + dx)];
            sum = sum + vec3<u32>(channel(q, 0u), channel(q, 1u), channel(q, 2u));
        }
    }
    let c = vec3<u32>(channel(centre, 0u), channel(centre, 1u), channel(centre, 2u));
    let s = (sum + 4u * c + 6u) / 13u;
    return rgb(s.x, s.y, s.z);
}

// The slot's op at pixel p of buffer `base`.
fn apply_op(base: u32, p: u32, slot: OpSlot) -> u32 {
    let px = img[base + p];
    switch slot.kind {
        case OP_AFFINE: {
            return sample_affine(base, p, slot);
        }
        case OP_AUTOCONTRAST, OP_EQUALIZE: {
            return rgb(lut[channel(px, 0u)], lut[256u + channel(px, 1u)], lut[512u + channel(px, 2u)]);
        }
        case OP_SOLARIZE: {
            // m0 = threshold (0..=256): levels >= threshold are inverted; m1 = levels added first.
            var out = 0u;
            for (var c = 0u; c < 3u; c = c + 1u) {
                let v = min(255u, channel(px, c) + u32(slot.m[1]));
                out = out | (select(255u - v, v, v < u32(slot.m[0])) << (8u * c));
            }
            return out;
        }
        case OP_POSTERIZE: {
            // m0 = bits kept (1..=8).
            let mask = (255u << (8u - u32(slot.m[0]))) & 255u;
            let m = mask | (mask << 8u) | (mask << 16u);
            return px & m;
        }
        case OP_COLOR: {
            let l = luma(px);
            return rgb(blend(l, channel(px, 0u), slot.m[0], 0),
                       blend(l, channel(px, 1u), slot.m[0], 0),
                       blend(l, channel(px, 2u), slot.m[0], 0));
        }
        case OP_CONTRAST: {
            // PIL: the degenerate image is the mean of the luma image, int(mean + 0.5).
            let mean = (atomicLoad(&stats[6]) + npix() / 2u) / npix();
            return rgb(blend(mean, channel(px, 0u), slot.m[0], 0),
                       blend(mean, channel(px, 1u), slot.m[0], 0),
                       blend(mean, channel(px, 2u), slot.m[0], 0));
        }
        case OP_BRIGHTNESS: {
            return rgb(blend(0u, channel(px, 0u), slot.m[0], slot.m[1]),
                       blend(0u, channel(px, 1u), slot.m[0], slot.m[1]),
                       blend(0u, channel(px, 2u), slot.m[0], slot.m[1]));
        }
        case OP_SHARPNESS: {
            let s = smoothed(base, p);
            return rgb(blend(channel(s, 0u), channel(px, 0u), slot.m[0], 0),
                       blend(channel(s, 1u), channel(px, 1u), slot.m[0], 0),
                       blend(channel(s, 2u), channel(px, 2u), slot.m[0], 0));
        }
        case OP_IDENTITY: {
            return px;
        }
        default: {
            return px;
        }
    }
}

// Each channel's levels mapped linearly from [0, 255] onto [dark, light] of that channel,
// rounded to nearest (the colour symmetry).
fn recolored(px: u32, dark: u32, light: u32) -> u32 {
    var out = 0u;
    for (var c = 0u; c < 3u; c = c + 1u) {
        let v = channel(px, c);
        let mapped = (channel(dark, c) * (255u - v) + channel(light, c) * v + 127u) / 255u;
        out = out | (mapped << (8u * c));
    }
    return out;
}

fn level(v: u32) -> f32 {
    return u.levels[v >> 2u][v & 3u];
}

@compute @workgroup_size(WG)
fn augment_images(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroup-uniform, so the early return keeps the barriers below in uniform control flow.
    let image = wid.y * nwg.x + wid.x;
    if (image >= u.count) {
        return;
    }

    let n = npix();
    let first = 2u * image * n;
    // Unpack the image's bytes into one RGB pixel per u32, inverted (255 - v is v ^ 255 on each
    // channel) when the view asks for it.
    let flip_levels = select(0u, 0xffffffu, params[image].invert != 0u);
    // Read once per image, not per pixel.
    let recolor = params[image].recolor != 0u;
    let dark = params[image].dark;
    let light = params[image].light;
    for (var p = lid; p < n; p = p + WG) {
        var px = 0u;
        for (var c = 0u; c < 3u; c = c + 1u) {
            let byte = (image * n + p) * 3u + c;
            px = px | (((src[byte >> 2u] >> (8u * (byte & 3u))) & 255u) << (8u * c));
        }
        px = px ^ flip_levels;
        if (recolor) {
            px = recolored(px, dark, light);
        }
        img[first + p] = px;
    }
    sync();

    // Each slot: reset statistics, gather them, per-channel scalars, lookup tables, apply into
    // the other buffer. The barriers are unconditional; only the work depends on the op.
    var cur = 0u;
    for (var s = 0u; s < SLOTS; s = s + 1u) {
        let slot = params[image].slots[s];
        let kind = slot.kind;
        let a = first + cur * n;
        let b = first + (1u - cur) * n;

        for (var k = lid; k < 768u; k = k + WG) {
            atomicStore(&hist[k], 0u);
        }
        if (lid < 3u) {
            atomicStore(&stats[lid], 255u);
            atomicStore(&stats[3u + lid], 0u);
        }
        if (lid == 0u) {
            atomicStore(&stats[6], 0u);
        }
        workgroupBarrier();

        if (kind == OP_AUTOCONTRAST || kind == OP_EQUALIZE || kind == OP_CONTRAST) {
            for (var p = lid; p < n; p = p + WG) {
                let px = img[a + p];
                if (kind == OP_CONTRAST) {
                    atomicAdd(&stats[6], luma(px));
                } else {
                    for (var c = 0u; c < 3u; c = c + 1u) {
                        let v = channel(px, c);
                        if (kind == OP_AUTOCONTRAST) {
                            atomicMin(&stats[c], v);
                            atomicMax(&stats[3u + c], v);
                        } else {
                            atomicAdd(&hist[c * 256u + v], 1u);
                        }
                    }
                }
            }
        }
        workgroupBarrier();

        if (kind == OP_EQUALIZE && lid < 3u) {
            // PIL: step = (pixels - count of the last non-empty bin) / 256, none if <= 1 bin used.
            var used = 0u;
            var last = 0u;
            for (var i = 0u; i < 256u; i = i + 1u) {
                let h = atomicLoad(&hist[lid * 256u + i]);
                if (h > 0u) {
                    used = used + 1u;
                    last = h;
                }
            }
            eq_step[lid] = select(0u, (npix() - last) / 256u, used > 1u);
        }
        workgroupBarrier();

        if (kind == OP_AUTOCONTRAST || kind == OP_EQUALIZE) {
            // Invocation `lid` fills level `lid` of the three channels' tables.
            for (var c = 0u; c < 3u; c = c + 1u) {
                var v = lid;
                if (kind == OP_AUTOCONTRAST) {
                    let lo = atomicLoad(&stats[c]);
                    let hi = atomicLoad(&stats[3u + c]);
                    if (hi > lo) {
                        v = (clamp(lid, lo, hi) - lo) * 255u / (hi - lo);
                    }
                } else {
                    let step = eq_step[c];
                    if (step > 0u) {
                        var below = 0u;
                        for (var i = 0u; i < lid; i = i + 1u) {
                            below = below + atomicLoad(&hist[c * 256u + i]);
                        }
                        v = min(255u, (step / 2u + below) / step);
                    }
                }
                lut[c * 256u + lid] = v;
            }
        }
        workgroupBarrier();

        for (var p = lid; p < n; p = p + WG) {
            img[b + p] = apply_op(a, p, slot);
        }
        sync();
        cur = 1u - cur;
    }

    // Cutout, then the input scaling, straight into the f32 NHWC output.
    let cut = i32(params[image].cutout_size);
    let x0 = params[image].cutout_x - cut / 2;
    let y0 = params[image].cutout_y - cut / 2;
    for (var p = lid; p < n; p = p + WG) {
        let x = i32(p % u.size);
        let y = i32(p / u.size);
        let inside = x >= x0 && x < x0 + cut && y >= y0 && y < y0 + cut;
        let px = img[first + cur * n + p];
        for (var c = 0u; c < 3u; c = c + 1u) {
            dst[(image * n + p) * 3u + c] = select(level(channel(px, c)), u.cutout_value, inside);
        }
    }
}

// Evaluation input: the scaling alone. One invocation per packed word (four bytes).
@compute @workgroup_size(WG)
fn scale_images(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = linear_index(wid, nwg, lid, WG);
    if (i >= u.count) {
        return;
    }
    let word = src[i];
    for (var j = 0u; j < 4u; j = j + 1u) {
        dst[i * 4u + j] = level((word >> (8u * j)) & 255u);
    }
}
