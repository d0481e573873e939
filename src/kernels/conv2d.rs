//! Rust side of `shaders/conv2d.wgsl`: 2D convolution (NHWC activations, HWIO weights, no bias,
//! TensorFlow "SAME" padding) as implicit GEMM, forward and both backward passes.
//!
//! Each pass has two implementations ([`ConvPath`]): tiles in workgroup memory for GPUs, and a
//! barrier-free one for CPU adapters. [`conv2d_forward`] and the other plain functions pick the
//! one for the context's adapter; the `_with` forms take it explicitly (tests run both).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor, MAX_WORKGROUPS_PER_DIM};
use crate::shaders::Shader;

/// Output tile rows per workgroup (GEMM M); mirrors `TILE_M` in the shader. 9 * 16: it divides
/// the weight-gradient rows (9 * Cin) of every 3x3 layer with Cin a multiple of 16.
pub const TILE_M: usize = 144;
/// Output tile columns per workgroup (GEMM N); mirrors `TILE_N` in the shader.
pub const TILE_N: usize = 32;
/// Reduction depth staged per step (GEMM K); mirrors `TILE_K` in the shader.
pub const TILE_K: usize = 16;
/// Output rows per invocation (each owns THREAD_M x 4 outputs); mirrors `THREAD_M`.
const THREAD_M: usize = 8;
/// Workgroup size of `conv2d_backward_weights_reduce`.
const REDUCE_WG: u32 = 256;
/// Backward-weights split-K: about one chunk per this many reduction rows, and at most this
/// many chunks (tiled path).
const SPLIT_ROWS_TARGET: usize = 2048;
const MAX_SPLITS: usize = 64;
/// Row indices are divided in f32 in the shader, exact below 2^24.
const MAX_GEMM_ROWS: usize = 1 << 24;
/// Direct path: GEMM rows and columns per invocation and workgroup size; mirror `DIRECT_M`,
/// `DIRECT_N` and `DIRECT_WG` in the shader.
const DIRECT_M: usize = 16;
const DIRECT_N: usize = 8;
const DIRECT_WG: u32 = 64;
/// Direct path split-K: about one chunk per this many reduction rows, at most this many
/// chunks... Shorter chunks than the tiled path's: on lavapipe the invocations of a chunk then
/// share an x and dy working set that fits a core's L2 cache (1.7x faster at 8x8x128 than with
/// 2048 rows).
const DIRECT_SPLIT_ROWS_TARGET: usize = 512;
const DIRECT_MAX_SPLITS: usize = 256;
/// ...and at most this many partial-sum elements in all (64 MiB; wide layers get fewer chunks).
const DIRECT_MAX_PARTIALS: usize = 16 << 20;

// What the shader's staging and unrolled products assume.
const WG: usize = (TILE_M / THREAD_M) * (TILE_N / 4);
const _: () = assert!(THREAD_M == 8 && TILE_N.is_multiple_of(4) && TILE_K.is_multiple_of(4));
const _: () = assert!(TILE_M.is_multiple_of(WG) && TILE_M.is_multiple_of(TILE_K) && WG.is_multiple_of(TILE_M / TILE_K));

/// How the GEMM of a convolution pass runs. Both paths compute the same sums in different
/// orders (results may differ in the last bits); each is bitwise reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPath {
    /// Tiles staged in workgroup memory, with barriers: for GPUs.
    Tiled,
    /// No workgroup memory and no barriers: each invocation reads its operands straight from
    /// the storage buffers and keeps a 16 x 8 block of outputs in registers. For CPU adapters
    /// (lavapipe), where a barrier costs 30-45% of the reduction loop.
    Direct,
    /// The direct path with the operand that a subgroup's invocations share loaded once per
    /// subgroup and broadcast (`conv2d_subgroup.wgsl`), where the adapter has subgroups of 8 and
    /// the layer takes the 16-column blocks; [`ConvPath::Direct`] elsewhere. Bitwise the same
    /// results as the direct path.
    Subgroup,
}

impl ConvPath {
    pub const ALL: [ConvPath; 3] = [ConvPath::Tiled, ConvPath::Direct, ConvPath::Subgroup];

