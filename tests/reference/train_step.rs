//! One training step in f64 (REFERENCE.md, "The AdaMatch step" and "Optimisation"), composed
//! from the other references: augmentation of the u8 images ([`augment`]), the WideResNet
//! forward/backward ([`network`]), the AdaMatch loss with its alignment state ([`adamatch`]), the
//! FixMatch loss ([`fixmatch`]) or the source-only cross-entropy ([`softmax_ce`]), SGD / Adam and
//! the EMA ([`optimizer`]).
//!
//! The step, in order:
//! 1. the views `[src_weak(B), src_strong(B), tgt_weak(uB), tgt_strong(uB)]` (source-only: the
//!    first two), each image augmented by its own parameters and scaled;
//! 2. the joint pass in training mode; it updates the running statistics;
//! 3. AdaMatch only: the source pass on the first 2B rows, either in training mode with a scratch
//!    copy of the running statistics (paper: what it would write is discarded) or in inference
//!    mode with the running statistics as the joint pass left them (keras-example);
//! 4. the loss and its logit gradients; both backward passes, summed;
//! 5. the optimizer on every tensor (weight decay `wd * w` on conv and dense kernels only), then
//!    the EMA of the new parameters and of the running statistics.

use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::kernels::augment::AugParams;
use adamatch_wgpu::train::trainer::HostBatch;

use super::adamatch::{self as am, RefState, RefTargets};
use super::fixmatch as fm;
use super::network::{self as net, Mode, Params};
use super::{augment, optimizer, softmax_ce, to_f64};

#[derive(Clone, Copy, Debug)]
pub enum RefOptimizer {
    /// objax Momentum.
    Sgd { momentum: f64, nesterov: bool },
    /// Keras 3 Adam.
    Adam { beta1: f64, beta2: f64, eps: f64 },
}

#[derive(Clone, Copy, Debug)]
pub enum RefLr {
    /// `lr * cos(acos(0.25) * t / T)`.
    Paper,
    /// Keras `CosineDecay(lr, T, alpha)`.
    KerasCosine {
        alpha: f64,
    },
    Constant,
}

#[derive(Clone, Copy, Debug)]
pub struct RefTrainConfig {
    pub net: net::RefConfig,
    /// The AdaMatch loss; None trains on the source views alone (mean CE of both views), or
    /// with `fixmatch`.
    pub adamatch: Option<am::RefConfig>,
    /// The FixMatch loss (on the joint pass alone); exclusive with `adamatch`.
    pub fixmatch: Option<fm::RefConfig>,
    /// B.
    pub batch: usize,
    /// T: labeled target images after the B source images (SSDA); 0 otherwise.
    pub labeled_target: usize,
    /// Source-only loss = source_scale / B * sum of the 2B rows' CE.
    pub source_scale: f64,
    /// The AdaMatch source pass uses batch statistics (paper) or running statistics (keras).
    pub source_pass_batch_stats: bool,
    pub input_scale: InputScale,
    pub optimizer: RefOptimizer,
    pub lr: f64,
    pub lr_schedule: RefLr,
    /// T.
    pub steps: u64,
    pub weight_decay: f64,
    pub ema: Option<f64>,
}

impl RefTrainConfig {
    pub fn lr_at(&self, t: u64) -> f64 {
        let progress = t.min(self.steps) as f64 / self.steps as f64;
        match self.lr_schedule {
            RefLr::Paper => self.lr * (0.25f64.acos() * progress).cos(),
            RefLr::KerasCosine { alpha } => {
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.lr * ((1.0 - alpha) * cosine + alpha)
            }
            RefLr::Constant => self.lr,
        }
    }

    /// `mu(t) = 0.5 - 0.5 cos(min(pi, 2 pi t / T))`.
    pub fn mu_at(&self, t: u64) -> f64 {
        let pi = std::f64::consts::PI;
        0.5 - 0.5 * (2.0 * pi * t as f64 / self.steps as f64).min(pi).cos()
    }
}

/// Weight decay applies to conv and dense kernels, not to BN gamma/beta or the dense bias.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".gamma") || name.ends_with(".beta") || name.ends_with(".bias"))
}

#[derive(Clone, Debug)]
pub enum RefOptState {
    Sgd { velocity: Params },
    Adam { m: Params, v: Params },
}

/// Everything a step reads and writes.
#[derive(Clone, Debug)]
pub struct RefTrainState {
    pub params: Params,
    pub running: Params,
    pub opt: RefOptState,
    /// EMA of (params, running statistics).
    pub ema: Option<(Params, Params)>,
    /// AdaMatch alignment state.
    pub align: Option<RefState>,
    /// Steps done (t of the next step).
    pub step: u64,
}

