use adamatch_wgpu::network::{Activation, Architecture, Pass, ShortcutInput, WideResNet, WideResNetConfig, Workspace};

use crate::reference::network::{self as cpu, Mode};
use crate::reference::to_f64;
use crate::{ctx, input, labels, named, perturbed_net, ref_config, small_config, small_setup, GpuLoss, BACKWARD};

/// ||gpu - cpu|| / ||cpu|| per tensor: f32 sums over thousands of terms through a dozen layers
/// stay within this of the f64 reference.
const TENSOR_RTOL: f64 = 2e-4;

fn rel_err(gpu: &[f64], cpu: &[f64]) -> f64 {
    let num: f64 = gpu.iter().zip(cpu).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    let den: f64 = cpu.iter().map(|b| b * b).sum::<f64>().sqrt();
    num / den.max(1e-12)
}

#[test]
fn wrn_28_2_has_the_keras_parameter_count() {
    // REFERENCE.md: 1,471,226 parameters counted the Keras way (BN moving statistics included).
    let arch = Architecture::new(&WideResNetConfig::keras()).unwrap();
    assert_eq!(arch.keras_param_count(), 1_471_226);
    let arch = Architecture::new(&WideResNetConfig::paper()).unwrap();
    assert_eq!(arch.keras_param_count(), 1_471_226);
    assert_eq!(WideResNetConfig::paper().shortcut, ShortcutInput::Official);
    assert_eq!(WideResNetConfig::keras().shortcut, ShortcutInput::Activated);
    assert_eq!(ShortcutInput::default(), ShortcutInput::Activated);
    // And one 32x32 image costs 0.429 GFLOP forward.
    let gflop = arch.forward_flops_per_image() / 1e9;
    assert!((gflop - 0.429).abs() < 0.005, "forward GFLOP per image {gflop}");
}

#[test]
fn bad_depth_is_an_error() {
    let cfg = WideResNetConfig {
        depth: 12,
        ..WideResNetConfig::paper()
    };
    let err = Architecture::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("6n + 4"), "{err}");
}

