//! What the kernels choose their variants by: the adapter's facts ([`AdapterProfile`]) and the
//! variant each pass family runs on it ([`ConvPath`], [`BatchNormTuning`]). The ground floor:
//! imports nothing of the crate, so the GPU context can hold a profile and every kernel can read
//! one without an import running upward.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

/// Lanes per subgroup that `conv2d_subgroup.wgsl` is written for.
pub const CONV_SUBGROUP_LANES: u32 = 8;

/// The environment variable that forces a convolution path on every context of a process
/// (tests and benchmarks included): `tiled`, `direct` or `subgroup`.
pub const CONV_PATH_ENV: &str = "ADAMATCH_CONV_PATH";

/// What the kernels choose their variants by: the adapter's kind and subgroups (facts), and the
/// variants chosen from them or forced (`--conv-path`, `GpuContext::with_conv_path`). One
/// profile per context; conv2d and batch norm read nothing else about the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterProfile {
    /// A CPU adapter (lavapipe, SwiftShader, WARP): it runs each workgroup as one task and pays
    /// per workgroup and per barrier.
    pub cpu: bool,
    /// WebGPU in a browser, whose validation is stricter than wgpu-core's.
    pub browser: bool,
    /// The subgroup size when the device has subgroups of one fixed size (lavapipe: 8).
    pub subgroup_size: Option<u32>,
    /// The path every convolution takes.
    pub conv_path: ConvPath,
    /// The tiled path's tiles when forced (`--conv-tiles`, `ADAMATCH_CONV_TILES`); None: each
    /// layer's tuned tiles where autotuning chose them, else [`ConvTiles::DEFAULT`].
    pub conv_tiles: Option<ConvTiles>,
    /// Whether the tiled path's tiles are tuned per layer shape on this adapter (`--autotune`,
    /// `ADAMATCH_AUTOTUNE`; by default on GPUs only); only where that path runs and its tiles
    /// are not forced.
    pub autotune: bool,
    /// Batch norm's split of rows into workgroups.
    pub batchnorm: BatchNormTuning,
}

impl AdapterProfile {
    /// The facts of an adapter with the variants it runs best (measured on lavapipe and GPUs).
    pub fn new(cpu: bool, browser: bool, subgroup_size: Option<u32>) -> AdapterProfile {
        let mut p = AdapterProfile {
            cpu,
            browser,
            subgroup_size,
            conv_path: ConvPath::Tiled,
            conv_tiles: None,
            // On GPUs, where the tiled path is the adapter's own and timing the candidates takes
            // seconds; CPU adapters run the tiled path only when forced (tests, comparisons),
            // and timing it there takes minutes at the paper's shapes (lavapipe, 2026-12-07).
            autotune: !cpu,
            batchnorm: BatchNormTuning::Gpu,
        };
        p.conv_path = ConvPath::for_adapter(&p);
        p.batchnorm = BatchNormTuning::for_adapter(&p);
        p
    }

    /// Whether convolutions take the tiled path with tiles tuned per layer shape.
    pub fn tunes_tiles(&self) -> bool {
        self.conv_path == ConvPath::Tiled && self.conv_tiles.is_none() && self.autotune
    }

    /// The tiled path's tiles in words when convolutions take it ("autotuned", or the tiles),
    /// else None.
    pub fn tiles_in_use(&self) -> Option<String> {
        if self.conv_path != ConvPath::Tiled {
            None
        } else if self.tunes_tiles() {
            Some("autotuned per layer".into())
        } else {
            Some(self.conv_tiles.unwrap_or(ConvTiles::DEFAULT).to_string())
        }
    }

    /// The convolution kernels in words: the path, and the tiles where they matter.
    pub fn conv_kernels(&self) -> String {
        match self.tiles_in_use() {
            Some(t) => format!("{} (tiles {t})", self.conv_path),
            None => self.conv_path.to_string(),
        }
    }

    /// This profile with the tiled path on `tiles` (any adapter runs every candidate).
    pub fn with_conv_tiles(self, tiles: ConvTiles) -> AdapterProfile {
        AdapterProfile {
            conv_tiles: Some(tiles),
            ..self
        }
    }

    /// This profile with autotuning of the tiled path's tiles on or off.
    pub fn with_autotune(self, on: bool) -> AdapterProfile {
        AdapterProfile { autotune: on, ..self }
    }

    /// This profile with every convolution on `path`, or why the adapter cannot run it.
    pub fn with_conv_path(self, path: ConvPath) -> Result<AdapterProfile> {
        if let Some(why) = path.refusal(&self) {
            bail!("convolution path '{}' cannot run on this adapter: {why}", path.name());
        }
        Ok(AdapterProfile {
            conv_path: path,
            ..self
        })
    }
}

