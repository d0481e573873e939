//! The FixMatch loss on the GPU against the f64 reference, on odd sizes (target rows across more
//! than one 64-wide workgroup), with masks of both values; and the reference's gradient against
//! finite differences.

use adamatch_wgpu::gpu::{GpuContext, Tensor};
use adamatch_wgpu::kernels::adamatch::{
    METRIC_C_TAU, METRIC_MASK_RATE, METRIC_MU, METRIC_NAMES, METRIC_SOURCE_LOSS, METRIC_TARGET_LOSS, METRIC_TOTAL_LOSS,
};
use adamatch_wgpu::kernels::fixmatch::{FixMatchLoss, FixMatchLossConfig};

use crate::ctx;
use crate::reference::fixmatch::{self as cpu, RefConfig};
use crate::reference::{assert_close, random_vec, to_f64};

// Losses are f32 sums of up to a few hundred cross-entropies.
const LOSS_RTOL: f64 = 1e-4;
const LOSS_ATOL: f64 = 1e-6;
// Gradients are O(1/B); p - t can cancel to f32 epsilon.
const GRAD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-6;
// Generated steps keep every top probability this far from the threshold and from the second
// largest, so the f32 mask and argmax must equal the f64 ones.
const DECISION_MARGIN: f64 = 1e-4;

fn ref_config(cfg: &FixMatchLossConfig) -> RefConfig {
    RefConfig {
        batch: cfg.batch,
        uratio: cfg.uratio,
        classes: cfg.classes,
        threshold: cfg.threshold as f64,
    }
}

/// Joint logits in [-6, 6) with each row scaled by a factor in [0.1, 1.9) (so that some target
/// rows are confident and some not), labels in range; the first step of seeds `seed * 1000 + k`
/// whose decisions are clear and whose mask has both values.
fn pick_step(cfg: &RefConfig, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let (b, c, rows) = (cfg.batch, cfg.classes, cfg.joint_rows());
    for attempt in 0..500 {
        let s = seed * 1000 + attempt;
        let row_scale = random_vec(s * 5 + 1, rows);
        let joint: Vec<f32> = random_vec(s * 5 + 2, rows * c)
            .iter()
            .enumerate()
            .map(|(i, v)| 6.0 * v * (1.0 + 0.9 * row_scale[i / c]))
            .collect();
        let labels: Vec<u32> = random_vec(s * 5 + 3, b)
            .iter()
            .map(|v| (((v + 1.0) * 0.5 * c as f32) as u32).min(c as u32 - 1))
            .collect();
        let want = cpu::fixmatch_step(cfg, &to_f64(&joint), &labels);
        let clear = want
            .mask_margin
            .iter()
            .chain(&want.argmax_margin)
            .all(|&m| m > DECISION_MARGIN);
        let ones = want.mask.iter().filter(|&&m| m == 1.0).count();
        if clear && ones > 0 && ones < want.mask.len() {
            return (joint, labels);
        }
    }
    panic!("no usable random step for {cfg:?} (seed {seed})");
}

