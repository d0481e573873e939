//! `adamatch-wgpu bench --step`: the whole AdaMatch (or source-only) training step of a preset,
//! exactly as `train` runs it ([`Trainer::step_with`]), on one synthetic batch drawn once (data
//! loading is not timed).
//!
//! Reports the step time, images/s, effective GFLOP/s (the FLOPs of the step's ops), the GPU
//! memory the trainer allocated, a per-family and per-kernel breakdown from a separate profiling
//! pass, and the main (joint) pass's forward+backward timed alone for comparison.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::time_ops;
use crate::data::synth::{SynthDomain, SynthStream};
use crate::gpu::{GpuContext, Op};
use crate::train::config::{Algorithm, TrainConfig};
use crate::train::trainer::Trainer;

#[derive(Clone, Debug)]
pub struct StepBenchOptions {
    pub config: TrainConfig,
    /// Untimed steps first (the first one also builds the ops and compiles the pipelines).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Time every op of one step on its own (the per-family and per-kernel tables).
    pub profile: bool,
    /// Timed repetitions of the main pass's forward+backward alone (0: skip).
    pub engine_reps: usize,
}

/// One row of the per-family or per-kernel table.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub name: String,
    pub calls: usize,
    pub ms: f64,
    /// Share of the profiled step time.
    pub share: f64,
    pub gflop: f64,
    pub gflops: f64,
}

/// The main pass's forward+backward alone, on the trainer's own ops and buffers.
#[derive(Clone, Debug, Serialize)]
pub struct EngineComparison {
    /// Images of the main pass (the joint batch for AdaMatch).
    pub batch: usize,
    /// Fastest of the repetitions.
    pub pass_ms: f64,
    pub gflop: f64,
    pub gflops: f64,
    /// Step GFLOP/s over the engine's: how much of the engine's throughput the whole step keeps.
    pub throughput_ratio: f64,
    /// Engine pass time over step time: the share of the step the main pass accounts for.
    pub time_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub adapter: String,
    /// The convolution path every conv2d ran (`--conv-path`, or the adapter's own).
    pub conv_path: String,
    /// The tiled path's tiles (`--conv-tiles`), when conv2d ran that path.
    pub conv_tiles: Option<String>,
    pub preset: String,
    pub algorithm: String,
    pub network: String,
    /// Source images per step (B) and target images per step (uratio * B).
    pub source_batch: usize,
    pub target_batch: usize,
    /// B + uratio * B: the images one step consumes.
    pub images_per_step: usize,
    /// Rows of the main pass (both views of every image for AdaMatch).
    pub joint_batch: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    /// Every timed step (ms, wall clock from upload to completion).
    pub step_times_ms: Vec<f64>,
    /// Fastest timed step; images/s and GFLOP/s below use it.
    pub step_ms: f64,
    /// CPU seconds this process used in the cheapest timed step, all threads (Linux; a CPU
    /// adapter's worker threads are the process's own): a measure of the work that other load on
    /// the machine disturbs less than wall time. On an idle machine with C cores, step_ms is
    /// about 1000 * step_cpu_s / C.
    pub step_cpu_s: Option<f64>,
    pub step_ms_median: f64,
    pub images_per_s: f64,
    /// Sum of the FLOPs of the step's ops (convolutions and dense layers; multiply-add = 2).
    pub step_gflop: f64,
    pub gflops: f64,
    /// Bytes of every GPU buffer the trainer allocated (parameters, gradients, optimizer state,
    /// EMA, activations, scratch): the step's peak, since nothing is allocated per step.
    pub gpu_memory_bytes: u64,
    pub gpu_memory_mib: f64,
    /// Total loss after the timed steps (finite on a healthy step).
    pub loss: f32,
    /// 1, 5 and 15 minute load averages of the host when the timing ended (Linux).
    pub host_load: Option<[f64; 3]>,
    /// "gpu timestamps" (each op in its own compute pass, one submission) or "wall clock"
    /// (each op in its own submission); empty without a profile.
    pub kernel_timing: String,
    /// Sum of the per-op times of the profiled step.
    pub profile_total_ms: f64,
    pub ops_per_step: usize,
    /// By kernel family (conv2d split into forward, backward data, backward weights), slowest first.
    pub families: Vec<ProfileRow>,
    /// By step phase, in order.
    pub phases: Vec<ProfileRow>,
    /// By shader entry point, slowest first.
    pub kernels: Vec<ProfileRow>,
    pub engine: Option<EngineComparison>,
}

