//! The AdaMatch loss on the GPU against the f64 reference, over several consecutive steps (so the
//! paper's EMA and history ring evolve, and wrap), for both presets, on odd sizes.

use adamatch_wgpu::gpu::{GpuContext, Tensor};
use adamatch_wgpu::kernels::adamatch::{
    AdaMatchLoss, AdaMatchLossConfig, Alignment, PseudoLabel, METRIC_C_TAU, METRIC_MASK_RATE, METRIC_MU, METRIC_NAMES,
    METRIC_SOURCE_LOSS, METRIC_TARGET_LOSS, METRIC_TOTAL_LOSS, SCALAR_MU_INDEX,
};

use crate::ctx;
use crate::reference::adamatch::{self as cpu, RefAlignment, RefConfig, RefState, RefStep};
use crate::reference::{assert_close, random_vec, to_f64};

// z is two products and a sum per element: f32 rounding only.
const Z_RTOL: f64 = 1e-6;
const Z_ATOL: f64 = 1e-6;
// Ratio and c_tau: f32 softmaxes averaged over <= 192 rows (and <= 128 history slots).
const ALIGN_RTOL: f64 = 2e-5;
const ALIGN_ATOL: f64 = 1e-7;
// y_tilde: a product and an L1 normalisation of the above.
const Y_RTOL: f64 = 1e-4;
const Y_ATOL: f64 = 1e-7;
// Losses are f32 sums of a few hundred cross-entropies.
const LOSS_RTOL: f64 = 1e-4;
const LOSS_ATOL: f64 = 1e-6;
// Gradients are O(1/B); p - t can cancel to f32 epsilon.
const GRAD_RTOL: f64 = 1e-4;
const GRAD_ATOL: f64 = 1e-6;
// Generated steps keep every max(y_tilde) this far from c_tau and from the second largest
// y_tilde, so the f32 mask and argmax must equal the f64 ones.
const DECISION_MARGIN: f64 = 1e-4;

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn ref_config(cfg: &AdaMatchLossConfig) -> RefConfig {
    RefConfig {
        batch: cfg.batch,
        uratio: cfg.uratio,
        classes: cfg.classes,
        tau: cfg.tau as f64,
        alignment: match cfg.alignment {
            Alignment::Paper {
                ema_momentum,
                history,
                prefill_uniform,
            } => RefAlignment::Paper {
                ema_momentum: ema_momentum as f64,
                history,
                prefill_uniform,
            },
            Alignment::Keras => RefAlignment::Keras,
        },
        hard_pseudo: cfg.pseudo == PseudoLabel::Hard,
        source_scale: cfg.source_scale as f64,
        labeled_target: cfg.labeled_target,
    }
}

fn paper_with(
    batch: usize,
    uratio: usize,
    classes: usize,
    momentum: f32,
    history: usize,
    prefill: bool,
) -> AdaMatchLossConfig {
    AdaMatchLossConfig {
        alignment: Alignment::Paper {
            ema_momentum: momentum,
            history,
            prefill_uniform: prefill,
        },
        ..AdaMatchLossConfig::paper(batch, uratio, classes)
    }
}

#[derive(Clone)]
struct StepData {
    joint: Vec<f32>,
    source: Vec<f32>,
    lambdas: Vec<f32>,
    labels: Vec<u32>,
}

