// Subgroup variant of conv2d's direct path (CPU adapters with subgroups of 8 lanes: lavapipe).
// Not a module of its own: the crate appends it to conv2d.wgsl (Shader::Conv2dSubgroup), whose
// bindings, helpers and products it uses; a separate file because a module that calls subgroup
// builtins cannot be created on a device without the subgroup feature.
//
// lavapipe runs the 8 invocations of a subgroup in the lanes of one SIMD register. Any load from
// a storage buffer is a loop over the lanes with a bounds check each, ~20x a multiply-add, while a
// subgroupBroadcast is a register shuffle. The direct path's 16 x 16 blocks need, per four k, 16
// vec4s of the row operand (different for every invocation) and 16 vec4s of the column operand,
// which every invocation of the same column block needs alike. Here the 8 lanes of a subgroup take
// 8 consecutive row blocks of the same column block; each loads 2 of those 16 shared vec4s (1 of
// 4 in the weight gradient) and the subgroup broadcasts them: 18 loads per 1024 multiply-adds
// instead of 32 (a micro-benchmark of that loop: 1.85x). Sums run in the direct path's order, so
// the results are bitwise those of the `_wide` direct entry points.
//
// Only for vec4 channels with 16 | the GEMM's columns (what the `_wide` entry points need); no
// invocation returns before the broadcasts unless its whole subgroup does, and blocks past the
// last row compute zeros that are never stored.

const SG_LANES: u32 = 8u;

// First row and column of the block of invocation u of a GEMM with `col_blocks` 16-column blocks:
// groups of 8 consecutive invocations (a subgroup) share a column block and take consecutive row
// blocks.
fn sg_block(u: u32, col_blocks: u32) -> vec2<u32> {
    let g = u / SG_LANES;
    let mb = (g / col_blocks) * SG_LANES + u % SG_LANES;
    return vec2<u32>(mb * DIRECT_M, (g % col_blocks) * 2u * DIRECT_N);
}

// The 16 vec4s that lane l holds as v0 (vec4 l) and v1 (vec4 8 + l), as four matrices: matrix q
// has vec4s q, 4 + q, 8 + q, 12 + q as its columns (forward: the four k rows of column quad q).
fn sg_columns_strided(v0: vec4<f32>, v1: vec4<f32>) -> array<mat4x4<f32>, 4> {
    return array<mat4x4<f32>, 4>(
        mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 4u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v1, 4u)),
        mat4x4<f32>(subgroupBroadcast(v0, 1u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 1u), subgroupBroadcast(v1, 5u)),
        mat4x4<f32>(subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 6u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v1, 6u)),
        mat4x4<f32>(subgroupBroadcast(v0, 3u), subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 3u), subgroupBroadcast(v1, 7u)),
    );
}

// The same 16 vec4s, matrix q having vec4s 4q..4q+3 as its columns (backward data: the weight
// rows of input channels n0 + 4q ..).
fn sg_columns_blocked(v0: vec4<f32>, v1: vec4<f32>) -> array<mat4x4<f32>, 4> {
    return array<mat4x4<f32>, 4>(
        mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 1u), subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 3u)),
        mat4x4<f32>(subgroupBroadcast(v0, 4u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v0, 6u), subgroupBroadcast(v0, 7u)),
        mat4x4<f32>(subgroupBroadcast(v1, 0u), subgroupBroadcast(v1, 1u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v1, 3u)),
        mat4x4<f32>(subgroupBroadcast(v1, 4u), subgroupBroadcast(v1, 5u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v1, 7u)),
    );
}

// Forward (see `forward_direct`, `fast` and `wide`).
fn forward_subgroup(t: u32, lane: u32) {
    let block = sg_block(t, p.gemm_n / (2u * DIRECT_N));
    let m0 = block.x;
    let n0 = block.y;
    let top_lo = decode_windows(m0);
    let top_hi = decode_windows(m0 + 4u);
    let bottom_lo = decode_windows(m0 + 8u);
    let bottom_hi = decode_windows(m0 + 12u);
    let wq = p.out_c / 4u;
    // This lane's shared vec4s per four k rows: rows lane / 4 and 2 + lane / 4, quad lane % 4.
    let lane_quad = n0 / 4u + lane % 4u;
    let lane_row = lane / 4u;

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var kh = 0u; kh < p.kernel; kh++) {
        for (var kw = 0u; kw < p.kernel; kw++) {
            let xt = Bases(window_bases(top_lo, kh, kw), window_bases(top_hi, kh, kw));
            let xb = Bases(window_bases(bottom_lo, kh, kw), window_bases(bottom_hi, kh, kw));
            let k_tap = (kh * p.kernel + kw) * p.in_c;
            for (var c = 0u; c < p.in_c; c += 4u) {
                let row = k_tap + c + lane_row;
                let b = sg_columns_strided(w4[row * wq + lane_quad], w4[(row + 2u) * wq + lane_quad]);
                let at = x4_rows(xt, c / 4u);
                let ab = x4_rows(xb, c / 4u);
                direct_product_bn(&top, at, b[0], b[1]);
                direct_product_bn(&bottom, ab, b[0], b[1]);
                direct_product_bn(&top_r, at, b[2], b[3]);
                direct_product_bn(&bottom_r, ab, b[2], b[3]);
            }
        }
    }

    store_forward_block(m0, n0, top, true);
    store_forward_block(m0 + 8u, n0, bottom, true);
    store_forward_block(m0, n0 + 8u, top_r, true);
    store_forward_block(m0 + 8u, n0 + 8u, bottom_r, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    forward_subgroup(direct_index(wid, nwg, lid), lane);
}

