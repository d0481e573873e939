//! Rust side of `shaders/conv2d.wgsl` and `shaders/conv2d_subgroup.wgsl`: 2D convolution (NHWC
//! activations, HWIO weights, no bias, TensorFlow "SAME" padding) as implicit GEMM, forward and
//! both backward passes.
//!
//! Every choice of kernel is made here, top-down, in one function per pass
//! ([`forward_plan`], [`backward_data_plan`], [`backward_weights_plan`]): from the context's
//! [`ConvPath`] (the adapter's own, or forced by `ADAMATCH_CONV_PATH` / `--conv-path` /
//! [`GpuContext::with_conv_path`], which refuse a path the adapter cannot run) and the layer's
//! shape to a [`Conv2dKernel`] and its grid. The pass functions ([`conv2d_forward`] ...) bind
//! that kernel's buffers by the names the shader gives them.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, ConvTuneKey, GpuContext, Op, Tensor, MAX_WORKGROUPS_PER_DIM};
use crate::profile::CONV_SUBGROUP_LANES;
pub use crate::profile::{ConvPass, ConvPath, ConvTiles};
use crate::shaders::{shader_file, wgsl_struct, Shader, REDUCE_WG};

/// Output rows per invocation of the tiled path (each owns THREAD_M x `ConvTiles::cols`
/// outputs); its tiles are the context's [`ConvTiles`], one shader module per candidate.
const THREAD_M: usize = 8;
/// The most GEMM rows of any candidate's tile (the bound on positions below).
const MAX_TILE_M: usize = 256;
/// Backward-weights split-K: about one chunk per this many reduction rows, and at most this
/// many chunks (tiled path).
const SPLIT_ROWS_TARGET: usize = 2048;
const MAX_SPLITS: usize = 64;
/// Row indices are divided in f32 in the shader, exact below 2^24.
const MAX_GEMM_ROWS: usize = 1 << 24;
/// Direct path: GEMM rows and columns per invocation (the shader unrolls exactly 16 x 8), and
/// workgroup size.
const DIRECT_M: usize = 16;
const DIRECT_N: usize = 8;
const DIRECT_WG: usize = 64;
/// Direct path split-K: about one chunk per this many reduction rows, at most this many
/// chunks... Shorter chunks than the tiled path's: on lavapipe the invocations of a chunk then
/// share an x and dy working set that fits a core's L2 cache.
const DIRECT_SPLIT_ROWS_TARGET: usize = 512;
const DIRECT_MAX_SPLITS: usize = 256;
/// ...and at most this many partial-sum elements in all (64 MiB; wide layers get fewer chunks).
const DIRECT_MAX_PARTIALS: usize = 16 << 20;
/// Lanes per subgroup that `conv2d_subgroup.wgsl` is written for.
const SG_LANES: usize = CONV_SUBGROUP_LANES as usize;

/// `shaders/conv2d.wgsl` with what this file writes for it: the tiled path with the default
/// tiles ([`ConvTiles::DEFAULT`]), and the direct path.
pub static SHADER: Shader = shader_file!("conv2d.wgsl", WGSL_CONSTANTS, WGSL_STRUCTS);

/// The [`Shader`] of `conv2d.wgsl` with the tiles of candidate `$i` of [`ConvTiles::ALL`].
macro_rules! tiled_module {
    ($i:literal) => {
        Shader {
            file_name: "conv2d.wgsl",
            module_name: concat!("conv2d.wgsl#tiles", $i),
            file_source: include_str!("../../shaders/conv2d.wgsl"),
            constants: &[&TILED_CONSTANTS[$i]],
            structs: WGSL_STRUCTS,
            needs_subgroups: false,
        }
    };
}

/// `conv2d.wgsl` compiled with each other candidate's tiles: `TILED_SHADERS[i - 1]` has
/// `ConvTiles::ALL[i]`'s.
pub static TILED_SHADERS: [Shader; ConvTiles::ALL.len() - 1] = [
    tiled_module!(1),
    tiled_module!(2),
    tiled_module!(3),
    tiled_module!(4),
    tiled_module!(5),
    tiled_module!(6),
    tiled_module!(7),
];