/// Forward (train then inference) and backward of the GPU network against the reference.
fn check_against_reference(cfg: WideResNetConfig, batch: usize, seed: u64) {
    let ctx = ctx();
    let (activation, width, shortcut, depth) = (cfg.activation, cfg.width, cfg.shortcut, cfg.depth);
    let rc = ref_config(&cfg);
    let net = perturbed_net(ctx, cfg.clone(), seed);
    let params = named(net.param_specs(), &net.read_params(ctx).unwrap());
    let mut running = named(net.running_specs(), &net.read_running(ctx).unwrap());
    let x = input(&cfg, batch, seed);
    let y = labels(batch, seed);

    let mut ws = Workspace::new(ctx, &net, batch, true);
    ws.input.write_f32(ctx, &x);
    let loss = GpuLoss::new(ctx, &ws, &y, cfg.num_classes);

    // Training mode: batch statistics, running statistics updated.
    let gpu_loss = loss.run(
        ctx,
        &net,
        &mut ws,
        Pass::ForwardTrain { update_running: true },
        Some(Pass::Backward {
            batch_stats: true,
            accumulate: false,
        }),
    );
    let (logits, cache) = cpu::forward(&rc, &params, &mut running, &to_f64(&x), batch, Mode::Train);
    let (cpu_loss, d_logits) = cpu::mean_ce(&logits, &y, cfg.num_classes);
    let what = format!("{activation:?} depth {depth} width {width} {shortcut:?} shortcuts, batch {batch}");
    let gl = to_f64(&ws.logits.read_f32(ctx).unwrap());
    assert!(
        rel_err(&gl, &logits) < TENSOR_RTOL,
        "{what}: train logits rel err {}",
        rel_err(&gl, &logits)
    );
    assert!(
        (gpu_loss as f64 - cpu_loss).abs() < 1e-4 * cpu_loss.abs().max(1.0),
        "{what}: loss {gpu_loss} vs {cpu_loss}"
    );

    let gpu_running = named(net.running_specs(), &net.read_running(ctx).unwrap());
    for (name, want) in &running {
        let e = rel_err(&gpu_running[name], want);
        assert!(e < TENSOR_RTOL, "{what}: running stat {name} rel err {e}");
    }

    let (grads, d_input) = cpu::backward(&rc, &params, &running, &cache, &d_logits);
    let gpu_grads = named(net.param_specs(), &net.read_grads(ctx).unwrap());
    assert_eq!(
        grads.len(),
        gpu_grads.len(),
        "{what}: reference and GPU disagree on the parameter set"
    );
    for (name, want) in &grads {
        let e = rel_err(&gpu_grads[name], want);
        assert!(e < TENSOR_RTOL, "{what}: gradient of {name}: rel err {e}");
    }
    let gd = to_f64(&ws.d_input.as_ref().unwrap().read_f32(ctx).unwrap());
    assert!(
        rel_err(&gd, &d_input) < TENSOR_RTOL,
        "{what}: input gradient rel err {}",
        rel_err(&gd, &d_input)
    );

    // Inference mode against the (now updated) running statistics, with its own backward.
    loss.run(
        ctx,
        &net,
        &mut ws,
        Pass::ForwardInference,
        Some(Pass::Backward {
            batch_stats: false,
            accumulate: false,
        }),
    );
    let (logits, cache) = cpu::forward(&rc, &params, &mut running, &to_f64(&x), batch, Mode::Inference);
    let gl = to_f64(&ws.logits.read_f32(ctx).unwrap());
    assert!(
        rel_err(&gl, &logits) < TENSOR_RTOL,
        "{what}: inference logits rel err {}",
        rel_err(&gl, &logits)
    );
    let (_, d_logits) = cpu::mean_ce(&logits, &y, cfg.num_classes);
    let (grads, d_input) = cpu::backward(&rc, &params, &running, &cache, &d_logits);
    let gpu_grads = named(net.param_specs(), &net.read_grads(ctx).unwrap());
    for (name, want) in &grads {
        let e = rel_err(&gpu_grads[name], want);
        assert!(
            e < TENSOR_RTOL,
            "{what}: inference-mode gradient of {name}: rel err {e}"
        );
    }
    let gd = to_f64(&ws.d_input.as_ref().unwrap().read_f32(ctx).unwrap());
    assert!(
        rel_err(&gd, &d_input) < TENSOR_RTOL,
        "{what}: inference input gradient rel err {}",
        rel_err(&gd, &d_input)
    );
}

// Width 1: stage 1's block has an identity shortcut (from the raw input under `Activated`, from
// the BN-act output under `Official`), stages 2 and 3 projections (from the BN-act output under
// `Activated`, from the raw input under `Official`).
#[test]
fn leaky_width1_activated_matches_reference() {
    check_against_reference(small_config(Activation::Leaky(0.1), 1, ShortcutInput::Activated), 3, 1);
}

#[test]
fn leaky_width1_official_matches_reference() {
    check_against_reference(small_config(Activation::Leaky(0.1), 1, ShortcutInput::Official), 3, 1);
}

// Width 2: every stage's first block has a projection shortcut (stage 1's from the BN-act output
// under both rules).
#[test]
fn relu_width2_activated_matches_reference() {
    check_against_reference(small_config(Activation::Relu, 2, ShortcutInput::Activated), 2, 2);
}

#[test]
fn relu_width2_official_matches_reference() {
    check_against_reference(small_config(Activation::Relu, 2, ShortcutInput::Official), 2, 2);
}