fn zeros_like(p: &Params) -> Params {
    p.iter().map(|(k, v)| (k.clone(), vec![0.0; v.len()])).collect()
}

impl RefTrainState {
    /// Fresh optimizer and alignment state; the EMA starts as a copy of the weights.
    pub fn new(cfg: &RefTrainConfig, params: Params, running: Params) -> RefTrainState {
        let opt = match cfg.optimizer {
            RefOptimizer::Sgd { .. } => RefOptState::Sgd {
                velocity: zeros_like(&params),
            },
            RefOptimizer::Adam { .. } => RefOptState::Adam {
                m: zeros_like(&params),
                v: zeros_like(&params),
            },
        };
        RefTrainState {
            ema: cfg.ema.map(|_| (params.clone(), running.clone())),
            align: cfg.adamatch.as_ref().map(RefState::new),
            params,
            running,
            opt,
            step: 0,
        }
    }
}

/// What a step reports.
#[derive(Clone, Debug)]
pub struct RefStepOut {
    pub t: u64,
    pub lr: f64,
    pub mu: f64,
    pub total_loss: f64,
    pub source_loss: f64,
    pub target_loss: f64,
    pub mask_rate: f64,
    pub c_tau: f64,
    /// The loss gradient of every parameter, both passes summed (no weight decay).
    pub grads: Params,
    /// sqrt of the sum of squares of `grads`.
    pub grad_norm: f64,
    /// AdaMatch step constants (mask and argmax margins).
    pub targets: Option<RefTargets>,
    /// The FixMatch loss's step (pseudo-labels, mask and their margins).
    pub fixmatch: Option<fm::RefStep>,
    /// The smallest activation-kink margin of the step's forward passes, and where
    /// ([`net::activation_margin`]).
    pub activation_margin: (f64, String),
}

/// The scaled views of `n` images, each with its own parameters, as one f64 NHWC batch.
pub fn views(images: &[u8], params: &[AugParams], scale: InputScale) -> Vec<f64> {
    let n = params.len().max(1);
    assert!(images.len().is_multiple_of(n), "one AugParams per image");
    images
        .chunks_exact(images.len() / n)
        .zip(params)
        .flat_map(|(img, p)| augment::augment(img, p, scale))
        .map(|v| v as f64)
        .collect()
}

fn add_into(acc: &mut Params, g: Params) {
    for (name, g) in g {
        let a = acc
            .get_mut(&name)
            .unwrap_or_else(|| panic!("second pass has an extra gradient {name}"));
        for (a, g) in a.iter_mut().zip(g) {
            *a += g;
        }
    }
}

