//! The AdaMatch loss of one step in f64 (REFERENCE.md steps 3-7), written from the formulas,
//! for both presets. Split in two as the gradient is:
//! - [`adamatch_targets`]: the no-gradient part (softmaxes, alignment state update, ratio, c_tau,
//!   y_tilde, pseudo-labels, mask) which produces step constants;
//! - [`adamatch_losses`] / [`adamatch_grads`]: the loss given those constants and its exact
//!   gradient w.r.t. the joint and source logits (checked by finite differences in the tests).
//!
//! Rows: joint `[2L + 2uB, C]` = labeled_weak(L), labeled_strong(L), tgt_weak(uB), tgt_strong(uB);
//! source `[2L, C]` = labeled_weak, labeled_strong. L = B source rows, then T labeled target rows
//! (semi-supervised domain adaptation; T = 0 otherwise): every labeled row enters the
//! interpolation and the supervised loss with weight source_scale / B; the alignment's source
//! mean and c_tau use the B source rows only (the official SSDA code).

use super::softmax_ce::log_softmax;

#[derive(Clone, Copy, Debug)]
pub enum RefAlignment {
    Paper {
        ema_momentum: f64,
        history: usize,
        prefill_uniform: bool,
    },
    Keras,
}

#[derive(Clone, Copy, Debug)]
pub struct RefConfig {
    pub batch: usize,
    pub uratio: usize,
    pub classes: usize,
    pub tau: f64,
    pub alignment: RefAlignment,
    pub hard_pseudo: bool,
    pub source_scale: f64,
    /// T.
    pub labeled_target: usize,
}

impl RefConfig {
    pub fn target_rows(&self) -> usize {
        self.batch * self.uratio
    }
    /// L = B + T.
    pub fn labeled_rows(&self) -> usize {
        self.batch + self.labeled_target
    }
    pub fn joint_rows(&self) -> usize {
        2 * self.labeled_rows() + 2 * self.target_rows()
    }
}

/// Paper alignment state: EMA of source means (starts at 1/C), the target means in the order
/// they arrived (only the last `history` are kept), as the definition says.
#[derive(Clone, Debug)]
pub struct RefState {
    pub p_source_ema: Vec<f64>,
    pub target_means: Vec<Vec<f64>>,
}

impl RefState {
    pub fn new(cfg: &RefConfig) -> RefState {
        let c = cfg.classes;
        let uniform = vec![1.0 / c as f64; c];
        let target_means = match cfg.alignment {
            RefAlignment::Paper {
                history,
                prefill_uniform: true,
                ..
            } => vec![uniform.clone(); history],
            _ => Vec::new(),
        };
        RefState {
            p_source_ema: uniform,
            target_means,
        }
    }
}

/// The step constants (no gradient flows through any of them).
#[derive(Clone, Debug)]
pub struct RefTargets {
    /// Interpolated labeled logits `[2L, C]` (a function of the inputs, kept for comparison).
    pub z: Vec<f64>,
    pub ratio: Vec<f64>,
    pub c_tau: f64,
    /// `[uB, C]`.
    pub y_tilde: Vec<f64>,
    pub pseudo: Vec<u32>,
    pub mask: Vec<f64>,
    /// Per target row: |max(y_tilde) - c_tau| (how far the mask is from flipping).
    pub mask_margin: Vec<f64>,
    /// Per target row: max(y_tilde) minus the second largest (how far the argmax is from
    /// flipping).
    pub argmax_margin: Vec<f64>,
}

fn softmax(z: &[f64]) -> Vec<f64> {
    log_softmax(z).iter().map(|v| v.exp()).collect()
}

/// z = lambda * joint[:2L] + (1 - lambda) * source.
pub fn interpolate(cfg: &RefConfig, joint: &[f64], source: &[f64], lambdas: &[f64]) -> Vec<f64> {
    let n = 2 * cfg.labeled_rows() * cfg.classes;
    (0..n)
        .map(|i| lambdas[i] * joint[i] + (1.0 - lambdas[i]) * source[i])
        .collect()
}

