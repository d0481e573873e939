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
// last row compute zeros that are never stored. SG_LANES (8) comes from src/kernels/conv2d.rs
// with conv2d.wgsl's constants.

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

    var q = out_pos(r_begin);

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var r = r_begin; r < r_end; r++) {
        let xt = reduction_bases(q, top_lo, top_hi);
        let xb = reduction_bases(q, bottom_lo, bottom_hi);
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
        q = next_out_pos(q);
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

// ---------------------------------------------------------------------------------------------
// The three taps of one kernel row, written once for every `_rows` kernel: forward and backward
// data, 16 or 32 columns (rows 16 or 8 pixels wide only change where the pixels come from). A
// block's top 8 rows read the 8-pixel windows of one 10-pixel run and its bottom 8 rows those of
// another (16-wide rows: pixels 0-9 and 8-17 of one row; 8-wide: one row each). Forward, tap kw
// reads window kw; backward data walks the kernel row mirrored, tap b reading window 2 - b. Each
// block sums the taps in order, as the pasted blocks these replace did (bitwise the same).

// The 8-pixel windows starting at pixels 0, 1 and 2 of a 10-pixel run.
struct TapWindows {
    at0: array<vec4<f32>, 8>,
    at1: array<vec4<f32>, 8>,
    at2: array<vec4<f32>, 8>,
}

fn tap_windows(px: array<vec4<f32>, 10>) -> TapWindows {
    return TapWindows(
        array<vec4<f32>, 8>(px[0], px[1], px[2], px[3], px[4], px[5], px[6], px[7]),
        array<vec4<f32>, 8>(px[1], px[2], px[3], px[4], px[5], px[6], px[7], px[8]),
        array<vec4<f32>, 8>(px[2], px[3], px[4], px[5], px[6], px[7], px[8], px[9]),
    );
}

// Pixels 0-9 and 8-17 of an 18-pixel run: the runs of a 16-pixel block's top and bottom rows.
fn top_run(px: array<vec4<f32>, 18>) -> array<vec4<f32>, 10> {
    return array<vec4<f32>, 10>(px[0], px[1], px[2], px[3], px[4], px[5], px[6], px[7], px[8], px[9]);
}

fn bottom_run(px: array<vec4<f32>, 18>) -> array<vec4<f32>, 10> {
    return array<vec4<f32>, 10>(px[8], px[9], px[10], px[11], px[12], px[13], px[14], px[15], px[16], px[17]);
}

// 16 x 16 blocks, forward: `top`/`bottom` hold columns 0-7 of rows 0-7 / 8-15, `top_r`/`bottom_r`
// columns 8-15. Tap kw's weights are w rows `row + kw * in_c` and 2 further (this lane's k rows),
// column quad `col`.
fn three_taps16_forward(
    top: ptr<function, Block>,
    bottom: ptr<function, Block>,
    top_r: ptr<function, Block>,
    bottom_r: ptr<function, Block>,
    t: TapWindows,
    u: TapWindows,
    row: u32,
    wq: u32,
    col: u32,
) {
    let b0 = sg_columns_strided(w4[row * wq + col], w4[(row + 2u) * wq + col]);
    let b1 = sg_columns_strided(w4[(row + p.in_c) * wq + col], w4[(row + p.in_c + 2u) * wq + col]);
    let b2 = sg_columns_strided(w4[(row + 2u * p.in_c) * wq + col], w4[(row + 2u * p.in_c + 2u) * wq + col]);
    direct_product_bn(top, t.at0, b0[0], b0[1]);
    direct_product_bn(bottom, u.at0, b0[0], b0[1]);
    direct_product_bn(top_r, t.at0, b0[2], b0[3]);
    direct_product_bn(bottom_r, u.at0, b0[2], b0[3]);
    direct_product_bn(top, t.at1, b1[0], b1[1]);
    direct_product_bn(bottom, u.at1, b1[0], b1[1]);
    direct_product_bn(top_r, t.at1, b1[2], b1[3]);
    direct_product_bn(bottom_r, u.at1, b1[2], b1[3]);
    direct_product_bn(top, t.at2, b2[0], b2[1]);
    direct_product_bn(bottom, u.at2, b2[0], b2[1]);
    direct_product_bn(top_r, t.at2, b2[2], b2[3]);
    direct_product_bn(bottom_r, u.at2, b2[2], b2[3]);
}

// 16 x 16 blocks, backward data: tap b's weights are the rows of input channels `row` and
// `row + 8` of tap (a, b), w row `row + b * in_c`, output-channel quad `col`.
fn three_taps16_backward(
    top: ptr<function, Block>,
    bottom: ptr<function, Block>,
    top_r: ptr<function, Block>,
    bottom_r: ptr<function, Block>,
    t: TapWindows,
    u: TapWindows,
    row: u32,
    wq: u32,
    col: u32,
) {
    let m0 = sg_columns_blocked(w4[row * wq + col], w4[(row + 8u) * wq + col]);
    let m1 = sg_columns_blocked(w4[(row + p.in_c) * wq + col], w4[(row + p.in_c + 8u) * wq + col]);
    let m2 = sg_columns_blocked(w4[(row + 2u * p.in_c) * wq + col], w4[(row + 2u * p.in_c + 8u) * wq + col]);
    direct_product_bk(top, t.at2, m0[0], m0[1]);
    direct_product_bk(bottom, u.at2, m0[0], m0[1]);
    direct_product_bk(top_r, t.at2, m0[2], m0[3]);
    direct_product_bk(bottom_r, u.at2, m0[2], m0[3]);
    direct_product_bk(top, t.at1, m1[0], m1[1]);
    direct_product_bk(bottom, u.at1, m1[0], m1[1]);
    direct_product_bk(top_r, t.at1, m1[2], m1[3]);
    direct_product_bk(bottom_r, u.at1, m1[2], m1[3]);
    direct_product_bk(top, t.at0, m2[0], m2[1]);
    direct_product_bk(bottom, u.at0, m2[0], m2[1]);
    direct_product_bk(top_r, t.at0, m2[2], m2[3]);
    direct_product_bk(bottom_r, u.at0, m2[2], m2[3]);
}

// 16 x 32 blocks, forward: t0..t3 rows 0-7 and b0..b3 rows 8-15 of column groups 0..3; tap kw's
// weights are w rows `row + kw * in_c` .. + 3, column quad `col`, loaded just before its products.
fn three_taps32_forward(
    t0: ptr<function, Block>,
    t1: ptr<function, Block>,
    t2: ptr<function, Block>,
    t3: ptr<function, Block>,
    b0: ptr<function, Block>,
    b1: ptr<function, Block>,
    b2: ptr<function, Block>,
    b3: ptr<function, Block>,
    t: TapWindows,
    u: TapWindows,
    row: u32,
    wq: u32,
    col: u32,
) {
    let m_0 = w32_strided(row, wq, col);
    product32_bn(t0, t1, t2, t3, t.at0, m_0);
    product32_bn(b0, b1, b2, b3, u.at0, m_0);
    let m_1 = w32_strided(row + p.in_c, wq, col);
    product32_bn(t0, t1, t2, t3, t.at1, m_1);
    product32_bn(b0, b1, b2, b3, u.at1, m_1);
    let m_2 = w32_strided(row + 2u * p.in_c, wq, col);
    product32_bn(t0, t1, t2, t3, t.at2, m_2);
    product32_bn(b0, b1, b2, b3, u.at2, m_2);
}

// 16 x 32 blocks, backward data: tap b's weights are `w32_blocked(row + b * in_c, wq, col)`.
fn three_taps32_backward(
    t0: ptr<function, Block>,
    t1: ptr<function, Block>,
    t2: ptr<function, Block>,
    t3: ptr<function, Block>,
    b0: ptr<function, Block>,
    b1: ptr<function, Block>,
    b2: ptr<function, Block>,
    b3: ptr<function, Block>,
    t: TapWindows,
    u: TapWindows,
    row: u32,
    wq: u32,
    col: u32,
) {
    let m_0 = w32_blocked(row, wq, col);
    product32_bk(t0, t1, t2, t3, t.at2, m_0);
    product32_bk(b0, b1, b2, b3, u.at2, m_0);
    let m_1 = w32_blocked(row + p.in_c, wq, col);
    product32_bk(t0, t1, t2, t3, t.at1, m_1);
    product32_bk(b0, b1, b2, b3, u.at1, m_1);
    let m_2 = w32_blocked(row + 2u * p.in_c, wq, col);
    product32_bk(t0, t1, t2, t3, t.at0, m_2);
    product32_bk(b0, b1, b2, b3, u.at0, m_2);
}

// ---------------------------------------------------------------------------------------------
// Forward of a 3x3 stride-1 convolution whose output rows are a multiple of 16 wide: a block's
// 16 GEMM rows are then 16 neighbouring pixels of one output row, and for each kernel row kh its
// three taps kw read the same 18 neighbouring input pixels, shifted by one: loaded once per four
// channels and used three times (18 loads instead of 48), the weights shared as above. For rows
// exactly 8 wide (an even number of them; the `rows8` kernels) a block's 16 rows are two whole
// neighbouring rows, each kernel row's taps reading 10 neighbouring pixels of each (20 loads
// instead of 48). Sums run over kh, then channels, then kw: a different order from the direct
// path (deterministic all the same).
//
// The four block kernels below (16 or 32 columns, forward or backward data) each serve both row
// layouts: every entry point passes `rows8` as a literal, so the compiler keeps one branch of the
// run loads (`x4_runs`, `dy4_runs`) and the loop is written once.

// The image rows a block's kernel row reads, in an h x w x c tensor's image n: row r (the top
// half's run, and the bottom half's unless rows8) and row r + 1 (the bottom half's, rows8); a
// row's `ok` is false outside the image or for blocks past the last row (`valid` false).
struct RunRows {
    top_ok: bool,
    bottom_ok: bool,
    top_base: u32,
    bottom_base: u32,
}

fn run_rows(valid: bool, n: u32, r: i32, h: u32, w: u32, c: u32) -> RunRows {
    return RunRows(
        valid && r >= 0 && r < i32(h),
        valid && r + 1 >= 0 && r + 1 < i32(h),
        (n * h + u32(max(r, 0))) * w * c,
        (n * h + u32(max(r + 1, 0))) * w * c,
    );
}

// Input vec4 number c4 of pixel (row `base`, column iw), zeros outside the image (or when the
// whole row is: `row_ok` false).
fn x4_pixel(row_ok: bool, base: u32, iw: i32, c4: u32) -> vec4<f32> {
    if (!row_ok || iw < 0 || iw >= i32(p.in_w)) {
        return vec4<f32>(0.0);
    }
    return x4[(base + u32(iw) * p.in_c) / 4u + c4];
}

// Pixels first .. first + 17 (rows kernels) or first .. first + 9 (rows8 kernels) of one input
// row, vec4 c4 of each, zeros outside the image.
fn x4_pixels18(row_ok: bool, base: u32, first: i32, c4: u32) -> array<vec4<f32>, 18> {
    return array<vec4<f32>, 18>(
        x4_pixel(row_ok, base, first, c4),
        x4_pixel(row_ok, base, first + 1, c4),
        x4_pixel(row_ok, base, first + 2, c4),
        x4_pixel(row_ok, base, first + 3, c4),
        x4_pixel(row_ok, base, first + 4, c4),
        x4_pixel(row_ok, base, first + 5, c4),
        x4_pixel(row_ok, base, first + 6, c4),
        x4_pixel(row_ok, base, first + 7, c4),
        x4_pixel(row_ok, base, first + 8, c4),
        x4_pixel(row_ok, base, first + 9, c4),
        x4_pixel(row_ok, base, first + 10, c4),
        x4_pixel(row_ok, base, first + 11, c4),
        x4_pixel(row_ok, base, first + 12, c4),
        x4_pixel(row_ok, base, first + 13, c4),
        x4_pixel(row_ok, base, first + 14, c4),
        x4_pixel(row_ok, base, first + 15, c4),
        x4_pixel(row_ok, base, first + 16, c4),
        x4_pixel(row_ok, base, first + 17, c4),
    );
}

fn x4_pixels10(row_ok: bool, base: u32, first: i32, c4: u32) -> array<vec4<f32>, 10> {
    return array<vec4<f32>, 10>(
        x4_pixel(row_ok, base, first, c4),
        x4_pixel(row_ok, base, first + 1, c4),
        x4_pixel(row_ok, base, first + 2, c4),
        x4_pixel(row_ok, base, first + 3, c4),
        x4_pixel(row_ok, base, first + 4, c4),
        x4_pixel(row_ok, base, first + 5, c4),
        x4_pixel(row_ok, base, first + 6, c4),
        x4_pixel(row_ok, base, first + 7, c4),
        x4_pixel(row_ok, base, first + 8, c4),
        x4_pixel(row_ok, base, first + 9, c4),
    );
}

// The top and bottom halves' tap windows of input vec4 c4, pixels from `first` on.
fn x4_runs(rows8: bool, rows: RunRows, first: i32, c4: u32) -> array<TapWindows, 2> {
    if (rows8) {
        return array<TapWindows, 2>(
            tap_windows(x4_pixels10(rows.top_ok, rows.top_base, first, c4)),
            tap_windows(x4_pixels10(rows.bottom_ok, rows.bottom_base, first, c4)),
        );
    }
    let px = x4_pixels18(rows.top_ok, rows.top_base, first, c4);
    return array<TapWindows, 2>(tap_windows(top_run(px)), tap_windows(bottom_run(px)));
}

fn forward_rows_subgroup(t: u32, lane: u32, rows8: bool) {
    let block = sg_block(t, p.gemm_n / (2u * DIRECT_N));
    let m0 = block.x;
    let n0 = block.y;
    // The block's output row (image n, row oh; rows8: rows oh and oh + 1) and first column;
    // blocks past the last row compute zeros and store nothing.
    let valid = m0 < p.gemm_m;
    let image_row = m0 / p.out_w;
    let ow0 = i32(m0 - image_row * p.out_w);
    let n = image_row / p.out_h;
    let oh = image_row - n * p.out_h;
    let wq = p.out_c / 4u;
    let lane_quad = n0 / 4u + lane % 4u;
    let lane_row = lane / 4u;

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var kh = 0u; kh < 3u; kh++) {
        let rows = run_rows(valid, n, i32(oh + kh) - i32(p.pad_top), p.in_h, p.in_w, p.in_c);
        for (var c = 0u; c < p.in_c; c += 4u) {
            // Pixels ow0 - pad_left + j.
            let runs = x4_runs(rows8, rows, ow0 - i32(p.pad_left), c / 4u);
            // Weight rows (kh, kw, c + lane_row) and (kh, kw, c + 2 + lane_row) for kw = 0, 1, 2.
            let row = (kh * 3u) * p.in_c + c + lane_row;
            three_taps16_forward(&top, &bottom, &top_r, &bottom_r, runs[0], runs[1], row, wq, lane_quad);
        }
    }

    store_forward_block(m0, n0, top, true);
    store_forward_block(m0 + 8u, n0, bottom, true);
    store_forward_block(m0, n0 + 8u, top_r, true);
    store_forward_block(m0 + 8u, n0 + 8u, bottom_r, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_rows_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    forward_rows_subgroup(direct_index(wid, nwg, lid), lane, false);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_rows8_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    forward_rows_subgroup(direct_index(wid, nwg, lid), lane, true);
}

// Backward data of the same convolutions (3x3, stride 1, rows a multiple of 16 or exactly 8
// wide): a block's 16 rows are 16 neighbouring input pixels of one row (or two rows of 8), and
// the three taps b of a kernel row a read 18 neighbouring dy pixels (10 of each row), shifted by
// one. Sums over a, then channels, then b.

// dy vec4 number q of pixel (row `base`, column ow), zeros outside (or when `row_ok` is false).
fn dy4_pixel(row_ok: bool, base: u32, ow: i32, q: u32) -> vec4<f32> {
    if (!row_ok || ow < 0 || ow >= i32(p.out_w)) {
        return vec4<f32>(0.0);
    }
    return dy4[(base + u32(ow) * p.out_c) / 4u + q];
}

// The same for dy: pixels first .. first + 17 or first .. first + 9 of one dy row, vec4 q.
fn dy4_pixels18(row_ok: bool, base: u32, first: i32, q: u32) -> array<vec4<f32>, 18> {
    return array<vec4<f32>, 18>(
        dy4_pixel(row_ok, base, first, q),
        dy4_pixel(row_ok, base, first + 1, q),
        dy4_pixel(row_ok, base, first + 2, q),
        dy4_pixel(row_ok, base, first + 3, q),
        dy4_pixel(row_ok, base, first + 4, q),
        dy4_pixel(row_ok, base, first + 5, q),
        dy4_pixel(row_ok, base, first + 6, q),
        dy4_pixel(row_ok, base, first + 7, q),
        dy4_pixel(row_ok, base, first + 8, q),
        dy4_pixel(row_ok, base, first + 9, q),
        dy4_pixel(row_ok, base, first + 10, q),
        dy4_pixel(row_ok, base, first + 11, q),
        dy4_pixel(row_ok, base, first + 12, q),
        dy4_pixel(row_ok, base, first + 13, q),
        dy4_pixel(row_ok, base, first + 14, q),
        dy4_pixel(row_ok, base, first + 15, q),
        dy4_pixel(row_ok, base, first + 16, q),
        dy4_pixel(row_ok, base, first + 17, q),
    );
}

fn dy4_pixels10(row_ok: bool, base: u32, first: i32, q: u32) -> array<vec4<f32>, 10> {
    return array<vec4<f32>, 10>(
        dy4_pixel(row_ok, base, first, q),
        dy4_pixel(row_ok, base, first + 1, q),
        dy4_pixel(row_ok, base, first + 2, q),
        dy4_pixel(row_ok, base, first + 3, q),
        dy4_pixel(row_ok, base, first + 4, q),
        dy4_pixel(row_ok, base, first + 5, q),
        dy4_pixel(row_ok, base, first + 6, q),
        dy4_pixel(row_ok, base, first + 7, q),
        dy4_pixel(row_ok, base, first + 8, q),
        dy4_pixel(row_ok, base, first + 9, q),
    );
}

// The top and bottom halves' tap windows of dy vec4 q, pixels from `first` on.
fn dy4_runs(rows8: bool, rows: RunRows, first: i32, q: u32) -> array<TapWindows, 2> {
    if (rows8) {
        return array<TapWindows, 2>(
            tap_windows(dy4_pixels10(rows.top_ok, rows.top_base, first, q)),
            tap_windows(dy4_pixels10(rows.bottom_ok, rows.bottom_base, first, q)),
        );
    }
    let px = dy4_pixels18(rows.top_ok, rows.top_base, first, q);
    return array<TapWindows, 2>(tap_windows(top_run(px)), tap_windows(bottom_run(px)));
}

fn backward_data_rows_subgroup(t: u32, lane: u32, rows8: bool) {
    let block = sg_block(t, p.in_c / (2u * DIRECT_N));
    let m0 = block.x;
    let n0 = block.y;
    // The dx rows of the block (for the stores) and its input row (image n, row ih; rows8: rows
    // ih and ih + 1).
    let f = decode_phase(0u);
    let top_lo = decode_sources(f, m0);
    let top_hi = decode_sources(f, m0 + 4u);
    let bottom_lo = decode_sources(f, m0 + 8u);
    let bottom_hi = decode_sources(f, m0 + 12u);
    let valid = m0 < f.rows;
    let image_row = m0 / p.in_w;
    let iw0 = i32(m0 - image_row * p.in_w);
    let n = image_row / p.in_h;
    let ih = image_row - n * p.in_h;
    let wq = p.out_c / 4u;

    var top: Block;
    var bottom: Block;
    var top_r: Block;
    var bottom_r: Block;
    for (var a = 0u; a < 3u; a++) {
        let rows = run_rows(valid, n, i32(ih + p.pad_top) - i32(a), p.out_h, p.out_w, p.out_c);
        // Row i under tap b reads dy pixel d0 + i + 2 - b.
        let d0 = iw0 + i32(p.pad_left) - 2;
        // This lane's weight rows: (a, b, input channel n0 + lane) and n0 + 8 + lane.
        let w_row = a * 3u * p.in_c + n0 + lane;
        for (var q = 0u; q < wq; q++) {
            let runs = dy4_runs(rows8, rows, d0, q);
            three_taps16_backward(&top, &bottom, &top_r, &bottom_r, runs[0], runs[1], w_row, wq, q);
        }
    }

    store_dx_block(top_lo, top_hi, n0, top, true);
    store_dx_block(bottom_lo, bottom_hi, n0, bottom, true);
    store_dx_block(top_lo, top_hi, n0 + 8u, top_r, true);
    store_dx_block(bottom_lo, bottom_hi, n0 + 8u, bottom_r, true);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_rows_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_data_rows_subgroup(direct_index(wid, nwg, lid), lane, false);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_rows8_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_data_rows_subgroup(direct_index(wid, nwg, lid), lane, true);
}

// ---------------------------------------------------------------------------------------------
// 32-column blocks of the `_rows` kernels (GEMM columns a multiple of 32): each invocation keeps
// 16 rows x 32 columns (eight Blocks: top and bottom halves of column groups 0..3, 8 columns
// each). The row operand an invocation loads (18 pixels of a row per four channels, ~75% of the
// loads) then feeds twice the multiply-adds, and the 32 columns' weights take 4 loads per lane
// per tap instead of 2 per 16 columns. Per column the sums run in the 16-column kernels' order,
// so the results are bitwise theirs.

// First row and column of the 16 x 32 block of invocation u (as `sg_block`).
fn sg_block32(u: u32, col_blocks: u32) -> vec2<u32> {
    let g = u / SG_LANES;
    let mb = (g / col_blocks) * SG_LANES + u % SG_LANES;
    return vec2<u32>(mb * DIRECT_M, (g % col_blocks) * 4u * DIRECT_N);
}

// Forward: lane l holds vec4 (column quad) l of the four k rows, v0..v3; matrix q has the four
// k rows of column quad q as its columns.
fn sg_columns32_strided(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) -> array<mat4x4<f32>, 8> {
    return array<mat4x4<f32>, 8>(
        mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v2, 0u), subgroupBroadcast(v3, 0u)),
        mat4x4<f32>(subgroupBroadcast(v0, 1u), subgroupBroadcast(v1, 1u), subgroupBroadcast(v2, 1u), subgroupBroadcast(v3, 1u)),
        mat4x4<f32>(subgroupBroadcast(v0, 2u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v2, 2u), subgroupBroadcast(v3, 2u)),
        mat4x4<f32>(subgroupBroadcast(v0, 3u), subgroupBroadcast(v1, 3u), subgroupBroadcast(v2, 3u), subgroupBroadcast(v3, 3u)),
        mat4x4<f32>(subgroupBroadcast(v0, 4u), subgroupBroadcast(v1, 4u), subgroupBroadcast(v2, 4u), subgroupBroadcast(v3, 4u)),
        mat4x4<f32>(subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 5u), subgroupBroadcast(v2, 5u), subgroupBroadcast(v3, 5u)),
        mat4x4<f32>(subgroupBroadcast(v0, 6u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v2, 6u), subgroupBroadcast(v3, 6u)),
        mat4x4<f32>(subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 7u), subgroupBroadcast(v2, 7u), subgroupBroadcast(v3, 7u)),
    );
}

