//! One AdaMatch (or source-only) step of a small network on the GPU equals the f64 reference
//! step (`tests/reference/train_step.rs`): schedules, losses, mask, gradients, and the change of
//! the weights, running statistics, optimizer state, EMA and alignment state, for the `paper`
//! and `keras-example` presets shrunk to WRN-10-1, B = 2, uratio = 2, T = 10.
//!
//! The trainer runs several steps on its own state; before each, the reference is given that
//! state as read back from the GPU (what a checkpoint holds) and the batch the trainer drew, so
//! every step is compared from identical inputs and f32 drift does not compound over steps.
//!
//! Known limit: the gradient is discontinuous where a batch-norm output sits on the activation's
//! kink (z = 0). With ~10^6 pre-activations per step, a few lie within 1e-6 (relative) of it, and
//! rarely f32 rounding puts one on the other side, which moves upstream gradients by up to ~1e-2
//! of their norm. The data here are chosen clear of that on lavapipe; every failure message says
//! the step's smallest such margin ([`activation_margin`](crate::reference::network::activation_margin))
//! so that case can be told from a bug.

use std::collections::HashMap;
use std::path::Path;

use adamatch_wgpu::data::spec::{load_sized, DatasetSpec, Split};
use adamatch_wgpu::data::synth::{SynthDomain, SynthStream};
use adamatch_wgpu::data::{Preprocess, Source};
use adamatch_wgpu::network::{ShortcutInput, TensorSpec};
use adamatch_wgpu::train::config::{
    Algorithm, AlignmentKind, AugmentStyle, LrSchedule, Optimizer, PseudoLabels, SourcePassBn, TrainConfig,
};
use adamatch_wgpu::train::trainer::Trainer;

use crate::reference::adamatch::{RefAlignment, RefConfig as LossConfig};
use crate::reference::fixmatch::RefConfig as FixConfig;
use crate::reference::network::{Params, RefConfig as NetConfig, RefShortcut};
use crate::reference::train_step::{
    train_step, RefLr, RefOptState, RefOptimizer, RefStepOut, RefTrainConfig, RefTrainState,
};
use crate::{ctx, named};

/// Per-tensor ||gpu - cpu|| / ||cpu|| of the *change* of a state tensor since the start (f32
/// against f64 through a dozen layers and two passes; the change is small next to the weights,
/// so comparing absolute values would hide errors in it).
const STATE_RTOL: f64 = 1e-3;
/// Losses, c_tau and the alignment state: f32 reductions of a few hundred terms.
const LOSS_RTOL: f64 = 1e-4;
/// Masks and hard pseudo-labels are step functions: the data must keep them this far from
/// flipping, so that f32 rounding cannot flip them.
const MIN_MARGIN: f64 = 1e-4;

/// A hyperparameter given as f32 as the frameworks read it: the decimal it prints as.
fn dec(x: f32) -> f64 {
    x.to_string().parse().unwrap()
}

/// A preset shrunk to a test: WRN-10-1 (the preset's activation, BN momentum and input scale
/// kept), B = 2, uratio = 2, T = 10.
fn small_config(preset: &str, algorithm: Algorithm, seed: u64) -> TrainConfig {
    let mut cfg = TrainConfig::preset(preset).unwrap();
    cfg.network.depth = 10;
    cfg.network.width = 1;
    cfg.batch = 2;
    cfg.uratio = 2;
    cfg.steps = 10;
    cfg.source_steps = 0;
    cfg.algorithm = algorithm;
    cfg.seed = seed;
    cfg
}