fn check(cfg: FixMatchLossConfig, seed: u64) {
    let ctx: &GpuContext = ctx();
    let rcfg = ref_config(&cfg);
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let (joint, labels) = pick_step(&rcfg, seed);
    let joint_t = Tensor::from_f32(ctx, "joint", &[cfg.joint_rows(), c], &joint);
    let labels_t = Tensor::zeros(ctx, "labels", &[b]);
    ctx.queue
        .write_buffer(&labels_t.buffer, 0, bytemuck::cast_slice(&labels));
    // Garbage in d_joint first: every element must be overwritten.
    let d_joint = Tensor::from_f32(ctx, "d_joint", &[cfg.joint_rows(), c], &vec![f32::NAN; joint.len()]);
    let loss = FixMatchLoss::new(ctx, &cfg, &joint_t, &labels_t, &d_joint);
    ctx.run(&loss.ops().iter().collect::<Vec<_>>()).unwrap();
    let want = cpu::fixmatch_step(&rcfg, &to_f64(&joint), &labels);
    let what = format!("{cfg:?}");

    let pseudo: Vec<u32> =
        bytemuck::pod_collect_to_vec(&ctx.read_bytes(&loss.pseudo.buffer, 0, loss.pseudo.bytes()).unwrap());
    assert_eq!(pseudo, want.pseudo, "{what}: pseudo-labels");
    let mask = loss.mask.read_f32(ctx).unwrap();
    assert_eq!(to_f64(&mask), want.mask, "{what}: mask");
    let m = loss.metrics.read_f32(ctx).unwrap();
    assert_eq!(m.len(), METRIC_NAMES.len());
    assert_close(
        &format!("{what}: losses"),
        &[m[METRIC_TOTAL_LOSS], m[METRIC_SOURCE_LOSS], m[METRIC_TARGET_LOSS]],
        &[want.total_loss, want.source_loss, want.target_loss],
        LOSS_RTOL,
        LOSS_ATOL,
    );
    assert_eq!(m[METRIC_MASK_RATE], want.mask_rate as f32, "{what}: mask rate");
    assert_eq!(
        m[METRIC_C_TAU], cfg.threshold,
        "{what}: the threshold in the c_tau slot"
    );
    assert_eq!(m[METRIC_MU], 1.0, "{what}: target weight");
    let d = d_joint.read_f32(ctx).unwrap();
    assert_close(&format!("{what}: d_joint"), &d, &want.d_joint, GRAD_RTOL, GRAD_ATOL);
    // Source-strong and target-weak rows: exactly zero.
    assert!(
        d[b * c..(2 * b + ub) * c].iter().all(|&g| g == 0.0),
        "{what}: rows without loss"
    );
    eprintln!(
        "{what}: mask rate {:.3}, losses {:.5} / {:.5}",
        want.mask_rate, want.source_loss, want.target_loss
    );
}

#[test]
fn fixmatch_loss_matches_reference() {
    let at = |batch, uratio, classes, threshold| FixMatchLossConfig {
        batch,
        uratio,
        classes,
        threshold,
    };
    check(at(3, 5, 7, 0.95), 1);
    // 135 target rows: three workgroups of pseudo-labels; 13 classes.
    check(at(5, 27, 13, 0.95), 2);
    check(at(2, 3, 10, 0.7), 3);
}

#[test]
fn fixmatch_loss_is_bitwise_deterministic() {
    let ctx = ctx();
    let cfg = FixMatchLossConfig {
        batch: 4,
        uratio: 7,
        classes: 9,
        threshold: 0.95,
    };
    let (joint, labels) = pick_step(&ref_config(&cfg), 9);
    let run = || {
        let joint_t = Tensor::from_f32(ctx, "joint", &[cfg.joint_rows(), 9], &joint);
        let labels_t = Tensor::zeros(ctx, "labels", &[4]);
        ctx.queue
            .write_buffer(&labels_t.buffer, 0, bytemuck::cast_slice(&labels));
        let d = Tensor::zeros(ctx, "d", &[cfg.joint_rows(), 9]);
        let loss = FixMatchLoss::new(ctx, &cfg, &joint_t, &labels_t, &d);
        ctx.run(&loss.ops().iter().collect::<Vec<_>>()).unwrap();
        (d.read_f32(ctx).unwrap(), loss.metrics.read_f32(ctx).unwrap())
    };
    let (a, b) = (run(), run());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(bits(&a.1), bits(&b.1));
}

/// The reference's gradient against f64 central differences of its loss (pseudo-labels and mask
/// are locally constant, so the full step's loss is differentiable where decisions are clear).
#[test]
fn fixmatch_reference_gradient_matches_finite_differences() {
    let rcfg = RefConfig {
        batch: 3,
        uratio: 2,
        classes: 6,
        threshold: 0.9,
    };
    let (joint, labels) = pick_step(&rcfg, 7);
    let joint = to_f64(&joint);
    let want = cpu::fixmatch_step(&rcfg, &joint, &labels);
    let eps = 1e-6;
    for i in 0..joint.len() {
        let (mut p, mut m) = (joint.clone(), joint.clone());
        p[i] += eps;
        m[i] -= eps;
        let f = |x: &[f64]| cpu::fixmatch_step(&rcfg, x, &labels).total_loss;
        let fd = (f(&p) - f(&m)) / (2.0 * eps);
        assert!(
            (fd - want.d_joint[i]).abs() < 1e-8 + 1e-6 * fd.abs(),
            "d/djoint[{i}]: analytic {} vs finite difference {fd}",
            want.d_joint[i]
        );
    }
}