/// Depth 16: each stage's second block has an identity shortcut from the raw input, after a
/// first block whose shortcut reads the BN-act output (stage 1) or the raw input (stages 2, 3).
#[test]
fn leaky_depth16_official_matches_reference() {
    let cfg = WideResNetConfig {
        depth: 16,
        ..small_config(Activation::Leaky(0.1), 1, ShortcutInput::Official)
    };
    check_against_reference(cfg, 2, 3);
}

/// Inference-mode logits of the GPU network and of the reference under `cfg` (its shortcut rule)
/// on the parameters and running statistics of `source`.
fn logits_with(cfg: &WideResNetConfig, source: &WideResNet, batch: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let ctx = ctx();
    let net = WideResNet::new(ctx, cfg.clone(), 0).unwrap();
    let flat = source.read_params(ctx).unwrap();
    let running = source.read_running(ctx).unwrap();
    net.write_params(ctx, &flat);
    net.write_running(ctx, &running);
    let x = input(cfg, batch, seed);
    let mut ws = Workspace::new(ctx, &net, batch, false);
    ws.input.write_f32(ctx, &x);
    ws.run(ctx, &net, Pass::ForwardInference).unwrap();
    let gpu = to_f64(&ws.logits.read_f32(ctx).unwrap());
    let mut r = named(net.running_specs(), &running);
    let (cpu, _) = cpu::forward(
        &ref_config(cfg),
        &named(net.param_specs(), &flat),
        &mut r,
        &to_f64(&x),
        batch,
        Mode::Inference,
    );
    (gpu, cpu)
}

