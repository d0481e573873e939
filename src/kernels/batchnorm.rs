//! Rust side of `shaders/batchnorm.wgsl`: batch norm fused with the following (leaky) ReLU.
//!
//! Data is NHWC seen as `rows = N*H*W` rows of `channels` values. Every kernel that walks the
//! rows gives each workgroup a chunk of rows and a tile of channel lanes; each thread owns one
//! channel lane and walks several rows (coalesced: consecutive threads read consecutive channels of
//! a row). When `channels % 4 == 0` (every layer of the network) the `*_vec4` kernels run: a
//! channel lane is 16 channels read as 4 `vec4`s, faster on lavapipe than the scalar kernels
//! (one channel per lane), which handle the other channel counts. Per-channel reductions
//! write partials (scalar: one per chunk; vec4: one per row lane) to a scratch buffer (the
//! caller's, shared by its layers, or one of their own), then combine them per channel in a fixed
//! order, so results are bitwise
//! reproducible. The scratch holds at most [`MAX_CHUNKS`] (scalar) or [`MAX_PARTIALS`] (vec4)
//! partials per channel.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{GpuContext, Op, Tensor, MAX_WORKGROUPS_PER_DIM};
pub use crate::profile::BatchNormTuning;
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/batchnorm.wgsl` with what this file writes for it.
pub static SHADER: Shader = shader_file!("batchnorm.wgsl", WGSL_CONSTANTS, WGSL_STRUCTS);

/// The constants `shaders/batchnorm.wgsl` is compiled with, and the structs it shares with this file:
/// written here once, prepended to the shader by [`Shader::source`].
const WGSL_CONSTANTS: &[(&str, u32)] = &[
    ("WG", WG),
    ("FLAG_BATCH_STATS", FLAG_BATCH_STATS),
    ("FLAG_UPDATE_RUNNING", FLAG_UPDATE_RUNNING),
    ("FLAG_ACCUMULATE", FLAG_ACCUMULATE),
    ("QPT", (VEC4_LANE_CHANNELS / 4) as u32),
];
const WGSL_STRUCTS: &[&str] = &[Params::WGSL];

const WG: u32 = 256;

/// Upper bound on row chunks of a scalar reduction: bounds the scratch (3 * MAX_CHUNKS * channels
/// floats) while leaving enough workgroups to fill a large GPU.
pub const MAX_CHUNKS: usize = 1024;

/// Upper bound on the partials per channel of a vec4 reduction (one per row lane, no
/// workgroup-level combine): scratch of 3 * MAX_PARTIALS * channels floats.
pub const MAX_PARTIALS: usize = 2048;

impl BatchNormTuning {
    fn params(self) -> Tuning {
        match self {
            BatchNormTuning::Gpu => Tuning {
                target_workgroups: 512,
                max_rows_per_lane: 16,
                vec4_blocked_rows: false,
            },
            BatchNormTuning::Cpu => Tuning {
                target_workgroups: 32,
                max_rows_per_lane: 128,
                vec4_blocked_rows: true,
            },
        }
    }
}

/// How many workgroups a dispatch aims for, how many rows a thread may walk to get there, and
/// which rows a row lane walks in the vec4 kernels.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    target_workgroups: usize,
    max_rows_per_lane: usize,
    /// vec4 kernels: each row lane walks one contiguous block of rows instead of every
    /// `row_lanes`-th row. On lavapipe interleaved rows are slower (its SIMD groups
    /// seemingly run their whole row loop one group after another, so each group strides through
    /// memory); GPUs want interleaved rows (neighbouring threads, neighbouring rows). The scalar
    /// kernels always interleave (blocked rows are slower on lavapipe for them).
    vec4_blocked_rows: bool,
}

/// Widest channel tile of a workgroup, in channel lanes (scalar: 64 floats = 256 contiguous
/// bytes per row).
const MAX_CHANNEL_LANES: usize = 64;

/// Channels of one channel lane of the vec4 kernels (`QPT` quads in the shader).
const VEC4_LANE_CHANNELS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormShape {
    pub rows: usize,
    pub channels: usize,
}

impl BatchNormShape {
    pub fn len(&self) -> usize {
        self.rows * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        rows: u32,
        channels: u32,
        /// Rows handled by one workgroup, row lanes * rows_per_lane (the last chunk may be shorter).
        rows_per_chunk: u32,
        /// Partials per channel in the reduction scratch.
        partials: u32,
        /// Channel lanes per workgroup tile: a power of two dividing WG.
        channel_lanes: u32,
        eps: f32,
        slope: f32,
        /// Running statistics: running = momentum * running + (1 - momentum) * batch.
        momentum: f32,
        /// Stats: bit 0 = update the running statistics.
        /// Backward: bit 0 = batch-statistics (training-mode) formula, bit 1 = accumulate dgamma/dbeta.
        flags: u32,
        /// Rows of one row lane: the first is chunk_begin + lane_r * lane_stride, then every
        /// row_step rows, at most rows_per_lane of them (cyclic: lane_stride 1, row_step = row lanes;
        /// blocked: lane_stride = rows_per_lane, row_step 1).
        lane_stride: u32,
        row_step: u32,
        rows_per_lane: u32,
    }
}

const FLAG_UPDATE_RUNNING: u32 = 1;
const FLAG_BATCH_STATS: u32 = 1;
const FLAG_ACCUMULATE: u32 = 2;

/// Which kernel family runs a shape: vec4 whenever the channels allow it.
fn use_vec4(s: &BatchNormShape) -> bool {
    s.channels.is_multiple_of(4)
}

/// `name` or `name_vec4`.
fn entry(vec4: bool, scalar: &'static str, vector: &'static str) -> &'static str {
    if vec4 {
        vector
    } else {
        scalar
    }
}

/// How the rows are split into workgroups: grid `[chunks, channel_tiles, 1]`.
#[derive(Clone, Copy, Debug)]
struct Plan {
    channel_lanes: usize,
    channel_tiles: usize,
    rows_per_lane: usize,
    rows_per_chunk: usize,
    chunks: usize,
    /// Row lanes walk contiguous blocks of rows (else every `row_lanes`-th row).
    blocked: bool,
    /// Partials per channel of a reduction.
    partials: usize,
}

impl Plan {
    fn grid(&self) -> [u32; 3] {
        [self.chunks as u32, self.channel_tiles as u32, 1]
    }
}

/// The tiling for `s` (vec4 or scalar kernels; `reduction`: bound the partials per channel).
fn plan(ctx: &GpuContext, s: &BatchNormShape, vec4: bool, reduction: bool) -> Plan {
    let t = ctx.profile.batchnorm.params();
    let units = if vec4 {
        s.channels.div_ceil(VEC4_LANE_CHANNELS)
    } else {
        s.channels
    };
    let channel_lanes = units.next_power_of_two().min(MAX_CHANNEL_LANES);
    let channel_tiles = units.div_ceil(channel_lanes);
    assert!(
        channel_tiles <= MAX_WORKGROUPS_PER_DIM as usize,
        "batchnorm: {} channels is too many",
        s.channels
    );
    let row_lanes = WG as usize / channel_lanes;
    let max_chunks = match (reduction, vec4) {
        (false, _) => MAX_WORKGROUPS_PER_DIM as usize,
        (true, false) => MAX_CHUNKS,
        (true, true) => (MAX_PARTIALS / row_lanes).max(1),
    };
    // Threads take more rows rather than exceed max_chunks.
    let rows_per_lane = (s.rows * channel_tiles)
        .div_ceil(row_lanes * t.target_workgroups)
        .clamp(1, t.max_rows_per_lane)
        .max(s.rows.div_ceil(max_chunks * row_lanes));
    let rows_per_chunk = row_lanes * rows_per_lane;
    let chunks = s.rows.div_ceil(rows_per_chunk);
    Plan {
        channel_lanes,
        channel_tiles,
        rows_per_lane,
        rows_per_chunk,
        chunks,
        blocked: vec4 && t.vec4_blocked_rows,
        partials: if vec4 { chunks * row_lanes } else { chunks },
    }
}

fn params(s: &BatchNormShape, pl: &Plan) -> Params {
    let row_lanes = WG / pl.channel_lanes as u32;
    let (lane_stride, row_step) = if pl.blocked {
        (pl.rows_per_lane as u32, 1)
    } else {
        (1, row_lanes)
    };
    Params {
        rows: s.rows as u32,
        channels: s.channels as u32,
        rows_per_chunk: pl.rows_per_chunk as u32,
        partials: pl.partials as u32,
        channel_lanes: pl.channel_lanes as u32,
        eps: 0.0,
        slope: 0.0,
        momentum: 0.0,
        flags: 0,
        lane_stride,
        row_step,
        rows_per_lane: pl.rows_per_lane as u32,
    }
}

/// Partials per channel that the reductions of `s` ([`batchnorm_stats`], [`batchnorm_backward`])
/// write to their scratch and combine in order.
pub fn batchnorm_reduction_partials(ctx: &GpuContext, s: &BatchNormShape) -> usize {
    plan(ctx, s, use_vec4(s), true).partials
}

/// f32 elements of scratch that [`batchnorm_stats`] and [`batchnorm_backward`] need for `s`: a
/// network workspace makes one of its largest layer's need and hands it to every layer.
pub fn batchnorm_scratch_len(ctx: &GpuContext, s: &BatchNormShape) -> usize {
    3 * batchnorm_reduction_partials(ctx, s) * s.channels
}

fn check_shape(s: &BatchNormShape, what: &str) {
    assert!(s.rows > 0 && s.channels > 0, "{what}: empty shape {s:?}");
    assert!(
        s.len() <= u32::MAX as usize,
        "{what}: {s:?} has more than 2^32 elements"
    );
}

fn check_len(t: &Tensor, len: usize, what: &str, name: &str) {
    assert_eq!(t.len(), len, "{what}: {name} has {} elements, expected {len}", t.len());
}

/// Batch mean and biased variance of `x` into `mean`/`var` (`[channels]` each); if
/// `update_running`, also `running_mean/running_var = momentum * running + (1 - momentum) * batch`.
/// Its partial sums go to `scratch` (at least [`batchnorm_scratch_len`] elements, overwritten;
/// None allocates them); returns its ops in order.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_stats(
    ctx: &GpuContext,
    s: &BatchNormShape,
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    momentum: f32,
    update_running: bool,
    scratch: Option<&Tensor>,
) -> Vec<Op> {
    let what = "batchnorm_stats";
    check_shape(s, what);
    check_len(x, s.len(), what, "x");
    for (t, name) in [
        (mean, "mean"),
        (var, "var"),
        (running_mean, "running_mean"),
        (running_var, "running_var"),
    ] {
        check_len(t, s.channels, what, name);
    }
    let vec4 = use_vec4(s);
    let pl = plan(ctx, s, vec4, true);
    let scratch = Tensor::scratch(
        ctx,
        scratch,
        "batchnorm stats partials",
        0,
        &[3, pl.partials, s.channels],
    );
    let mut p = params(s, &pl);
    p.momentum = momentum;
    p.flags = if update_running { FLAG_UPDATE_RUNNING } else { 0 };
    let bindings = [("x", x), ("partials_out", &scratch)];
    let partial = Op::new(
        ctx,
        &SHADER,
        entry(vec4, "batchnorm_stats_partial", "batchnorm_stats_partial_vec4"),
        Some(bytemuck::bytes_of(&p)),
        &bindings,
        pl.grid(),
    )
    .with_flops(3.0 * s.len() as f64);
    let finalize = Op::new(
        ctx,
        &SHADER,
        "batchnorm_stats_finalize",
        Some(bytemuck::bytes_of(&p)),
        &[
            ("partials_in", &scratch),
            ("mean_out", mean),
            ("var_out", var),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        [s.channels as u32, 1, 1],
    );
    vec![partial, finalize]
}

/// `y = act(gamma * (x - mean) / sqrt(var + eps) + beta)` using the given `mean`/`var` (batch
/// statistics in training mode, running statistics in inference mode); `act` is leaky ReLU with
/// `slope` (0 = ReLU).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_apply(
    ctx: &GpuContext,
    s: &BatchNormShape,
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    eps: f32,
    slope: f32,
) -> Op {
    let what = "batchnorm_apply";
    check_shape(s, what);
    check_len(x, s.len(), what, "x");
    check_len(y, s.len(), what, "y");
    for (t, name) in [(mean, "mean"), (var, "var"), (gamma, "gamma"), (beta, "beta")] {
        check_len(t, s.channels, what, name);
    }
    let vec4 = use_vec4(s);
    let pl = plan(ctx, s, vec4, false);
    let mut p = params(s, &pl);
    p.eps = eps;
    p.slope = slope;
    let bindings = [
        ("x", x),
        ("mean", mean),
        ("var_", var),
        ("gamma", gamma),
        ("beta", beta),
        ("y", y),
    ];
    Op::new(
        ctx,
        &SHADER,
        entry(vec4, "batchnorm_apply", "batchnorm_apply_vec4"),
        Some(bytemuck::bytes_of(&p)),
        &bindings,
        pl.grid(),
    )
    .with_flops(4.0 * s.len() as f64)
}

/// Arguments of [`batchnorm_backward`].
pub struct BatchNormBackward<'a> {
    pub x: &'a Tensor,
    /// Gradient w.r.t. the activation output y.
    pub dy: &'a Tensor,
    /// The statistics the forward used.
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
    /// `dx = computed + addend` (a distinct buffer of x's shape: the identity-shortcut
    /// gradient), else `dx = computed`.
    pub addend: Option<&'a Tensor>,
    pub eps: f32,
    pub slope: f32,
    /// true: training-mode formula (mean/var are the batch statistics of x); false:
    /// inference-mode formula (mean/var are constants).
    pub batch_stats: bool,
    /// `dgamma += ...`, `dbeta += ...` instead of `=`.
    pub accumulate_params: bool,
    /// The partial sums (at least [`batchnorm_scratch_len`] elements, overwritten); None
    /// allocates them.
    pub scratch: Option<&'a Tensor>,
}

/// Backward of [`batchnorm_apply`] (activation included). With `dz = dy * act'(z)` and
/// `xhat = (x - mean) / sqrt(var + eps)`: `dbeta (+)= sum dz`, `dgamma (+)= sum dz * xhat`;
/// training mode `dx = gamma * rstd * (dz - mean(dz) - xhat * mean(dz * xhat))`, inference mode
/// `dx = gamma * rstd * dz`; plus `addend` if given. Returns its ops in order (partial
/// reduction, per-channel finalize, input gradient).
pub fn batchnorm_backward(ctx: &GpuContext, s: &BatchNormShape, b: &BatchNormBackward) -> Vec<Op> {
    let what = "batchnorm_backward";
    check_shape(s, what);
    for (t, name) in [(b.x, "x"), (b.dy, "dy"), (b.dx, "dx")] {
        check_len(t, s.len(), what, name);
    }
    if let Some(a) = b.addend {
        check_len(a, s.len(), what, "addend");
    }
    for (t, name) in [
        (b.mean, "mean"),
        (b.var, "var"),
        (b.gamma, "gamma"),
        (b.beta, "beta"),
        (b.dgamma, "dgamma"),
        (b.dbeta, "dbeta"),
    ] {
        check_len(t, s.channels, what, name);
    }
    let vec4 = use_vec4(s);
    let pl = plan(ctx, s, vec4, true);
    let scratch = Tensor::scratch(
        ctx,
        b.scratch,
        "batchnorm backward partials",
        0,
        &[2, pl.partials, s.channels],
    );
    // The finalize kernel reads the partials and writes these in one dispatch: a buffer of their
    // own (a writable range of the partials' buffer would conflict with their read-only binding).
    let coef = Tensor::zeros(ctx, "batchnorm backward coefficients", &[5, s.channels]);
    let with_args = |pl: &Plan| Params {
        eps: b.eps,
        slope: b.slope,
        flags: (if b.batch_stats { FLAG_BATCH_STATS } else { 0 })
            | (if b.accumulate_params { FLAG_ACCUMULATE } else { 0 }),
        ..params(s, pl)
    };
    let p = with_args(&pl);
    let uniform = bytemuck::bytes_of(&p);
    let partial_bindings = [
        ("x", b.x),
        ("mean", b.mean),
        ("var_", b.var),
        ("gamma", b.gamma),
        ("beta", b.beta),
        ("dy", b.dy),
        ("partials_out", &scratch),
    ];
    let partial = Op::new(
        ctx,
        &SHADER,
        entry(vec4, "batchnorm_backward_partial", "batchnorm_backward_partial_vec4"),
        Some(uniform),
        &partial_bindings,
        pl.grid(),
    )
    .with_flops(8.0 * s.len() as f64);
    let finalize = Op::new(
        ctx,
        &SHADER,
        "batchnorm_backward_finalize",
        Some(uniform),
        &[
            ("mean", b.mean),
            ("var_", b.var),
            ("gamma", b.gamma),
            ("beta", b.beta),
            ("partials_in", &scratch),
            ("dgamma", b.dgamma),
            ("dbeta", b.dbeta),
            ("coef_out", &coef),
        ],
        [s.channels as u32, 1, 1],
    );
    // The input gradient is elementwise: the tiling without the bound on chunks.
    let pl_input = plan(ctx, s, vec4, false);
    let p_input = with_args(&pl_input);
    let mut inputs = vec![("x", b.x), ("dy", b.dy), ("coef", &coef), ("dx", b.dx)];
    let input_entry = match b.addend {
        None => entry(vec4, "batchnorm_backward_input", "batchnorm_backward_input_vec4"),
        Some(a) => {
            inputs.push(("addend", a));
            entry(
                vec4,
                "batchnorm_backward_input_add",
                "batchnorm_backward_input_add_vec4",
            )
        }
    };
    let input = Op::new(
        ctx,
        &SHADER,
        input_entry,
        Some(bytemuck::bytes_of(&p_input)),
        &inputs,
        pl_input.grid(),
    )
    .with_flops(9.0 * s.len() as f64);
    vec![partial, finalize, input]
}