// Backward data: lane l holds the weight rows of columns (input channels) n0 + l + 8j as vj;
// matrix i has columns n0 + 4i .. n0 + 4i + 3.
fn sg_columns32_blocked(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) -> array<mat4x4<f32>, 8> {
    return array<mat4x4<f32>, 8>(
        mat4x4<f32>(subgroupBroadcast(v0, 0u), subgroupBroadcast(v0, 1u), subgroupBroadcast(v0, 2u), subgroupBroadcast(v0, 3u)),
        mat4x4<f32>(subgroupBroadcast(v0, 4u), subgroupBroadcast(v0, 5u), subgroupBroadcast(v0, 6u), subgroupBroadcast(v0, 7u)),
        mat4x4<f32>(subgroupBroadcast(v1, 0u), subgroupBroadcast(v1, 1u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v1, 3u)),
        mat4x4<f32>(subgroupBroadcast(v1, 4u), subgroupBroadcast(v1, 5u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v1, 7u)),
        mat4x4<f32>(subgroupBroadcast(v2, 0u), subgroupBroadcast(v2, 1u), subgroupBroadcast(v2, 2u), subgroupBroadcast(v2, 3u)),
        mat4x4<f32>(subgroupBroadcast(v2, 4u), subgroupBroadcast(v2, 5u), subgroupBroadcast(v2, 6u), subgroupBroadcast(v2, 7u)),
        mat4x4<f32>(subgroupBroadcast(v3, 0u), subgroupBroadcast(v3, 1u), subgroupBroadcast(v3, 2u), subgroupBroadcast(v3, 3u)),
        mat4x4<f32>(subgroupBroadcast(v3, 4u), subgroupBroadcast(v3, 5u), subgroupBroadcast(v3, 6u), subgroupBroadcast(v3, 7u)),
    );
}