/// The two shortcut rules share every tensor but compute different functions: on the same
/// parameters their logits differ (on the GPU and in the reference alike). At width 2 they differ
/// only in the stage 2 and 3 projections' input, so with those kernels zeroed they agree; at width 1
/// stage 1's identity shortcut still tells them apart.
#[test]
fn shortcut_rules_differ_on_the_same_parameters() {
    let ctx = ctx();
    for width in [1, 2] {
        let activated = small_config(Activation::Leaky(0.1), width, ShortcutInput::Activated);
        let official = small_config(Activation::Leaky(0.1), width, ShortcutInput::Official);
        let layout = |cfg: &WideResNetConfig| {
            let arch = Architecture::new(cfg).unwrap();
            arch.param_specs()
                .iter()
                .chain(arch.running_specs())
                .map(|s| (s.name.clone(), s.shape.clone(), s.offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            layout(&activated),
            layout(&official),
            "width {width}: the rules must share one tensor layout"
        );

        let net = perturbed_net(ctx, activated.clone(), 30 + width as u64);
        let (ga, ca) = logits_with(&activated, &net, 2, 7);
        let (go, co) = logits_with(&official, &net, 2, 7);
        assert!(
            rel_err(&ga, &ca) < TENSOR_RTOL,
            "width {width}: activated logits vs reference"
        );
        assert!(
            rel_err(&go, &co) < TENSOR_RTOL,
            "width {width}: official logits vs reference"
        );
        let (eg, ec) = (rel_err(&go, &ga), rel_err(&co, &ca));
        assert!(eg > 1e-2, "width {width}: the rules give the same GPU logits ({eg})");
        assert!(
            ec > 1e-2,
            "width {width}: the rules give the same reference logits ({ec})"
        );

        // Zero the projections of stages 2 and 3: what remains is stage 1's shortcut.
        let mut flat = net.read_params(ctx).unwrap();
        for s in net.param_specs() {
            if s.name.ends_with(".shortcut") && !s.name.starts_with("stage1.") {
                flat[s.offset..s.offset + s.len()].fill(0.0);
            }
        }
        net.write_params(ctx, &flat);
        let (ga, _) = logits_with(&activated, &net, 2, 7);
        let (go, _) = logits_with(&official, &net, 2, 7);
        let e = rel_err(&go, &ga);
        if width == 1 {
            assert!(
                e > 1e-2,
                "width 1: stage 1's identity shortcut must differ between the rules ({e})"
            );
        } else {
            assert!(
                e < 1e-6,
                "width 2: stage 1's projection reads the BN-act output under both rules ({e})"
            );
        }
    }
}

/// The reference's analytic gradients against central differences of its own f64 loss, for a
/// sample of parameters of every kind and of the input, under both shortcut rules at widths 1
/// (stage 1 identity) and 2 (stage 1 projection).
#[test]
fn reference_gradients_match_finite_differences() {
    for width in [1, 2] {
        for shortcut in [ShortcutInput::Activated, ShortcutInput::Official] {
            reference_finite_differences(width, shortcut);
        }
    }
}

fn reference_finite_differences(width: usize, shortcut: ShortcutInput) {
    let ctx = ctx();
    let cfg = small_config(Activation::Leaky(0.1), width, shortcut);
    let rc = ref_config(&cfg);
    let batch = 2;
    let net = perturbed_net(ctx, cfg.clone(), 5);
    let params = named(net.param_specs(), &net.read_params(ctx).unwrap());
    let running0 = named(net.running_specs(), &net.read_running(ctx).unwrap());
    let x = to_f64(&input(&cfg, batch, 5));
    let y = labels(batch, 5);
    let loss_of = |p: &cpu::Params, x: &[f64]| {
        let mut r = running0.clone();
        let (logits, _) = cpu::forward(&rc, p, &mut r, x, batch, Mode::Train);
        cpu::mean_ce(&logits, &y, cfg.num_classes).0
    };
    let mut r = running0.clone();
    let (logits, cache) = cpu::forward(&rc, &params, &mut r, &x, batch, Mode::Train);
    let (_, d_logits) = cpu::mean_ce(&logits, &y, cfg.num_classes);
    let (grads, d_input) = cpu::backward(&rc, &params, &running0, &cache, &d_logits);

    let h = 1e-5;
    let check = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            (fd - analytic).abs() <= 1e-6 + 1e-4 * fd.abs(),
            "width {width} {shortcut:?}: {what}: finite difference {fd} vs analytic {analytic}"
        );
    };
    let mut names = vec![
        "stem.conv",
        "stage1.block0.bn1.gamma",
        "stage1.block0.bn1.beta",
        "stage1.block0.conv1",
        "stage2.block0.shortcut",
        "stage2.block0.bn2.gamma",
        "stage3.block0.conv2",
        "head.bn.beta",
        "head.dense.kernel",
        "head.dense.bias",
    ];
    if width > 1 {
        names.push("stage1.block0.shortcut");
    }
    for name in names {
        let len = params[name].len();
        for k in [0, len / 3, len - 1] {
            let mut p = params.clone();
            p.get_mut(name).unwrap()[k] += h;
            let plus = loss_of(&p, &x);
            p.get_mut(name).unwrap()[k] -= 2.0 * h;
            let minus = loss_of(&p, &x);
            check(&format!("{name}[{k}]"), grads[name][k], plus, minus);
        }
    }
    for k in [0, x.len() / 2, x.len() - 1] {
        let mut xp = x.clone();
        xp[k] += h;
        let plus = loss_of(&params, &xp);
        xp[k] -= 2.0 * h;
        let minus = loss_of(&params, &xp);
        check(&format!("input[{k}]"), d_input[k], plus, minus);
    }
}

/// Central differences of the GPU's own f32 loss against the GPU's gradients. f32 and the
/// activation kinks limit this to a loose tolerance; the tight check is against the reference.
#[test]
fn gpu_gradients_match_finite_differences() {
    gpu_finite_differences(1, ShortcutInput::Activated);
}

#[test]
fn gpu_gradients_match_finite_differences_official() {
    gpu_finite_differences(1, ShortcutInput::Official);
    gpu_finite_differences(2, ShortcutInput::Official);
}