/// Joint logits in [-4, 4) with each row scaled by a factor in [0.2, 1.8) (so confidences vary),
/// source-pass logits close to the joint ones, lambdas in [0, 1), labels in range.
fn random_step(cfg: &RefConfig, seed: u64) -> StepData {
    let (b, c) = (cfg.labeled_rows(), cfg.classes);
    let rows = cfg.joint_rows();
    let row_scale = random_vec(seed * 7 + 1, rows);
    let joint: Vec<f32> = random_vec(seed * 7 + 2, rows * c)
        .iter()
        .enumerate()
        .map(|(i, v)| 4.0 * v * (1.0 + 0.8 * row_scale[i / c]))
        .collect();
    let source: Vec<f32> = random_vec(seed * 7 + 3, 2 * b * c)
        .iter()
        .zip(&joint)
        .map(|(n, j)| j + 0.7 * n)
        .collect();
    let lambdas: Vec<f32> = random_vec(seed * 7 + 4, 2 * b * c)
        .iter()
        .map(|v| (v + 1.0) * 0.5)
        .collect();
    let labels: Vec<u32> = random_vec(seed * 7 + 5, b)
        .iter()
        .map(|v| (((v + 1.0) * 0.5 * c as f32) as u32).min(c as u32 - 1))
        .collect();
    StepData {
        joint,
        source,
        lambdas,
        labels,
    }
}

fn decisions_are_clear(t: &cpu::RefTargets) -> bool {
    t.mask_margin
        .iter()
        .chain(&t.argmax_margin)
        .all(|&m| m > DECISION_MARGIN)
}

/// A random step for `state` whose masks and argmaxes are away from their thresholds and whose
/// mask has both zeros and ones (searched over seeds, deterministically).
fn pick_step(cfg: &RefConfig, state: &RefState, seed: u64) -> StepData {
    for attempt in 0..500 {
        let d = random_step(cfg, seed * 1000 + attempt);
        let (t, _) = cpu::adamatch_targets(cfg, state, &to_f64(&d.joint), &to_f64(&d.source), &to_f64(&d.lambdas));
        let ones = t.mask.iter().filter(|&&m| m == 1.0).count();
        if decisions_are_clear(&t) && ones > 0 && ones < t.mask.len() {
            return d;
        }
    }
    panic!("no usable random step for {cfg:?} (seed {seed})");
}

/// The loss with its input and output tensors.
struct Rig {
    joint: Tensor,
    source: Tensor,
    labels: Tensor,
    scalars: Tensor,
    d_joint: Tensor,
    d_source: Tensor,
    loss: AdaMatchLoss,
}

/// What the GPU produced in one step.
struct Out {
    z: Vec<f32>,
    align: Vec<f32>,
    y_tilde: Vec<f32>,
    pseudo: Vec<u32>,
    mask: Vec<f32>,
    metrics: Vec<f32>,
    d_joint: Vec<f32>,
    d_source: Vec<f32>,
    ema: Vec<f32>,
    history: Vec<f32>,
    history_state: Vec<f32>,
}

impl Out {
    fn all_f32(&self) -> Vec<f32> {
        let pseudo: Vec<f32> = self.pseudo.iter().map(|&p| f32::from_bits(p)).collect();
        [
            &self.z,
            &self.align,
            &self.y_tilde,
            &pseudo,
            &self.mask,
            &self.metrics,
            &self.d_joint,
            &self.d_source,
            &self.ema,
            &self.history,
            &self.history_state,
        ]
        .iter()
        .flat_map(|v| v.iter().copied())
        .collect()
    }
}

impl Rig {
    fn new(ctx: &GpuContext, cfg: AdaMatchLossConfig) -> Rig {
        let (b, c) = (cfg.labeled_rows(), cfg.classes);
        let jl = cfg.joint_rows() * c;
        let joint = Tensor::zeros(ctx, "joint", &[cfg.joint_rows(), c]);
        let source = Tensor::zeros(ctx, "source", &[2 * b, c]);
        let labels = Tensor::zeros(ctx, "labels", &[b]);
        let scalars = Tensor::zeros(ctx, "scalars", &[8]);
        // NaN everywhere, so an element the loss forgets to write fails the comparison.
        let d_joint = Tensor::from_f32(ctx, "d_joint", &[cfg.joint_rows(), c], &vec![f32::NAN; jl]);
        let d_source = Tensor::from_f32(ctx, "d_source", &[2 * b, c], &vec![f32::NAN; 2 * b * c]);
        let loss = AdaMatchLoss::new(ctx, &cfg, &joint, &source, &labels, &scalars, &d_joint, &d_source);
        Rig {
            joint,
            source,
            labels,
            scalars,
            d_joint,
            d_source,
            loss,
        }
    }

