//! `adamatch-wgpu bench`: per-kernel times at the network's real shapes and the whole
//! training-mode forward+backward pass.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::gpu::{GpuContext, Op};
use crate::network::{Pass, WideResNet, WideResNetConfig, Workspace};
use crate::timing::{pass_times_ms, PASSES_PER_QUERY_SET};

pub mod step;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub config: WideResNetConfig,
    pub batch: usize,
    /// Timed repetitions of the whole pass (after one warm-up).
    pub reps: usize,
}

#[derive(Debug, Serialize)]
pub struct KernelRow {
    pub kernel: String,
    pub shape: String,
    pub calls: usize,
    pub ms: f64,
    pub gflops: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    /// The convolution path every conv2d ran (`--conv-path`, or the adapter's own).
    pub conv_path: String,
    /// The tiled path's tiles (`--conv-tiles`), when conv2d ran that path.
    pub conv_tiles: Option<String>,
    /// "gpu timestamps" or "wall clock".
    pub kernel_timing: String,
    pub network: String,
    pub batch: usize,
    pub kernels: Vec<KernelRow>,
    /// Sum of the per-kernel times.
    pub kernels_total_ms: f64,
    /// Median wall time of one forward+backward pass.
    pub pass_ms: f64,
    pub pass_images_per_s: f64,
    pub pass_gflops: f64,
    /// FLOPs of one forward+backward pass (3x the forward's conv and dense FLOPs).
    pub pass_gflop: f64,
}

/// Times each op of `ops`: GPU timestamps around each op's own compute pass where the adapter
/// has them, otherwise the wall time of submitting it alone and waiting.
pub(crate) fn time_ops(ctx: &GpuContext, ops: &[&Op]) -> Result<(Vec<f64>, &'static str)> {
    if ctx.timestamps && !ops.is_empty() {
        let mut times = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(PASSES_PER_QUERY_SET) {
            let passes: Vec<Vec<&Op>> = chunk.iter().map(|&op| vec![op]).collect();
            times.extend(pollster::block_on(pass_times_ms(ctx, &passes))?);
        }
        // Some drivers report all-zero timestamps; fall back to wall time then.
        if times.iter().any(|&t| t > 0.0) {
            return Ok((times, "gpu timestamps"));
        }
    }
    let mut times = Vec::with_capacity(ops.len());
    for op in ops {
        let t = Instant::now();
        ctx.run(&[op])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((times, "wall clock"))
}

pub fn run(ctx: &GpuContext, opts: &BenchOptions) -> Result<BenchReport> {
    let net = WideResNet::new(ctx, opts.config.clone(), 0)?;
    let mut ws = Workspace::new(ctx, &net, opts.batch, false);
    let s = opts.config.image_size;
    let input: Vec<f32> = (0..opts.batch * s * s * 3)
        .map(|i| ((i * 7919 % 255) as f32 - 127.5) / 128.0)
        .collect();
    ws.input.write_f32(ctx, &input);
    // A plausible logit gradient (softmax minus one-hot, scaled by 1/batch) drives backward.
    let classes = opts.config.num_classes;
    let d: Vec<f32> = (0..opts.batch * classes)
        .map(|i| if i % classes == (i / classes) % classes { -0.9 } else { 0.1 / classes as f32 } / opts.batch as f32)
        .collect();
    ws.d_logits.write_f32(ctx, &d);

    let fwd = Pass::ForwardTrain { update_running: true };
    let bwd = Pass::Backward {
        batch_stats: true,
        accumulate: false,
    };
    ws.ops(ctx, &net, fwd);
    ws.ops(ctx, &net, bwd);

    // Whole pass: one encoder, warm-up then timed repetitions.
    let run_pass = |ws: &mut Workspace| -> Result<f64> {
        let t = Instant::now();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            ws.record(ctx, &net, fwd, &mut pass);
            ws.record(ctx, &net, bwd, &mut pass);
        }
        ctx.queue.submit([encoder.finish()]);
        ctx.wait()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run_pass(&mut ws)?;
    let mut pass_times: Vec<f64> = (0..opts.reps.max(1))
        .map(|_| run_pass(&mut ws))
        .collect::<Result<_>>()?;
    pass_times.sort_by(f64::total_cmp);
    let pass_ms = pass_times[pass_times.len() / 2];

    let mut all: Vec<&Op> = ws.ops(ctx, &net, fwd).iter().collect();
    let (fwd_times, timing) = time_ops(ctx, &all)?;
    let mut rows: BTreeMap<(String, String), (usize, f64, f64)> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut add = |op: &Op, ms: f64| {
        let kernel = op.label.split("::").last().unwrap_or(&op.label).to_string();
        let key = (kernel, op.detail.clone());
        let e = rows.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            (0, 0.0, 0.0)
        });
        e.0 += 1;
        e.1 += ms;
        e.2 += op.flops;
    };
    for (op, ms) in all.iter().zip(&fwd_times) {
        add(op, *ms);
    }
    all = ws.ops(ctx, &net, bwd).iter().collect();
    let (bwd_times, _) = time_ops(ctx, &all)?;
    for (op, ms) in all.iter().zip(&bwd_times) {
        add(op, *ms);
    }
    let kernels: Vec<KernelRow> = order
        .into_iter()
        .map(|key| {
            let (calls, ms, flops) = rows[&key];
            KernelRow {
                kernel: key.0,
                shape: key.1.trim().to_string(),
                calls,
                ms,
                gflops: if ms > 0.0 { flops / (ms * 1e6) } else { 0.0 },
            }
        })
        .collect();
    let pass_gflop = 3.0 * net.forward_flops_per_image() * opts.batch as f64 / 1e9;
    Ok(BenchReport {
        adapter: ctx.adapter_summary(),
        conv_path: ctx.profile.conv_path.name().to_string(),
        conv_tiles: ctx.profile.tiles_in_use().map(|t| t.to_string()),
        kernel_timing: timing.to_string(),
        network: format!(
            "WRN-{}-{} ({})",
            opts.config.depth,
            opts.config.width,
            opts.config.activation.name()
        ),
        batch: opts.batch,
        kernels_total_ms: fwd_times.iter().chain(&bwd_times).sum(),
        kernels,
        pass_ms,
        pass_images_per_s: opts.batch as f64 / (pass_ms / 1e3),
        pass_gflops: pass_gflop / (pass_ms / 1e3),
        pass_gflop,
    })
}

