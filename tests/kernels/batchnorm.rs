use adamatch_wgpu::gpu::{GpuContext, Op, Tensor};
use adamatch_wgpu::kernels::batchnorm::{
    batchnorm_apply, batchnorm_backward, batchnorm_reduction_partials, batchnorm_scratch_len, batchnorm_stats,
    BatchNormBackward, BatchNormShape, BatchNormTuning, MAX_PARTIALS,
};

use crate::ctx;

/// The shared context with batch norm's workgroup split forced to `tuning`: every tuning runs on
/// every adapter (CI's CPU adapter included), so each is checked against the reference here.
fn tuned(tuning: BatchNormTuning) -> GpuContext {
    ctx().with_batchnorm_tuning(tuning)
}
use crate::reference::{assert_close, batchnorm as cpu, random_vec, to_f64};

// Keras' default epsilon.
const EPS: f32 = 1e-3;
const MOMENTUM: f32 = 0.9;

// Tolerances: f32 kernels vs the f64 reference. Statistics and parameter gradients are sums over
// the rows; dx in training mode subtracts nearly cancelling terms. The absolute floors are scaled
// by the size of the quantity (see each use).
const RTOL: f64 = 1e-4;

fn run(ctx: &GpuContext, ops: &[Op]) {
    let refs: Vec<&Op> = ops.iter().collect();
    ctx.run(&refs).unwrap();
}

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    t.read_f32(ctx).unwrap()
}

/// `scale * U(-1, 1) + offset`.
fn data(seed: u64, len: usize, scale: f32, offset: f32) -> Vec<f32> {
    random_vec(seed, len).into_iter().map(|v| v * scale + offset).collect()
}