/// The reference's reading of a configuration.
fn reference_config(cfg: &TrainConfig) -> RefTrainConfig {
    let n = &cfg.network;
    let net = NetConfig {
        depth: n.depth,
        width: n.width,
        slope: n.activation.slope() as f64,
        eps: n.bn_eps as f64,
        momentum: dec(n.bn_momentum),
        classes: n.num_classes,
        image_size: n.image_size,
        shortcut: match n.shortcut {
            ShortcutInput::Activated => RefShortcut::Activated,
            ShortcutInput::Official => RefShortcut::Official,
        },
    };
    let adamatch = (cfg.algorithm == Algorithm::Adamatch).then(|| LossConfig {
        batch: cfg.batch,
        uratio: cfg.uratio,
        classes: n.num_classes,
        tau: dec(cfg.tau),
        alignment: match cfg.alignment {
            // The official code's objax averages: EMA from 1/C, a 128-slot history full of 1/C.
            AlignmentKind::Paper => RefAlignment::Paper {
                ema_momentum: 0.999,
                history: 128,
                prefill_uniform: true,
            },
            AlignmentKind::Keras => RefAlignment::Keras,
        },
        hard_pseudo: cfg.pseudo_labels == PseudoLabels::Hard,
        source_scale: dec(cfg.source_scale),
        labeled_target: cfg.labeled_target_batch,
    });
    let fixmatch = (cfg.algorithm == Algorithm::Fixmatch).then(|| FixConfig {
        batch: cfg.labeled_batch(),
        uratio: cfg.uratio,
        classes: n.num_classes,
        threshold: dec(cfg.confidence),
    });
    RefTrainConfig {
        net,
        adamatch,
        fixmatch,
        batch: cfg.batch,
        labeled_target: cfg.labeled_target_batch,
        source_scale: dec(cfg.source_scale),
        source_pass_batch_stats: cfg.source_pass_bn == SourcePassBn::Train,
        input_scale: cfg.input_scale,
        optimizer: match cfg.optimizer {
            Optimizer::Sgd { momentum, nesterov } => RefOptimizer::Sgd {
                momentum: dec(momentum),
                nesterov,
            },
            Optimizer::Adam { beta1, beta2, eps } => RefOptimizer::Adam {
                beta1: dec(beta1),
                beta2: dec(beta2),
                eps: dec(eps),
            },
        },
        lr: dec(cfg.lr),
        lr_schedule: match cfg.lr_schedule {
            LrSchedule::PaperCosine => RefLr::Paper,
            LrSchedule::KerasCosine { alpha } => RefLr::KerasCosine { alpha: dec(alpha) },
            LrSchedule::Constant => RefLr::Constant,
        },
        steps: cfg.steps,
        weight_decay: dec(cfg.weight_decay),
        ema: cfg.ema.map(dec),
    }
}

fn domains(cfg: &TrainConfig) -> (Source, Source) {
    let pre = match cfg.augment {
        AugmentStyle::Paper => Preprocess::Pad,
        AugmentStyle::Keras => Preprocess::Resize,
    };
    let dir = Path::new("no-data-dir-needed");
    let size = cfg.network.image_size;
    let source = load_sized(&DatasetSpec::default(), Split::Train, pre, dir, size).unwrap();
    let target = load_sized(&DatasetSpec::default_target(), Split::Train, pre, dir, size).unwrap();
    (source, target)
}

/// The worst error (or smallest margin) seen per quantity, for the report.
#[derive(Default)]
struct Worst(Vec<(String, f64)>);

impl Worst {
    fn keep(&mut self, what: &str, v: f64, pick: fn(f64, f64) -> f64) {
        match self.0.iter_mut().find(|(w, _)| w == what) {
            Some((_, e)) => *e = pick(*e, v),
            None => self.0.push((what.to_string(), v)),
        }
    }

    fn note(&mut self, what: &str, err: f64) {
        self.keep(what, err, f64::max);
    }