/// The human-readable table.
pub fn print_report(r: &BenchReport) -> anyhow::Result<()> {
    crate::outln!("adapter: {}", r.adapter)?;
    match &r.conv_tiles {
        Some(tiles) => crate::outln!("convolution path: {} (tiles {tiles})", r.conv_path)?,
        None => crate::outln!("convolution path: {}", r.conv_path)?,
    }
    crate::outln!(
        "network: {}, batch {}, kernel timing by {}",
        r.network,
        r.batch,
        r.kernel_timing
    )?;
    crate::outln!()?;
    crate::outln!(
        "{:<34} {:<34} {:>5} {:>10} {:>9}",
        "kernel",
        "shape",
        "calls",
        "ms",
        "GFLOP/s"
    )?;
    for k in &r.kernels {
        let gf = if k.gflops > 0.0 {
            format!("{:.2}", k.gflops)
        } else {
            "-".into()
        };
        crate::outln!(
            "{:<34} {:<34} {:>5} {:>10.3} {:>9}",
            k.kernel,
            k.shape,
            k.calls,
            k.ms,
            gf
        )?;
    }
    crate::outln!(
        "{:<34} {:<34} {:>5} {:>10.3}",
        "sum of kernels",
        "",
        "",
        r.kernels_total_ms
    )?;
    crate::outln!()?;
    crate::outln!(
        "forward+backward (training mode): {:.1} ms per batch of {} = {:.1} images/s, {:.2} GFLOP/s ({:.1} GFLOP per pass)",
        r.pass_ms, r.batch, r.pass_images_per_s, r.pass_gflops, r.pass_gflop
    )?;
    Ok(())
}
