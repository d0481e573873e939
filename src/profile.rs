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
            batchnorm: BatchNormTuning::Gpu,
        };
        p.conv_path = ConvPath::for_adapter(&p);
        p.batchnorm = BatchNormTuning::for_adapter(&p);
        p
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