// Four k rows of the forward weights, rows `row` .. `row + 3`, this lane's column quad.
fn w32_strided(row: u32, wq: u32, quad: u32) -> array<mat4x4<f32>, 8> {
    return sg_columns32_strided(
        w4[row * wq + quad],
        w4[(row + 1u) * wq + quad],
        w4[(row + 2u) * wq + quad],
        w4[(row + 3u) * wq + quad],
    );
}

// Output-channel quad q of the backward-data weight rows `w_row + 8j` (this lane's columns).
fn w32_blocked(w_row: u32, wq: u32, q: u32) -> array<mat4x4<f32>, 8> {
    return sg_columns32_blocked(
        w4[w_row * wq + q],
        w4[(w_row + 8u) * wq + q],
        w4[(w_row + 16u) * wq + q],
        w4[(w_row + 24u) * wq + q],
    );
}

fn product32_bn(
    g0: ptr<function, Block>,
    g1: ptr<function, Block>,
    g2: ptr<function, Block>,
    g3: ptr<function, Block>,
    a: array<vec4<f32>, 8>,
    m: array<mat4x4<f32>, 8>,
) {
    direct_product_bn(g0, a, m[0], m[1]);
    direct_product_bn(g1, a, m[2], m[3]);
    direct_product_bn(g2, a, m[4], m[5]);
    direct_product_bn(g3, a, m[6], m[7]);
}

