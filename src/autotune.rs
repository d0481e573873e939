//! Runtime autotuning of the tiled convolution path's tiles, as burn/cubecl's autotuned conv
//! strategy does: the first time a convolution pass of a shape runs on an adapter, every
//! candidate of [`ConvTiles::ALL`] is timed on it and the fastest is kept for the device
//! ([`GpuContext::set_tuned_tiles`]) and written to a cache file, one entry per adapter, driver
//! and crate version, so a later process on the same adapter reads its choice instead of timing.
//! The candidates sum every output in the same order (see [`ConvTiles`]), so a choice changes
//! speed and never a result's bits: nothing about it needs to be replayed on `--resume`.
//!
//! Only where convolutions take the tiled path with tiles neither forced nor switched off
//! ([`crate::profile::AdapterProfile::tunes_tiles`]); native only (the browser keeps the
//! default tiles).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::gpu::{ConvTuneKey, GpuContext, Op, Tensor};
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weights, conv2d_forward, Conv2dShape, ConvPass, ConvTiles,
};

/// The cache file's name in the cache directory (`$ADAMATCH_DATA`, else the user cache
/// directory's `adamatch-wgpu`).
pub const CACHE_FILE: &str = "autotune-conv-tiles.json";

/// Dispatches of one candidate per timed submission, and timed submissions (the fastest
/// counts): enough to rise above a submission's fixed cost on a GPU.
const REPEATS: usize = 4;
const TRIALS: usize = 2;

/// What one tuning call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuneSummary {
    /// Passes timed here, and passes whose choice came from the cache file.
    pub timed: usize,
    pub cached: usize,
    /// Seconds spent timing.
    pub seconds: f64,
}

/// The cache file: adapter key -> (pass and shape -> tiles), all as text.
type CacheFile = BTreeMap<String, BTreeMap<String, String>>;

/// The cache file's path.
pub fn cache_path() -> PathBuf {
    crate::data::download::resolve_data_dir(None).join(CACHE_FILE)
}

/// What a cache entry is filed under: the adapter, its driver and this crate's version.
pub fn adapter_key(ctx: &GpuContext) -> String {
    let i = &ctx.info;
    format!(
        "{} | {:?} | {} {} | adamatch-wgpu {}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        env!("CARGO_PKG_VERSION")
    )
}

/// A pass and shape as the cache file writes it, e.g. `forward 64x32x32x16x32x3x1`.
pub fn key_text((pass, shape): &ConvTuneKey) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{} {}", pass.name(), dims.join("x"))
}