    /// [`ConvPath::Subgroup`] on native CPU adapters with subgroups of 8 lanes, else
    /// [`ConvPath::Direct`] on native CPU adapters, and [`ConvPath::Tiled`] on everything else.
    /// Browsers always get the tiled path: the direct one binds `y` and its vec4 view `y4`
    /// (both writable) to one buffer range, which WebGPU's validation rejects (wgpu-core
    /// allows it).
    pub fn for_adapter(ctx: &GpuContext) -> ConvPath {
        if cfg!(target_arch = "wasm32") || ctx.info.device_type != wgpu::DeviceType::Cpu {
            ConvPath::Tiled
        } else if subgroups_of_8(ctx) {
            ConvPath::Subgroup
        } else {
            ConvPath::Direct
        }
    }
}

/// Lanes per subgroup that `conv2d_subgroup.wgsl` is written for; mirrors `SG_LANES`.
const SG_LANES: usize = 8;

/// Columns per invocation of the subgroup kernels with 32-column blocks (4 x `DIRECT_N`): the rows
/// kernels `_rows32` / `_rows8_32` and the weight gradient's taps kernel, for GEMMs whose columns
/// divide by 32 (every WideResNet-28-2 layer but the first block's 16-channel side).
const SG_WIDE_COLUMNS: usize = 32;

fn subgroups_of_8(ctx: &GpuContext) -> bool {
    ctx.subgroup_size == Some(SG_LANES as u32)
}

/// Whether `path` runs a pass whose GEMM has `columns` columns through the subgroup kernels.
fn use_subgroup(ctx: &GpuContext, path: ConvPath, s: &Conv2dShape, columns: usize) -> bool {
    path == ConvPath::Subgroup && subgroups_of_8(ctx) && direct_wide(s, columns)
}

/// One convolution layer's geometry. Padding is TensorFlow/Keras "SAME": `out = ceil(in / stride)`,
/// total padding `max((out - 1) * stride + kernel - in, 0)`, the smaller half at the top/left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
}

fn same_out(input: usize, stride: usize) -> usize {
    input.div_ceil(stride)
}