    fn step(&self, ctx: &GpuContext, d: &StepData, mu: f32) -> Out {
        self.joint.write_f32(ctx, &d.joint);
        self.source.write_f32(ctx, &d.source);
        ctx.queue
            .write_buffer(&self.labels.buffer, self.labels.offset, bytemuck::cast_slice(&d.labels));
        self.loss.lambdas.write_f32(ctx, &d.lambdas);
        let mut scalars = [0.03, 1e-3, 0.1, 0.001, 0.0, 17.0, 0.0, 0.0];
        scalars[SCALAR_MU_INDEX] = mu;
        self.scalars.write_f32(ctx, &scalars);
        let ops: Vec<_> = self.loss.ops().iter().collect();
        ctx.run(&ops).unwrap();
        let r = |t: &Tensor| t.read_f32(ctx).unwrap();
        Out {
            z: r(&self.loss.z),
            align: r(&self.loss.align),
            y_tilde: r(&self.loss.y_tilde),
            pseudo: r(&self.loss.pseudo).iter().map(|v| v.to_bits()).collect(),
            mask: r(&self.loss.mask),
            metrics: r(&self.loss.metrics),
            d_joint: r(&self.d_joint),
            d_source: r(&self.d_source),
            ema: r(&self.loss.p_source_ema),
            history: r(&self.loss.p_target_history),
            history_state: r(&self.loss.history_state),
        }
    }
}

/// Compares one GPU step with the reference step (and, for the paper alignment, the state after
/// it), and checks the target-weak rows of d_joint are exactly zero.
fn check_step(what: &str, cfg: &AdaMatchLossConfig, got: &Out, want: &RefStep, state: &RefState, mu: f32) {
    let (b, ub, c) = (cfg.labeled_rows(), cfg.target_rows(), cfg.classes);
    let t = &want.targets;
    assert_close(&format!("{what} z"), &got.z, &t.z, Z_RTOL, Z_ATOL);
    assert_close(
        &format!("{what} ratio"),
        &got.align[..c],
        &t.ratio,
        ALIGN_RTOL,
        ALIGN_ATOL,
    );
    assert_close(
        &format!("{what} c_tau"),
        &got.align[c..],
        &[t.c_tau],
        ALIGN_RTOL,
        ALIGN_ATOL,
    );
    assert_close(&format!("{what} y_tilde"), &got.y_tilde, &t.y_tilde, Y_RTOL, Y_ATOL);
    assert_eq!(got.pseudo, t.pseudo, "{what}: pseudo-labels");
    assert_eq!(
        got.mask,
        t.mask.iter().map(|&m| m as f32).collect::<Vec<_>>(),
        "{what}: mask"
    );
    assert_close(
        &format!("{what} d_joint"),
        &got.d_joint,
        &want.d_joint,
        GRAD_RTOL,
        GRAD_ATOL,
    );
    assert_close(
        &format!("{what} d_source"),
        &got.d_source,
        &want.d_source,
        GRAD_RTOL,
        GRAD_ATOL,
    );
    assert!(
        got.d_joint[2 * b * c..(2 * b + ub) * c].iter().all(|&g| g == 0.0),
        "{what}: target-weak rows of d_joint must be exactly 0"
    );
    let m = &got.metrics;
    assert_eq!(m.len(), METRIC_NAMES.len());
    let loss_names = [METRIC_TOTAL_LOSS, METRIC_SOURCE_LOSS, METRIC_TARGET_LOSS];
    assert_close(
        &format!("{what} metrics total/source/target"),
        &loss_names.map(|i| m[i]),
        &[want.total_loss, want.source_loss, want.target_loss],
        LOSS_RTOL,
        LOSS_ATOL,
    );
    assert_close(
        &format!("{what} mask rate"),
        &[m[METRIC_MASK_RATE]],
        &[want.mask_rate],
        0.0,
        1e-6,
    );
    assert_close(
        &format!("{what} metric c_tau"),
        &[m[METRIC_C_TAU]],
        &[t.c_tau],
        ALIGN_RTOL,
        ALIGN_ATOL,
    );
    assert_eq!(m[METRIC_MU], mu, "{what}: metric mu");

    if let Alignment::Paper { history, .. } = cfg.alignment {
        assert_close(
            &format!("{what} EMA state"),
            &got.ema,
            &state.p_source_ema,
            ALIGN_RTOL,
            ALIGN_ATOL,
        );
        let (next, filled) = (got.history_state[0] as usize, got.history_state[1] as usize);
        assert_eq!(filled, state.target_means.len(), "{what}: history slots filled");
        // The ring in arrival order: slots [0, filled) until it wraps, then from `next` on.
        let order: Vec<usize> = if filled < history {
            assert_eq!(next, filled, "{what}: next history slot");
            (0..filled).collect()
        } else {
            (0..history).map(|i| (next + i) % history).collect()
        };
        let ring: Vec<f32> = order
            .iter()
            .flat_map(|&s| got.history[s * c..(s + 1) * c].iter().copied())
            .collect();
        let want_ring: Vec<f64> = state.target_means.iter().flatten().copied().collect();
        assert_close(
            &format!("{what} history state"),
            &ring,
            &want_ring,
            ALIGN_RTOL,
            ALIGN_ATOL,
        );
    }
}

