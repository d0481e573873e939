//! Rust side of `shaders/dense.wgsl`: fully connected layer in Keras layout,
//! `x: [rows, in_f]`, `w: [in_f, out_f]`, `b: [out_f]`, `y: [rows, out_f]`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{GpuContext, Op, Tensor, MAX_WORKGROUPS_PER_DIM};
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/dense.wgsl`, compiled with the constants and structs this file writes for it
/// (prepended by [`Shader::source`]).
pub static SHADER: Shader = shader_file!(
    "dense.wgsl",
    &[("TS", TILE as u32), ("BIAS_WG", BIAS_WG as u32)],
    &[Params::WGSL]
);

/// GEMM tile edge (workgroup is TILE x TILE).
const TILE: usize = 16;
const BIAS_WG: usize = 64;

wgsl_struct! {
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Params {
        rows: u32,
        in_f: u32,
        out_f: u32,
        /// 1: out += grad instead of out = grad (parameter gradients summed over passes).
        accumulate: u32,
    }
}

fn params(rows: usize, in_f: usize, out_f: usize, accumulate: bool) -> Params {
    for (what, v) in [
        ("rows * in_f", rows.checked_mul(in_f)),
        ("rows * out_f", rows.checked_mul(out_f)),
        ("in_f * out_f", in_f.checked_mul(out_f)),
    ] {
        assert!(
            v.is_some_and(|v| v <= u32::MAX as usize),
            "dense: {what} does not fit in u32"
        );
    }
    Params {
        rows: rows as u32,
        in_f: in_f as u32,
        out_f: out_f as u32,
        accumulate: accumulate as u32,
    }
}

/// Workgroups covering an `m x n` output with TILE x TILE tiles (x: n tiles, y: m tiles).
fn tiles(m: usize, n: usize) -> [u32; 3] {
    let (tx, ty) = (n.div_ceil(TILE), m.div_ceil(TILE));
    assert!(
        tx <= MAX_WORKGROUPS_PER_DIM as usize && ty <= MAX_WORKGROUPS_PER_DIM as usize,
        "dense: {m} x {n} output needs more than {MAX_WORKGROUPS_PER_DIM} tiles in one dimension"
    );
    if tx == 0 || ty == 0 {
        return [0, 1, 1];
    }
    [tx as u32, ty as u32, 1]
}

/// `y = x w + b`.
#[allow(clippy::too_many_arguments)]
pub fn dense_forward(
    ctx: &GpuContext,
    rows: usize,
    in_f: usize,
    out_f: usize,
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    y: &Tensor,
) -> Op {
    let p = params(rows, in_f, out_f, false);
    assert_eq!(x.len(), rows * in_f, "dense_forward: x size");
    assert_eq!(w.len(), in_f * out_f, "dense_forward: w size");
    assert_eq!(b.len(), out_f, "dense_forward: b size");
    assert_eq!(y.len(), rows * out_f, "dense_forward: y size");
    Op::new(
        ctx,
        &SHADER,
        "dense_forward",
        Some(bytemuck::bytes_of(&p)),
        &[("x", x), ("w", w), ("b", b), ("y", y)],
        tiles(rows, out_f),
    )
    .with_flops(2.0 * (rows * in_f * out_f) as f64)
}

/// Gradients of the dense layer, as three ops in this order:
/// `dx = dy w^T` (dx is overwritten), `dw (+)= x^T dy`, `db (+)= column sums of dy`;
/// `accumulate_params` applies to dw and db only. Every sum runs in a fixed order.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    ctx: &GpuContext,
    rows: usize,
    in_f: usize,
    out_f: usize,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dw: &Tensor,
    db: &Tensor,
    accumulate_params: bool,
) -> Vec<Op> {
    assert_eq!(x.len(), rows * in_f, "dense_backward: x size");
    assert_eq!(w.len(), in_f * out_f, "dense_backward: w size");
    assert_eq!(dy.len(), rows * out_f, "dense_backward: dy size");
    assert_eq!(dx.len(), rows * in_f, "dense_backward: dx size");
    assert_eq!(dw.len(), in_f * out_f, "dense_backward: dw size");
    assert_eq!(db.len(), out_f, "dense_backward: db size");
    let p_data = params(rows, in_f, out_f, false);
    let p_params = params(rows, in_f, out_f, accumulate_params);
    let gemm_flops = 2.0 * (rows * in_f * out_f) as f64;
    let data = Op::new(
        ctx,
        &SHADER,
        "dense_backward_data",
        Some(bytemuck::bytes_of(&p_data)),
        &[("w", w), ("dy", dy), ("dx", dx)],
        tiles(rows, in_f),
    )
    .with_flops(gemm_flops);
    let weights = Op::new(
        ctx,
        &SHADER,
        "dense_backward_weights",
        Some(bytemuck::bytes_of(&p_params)),
        &[("x", x), ("dy", dy), ("dw", dw)],
        tiles(in_f, out_f),
    )
    .with_flops(gemm_flops);
    let bias_groups = out_f.div_ceil(BIAS_WG);
    assert!(bias_groups <= MAX_WORKGROUPS_PER_DIM as usize);
    let bias = Op::new(
        ctx,
        &SHADER,
        "dense_backward_bias",
        Some(bytemuck::bytes_of(&p_params)),
        &[("dy", dy), ("db", db)],
        [bias_groups as u32, 1, 1],
    )
    .with_flops((rows * out_f) as f64);
    vec![data, weights, bias]
}
