use adamatch_wgpu::gpu::Tensor;
use adamatch_wgpu::kernels::dense::{dense_backward, dense_forward};

use crate::ctx;
use crate::reference::{assert_close, dense as cpu, random_vec, to_f64};

// f32 dot products of K terms in [-1, 1): relative 1e-4, with an absolute floor that grows with
// K (rounding of a K-term sum whose partial sums reach ~sqrt(K)).
const RTOL: f64 = 1e-4;
fn atol(k: usize) -> f64 {
    1e-6 * (k as f64).max(8.0)
}

// (rows, in_f, out_f): odd sizes around the 16x16 tile, the network's shape, and a long
// reduction for dw (rows = 5000).
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 37, 10),
    (5, 37, 7),
    (300, 37, 10),
    (17, 5, 33),
    (64, 128, 10),
    (5000, 37, 7),
];

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn forward_matches_reference() {
    let ctx = ctx();
    for &(rows, in_f, out_f) in SHAPES {
        let xs = random_vec(1, rows * in_f);
        let ws = random_vec(2, in_f * out_f);
        let bs = random_vec(3, out_f);
        let x = Tensor::from_f32(ctx, "x", &[rows, in_f], &xs);
        let w = Tensor::from_f32(ctx, "w", &[in_f, out_f], &ws);
        let b = Tensor::from_f32(ctx, "b", &[out_f], &bs);
        let y = Tensor::from_f32(ctx, "y", &[rows, out_f], &vec![f32::NAN; rows * out_f]);
        let op = dense_forward(ctx, rows, in_f, out_f, &x, &w, &b, &y);
        assert_eq!(op.flops, 2.0 * (rows * in_f * out_f) as f64);
        ctx.run(&[&op]).unwrap();
        let got = y.read_f32(ctx).unwrap();
        let want = cpu::dense_forward(&to_f64(&xs), &to_f64(&ws), &to_f64(&bs), rows, in_f, out_f);
        let what = format!("dense forward {rows}x{in_f}x{out_f}");
        assert_close(&what, &got, &want, RTOL, atol(in_f));
        ctx.run(&[&op]).unwrap();
        assert!(same_bits(&got, &y.read_f32(ctx).unwrap()), "{what}: not deterministic");
    }
}

#[test]
fn backward_matches_reference_with_and_without_accumulate() {
    let ctx = ctx();
    for &(rows, in_f, out_f) in SHAPES {
        let xs = random_vec(4, rows * in_f);
        let ws = random_vec(5, in_f * out_f);
        let dys = random_vec(6, rows * out_f);
        let dw0 = random_vec(7, in_f * out_f);
        let db0 = random_vec(8, out_f);
        let (want_dx, want_dw, want_db) =
            cpu::dense_backward(&to_f64(&xs), &to_f64(&ws), &to_f64(&dys), rows, in_f, out_f);
        let x = Tensor::from_f32(ctx, "x", &[rows, in_f], &xs);
        let w = Tensor::from_f32(ctx, "w", &[in_f, out_f], &ws);
        let dy = Tensor::from_f32(ctx, "dy", &[rows, out_f], &dys);
        let plus = |g: &[f64], init: &[f32]| -> Vec<f64> { g.iter().zip(init).map(|(g, &i)| g + i as f64).collect() };
        let mut first_bits = None;
        for accumulate in [false, true, true] {
            // dx starts as garbage: it must be overwritten even when params accumulate.
            let dx = Tensor::from_f32(ctx, "dx", &[rows, in_f], &vec![1e30; rows * in_f]);
            let dw = Tensor::from_f32(ctx, "dw", &[in_f, out_f], &dw0);
            let db = Tensor::from_f32(ctx, "db", &[out_f], &db0);
            let ops = dense_backward(ctx, rows, in_f, out_f, &x, &w, &dy, &dx, &dw, &db, accumulate);
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            let what = format!("dense backward {rows}x{in_f}x{out_f} accumulate={accumulate}");
            let got_dx = dx.read_f32(ctx).unwrap();
            let got_dw = dw.read_f32(ctx).unwrap();
            let got_db = db.read_f32(ctx).unwrap();
            assert_close(&format!("{what} dx"), &got_dx, &want_dx, RTOL, atol(out_f));
            let (exp_dw, exp_db) = if accumulate {
                (plus(&want_dw, &dw0), plus(&want_db, &db0))
            } else {
                (want_dw.clone(), want_db.clone())
            };
            assert_close(&format!("{what} dw"), &got_dw, &exp_dw, RTOL, atol(rows));
            assert_close(&format!("{what} db"), &got_db, &exp_db, RTOL, atol(rows));
            // The two accumulate runs start from the same state: same bits.
            if accumulate {
                let bits = (got_dx, got_dw, got_db);
                match &first_bits {
                    None => first_bits = Some(bits),
                    Some(f) => assert!(
                        same_bits(&f.0, &bits.0) && same_bits(&f.1, &bits.1) && same_bits(&f.2, &bits.2),
                        "{what}: not deterministic"
                    ),
                }
            }
        }
    }
}

/// The reference backward is the gradient of L = sum(g * forward(x, w, b)) (f64 central
/// differences with respect to every input and parameter).
#[test]
fn reference_backward_matches_finite_differences() {
    let (rows, in_f, out_f) = (3, 4, 5);
    let x = to_f64(&random_vec(41, rows * in_f));
    let w = to_f64(&random_vec(42, in_f * out_f));
    let b = to_f64(&random_vec(43, out_f));
    let g = to_f64(&random_vec(44, rows * out_f));
    let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
        let y = cpu::dense_forward(x, w, b, rows, in_f, out_f);
        y.iter().zip(&g).map(|(a, b)| a * b).sum()
    };
    let (dx, dw, db) = cpu::dense_backward(&x, &w, &g, rows, in_f, out_f);
    let eps = 1e-6;
    let check = |name: &str, analytic: &[f64], f: &dyn Fn(usize, f64) -> f64| {
        for (i, &a) in analytic.iter().enumerate() {
            let fd = (f(i, eps) - f(i, -eps)) / (2.0 * eps);
            assert!(
                (fd - a).abs() < 1e-7,
                "dense reference {name}[{i}]: analytic {a} vs finite difference {fd}"
            );
        }
    };
    let bump = |v: &[f64], i: usize, d: f64| {
        let mut v = v.to_vec();
        v[i] += d;
        v
    };
    check("dx", &dx, &|i, d| loss(&bump(&x, i, d), &w, &b));
    check("dw", &dw, &|i, d| loss(&x, &bump(&w, i, d), &b));
    check("db", &db, &|i, d| loss(&x, &w, &bump(&b, i, d)));
}