/// The module of `conv2d.wgsl` compiled with `tiles`.
pub fn tiled_shader(tiles: ConvTiles) -> &'static Shader {
    match tiles.index() {
        0 => &SHADER,
        i => &TILED_SHADERS[i - 1],
    }
}

/// The subgroup path: `conv2d.wgsl` followed by `conv2d_subgroup.wgsl`, one module (needs the
/// subgroup feature).
pub static SUBGROUP_SHADER: Shader = Shader {
    file_name: "conv2d_subgroup.wgsl",
    module_name: "conv2d_subgroup.wgsl",
    file_source: concat!(
        include_str!("../../shaders/conv2d.wgsl"),
        include_str!("../../shaders/conv2d_subgroup.wgsl")
    ),
    constants: &[WGSL_CONSTANTS, SUBGROUP_WGSL_CONSTANTS],
    structs: WGSL_STRUCTS,
    needs_subgroups: true,
};

/// The constants `conv2d.wgsl` and `conv2d_subgroup.wgsl` are compiled with (for the tiled
/// path's default tiles), and the struct they share with this file: written here once and
/// prepended to the shader source (see [`Shader::source`]), so Rust and WGSL cannot disagree.
const WGSL_CONSTANTS: &[(&str, u32)] = &TILED_CONSTANTS[0];

/// The constants of `conv2d.wgsl` with each candidate's tiles, in [`ConvTiles::ALL`]'s order.
const TILED_CONSTANTS: [[(&str, u32); 8]; ConvTiles::ALL.len()] = {
    let mut out = [[("", 0); 8]; ConvTiles::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        let t = ConvTiles::ALL[i];
        // What the shader's staging and unrolled products assume of the tiles: vec4 packing,
        // whole A rows staged per invocation, and WebGPU's default limits.
        let wg = t.workgroup_size();
        assert!(t.cols == 4 || t.cols == 8);
        assert!(t.n.is_multiple_of(t.cols) && t.k.is_multiple_of(4) && t.m.is_multiple_of(8));
        assert!(t.m.is_multiple_of(wg) && t.m.is_multiple_of(t.k) && wg.is_multiple_of(t.m / t.k));
        assert!(wg <= 256 && t.workgroup_bytes() <= 16384 && t.m as usize <= MAX_TILE_M);
        assert!(ConvTiles::MAX_K.is_multiple_of(t.k));
        out[i] = [
            ("TILE_M", t.m),
            ("TILE_N", t.n),
            ("TILE_K", t.k),
            ("THREAD_M", THREAD_M as u32),
            ("THREAD_NQ", t.cols / 4),
            ("DIRECT_M", DIRECT_M as u32),
            ("DIRECT_N", DIRECT_N as u32),
            ("DIRECT_WG", DIRECT_WG as u32),
        ];
        i += 1;
    }
    out
};

/// What `conv2d_subgroup.wgsl` reads besides.
const SUBGROUP_WGSL_CONSTANTS: &[(&str, u32)] = &[("SG_LANES", SG_LANES as u32)];

const _: () = assert!(THREAD_M == 8);
const WGSL_STRUCTS: &[&str] = &[Params::WGSL];

const _: () = assert!(DIRECT_M == 16 && DIRECT_N == 8 && SG_LANES == 8);