/// One optimizer step on `batch` (the batch the trainer drew); updates `state`.
pub fn train_step(cfg: &RefTrainConfig, state: &mut RefTrainState, batch: &HostBatch) -> RefStepOut {
    let t = state.step;
    let (lr, mu) = (cfg.lr_at(t), cfg.mu_at(t));
    // The labeled rows of each view: B source images, then T labeled target images.
    let b = cfg.batch + cfg.labeled_target;
    let classes = cfg.net.classes;
    let scale = cfg.input_scale;

    // 1. Views.
    let mut x = views(&batch.source_images, &batch.aug[0], scale);
    x.extend(views(&batch.source_images, &batch.aug[1], scale));
    if cfg.adamatch.is_some() || cfg.fixmatch.is_some() {
        x.extend(views(&batch.target_images, &batch.aug[2], scale));
        x.extend(views(&batch.target_images, &batch.aug[3], scale));
    }
    let image_values = cfg.net.image_size * cfg.net.image_size * 3;
    let rows = x.len() / image_values;

    // 2. Joint pass (updates state.running).
    let (logits, cache) = net::forward(&cfg.net, &state.params, &mut state.running, &x, rows, Mode::Train);

    let mut out = RefStepOut {
        t,
        lr,
        mu,
        total_loss: 0.0,
        source_loss: 0.0,
        target_loss: 0.0,
        mask_rate: 0.0,
        c_tau: 0.0,
        grads: Params::new(),
        grad_norm: 0.0,
        targets: None,
        fixmatch: None,
        activation_margin: {
            let (m, at) = net::activation_margin(&cfg.net, &state.params, &state.running, &cache);
            (m, format!("first pass, {at}"))
        },
    };
    let mut grads = match (&cfg.adamatch, &cfg.fixmatch) {
        (Some(_), Some(_)) => panic!("AdaMatch and FixMatch at once"),
        (None, Some(fcfg)) => {
            assert_eq!(fcfg.batch, b);
            assert_eq!(rows, fcfg.joint_rows());
            let step = fm::fixmatch_step(fcfg, &logits, &batch.labels);
            let (g, _) = net::backward(&cfg.net, &state.params, &state.running, &cache, &step.d_joint);
            out.total_loss = step.total_loss;
            out.source_loss = step.source_loss;
            out.target_loss = step.target_loss;
            out.mask_rate = step.mask_rate;
            out.c_tau = fcfg.threshold;
            out.mu = 1.0;
            out.fixmatch = Some(step);
            g
        }
        (Some(acfg), None) => {
            assert_eq!(acfg.labeled_rows(), b);
            assert_eq!(rows, acfg.joint_rows());
            // 3. Source pass on the first 2B rows.
            let src_x = &x[..2 * b * image_values];
            let (mode, mut src_running) = if cfg.source_pass_batch_stats {
                // A scratch copy: the running statistics this pass produces are discarded.
                (Mode::Train, state.running.clone())
            } else {
                (Mode::Inference, state.running.clone())
            };
            let (src_logits, src_cache) = net::forward(&cfg.net, &state.params, &mut src_running, src_x, 2 * b, mode);
            let (m, at) = net::activation_margin(&cfg.net, &state.params, &state.running, &src_cache);
            if m < out.activation_margin.0 {
                out.activation_margin = (m, format!("source pass, {at}"));
            }

            // 4. Loss, gradients of both passes.
            let lambdas = to_f64(&batch.lambdas);
            let align = state.align.as_ref().expect("AdaMatch alignment state");
            let (step, next) = am::adamatch_step(acfg, align, &logits, &src_logits, &lambdas, &batch.labels, mu);
            state.align = Some(next);
            let (mut g, _) = net::backward(&cfg.net, &state.params, &state.running, &cache, &step.d_joint);
            // In inference mode the source pass used (and its backward uses) the updated stats.
            let (g2, _) = net::backward(&cfg.net, &state.params, &state.running, &src_cache, &step.d_source);
            add_into(&mut g, g2);
            out.total_loss = step.total_loss;
            out.source_loss = step.source_loss;
            out.target_loss = step.target_loss;
            out.mask_rate = step.mask_rate;
            out.c_tau = step.targets.c_tau;
            out.targets = Some(step.targets);
            g
        }
        (None, None) => {
            assert_eq!(rows, 2 * b);
            let labels2: Vec<u32> = batch.labels.iter().chain(&batch.labels).copied().collect();
            let targets = softmax_ce::RefTargets::Hard(&labels2);
            let w = vec![1.0; 2 * b];
            let s = cfg.source_scale / cfg.batch as f64;
            let (_, loss) = softmax_ce::softmax_ce_forward(&logits, 2 * b, classes, &targets, &w, s);
            let d = softmax_ce::softmax_ce_backward(&logits, 2 * b, classes, &targets, &w, s);
            out.total_loss = loss;
            out.source_loss = loss;
            let (g, _) = net::backward(&cfg.net, &state.params, &state.running, &cache, &d);
            g
        }
    };
    assert_eq!(grads.len(), state.params.len(), "a gradient per parameter");
    out.grad_norm = grads.values().flatten().map(|g| g * g).sum::<f64>().sqrt();

    // 5. Optimizer, then EMA.
    for (name, p) in state.params.iter_mut() {
        let g = &grads[name];
        let mask = vec![if decays(name) { 1.0 } else { 0.0 }; p.len()];
        match (&mut state.opt, cfg.optimizer) {
            (RefOptState::Sgd { velocity }, RefOptimizer::Sgd { momentum, nesterov }) => {
                let vel = velocity.get_mut(name).unwrap();
                optimizer::sgd_step(p, g, vel, &mask, lr, cfg.weight_decay, momentum, nesterov);
            }
            (RefOptState::Adam { m, v }, RefOptimizer::Adam { beta1, beta2, eps }) => {
                let (m, v) = (m.get_mut(name).unwrap(), v.get_mut(name).unwrap());
                optimizer::adam_step(p, g, m, v, &mask, lr, cfg.weight_decay, t + 1, beta1, beta2, eps);
            }
            _ => panic!("optimizer state does not match the optimizer"),
        }
    }
    if let (Some((ema_p, ema_r)), Some(decay)) = (&mut state.ema, cfg.ema) {
        for (name, e) in ema_p.iter_mut() {
            optimizer::ema_update(e, &state.params[name], decay);
        }
        for (name, e) in ema_r.iter_mut() {
            optimizer::ema_update(e, &state.running[name], decay);
        }
    }
    state.step += 1;
    out.grads = std::mem::take(&mut grads);
    out
}