fn product32_bk(
    g0: ptr<function, Block>,
    g1: ptr<function, Block>,
    g2: ptr<function, Block>,
    g3: ptr<function, Block>,
    a: array<vec4<f32>, 8>,
    m: array<mat4x4<f32>, 8>,
) {
    direct_product_bk(g0, a, m[0], m[1]);
    direct_product_bk(g1, a, m[2], m[3]);
    direct_product_bk(g2, a, m[4], m[5]);
    direct_product_bk(g3, a, m[6], m[7]);
}

// Stores of a 16 x 32 block: blocks[g] rows m0 .. m0 + 7 (top) and blocks[4 + g] rows m0 + 8 ..
// m0 + 15 (bottom), columns n0 + 8g .. n0 + 8g + 7.
// (Constant indices: lavapipe runs a loop over g slower.)
fn store_forward_block32(m0: u32, n0: u32, blocks: array<Block, 8>) {
    store_forward_block(m0, n0, blocks[0], true);
    store_forward_block(m0, n0 + 8u, blocks[1], true);
    store_forward_block(m0, n0 + 16u, blocks[2], true);
    store_forward_block(m0, n0 + 24u, blocks[3], true);
    store_forward_block(m0 + 8u, n0, blocks[4], true);
    store_forward_block(m0 + 8u, n0 + 8u, blocks[5], true);
    store_forward_block(m0 + 8u, n0 + 16u, blocks[6], true);
    store_forward_block(m0 + 8u, n0 + 24u, blocks[7], true);
}