/// Runs `steps` consecutive steps on one loss and the reference, checking each.
fn run_steps(cfg: AdaMatchLossConfig, steps: usize, seed: u64) {
    let ctx = ctx();
    let rig = Rig::new(ctx, cfg);
    let rcfg = ref_config(&cfg);
    let mut state = RefState::new(&rcfg);
    for step in 0..steps {
        let d = pick_step(&rcfg, &state, seed + step as u64);
        let mu = 0.15 + 0.2 * step as f32;
        let got = rig.step(ctx, &d, mu);
        let (want, next) = cpu::adamatch_step(
            &rcfg,
            &state,
            &to_f64(&d.joint),
            &to_f64(&d.source),
            &to_f64(&d.lambdas),
            &d.labels,
            mu as f64,
        );
        state = next;
        let what = format!("{cfg:?} step {step}");
        check_step(&what, &cfg, &got, &want, &state, mu);
    }
}

#[test]
fn paper_matches_reference_over_steps() {
    // The preset (EMA 0.999, 128-slot history).
    run_steps(AdaMatchLossConfig::paper(5, 3, 10), 4, 10);
    // A fast EMA and a 3-slot history wrapped twice.
    run_steps(paper_with(3, 2, 7, 0.8, 3, false), 7, 20);
    // objax's history: full of 1/C from the start.
    run_steps(paper_with(3, 2, 7, 0.9, 4, true), 6, 30);
}

#[test]
fn keras_matches_reference_over_steps() {
    run_steps(AdaMatchLossConfig::keras_example(5, 3, 10), 3, 40);
    run_steps(AdaMatchLossConfig::keras_example(3, 2, 7), 3, 50);
}

/// The references' batch size, more classes than 10, and the other pseudo-label kind for each
/// alignment.
#[test]
fn other_shapes_match_reference() {
    run_steps(AdaMatchLossConfig::paper(64, 3, 10), 2, 60);
    run_steps(AdaMatchLossConfig::keras_example(64, 3, 10), 1, 70);
    run_steps(paper_with(7, 2, 33, 0.9, 5, false), 2, 80);
    let keras_hard = AdaMatchLossConfig {
        pseudo: PseudoLabel::Hard,
        ..AdaMatchLossConfig::keras_example(4, 1, 5)
    };
    run_steps(keras_hard, 2, 90);
    let paper_soft = AdaMatchLossConfig {
        pseudo: PseudoLabel::Soft,
        ..paper_with(2, 5, 3, 0.5, 2, false)
    };
    run_steps(paper_soft, 3, 100);
}

