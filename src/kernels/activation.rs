//! Rust side of `shaders/activation.wgsl`: standalone (leaky) ReLU.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/activation.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!("activation.wgsl", &[("WG", WG)], &[Params::WGSL]);

const WG: u32 = 256;

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        len: u32,
        slope: f32,
        /// 1: dx += grad instead of dx = grad (several consumers of one tensor).
        accumulate: u32,
        _pad: u32,
    }
}

/// `y = leaky_relu(x, slope)`; `x` and `y` have the same number of elements.
pub fn activation_forward(ctx: &GpuContext, x: &Tensor, y: &Tensor, slope: f32) -> Op {
    assert_eq!(x.len(), y.len(), "activation_forward: x and y differ in size");
    let p = Params {
        len: x.len() as u32,
        slope,
        accumulate: 0,
        _pad: 0,
    };
    Op::new(
        ctx,
        &SHADER,
        "activation_forward",
        Some(bytemuck::bytes_of(&p)),
        &[("x", x), ("y", y)],
        grid_1d(x.len(), WG),
    )
}

/// `dx (+)= dy * leaky_relu'(x)`, using the activation's input `x`.
pub fn activation_backward(ctx: &GpuContext, x: &Tensor, dy: &Tensor, dx: &Tensor, slope: f32, accumulate: bool) -> Op {
    assert_eq!(x.len(), dy.len(), "activation_backward: x and dy differ in size");
    assert_eq!(x.len(), dx.len(), "activation_backward: x and dx differ in size");
    let p = Params {
        len: x.len() as u32,
        slope,
        accumulate: accumulate as u32,
        _pad: 0,
    };
    Op::new(
        ctx,
        &SHADER,
        "activation_backward",
        Some(bytemuck::bytes_of(&p)),
        &[("x", x), ("dy", dy), ("dx", dx)],
        grid_1d(x.len(), WG),
    )
}