fn store_dx_block32(top_lo: Sources, top_hi: Sources, bottom_lo: Sources, bottom_hi: Sources, n0: u32, blocks: array<Block, 8>) {
    store_dx_block(top_lo, top_hi, n0, blocks[0], true);
    store_dx_block(top_lo, top_hi, n0 + 8u, blocks[1], true);
    store_dx_block(top_lo, top_hi, n0 + 16u, blocks[2], true);
    store_dx_block(top_lo, top_hi, n0 + 24u, blocks[3], true);
    store_dx_block(bottom_lo, bottom_hi, n0, blocks[4], true);
    store_dx_block(bottom_lo, bottom_hi, n0 + 8u, blocks[5], true);
    store_dx_block(bottom_lo, bottom_hi, n0 + 16u, blocks[6], true);
    store_dx_block(bottom_lo, bottom_hi, n0 + 24u, blocks[7], true);
}

fn forward_rows32_subgroup(t: u32, lane: u32, rows8: bool) {
    let block = sg_block32(t, p.gemm_n / (4u * DIRECT_N));
    let m0 = block.x;
    let n0 = block.y;
    let valid = m0 < p.gemm_m;
    let image_row = m0 / p.out_w;
    let ow0 = i32(m0 - image_row * p.out_w);
    let n = image_row / p.out_h;
    let oh = image_row - n * p.out_h;
    let wq = p.out_c / 4u;
    let quad = n0 / 4u + lane;

    var t0: Block;
    var t1: Block;
    var t2: Block;
    var t3: Block;
    var b0: Block;
    var b1: Block;
    var b2: Block;
    var b3: Block;
    for (var kh = 0u; kh < 3u; kh++) {
        let rows = run_rows(valid, n, i32(oh + kh) - i32(p.pad_top), p.in_h, p.in_w, p.in_c);
        for (var c = 0u; c < p.in_c; c += 4u) {
            let runs = x4_runs(rows8, rows, ow0 - i32(p.pad_left), c / 4u);
            // Weight rows (kh, kw, c .. c + 3), kw = 0, 1, 2.
            let row = (kh * 3u) * p.in_c + c;
            three_taps32_forward(&t0, &t1, &t2, &t3, &b0, &b1, &b2, &b3, runs[0], runs[1], row, wq, quad);
        }
    }

    store_forward_block32(m0, n0, array<Block, 8>(t0, t1, t2, t3, b0, b1, b2, b3));
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_rows32_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    forward_rows32_subgroup(direct_index(wid, nwg, lid), lane, false);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_forward_rows8_32_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    forward_rows32_subgroup(direct_index(wid, nwg, lid), lane, true);
}