/// Semi-supervised domain adaptation: T labeled target rows after the B source rows of each
/// labeled view (interpolated and supervised like them, out of the alignment and c_tau), T = B
/// as the trainer uses it and T != B.
#[test]
fn labeled_target_rows_match_reference() {
    run_steps(
        AdaMatchLossConfig {
            labeled_target: 5,
            ..AdaMatchLossConfig::paper(5, 3, 10)
        },
        3,
        110,
    );
    run_steps(
        AdaMatchLossConfig {
            labeled_target: 2,
            ..paper_with(3, 2, 7, 0.8, 3, false)
        },
        4,
        120,
    );
    run_steps(
        AdaMatchLossConfig {
            labeled_target: 3,
            ..AdaMatchLossConfig::keras_example(3, 2, 7)
        },
        2,
        130,
    );
}

/// mu only scales the target terms: the source gradients and losses are bitwise unchanged, the
/// target-strong gradient is mu times the mu = 1 one (exact for mu = 0.5, 0), total = source +
/// mu * target.
#[test]
fn mu_scales_only_the_target_terms() {
    let ctx = ctx();
    for cfg in [
        AdaMatchLossConfig::paper(5, 3, 10),
        AdaMatchLossConfig::keras_example(5, 3, 10),
    ] {
        let rig = Rig::new(ctx, cfg);
        let rcfg = ref_config(&cfg);
        let d = pick_step(&rcfg, &RefState::new(&rcfg), 200);
        let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
        let strong = (2 * b + ub) * c..;
        let mut runs = Vec::new();
        for mu in [1.0f32, 0.5, 0.0] {
            rig.loss.reset_state(ctx);
            runs.push((mu, rig.step(ctx, &d, mu)));
        }
        let (_, one) = &runs[0];
        assert!(one.mask.contains(&1.0), "{cfg:?}: the data should have unmasked rows");
        for (mu, out) in &runs {
            let what = format!("{cfg:?} mu={mu}");
            assert!(
                same_bits(&out.d_source, &one.d_source),
                "{what}: d_source changed with mu"
            );
            assert!(
                same_bits(&out.d_joint[..2 * b * c], &one.d_joint[..2 * b * c]),
                "{what}: source rows of d_joint changed with mu"
            );
            let scaled: Vec<f32> = one.d_joint[strong.clone()].iter().map(|g| g * mu).collect();
            assert!(
                same_bits(&out.d_joint[strong.clone()], &scaled),
                "{what}: target-strong gradient is not mu * g"
            );
            let m = &out.metrics;
            assert_eq!(
                m[METRIC_SOURCE_LOSS], one.metrics[METRIC_SOURCE_LOSS],
                "{what}: source loss"
            );
            assert_eq!(
                m[METRIC_TARGET_LOSS], one.metrics[METRIC_TARGET_LOSS],
                "{what}: target loss"
            );
            assert_eq!(
                m[METRIC_TOTAL_LOSS],
                m[METRIC_SOURCE_LOSS] + mu * m[METRIC_TARGET_LOSS],
                "{what}: total loss"
            );
        }
        assert!(
            runs[2].1.d_joint[strong].iter().all(|&g| g == 0.0),
            "mu = 0 must zero the target gradient"
        );
    }
}

