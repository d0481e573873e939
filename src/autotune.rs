//! Runtime autotuning of the tiled convolution path's tiles, as burn/cubecl's autotuned conv
//! strategy does: the first time a convolution pass of a shape runs on an adapter, every
//! candidate of [`ConvTiles::ALL`] is timed on it and the fastest is kept for the device
//! ([`GpuContext::set_tuned_tiles`]) and stored, one entry per adapter, driver and crate
//! version, so a later process on the same adapter reads its choice instead of timing.
//! The candidates sum every output in the same order (see [`ConvTiles`]), so a choice changes
//! speed and never a result's bits: nothing about it needs to be replayed on `--resume`.
//!
//! Only where convolutions take the tiled path with tiles neither forced nor switched off
//! ([`crate::profile::AdapterProfile::tunes_tiles`]). Candidates are timed by GPU timestamps
//! where the device has them (`crate::timing`), else by the wall clock around awaited
//! submissions. The same tuner serves both targets: natively the choices live in a cache file
//! ([`CacheFileStore`]), in a browser in `localStorage` (`crate::web`).

use std::collections::BTreeMap;

use anyhow::Result;

use crate::gpu::{ConvTuneKey, GpuContext, Op, Tensor};
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weights, conv2d_forward, Conv2dShape, ConvPass, ConvTiles,
};

/// The cache file's name in the cache directory (`$ADAMATCH_DATA`, else the user cache
/// directory's `adamatch-wgpu`); in a browser, the `localStorage` key.
pub const CACHE_FILE: &str = "autotune-conv-tiles.json";

/// Dispatches of one candidate per timed compute pass, and timed passes per candidate (the
/// fastest counts): enough to rise above a pass's (or, on the wall clock, a submission's) fixed
/// cost on a GPU.
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
    /// How the candidates were timed: "gpu timestamps" or "wall clock" ("" when none was).
    pub clock: &'static str,
}

/// Every adapter's choices: adapter key -> (pass and shape -> tiles), all as text.
pub type Choices = BTreeMap<String, BTreeMap<String, String>>;