/// The family of an op for the report: conv2d's three passes apart, else the shader file.
fn family(op: &Op) -> String {
    let (file, entry) = op.label.split_once("::").unwrap_or(("", &op.label));
    let stem = file.trim_end_matches(".wgsl");
    // conv2d.wgsl and conv2d_subgroup.wgsl: one family per pass.
    if stem.starts_with("conv2d") {
        for pass in ["backward_data", "backward_weights"] {
            if entry.contains(pass) {
                return format!("conv2d {}", pass.replace('_', " "));
            }
        }
        return "conv2d forward".into();
    }
    stem.to_string()
}

fn entry(op: &Op) -> String {
    op.label.split("::").last().unwrap_or(&op.label).to_string()
}

/// CPU seconds used so far by every thread of this process (Linux only).
pub fn process_cpu_s() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// The 1, 5, 15 minute load averages (Linux only).
pub fn host_load() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = s.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

fn rows(groups: Vec<(String, usize, f64, f64)>, total_ms: f64) -> Vec<ProfileRow> {
    groups
        .into_iter()
        .map(|(name, calls, ms, flops)| ProfileRow {
            name,
            calls,
            ms,
            share: if total_ms > 0.0 { ms / total_ms } else { 0.0 },
            gflop: flops / 1e9,
            gflops: if ms > 0.0 { flops / (ms * 1e6) } else { 0.0 },
        })
        .collect()
}

/// Groups (key, ms, flops) triples by key; slowest first unless `keep_order`.
fn group(items: impl Iterator<Item = (String, f64, f64)>, keep_order: bool) -> Vec<(String, usize, f64, f64)> {
    let mut order = Vec::new();
    let mut map: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for (k, ms, fl) in items {
        let e = map.entry(k.clone()).or_insert_with(|| {
            order.push(k);
            (0, 0.0, 0.0)
        });
        e.0 += 1;
        e.1 += ms;
        e.2 += fl;
    }
    let mut out: Vec<_> = order
        .into_iter()
        .map(|k| {
            let (c, ms, fl) = map[&k];
            (k, c, ms, fl)
        })
        .collect();
    if !keep_order {
        out.sort_by(|a, b| b.2.total_cmp(&a.2));
    }
    out
}