/// Declares [`Conv2dKernel`] with its entry points, written once.
macro_rules! conv2d_kernels {
    ($($(#[$doc:meta])* $kernel:ident => $entry:literal,)*) => {
        /// One convolution kernel: an entry point of `conv2d.wgsl`, or of `conv2d_subgroup.wgsl` for the
        /// `*Subgroup` ones. Tiled: `Aligned` for channel counts in whole K steps / vec4s,
        /// `General` for any. Direct: `Wide` 16-column blocks with vec4 loads, `General` any
        /// channels. Subgroup: `Rows*` for 3x3 stride-1 layers whose rows are 16 (`Rows`) or 8 (`Rows8`)
        /// pixels wide, with 32- (`*32`) or 16-column blocks, plain for the other layers, and `Taps` for
        /// the weight gradient of 3x3 layers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Conv2dKernel {
            $($(#[$doc])* $kernel,)*
        }

        impl Conv2dKernel {
            pub const ALL: &'static [Conv2dKernel] = &[$(Conv2dKernel::$kernel,)*];

            /// The WGSL entry point.
            pub fn entry_point(self) -> &'static str {
                match self {
                    $(Conv2dKernel::$kernel => $entry,)*
                }
            }
        }
    };
}

conv2d_kernels! {
    ForwardAligned => "conv2d_forward_aligned",
    ForwardGeneral => "conv2d_forward_general",
    ForwardDirectWide => "conv2d_forward_direct_wide",
    ForwardDirectGeneral => "conv2d_forward_direct_general",
    ForwardRows32Subgroup => "conv2d_forward_rows32_subgroup",
    ForwardRowsSubgroup => "conv2d_forward_rows_subgroup",
    ForwardRows8x32Subgroup => "conv2d_forward_rows8_32_subgroup",
    ForwardRows8Subgroup => "conv2d_forward_rows8_subgroup",
    ForwardSubgroup => "conv2d_forward_subgroup",
    BackwardDataAligned => "conv2d_backward_data_aligned",
    BackwardDataGeneral => "conv2d_backward_data_general",
    BackwardDataDirectWide => "conv2d_backward_data_direct_wide",
    BackwardDataDirectGeneral => "conv2d_backward_data_direct_general",
    BackwardDataRows32Subgroup => "conv2d_backward_data_rows32_subgroup",
    BackwardDataRowsSubgroup => "conv2d_backward_data_rows_subgroup",
    BackwardDataRows8x32Subgroup => "conv2d_backward_data_rows8_32_subgroup",
    BackwardDataRows8Subgroup => "conv2d_backward_data_rows8_subgroup",
    BackwardDataSubgroup => "conv2d_backward_data_subgroup",
    BackwardWeightsAligned => "conv2d_backward_weights_aligned",
    BackwardWeightsGeneral => "conv2d_backward_weights_general",
    BackwardWeightsDirectWide => "conv2d_backward_weights_direct_wide",
    BackwardWeightsDirectGeneral => "conv2d_backward_weights_direct_general",
    BackwardWeightsTapsSubgroup => "conv2d_backward_weights_taps_subgroup",
    BackwardWeightsSubgroup => "conv2d_backward_weights_subgroup",
    /// Adds the split-K partial products of the weight gradient in order (every path).
    BackwardWeightsReduce => "conv2d_backward_weights_reduce",
}

impl Conv2dKernel {
    /// The path whose kernels this is ([`ConvPath::Subgroup`] runs direct kernels for the layers
    /// its own do not take; the reduce kernel counts as tiled).
    pub fn path(self) -> ConvPath {
        let e = self.entry_point();
        if e.ends_with("_subgroup") {
            ConvPath::Subgroup
        } else if e.contains("_direct_") {
            ConvPath::Direct
        } else {
            ConvPath::Tiled
        }
    }

    /// The shader module holding the entry point (the tiled kernels': the default tiles').
    pub fn shader(self) -> &'static Shader {
        match self.path() {
            ConvPath::Subgroup => &SUBGROUP_SHADER,
            ConvPath::Tiled | ConvPath::Direct => &SHADER,
        }
    }
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

    /// What the tiled path's tiles are tuned for: `pass` at this shape.
    pub fn tune_key(&self, pass: ConvPass) -> ConvTuneKey {
        let s = self;
        (pass, [s.batch, s.in_h, s.in_w, s.in_c, s.out_c, s.kernel, s.stride])
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
            rows + MAX_TILE_M < MAX_GEMM_ROWS,
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

wgsl_struct! {
    #[derive(Clone, Copy, Debug, Pod, Zeroable)]
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
        /// 1: out += result instead of out = result (gradients); forward: add `residual`.
        accumulate: u32,
        gemm_m: u32,
        gemm_n: u32,
        gemm_k: u32,
        /// Number of M tiles; they may be spread over workgroup_id.y and .z (65,535 per dimension).
        tiles_m: u32,
        /// backward_weights: reduction rows per split-K chunk (a multiple of every TILE_K), chunks.
        split_rows: u32,
        splits: u32,
        /// backward_data: M tiles per stride phase (tiles_m = stride^2 * phase_tiles); in the direct
        /// variant, blocks of DIRECT_M rows per stride phase.
        phase_tiles: u32,
        _pad: u32,
    }
}

/// Parameters for a GEMM of `m x k` by `k x n` over the geometry of `s`, in M tiles of `tile_m`
/// rows (tiled path).
fn params(s: &Conv2dShape, gemm: [usize; 3], accumulate: bool, tile_m: usize) -> Params {
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
        tiles_m: m.div_ceil(tile_m) as u32,
        split_rows: 0,
        splits: 0,
        phase_tiles: 0,
        _pad: 0,
    }
}

/// The kernel that runs one convolution pass, its workgroup grid, and the parameters it reads.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dPlan {
    pub kernel: Conv2dKernel,
    /// The module it runs from (the tiled kernels': the one of the plan's tiles).
    pub shader: &'static Shader,
    pub grid: [u32; 3],
    params: Params,
}