fn read_cache(path: &std::path::Path) -> CacheFile {
    // A missing or unreadable cache only costs a retune; it never stops a run.
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Tunes `passes` of every shape in `shapes` that have no tiles yet on `ctx`'s device: from
/// the cache file where it has an entry for this adapter, else by timing each candidate (and
/// then adding the choices to the cache file).
pub fn tune_convolutions(ctx: &GpuContext, shapes: &[Conv2dShape], passes: &[ConvPass]) -> Result<TuneSummary> {
    tune_with_cache(ctx, shapes, passes, &cache_path())
}

/// [`tune_convolutions`] with the cache file at `path`.
pub fn tune_with_cache(
    ctx: &GpuContext,
    shapes: &[Conv2dShape],
    passes: &[ConvPass],
    path: &std::path::Path,
) -> Result<TuneSummary> {
    let mut summary = TuneSummary::default();
    if !ctx.profile.tunes_tiles() {
        return Ok(summary);
    }
    let mut todo: Vec<(ConvTuneKey, Conv2dShape)> = Vec::new();
    for s in shapes {
        for &pass in passes {
            let key = s.tune_key(pass);
            if ctx.tuned_tiles(&key).is_none() && !todo.iter().any(|(k, _)| *k == key) {
                todo.push((key, *s));
            }
        }
    }
    if todo.is_empty() {
        return Ok(summary);
    }
    let adapter = adapter_key(ctx);
    let cached = read_cache(path).remove(&adapter).unwrap_or_default();
    let mut timed = Vec::new();
    let start = Instant::now();
    for (key, s) in todo {
        match cached.get(&key_text(&key)).and_then(|t| t.parse::<ConvTiles>().ok()) {
            Some(tiles) => {
                ctx.set_tuned_tiles(key, tiles);
                summary.cached += 1;
            }
            None => {
                let tiles = fastest(ctx, key.0, &s)?;
                ctx.set_tuned_tiles(key, tiles);
                timed.push((key_text(&key), tiles.to_string()));
            }
        }
    }
    summary.timed = timed.len();
    summary.seconds = start.elapsed().as_secs_f64();
    if !timed.is_empty() {
        // Read again just before writing: another process may have added its own choices.
        let mut file = read_cache(path);
        file.entry(adapter).or_default().extend(timed);
        let json = serde_json::to_vec_pretty(&file).expect("the cache is plain strings");
        crate::files::write_atomically(path, &json)
            .with_context(|| format!("saving the tuned tiles to {}", path.display()))?;
    }
    Ok(summary)
}

/// Tunes the convolutions of `shapes` as [`tune_convolutions`] does, and says on stderr what
/// it timed; a failure is reported and leaves the default tiles (tuning is never worth failing
/// a run for).
pub fn tune_or_warn(ctx: &GpuContext, shapes: &[Conv2dShape], passes: &[ConvPass]) {
    match tune_convolutions(ctx, shapes, passes) {
        Ok(s) if s.timed > 0 => crate::errln!(
            "autotuned the tiled path's tiles for {} convolution passes in {:.1} s (cached in {})",
            s.timed,
            s.seconds,
            cache_path().display()
        ),
        Ok(_) => {}
        Err(e) => crate::errln!("note: autotuning the convolution tiles failed ({e:#}); the untuned ones stay in use"),
    }
}

/// The candidate that runs `pass` of `s` fastest on `ctx`'s device (wall clock over awaited
/// submissions of [`REPEATS`] dispatches; ties go to the earlier candidate).
fn fastest(ctx: &GpuContext, pass: ConvPass, s: &Conv2dShape) -> Result<ConvTiles> {
    let tensors = PassTensors::new(ctx, s);
    let mut best = (ConvTiles::DEFAULT, f64::INFINITY);
    for tiles in ConvTiles::ALL {
        let forced = ctx.with_conv_tiles(tiles);
        let ops = tensors.ops(&forced, pass, s);
        let once: Vec<&Op> = ops.iter().collect();
        forced.run(&once)?;
        let repeated: Vec<&Op> = (0..REPEATS).flat_map(|_| ops.iter()).collect();
        let mut seconds = f64::INFINITY;
        for _ in 0..TRIALS {
            let t = Instant::now();
            forced.run(&repeated)?;
            seconds = seconds.min(t.elapsed().as_secs_f64());
        }
        if seconds < best.1 {
            best = (tiles, seconds);
        }
    }
    Ok(best.0)
}

/// The buffers one pass of a shape reads and writes while it is timed (zeros: the timing does
/// not depend on the values).
struct PassTensors {
    x: Tensor,
    w: Tensor,
    y: Tensor,
    dy: Tensor,
    dx: Tensor,
    dw: Tensor,
}

impl PassTensors {
    fn new(ctx: &GpuContext, s: &Conv2dShape) -> PassTensors {
        PassTensors {
            x: Tensor::zeros(ctx, "autotune x", &[s.input_len()]),
            w: Tensor::zeros(ctx, "autotune w", &[s.weight_len()]),
            y: Tensor::zeros(ctx, "autotune y", &[s.output_len()]),
            dy: Tensor::zeros(ctx, "autotune dy", &[s.output_len()]),
            dx: Tensor::zeros(ctx, "autotune dx", &[s.input_len()]),
            dw: Tensor::zeros(ctx, "autotune dw", &[s.weight_len()]),
        }
    }

    fn ops(&self, ctx: &GpuContext, pass: ConvPass, s: &Conv2dShape) -> Vec<Op> {
        match pass {
            ConvPass::Forward => vec![conv2d_forward(ctx, s, &self.x, &self.w, &self.y, None)],
            ConvPass::BackwardData => vec![conv2d_backward_data(ctx, s, &self.dy, &self.w, &self.dx, false)],
            ConvPass::BackwardWeights => conv2d_backward_weights(ctx, s, &self.x, &self.dy, &self.dw, false, None),
        }
    }
}