pub fn run(ctx: &GpuContext, opts: &StepBenchOptions) -> Result<StepReport> {
    // The step of the run's algorithm: a source-only phase first would time source-only steps.
    let cfg = &TrainConfig {
        source_steps: 0,
        ..opts.config.clone()
    };
    let mem_before = ctx.allocated_bytes();
    let mut trainer = Trainer::new(ctx, cfg.clone())?;
    // One synthetic batch, drawn once and replayed: the host's data work is not what is timed.
    let size = cfg.network.image_size;
    let source = SynthStream::train(SynthDomain::Digits, cfg.seed).with_size(size);
    let target = SynthStream::train(SynthDomain::House, cfg.seed).with_size(size);
    let batch = trainer.draw_batch(&source, &target)?;

    for _ in 0..opts.warmup.max(1) {
        trainer.step_with(ctx, &batch)?;
        ctx.wait()?;
    }
    let gpu_memory_bytes = ctx.allocated_bytes() - mem_before;
    let mut step_times_ms = Vec::with_capacity(opts.steps);
    let mut step_cpu_s: Option<f64> = None;
    for _ in 0..opts.steps.max(1) {
        let cpu0 = process_cpu_s();
        let t = Instant::now();
        trainer.step_with(ctx, &batch)?;
        ctx.wait()?;
        step_times_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (cpu0, process_cpu_s()) {
            step_cpu_s = Some(step_cpu_s.map_or(b - a, |c| c.min(b - a)));
        }
    }
    let host_load = host_load();
    let loss = trainer.metrics(ctx)?.loss.total_loss;
    let mut sorted = step_times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let step_ms = sorted[0];
    let step_ms_median = sorted[sorted.len() / 2];

    let phases = trainer.step_phases(ctx);
    let all: Vec<&Op> = phases.iter().flat_map(|p| p.ops.iter().copied()).collect();
    let step_flops: f64 = all.iter().map(|op| op.flops).sum();
    let ops_per_step = all.len();

    let (mut kernel_timing, mut profile_total_ms) = (String::new(), 0.0);
    let (mut families, mut phase_rows, mut kernels) = (Vec::new(), Vec::new(), Vec::new());
    if opts.profile {
        let (times, timing) = time_ops(ctx, &all)?;
        kernel_timing = timing.to_string();
        profile_total_ms = times.iter().sum();
        let timed: Vec<(&Op, f64)> = all.iter().copied().zip(times.iter().copied()).collect();
        families = rows(
            group(timed.iter().map(|(op, ms)| (family(op), *ms, op.flops)), false),
            profile_total_ms,
        );
        kernels = rows(
            group(timed.iter().map(|(op, ms)| (entry(op), *ms, op.flops)), false),
            profile_total_ms,
        );
        let mut i = 0;
        let mut per_phase = Vec::new();
        for p in &phases {
            let slice = &timed[i..i + p.ops.len()];
            i += p.ops.len();
            per_phase.push((
                p.name.to_string(),
                slice.len(),
                slice.iter().map(|(_, ms)| ms).sum::<f64>(),
                slice.iter().map(|(op, _)| op.flops).sum::<f64>(),
            ));
        }
        phase_rows = rows(per_phase, profile_total_ms);
    }

    let gflops = step_flops / (step_ms * 1e6);
    let engine = if opts.engine_reps > 0 {
        let main: Vec<&Op> = phases
            .iter()
            .filter(|p| p.main_pass)
            .flat_map(|p| p.ops.iter().copied())
            .collect();
        let flops: f64 = main.iter().map(|op| op.flops).sum();
        let mut best = f64::INFINITY;
        for _ in 0..opts.engine_reps {
            let t = Instant::now();
            ctx.run(&main)?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let engine_gflops = flops / (best * 1e6);
        Some(EngineComparison {
            batch: if cfg.algorithm == Algorithm::Adamatch {
                cfg.joint_batch()
            } else {
                2 * cfg.batch
            },
            pass_ms: best,
            gflop: flops / 1e9,
            gflops: engine_gflops,
            throughput_ratio: gflops / engine_gflops,
            time_share: best / step_ms,
        })
    } else {
        None
    };

    let n = &cfg.network;
    let adamatch = cfg.algorithm == Algorithm::Adamatch;
    let target_batch = if adamatch { cfg.target_batch() } else { 0 };
    let images_per_step = cfg.images_per_step();
    Ok(StepReport {
        adapter: ctx.adapter_summary(),
        conv_path: ctx.profile.conv_path.name().to_string(),
        conv_tiles: ctx.profile.tiles_in_use().map(|t| t.to_string()),
        preset: cfg.preset.clone(),
        algorithm: if adamatch { "adamatch" } else { "source-only" }.into(),
        network: format!(
            "WRN-{}-{} ({}) on {s}x{s} images",
            n.depth,
            n.width,
            n.activation.name(),
            s = n.image_size
        ),
        source_batch: cfg.batch,
        target_batch,
        images_per_step,
        joint_batch: if adamatch { cfg.joint_batch() } else { 2 * cfg.batch },
        warmup_steps: opts.warmup.max(1),
        steps: step_times_ms.len(),
        step_times_ms,
        step_ms,
        step_cpu_s,
        step_ms_median,
        images_per_s: images_per_step as f64 / (step_ms / 1e3),
        step_gflop: step_flops / 1e9,
        gflops,
        gpu_memory_bytes,
        gpu_memory_mib: gpu_memory_bytes as f64 / (1 << 20) as f64,
        loss,
        host_load,
        kernel_timing,
        profile_total_ms,
        ops_per_step,
        families,
        phases: phase_rows,
        kernels,
        engine,
    })
}

fn print_rows(title: &str, rows: &[ProfileRow], limit: usize) -> anyhow::Result<()> {
    crate::outln!(
        "{:<44} {:>6} {:>11} {:>7} {:>9} {:>9}",
        title,
        "calls",
        "ms",
        "share",
        "GFLOP",
        "GFLOP/s"
    )?;
    for r in rows.iter().take(limit) {
        let gf = if r.gflop > 0.0 {
            format!("{:.2}", r.gflops)
        } else {
            "-".into()
        };
        crate::outln!(
            "{:<44} {:>6} {:>11.2} {:>6.1}% {:>9.2} {:>9}",
            r.name,
            r.calls,
            r.ms,
            100.0 * r.share,
            r.gflop,
            gf
        )?;
    }
    if rows.len() > limit {
        crate::outln!("({} more)", rows.len() - limit)?;
    }
    crate::outln!()?;
    Ok(())
}

/// The human-readable report.
pub fn print_report(r: &StepReport) -> anyhow::Result<()> {
    crate::outln!("adapter: {}", r.adapter)?;
    match &r.conv_tiles {
        Some(tiles) => crate::outln!("convolution path: {} (tiles {tiles})", r.conv_path)?,
        None => crate::outln!("convolution path: {}", r.conv_path)?,
    }
    crate::outln!(
        "preset {} ({}), {}, {} source + {} target images per step, main pass {} rows",
        r.preset,
        r.algorithm,
        r.network,
        r.source_batch,
        r.target_batch,
        r.joint_batch
    )?;
    if let Some(l) = r.host_load {
        crate::outln!("host load average: {:.2} {:.2} {:.2}", l[0], l[1], l[2])?;
    }
    crate::outln!()?;
    if !r.families.is_empty() {
        crate::outln!(
            "one step profiled op by op ({}): {} ops, {:.1} ms in all",
            r.kernel_timing,
            r.ops_per_step,
            r.profile_total_ms
        )?;
        print_rows("family", &r.families, usize::MAX)?;
        print_rows("phase", &r.phases, usize::MAX)?;
        print_rows("kernel", &r.kernels, 20)?;
    }
    let times: Vec<String> = r.step_times_ms.iter().map(|t| format!("{t:.1}")).collect();
    crate::outln!("step times (ms): {}", times.join(", "))?;
    if let Some(c) = r.step_cpu_s {
        crate::outln!("CPU time of the cheapest step (all threads): {c:.1} s")?;
    }
    crate::outln!(
        "step: {:.1} ms (median {:.1}) = {:.1} images/s, {:.2} GFLOP/s ({:.1} GFLOP per step), GPU memory {:.1} MiB, loss {:.4}",
        r.step_ms, r.step_ms_median, r.images_per_s, r.gflops, r.step_gflop, r.gpu_memory_mib, r.loss
    )?;
    if let Some(e) = &r.engine {
        crate::outln!(
            "main pass forward+backward alone (batch {}): {:.1} ms, {:.2} GFLOP/s ({:.1} GFLOP); step/engine throughput {:.3}, engine share of step time {:.3}",
            e.batch, e.pass_ms, e.gflops, e.gflop, e.throughput_ratio, e.time_share
        )?;
    }
    Ok(())
}