impl Conv2dPlan {
    fn new(kernel: Conv2dKernel, grid: [u32; 3], params: Params) -> Conv2dPlan {
        let shader = kernel.shader();
        Conv2dPlan {
            kernel,
            shader,
            grid,
            params,
        }
    }

    /// A tiled kernel's plan, run from the module of `tiles`.
    fn tiled(kernel: Conv2dKernel, tiles: ConvTiles, grid: [u32; 3], params: Params) -> Conv2dPlan {
        Conv2dPlan {
            shader: tiled_shader(tiles),
            ..Conv2dPlan::new(kernel, grid, params)
        }
    }

    /// The op of this plan over `storage`, bound by the shader's names for its buffers.
    fn op(&self, ctx: &GpuContext, storage: &[(&str, &Tensor)]) -> Op {
        Op::new(
            ctx,
            self.shader,
            self.kernel.entry_point(),
            Some(bytemuck::bytes_of(&self.params)),
            storage,
            self.grid,
        )
    }
}

/// Workgroups for `tiles_m` M tiles of an output with `n` columns in tiles of `tile_n`: N tiles
/// along x, M tiles along y, spilling into z past 65,535 (the shader recovers the M tile as
/// `wid.z * nwg.y + wid.y` and skips tiles past `tiles_m`).
fn gemm_grid(tiles_m: usize, n: usize, tile_n: usize) -> [u32; 3] {
    let tiles_n = n.div_ceil(tile_n) as u32;
    assert!(tiles_n <= MAX_WORKGROUPS_PER_DIM, "conv2d: too many channels");
    let y = tiles_m.min(MAX_WORKGROUPS_PER_DIM as usize);
    let z = tiles_m.div_ceil(y.max(1));
    [tiles_n, y as u32, z as u32]
}

/// Workgroups covering one direct-path invocation per 16 x 8 block of an `m x n` output (16 x 16
/// when `wide`), `times` times over (split-K chunks, stride phases).
fn direct_grid(m: usize, n: usize, times: usize, wide: bool) -> [u32; 3] {
    let width = if wide { 2 * DIRECT_N } else { DIRECT_N };
    grid_1d(m.div_ceil(DIRECT_M) * n.div_ceil(width) * times, DIRECT_WG as u32)
}

