use adamatch_wgpu::gpu::Tensor;
use adamatch_wgpu::kernels::softmax_ce::{softmax_ce_backward, softmax_ce_forward, Targets};

use crate::ctx;
use crate::reference::softmax_ce::{self as cpu, RefTargets};
use crate::reference::{assert_close, random_vec, to_f64};

// Losses are sums of non-negative f32 terms (up to ~160 each with logits of +-80): relative 1e-4.
const LOSS_RTOL: f64 = 1e-4;
const LOSS_ATOL: f64 = 1e-5;
// Gradients are O(|scale| * weight * sum t); p * sum_t - t can cancel to ~f32 epsilon.
const GRAD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-6;

// (rows, classes): one row, odd sizes, the network's shape, rows beyond one reduction workgroup
// (5000), many classes, and a single class.
const SHAPES: &[(usize, usize)] = &[(1, 10), (5, 7), (300, 10), (5000, 10), (3, 1024), (4, 1)];

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

struct Case {
    logits: Vec<f32>,
    labels: Vec<u32>,
    soft: Vec<f32>,
    weights: Vec<f32>,
    scale: f32,
}

/// Logits in [-80, 80); labels in range except a "no target" row; soft targets in [0, 1) not
/// summing to 1; weights with zeros (masks) and values in [0, 2).
fn case(rows: usize, classes: usize) -> Case {
    let logits: Vec<f32> = random_vec(1, rows * classes).iter().map(|v| v * 80.0).collect();
    let mut labels: Vec<u32> = random_vec(2, rows)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * classes as f32) as u32).min(classes as u32 - 1))
        .collect();
    if rows > 2 {
        labels[2] = classes as u32; // no target
    }
    let soft: Vec<f32> = random_vec(3, rows * classes).iter().map(|v| (v + 1.0) * 0.5).collect();
    let weights: Vec<f32> = random_vec(4, rows)
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 3 == 1 { 0.0 } else { v + 1.0 })
        .collect();
    Case {
        logits,
        labels,
        soft,
        weights,
        scale: 0.5 / rows as f32,
    }
}

/// A case's inputs on the GPU.
struct GpuCase {
    logits: Tensor,
    labels: Tensor,
    soft: Tensor,
    weights: Tensor,
    soft64: Vec<f64>,
}

impl GpuCase {
    fn new(c: &Case, rows: usize, classes: usize) -> GpuCase {
        let ctx = ctx();
        GpuCase {
            logits: Tensor::from_f32(ctx, "logits", &[rows, classes], &c.logits),
            labels: Tensor::from_u32(ctx, "labels", &[rows], &c.labels),
            soft: Tensor::from_f32(ctx, "soft", &[rows, classes], &c.soft),
            weights: Tensor::from_f32(ctx, "w", &[rows], &c.weights),
            soft64: to_f64(&c.soft),
        }
    }

    /// Both kinds of targets, for the kernels and for the reference.
    fn targets<'a>(&'a self, c: &'a Case) -> [(&'static str, Targets<'a>, RefTargets<'a>); 2] {
        [
            ("hard", Targets::Hard(&self.labels), RefTargets::Hard(&c.labels)),
            ("soft", Targets::Soft(&self.soft), RefTargets::Soft(&self.soft64)),
        ]
    }
}

#[test]
fn forward_matches_reference_hard_and_soft() {
    let ctx = ctx();
    for &(rows, classes) in SHAPES {
        let c = case(rows, classes);
        let g = GpuCase::new(&c, rows, classes);
        let (logits, weights) = (&g.logits, &g.weights);
        for (name, targets, ref_targets) in g.targets(&c) {
            let what = format!("softmax ce forward {name} {rows}x{classes}");
            let row_loss = Tensor::from_f32(ctx, "row_loss", &[rows], &vec![f32::NAN; rows]);
            let loss = Tensor::from_f32(ctx, "loss", &[1], &[f32::NAN]);
            let ops = softmax_ce_forward(ctx, rows, classes, logits, targets, weights, c.scale, &row_loss, &loss);
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            let (want_rows, want_loss) = cpu::softmax_ce_forward(
                &to_f64(&c.logits),
                rows,
                classes,
                &ref_targets,
                &to_f64(&c.weights),
                c.scale as f64,
            );
            let got_rows = row_loss.read_f32(ctx).unwrap();
            let got_loss = loss.read_f32(ctx).unwrap();
            assert_close(
                &format!("{what} row losses"),
                &got_rows,
                &want_rows,
                LOSS_RTOL,
                LOSS_ATOL,
            );
            assert_close(&format!("{what} loss"), &got_loss, &[want_loss], LOSS_RTOL, LOSS_ATOL);
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            assert!(
                same_bits(&got_rows, &row_loss.read_f32(ctx).unwrap())
                    && same_bits(&got_loss, &loss.read_f32(ctx).unwrap()),
                "{what}: not deterministic"
            );
        }
    }
}