// Backward data (see `backward_data_direct`); `phase_tiles` is a multiple of 8 here, so a
// subgroup never straddles two phases.
fn backward_data_subgroup(t: u32, lane: u32) {
    let col_blocks = p.in_c / (2u * DIRECT_N);
    let per_phase = p.phase_tiles * col_blocks;
    let phase = t / per_phase;
    if (phase >= p.stride * p.stride) {
        return;
    }
    let f = decode_phase(phase);
    let block = sg_block(t - phase * per_phase, col_blocks);
    let m0 = block.x;
    let n0 = block.y;
    let top_lo = decode_sources(f, m0);
    let top_hi = decode_sources(f, m0 + 4u);
    let bottom_lo = decode_sources(f, m0 + 8u);
    let bottom_hi = decode_sources(f, m0 + 12u);
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
            // This lane's weight rows: input channels n0 + lane and n0 + 8 + lane.
            let w_row = ((f.kh0 + a * p.stride) * p.kernel + f.kw0 + b * p.stride) * p.in_c + n0 + lane;
            for (var q = 0u; q < wq; q++) {
                let m = sg_columns_blocked(w4[w_row * wq + q], w4[(w_row + 8u) * wq + q]);
                let at = dy4_rows(dt, q);
                let ab = dy4_rows(db, q);
                direct_product_bk(&top, at, m[0], m[1]);
                direct_product_bk(&bottom, ab, m[0], m[1]);
                direct_product_bk(&top_r, at, m[2], m[3]);
                direct_product_bk(&bottom_r, ab, m[2], m[3]);
            }
        }
    }

    store_dx_block(top_lo, top_hi, n0, top, true);
    store_dx_block(bottom_lo, bottom_hi, n0, bottom, true);
    store_dx_block(top_lo, top_hi, n0 + 8u, top_r, true);
    store_dx_block(bottom_lo, bottom_hi, n0 + 8u, bottom_r, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_data_subgroup(direct_index(wid, nwg, lid), lane);
}

// Backward weights (see `backward_weights_direct`): the four dy vec4s of a reduction row are
// shared, one loaded by each of lanes 0..3 (and again by 4..7).
fn backward_weights_subgroup(t: u32, lane: u32) {
    let row_groups = (p.gemm_m + DIRECT_M * SG_LANES - 1u) / (DIRECT_M * SG_LANES);
    let col_blocks = p.gemm_n / (2u * DIRECT_N);
    let per_chunk = row_groups * SG_LANES * col_blocks;
    let chunk = t / per_chunk;
    if (chunk >= p.splits) {
        return;
    }
    let block = sg_block(t - chunk * per_chunk, col_blocks);
    let m0 = block.x;
    let n0 = block.y;
    let r_begin = chunk * p.split_rows;
    let r_end = min(r_begin + p.split_rows, p.gemm_k);

    let top_lo = decode_tap_rows(m0);
    let top_hi = decode_tap_rows(m0 + 4u);
    let bottom_lo = decode_tap_rows(m0 + 8u);
    let bottom_hi = decode_tap_rows(m0 + 12u);
    let oq = p.out_c / 4u;
    let lane_quad = n0 / 4u + lane % 4u;

    let t0 = r_begin / p.out_w;
    var ow = r_begin - t0 * p.out_w;
    var n = t0 / p.out_h;
    var oh = t0 - n * p.out_h;

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var r = r_begin; r < r_end; r++) {
        let h0 = i32(oh * p.stride) - i32(p.pad_top);
        let w0 = i32(ow * p.stride) - i32(p.pad_left);
        let corner = i32(n * p.in_h * p.in_w * p.in_c) + (h0 * i32(p.in_w) + w0) * i32(p.in_c);
        let xt = Bases(tap_bases(top_lo, corner, h0, w0), tap_bases(top_hi, corner, h0, w0));
        let xb = Bases(tap_bases(bottom_lo, corner, h0, w0), tap_bases(bottom_hi, corner, h0, w0));
        let v = dy4[r * oq + lane_quad];
        let b0 = subgroupBroadcast(v, 0u);
        let b1 = subgroupBroadcast(v, 1u);
        let b2 = subgroupBroadcast(v, 2u);
        let b3 = subgroupBroadcast(v, 3u);
        let at_lo = x4_run(xt.lo.x, 0u);
        let at_hi = x4_run(xt.hi.x, 0u);
        let ab_lo = x4_run(xb.lo.x, 0u);
        let ab_hi = x4_run(xb.hi.x, 0u);
        direct_product_outer(&top, at_lo, at_hi, b0, b1);
        direct_product_outer(&bottom, ab_lo, ab_hi, b0, b1);
        direct_product_outer(&top_r, at_lo, at_hi, b2, b3);
        direct_product_outer(&bottom_r, ab_lo, ab_hi, b2, b3);
        ow += 1u;
        if (ow == p.out_w) {
            ow = 0u;
            oh += 1u;
            if (oh == p.out_h) {
                oh = 0u;
                n += 1u;
            }
        }
    }

    store_partial_block(chunk, m0, n0, top, true);
    store_partial_block(chunk, m0 + 8u, n0, bottom, true);
    store_partial_block(chunk, m0, n0 + 8u, top_r, true);
    store_partial_block(chunk, m0 + 8u, n0 + 8u, bottom_r, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_weights_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_weights_subgroup(direct_index(wid, nwg, lid), lane);
}