/// Workgroups of the subgroup kernels for an `m x n` output, `times` times over: blocks of 16 rows
/// x `block_columns`, row blocks in whole subgroups.
fn subgroup_grid(m: usize, n: usize, times: usize, block_columns: usize) -> [u32; 3] {
    let row_blocks = m.div_ceil(DIRECT_M).next_multiple_of(SG_LANES);
    grid_1d(row_blocks * n.div_ceil(block_columns) * times, DIRECT_WG as u32)
}

/// The tiled path's vec4 entry points: input channels in whole K steps, output channels in vec4s.
fn tiled_aligned(s: &Conv2dShape, tiles: ConvTiles) -> bool {
    s.in_c.is_multiple_of(tiles.k as usize) && s.out_c.is_multiple_of(4)
}

/// The direct path's 16-column blocks (`_wide` entry points, and every subgroup kernel) need vec4
/// loads (both channel counts multiples of 4) and a column count that is a multiple of 16 (every
/// WideResNet layer but the RGB stem's input side).
fn direct_wide(s: &Conv2dShape, columns: usize) -> bool {
    s.in_c.is_multiple_of(4) && s.out_c.is_multiple_of(4) && columns.is_multiple_of(2 * DIRECT_N)
}

/// A 3x3 stride-1 convolution whose rows are a multiple of 16 wide (input and output alike): each
/// 16-row block is 16 neighbouring pixels of one row, and the `Rows` subgroup kernels reuse the
/// pixels they load across the three taps of a kernel row.
fn rows_of_16(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride == 1 && s.out_w().is_multiple_of(DIRECT_M)
}

/// The same with rows exactly 8 wide, an even number of them (a 16-row block is two whole rows).
fn rows_of_8(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride == 1 && s.out_w() == 8 && s.out_h().is_multiple_of(2)
}

/// Columns per invocation of the subgroup kernels with 32-column blocks (4 x `DIRECT_N`), for GEMMs
/// whose columns divide by 32 (every WideResNet-28-2 layer but the first block's 16-channel side).
const SG_WIDE_COLUMNS: usize = 32;

/// The weight gradient's rows (KH*KW*Cin) are few: rounding its 16-row blocks up to whole
/// subgroups of 8 can waste most lanes (a 1x1 conv with 16 inputs: 7 of 8). The subgroup kernel
/// takes it only when at most 1/8 of the blocks are padding (Cin = 64 and 128 in a WRN-28-2);
/// otherwise the direct kernel is faster.
fn whole_subgroups_of_rows(m: usize) -> bool {
    let blocks = m.div_ceil(DIRECT_M);
    blocks.next_multiple_of(SG_LANES) * 8 <= blocks * 9
}

/// The weight gradient of a 3x3 convolution of stride 1 or 2 with output channels a multiple of
/// 32 runs the `Taps` kernel: an invocation takes the three taps of one kernel row for four input
/// channels, and walking the reduction along output rows reuses two (stride 2: one) of the three
/// input pixels it loaded at the previous step.
fn taps_of_3x3(s: &Conv2dShape) -> bool {
    s.kernel == 3 && s.stride <= 2 && s.out_c.is_multiple_of(SG_WIDE_COLUMNS)
}

/// A pass's subgroup kernels, one per kind of layer (see [`Conv2dKernel`]).
struct SubgroupKernels {
    rows32: Conv2dKernel,
    rows: Conv2dKernel,
    rows8_32: Conv2dKernel,
    rows8: Conv2dKernel,
    other: Conv2dKernel,
}

/// The kernel of `k` for a pass over `s` whose GEMM has `columns` columns, and its block width.
fn subgroup_kernel(k: SubgroupKernels, s: &Conv2dShape, columns: usize) -> (Conv2dKernel, usize) {
    let wide = columns.is_multiple_of(SG_WIDE_COLUMNS);
    match (rows_of_16(s), rows_of_8(s), wide) {
        (true, _, true) => (k.rows32, SG_WIDE_COLUMNS),
        (true, _, false) => (k.rows, 2 * DIRECT_N),
        (false, true, true) => (k.rows8_32, SG_WIDE_COLUMNS),
        (false, true, false) => (k.rows8, 2 * DIRECT_N),
        (false, false, _) => (k.other, 2 * DIRECT_N),
    }
}