#[test]
fn backward_matches_reference_hard_and_soft() {
    let ctx = ctx();
    for &(rows, classes) in SHAPES {
        let c = case(rows, classes);
        let g = GpuCase::new(&c, rows, classes);
        let (logits, weights) = (&g.logits, &g.weights);
        let d0 = random_vec(5, rows * classes);
        for (name, targets, ref_targets) in g.targets(&c) {
            let want = cpu::softmax_ce_backward(
                &to_f64(&c.logits),
                rows,
                classes,
                &ref_targets,
                &to_f64(&c.weights),
                c.scale as f64,
            );
            let mut first = None;
            for accumulate in [false, true, true] {
                let what = format!("softmax ce backward {name} {rows}x{classes} accumulate={accumulate}");
                let dlogits = Tensor::from_f32(ctx, "dlogits", &[rows, classes], &d0);
                let op = softmax_ce_backward(
                    ctx, rows, classes, logits, targets, weights, c.scale, &dlogits, accumulate,
                );
                ctx.run(&[&op]).unwrap();
                let got = dlogits.read_f32(ctx).unwrap();
                let expect: Vec<f64> = if accumulate {
                    want.iter().zip(&d0).map(|(g, &d)| g + d as f64).collect()
                } else {
                    want.clone()
                };
                assert_close(&what, &got, &expect, GRAD_RTOL, GRAD_ATOL);
                if !accumulate {
                    // Masked rows and "no target" rows get exactly zero gradient.
                    for r in 0..rows {
                        let no_target = name == "hard" && c.labels[r] as usize >= classes;
                        if c.weights[r] == 0.0 || no_target {
                            assert!(
                                got[r * classes..(r + 1) * classes].iter().all(|&g| g == 0.0),
                                "{what}: row {r} should have zero gradient"
                            );
                        }
                    }
                } else {
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert!(same_bits(f, &got), "{what}: not deterministic"),
                    }
                }
            }
        }
    }
}

/// A row whose logits are all equal and huge, and rows with extreme gaps, stay finite and exact.
#[test]
fn extreme_logits_are_stable() {
    let ctx = ctx();
    let (rows, classes) = (3, 4);
    let logits_v: Vec<f32> = vec![
        1e4, 1e4, 1e4, 1e4, // uniform: loss = ln 4
        -1e4, 1e4, 0.0, 0.0, // target -1e4 against 1e4: loss = 2e4
        88.0, -88.0, 88.0, -88.0, // ln(2) within rounding
    ];
    let labels_v = [2u32, 0, 0];
    let weights_v = [1.0f32; 3];
    let logits = Tensor::from_f32(ctx, "logits", &[rows, classes], &logits_v);
    let labels = Tensor::from_u32(ctx, "labels", &[rows], &labels_v);
    let weights = Tensor::from_f32(ctx, "w", &[rows], &weights_v);
    let row_loss = Tensor::zeros(ctx, "row_loss", &[rows]);
    let loss = Tensor::zeros(ctx, "loss", &[1]);
    let dlogits = Tensor::zeros(ctx, "dlogits", &[rows, classes]);
    let mut ops = softmax_ce_forward(
        ctx,
        rows,
        classes,
        &logits,
        Targets::Hard(&labels),
        &weights,
        1.0,
        &row_loss,
        &loss,
    );
    ops.push(softmax_ce_backward(
        ctx,
        rows,
        classes,
        &logits,
        Targets::Hard(&labels),
        &weights,
        1.0,
        &dlogits,
        false,
    ));
    ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
    let l64 = to_f64(&logits_v);
    let t = RefTargets::Hard(&labels_v);
    let (want_rows, want_loss) = cpu::softmax_ce_forward(&l64, rows, classes, &t, &[1.0; 3], 1.0);
    let want_d = cpu::softmax_ce_backward(&l64, rows, classes, &t, &[1.0; 3], 1.0);
    assert_close(
        "extreme row losses",
        &row_loss.read_f32(ctx).unwrap(),
        &want_rows,
        1e-6,
        1e-6,
    );
    assert_close("extreme loss", &loss.read_f32(ctx).unwrap(), &[want_loss], 1e-6, 1e-6);
    assert_close("extreme dlogits", &dlogits.read_f32(ctx).unwrap(), &want_d, 1e-6, 1e-6);
}

/// The reference backward is the gradient of the reference loss (f64 central differences), for
/// hard targets (one "no target" row) and soft targets not summing to 1, with a zero weight.
#[test]
fn reference_backward_matches_finite_differences() {
    let (rows, classes) = (4, 5);
    let logits: Vec<f64> = to_f64(&random_vec(51, rows * classes))
        .iter()
        .map(|v| 3.0 * v)
        .collect();
    let labels = [3u32, 0, 5, 4];
    let soft: Vec<f64> = to_f64(&random_vec(52, rows * classes))
        .iter()
        .map(|v| (v + 1.0) * 0.5)
        .collect();
    let weights = [1.0, 0.0, 0.7, 1.6];
    let scale = 0.37;
    for targets in [RefTargets::Hard(&labels), RefTargets::Soft(&soft)] {
        let d = cpu::softmax_ce_backward(&logits, rows, classes, &targets, &weights, scale);
        let loss = |z: &[f64]| cpu::softmax_ce_forward(z, rows, classes, &targets, &weights, scale).1;
        let eps = 1e-6;
        for i in 0..logits.len() {
            let (mut zp, mut zm) = (logits.clone(), logits.clone());
            zp[i] += eps;
            zm[i] -= eps;
            let fd = (loss(&zp) - loss(&zm)) / (2.0 * eps);
            assert!(
                (fd - d[i]).abs() < 1e-7,
                "softmax ce reference d[{i}]: analytic {} vs finite difference {fd}",
                d[i]
            );
        }
    }
    // Soft one-hot targets give the same losses as hard labels.
    let one_hot: Vec<f64> = (0..rows * classes)
        .map(|i| (labels[i / classes] as usize == i % classes) as u8 as f64)
        .collect();
    let hard = cpu::softmax_ce_forward(&logits, rows, classes, &RefTargets::Hard(&labels), &weights, scale);
    let soft = cpu::softmax_ce_forward(&logits, rows, classes, &RefTargets::Soft(&one_hot), &weights, scale);
    assert_eq!(hard, soft);
}