    fn note_margin(&mut self, what: &str, margin: f64) {
        self.keep(what, margin, f64::min);
    }

    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(w, e)| format!("{w} {e:.2e}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// f32 storage rounds every state value by up to half an ulp per step; a change of a slowly
/// moving tensor (an EMA moves by 1e-3 of the weights' change) is only known to this fraction of
/// the values themselves.
const F32_FLOOR: f64 = 2.0 * f32::EPSILON as f64;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Compares every named tensor of a flat GPU buffer with the reference, both minus `base` when
/// given (the change over the step), per tensor: ||gpu - cpu|| <= rtol ||cpu|| + the f32
/// floor of the values. Records the error relative to ||cpu||.
#[allow(clippy::too_many_arguments)]
fn check_tensors(
    what: &str,
    kind: &str,
    worst: &mut Worst,
    specs: &[TensorSpec],
    gpu_flat: &[f32],
    cpu: &Params,
    base: Option<&Params>,
    rtol: f64,
) {
    let gpu = named(specs, gpu_flat);
    assert_eq!(gpu.len(), cpu.len(), "{what}: {kind}: tensor sets differ");
    for (name, want) in cpu {
        let got = &gpu[name];
        assert!(got.iter().all(|v| v.is_finite()), "{what}: {kind} {name} is not finite");
        let floor = F32_FLOOR * norm(want);
        let (got, want): (Vec<f64>, Vec<f64>) = match base {
            Some(base) => (
                got.iter().zip(&base[name]).map(|(g, b)| g - b).collect(),
                want.iter().zip(&base[name]).map(|(w, b)| w - b).collect(),
            ),
            None => (got.clone(), want.clone()),
        };
        let diff: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
        let (err, scale) = (norm(&diff), norm(&want));
        assert!(
            err <= rtol * scale + floor,
            "{what}: {kind} {name}: error {:.3e} of |cpu| {scale:.3e} (|gpu| {:.3e}) > {rtol:.0e} + f32 floor {floor:.1e}",
            err / scale,
            norm(&got),
        );
        worst.note(kind, err / scale.max(1e-30));
    }
}

fn check_scalar(what: &str, worst: &mut Worst, kind: &str, gpu: f32, cpu: f64, rtol: f64, atol: f64) {
    let err = (gpu as f64 - cpu).abs();
    assert!(
        gpu.is_finite() && err <= atol + rtol * cpu.abs(),
        "{what}: {kind}: gpu {gpu} vs cpu {cpu} (error {err:.3e})"
    );
    worst.note(kind, err / cpu.abs().max(atol / rtol));
}

fn read_state(trainer: &Trainer) -> HashMap<String, Vec<f32>> {
    let ctx = ctx();
    trainer
        .state_tensors()
        .iter()
        .map(|(name, t)| (name.clone(), t.read_f32(ctx).unwrap()))
        .collect()
}

/// The target history ring oldest first: (next slot, slots filled) in `history_state`.
fn history_rows(state: &HashMap<String, Vec<f32>>, classes: usize) -> Vec<Vec<f64>> {
    let ring = &state["adamatch.p_target_history"];
    let hs = &state["adamatch.history_state"];
    let (next, filled) = (hs[0] as usize, hs[1] as usize);
    let slots = ring.len() / classes;
    let first = if filled < slots { 0 } else { next };
    (0..filled)
        .map(|age| {
            let slot = (first + age) % slots;
            ring[slot * classes..(slot + 1) * classes]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect()
}

/// The reference's state, read from the trainer's (what a checkpoint holds).
fn reference_state(
    rcfg: &RefTrainConfig,
    gpu: &HashMap<String, Vec<f32>>,
    pspecs: &[TensorSpec],
    rspecs: &[TensorSpec],
) -> RefTrainState {
    let params = named(pspecs, &gpu["params"]);
    let running = named(rspecs, &gpu["running"]);
    let mut state = RefTrainState::new(rcfg, params, running);
    state.opt = match state.opt {
        RefOptState::Sgd { .. } => RefOptState::Sgd {
            velocity: named(pspecs, &gpu["opt.velocity"]),
        },
        RefOptState::Adam { .. } => RefOptState::Adam {
            m: named(pspecs, &gpu["opt.m"]),
            v: named(pspecs, &gpu["opt.v"]),
        },
    };
    if state.ema.is_some() {
        state.ema = Some((named(pspecs, &gpu["ema.params"]), named(rspecs, &gpu["ema.running"])));
    }
    if let (Some(align), Some(acfg)) = (&mut state.align, &rcfg.adamatch) {
        if let RefAlignment::Paper { .. } = acfg.alignment {
            align.p_source_ema = gpu["adamatch.p_source_ema"].iter().map(|&v| v as f64).collect();
            align.target_means = history_rows(gpu, acfg.classes);
        }
    }
    state
}

/// Runs the trainer's steps at `steps` (t values: the trainer's step counter is set to each, so
/// late schedule values are reached without running the steps in between) and compares each
/// step with one reference step from the trainer's state before it (read back as a checkpoint
/// would: weights, running statistics, optimizer state, EMA, alignment state), so every step is
/// checked from identical inputs and f32 drift does not compound. Returns the reference outputs.
fn check_training(cfg: TrainConfig, steps: &[u64]) -> Vec<RefStepOut> {
    let ctx = ctx();
    let what0 = format!("{} {:?} seed {}", cfg.preset, cfg.algorithm, cfg.seed);
    let rcfg = reference_config(&cfg);
    let (source, target) = domains(&cfg);
    let mut trainer = Trainer::new(ctx, cfg.clone()).unwrap();
    if cfg.labeled_target_batch > 0 {
        // SSDA: labeled target images, as `train --target-labeled` gives them.
        let labeled = SynthStream::test(SynthDomain::House, 4, 40).materialize(0, 40);
        trainer.set_labeled_target(labeled).unwrap();
    }
    let pspecs = trainer.net.param_specs().to_vec();
    let rspecs = trainer.net.running_specs().to_vec();
    let classes = cfg.network.num_classes;
    let mut worst = Worst::default();
    let mut outs = Vec::new();

    for &t in steps {
        let what = format!("{what0}, step t = {t}");
        let before = read_state(&trainer);
        let mut state = reference_state(&rcfg, &before, &pspecs, &rspecs);
        let (p0, r0) = (state.params.clone(), state.running.clone());
        trainer.step = t;
        state.step = t;
        let batch = trainer.draw_batch(&source, &target).unwrap();
        assert_eq!(
            batch.labels.len(),
            cfg.labeled_batch(),
            "{what}: labeled images in the batch"
        );
        trainer.step_with(ctx, &batch).unwrap();
        let want = train_step(&rcfg, &mut state, &batch);
        let got = trainer.metrics(ctx).unwrap();
        // Said in every failure: how close the step came to an activation kink (module docs).
        let (kink, at) = &want.activation_margin;
        let what = format!("{what} [smallest activation-kink margin {kink:.1e} at {at}]");
        worst.note_margin("min activation margin", *kink);
        assert_eq!(got.step, t + 1, "{what}: step counter");

        // Schedules.
        check_scalar(&what, &mut worst, "lr", got.lr, want.lr, 1e-6, 0.0);
        if cfg.algorithm == Algorithm::Adamatch {
            check_scalar(&what, &mut worst, "mu", got.loss.mu, want.mu, 1e-6, 1e-7);
        }

        // The loss, with its discontinuities kept clear of rounding.
        if let Some(targets) = &want.targets {
            let m = targets.mask_margin.iter().cloned().fold(f64::INFINITY, f64::min);
            assert!(
                m > MIN_MARGIN,
                "{what}: a mask is {m:.2e} from flipping: pick other data"
            );
            worst.note_margin("min mask margin", m);
            if rcfg.adamatch.unwrap().hard_pseudo {
                let a = targets.argmax_margin.iter().cloned().fold(f64::INFINITY, f64::min);
                assert!(
                    a > MIN_MARGIN,
                    "{what}: a pseudo-label is {a:.2e} from flipping: pick other data"
                );
                worst.note_margin("min argmax margin", a);
            }
            check_scalar(&what, &mut worst, "c_tau", got.loss.c_tau, want.c_tau, LOSS_RTOL, 0.0);
        }
        if let Some(step) = &want.fixmatch {
            let m = step
                .mask_margin
                .iter()
                .chain(&step.argmax_margin)
                .cloned()
                .fold(f64::INFINITY, f64::min);
            assert!(
                m > MIN_MARGIN,
                "{what}: a mask or pseudo-label is {m:.2e} from flipping: pick other data"
            );
            worst.note_margin("min decision margin", m);
            assert_eq!(got.loss.c_tau, cfg.confidence, "{what}: the threshold");
            assert_eq!(got.loss.mu, 1.0, "{what}: FixMatch's target weight");
        }
        assert_eq!(got.loss.mask_rate as f64, want.mask_rate, "{what}: mask rate");
        check_scalar(
            &what,
            &mut worst,
            "total loss",
            got.loss.total_loss,
            want.total_loss,
            LOSS_RTOL,
            1e-6,
        );
        check_scalar(
            &what,
            &mut worst,
            "source loss",
            got.loss.source_loss,
            want.source_loss,
            LOSS_RTOL,
            1e-6,
        );
        check_scalar(
            &what,
            &mut worst,
            "target loss",
            got.loss.target_loss,
            want.target_loss,
            LOSS_RTOL,
            1e-6,
        );
        assert!(!got.non_finite, "{what}: non-finite gradient");
        check_scalar(
            &what,
            &mut worst,
            "grad norm",
            got.grad_norm,
            want.grad_norm,
            STATE_RTOL,
            0.0,
        );

        // Gradients (both passes summed), then the state's change over the step.
        let grads = trainer.net.read_grads(ctx).unwrap();
        check_tensors(
            &what,
            "grads",
            &mut worst,
            &pspecs,
            &grads,
            &want.grads,
            None,
            STATE_RTOL,
        );
        let after = read_state(&trainer);
        let tensors = |kind: &str, specs: &[TensorSpec], cpu: &Params, base: &Params, worst: &mut Worst| {
            let flat = after
                .get(kind)
                .unwrap_or_else(|| panic!("{what}: no state tensor {kind}"));
            check_tensors(&what, kind, worst, specs, flat, cpu, Some(base), STATE_RTOL);
        };
        tensors("params", &pspecs, &state.params, &p0, &mut worst);
        tensors("running", &rspecs, &state.running, &r0, &mut worst);
        match &state.opt {
            RefOptState::Sgd { velocity } => tensors(
                "opt.velocity",
                &pspecs,
                velocity,
                &named(&pspecs, &before["opt.velocity"]),
                &mut worst,
            ),
            RefOptState::Adam { m, v } => {
                tensors("opt.m", &pspecs, m, &named(&pspecs, &before["opt.m"]), &mut worst);
                tensors("opt.v", &pspecs, v, &named(&pspecs, &before["opt.v"]), &mut worst);
            }
        }
        match (&state.ema, cfg.ema) {
            (Some((ema_p, ema_r)), Some(decay)) => {
                let (old_p, old_r) = (&before["ema.params"], &before["ema.running"]);
                tensors("ema.params", &pspecs, ema_p, &named(&pspecs, old_p), &mut worst);
                tensors("ema.running", &rspecs, ema_r, &named(&rspecs, old_r), &mut worst);
                // And exactly: the new EMA from the old one and the *updated* weights and
                // statistics, all as the GPU holds them (a few f32 roundings).
                let d = dec(decay);
                for (kind, old, x) in [
                    ("ema.params", old_p, &after["params"]),
                    ("ema.running", old_r, &after["running"]),
                ] {
                    for (i, ((&new, &old), &x)) in after[kind].iter().zip(old).zip(x).enumerate() {
                        let want = d * old as f64 + (1.0 - d) * x as f64;
                        let err = (new as f64 - want).abs();
                        let tol = 2.0 * f32::EPSILON as f64 * (old.abs().max(x.abs()) as f64) + 1e-30;
                        assert!(
                            err <= tol,
                            "{what}: {kind}[{i}] = {new}, EMA of {old} and {x} is {want}"
                        );
                    }
                }
            }
            (None, None) => assert!(
                !after.contains_key("ema.params") && trainer.ema_net().is_none(),
                "{what}: an EMA without one configured"
            ),
            _ => panic!("{what}: EMA configured on one side only"),
        }

        // Paper alignment state: the source EMA's change and the history ring, oldest first.
        if let (Some(align), Some(RefAlignment::Paper { history, .. })) =
            (&state.align, rcfg.adamatch.map(|a| a.alignment))
        {
            let old: Vec<f64> = before["adamatch.p_source_ema"].iter().map(|&v| v as f64).collect();
            let ema: Vec<f64> = after["adamatch.p_source_ema"]
                .iter()
                .zip(&old)
                .map(|(&v, o)| v as f64 - o)
                .collect();
            let want_ema: Vec<f64> = align.p_source_ema.iter().zip(&old).map(|(v, o)| v - o).collect();
            let diff: Vec<f64> = ema.iter().zip(&want_ema).map(|(a, b)| a - b).collect();
            let e = norm(&diff) / norm(&want_ema);
            assert!(
                norm(&diff) <= STATE_RTOL * norm(&want_ema) + F32_FLOOR * norm(&old),
                "{what}: source EMA change rel err {e:.3e}"
            );
            worst.note("p_source_ema", e);
            let rows = history_rows(&after, classes);
            assert_eq!(rows.len(), history, "{what}: history slots filled");
            assert_eq!(align.target_means.len(), history);
            for (age, (row, want_row)) in rows.iter().zip(&align.target_means).enumerate() {
                for (g, w) in row.iter().zip(want_row) {
                    let err = (g - w).abs();
                    assert!(err <= LOSS_RTOL * w, "{what}: target history, age {age}: {g} vs {w}");
                    worst.note("p_target_history", err / w);
                }
            }
        }
        eprintln!(
            "{what}: loss {:.5} (source {:.5}, target {:.5}, mu {:.3}), mask rate {}, lr {:.5}",
            want.total_loss, want.source_loss, want.target_loss, want.mu, want.mask_rate, want.lr
        );
        outs.push(want);
    }
    eprintln!(
        "{what0}: worst relative errors (and smallest margins): {}",
        worst.line()
    );
    outs
}

/// The pseudo-label path must carry gradient in at least one step (mask not all zero, mu > 0).
fn assert_target_loss_used(outs: &[RefStepOut]) {
    assert!(
        outs.iter()
            .any(|o| o.mu > 0.0 && o.mask_rate > 0.0 && o.target_loss > 0.0),
        "no step trained on pseudo-labels: pick other data"
    );
}

#[test]
fn paper_adamatch_steps_match_reference() {
    let outs = check_training(small_config("paper", Algorithm::Adamatch, 2), &[0, 2, 7]);
    assert_target_loss_used(&outs);
}

#[test]
fn keras_example_adamatch_steps_match_reference() {
    let outs = check_training(small_config("keras-example", Algorithm::Adamatch, 1), &[0, 2, 7]);
    assert_target_loss_used(&outs);
}

/// The same at 48x48 images: the augmentation's sizes, the network's spatial shapes and the
/// global pooling at a side other than 32.
#[test]
fn paper_adamatch_steps_match_reference_at_48() {
    let mut cfg = small_config("paper", Algorithm::Adamatch, 2);
    cfg.network.image_size = 48;
    let outs = check_training(cfg, &[0, 2]);
    assert_target_loss_used(&outs);
}

#[test]
fn paper_fixmatch_steps_match_reference() {
    let mut cfg = small_config("paper", Algorithm::Fixmatch, 3);
    // A threshold small networks reach in the first steps, so the pseudo-label path is used.
    cfg.confidence = 0.2;
    let outs = check_training(cfg, &[0, 2, 7]);
    assert!(
        outs.iter().any(|o| o.mask_rate > 0.0 && o.target_loss > 0.0),
        "no step trained on pseudo-labels: pick other data"
    );
}

#[test]
fn paper_ssda_adamatch_steps_match_reference() {
    let mut cfg = small_config("paper", Algorithm::Adamatch, 4);
    cfg.labeled_target_batch = cfg.batch;
    let outs = check_training(cfg, &[0, 2, 7]);
    assert_target_loss_used(&outs);
}

#[test]
fn paper_source_only_steps_match_reference() {
    check_training(small_config("paper", Algorithm::SourceOnly, 1), &[0, 2, 7]);
}

#[test]
fn keras_example_source_only_steps_match_reference() {
    check_training(small_config("keras-example", Algorithm::SourceOnly, 6), &[0, 2, 7]);
}

#[test]
fn the_adaptation_phase_starts_as_a_fresh_trainer_given_the_source_phase_model() {
    // Two source-only steps, then AdaMatch: from the source phase's evaluation weights (the EMA
    // copy: no calibration here) with zeroed optimizer state, a fresh EMA, the RNG from the
    // seed and the schedule from its start, as a fresh AdaMatch trainer given those weights.
    let ctx = ctx();
    let cfg = TrainConfig {
        source_steps: 2,
        steps: 4,
        ..small_config("paper", Algorithm::Adamatch, 5)
    };
    let (source, target) = domains(&cfg);
    let mut phased = Trainer::new(ctx, cfg.clone()).unwrap();
    assert_eq!(phased.phase().cfg.algorithm, Algorithm::SourceOnly);
    for _ in 0..2 {
        phased.step(ctx, &source, &target).unwrap();
    }
    assert!(phased.adaptation_due());
    let batch = phased.draw_batch(&source, &target).unwrap();
    let err = phased.step_with(ctx, &batch).unwrap_err().to_string();
    assert!(err.contains("adaptation phase"), "{err}");
    let ema = phased.ema_net().expect("the paper preset has an EMA");
    let model = (ema.read_params(ctx).unwrap(), ema.read_running(ctx).unwrap());
    assert!(
        model.0 != phased.net.read_params(ctx).unwrap(),
        "the EMA equals the raw weights"
    );

    let fresh_cfg = TrainConfig {
        source_steps: 0,
        steps: 2,
        ..cfg.clone()
    };
    let mut fresh = Trainer::new(ctx, fresh_cfg).unwrap();
    ctx.queue
        .write_buffer(&fresh.net.params, 0, bytemuck::cast_slice(&model.0));
    ctx.queue
        .write_buffer(&fresh.net.running, 0, bytemuck::cast_slice(&model.1));
    fresh.init_ema(ctx);
    for _ in 0..2 {
        phased.step(ctx, &source, &target).unwrap();
        fresh.step(ctx, &source, &target).unwrap();
    }
    assert_eq!(phased.phase().cfg.algorithm, Algorithm::Adamatch);
    assert_eq!((phased.step, phased.phase().start), (4, 2));
    let (a, b) = (read_state(&phased), read_state(&fresh));
    assert_eq!(a.len(), b.len());
    for (name, v) in &a {
        assert!(b[name] == *v, "{name} differs after two AdaMatch steps");
    }
    assert!(a["params"] != model.0, "the AdaMatch steps changed nothing");
}

#[test]
fn conv_work_names_every_convolution_pass_a_run_builds() {
    // The browser tunes `conv_work`'s passes before it builds a run (natively each workspace
    // tunes its own as it builds them). Here every listed pass is marked tuned first; the run
    // then builds its passes (both phases of an SSDA run, calibrations, an evaluation) and the
    // workspaces tune any pass that was not listed: the tuned passes must be the listed ones.
    use adamatch_wgpu::autotune::requests;
    use adamatch_wgpu::network::Architecture;
    use adamatch_wgpu::profile::{ConvPath, ConvTiles};
    use adamatch_wgpu::train::eval::Evaluator;
    use adamatch_wgpu::train::trainer::conv_work;
    use std::collections::BTreeSet;
    let ctx = &ctx().with_conv_path(ConvPath::Tiled).unwrap().with_autotune(true);
    let mut cfg = small_config("tiny", Algorithm::Adamatch, 3);
    (cfg.source_steps, cfg.steps) = (2, 4);
    (cfg.labeled_target_batch, cfg.bn_calibration, cfg.eval_limit) = (1, 1, Some(20));
    let arch = Architecture::new(&cfg.network).unwrap();
    let listed: BTreeSet<_> = conv_work(&cfg)
        .into_iter()
        .flat_map(|(rows, passes)| requests(&arch.conv_shapes(rows), passes))
        .map(|(s, pass)| s.tune_key(pass))
        .collect();
    for &key in &listed {
        ctx.set_tuned_tiles(key, ConvTiles::DEFAULT);
    }
    let (source, target) = domains(&cfg);
    let mut trainer = Trainer::new(ctx, cfg.clone()).unwrap();
    let labeled = SynthStream::test(SynthDomain::House, 4, 40).materialize(0, 40);
    trainer.set_labeled_target(labeled.clone()).unwrap();
    for _ in 0..cfg.steps {
        trainer.step(ctx, &source, &target).unwrap();
    }
    let classes: Vec<String> = (0..cfg.network.num_classes).map(|c| c.to_string()).collect();
    let net = trainer.calibrated_eval_net(ctx, &source, &target).unwrap();
    let mut evaluator = Evaluator::new(ctx, net, cfg.eval_batch(), classes).unwrap();
    evaluator
        .run(ctx, net, &labeled, cfg.input_scale, cfg.eval_limit, None)
        .unwrap();
    let built: BTreeSet<_> = ctx.tuned_keys().into_iter().collect();
    let missing: Vec<_> = built.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "passes a run builds that conv_work does not list: {missing:?}"
    );
}