fn same_pad_before(input: usize, kernel: usize, stride: usize) -> usize {
    let out = same_out(input, stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    total / 2
}

impl Conv2dShape {
    pub fn out_h(&self) -> usize {
        same_out(self.in_h, self.stride)
    }

    pub fn out_w(&self) -> usize {
        same_out(self.in_w, self.stride)
    }

    pub fn pad_top(&self) -> usize {
        same_pad_before(self.in_h, self.kernel, self.stride)
    }

    pub fn pad_left(&self) -> usize {
        same_pad_before(self.in_w, self.kernel, self.stride)
    }

    /// Elements of x (and dx): `[batch, in_h, in_w, in_c]`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    /// Elements of y (and dy, residual): `[batch, out_h, out_w, out_c]`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.out_c
    }

    /// Elements of w (and dw): `[kernel, kernel, in_c, out_c]`.
    pub fn weight_len(&self) -> usize {
        self.kernel * self.kernel * self.in_c * self.out_c
    }

    /// Multiply-adds times 2 of one pass (forward, backward-data and backward-weights alike).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_h() * self.out_w()) as f64
            * (self.kernel * self.kernel * self.in_c) as f64
            * self.out_c as f64
    }

    fn validate(&self, what: &str) {
        assert!(
            self.batch > 0
                && self.in_h > 0
                && self.in_w > 0
                && self.in_c > 0
                && self.out_c > 0
                && self.kernel > 0
                && self.stride > 0,
            "{what}: every dimension of {self:?} must be positive"
        );
        let rows = (self.batch * self.in_h * self.in_w).max(self.batch * self.out_h() * self.out_w());
        assert!(
            rows + TILE_M < MAX_GEMM_ROWS,
            "{what}: {self:?} has {rows} positions, the shader handles fewer than 2^24"
        );
        // Index math in the shader is u32.
        for (name, len) in [
            ("input", self.input_len()),
            ("output", self.output_len()),
            ("weights", self.weight_len()),
        ] {
            assert!(
                len <= u32::MAX as usize,
                "{what}: {name} of {self:?} has more than 2^32 elements"
            );
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
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
    accumulate: u32,
    gemm_m: u32,
    gemm_n: u32,
    gemm_k: u32,
    tiles_m: u32,
    split_rows: u32,
    splits: u32,
    phase_tiles: u32,
    _pad: u32,
}

/// Parameters for a GEMM of `m x k` by `k x n` over the geometry of `s`.
fn params(s: &Conv2dShape, gemm: [usize; 3], accumulate: bool) -> Params {
    let [m, n, k] = gemm;
    Params {
        batch: s.batch as u32,
        in_h: s.in_h as u32,
        in_w: s.in_w as u32,
        in_c: s.in_c as u32,
        out_h: s.out_h() as u32,
        out_w: s.out_w() as u32,
        out_c: s.out_c as u32,
        kernel: s.kernel as u32,
        stride: s.stride as u32,
        pad_top: s.pad_top() as u32,
        pad_left: s.pad_left() as u32,
        accumulate: accumulate as u32,
        gemm_m: m as u32,
        gemm_n: n as u32,
        gemm_k: k as u32,
        tiles_m: m.div_ceil(TILE_M) as u32,
        split_rows: 0,
        splits: 0,
        phase_tiles: 0,
        _pad: 0,
    }
}

/// Workgroups for `tiles_m` M tiles of an output with `n` columns: N tiles along x, M tiles
/// along y, spilling into z past 65,535 (the shader recovers the M tile as
/// `wid.z * nwg.y + wid.y` and skips tiles past `tiles_m`).
fn gemm_grid(tiles_m: usize, n: usize) -> [u32; 3] {
    let tiles_n = n.div_ceil(TILE_N) as u32;
    assert!(tiles_n <= MAX_WORKGROUPS_PER_DIM, "conv2d: too many channels");
    let y = tiles_m.min(MAX_WORKGROUPS_PER_DIM as usize);
    let z = tiles_m.div_ceil(y.max(1));
    [tiles_n, y as u32, z as u32]
}

fn check_len(what: &str, name: &str, t: &Tensor, want: usize) {
    assert_eq!(
        t.len(),
        want,
        "{what}: {name} has shape {:?} ({} elements), expected {want} elements",
        t.shape,
        t.len()
    );
    // Inputs are also bound as vec4 arrays, which need at least one whole vec4.
    assert!(want >= 4, "{what}: {name} needs at least 4 elements, has {want}");
}

/// Workgroups covering one direct-path invocation per 16 x 8 block of an `m x n` output (16 x 16
/// when `wide`), `times` times over (split-K chunks, stride phases).
fn direct_grid(m: usize, n: usize, times: usize, wide: bool) -> [u32; 3] {
    let width = if wide { 2 * DIRECT_N } else { DIRECT_N };
    grid_1d(m.div_ceil(DIRECT_M) * n.div_ceil(width) * times, DIRECT_WG)
}

/// A 3x3 stride-1 convolution whose rows are a multiple of 16 wide (input and output alike): each
/// 16-row block is 16 neighbouring pixels of one row, and the `_rows_subgroup` kernels reuse the
/// pixels they load across the three taps of a kernel row.
fn rows_of_16(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride == 1 && s.out_w().is_multiple_of(DIRECT_M)
}

/// The same with rows exactly 8 wide, an even number of them (a 16-row block is two whole rows).
fn rows_of_8(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride == 1 && s.out_w() == 8 && s.out_h().is_multiple_of(2)
}

/// The weight gradient's rows (KH*KW*Cin) are few: rounding its 16-row blocks up to whole
/// subgroups of 8 can waste most lanes (a 1x1 conv with 16 inputs: 7 of 8). The subgroup kernel
/// takes it only when at most 1/8 of the blocks are padding (Cin = 64 and 128 in a WRN-28-2);
/// measured 2-5x slower than the direct kernel otherwise.
fn whole_subgroups_of_rows(m: usize) -> bool {
    let blocks = m.div_ceil(DIRECT_M);
    blocks.next_multiple_of(SG_LANES) * 8 <= blocks * 9
}

/// The weight gradient of a 3x3 convolution of stride 1 or 2 with output channels a multiple of
/// 32 runs `conv2d_backward_weights_taps_subgroup`: an invocation takes the three taps of one
/// kernel row for four input channels, and walking the reduction along output rows reuses two
/// (stride 2: one) of the three input pixels it loaded at the previous step.
fn taps_of_3x3(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride <= 2 && s.out_c.is_multiple_of(SG_WIDE_COLUMNS)
}

/// Workgroups of the subgroup kernels for an `m x n` output, `times` times over: blocks of 16 rows
/// x `block_columns`, row blocks in whole subgroups.
fn subgroup_grid(m: usize, n: usize, times: usize, block_columns: usize) -> [u32; 3] {
    let row_blocks = m.div_ceil(DIRECT_M).next_multiple_of(SG_LANES);
    grid_1d(row_blocks * n.div_ceil(block_columns) * times, DIRECT_WG)
}

/// Entry points of one pass (forward or backward data) on the subgroup path, one per kind of
/// layer: 3x3 stride-1 rows 16 wide (`rows`) or 8 wide (`rows8`), each with 32- and 16-column
/// blocks, and any other convolution (`other`, 16 columns).
struct SubgroupKernels {
    rows32: &'static str,
    rows: &'static str,
    rows8_32: &'static str,
    rows8: &'static str,
    other: &'static str,
}

/// The kernel of `k` for a pass over `s` whose GEMM has `columns` columns, and its block width.
fn subgroup_kernel(k: &SubgroupKernels, s: &Conv2dShape, columns: usize) -> (&'static str, usize) {
    let wide = columns.is_multiple_of(SG_WIDE_COLUMNS);
    match (rows_of_16(s), rows_of_8(s), wide) {
        (true, _, true) => (k.rows32, SG_WIDE_COLUMNS),
        (true, _, false) => (k.rows, 2 * DIRECT_N),
        (false, true, true) => (k.rows8_32, SG_WIDE_COLUMNS),
        (false, true, false) => (k.rows8, 2 * DIRECT_N),
        (false, false, _) => (k.other, 2 * DIRECT_N),
    }
}

/// The direct path's 16-column blocks (`_wide` entry points) need vec4 loads and a column count
/// that is a multiple of 16 (every WideResNet layer but the RGB stem's input side).
fn direct_wide(s: &Conv2dShape, columns: usize) -> bool {
    direct_aligned(s) && columns.is_multiple_of(2 * DIRECT_N)
}

/// `y = conv(x, w) [+ residual]`, with the residual add fused into the GEMM epilogue
/// (`residual` has y's shape). x: `[batch, in_h, in_w, in_c]`, w: `[k, k, in_c, out_c]`,
/// y: `[batch, out_h, out_w, out_c]`. Runs the adapter's [`ConvPath`].
pub fn conv2d_forward(
    ctx: &GpuContext,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    residual: Option<&Tensor>,
) -> Op {
    conv2d_forward_with(ctx, ConvPath::for_adapter(ctx), s, x, w, y, residual)
}

/// [`conv2d_forward`] on the given path.
pub fn conv2d_forward_with(
    ctx: &GpuContext,
    path: ConvPath,
    s: &Conv2dShape,
    x: &Tensor,
    w: &Tensor,
    y: &Tensor,
    residual: Option<&Tensor>,
) -> Op {
    let what = "conv2d_forward";
    s.validate(what);
    check_len(what, "x", x, s.input_len());
    check_len(what, "w", w, s.weight_len());
    check_len(what, "y", y, s.output_len());
    // Without a residual the shader still needs something bound at its binding: a one-vec4
    // placeholder it never reads (the `accumulate` flag is 0).
    let placeholder;
    let res = match residual {
        Some(r) => {
            check_len(what, "residual", r, s.output_len());
            r
        }
        None => {
            placeholder = Tensor::zeros(ctx, "conv2d no residual", &[4]);
            &placeholder
        }
    };
    let m = s.batch * s.out_h() * s.out_w();
    let gemm = [m, s.out_c, s.kernel * s.kernel * s.in_c];
    let p = params(s, gemm, residual.is_some());
    let op = match path {
        _ if use_subgroup(ctx, path, s, s.out_c) => {
            let (entry, block_columns) = subgroup_kernel(
                &SubgroupKernels {
                    rows32: "conv2d_forward_rows32_subgroup",
                    rows: "conv2d_forward_rows_subgroup",
                    rows8_32: "conv2d_forward_rows8_32_subgroup",
                    rows8: "conv2d_forward_rows8_subgroup",
                    other: "conv2d_forward_subgroup",
                },
                s,
                s.out_c,
            );
            Op::new(
                ctx,
                Shader::Conv2dSubgroup,
                entry,
                Some(bytemuck::bytes_of(&p)),
                &[(2, x), (4, w), (7, y), (8, res), (13, y), (14, res)],
                subgroup_grid(m, s.out_c, 1, block_columns),
            )
        }
        ConvPath::Tiled => Op::new(
            ctx,
            Shader::Conv2d,
            if s.in_c.is_multiple_of(TILE_K) && s.out_c.is_multiple_of(4) {
                "conv2d_forward_aligned"
            } else {
                "conv2d_forward_general"
            },
            Some(bytemuck::bytes_of(&p)),
            &[(1, x), (2, x), (3, w), (4, w), (7, y), (8, res)],
            gemm_grid(m.div_ceil(TILE_M), s.out_c),
        ),
        ConvPath::Direct | ConvPath::Subgroup => {
            let wide = direct_wide(s, s.out_c);
            Op::new(
                ctx,
                Shader::Conv2d,
                if wide {
                    "conv2d_forward_direct_wide"
                } else if direct_aligned(s) {
                    "conv2d_forward_direct_aligned"
                } else {
                    "conv2d_forward_direct_general"
                },
                Some(bytemuck::bytes_of(&p)),
                &[(1, x), (2, x), (3, w), (4, w), (7, y), (8, res), (13, y), (14, res)],
                direct_grid(m, s.out_c, 1, wide),
            )
        }
    };
    op.with_flops(s.flops())
}

/// The direct path's vec4 entry points need both channel counts to be multiples of 4.
fn direct_aligned(s: &Conv2dShape) -> bool {
    s.in_c.is_multiple_of(4) && s.out_c.is_multiple_of(4)
}

/// `dx (+)= conv_transpose(dy, w)`: the gradient of [`conv2d_forward`] with respect to x.
/// Runs the adapter's [`ConvPath`].
pub fn conv2d_backward_data(
    ctx: &GpuContext,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Op {
    conv2d_backward_data_with(ctx, ConvPath::for_adapter(ctx), s, dy, w, dx, accumulate)
}

/// [`conv2d_backward_data`] on the given path.
pub fn conv2d_backward_data_with(
    ctx: &GpuContext,
    path: ConvPath,
    s: &Conv2dShape,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Op {
    let what = "conv2d_backward_data";
    s.validate(what);
    check_len(what, "dy", dy, s.output_len());
    check_len(what, "w", w, s.weight_len());
    check_len(what, "dx", dx, s.input_len());
    // The shader runs one GEMM per stride phase (input positions with the same
    // (ih + pad) mod stride, which all take the same taps); phase 0 has the most positions.
    let phases = s.stride * s.stride;
    let phase_rows = s.batch * s.in_h.div_ceil(s.stride) * s.in_w.div_ceil(s.stride);
    let mut p = params(s, [s.batch * s.in_h * s.in_w, s.in_c, 0], accumulate);
    let op = match path {
        _ if use_subgroup(ctx, path, s, s.in_c) => {
            // Row blocks per phase, whole subgroups of them (a subgroup stays in one phase).
            let phase_blocks = phase_rows.div_ceil(DIRECT_M).next_multiple_of(SG_LANES);
            p.phase_tiles = phase_blocks as u32;
            // The rows kernels: stride 1, one phase, the input rows themselves.
            let (entry, block_columns) = subgroup_kernel(
                &SubgroupKernels {
                    rows32: "conv2d_backward_data_rows32_subgroup",
                    rows: "conv2d_backward_data_rows_subgroup",
                    rows8_32: "conv2d_backward_data_rows8_32_subgroup",
                    rows8: "conv2d_backward_data_rows8_subgroup",
                    other: "conv2d_backward_data_subgroup",
                },
                s,
                s.in_c,
            );
            Op::new(
                ctx,
                Shader::Conv2dSubgroup,
                entry,
                Some(bytemuck::bytes_of(&p)),
                &[(4, w), (6, dy), (9, dx), (15, dx)],
                grid_1d(phases * phase_blocks * s.in_c / block_columns, DIRECT_WG),
            )
        }
        ConvPath::Tiled => {
            let phase_tiles = phase_rows.div_ceil(TILE_M);
            p.phase_tiles = phase_tiles as u32;
            p.tiles_m = (phases * phase_tiles) as u32;
            Op::new(
                ctx,
                Shader::Conv2d,
                if s.out_c.is_multiple_of(TILE_K) {
                    "conv2d_backward_data_aligned"
                } else {
                    "conv2d_backward_data_general"
                },
                Some(bytemuck::bytes_of(&p)),
                &[(3, w), (4, w), (5, dy), (6, dy), (9, dx)],
                gemm_grid(phases * phase_tiles, s.in_c),
            )
        }
        ConvPath::Direct | ConvPath::Subgroup => {
            p.phase_tiles = phase_rows.div_ceil(DIRECT_M) as u32;
            let wide = direct_wide(s, s.in_c);
            Op::new(
                ctx,
                Shader::Conv2d,
                if wide {
                    "conv2d_backward_data_direct_wide"
                } else if direct_aligned(s) {
                    "conv2d_backward_data_direct_aligned"
                } else {
                    "conv2d_backward_data_direct_general"
                },
                Some(bytemuck::bytes_of(&p)),
                &[(3, w), (4, w), (5, dy), (6, dy), (9, dx), (15, dx)],
                direct_grid(phase_rows, s.in_c, phases, wide),
            )
        }
    };
    op.with_flops(s.flops())
}

/// Number of split-K chunks and rows per chunk for a reduction of `rows` rows into `outputs`
/// weight gradients on `path` (the tiled path's chunks are a multiple of `TILE_K` rows).
fn split_k(rows: usize, outputs: usize, path: ConvPath) -> (usize, usize) {
    let (target, max, multiple) = match path {
        ConvPath::Tiled => (SPLIT_ROWS_TARGET, MAX_SPLITS, TILE_K),
        ConvPath::Direct | ConvPath::Subgroup => (
            DIRECT_SPLIT_ROWS_TARGET,
            DIRECT_MAX_SPLITS.min(DIRECT_MAX_PARTIALS / outputs).max(1),
            1,
        ),
    };
    let splits = rows.div_ceil(target).clamp(1, max);
    let per = rows.div_ceil(splits).next_multiple_of(multiple);
    (rows.div_ceil(per), per)
}

/// f32 elements of split-K partial sums that [`conv2d_backward_weights`] needs for `s` on the
/// adapter's path: a network workspace allocates one scratch of its largest layer's need and
/// hands it to every layer.
pub fn conv2d_backward_weights_scratch_len(ctx: &GpuContext, s: &Conv2dShape) -> usize {
    conv2d_backward_weights_scratch_len_with(ConvPath::for_adapter(ctx), s)
}

/// [`conv2d_backward_weights_scratch_len`] on the given path.
pub fn conv2d_backward_weights_scratch_len_with(path: ConvPath, s: &Conv2dShape) -> usize {
    let rows = s.batch * s.out_h() * s.out_w();
    let (m, n) = (s.kernel * s.kernel * s.in_c, s.out_c);
    split_k(rows, m * n, path).0 * m * n
}

/// `dw (+)= sum over batch and positions of im2col(x)^T dy`: the gradient of [`conv2d_forward`]
/// with respect to w. Deterministic split-K: each chunk of the reduction writes its partial
/// product into `scratch` (at least [`conv2d_backward_weights_scratch_len`] elements, its
/// contents overwritten; `None` allocates one for this call), then a second op adds the chunks
/// in fixed order into dw. Returns both ops, to be run in order. Runs the adapter's
/// [`ConvPath`].
pub fn conv2d_backward_weights(
    ctx: &GpuContext,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    scratch: Option<&Tensor>,
) -> Vec<Op> {
    conv2d_backward_weights_with(ctx, ConvPath::for_adapter(ctx), s, x, dy, dw, accumulate, scratch)
}

/// [`conv2d_backward_weights`] on the given path.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weights_with(
    ctx: &GpuContext,
    path: ConvPath,
    s: &Conv2dShape,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    scratch: Option<&Tensor>,
) -> Vec<Op> {
    let what = "conv2d_backward_weights";
    s.validate(what);
    check_len(what, "x", x, s.input_len());
    check_len(what, "dy", dy, s.output_len());
    check_len(what, "dw", dw, s.weight_len());
    let rows = s.batch * s.out_h() * s.out_w();
    let (m, n) = (s.kernel * s.kernel * s.in_c, s.out_c);
    let (splits, split_rows) = split_k(rows, m * n, path);
    let mut p = params(s, [m, n, rows], accumulate);
    p.split_rows = split_rows as u32;
    p.splits = splits as u32;
    let shape = [splits, m, n];
    let partials = match scratch {
        Some(t) => {
            assert!(
                t.len() >= splits * m * n,
                "{what}: scratch of {} elements, {} needed",
                t.len(),
                splits * m * n
            );
            Tensor {
                shape: shape.to_vec(),
                ..t.clone()
            }
        }
        None => Tensor::zeros(ctx, "conv2d dw partials", &shape),
    };
    let gemm = match path {
        _ if use_subgroup(ctx, path, s, n) && taps_of_3x3(s) => {
            let pairs = (3 * s.in_c / 4).next_multiple_of(SG_LANES);
            Op::new(
                ctx,
                Shader::Conv2dSubgroup,
                "conv2d_backward_weights_taps_subgroup",
                Some(bytemuck::bytes_of(&p)),
                &[(2, x), (6, dy), (16, &partials)],
                grid_1d(splits * pairs * n / SG_WIDE_COLUMNS, DIRECT_WG),
            )
        }
        _ if use_subgroup(ctx, path, s, n) && whole_subgroups_of_rows(m) => Op::new(
            ctx,
            Shader::Conv2dSubgroup,
            "conv2d_backward_weights_subgroup",
            Some(bytemuck::bytes_of(&p)),
            &[(2, x), (6, dy), (10, &partials), (16, &partials)],
            subgroup_grid(m, n, splits, 2 * DIRECT_N),
        ),
        ConvPath::Tiled => {
            let tiles_m = m.div_ceil(TILE_M);
            assert!(
                tiles_m <= MAX_WORKGROUPS_PER_DIM as usize,
                "{what}: too many weight rows"
            );
            Op::new(
                ctx,
                Shader::Conv2d,
                if s.in_c.is_multiple_of(TILE_K) && s.out_c.is_multiple_of(4) {
                    "conv2d_backward_weights_aligned"
                } else {
                    "conv2d_backward_weights_general"
                },
                Some(bytemuck::bytes_of(&p)),
                &[(1, x), (2, x), (5, dy), (6, dy), (10, &partials)],
                [n.div_ceil(TILE_N) as u32, tiles_m as u32, splits as u32],
            )
        }
        ConvPath::Direct | ConvPath::Subgroup => {
            let wide = direct_wide(s, n);
            Op::new(
                ctx,
                Shader::Conv2d,
                if wide {
                    "conv2d_backward_weights_direct_wide"
                } else if direct_aligned(s) {
                    "conv2d_backward_weights_direct_aligned"
                } else {
                    "conv2d_backward_weights_direct_general"
                },
                Some(bytemuck::bytes_of(&p)),
                &[(1, x), (2, x), (5, dy), (6, dy), (10, &partials), (16, &partials)],
                direct_grid(m, n, splits, wide),
            )
        }
    }
    .with_flops(s.flops());
    let reduce = Op::new(
        ctx,
        Shader::Conv2d,
        "conv2d_backward_weights_reduce",
        Some(bytemuck::bytes_of(&p)),
        &[(11, &partials), (12, dw)],
        grid_1d(m * n, REDUCE_WG),
    );
    vec![gemm, reduce]
}