/// The environment variable that forces the tiled path's tiles on every context of a process:
/// one of [`ConvTiles::ALL`], written `MxNxK`.
pub const CONV_TILES_ENV: &str = "ADAMATCH_CONV_TILES";

/// The environment variable that switches the tiled path's autotuning `on` or `off`.
pub const AUTOTUNE_ENV: &str = "ADAMATCH_AUTOTUNE";

/// Whether autotuning is on or off, as `--autotune` and `ADAMATCH_AUTOTUNE` write it.
pub fn parse_on_off(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{v}': expected on or off")),
    }
}

/// What `ADAMATCH_AUTOTUNE` says, if it is set.
pub fn autotune_from_env() -> Result<Option<bool>> {
    match std::env::var(AUTOTUNE_ENV) {
        Ok(v) if !v.is_empty() => parse_on_off(&v).map(Some).map_err(|e| anyhow!("{AUTOTUNE_ENV}={e}")),
        _ => Ok(None),
    }
}

/// The three passes of a convolution, each tuned on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardWeights,
}

impl ConvPass {
    pub const ALL: [ConvPass; 3] = [ConvPass::Forward, ConvPass::BackwardData, ConvPass::BackwardWeights];

    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::BackwardData => "backward-data",
            ConvPass::BackwardWeights => "backward-weights",
        }
    }
}

/// The tiles `ADAMATCH_CONV_TILES` names, if it is set.
pub fn conv_tiles_from_env() -> Result<Option<ConvTiles>> {
    match std::env::var(CONV_TILES_ENV) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|e| anyhow!("{CONV_TILES_ENV}={v}: {e}")),
        _ => Ok(None),
    }
}

/// The tiles of the tiled convolution path (`conv2d.wgsl`): each workgroup computes an
/// `m x n` block of the GEMM's output, staging `k` reduction steps of both operands at a time
/// in workgroup memory; each invocation owns 8 x `cols` outputs (its register tile, `cols` 4 or
/// 8), so a workgroup has `m / 8 * n / cols` invocations. Every candidate sums each output over
/// the reduction in the same order (whole groups of 4, in order; the weight gradient's split-K
/// chunks do not depend on the tiles), so the tiles change speed, never a result's bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTiles {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub cols: u32,
}

impl ConvTiles {
    /// The tiles the path ran with before it had candidates: 144 rows divide the weight
    /// gradient's 9 * Cin rows of every 3x3 layer with Cin a multiple of 16; 144 invocations.
    pub const DEFAULT: ConvTiles = ConvTiles::new(144, 32, 16, 4);

    /// The candidates: the default, then workgroups of 64 and 128 invocations (whole NVIDIA
    /// warps and AMD waves), K steps of 8 to 32, register tiles of 8 x 4 and 8 x 8 outputs
    /// (the last two: more multiply-adds per workgroup-memory load, as GPU GEMMs use), all
    /// within WebGPU's default 16 KiB of workgroup memory and 256 invocations.
    pub const ALL: [ConvTiles; 8] = [
        ConvTiles::DEFAULT,
        ConvTiles::new(64, 32, 16, 4),
        ConvTiles::new(128, 32, 16, 4),
        ConvTiles::new(128, 16, 16, 4),
        ConvTiles::new(256, 16, 8, 4),
        ConvTiles::new(64, 32, 32, 4),
        ConvTiles::new(128, 64, 16, 8),
        ConvTiles::new(64, 64, 16, 8),
    ];

    const fn new(m: u32, n: u32, k: u32, cols: u32) -> ConvTiles {
        ConvTiles { m, n, k, cols }
    }

    /// The largest K step of the candidates: the weight gradient's split-K chunks are a
    /// multiple of it, so that every candidate cuts the reduction at the same rows.
    pub const MAX_K: u32 = 32;

    /// Invocations per workgroup.
    pub const fn workgroup_size(self) -> u32 {
        (self.m / 8) * (self.n / self.cols)
    }

    /// Bytes of workgroup memory the two staged tiles take.
    pub const fn workgroup_bytes(self) -> u32 {
        (self.m + self.n) * self.k * 4
    }

    /// The position of these tiles in [`ConvTiles::ALL`].
    pub fn index(self) -> usize {
        ConvTiles::ALL
            .iter()
            .position(|&t| t == self)
            .expect("ConvTiles are made from ConvTiles::ALL only")
    }
}