/// Inputs of one test case.
struct Inputs {
    s: BatchNormShape,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

impl Inputs {
    fn new(seed: u64, rows: usize, channels: usize, x_offset: f32) -> Inputs {
        let n = rows * channels;
        Inputs {
            s: BatchNormShape { rows, channels },
            x: data(seed, n, 2.0, x_offset),
            gamma: data(seed + 1, channels, 0.5, 1.0),
            beta: data(seed + 2, channels, 0.5, 0.0),
            dy: data(seed + 3, n, 1.0, 0.0),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The f64 reference backward against central finite differences of the f64 reference forward.

/// sum(y * w): its gradient w.r.t. y is w.
fn weighted_sum(y: &[f64], w: &[f64]) -> f64 {
    y.iter().zip(w).map(|(a, b)| a * b).sum()
}

fn check_fd(what: &str, analytic: &[f64], f: impl Fn(usize, f64) -> f64) {
    const H: f64 = 1e-6;
    for (i, &a) in analytic.iter().enumerate() {
        let fd = (f(i, H) - f(i, -H)) / (2.0 * H);
        let err = (fd - a).abs();
        assert!(
            err <= 1e-6 + 1e-6 * a.abs(),
            "{what}[{i}]: analytic {a} vs finite difference {fd} (error {err:.3e})"
        );
    }
}

fn perturbed(v: &[f64], i: usize, h: f64) -> Vec<f64> {
    let mut v = v.to_vec();
    v[i] += h;
    v
}

/// Asserts that no pre-activation is within `margin` of the kink, so +-h perturbations never
/// cross it and finite differences are valid.
fn assert_away_from_kink(z: &[f64], margin: f64) {
    let closest = z.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
    assert!(
        closest > margin,
        "test data has a pre-activation {closest:e} near the kink: pick another seed"
    );
}

#[test]
fn reference_backward_train_matches_finite_differences() {
    let (rows, channels) = (7, 3);
    for (seed, slope) in [(10u64, 0.1f64), (20, 0.0)] {
        let inp = Inputs::new(seed, rows, channels, 0.3);
        let (x, gamma, beta, w) = (to_f64(&inp.x), to_f64(&inp.gamma), to_f64(&inp.beta), to_f64(&inp.dy));
        let eps = EPS as f64;
        let (z, _, _) = cpu::batchnorm_forward_train(&x, rows, channels, &gamma, &beta, eps, 1.0);
        assert_away_from_kink(&z, 1e-3);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| {
            let (y, _, _) = cpu::batchnorm_forward_train(x, rows, channels, g, b, eps, slope);
            weighted_sum(&y, &w)
        };
        let (dx, dgamma, dbeta) = cpu::batchnorm_backward_train(&x, &w, rows, channels, &gamma, &beta, eps, slope);
        check_fd("train dx", &dx, |i, h| loss(&perturbed(&x, i, h), &gamma, &beta));
        check_fd("train dgamma", &dgamma, |i, h| {
            loss(&x, &perturbed(&gamma, i, h), &beta)
        });
        check_fd("train dbeta", &dbeta, |i, h| loss(&x, &gamma, &perturbed(&beta, i, h)));
    }
}

#[test]
fn reference_backward_inference_matches_finite_differences() {
    let (rows, channels) = (5, 4);
    for (seed, slope) in [(30u64, 0.1f64), (40, 0.0)] {
        let inp = Inputs::new(seed, rows, channels, 0.3);
        let (x, gamma, beta, w) = (to_f64(&inp.x), to_f64(&inp.gamma), to_f64(&inp.beta), to_f64(&inp.dy));
        let mean = to_f64(&data(seed + 5, channels, 0.5, 0.0));
        let var = to_f64(&data(seed + 6, channels, 0.4, 1.0));
        let eps = EPS as f64;
        let z = cpu::batchnorm_forward_inference(&x, rows, channels, &gamma, &beta, &mean, &var, eps, 1.0);
        assert_away_from_kink(&z, 1e-3);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| {
            let y = cpu::batchnorm_forward_inference(x, rows, channels, g, b, &mean, &var, eps, slope);
            weighted_sum(&y, &w)
        };
        let (dx, dgamma, dbeta) =
            cpu::batchnorm_backward_inference(&x, &w, rows, channels, &gamma, &beta, &mean, &var, eps, slope);
        check_fd("inference dx", &dx, |i, h| loss(&perturbed(&x, i, h), &gamma, &beta));
        check_fd("inference dgamma", &dgamma, |i, h| {
            loss(&x, &perturbed(&gamma, i, h), &beta)
        });
        check_fd("inference dbeta", &dbeta, |i, h| {
            loss(&x, &gamma, &perturbed(&beta, i, h))
        });
    }
}

// ----------------------------------------------------------------------------------------------
// GPU kernels against the reference.

/// (rows, channels, x offset): rows/channels off the workgroup and tile sizes; shapes with more
/// partials than a finalize workgroup has threads; a large mean shows the variance is stable (on
/// few elements: at offset 1000 the f32 data resolve z only to ~1e-4, and an element whose z
/// lands on the other side of the kink than in f64 moves mean(dz) by ~1/rows, beyond the dx
/// tolerance; (242, 20, -1000) has such an element).
/// channels % 4 == 0 runs the vec4 kernels (16 channels per thread: 4 and 12 leave a thread's
/// quads partly repeated, 20/36/132 a ragged last thread, 1044 two channel tiles, 300,007 rows
/// reach MAX_PARTIALS); the others run the scalar kernels.
const SHAPES: &[(usize, usize, f32)] = &[
    (3 * 5 * 7, 13, 0.0),
    (1, 5, 0.0),
    (2 * 9 * 9, 70, 0.5),
    (3 * 17 * 17, 32, 0.0),
    (300_007, 3, 0.0),
    (3 * 5 * 7, 13, 1000.0),
    (2 * 11 * 11, 17, -1000.0),
    (3 * 7 * 5, 4, 0.0),
    (3 * 7 * 5, 12, 0.0),
    (1, 20, 0.0),
    (2 * 9 * 9, 20, 0.5),
    (3 * 7 * 5, 36, 1000.0),
    (2 * 11 * 11, 132, 0.0),
    (7, 1044, 0.0),
    (300_007, 4, 0.0),
];

/// Labels of the ops the three entry points build for `s` (first the stats' partial kernel).
fn op_labels(ctx: &GpuContext, s: &BatchNormShape) -> Vec<String> {
    let (n, c) = (s.len(), s.channels);
    let x = Tensor::zeros(ctx, "x", &[n]);
    let per_channel: Vec<Tensor> = (0..8).map(|_| Tensor::zeros(ctx, "per channel", &[c])).collect();
    let [mean, var, rmean, rvar, gamma, beta, dgamma, dbeta] = &per_channel[..] else {
        unreachable!()
    };
    let (y, dy, dx, addend) = (x.clone(), x.clone(), x.clone(), x.clone());
    let mut ops = batchnorm_stats(ctx, s, &x, mean, var, rmean, rvar, MOMENTUM, true, None);
    ops.push(batchnorm_apply(ctx, s, &x, mean, var, gamma, beta, &y, EPS, 0.1));
    for a in [None, Some(&addend)] {
        ops.extend(batchnorm_backward(
            ctx,
            s,
            &BatchNormBackward {
                x: &x,
                dy: &dy,
                mean,
                var,
                gamma,
                beta,
                dx: &dx,
                dgamma,
                dbeta,
                addend: a,
                eps: EPS,
                slope: 0.1,
                batch_stats: true,
                accumulate_params: false,
                scratch: None,
            },
        ));
    }
    ops.iter().map(|op| op.label.clone()).collect()
}

#[test]
fn vec4_kernels_run_exactly_when_channels_are_a_multiple_of_4() {
    let ctx = ctx();
    for &(rows, channels, _) in SHAPES {
        let labels = op_labels(ctx, &BatchNormShape { rows, channels });
        // The row-walking kernels: stats partial, apply, 2x (backward partial, input gradient).
        let walking: Vec<&String> = labels.iter().filter(|l| !l.ends_with("_finalize")).collect();
        assert_eq!(walking.len(), 6, "{labels:?}");
        for l in walking {
            assert_eq!(
                l.ends_with("_vec4"),
                channels % 4 == 0,
                "channels {channels}: {l} ({labels:?})"
            );
        }
    }
    // The shape SHAPES uses to reach the cap on vec4 partials (any tuning: the cap binds).
    let capped = BatchNormShape {
        rows: 300_007,
        channels: 4,
    };
    assert_eq!(batchnorm_reduction_partials(ctx, &capped), MAX_PARTIALS);
}

#[test]
fn the_two_tunings_split_rows_differently() {
    // Else the per-tuning loops below would check one split twice. (With vec4 channels the
    // tunings also differ in which rows a lane walks, which the partial count does not show.)
    let s = BatchNormShape {
        rows: 8192,
        channels: 5,
    };
    let [gpu, cpu] = BatchNormTuning::ALL.map(|t| batchnorm_reduction_partials(&tuned(t), &s));
    assert_ne!(gpu, cpu, "GPU and CPU tunings give {gpu} partials each for {s:?}");
}

#[test]
fn stats_match_reference_with_and_without_running_update() {
    for tuning in BatchNormTuning::ALL {
        let ctx = &tuned(tuning);
        for (k, &(rows, channels, offset)) in SHAPES.iter().enumerate() {
            let inp = Inputs::new(100 + k as u64, rows, channels, offset);
            let s = inp.s;
            let (want_mean, want_var) = cpu::batchnorm_moments(&to_f64(&inp.x), rows, channels);
            let run0 = data(200 + k as u64, channels, 1.0, offset);
            let run1 = data(300 + k as u64, channels, 0.5, 1.0);
            for update in [false, true] {
                let x = Tensor::from_f32(ctx, "x", &[rows, channels], &inp.x);
                let mean = Tensor::zeros(ctx, "mean", &[channels]);
                let var = Tensor::zeros(ctx, "var", &[channels]);
                let rmean = Tensor::from_f32(ctx, "running mean", &[channels], &run0);
                let rvar = Tensor::from_f32(ctx, "running var", &[channels], &run1);
                run(
                    ctx,
                    &batchnorm_stats(ctx, &s, &x, &mean, &var, &rmean, &rvar, MOMENTUM, update, None),
                );
                let what = format!("rows {rows} channels {channels} offset {offset} update {update}");
                // Mean: absolute floor relative to the data's spread (1) and offset.
                let mean_atol = 1e-6 * (1.0 + offset.abs() as f64);
                assert_close(&format!("mean, {what}"), &read(ctx, &mean), &want_mean, RTOL, mean_atol);
                // Variance ~1.33 whatever the offset: E[x^2] - E[x]^2 in f32 would be off by ~0.1
                // at offset 1000; this tolerance demands two-pass accuracy.
                assert_close(&format!("var, {what}"), &read(ctx, &var), &want_var, RTOL, 1e-6);
                let m = MOMENTUM as f64;
                let (want_rm, want_rv): (Vec<f64>, Vec<f64>) = if update {
                    (
                        (0..channels)
                            .map(|c| m * run0[c] as f64 + (1.0 - m) * want_mean[c])
                            .collect(),
                        (0..channels)
                            .map(|c| m * run1[c] as f64 + (1.0 - m) * want_var[c])
                            .collect(),
                    )
                } else {
                    (to_f64(&run0), to_f64(&run1))
                };
                assert_close(
                    &format!("running mean, {what}"),
                    &read(ctx, &rmean),
                    &want_rm,
                    RTOL,
                    mean_atol,
                );
                assert_close(&format!("running var, {what}"), &read(ctx, &rvar), &want_rv, RTOL, 1e-6);
            }
        }
    }
}

#[test]
fn training_forward_matches_reference() {
    for tuning in BatchNormTuning::ALL {
        let ctx = &tuned(tuning);
        for (k, &(rows, channels, offset)) in SHAPES.iter().enumerate() {
            for slope in [0.0f32, 0.1] {
                let inp = Inputs::new(400 + k as u64, rows, channels, offset);
                let s = inp.s;
                let x = Tensor::from_f32(ctx, "x", &[rows, channels], &inp.x);
                let gamma = Tensor::from_f32(ctx, "gamma", &[channels], &inp.gamma);
                let beta = Tensor::from_f32(ctx, "beta", &[channels], &inp.beta);
                let mean = Tensor::zeros(ctx, "mean", &[channels]);
                let var = Tensor::zeros(ctx, "var", &[channels]);
                let rmean = Tensor::zeros(ctx, "running mean", &[channels]);
                let rvar = Tensor::zeros(ctx, "running var", &[channels]);
                let y = Tensor::zeros(ctx, "y", &[rows, channels]);
                let mut ops = batchnorm_stats(ctx, &s, &x, &mean, &var, &rmean, &rvar, 0.9, false, None);
                ops.push(batchnorm_apply(ctx, &s, &x, &mean, &var, &gamma, &beta, &y, EPS, slope));
                run(ctx, &ops);
                let (want, _, _) = cpu::batchnorm_forward_train(
                    &to_f64(&inp.x),
                    rows,
                    channels,
                    &to_f64(&inp.gamma),
                    &to_f64(&inp.beta),
                    EPS as f64,
                    slope as f64,
                );
                // y is O(1); absolute error from the f32 statistics is ~1e-6 (offset 1000: the f32
                // mean's rounding, ~1e-4 relative to the unit spread, shifts every y).
                let atol = 1e-5 * (1.0 + offset.abs() as f64 / 50.0);
                assert_close(
                    &format!("train y, rows {rows} channels {channels} offset {offset} slope {slope}"),
                    &read(ctx, &y),
                    &want,
                    RTOL,
                    atol,
                );
            }
        }
    }
}

#[test]
fn inference_forward_matches_reference() {
    for tuning in BatchNormTuning::ALL {
        let ctx = &tuned(tuning);
        for (k, &(rows, channels, offset)) in SHAPES.iter().enumerate() {
            for slope in [0.0f32, 0.1] {
                let inp = Inputs::new(500 + k as u64, rows, channels, offset);
                let s = inp.s;
                let mean_v = data(600 + k as u64, channels, 0.5, offset);
                let var_v = data(700 + k as u64, channels, 0.5, 1.0);
                let x = Tensor::from_f32(ctx, "x", &[rows, channels], &inp.x);
                let gamma = Tensor::from_f32(ctx, "gamma", &[channels], &inp.gamma);
                let beta = Tensor::from_f32(ctx, "beta", &[channels], &inp.beta);
                let mean = Tensor::from_f32(ctx, "mean", &[channels], &mean_v);
                let var = Tensor::from_f32(ctx, "var", &[channels], &var_v);
                let y = Tensor::zeros(ctx, "y", &[rows, channels]);
                run(
                    ctx,
                    &[batchnorm_apply(ctx, &s, &x, &mean, &var, &gamma, &beta, &y, EPS, slope)],
                );
                let want = cpu::batchnorm_forward_inference(
                    &to_f64(&inp.x),
                    rows,
                    channels,
                    &to_f64(&inp.gamma),
                    &to_f64(&inp.beta),
                    &to_f64(&mean_v),
                    &to_f64(&var_v),
                    EPS as f64,
                    slope as f64,
                );
                assert_close(
                    &format!("inference y, rows {rows} channels {channels} offset {offset} slope {slope}"),
                    &read(ctx, &y),
                    &want,
                    RTOL,
                    1e-6,
                );
            }
        }
    }
}

/// Outputs of one GPU backward run.
struct BackwardOut {
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

/// Runs the backward on the GPU. Training mode computes the batch statistics on the GPU first
/// (as the network does); inference mode uses `stats`. dx/dgamma/dbeta start from `preset`.
#[allow(clippy::too_many_arguments)]
fn gpu_backward(
    ctx: &GpuContext,
    inp: &Inputs,
    stats: Option<(&[f32], &[f32])>,
    slope: f32,
    addend: Option<&[f32]>,
    preset: (&[f32], &[f32], &[f32]),
    accumulate: bool,
) -> BackwardOut {
    let s = inp.s;
    let (rows, channels) = (s.rows, s.channels);
    let x = Tensor::from_f32(ctx, "x", &[rows, channels], &inp.x);
    let dy = Tensor::from_f32(ctx, "dy", &[rows, channels], &inp.dy);
    let gamma = Tensor::from_f32(ctx, "gamma", &[channels], &inp.gamma);
    let beta = Tensor::from_f32(ctx, "beta", &[channels], &inp.beta);
    let mean = Tensor::zeros(ctx, "mean", &[channels]);
    let var = Tensor::zeros(ctx, "var", &[channels]);
    let dx = Tensor::from_f32(ctx, "dx", &[rows, channels], preset.0);
    let dgamma = Tensor::from_f32(ctx, "dgamma", &[channels], preset.1);
    let dbeta = Tensor::from_f32(ctx, "dbeta", &[channels], preset.2);
    let addend = addend.map(|a| Tensor::from_f32(ctx, "addend", &[rows, channels], a));
    let mut ops = Vec::new();
    match stats {
        Some((m, v)) => {
            mean.write_f32(ctx, m);
            var.write_f32(ctx, v);
        }
        None => {
            let rmean = Tensor::zeros(ctx, "running mean", &[channels]);
            let rvar = Tensor::zeros(ctx, "running var", &[channels]);
            ops.extend(batchnorm_stats(
                ctx, &s, &x, &mean, &var, &rmean, &rvar, MOMENTUM, false, None,
            ));
        }
    }
    ops.extend(batchnorm_backward(
        ctx,
        &s,
        &BatchNormBackward {
            x: &x,
            dy: &dy,
            mean: &mean,
            var: &var,
            gamma: &gamma,
            beta: &beta,
            dx: &dx,
            dgamma: &dgamma,
            dbeta: &dbeta,
            addend: addend.as_ref(),
            eps: EPS,
            slope,
            batch_stats: stats.is_none(),
            accumulate_params: accumulate,
            scratch: None,
        },
    ));
    run(ctx, &ops);
    BackwardOut {
        dx: read(ctx, &dx),
        dgamma: read(ctx, &dgamma),
        dbeta: read(ctx, &dbeta),
    }
}

fn plus(a: &[f64], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, &y)| x + y as f64).collect()
}

/// Checks one backward case in both modes against the reference.
fn check_backward(
    tuning: BatchNormTuning,
    k: u64,
    rows: usize,
    channels: usize,
    offset: f32,
    slope: f32,
    variant: u32,
) {
    let ctx = &tuned(tuning);
    let use_addend = variant & 1 != 0;
    let accumulate = variant & 2 != 0;
    let inp = Inputs::new(800 + k, rows, channels, offset);
    let n = rows * channels;
    let addend = data(900 + k, n, 1.0, 0.0);
    // dx starts as garbage: it must be overwritten whether or not an addend is given.
    let preset = (
        data(901 + k, n, 5.0, 0.0),
        data(902 + k, channels, 5.0, 0.0),
        data(903 + k, channels, 5.0, 0.0),
    );
    let (x, dy, gamma, beta) = (to_f64(&inp.x), to_f64(&inp.dy), to_f64(&inp.gamma), to_f64(&inp.beta));
    let (eps, sl) = (EPS as f64, slope as f64);
    let mean_v = data(904 + k, channels, 0.5, offset);
    let var_v = data(905 + k, channels, 0.5, 1.0);
    for batch_stats in [true, false] {
        let (want_dx, want_dg, want_db) = if batch_stats {
            cpu::batchnorm_backward_train(&x, &dy, rows, channels, &gamma, &beta, eps, sl)
        } else {
            cpu::batchnorm_backward_inference(
                &x,
                &dy,
                rows,
                channels,
                &gamma,
                &beta,
                &to_f64(&mean_v),
                &to_f64(&var_v),
                eps,
                sl,
            )
        };
        let got = gpu_backward(
            ctx,
            &inp,
            (!batch_stats).then_some((&mean_v[..], &var_v[..])),
            slope,
            use_addend.then_some(&addend[..]),
            (&preset.0, &preset.1, &preset.2),
            accumulate,
        );
        let want_dx = if use_addend { plus(&want_dx, &addend) } else { want_dx };
        let (want_dg, want_db) = if accumulate {
            (plus(&want_dg, &preset.1), plus(&want_db, &preset.2))
        } else {
            (want_dg, want_db)
        };
        let what = format!(
            "rows {rows} channels {channels} offset {offset} slope {slope} batch_stats \
             {batch_stats} addend {use_addend} accumulate {accumulate}"
        );
        // dx is O(1); the offset-1000 f32 mean carries ~1e-4 relative error into xhat.
        let dx_atol = 2e-5 * (1.0 + offset.abs() as f64 / 50.0);
        assert_close(&format!("dx, {what}"), &got.dx, &want_dx, RTOL, dx_atol);
        // Parameter gradients are sums of `rows` O(1) terms.
        let sum_atol = dx_atol * (rows as f64).sqrt();
        assert_close(&format!("dgamma, {what}"), &got.dgamma, &want_dg, RTOL, sum_atol);
        assert_close(&format!("dbeta, {what}"), &got.dbeta, &want_db, RTOL, sum_atol);
    }
}

#[test]
fn backward_matches_reference() {
    for tuning in BatchNormTuning::ALL {
        for (k, &(rows, channels, offset)) in SHAPES.iter().enumerate() {
            for (j, slope) in [0.0f32, 0.1].into_iter().enumerate() {
                // Cycle through addend/accumulate combinations across cases.
                let variant = (k as u32 * 2 + j as u32) % 4;
                check_backward(tuning, 10 * k as u64 + j as u64, rows, channels, offset, slope, variant);
            }
        }
        // Every addend/accumulate combination on one shape.
        for variant in 0..4 {
            check_backward(tuning, 1000 + variant as u64, 3 * 5 * 7, 13, 0.0, 0.1, variant);
        }
    }
}

/// Stats (updating running statistics), apply with slope 0.1 and the training-mode backward of
/// one layer, on fresh buffers: the ops, not yet run, and the buffers they write.
struct FullPass {
    ops: Vec<Op>,
    mean: Tensor,
    var: Tensor,
    rmean: Tensor,
    rvar: Tensor,
    y: Tensor,
    dx: Tensor,
    dgamma: Tensor,
    dbeta: Tensor,
}

fn full_pass(ctx: &GpuContext, s: &BatchNormShape, x: &[f32], dy: &[f32], gamma: &[f32], beta: &[f32]) -> FullPass {
    full_pass_with(ctx, s, x, dy, gamma, beta, None)
}

/// [`full_pass`] with its partial sums in `scratch` (None: scratch of its own).
fn full_pass_with(
    ctx: &GpuContext,
    s: &BatchNormShape,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    scratch: Option<&Tensor>,
) -> FullPass {
    let (rows, channels) = (s.rows, s.channels);
    let x = Tensor::from_f32(ctx, "x", &[rows, channels], x);
    let dy = Tensor::from_f32(ctx, "dy", &[rows, channels], dy);
    let gamma = Tensor::from_f32(ctx, "gamma", &[channels], gamma);
    let beta = Tensor::from_f32(ctx, "beta", &[channels], beta);
    let mean = Tensor::zeros(ctx, "mean", &[channels]);
    let var = Tensor::zeros(ctx, "var", &[channels]);
    let rmean = Tensor::zeros(ctx, "running mean", &[channels]);
    let rvar = Tensor::from_f32(ctx, "running var", &[channels], &vec![1.0; channels]);
    let y = Tensor::zeros(ctx, "y", &[rows, channels]);
    let dx = Tensor::zeros(ctx, "dx", &[rows, channels]);
    let dgamma = Tensor::zeros(ctx, "dgamma", &[channels]);
    let dbeta = Tensor::zeros(ctx, "dbeta", &[channels]);
    let mut ops = batchnorm_stats(ctx, s, &x, &mean, &var, &rmean, &rvar, MOMENTUM, true, scratch);
    ops.push(batchnorm_apply(ctx, s, &x, &mean, &var, &gamma, &beta, &y, EPS, 0.1));
    ops.extend(batchnorm_backward(
        ctx,
        s,
        &BatchNormBackward {
            x: &x,
            dy: &dy,
            mean: &mean,
            var: &var,
            gamma: &gamma,
            beta: &beta,
            dx: &dx,
            dgamma: &dgamma,
            dbeta: &dbeta,
            addend: None,
            eps: EPS,
            slope: 0.1,
            batch_stats: true,
            accumulate_params: false,
            scratch,
        },
    ));
    FullPass {
        ops,
        mean,
        var,
        rmean,
        rvar,
        y,
        dx,
        dgamma,
        dbeta,
    }
}

/// Every output of stats, apply and backward, as bits, for one run on fresh buffers.
fn run_all_bits(tuning: BatchNormTuning, rows: usize, channels: usize) -> Vec<Vec<u32>> {
    let ctx = &tuned(tuning);
    let inp = Inputs::new(1234 + channels as u64, rows, channels, 3.0);
    let f = full_pass(ctx, &inp.s, &inp.x, &inp.dy, &inp.gamma, &inp.beta);
    run(ctx, &f.ops);
    [&f.mean, &f.var, &f.rmean, &f.rvar, &f.y, &f.dx, &f.dgamma, &f.dbeta]
        .iter()
        .map(|t| read(ctx, t).iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// One scratch for several layers, as a network workspace holds it: larger than any layer needs,
/// NaN-filled beforehand, reused by each layer right after the previous one. Every output must be
/// bitwise what it is with scratch of its own, on both tunings.
#[test]
fn layers_share_one_scratch() {
    for tuning in BatchNormTuning::ALL {
        let ctx = &tuned(tuning);
        // Scalar and vec4 kernels; the second layer needs less scratch than the first.
        let layers = [
            BatchNormShape {
                rows: 3 * 17 * 17 + 5,
                channels: 36,
            },
            BatchNormShape {
                rows: 2 * 9 * 9,
                channels: 17,
            },
        ];
        let len = layers.iter().map(|s| batchnorm_scratch_len(ctx, s)).max().unwrap() + 37;
        let scratch = Tensor::from_f32(ctx, "shared scratch", &[len], &vec![f32::NAN; len]);
        let bits = |f: &FullPass| -> Vec<Vec<u32>> {
            [&f.mean, &f.var, &f.rmean, &f.rvar, &f.y, &f.dx, &f.dgamma, &f.dbeta]
                .iter()
                .map(|t| read(ctx, t).iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        let (mut shared, mut own) = (Vec::new(), Vec::new());
        for (i, s) in layers.iter().enumerate() {
            let inp = Inputs::new(4321 + i as u64, s.rows, s.channels, 1.0);
            shared.push(full_pass_with(
                ctx,
                s,
                &inp.x,
                &inp.dy,
                &inp.gamma,
                &inp.beta,
                Some(&scratch),
            ));
            own.push(full_pass_with(ctx, s, &inp.x, &inp.dy, &inp.gamma, &inp.beta, None));
        }
        for f in shared.iter().chain(&own) {
            run(ctx, &f.ops);
        }
        for (s, (a, b)) in layers.iter().zip(shared.iter().zip(&own)) {
            assert!(
                bits(a) == bits(b),
                "{tuning:?} {s:?}: outputs with the shared scratch differ"
            );
        }
    }
}

#[test]
fn kernels_are_bitwise_deterministic() {
    // Scalar (17 channels) and vec4 (36: ragged last thread; 132; 32 as in the network) kernels.
    for tuning in BatchNormTuning::ALL {
        for (rows, channels) in [
            (3 * 17 * 17 + 5, 17),
            (3 * 17 * 17 + 5, 36),
            (3 * 7 * 5, 132),
            (5000, 32),
        ] {
            let a = run_all_bits(tuning, rows, channels);
            let b = run_all_bits(tuning, rows, channels);
            for (i, (u, v)) in a.iter().zip(&b).enumerate() {
                assert!(
                    u == v,
                    "{tuning:?} rows {rows} channels {channels}: output {i} differs between two identical runs"
                );
            }
        }
    }
}

#[test]
fn large_batch_forward_and_backward_stay_within_dispatch_limits() {
    // The AdaMatch joint pass: 512 images of 32x32 with 32 channels = 16.8M values (one element
    // per 256-thread workgroup would need 65,536 workgroups, one more than a dimension allows).
    // Threads walk several rows each instead, and the reductions are capped at MAX_PARTIALS
    // partials per channel; here they have more than a finalize workgroup has threads (64).
    for tuning in BatchNormTuning::ALL {
        let ctx = &tuned(tuning);
        let (rows, channels) = (512 * 32 * 32, 32);
        let inp_x = data(77, rows * channels, 2.0, 0.5);
        let gamma_v = data(78, channels, 0.5, 1.0);
        let beta_v = data(79, channels, 0.5, 0.0);
        let s = BatchNormShape { rows, channels };
        let dy_v = data(80, rows * channels, 1.0, 0.0);
        let partials = batchnorm_reduction_partials(ctx, &s);
        assert!(
            (65..=MAX_PARTIALS).contains(&partials),
            "expected 65..={MAX_PARTIALS} partials per channel, got {partials}"
        );
        let FullPass {
            ops,
            mean,
            var,
            rvar,
            y,
            dx,
            dgamma,
            dbeta,
            ..
        } = full_pass(ctx, &s, &inp_x, &dy_v, &gamma_v, &beta_v);
        for op in &ops {
            assert!(
                op.workgroups.iter().all(|&g| (1..=65_535).contains(&g)),
                "{}: grid {:?} outside the dispatch limits",
                op.label,
                op.workgroups
            );
        }
        run(ctx, &ops);

        let x64 = to_f64(&inp_x);
        let (want_mean, want_var) = cpu::batchnorm_moments(&x64, rows, channels);
        assert_close("large mean", &read(ctx, &mean), &want_mean, RTOL, 1e-6);
        assert_close("large var", &read(ctx, &var), &want_var, RTOL, 1e-6);
        let m = MOMENTUM as f64;
        let want_rv: Vec<f64> = want_var.iter().map(|v| m + (1.0 - m) * v).collect();
        assert_close("large running var", &read(ctx, &rvar), &want_rv, RTOL, 1e-6);
        // y: every element of the last rows (the last workgroups) plus a strided sample.
        let got_y = read(ctx, &y);
        let want_y = cpu::batchnorm_forward_inference(
            &x64,
            rows,
            channels,
            &to_f64(&gamma_v),
            &to_f64(&beta_v),
            &want_mean,
            &want_var,
            EPS as f64,
            0.1,
        );
        let idx: Vec<usize> = (0..rows * channels)
            .step_by(101)
            .chain(rows * channels - 2000..rows * channels)
            .collect();
        let pick = |got: &[f32], want: &[f64]| -> (Vec<f32>, Vec<f64>) {
            (
                idx.iter().map(|&i| got[i]).collect(),
                idx.iter().map(|&i| want[i]).collect(),
            )
        };
        let (g, w) = pick(&got_y, &want_y);
        assert_close("large y (sample)", &g, &w, RTOL, 1e-5);
        drop((got_y, want_y));

        let (want_dx, want_dg, want_db) = cpu::batchnorm_backward_train(
            &x64,
            &to_f64(&dy_v),
            rows,
            channels,
            &to_f64(&gamma_v),
            &to_f64(&beta_v),
            EPS as f64,
            0.1,
        );
        // Sums of 524,288 O(1) terms, which partly cancel: floor scaled by sqrt(rows) as above.
        let sum_atol = 2e-5 * (rows as f64).sqrt();
        assert_close("large dgamma", &read(ctx, &dgamma), &want_dg, RTOL, sum_atol);
        assert_close("large dbeta", &read(ctx, &dbeta), &want_db, RTOL, sum_atol);
        let (g, w) = pick(&read(ctx, &dx), &want_dx);
        assert_close("large dx (sample)", &g, &w, RTOL, 2e-5);
    }
}
