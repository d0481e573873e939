use adamatch_wgpu::gpu::Tensor;
use adamatch_wgpu::kernels::optimizer::{
    adam_step, bias_correction, ema_update, grad_check, lr_keras_cosine, lr_paper, mu_warmup, sgd_step,
    step_scalars_tensor, write_step_scalars, StepScalars, STEP_SCALARS_LEN,
};
use adamatch_wgpu::network::{Architecture, WideResNetConfig};

use crate::ctx;
use crate::reference::{assert_close, optimizer as cpu, random_vec, to_f64};

// Elementwise updates repeated for a few steps in f32 against f64: a few ulps of drift per step.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;
// Lengths around and not multiple of the 256-wide workgroups.
const LENS: [usize; 5] = [1, 37, 257, 5000, 70_001];
const STEPS: u64 = 5;

/// 0/1 mask from random data (about half the entries decay).
fn random_mask(seed: u64, len: usize) -> Vec<f32> {
    random_vec(seed, len)
        .iter()
        .map(|&x| if x > 0.0 { 1.0 } else { 0.0 })
        .collect()
}

/// Different learning rate and weight decay each step, so a kernel that cached the first
/// step's scalars would fail.
fn scalars_for(step: u64) -> StepScalars {
    let t = step + 1;
    StepScalars {
        lr: 0.03 * (1.0 - 0.15 * step as f32),
        weight_decay: 0.02 + 0.01 * step as f32,
        adam_bias1: bias_correction(0.9, t),
        adam_bias2: bias_correction(0.999, t),
        mu: 0.0,
        ..Default::default()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn step_scalars_layout_and_write() {
    let ctx = ctx();
    assert_eq!(std::mem::size_of::<StepScalars>(), 32);
    assert_eq!(STEP_SCALARS_LEN, 8);
    let t = step_scalars_tensor(ctx);
    assert_eq!(t.read_f32(ctx).unwrap(), vec![0.0; 8]);
    let s = StepScalars {
        lr: 0.5,
        weight_decay: 0.25,
        adam_bias1: 0.125,
        adam_bias2: 2.0,
        mu: 3.0,
        _pad0: 7.0,
        ..Default::default()
    };
    write_step_scalars(ctx, &t, &s);
    assert_eq!(
        t.read_f32(ctx).unwrap(),
        vec![0.5, 0.25, 0.125, 2.0, 3.0, 7.0, 0.0, 0.0]
    );
}

#[test]
fn sgd_matches_reference_over_steps() {
    let ctx = ctx();
    for nesterov in [false, true] {
        for len in LENS {
            let seed = len as u64 * 10;
            let p0 = random_vec(seed, len);
            let v0: Vec<f32> = random_vec(seed + 1, len).iter().map(|x| 0.1 * x).collect();
            let mask = random_mask(seed + 2, len);
            let params = Tensor::from_f32(ctx, "params", &[len], &p0);
            let grads = Tensor::zeros(ctx, "grads", &[len]);
            let vel = Tensor::from_f32(ctx, "velocity", &[len], &v0);
            let mask_t = Tensor::from_f32(ctx, "mask", &[len], &mask);
            let scalars = step_scalars_tensor(ctx);
            let op = sgd_step(ctx, &params, &grads, &vel, &mask_t, &scalars, 0.9, nesterov);

            let (mut p, mut v, m) = (to_f64(&p0), to_f64(&v0), to_f64(&mask));
            for step in 0..STEPS {
                let g = random_vec(seed + 100 + step, len);
                let s = scalars_for(step);
                grads.write_f32(ctx, &g);
                write_step_scalars(ctx, &scalars, &s);
                ctx.run(&[&op]).unwrap();
                cpu::sgd_step(
                    &mut p,
                    &to_f64(&g),
                    &mut v,
                    &m,
                    s.lr as f64,
                    s.weight_decay as f64,
                    0.9,
                    nesterov,
                );
            }
            let what = format!("sgd nesterov {nesterov} len {len}");
            assert_close(
                &format!("{what}: params"),
                &params.read_f32(ctx).unwrap(),
                &p,
                RTOL,
                ATOL,
            );
            assert_close(
                &format!("{what}: velocity"),
                &vel.read_f32(ctx).unwrap(),
                &v,
                RTOL,
                ATOL,
            );
            // The gradient buffer is only read.
            let last = random_vec(seed + 100 + STEPS - 1, len);
            assert_eq!(
                bits(&grads.read_f32(ctx).unwrap()),
                bits(&last),
                "{what}: grads changed"
            );
        }
    }
}

#[test]
fn adam_matches_reference_over_steps() {
    let ctx = ctx();
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-7f32);
    for len in LENS {
        let seed = len as u64 * 10 + 3;
        let p0 = random_vec(seed, len);
        // Non-zero moments, as in the middle of training.
        let m0: Vec<f32> = random_vec(seed + 1, len).iter().map(|x| 0.1 * x).collect();
        let v0: Vec<f32> = random_vec(seed + 2, len).iter().map(|x| 0.01 * x * x).collect();
        let mask = random_mask(seed + 3, len);
        let params = Tensor::from_f32(ctx, "params", &[len], &p0);
        let grads = Tensor::zeros(ctx, "grads", &[len]);
        let m_t = Tensor::from_f32(ctx, "m", &[len], &m0);
        let v_t = Tensor::from_f32(ctx, "v", &[len], &v0);
        let mask_t = Tensor::from_f32(ctx, "mask", &[len], &mask);
        let scalars = step_scalars_tensor(ctx);
        let op = adam_step(ctx, &params, &grads, &m_t, &v_t, &mask_t, &scalars, b1, b2, eps);

        let (mut p, mut m, mut v, mk) = (to_f64(&p0), to_f64(&m0), to_f64(&v0), to_f64(&mask));
        for step in 0..STEPS {
            let g = random_vec(seed + 100 + step, len);
            let s = scalars_for(step);
            grads.write_f32(ctx, &g);
            write_step_scalars(ctx, &scalars, &s);
            ctx.run(&[&op]).unwrap();
            cpu::adam_step(
                &mut p,
                &to_f64(&g),
                &mut m,
                &mut v,
                &mk,
                s.lr as f64,
                s.weight_decay as f64,
                step + 1,
                0.9,
                0.999,
                1e-7,
            );
        }
        let what = format!("adam len {len}");
        assert_close(
            &format!("{what}: params"),
            &params.read_f32(ctx).unwrap(),
            &p,
            RTOL,
            ATOL,
        );
        assert_close(&format!("{what}: m"), &m_t.read_f32(ctx).unwrap(), &m, RTOL, 1e-7);
        // v is as small as 1e-3 * g^2: a tighter absolute floor.
        assert_close(&format!("{what}: v"), &v_t.read_f32(ctx).unwrap(), &v, RTOL, 1e-10);
    }
}

/// With zero gradients and velocity, only masked entries move (by weight decay alone); the rest
/// stay bitwise identical.
#[test]
fn decay_mask_selects_decayed_entries() {
    let ctx = ctx();
    let len = 300;
    let p0 = random_vec(77, len);
    let mask: Vec<f32> = (0..len).map(|i| if i % 3 == 0 { 1.0 } else { 0.0 }).collect();
    let s = StepScalars {
        lr: 0.5,
        weight_decay: 0.1,
        adam_bias1: bias_correction(0.9, 1),
        adam_bias2: bias_correction(0.999, 1),
        ..Default::default()
    };
    let grads = Tensor::zeros(ctx, "grads", &[len]);
    let mask_t = Tensor::from_f32(ctx, "mask", &[len], &mask);
    let scalars = step_scalars_tensor(ctx);
    write_step_scalars(ctx, &scalars, &s);

    for optimizer in ["sgd", "adam"] {
        let params = Tensor::from_f32(ctx, "params", &[len], &p0);
        let m_t = Tensor::zeros(ctx, "m", &[len]);
        let v_t = Tensor::zeros(ctx, "v", &[len]);
        let op = if optimizer == "sgd" {
            sgd_step(ctx, &params, &grads, &m_t, &mask_t, &scalars, 0.9, false)
        } else {
            adam_step(ctx, &params, &grads, &m_t, &v_t, &mask_t, &scalars, 0.9, 0.999, 1e-7)
        };
        ctx.run(&[&op]).unwrap();
        let got = params.read_f32(ctx).unwrap();

        let mut want = to_f64(&p0);
        let zeros = vec![0.0; len];
        let (mut m, mut v) = (zeros.clone(), zeros.clone());
        if optimizer == "sgd" {
            cpu::sgd_step(&mut want, &zeros, &mut m, &to_f64(&mask), 0.5, 0.1, 0.9, false);
        } else {
            cpu::adam_step(
                &mut want,
                &zeros,
                &mut m,
                &mut v,
                &to_f64(&mask),
                0.5,
                0.1,
                1,
                0.9,
                0.999,
                1e-7,
            );
        }
        assert_close(&format!("{optimizer} decay"), &got, &want, RTOL, ATOL);
        for i in 0..len {
            if mask[i] == 0.0 {
                assert_eq!(got[i].to_bits(), p0[i].to_bits(), "{optimizer}: unmasked {i} moved");
            } else {
                assert!(
                    (got[i] - p0[i]).abs() > 1e-3 * p0[i].abs(),
                    "{optimizer}: masked {i} did not decay"
                );
            }
        }
    }
}

#[test]
fn decay_mask_covers_conv_and_dense_kernels_only() {
    let arch = Architecture::new(&WideResNetConfig::paper()).unwrap();
    let mask = arch.decay_mask();
    assert_eq!(mask.len(), arch.params_len());
    let mut decayed = 0;
    let mut covered = vec![false; mask.len()];
    for spec in arch.param_specs() {
        let want = if spec.kind.unwrap().decays() { 1.0 } else { 0.0 };
        let range = spec.offset..spec.offset + spec.len();
        assert!(mask[range.clone()].iter().all(|&x| x == want), "{}", spec.name);
        covered[range].fill(true);
        if want == 1.0 {
            decayed += spec.len();
            assert!(spec.name.ends_with("kernel") || spec.shape.len() == 4, "{}", spec.name);
        }
    }
    // Alignment gaps never decay.
    assert!(mask.iter().zip(&covered).all(|(&m, &c)| c || m == 0.0));
    assert_eq!(mask.iter().filter(|&&x| x == 1.0).count(), decayed);
    assert!(decayed > 0 && decayed < arch.trainable_count());
}

/// Two EMAs (parameters and BN statistics) as views at aligned offsets of one buffer, updated
/// by two ops of the same kernel in one submission, several steps with changing sources.
#[test]
fn ema_matches_reference() {
    let ctx = ctx();
    for decay in [0.999f32, 0.9] {
        for (len_a, len_b) in [(1usize, 300usize), (70_001, 37)] {
            // Second view starts at a 256-byte-aligned element offset.
            let off_b = len_a.next_multiple_of(64);
            let ema0 = random_vec(len_a as u64 + 5, off_b + len_b);
            let ema_all = Tensor::from_f32(ctx, "ema", &[off_b + len_b], &ema0);
            let ema_a = Tensor::view(&ema_all.buffer, 0, &[len_a]);
            let ema_b = Tensor::view(&ema_all.buffer, off_b, &[len_b]);
            let x_a = Tensor::zeros(ctx, "x_a", &[len_a]);
            let x_b = Tensor::zeros(ctx, "x_b", &[len_b]);
            let op_a = ema_update(ctx, &ema_a, &x_a, decay);
            let op_b = ema_update(ctx, &ema_b, &x_b, decay);

            let mut want_a = to_f64(&ema0[..len_a]);
            let mut want_b = to_f64(&ema0[off_b..]);
            for step in 0..4u64 {
                let xa = random_vec(1000 + step, len_a);
                let xb = random_vec(2000 + step, len_b);
                x_a.write_f32(ctx, &xa);
                x_b.write_f32(ctx, &xb);
                ctx.run(&[&op_a, &op_b]).unwrap();
                cpu::ema_update(&mut want_a, &to_f64(&xa), decay as f64);
                cpu::ema_update(&mut want_b, &to_f64(&xb), decay as f64);
            }
            let all = ema_all.read_f32(ctx).unwrap();
            let what = format!("ema decay {decay} lens {len_a}/{len_b}");
            assert_close(&format!("{what}: a"), &all[..len_a], &want_a, 1e-6, 1e-7);
            assert_close(&format!("{what}: b"), &all[off_b..], &want_b, 1e-6, 1e-7);
            // The gap between the views is untouched.
            assert_eq!(bits(&all[len_a..off_b]), bits(&ema0[len_a..off_b]), "{what}: gap");
        }
    }
}

#[test]
fn grad_check_sum_and_non_finite_flag() {
    let ctx = ctx();
    for len in [0usize, 1, 255, 4096, 4097, 100_003] {
        let g0 = random_vec(len as u64 + 9, len);
        let grads = Tensor::from_f32(ctx, "grads", &[len], &g0);
        // Stale values that must be overwritten.
        let metrics = Tensor::from_f32(ctx, "metrics", &[2], &[5.0, 5.0]);
        let ops = grad_check(ctx, &grads, &metrics);
        let run = |g: &[f32]| -> Vec<f32> {
            grads.write_f32(ctx, g);
            ctx.run(&ops.iter().collect::<Vec<_>>()).unwrap();
            metrics.read_f32(ctx).unwrap()
        };

        let got = run(&g0);
        let (sum, bad) = cpu::grad_check(&g0);
        assert!(!bad);
        // f32 partial sums of positive terms (16 in order, then trees): relative error ~1e-6.
        assert_close(&format!("grad_check sum len {len}"), &got[..1], &[sum], 1e-5, 0.0);
        assert_eq!(got[1], 0.0, "len {len}: clean gradients flagged");
        if len == 0 {
            continue;
        }

        // Non-finite values anywhere, including the ragged last chunk.
        for (idx, val) in [(len - 1, f32::NAN), (len / 2, f32::INFINITY), (0, f32::NEG_INFINITY)] {
            let mut g = g0.clone();
            g[idx] = val;
            let got = run(&g);
            assert_eq!(got[1], 1.0, "len {len}: {val} at {idx} not flagged");
            assert!(!got[0].is_finite(), "len {len}: sum with {val} should not be finite");
        }
        // A huge but finite gradient overflows the sum, not the flag.
        let mut g = g0.clone();
        g[len / 3] = 3e38;
        let got = run(&g);
        assert_eq!(got[1], 0.0, "len {len}: finite 3e38 flagged");
        assert_eq!(got[0], f32::INFINITY);
        // Back to clean: the flag is rewritten, not sticky.
        assert_eq!(run(&g0)[1], 0.0, "len {len}: flag stuck");
    }
}

#[test]
fn optimizer_ops_are_bitwise_deterministic() {
    let ctx = ctx();
    let len = 100_003;
    let p0 = random_vec(1, len);
    let g = random_vec(2, len);
    let mask = random_mask(3, len);
    let grads = Tensor::from_f32(ctx, "grads", &[len], &g);
    let mask_t = Tensor::from_f32(ctx, "mask", &[len], &mask);
    let scalars = step_scalars_tensor(ctx);
    write_step_scalars(ctx, &scalars, &scalars_for(0));
    let metrics = Tensor::zeros(ctx, "metrics", &[2]);
    let check = grad_check(ctx, &grads, &metrics);

    let mut runs = Vec::new();
    for _ in 0..2 {
        let params = Tensor::from_f32(ctx, "params", &[len], &p0);
        let vel = Tensor::zeros(ctx, "vel", &[len]);
        let m = Tensor::zeros(ctx, "m", &[len]);
        let v = Tensor::zeros(ctx, "v", &[len]);
        let ema = Tensor::from_f32(ctx, "ema", &[len], &p0);
        let sgd = sgd_step(ctx, &params, &grads, &vel, &mask_t, &scalars, 0.9, true);
        let adam = adam_step(ctx, &params, &grads, &m, &v, &mask_t, &scalars, 0.9, 0.999, 1e-7);
        let ema_op = ema_update(ctx, &ema, &params, 0.999);
        ctx.run(&[&check[0], &check[1], &sgd, &adam, &ema_op, &sgd, &adam, &ema_op])
            .unwrap();
        runs.push(
            [&metrics, &params, &vel, &m, &v, &ema]
                .iter()
                .map(|t| bits(&t.read_f32(ctx).unwrap()))
                .collect::<Vec<_>>(),
        );
    }
    assert!(runs[0] == runs[1], "optimizer ops differ between two identical runs");
}

#[test]
fn schedules_at_key_points() {
    let close = |what: &str, got: f64, want: f64| {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    };
    // T divisible by 4 so T/4 and T/2 are exact.
    for total in [8u64, 131_072, 1000] {
        let (q, h) = (total / 4, total / 2);
        // Paper: 0.03 cos(acos(0.25) t/T); with c = cos(theta) = 0.25, the half-angle formula
        // gives cos(theta/2) = sqrt((1 + c)/2) and cos(theta/4) = sqrt((1 + cos(theta/2))/2).
        let c2 = (1.25f64 / 2.0).sqrt();
        let c4 = ((1.0 + c2) / 2.0).sqrt();
        close("paper lr t=0", lr_paper(0.03, 0, total), 0.03);
        close("paper lr t=T/4", lr_paper(0.03, q, total), 0.03 * c4);
        close("paper lr t=T/2", lr_paper(0.03, h, total), 0.03 * c2);
        close("paper lr t=T", lr_paper(0.03, total, total), 0.0075);
        close("paper lr t=2T", lr_paper(0.03, 2 * total, total), 0.0075);
        assert!(lr_paper(0.03, h + 1, total) < lr_paper(0.03, h, total));

        // Keras CosineDecay(0.03, T, alpha=0.25).
        let k = |t| lr_keras_cosine(0.03, t, total, 0.25);
        close("keras lr t=0", k(0), 0.03);
        close(
            "keras lr t=T/4",
            k(q),
            0.03 * (0.75 * 0.5 * (1.0 + 0.5f64.sqrt()) + 0.25),
        );
        close("keras lr t=T/2", k(h), 0.03 * (0.75 * 0.5 + 0.25));
        close("keras lr t=T", k(total), 0.0075);
        close("keras lr t=3T", k(3 * total), 0.0075);

        close("mu t=0", mu_warmup(0, total), 0.0);
        close("mu t=T/4", mu_warmup(q, total), 0.5);
        // Exactly 1 from T/2 on.
        for t in [h, h + 1, total - 1, total, 5 * total] {
            assert_eq!(mu_warmup(t, total), 1.0, "mu t={t} T={total}");
        }
        assert!(mu_warmup(h - 1, total) < 1.0);
    }
    // Odd T: exactly 1 from the first step at or past T/2.
    for total in [7u64, 937] {
        for t in total.div_ceil(2)..=2 * total {
            assert_eq!(mu_warmup(t, total), 1.0, "mu t={t} T={total}");
        }
        assert!(mu_warmup(total / 2, total) < 1.0);
    }
    assert_eq!(lr_paper(0.03, 131_072, 131_072) as f32, 0.0075f32);
}

/// More than 65,535 workgroups of 256: the dispatch is split into 2D by `grid_1d`, and every
/// element (including the last) must still be updated exactly once. Values chosen so the
/// expected result is exact: ema 0, x 1, decay 0.5 -> 0.5 everywhere.
#[test]
fn ema_covers_a_2d_dispatch() {
    let ctx = ctx();
    let len = 65_535 * 256 + 300;
    let ema = Tensor::zeros(ctx, "ema", &[len]);
    let x = Tensor::from_f32(ctx, "x", &[len], &vec![1.0; len]);
    let op = ema_update(ctx, &ema, &x, 0.5);
    assert!(op.workgroups[1] > 1, "expected a 2D dispatch, got {:?}", op.workgroups);
    ctx.run(&[&op]).unwrap();
    let got = ema.read_f32(ctx).unwrap();
    if let Some(i) = got.iter().position(|&v| v != 0.5) {
        panic!("2D ema: element {i} of {len} is {}", got[i]);
    }
}