fn gpu_finite_differences(width: usize, shortcut: ShortcutInput) {
    let ctx = ctx();
    let (_, net, mut ws, loss) = small_setup(Activation::Leaky(0.1), width, shortcut, 2, 9, true);
    let train = Pass::ForwardTrain { update_running: false };
    loss.run(ctx, &net, &mut ws, train, Some(BACKWARD));
    let grads = net.read_grads(ctx).unwrap();
    let params = net.read_params(ctx).unwrap();
    let h = 1e-2f32;
    let mut checked = 0;
    for spec in net.param_specs() {
        // The largest-gradient entry of each tensor: well above f32 noise.
        let g = &grads[spec.offset..spec.offset + spec.len()];
        let (k, _) = g
            .iter()
            .enumerate()
            .fold((0, 0.0f32), |b, (i, v)| if v.abs() > b.1 { (i, v.abs()) } else { b });
        let i = spec.offset + k;
        let mut p = params.clone();
        p[i] += h;
        net.write_params(ctx, &p);
        let plus = loss.run(ctx, &net, &mut ws, train, None) as f64;
        p[i] -= 2.0 * h;
        net.write_params(ctx, &p);
        let minus = loss.run(ctx, &net, &mut ws, train, None) as f64;
        let fd = (plus - minus) / (2.0 * h as f64);
        let an = grads[i] as f64;
        assert!(
            (fd - an).abs() <= 2e-3 + 5e-2 * an.abs(),
            "width {width} {shortcut:?}: {}[{k}]: finite difference {fd} vs GPU gradient {an}",
            spec.name
        );
        checked += 1;
    }
    net.write_params(ctx, &params);
    assert_eq!(checked, net.param_specs().len());
}

#[test]
fn forward_backward_is_bitwise_deterministic() {
    for (width, shortcut) in [
        (2, ShortcutInput::Activated),
        (1, ShortcutInput::Official),
        (2, ShortcutInput::Official),
    ] {
        deterministic(width, shortcut);
    }
}

fn deterministic(width: usize, shortcut: ShortcutInput) {
    let ctx = ctx();
    let run = || {
        let (_, net, mut ws, loss) = small_setup(Activation::Leaky(0.1), width, shortcut, 3, 11, false);
        loss.run(
            ctx,
            &net,
            &mut ws,
            Pass::ForwardTrain { update_running: true },
            Some(BACKWARD),
        );
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
        (
            bits(ws.logits.read_f32(ctx).unwrap()),
            bits(net.read_grads(ctx).unwrap()),
            bits(net.read_running(ctx).unwrap()),
        )
    };
    let a = run();
    let b = run();
    let what = format!("width {width} {shortcut:?}");
    assert!(a.0 == b.0, "{what}: logits differ between identical runs");
    assert!(a.1 == b.1, "{what}: gradients differ between identical runs");
    assert!(a.2 == b.2, "{what}: running statistics differ between identical runs");
}

#[test]
fn accumulating_backward_adds_to_gradients() {
    for shortcut in [ShortcutInput::Activated, ShortcutInput::Official] {
        accumulates(shortcut);
    }
}

fn accumulates(shortcut: ShortcutInput) {
    let ctx = ctx();
    let (_, net, mut ws, loss) = small_setup(Activation::Relu, 1, shortcut, 2, 13, false);
    loss.run(
        ctx,
        &net,
        &mut ws,
        Pass::ForwardTrain { update_running: false },
        Some(BACKWARD),
    );
    let once = net.read_grads(ctx).unwrap();
    ws.run(
        ctx,
        &net,
        Pass::Backward {
            batch_stats: true,
            accumulate: true,
        },
    )
    .unwrap();
    let twice = net.read_grads(ctx).unwrap();
    for (i, (a, b)) in once.iter().zip(&twice).enumerate() {
        assert!(
            (2.0 * a - b).abs() <= 1e-6 * a.abs().max(1e-3),
            "{shortcut:?}: gradient {i}: {a} accumulated to {b}"
        );
    }
}