/// Steps 3-5: returns the step constants and the state after the step (update, then use).
pub fn adamatch_targets(
    cfg: &RefConfig,
    state: &RefState,
    joint: &[f64],
    source: &[f64],
    lambdas: &[f64],
) -> (RefTargets, RefState) {
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let l = cfg.labeled_rows();
    assert_eq!(joint.len(), cfg.joint_rows() * c);
    assert_eq!(source.len(), 2 * l * c);
    assert_eq!(lambdas.len(), 2 * l * c);
    let z = interpolate(cfg, joint, source, lambdas);
    // The source-weak rows only: the labeled target rows stay out of the alignment and c_tau.
    let src_probs: Vec<Vec<f64>> = (0..b).map(|r| softmax(&z[r * c..(r + 1) * c])).collect();
    let tgt_probs: Vec<Vec<f64>> = (0..ub)
        .map(|j| {
            let r = 2 * l + j;
            softmax(&joint[r * c..(r + 1) * c])
        })
        .collect();
    let mean = |rows: &[Vec<f64>]| -> Vec<f64> {
        (0..c)
            .map(|k| rows.iter().map(|p| p[k]).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let ps_batch = mean(&src_probs);
    let pt_batch = mean(&tgt_probs);

    let mut next = state.clone();
    let ratio: Vec<f64> = match cfg.alignment {
        RefAlignment::Keras => (0..c)
            .map(|k| ((ps_batch[k] + 1e-8) / (pt_batch[k] + 1e-8)).clamp(0.1, 10.0))
            .collect(),
        RefAlignment::Paper {
            ema_momentum, history, ..
        } => {
            for ((e, &old), &batch) in next.p_source_ema.iter_mut().zip(&state.p_source_ema).zip(&ps_batch) {
                *e = ema_momentum * old + (1.0 - ema_momentum) * batch;
            }
            next.target_means.push(pt_batch.clone());
            if next.target_means.len() > history {
                next.target_means.remove(0);
            }
            let pt = mean(&next.target_means);
            (0..c).map(|k| (1e-6 + next.p_source_ema[k]) / (1e-6 + pt[k])).collect()
        }
    };

    let max_of = |v: &[f64]| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let c_tau = cfg.tau * src_probs.iter().map(|p| max_of(p)).sum::<f64>() / b as f64;

    let mut y_tilde = Vec::with_capacity(ub * c);
    let (mut pseudo, mut mask, mut mask_margin, mut argmax_margin) = (vec![], vec![], vec![], vec![]);
    for p in &tgt_probs {
        let y: Vec<f64> = p.iter().zip(&ratio).map(|(p, r)| p * r).collect();
        let s: f64 = y.iter().sum();
        let y: Vec<f64> = y.iter().map(|v| v / s).collect();
        let (arg, top, second) = super::top_two(&y);
        pseudo.push(arg as u32);
        mask.push(if top >= c_tau { 1.0 } else { 0.0 });
        mask_margin.push((top - c_tau).abs());
        argmax_margin.push(top - second);
        y_tilde.extend(y);
    }
    (
        RefTargets {
            z,
            ratio,
            c_tau,
            y_tilde,
            pseudo,
            mask,
            mask_margin,
            argmax_margin,
        },
        next,
    )
}

/// Row r's cross-entropy target: a one-hot label or the y_tilde row.
fn target_row(cfg: &RefConfig, t: &RefTargets, j: usize) -> Vec<f64> {
    let c = cfg.classes;
    if cfg.hard_pseudo {
        (0..c).map(|k| (k == t.pseudo[j] as usize) as u8 as f64).collect()
    } else {
        t.y_tilde[j * c..(j + 1) * c].to_vec()
    }
}

fn ce(logits: &[f64], target: &[f64]) -> f64 {
    -log_softmax(logits).iter().zip(target).map(|(l, t)| l * t).sum::<f64>()
}

/// Step 6 given the step constants: (source, target unweighted by mu, total = source + mu *
/// target). Only `z` is recomputed from the logits; everything in `t` is held fixed.
#[allow(clippy::too_many_arguments)]
pub fn adamatch_losses(
    cfg: &RefConfig,
    t: &RefTargets,
    joint: &[f64],
    source: &[f64],
    lambdas: &[f64],
    labels: &[u32],
    mu: f64,
) -> (f64, f64, f64) {
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let l = cfg.labeled_rows();
    let z = interpolate(cfg, joint, source, lambdas);
    let mut src = 0.0;
    for r in 0..2 * l {
        let onehot: Vec<f64> = (0..c).map(|k| (k == labels[r % l] as usize) as u8 as f64).collect();
        src += ce(&z[r * c..(r + 1) * c], &onehot);
    }
    let src = cfg.source_scale * src / b as f64;
    let mut tgt = 0.0;
    for j in 0..ub {
        let r = 2 * l + ub + j;
        tgt += t.mask[j] * ce(&joint[r * c..(r + 1) * c], &target_row(cfg, t, j));
    }
    let tgt = tgt / ub as f64;
    (src, tgt, src + mu * tgt)
}

/// Gradient of [`adamatch_losses`]'s total w.r.t. (joint, source), the step constants fixed.
#[allow(clippy::too_many_arguments)]
pub fn adamatch_grads(
    cfg: &RefConfig,
    t: &RefTargets,
    joint: &[f64],
    source: &[f64],
    lambdas: &[f64],
    labels: &[u32],
    mu: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let l = cfg.labeled_rows();
    let z = interpolate(cfg, joint, source, lambdas);
    let mut d_joint = vec![0.0; joint.len()];
    let mut d_source = vec![0.0; source.len()];
    // d CE(x, t) / dx = softmax(x) * sum(t) - t.
    let ce_grad = |x: &[f64], target: &[f64]| -> Vec<f64> {
        let s: f64 = target.iter().sum();
        softmax(x).iter().zip(target).map(|(p, t)| p * s - t).collect()
    };
    for r in 0..2 * l {
        let onehot: Vec<f64> = (0..c).map(|k| (k == labels[r % l] as usize) as u8 as f64).collect();
        let g = ce_grad(&z[r * c..(r + 1) * c], &onehot);
        for (k, g) in g.iter().enumerate() {
            let i = r * c + k;
            let dz = cfg.source_scale / b as f64 * g;
            d_joint[i] = lambdas[i] * dz;
            d_source[i] = (1.0 - lambdas[i]) * dz;
        }
    }
    for j in 0..ub {
        let r = 2 * l + ub + j;
        let g = ce_grad(&joint[r * c..(r + 1) * c], &target_row(cfg, t, j));
        for (d, g) in d_joint[r * c..(r + 1) * c].iter_mut().zip(&g) {
            *d = mu * t.mask[j] / ub as f64 * g;
        }
    }
    (d_joint, d_source)
}

/// Everything one step produces.
#[derive(Clone, Debug)]
pub struct RefStep {
    pub targets: RefTargets,
    pub source_loss: f64,
    pub target_loss: f64,
    pub total_loss: f64,
    pub mask_rate: f64,
    pub d_joint: Vec<f64>,
    pub d_source: Vec<f64>,
}

/// One full step: returns its outputs and the state after it.
#[allow(clippy::too_many_arguments)]
pub fn adamatch_step(
    cfg: &RefConfig,
    state: &RefState,
    joint: &[f64],
    source: &[f64],
    lambdas: &[f64],
    labels: &[u32],
    mu: f64,
) -> (RefStep, RefState) {
    let (t, next) = adamatch_targets(cfg, state, joint, source, lambdas);
    let (source_loss, target_loss, total_loss) = adamatch_losses(cfg, &t, joint, source, lambdas, labels, mu);
    let (d_joint, d_source) = adamatch_grads(cfg, &t, joint, source, lambdas, labels, mu);
    let mask_rate = t.mask.iter().sum::<f64>() / t.mask.len() as f64;
    (
        RefStep {
            targets: t,
            source_loss,
            target_loss,
            total_loss,
            mask_rate,
            d_joint,
            d_source,
        },
        next,
    )
}