fn backward_data_rows32_subgroup(t: u32, lane: u32, rows8: bool) {
    let block = sg_block32(t, p.in_c / (4u * DIRECT_N));
    let m0 = block.x;
    let n0 = block.y;
    let f = decode_phase(0u);
    let top_lo = decode_sources(f, m0);
    let top_hi = decode_sources(f, m0 + 4u);
    let bottom_lo = decode_sources(f, m0 + 8u);
    let bottom_hi = decode_sources(f, m0 + 12u);
    let valid = m0 < f.rows;
    let image_row = m0 / p.in_w;
    let iw0 = i32(m0 - image_row * p.in_w);
    let n = image_row / p.in_h;
    let ih = image_row - n * p.in_h;
    let wq = p.out_c / 4u;

    var t0: Block;
    var t1: Block;
    var t2: Block;
    var t3: Block;
    var b0: Block;
    var b1: Block;
    var b2: Block;
    var b3: Block;
    for (var a = 0u; a < 3u; a++) {
        let rows = run_rows(valid, n, i32(ih + p.pad_top) - i32(a), p.out_h, p.out_w, p.out_c);
        // Row i under tap b reads dy pixel d0 + i + 2 - b.
        let d0 = iw0 + i32(p.pad_left) - 2;
        // This lane's weight rows: (a, b, input channel n0 + lane + 8j).
        let w_row = a * 3u * p.in_c + n0 + lane;
        for (var q = 0u; q < wq; q++) {
            let runs = dy4_runs(rows8, rows, d0, q);
            three_taps32_backward(&t0, &t1, &t2, &t3, &b0, &b1, &b2, &b3, runs[0], runs[1], w_row, wq, q);
        }
    }

    store_dx_block32(top_lo, top_hi, bottom_lo, bottom_hi, n0, array<Block, 8>(t0, t1, t2, t3, b0, b1, b2, b3));
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_rows32_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_data_rows32_subgroup(direct_index(wid, nwg, lid), lane, false);
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_data_rows8_32_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_data_rows32_subgroup(direct_index(wid, nwg, lid), lane, true);
}

