//! Device time of ops: GPU timestamps written around compute passes, read back without
//! blocking, on any target (`bench`'s kernels natively, the autotuner's candidates natively and
//! in a browser that grants WebGPU's `timestamp-query`).

use anyhow::Result;

use crate::gpu::{GpuContext, Op};

/// Compute passes per timestamp query set (two queries each; wgpu allows 4,096 queries in a set).
pub const PASSES_PER_QUERY_SET: usize = 1024;

/// Milliseconds of device time of each of `passes` (at most [`PASSES_PER_QUERY_SET`]), each
/// recorded as its own compute pass between two timestamps, all in one submission. Needs
/// [`GpuContext::timestamps`]; some drivers write zeros (the caller decides what to do then).
pub async fn pass_times_ms(ctx: &GpuContext, passes: &[Vec<&Op>]) -> Result<Vec<f64>> {
    assert!(passes.len() <= PASSES_PER_QUERY_SET && ctx.timestamps);
    if passes.is_empty() {
        return Ok(Vec::new());
    }
    let count = (2 * passes.len()) as u32;
    let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count,
    });
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamp resolve"),
        size: count as u64 * 8,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    for (i, ops) in passes.iter().enumerate() {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            }),
        });
        for op in ops {
            op.record(&mut pass);
        }
    }
    encoder.resolve_query_set(&set, 0..count, &resolve, 0);
    ctx.queue.submit([encoder.finish()]);
    let bytes = ctx.read_bytes_async(&resolve, 0, count as u64 * 8).await?;
    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
    let period_ms = ctx.queue.get_timestamp_period() as f64 / 1e6;
    Ok(ticks
        .chunks(2)
        .map(|t| t[1].saturating_sub(t[0]) as f64 * period_ms)
        .collect())
}
