//! Rust side of `shaders/pool.wgsl`: global average pooling over NHWC activations with H*W
//! flattened, `x: [batch, hw, channels]` -> `y: [batch, channels]`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/pool.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!("pool.wgsl", &[("WG", WG)], &[Params::WGSL]);

const WG: u32 = 256;

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        batch: u32,
        hw: u32,
        channels: u32,
        /// 1: dx += grad instead of dx = grad (several consumers of one tensor).
        accumulate: u32,
    }
}

fn params(batch: usize, hw: usize, channels: usize, accumulate: bool) -> Params {
    assert!(hw > 0, "global_avg_pool: hw must be at least 1");
    assert!(
        batch
            .checked_mul(hw)
            .and_then(|v| v.checked_mul(channels))
            .is_some_and(|v| v <= u32::MAX as usize),
        "global_avg_pool: batch * hw * channels does not fit in u32"
    );
    Params {
        batch: batch as u32,
        hw: hw as u32,
        channels: channels as u32,
        accumulate: accumulate as u32,
    }
}

/// `y[n, c] = mean over p of x[n, p, c]`, summed in a fixed order.
pub fn global_avg_pool_forward(
    ctx: &GpuContext,
    batch: usize,
    hw: usize,
    channels: usize,
    x: &Tensor,
    y: &Tensor,
) -> Op {
    let p = params(batch, hw, channels, false);
    assert_eq!(x.len(), batch * hw * channels, "global_avg_pool_forward: x size");
    assert_eq!(y.len(), batch * channels, "global_avg_pool_forward: y size");
    Op::new(
        ctx,
        &SHADER,
        "global_avg_pool_forward",
        Some(bytemuck::bytes_of(&p)),
        &[("x", x), ("y", y)],
        grid_1d(batch * channels, WG),
    )
    .with_flops((batch * hw * channels) as f64)
}

/// `dx[n, p, c] (+)= dy[n, c] / hw`.
pub fn global_avg_pool_backward(
    ctx: &GpuContext,
    batch: usize,
    hw: usize,
    channels: usize,
    dy: &Tensor,
    dx: &Tensor,
    accumulate: bool,
) -> Op {
    let p = params(batch, hw, channels, accumulate);
    assert_eq!(dy.len(), batch * channels, "global_avg_pool_backward: dy size");
    assert_eq!(dx.len(), batch * hw * channels, "global_avg_pool_backward: dx size");
    Op::new(
        ctx,
        &SHADER,
        "global_avg_pool_backward",
        Some(bytemuck::bytes_of(&p)),
        &[("dy", dy), ("dx", dx)],
        grid_1d(batch * hw * channels, WG),
    )
    .with_flops((batch * hw * channels) as f64)
}