/// Source-weak rows with equal logits make c_tau = tau / C, which every y_tilde row exceeds:
/// mask all 1. Confident source-weak rows (c_tau near tau) against flat target rows: mask all 0,
/// and then the target loss and its gradient are exactly 0.
#[test]
fn mask_all_one_and_all_zero() {
    let ctx = ctx();
    for cfg in [
        AdaMatchLossConfig::paper(5, 3, 10),
        AdaMatchLossConfig::keras_example(5, 3, 10),
    ] {
        let rcfg = ref_config(&cfg);
        let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
        let base = random_step(&rcfg, 300);
        for all_one in [true, false] {
            let mut d = base.clone();
            for r in 0..b {
                for k in 0..c {
                    let v = if all_one {
                        0.0
                    } else if k == r % c {
                        12.0
                    } else {
                        0.0
                    };
                    d.joint[r * c + k] = v;
                    d.source[r * c + k] = v;
                }
            }
            if !all_one {
                for v in &mut d.joint[2 * b * c..(2 * b + ub) * c] {
                    *v *= 0.1;
                }
            }
            let rig = Rig::new(ctx, cfg);
            let mu = 0.8;
            let got = rig.step(ctx, &d, mu);
            let state = RefState::new(&rcfg);
            let (want, next) = cpu::adamatch_step(
                &rcfg,
                &state,
                &to_f64(&d.joint),
                &to_f64(&d.source),
                &to_f64(&d.lambdas),
                &d.labels,
                mu as f64,
            );
            let what = format!("{cfg:?} all_one={all_one}");
            assert!(
                want.targets.mask_margin.iter().all(|&m| m > DECISION_MARGIN),
                "{what}: test data too close to the threshold"
            );
            check_step(&what, &cfg, &got, &want, &next, mu);
            let expect = if all_one { 1.0 } else { 0.0 };
            assert!(got.mask.iter().all(|&m| m == expect), "{what}: mask {:?}", got.mask);
            assert_eq!(got.metrics[METRIC_MASK_RATE], expect, "{what}: mask rate");
            if !all_one {
                assert_eq!(got.metrics[METRIC_TARGET_LOSS], 0.0, "{what}: target loss");
                assert!(
                    got.d_joint[2 * b * c..].iter().all(|&g| g == 0.0),
                    "{what}: all target rows of d_joint must be 0"
                );
            }
        }
    }
}

/// Same inputs and state => bitwise the same outputs and state, step after step.
#[test]
fn bitwise_deterministic() {
    let ctx = ctx();
    for cfg in [
        paper_with(5, 3, 10, 0.9, 3, false),
        AdaMatchLossConfig::keras_example(3, 2, 7),
    ] {
        let rig = Rig::new(ctx, cfg);
        let rcfg = ref_config(&cfg);
        let data: Vec<StepData> = (0..4).map(|s| random_step(&rcfg, 400 + s)).collect();
        let mut first = Vec::new();
        for run in 0..2 {
            rig.loss.reset_state(ctx);
            for (s, d) in data.iter().enumerate() {
                let out = rig.step(ctx, d, 0.7).all_f32();
                if run == 0 {
                    first.push(out);
                } else {
                    assert!(same_bits(&first[s], &out), "{cfg:?} step {s}: not deterministic");
                }
            }
        }
    }
}

/// Saving the state tensors after two steps and loading them into a fresh loss gives bitwise
/// the same third step; reset_state restores the initial state.
#[test]
fn state_tensors_round_trip_and_reset() {
    let ctx = ctx();
    let cfg = paper_with(3, 2, 7, 0.9, 3, false);
    let rcfg = ref_config(&cfg);
    let data: Vec<StepData> = (0..3).map(|s| random_step(&rcfg, 500 + s)).collect();
    let a = Rig::new(ctx, cfg);
    let b = Rig::new(ctx, cfg);
    let initial: Vec<Vec<f32>> = b
        .loss
        .state_tensors()
        .iter()
        .map(|(_, t)| t.read_f32(ctx).unwrap())
        .collect();
    assert_eq!(initial[0], vec![1.0 / 7.0; 7], "EMA starts uniform");
    assert_eq!(initial[2], vec![0.0, 0.0], "history starts empty");
    a.step(ctx, &data[0], 0.3);
    a.step(ctx, &data[1], 0.3);
    for ((name_a, ta), (name_b, tb)) in a.loss.state_tensors().iter().zip(b.loss.state_tensors().iter()) {
        assert_eq!(name_a, name_b);
        tb.write_f32(ctx, &ta.read_f32(ctx).unwrap());
    }
    let out_a = a.step(ctx, &data[2], 0.3).all_f32();
    let out_b = b.step(ctx, &data[2], 0.3).all_f32();
    assert!(same_bits(&out_a, &out_b), "restored state gives a different step");
    a.loss.reset_state(ctx);
    let reset: Vec<Vec<f32>> = a
        .loss
        .state_tensors()
        .iter()
        .map(|(_, t)| t.read_f32(ctx).unwrap())
        .collect();
    assert_eq!(reset, initial, "reset_state");
}