/// The direct kernel of a pass for `s` with `columns` GEMM columns: 16-column blocks with vec4
/// loads where the channels allow, else scalar loads of any shape (every network's layers but
/// the RGB stem take the first: channels are multiples of 16); and whether it is the 16-column one.
fn direct_kernel(s: &Conv2dShape, columns: usize, [wide, general]: [Conv2dKernel; 2]) -> (Conv2dKernel, bool) {
    if direct_wide(s, columns) {
        (wide, true)
    } else {
        (general, false)
    }
}

/// The forward pass's kernel for `s` on `path`, with `tiles` on the tiled path (`residual`: add
/// one in the epilogue).
pub fn forward_plan(path: ConvPath, tiles: ConvTiles, s: &Conv2dShape, residual: bool) -> Conv2dPlan {
    use Conv2dKernel::*;
    let m = s.batch * s.out_h() * s.out_w();
    let (tile_m, tile_n) = (tiles.m as usize, tiles.n as usize);
    let p = params(s, [m, s.out_c, s.kernel * s.kernel * s.in_c], residual, tile_m);
    match path {
        ConvPath::Subgroup if direct_wide(s, s.out_c) => {
            let kernels = SubgroupKernels {
                rows32: ForwardRows32Subgroup,
                rows: ForwardRowsSubgroup,
                rows8_32: ForwardRows8x32Subgroup,
                rows8: ForwardRows8Subgroup,
                other: ForwardSubgroup,
            };
            let (kernel, block_columns) = subgroup_kernel(kernels, s, s.out_c);
            Conv2dPlan::new(kernel, subgroup_grid(m, s.out_c, 1, block_columns), p)
        }
        ConvPath::Tiled => Conv2dPlan::tiled(
            if tiled_aligned(s, tiles) {
                ForwardAligned
            } else {
                ForwardGeneral
            },
            tiles,
            gemm_grid(m.div_ceil(tile_m), s.out_c, tile_n),
            p,
        ),
        ConvPath::Direct | ConvPath::Subgroup => {
            let kernels = [ForwardDirectWide, ForwardDirectGeneral];
            let (kernel, wide) = direct_kernel(s, s.out_c, kernels);
            Conv2dPlan::new(kernel, direct_grid(m, s.out_c, 1, wide), p)
        }
    }
}

/// The data-gradient pass's kernel for `s` on `path`, with `tiles` on the tiled path. The
/// shaders run one GEMM per stride phase (input positions with the same (ih + pad) mod stride,
/// which all take the same taps); phase 0 has the most positions.
pub fn backward_data_plan(path: ConvPath, tiles: ConvTiles, s: &Conv2dShape, accumulate: bool) -> Conv2dPlan {
    use Conv2dKernel::*;
    let phases = s.stride * s.stride;
    let phase_rows = s.batch * s.in_h.div_ceil(s.stride) * s.in_w.div_ceil(s.stride);
    let (tile_m, tile_n) = (tiles.m as usize, tiles.n as usize);
    let mut p = params(s, [s.batch * s.in_h * s.in_w, s.in_c, 0], accumulate, tile_m);
    match path {
        ConvPath::Subgroup if direct_wide(s, s.in_c) => {
            // Row blocks per phase, whole subgroups of them (a subgroup stays in one phase).
            let phase_blocks = phase_rows.div_ceil(DIRECT_M).next_multiple_of(SG_LANES);
            p.phase_tiles = phase_blocks as u32;
            let kernels = SubgroupKernels {
                rows32: BackwardDataRows32Subgroup,
                rows: BackwardDataRowsSubgroup,
                rows8_32: BackwardDataRows8x32Subgroup,
                rows8: BackwardDataRows8Subgroup,
                other: BackwardDataSubgroup,
            };
            let (kernel, block_columns) = subgroup_kernel(kernels, s, s.in_c);
            let grid = grid_1d(phases * phase_blocks * s.in_c / block_columns, DIRECT_WG as u32);
            Conv2dPlan::new(kernel, grid, p)
        }
        ConvPath::Tiled => {
            let phase_tiles = phase_rows.div_ceil(tile_m);
            p.phase_tiles = phase_tiles as u32;
            p.tiles_m = (phases * phase_tiles) as u32;
            let kernel = if s.out_c.is_multiple_of(tiles.k as usize) {
                BackwardDataAligned
            } else {
                BackwardDataGeneral
            };
            Conv2dPlan::tiled(kernel, tiles, gemm_grid(phases * phase_tiles, s.in_c, tile_n), p)
        }
        ConvPath::Direct | ConvPath::Subgroup => {
            p.phase_tiles = phase_rows.div_ceil(DIRECT_M) as u32;
            let kernels = [BackwardDataDirectWide, BackwardDataDirectGeneral];
            let (kernel, wide) = direct_kernel(s, s.in_c, kernels);
            Conv2dPlan::new(kernel, direct_grid(phase_rows, s.in_c, phases, wide), p)
        }
    }
}

