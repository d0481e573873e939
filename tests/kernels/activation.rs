use adamatch_wgpu::gpu::Tensor;
use adamatch_wgpu::kernels::activation::{activation_backward, activation_forward};

use crate::ctx;
use crate::reference::{activation as cpu, assert_close, random_vec, to_f64};

// Elementwise, so f32 results must match the f64 reference to rounding.
const RTOL: f64 = 1e-6;

#[test]
fn forward_and_backward_match_reference() {
    let ctx = ctx();
    for (len, slope) in [(1usize, 0.0f32), (257, 0.1), (70_001, 0.0), (1000, 0.1)] {
        let xs = random_vec(len as u64, len);
        let dys = random_vec(len as u64 + 1, len);
        let dx0 = random_vec(len as u64 + 2, len);
        let x = Tensor::from_f32(ctx, "x", &[len], &xs);
        let y = Tensor::zeros(ctx, "y", &[len]);
        let dy = Tensor::from_f32(ctx, "dy", &[len], &dys);
        let dx = Tensor::from_f32(ctx, "dx", &[len], &dx0);
        let fwd = activation_forward(ctx, &x, &y, slope);
        let bwd = activation_backward(ctx, &x, &dy, &dx, slope, true);
        ctx.run(&[&fwd, &bwd]).unwrap();

        let want_y = cpu::activation_forward(&to_f64(&xs), slope as f64);
        assert_close(
            &format!("leaky relu forward len {len}"),
            &y.read_f32(ctx).unwrap(),
            &want_y,
            RTOL,
            0.0,
        );
        let g = cpu::activation_backward(&to_f64(&xs), &to_f64(&dys), slope as f64);
        let want_dx: Vec<f64> = g.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
        assert_close(
            &format!("leaky relu backward (accumulate) len {len}"),
            &dx.read_f32(ctx).unwrap(),
            &want_dx,
            RTOL,
            1e-7,
        );
    }
}