/// The reference gradient is the gradient of the reference loss with the step constants held
/// (f64 central differences on every joint and source logit), for both presets; and for hard
/// pseudo-labels also of the full step, whose mask and argmax are locally constant.
#[test]
fn reference_gradient_matches_finite_differences() {
    for cfg in [
        paper_with(3, 2, 7, 0.9, 4, false),
        AdaMatchLossConfig::keras_example(3, 2, 7),
        AdaMatchLossConfig::paper(2, 3, 5),
        AdaMatchLossConfig {
            labeled_target: 2,
            ..AdaMatchLossConfig::paper(2, 3, 5)
        },
    ] {
        let rcfg = ref_config(&cfg);
        // A state that has seen a step already.
        let s0 = RefState::new(&rcfg);
        let warm = random_step(&rcfg, 600);
        let (_, state) = cpu::adamatch_targets(
            &rcfg,
            &s0,
            &to_f64(&warm.joint),
            &to_f64(&warm.source),
            &to_f64(&warm.lambdas),
        );
        let d = pick_step(&rcfg, &state, 610);
        let (joint, source, lambdas) = (to_f64(&d.joint), to_f64(&d.source), to_f64(&d.lambdas));
        let mu = 0.6;
        let (t, _) = cpu::adamatch_targets(&rcfg, &state, &joint, &source, &lambdas);
        let (dj, ds) = cpu::adamatch_grads(&rcfg, &t, &joint, &source, &lambdas, &d.labels, mu);
        let fixed = |j: &[f64], s: &[f64]| cpu::adamatch_losses(&rcfg, &t, j, s, &lambdas, &d.labels, mu).2;
        let full = |j: &[f64], s: &[f64]| {
            cpu::adamatch_step(&rcfg, &state, j, s, &lambdas, &d.labels, mu)
                .0
                .total_loss
        };
        let eps = 1e-6;
        let check = |what: &str, f: &dyn Fn(&[f64], &[f64]) -> f64| {
            for (which, analytic) in [("joint", &dj), ("source", &ds)] {
                for i in 0..analytic.len() {
                    let (mut jp, mut jm, mut sp, mut sm) =
                        (joint.clone(), joint.clone(), source.clone(), source.clone());
                    if which == "joint" {
                        jp[i] += eps;
                        jm[i] -= eps;
                    } else {
                        sp[i] += eps;
                        sm[i] -= eps;
                    }
                    let fd = (f(&jp, &sp) - f(&jm, &sm)) / (2.0 * eps);
                    assert!(
                        (fd - analytic[i]).abs() < 1e-8 + 1e-6 * fd.abs(),
                        "{cfg:?} {what}: d/d{which}[{i}] analytic {} vs finite difference {fd}",
                        analytic[i]
                    );
                }
            }
        };
        check("step constants held", &fixed);
        if rcfg.hard_pseudo {
            check("full step", &full);
        }
        // The target-weak rows carry no gradient and y_tilde rows are distributions.
        let (b, ub, c) = (cfg.labeled_rows(), cfg.target_rows(), cfg.classes);
        assert!(dj[2 * b * c..(2 * b + ub) * c].iter().all(|&g| g == 0.0));
        for j in 0..ub {
            let s: f64 = t.y_tilde[j * c..(j + 1) * c].iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "y_tilde row {j} sums to {s}");
        }
    }
}
