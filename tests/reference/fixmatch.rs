//! The FixMatch loss of one step in f64, written from the formulas (Sohn et al. 2020) on
//! AdaMatch's joint logits `[2B + 2uB, C]` = src_weak(B), src_strong(B), tgt_weak(uB),
//! tgt_strong(uB):
//!
//! `loss = mean_B CE(src_weak, y) + mean_uB mask_j * CE(tgt_strong_j, pseudo_j)`, with
//! `pseudo_j = argmax p(tgt_weak_j)` and `mask_j = [max p(tgt_weak_j) >= threshold]`, both step
//! constants (no gradient). Source-strong and target-weak rows get no gradient.

use super::softmax_ce::log_softmax;

#[derive(Clone, Copy, Debug)]
pub struct RefConfig {
    pub batch: usize,
    pub uratio: usize,
    pub classes: usize,
    pub threshold: f64,
}

impl RefConfig {
    pub fn target_rows(&self) -> usize {
        self.batch * self.uratio
    }
    pub fn joint_rows(&self) -> usize {
        2 * self.batch + 2 * self.target_rows()
    }
}

/// Everything one step produces.
#[derive(Clone, Debug)]
pub struct RefStep {
    pub pseudo: Vec<u32>,
    pub mask: Vec<f64>,
    /// Per target row: |max p - threshold| (how far the mask is from flipping).
    pub mask_margin: Vec<f64>,
    /// Per target row: the top probability minus the second (how far the argmax is from flipping).
    pub argmax_margin: Vec<f64>,
    pub source_loss: f64,
    pub target_loss: f64,
    pub total_loss: f64,
    pub mask_rate: f64,
    pub d_joint: Vec<f64>,
}

fn ce(logits: &[f64], label: usize) -> f64 {
    -log_softmax(logits)[label]
}

/// (source, target, total) given the step constants: the loss as a function of the logits.
pub fn fixmatch_losses(
    cfg: &RefConfig,
    joint: &[f64],
    labels: &[u32],
    pseudo: &[u32],
    mask: &[f64],
) -> (f64, f64, f64) {
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    let src = (0..b)
        .map(|r| ce(&joint[r * c..(r + 1) * c], labels[r] as usize))
        .sum::<f64>()
        / b as f64;
    let tgt = (0..ub)
        .map(|j| {
            let r = 2 * b + ub + j;
            mask[j] * ce(&joint[r * c..(r + 1) * c], pseudo[j] as usize)
        })
        .sum::<f64>()
        / ub as f64;
    (src, tgt, src + tgt)
}

pub fn fixmatch_step(cfg: &RefConfig, joint: &[f64], labels: &[u32]) -> RefStep {
    let (b, ub, c) = (cfg.batch, cfg.target_rows(), cfg.classes);
    assert_eq!(joint.len(), cfg.joint_rows() * c);
    assert_eq!(labels.len(), b);
    let (mut pseudo, mut mask, mut mask_margin, mut argmax_margin) = (vec![], vec![], vec![], vec![]);
    for j in 0..ub {
        let r = 2 * b + j;
        let p: Vec<f64> = log_softmax(&joint[r * c..(r + 1) * c])
            .iter()
            .map(|l| l.exp())
            .collect();
        let (arg, top, second) = super::top_two(&p);
        pseudo.push(arg as u32);
        mask.push(if top >= cfg.threshold { 1.0 } else { 0.0 });
        mask_margin.push((top - cfg.threshold).abs());
        argmax_margin.push(top - second);
    }
    let (source_loss, target_loss, total_loss) = fixmatch_losses(cfg, joint, labels, &pseudo, &mask);
    // d CE(x, k) / dx = softmax(x) - onehot(k).
    let ce_grad = |x: &[f64], k: usize| -> Vec<f64> {
        let mut g: Vec<f64> = log_softmax(x).iter().map(|l| l.exp()).collect();
        g[k] -= 1.0;
        g
    };
    let mut d_joint = vec![0.0; joint.len()];
    for r in 0..b {
        let g = ce_grad(&joint[r * c..(r + 1) * c], labels[r] as usize);
        for (d, g) in d_joint[r * c..(r + 1) * c].iter_mut().zip(g) {
            *d = g / b as f64;
        }
    }
    for j in 0..ub {
        let r = 2 * b + ub + j;
        let g = ce_grad(&joint[r * c..(r + 1) * c], pseudo[j] as usize);
        for (d, g) in d_joint[r * c..(r + 1) * c].iter_mut().zip(g) {
            *d = mask[j] * g / ub as f64;
        }
    }
    let mask_rate = mask.iter().sum::<f64>() / ub as f64;
    RefStep {
        pseudo,
        mask,
        mask_margin,
        argmax_margin,
        source_loss,
        target_loss,
        total_loss,
        mask_rate,
        d_joint,
    }
}