impl fmt::Display for ConvTiles {
    /// `MxNxK`, and `MxNxK-8x8` for the 8 x 8 register tiles.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.m, self.n, self.k)?;
        if self.cols != 4 {
            write!(f, "-8x{}", self.cols)?;
        }
        Ok(())
    }
}

impl FromStr for ConvTiles {
    type Err = String;

    fn from_str(s: &str) -> Result<ConvTiles, String> {
        let names: Vec<String> = ConvTiles::ALL.iter().map(|t| t.to_string()).collect();
        ConvTiles::ALL
            .into_iter()
            .find(|t| t.to_string() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown convolution tiles '{s}': choose one of {}", names.join(", ")))
    }
}

/// The path `ADAMATCH_CONV_PATH` names, if it is set (never in a browser).
pub fn conv_path_from_env() -> Result<Option<ConvPath>> {
    match std::env::var(CONV_PATH_ENV) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|e| anyhow!("{CONV_PATH_ENV}={v}: {e}")),
        _ => Ok(None),
    }
}

/// How the GEMMs of the convolutions run. The paths compute the same sums in different orders
/// (results may differ in the last bits); each is bitwise reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum ConvPath {
    /// Tiles staged in workgroup memory, with barriers: for GPUs.
    Tiled,
    /// No workgroup memory and no barriers: each invocation reads its operands straight from
    /// the storage buffers and keeps a 16 x 8 block of outputs in registers. For CPU adapters
    /// (lavapipe), where barriers are expensive.
    Direct,
    /// The direct path with the operand that a subgroup's invocations share loaded once per
    /// subgroup and broadcast (`conv2d_subgroup.wgsl`), for layers whose channels take the
    /// 16-column blocks; the direct kernels for the others. Bitwise the direct path's results.
    /// Needs subgroups of exactly 8 lanes.
    Subgroup,
}

impl ConvPath {
    pub const ALL: [ConvPath; 3] = [ConvPath::Tiled, ConvPath::Direct, ConvPath::Subgroup];

    /// The name `--conv-path` and `ADAMATCH_CONV_PATH` take.
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Tiled => "tiled",
            ConvPath::Direct => "direct",
            ConvPath::Subgroup => "subgroup",
        }
    }

    /// The adapter's own path (from the facts of `p`, not its `conv_path`): subgroup on native
    /// CPU adapters that can run it, else direct on native CPU adapters, and tiled on GPUs and in
    /// browsers.
    pub fn for_adapter(p: &AdapterProfile) -> ConvPath {
        if p.browser || !p.cpu {
            ConvPath::Tiled
        } else if ConvPath::Subgroup.refusal(p).is_none() {
            ConvPath::Subgroup
        } else {
            ConvPath::Direct
        }
    }

    /// Why the adapter of `p` cannot run this path, or None when it can.
    pub fn refusal(self, p: &AdapterProfile) -> Option<String> {
        match self {
            ConvPath::Tiled => None,
            ConvPath::Direct | ConvPath::Subgroup if p.browser => Some(
                "its kernels bind an output and its vec4 view (both writable) to one buffer range, \
                 which WebGPU's validation rejects"
                    .into(),
            ),
            ConvPath::Subgroup if p.subgroup_size != Some(CONV_SUBGROUP_LANES) => Some(format!(
                "conv2d_subgroup.wgsl needs subgroups of exactly {CONV_SUBGROUP_LANES} lanes; this adapter has {}",
                match p.subgroup_size {
                    Some(n) => format!("subgroups of {n}"),
                    None => "no fixed subgroup size".into(),
                }
            )),
            ConvPath::Direct | ConvPath::Subgroup => None,
        }
    }
}

impl fmt::Display for ConvPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConvPath {
    type Err = String;

    fn from_str(s: &str) -> Result<ConvPath, String> {
        ConvPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown convolution path '{s}': choose tiled, direct or subgroup"))
    }
}

/// How a batch-norm dispatch splits its rows into workgroups. GPUs want enough workgroups to fill
/// every core; CPU adapters (lavapipe) run each workgroup as one task, pay per workgroup and per
/// barrier, and prefer a few fat ones. Either runs on any adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchNormTuning {
    Gpu,
    Cpu,
}

impl BatchNormTuning {
    pub const ALL: [BatchNormTuning; 2] = [BatchNormTuning::Gpu, BatchNormTuning::Cpu];

    /// [`BatchNormTuning::Cpu`] on CPU adapters, else [`BatchNormTuning::Gpu`].
    pub fn for_adapter(p: &AdapterProfile) -> BatchNormTuning {
        if p.cpu {
            BatchNormTuning::Cpu
        } else {
            BatchNormTuning::Gpu
        }
    }
}