/// Number of split-K chunks and rows per chunk for a reduction of `rows` rows into `outputs`
/// weight gradients on `path` (the tiled path's chunks are a multiple of every candidate's K
/// step, so all cut the reduction at the same rows).
fn split_k(rows: usize, outputs: usize, path: ConvPath) -> (usize, usize) {
    let (target, max, multiple) = match path {
        ConvPath::Tiled => (SPLIT_ROWS_TARGET, MAX_SPLITS, ConvTiles::MAX_K as usize),
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

/// The weight-gradient pass's two kernels for `s` on `path` (with `tiles` on the tiled path):
/// the split-K GEMM into partial products, then their in-order sum into dw.
pub fn backward_weights_plan(path: ConvPath, tiles: ConvTiles, s: &Conv2dShape, accumulate: bool) -> [Conv2dPlan; 2] {
    use Conv2dKernel::*;
    let rows = s.batch * s.out_h() * s.out_w();
    let (m, n) = (s.kernel * s.kernel * s.in_c, s.out_c);
    let (splits, split_rows) = split_k(rows, m * n, path);
    let (tile_m, tile_n) = (tiles.m as usize, tiles.n as usize);
    let mut p = params(s, [m, n, rows], accumulate, tile_m);
    p.split_rows = split_rows as u32;
    p.splits = splits as u32;
    let gemm = match path {
        ConvPath::Subgroup if direct_wide(s, n) && taps_of_3x3(s) => {
            let pairs = (3 * s.in_c / 4).next_multiple_of(SG_LANES);
            let grid = grid_1d(splits * pairs * n / SG_WIDE_COLUMNS, DIRECT_WG as u32);
            Conv2dPlan::new(BackwardWeightsTapsSubgroup, grid, p)
        }
        ConvPath::Subgroup if direct_wide(s, n) && whole_subgroups_of_rows(m) => {
            Conv2dPlan::new(BackwardWeightsSubgroup, subgroup_grid(m, n, splits, 2 * DIRECT_N), p)
        }
        ConvPath::Tiled => {
            let tiles_m = m.div_ceil(tile_m);
            assert!(
                tiles_m <= MAX_WORKGROUPS_PER_DIM as usize,
                "conv2d_backward_weights: too many weight rows"
            );
            let kernel = if tiled_aligned(s, tiles) {
                BackwardWeightsAligned
            } else {
                BackwardWeightsGeneral
            };
            let grid = [n.div_ceil(tile_n) as u32, tiles_m as u32, splits as u32];
            Conv2dPlan::tiled(kernel, tiles, grid, p)
        }
        ConvPath::Direct | ConvPath::Subgroup => {
            let kernels = [BackwardWeightsDirectWide, BackwardWeightsDirectGeneral];
            let (kernel, wide) = direct_kernel(s, n, kernels);
            Conv2dPlan::new(kernel, direct_grid(m, n, splits, wide), p)
        }
    };
    let reduce = Conv2dPlan::new(BackwardWeightsReduce, grid_1d(m * n, REDUCE_WG), p);
    [gemm, reduce]
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

/// `y = conv(x, w) [+ residual]`, with the residual add fused into the GEMM epilogue
/// (`residual` has y's shape). x: `[batch, in_h, in_w, in_c]`, w: `[k, k, in_c, out_c]`,
/// y: `[batch, out_h, out_w, out_c]`. Runs [`forward_plan`] on the context's path.
pub fn conv2d_forward(
    ctx: &GpuContext,
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
    // Without a residual the shader still needs something bound there: the context's
    // placeholder, never read (the `accumulate` flag is 0).
    let placeholder;
    let res = match residual {
        Some(r) => {
            check_len(what, "residual", r, s.output_len());
            r
        }
        None => {
            placeholder = ctx.placeholder();
            &placeholder
        }
    };
    let tiles = ctx.conv_tiles_for(&s.tune_key(ConvPass::Forward));
    let plan = forward_plan(ctx.profile.conv_path, tiles, s, residual.is_some());
    let storage = [("x", x), ("w", w), ("y", y), ("residual", res)];
    plan.op(ctx, &storage).with_flops(s.flops())
}

/// `dx (+)= conv_transpose(dy, w)`: the gradient of [`conv2d_forward`] with respect to x.
/// Runs [`backward_data_plan`] on the context's path.
pub fn conv2d_backward_data(
    ctx: &GpuContext,
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
    let tiles = ctx.conv_tiles_for(&s.tune_key(ConvPass::BackwardData));
    let plan = backward_data_plan(ctx.profile.conv_path, tiles, s, accumulate);
    let storage = [("w", w), ("dy", dy), ("dx", dx)];
    plan.op(ctx, &storage).with_flops(s.flops())
}

/// f32 elements of split-K partial sums that [`conv2d_backward_weights`] needs for `s` on the
/// context's path: a network workspace allocates one scratch of its largest layer's need and
/// hands it to every layer.
pub fn conv2d_backward_weights_scratch_len(ctx: &GpuContext, s: &Conv2dShape) -> usize {
    let tiles = ctx.conv_tiles_for(&s.tune_key(ConvPass::BackwardWeights));
    let [gemm, _] = backward_weights_plan(ctx.profile.conv_path, tiles, s, false);
    gemm.params.splits as usize * s.weight_len()
}

/// `dw (+)= sum over batch and positions of im2col(x)^T dy`: the gradient of [`conv2d_forward`]
/// with respect to w. Deterministic split-K: each chunk of the reduction writes its partial
/// product into `scratch` (at least [`conv2d_backward_weights_scratch_len`] elements, its
/// contents overwritten; `None` allocates one for this call), then a second op adds the chunks
/// in fixed order into dw. Returns both ops, to be run in order. Runs
/// [`backward_weights_plan`] on the context's path.
pub fn conv2d_backward_weights(
    ctx: &GpuContext,
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
    let tiles = ctx.conv_tiles_for(&s.tune_key(ConvPass::BackwardWeights));
    let [gemm, reduce] = backward_weights_plan(ctx.profile.conv_path, tiles, s, accumulate);
    let shape = [gemm.params.splits as usize, s.kernel * s.kernel * s.in_c, s.out_c];
    let partials = Tensor::scratch(ctx, scratch, "conv2d dw partials", 0, &shape);
    let p = &partials;
    let storage = [("x", x), ("dy", dy), ("partials", p)];
    vec![
        gemm.op(ctx, &storage).with_flops(s.flops()),
        reduce.op(ctx, &[("partials_in", p), ("dw", dw)]),
    ]
}