/// Where the choices are kept between runs.
pub trait ChoiceStore {
    /// Every adapter's choices; empty when there are none or they cannot be read (a lost
    /// cache only costs a retune; it never stops a run).
    fn load(&self) -> Choices;
    /// Replaces the stored choices with `choices`.
    fn save(&self, choices: &Choices) -> Result<()>;
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

/// Every pass of `passes` for every shape of `shapes`.
pub fn requests(shapes: &[Conv2dShape], passes: &[ConvPass]) -> Vec<(Conv2dShape, ConvPass)> {
    shapes
        .iter()
        .flat_map(|&s| passes.iter().map(move |&p| (s, p)))
        .collect()
}

/// Tunes every requested pass and shape that has no tiles yet on `ctx`'s device: from `store`
/// where it has an entry for this adapter, else by timing each candidate (and then adding the
/// choices to `store`). `now` is a clock in seconds (the wall clock's fallback).
pub async fn tune(
    ctx: &GpuContext,
    requests: &[(Conv2dShape, ConvPass)],
    store: &dyn ChoiceStore,
    now: fn() -> f64,
) -> Result<TuneSummary> {
    let mut summary = TuneSummary::default();
    if !ctx.profile.tunes_tiles() {
        return Ok(summary);
    }
    let mut todo: Vec<(ConvTuneKey, Conv2dShape)> = Vec::new();
    for &(s, pass) in requests {
        let key = s.tune_key(pass);
        if ctx.tuned_tiles(&key).is_none() && !todo.iter().any(|(k, _)| *k == key) {
            todo.push((key, s));
        }
    }
    if todo.is_empty() {
        return Ok(summary);
    }
    let adapter = adapter_key(ctx);
    let cached = store.load().remove(&adapter).unwrap_or_default();
    let mut timed = Vec::new();
    let start = now();
    for (key, s) in todo {
        match cached.get(&key_text(&key)).and_then(|t| t.parse::<ConvTiles>().ok()) {
            Some(tiles) => {
                ctx.set_tuned_tiles(key, tiles);
                summary.cached += 1;
            }
            None => {
                let (tiles, clock) = fastest(ctx, key.0, &s, now).await?;
                ctx.set_tuned_tiles(key, tiles);
                timed.push((key_text(&key), tiles.to_string()));
                summary.clock = clock;
            }
        }
    }
    summary.timed = timed.len();
    summary.seconds = now() - start;
    if !timed.is_empty() {
        // Loaded again just before saving: another process may have added its own choices.
        let mut choices = store.load();
        choices.entry(adapter).or_default().extend(timed);
        store.save(&choices)?;
    }
    Ok(summary)
}

/// The candidate that runs `pass` of `s` fastest on `ctx`'s device ([`pick`]), and how it was
/// timed: by GPU timestamps where the device writes them, else by `now` around awaited
/// submissions.
async fn fastest(
    ctx: &GpuContext,
    pass: ConvPass,
    s: &Conv2dShape,
    now: fn() -> f64,
) -> Result<(ConvTiles, &'static str)> {
    let tensors = PassTensors::new(ctx, s);
    let mut timed = None;
    if ctx.timestamps {
        let times = candidate_times(ctx, &tensors, pass, s, None).await?;
        // Some drivers write zeros: then the wall clock decides.
        timed = times.iter().all(|t| t.is_finite()).then_some((times, "gpu timestamps"));
    }
    let (times, clock) = match timed {
        Some(t) => t,
        None => (candidate_times(ctx, &tensors, pass, s, Some(now)).await?, "wall clock"),
    };
    Ok((ConvTiles::ALL[pick(&times)], clock))
}

/// A candidate must beat the default tiles by this share of their time to replace them: on a
/// noisy device (a CPU adapter, a browser) a few percent is noise, and a choice within it would
/// as likely be slower.
const DEFAULT_MARGIN: f64 = 0.05;

/// The index of the fastest of `times` (one per candidate of [`ConvTiles::ALL`], the default
/// first), or 0 when none beats the default by [`DEFAULT_MARGIN`]; ties go to the earlier.
fn pick(times: &[f64]) -> usize {
    let best = (0..times.len()).fold(0, |b, i| if times[i] < times[b] { i } else { b });
    if times[best] < times[0] * (1.0 - DEFAULT_MARGIN) {
        best
    } else {
        0
    }
}

/// Each candidate's time for `pass` of `s`: after a warm-up, the fastest of [`TRIALS`] compute
/// passes of [`REPEATS`] dispatches, by GPU timestamps (infinite where they read zero) or, with
/// `wall_clock`, by that clock around awaited submissions. With timestamps every candidate
/// runs in one submission and one readback: in a browser each await costs a trip through the
/// page's event loop.
async fn candidate_times(
    ctx: &GpuContext,
    tensors: &PassTensors,
    pass: ConvPass,
    s: &Conv2dShape,
    wall_clock: Option<fn() -> f64>,
) -> Result<Vec<f64>> {
    let contexts: Vec<GpuContext> = ConvTiles::ALL.iter().map(|&t| ctx.with_conv_tiles(t)).collect();
    let ops: Vec<Vec<Op>> = contexts.iter().map(|c| tensors.ops(c, pass, s)).collect();
    let warm_up: Vec<&Op> = ops.iter().flatten().collect();
    ctx.run_async(&warm_up).await?;
    let repeated: Vec<Vec<&Op>> = ops
        .iter()
        .map(|o| (0..REPEATS).flat_map(|_| o.iter()).collect())
        .collect();
    let mut times = vec![f64::INFINITY; ops.len()];
    match wall_clock {
        None => {
            let trials: Vec<Vec<&Op>> = repeated.iter().flat_map(|r| vec![r.clone(); TRIALS]).collect();
            let measured = crate::timing::pass_times_ms(ctx, &trials).await?;
            for (i, t) in measured.into_iter().enumerate() {
                if t > 0.0 {
                    times[i / TRIALS] = times[i / TRIALS].min(t);
                }
            }
        }
        Some(now) => {
            for (time, r) in times.iter_mut().zip(&repeated) {
                for _ in 0..TRIALS {
                    let t = now();
                    ctx.run_async(r).await?;
                    *time = time.min(now() - t);
                }
            }
        }
    }
    Ok(times)
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

/// The choices in a JSON file, written atomically (natively: [`cache_path`]).
#[cfg(not(target_arch = "wasm32"))]
pub struct CacheFileStore<'a> {
    pub path: &'a std::path::Path,
}

#[cfg(not(target_arch = "wasm32"))]
impl ChoiceStore for CacheFileStore<'_> {
    fn load(&self) -> Choices {
        std::fs::read(self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, choices: &Choices) -> Result<()> {
        use anyhow::Context;
        let json = serde_json::to_vec_pretty(choices).expect("the choices are plain strings");
        crate::files::write_atomically(self.path, &json)
            .with_context(|| format!("saving the tuned tiles to {}", self.path.display()))
    }
}

/// The cache file's path.
#[cfg(not(target_arch = "wasm32"))]
pub fn cache_path() -> std::path::PathBuf {
    crate::data::download::resolve_data_dir(None).join(CACHE_FILE)
}

/// Tunes `passes` of every shape in `shapes` as [`tune`] does, with the choices in the cache
/// file (blocking).
#[cfg(not(target_arch = "wasm32"))]
pub fn tune_convolutions(ctx: &GpuContext, shapes: &[Conv2dShape], passes: &[ConvPass]) -> Result<TuneSummary> {
    tune_with_cache(ctx, shapes, passes, &cache_path())
}

/// [`tune_convolutions`] with the cache file at `path`.
#[cfg(not(target_arch = "wasm32"))]
pub fn tune_with_cache(
    ctx: &GpuContext,
    shapes: &[Conv2dShape],
    passes: &[ConvPass],
    path: &std::path::Path,
) -> Result<TuneSummary> {
    let store = CacheFileStore { path };
    pollster::block_on(tune(ctx, &requests(shapes, passes), &store, seconds_since_start))
}

/// Seconds since the first call (a monotonic clock).
#[cfg(not(target_arch = "wasm32"))]
fn seconds_since_start() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// Tunes the convolutions of `shapes` as [`tune_convolutions`] does, and says on stderr what
/// it timed; a failure is reported and leaves the default tiles (tuning is never worth failing
/// a run for).
#[cfg(not(target_arch = "wasm32"))]
pub fn tune_or_warn(ctx: &GpuContext, shapes: &[Conv2dShape], passes: &[ConvPass]) {
    match tune_convolutions(ctx, shapes, passes) {
        Ok(s) if s.timed > 0 => crate::errln!(
            "autotuned the tiled path's tiles for {} convolution passes in {:.1} s by {} (cached in {})",
            s.timed,
            s.seconds,
            s.clock,
            cache_path().display()
        ),
        Ok(_) => {}
        Err(e) => crate::errln!("note: autotuning the convolution tiles failed ({e:#}); the untuned ones stay in use"),
    }
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn a_candidate_replaces_the_default_only_when_clearly_faster() {
        assert_eq!(pick(&[10.0, 9.6, 9.8]), 0, "4% faster is within the margin");
        assert_eq!(pick(&[10.0, 9.6, 9.4]), 2, "6% faster replaces it");
        assert_eq!(pick(&[10.0, 9.0, 9.0]), 1, "ties go to the earlier");
        assert_eq!(pick(&[f64::INFINITY, 3.0]), 1);
        assert_eq!(pick(&[10.0, 11.0]), 0);
    }
}
