use adamatch_wgpu::gpu::Tensor;
use adamatch_wgpu::kernels::pool::{global_avg_pool_backward, global_avg_pool_forward};

use crate::ctx;
use crate::reference::{assert_close, pool as cpu, random_vec, to_f64};

// A mean of <= 64 values in [-1, 1) summed in f32: rounding error well below 1e-6.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

// (batch, hw, channels): odd sizes, one element, and the network's shape.
const SHAPES: &[(usize, usize, usize)] = &[(3, 5, 13), (1, 1, 1), (7, 9, 17), (4, 64, 128)];

#[test]
fn forward_matches_reference() {
    let ctx = ctx();
    for &(batch, hw, c) in SHAPES {
        let xs = random_vec(11, batch * hw * c);
        let x = Tensor::from_f32(ctx, "x", &[batch, hw, c], &xs);
        let y = Tensor::from_f32(ctx, "y", &[batch, c], &vec![f32::NAN; batch * c]);
        let op = global_avg_pool_forward(ctx, batch, hw, c, &x, &y);
        ctx.run(&[&op]).unwrap();
        let got = y.read_f32(ctx).unwrap();
        let want = cpu::global_avg_pool_forward(&to_f64(&xs), batch, hw, c);
        assert_close(&format!("pool forward {batch}x{hw}x{c}"), &got, &want, RTOL, ATOL);
        // Bitwise determinism: a second run gives the same bits.
        ctx.run(&[&op]).unwrap();
        let again = y.read_f32(ctx).unwrap();
        assert!(
            got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
            "pool forward {batch}x{hw}x{c} is not deterministic"
        );
    }
}

#[test]
fn backward_matches_reference_with_and_without_accumulate() {
    let ctx = ctx();
    for &(batch, hw, c) in SHAPES {
        let dys = random_vec(21, batch * c);
        let dx0 = random_vec(22, batch * hw * c);
        let want = cpu::global_avg_pool_backward(&to_f64(&dys), batch, hw, c);
        let dy = Tensor::from_f32(ctx, "dy", &[batch, c], &dys);
        for accumulate in [false, true] {
            let dx = Tensor::from_f32(ctx, "dx", &[batch, hw, c], &dx0);
            let op = global_avg_pool_backward(ctx, batch, hw, c, &dy, &dx, accumulate);
            ctx.run(&[&op]).unwrap();
            let got = dx.read_f32(ctx).unwrap();
            let want: Vec<f64> = if accumulate {
                want.iter().zip(&dx0).map(|(g, &d)| g + d as f64).collect()
            } else {
                want.clone()
            };
            assert_close(
                &format!("pool backward {batch}x{hw}x{c} accumulate={accumulate}"),
                &got,
                &want,
                RTOL,
                ATOL,
            );
        }
    }
}

/// The reference backward is the gradient of L = sum(g * forward(x)) (f64 central differences).
#[test]
fn reference_backward_matches_finite_differences() {
    let (batch, hw, c) = (2, 3, 4);
    let x = to_f64(&random_vec(31, batch * hw * c));
    let g = to_f64(&random_vec(32, batch * c));
    let loss = |x: &[f64]| -> f64 {
        let y = cpu::global_avg_pool_forward(x, batch, hw, c);
        y.iter().zip(&g).map(|(a, b)| a * b).sum()
    };
    let dx = cpu::global_avg_pool_backward(&g, batch, hw, c);
    let eps = 1e-6;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += eps;
        xm[i] -= eps;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * eps);
        assert!(
            (fd - dx[i]).abs() < 1e-8,
            "pool reference dx[{i}]: analytic {} vs finite difference {fd}",
            dx[i]
        );
    }
}