// ---------------------------------------------------------------------------------------------
// Weight gradient of 3x3 convolutions of stride 1 or 2 with output channels a multiple of 32: invocation
// = (kernel row kh, input-channel quad c4) x 32 output channels, i.e. the GEMM rows of the three
// taps kw of that kernel row and quad (12 rows) x 32 columns. The reduction walks output pixels
// along a row: the taps read input pixels s*ow - pad .. s*ow - pad + 2 of input row s*oh + kh - pad,
// two of which (stride 2: one) the previous step loaded, so a step loads one x vec4 (two), and the 32 dy values of the
// pixel are one vec4 per lane broadcast to the subgroup: 2 loads per 384 multiply-adds (the
// `_subgroup` kernel: 5 per 256). The 8 lanes of a subgroup take 8 consecutive (kh, c4) pairs of
// the same column block and chunk; pairs past the last compute zeros and store nothing. Each
// chunk sums its rows in order, as the other paths do.

// acc[8i + q] (row i, column quad q; 4 rows x 32 columns) += a[i] * d[q]: one k of an outer
// product.
fn outer_4x32(acc: ptr<function, array<vec4<f32>, 32>>, a: vec4<f32>, d: array<vec4<f32>, 8>) {
    (*acc)[0] = fma(vec4<f32>(a.x), d[0], (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.x), d[1], (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.x), d[2], (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.x), d[3], (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(a.x), d[4], (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(a.x), d[5], (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(a.x), d[6], (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(a.x), d[7], (*acc)[7]);
    (*acc)[8] = fma(vec4<f32>(a.y), d[0], (*acc)[8]);
    (*acc)[9] = fma(vec4<f32>(a.y), d[1], (*acc)[9]);
    (*acc)[10] = fma(vec4<f32>(a.y), d[2], (*acc)[10]);
    (*acc)[11] = fma(vec4<f32>(a.y), d[3], (*acc)[11]);
    (*acc)[12] = fma(vec4<f32>(a.y), d[4], (*acc)[12]);
    (*acc)[13] = fma(vec4<f32>(a.y), d[5], (*acc)[13]);
    (*acc)[14] = fma(vec4<f32>(a.y), d[6], (*acc)[14]);
    (*acc)[15] = fma(vec4<f32>(a.y), d[7], (*acc)[15]);
    (*acc)[16] = fma(vec4<f32>(a.z), d[0], (*acc)[16]);
    (*acc)[17] = fma(vec4<f32>(a.z), d[1], (*acc)[17]);
    (*acc)[18] = fma(vec4<f32>(a.z), d[2], (*acc)[18]);
    (*acc)[19] = fma(vec4<f32>(a.z), d[3], (*acc)[19]);
    (*acc)[20] = fma(vec4<f32>(a.z), d[4], (*acc)[20]);
    (*acc)[21] = fma(vec4<f32>(a.z), d[5], (*acc)[21]);
    (*acc)[22] = fma(vec4<f32>(a.z), d[6], (*acc)[22]);
    (*acc)[23] = fma(vec4<f32>(a.z), d[7], (*acc)[23]);
    (*acc)[24] = fma(vec4<f32>(a.w), d[0], (*acc)[24]);
    (*acc)[25] = fma(vec4<f32>(a.w), d[1], (*acc)[25]);
    (*acc)[26] = fma(vec4<f32>(a.w), d[2], (*acc)[26]);
    (*acc)[27] = fma(vec4<f32>(a.w), d[3], (*acc)[27]);
    (*acc)[28] = fma(vec4<f32>(a.w), d[4], (*acc)[28]);
    (*acc)[29] = fma(vec4<f32>(a.w), d[5], (*acc)[29]);
    (*acc)[30] = fma(vec4<f32>(a.w), d[6], (*acc)[30]);
    (*acc)[31] = fma(vec4<f32>(a.w), d[7], (*acc)[31]);
}

// Rows m .. m + 3 (four channels of one tap) x columns n .. n + 31 of a chunk's partial product.
fn store_partial_4x32(chunk: u32, m: u32, n: u32, acc: array<vec4<f32>, 32>) {
    let o = ((chunk * p.gemm_m + m) * p.gemm_n + n) / 4u;
    let row = p.gemm_n / 4u;
    partials4[o + 0u * row + 0u] = acc[0];
    partials4[o + 0u * row + 1u] = acc[1];
    partials4[o + 0u * row + 2u] = acc[2];
    partials4[o + 0u * row + 3u] = acc[3];
    partials4[o + 0u * row + 4u] = acc[4];
    partials4[o + 0u * row + 5u] = acc[5];
    partials4[o + 0u * row + 6u] = acc[6];
    partials4[o + 0u * row + 7u] = acc[7];
    partials4[o + 1u * row + 0u] = acc[8];
    partials4[o + 1u * row + 1u] = acc[9];
    partials4[o + 1u * row + 2u] = acc[10];
    partials4[o + 1u * row + 3u] = acc[11];
    partials4[o + 1u * row + 4u] = acc[12];
    partials4[o + 1u * row + 5u] = acc[13];
    partials4[o + 1u * row + 6u] = acc[14];
    partials4[o + 1u * row + 7u] = acc[15];
    partials4[o + 2u * row + 0u] = acc[16];
    partials4[o + 2u * row + 1u] = acc[17];
    partials4[o + 2u * row + 2u] = acc[18];
    partials4[o + 2u * row + 3u] = acc[19];
    partials4[o + 2u * row + 4u] = acc[20];
    partials4[o + 2u * row + 5u] = acc[21];
    partials4[o + 2u * row + 6u] = acc[22];
    partials4[o + 2u * row + 7u] = acc[23];
    partials4[o + 3u * row + 0u] = acc[24];
    partials4[o + 3u * row + 1u] = acc[25];
    partials4[o + 3u * row + 2u] = acc[26];
    partials4[o + 3u * row + 3u] = acc[27];
    partials4[o + 3u * row + 4u] = acc[28];
    partials4[o + 3u * row + 5u] = acc[29];
    partials4[o + 3u * row + 6u] = acc[30];
    partials4[o + 3u * row + 7u] = acc[31];
}

fn backward_weights_taps_subgroup(t: u32, lane: u32) {
    let quads = p.in_c / 4u;
    let pairs = 3u * quads;
    let col_blocks = p.out_c / 32u;
    let per_chunk = ((pairs + SG_LANES - 1u) / SG_LANES) * SG_LANES * col_blocks;
    let chunk = t / per_chunk;
    // per_chunk is a multiple of 8: whole subgroups return together.
    if (chunk >= p.splits) {
        return;
    }
    let u = t - chunk * per_chunk;
    let g = u / SG_LANES;
    let pair = (g / col_blocks) * SG_LANES + u % SG_LANES;
    let n0 = (g % col_blocks) * 32u;
    let valid = pair < pairs;
    let kh = min(pair / quads, 2u);
    let c4 = pair % quads;
    let oq = p.out_c / 4u;
    let dy_quad = n0 / 4u + lane;
    let r_begin = chunk * p.split_rows;
    let r_end = min(r_begin + p.split_rows, p.gemm_k);

    var q = out_pos(r_begin);

    var left = vec4<f32>(0.0);
    var mid = vec4<f32>(0.0);
    var right = vec4<f32>(0.0);
    var fresh = true;
    var acc0: array<vec4<f32>, 32>;
    var acc1: array<vec4<f32>, 32>;
    var acc2: array<vec4<f32>, 32>;
    for (var r = r_begin; r < r_end; r++) {
        let ih = i32(q.oh * p.stride + kh) - i32(p.pad_top);
        let row_ok = valid && ih >= 0 && ih < i32(p.in_h);
        let base = (q.n * p.in_h + u32(max(ih, 0))) * p.in_w * p.in_c;
        let iw = i32(q.ow * p.stride) - i32(p.pad_left);
        if (fresh) {
            left = x4_pixel(row_ok, base, iw, c4);
            mid = x4_pixel(row_ok, base, iw + 1, c4);
        } else if (p.stride == 1u) {
            left = mid;
            mid = right;
        } else {
            // Stride 2: the previous step's right pixel is this step's left.
            left = right;
            mid = x4_pixel(row_ok, base, iw + 1, c4);
        }
        right = x4_pixel(row_ok, base, iw + 2, c4);
        fresh = false;
        let v = dy4[r * oq + dy_quad];
        let d = array<vec4<f32>, 8>(
            subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
            subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u),
        );
        outer_4x32(&acc0, left, d);
        outer_4x32(&acc1, mid, d);
        outer_4x32(&acc2, right, d);
        q = next_out_pos(q);
        // A new output row: its window starts afresh.
        fresh = q.ow == 0u;
    }

    if (valid) {
        let m = kh * 3u * p.in_c + c4 * 4u;
        store_partial_4x32(chunk, m, n0, acc0);
        store_partial_4x32(chunk, m + p.in_c, n0, acc1);
        store_partial_4x32(chunk, m + 2u * p.in_c, n0, acc2);
    }
}

@compute @workgroup_size(DIRECT_WG)
fn conv2d_backward_weights_taps_subgroup(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    backward_weights_taps_subgroup(direct_index(wid, nwg, lid), lane);
}
