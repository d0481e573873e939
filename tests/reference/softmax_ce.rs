//! Softmax cross-entropy with hard or soft targets and per-row weights.
//! row_loss[i] = -sum_k t_ik log_softmax(z_i)_k; loss = scale * sum_i w_i row_loss[i];
//! a hard label >= classes means "no target" (zero loss and gradient), as on the GPU.

pub enum RefTargets<'a> {
    /// Class index per row.
    Hard(&'a [u32]),
    /// [rows, classes] distribution per row; need not sum to 1.
    Soft(&'a [f64]),
}

impl RefTargets<'_> {
    /// Row `r`'s target vector.
    fn row(&self, r: usize, classes: usize) -> Vec<f64> {
        match self {
            RefTargets::Hard(labels) => {
                let mut t = vec![0.0; classes];
                if let Some(v) = t.get_mut(labels[r] as usize) {
                    *v = 1.0;
                }
                t
            }
            RefTargets::Soft(t) => t[r * classes..(r + 1) * classes].to_vec(),
        }
    }
}

/// log_softmax of one row, stable (max subtracted before exp).
pub fn log_softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
    z.iter().map(|&v| v - lse).collect()
}

/// (row_losses, loss).
pub fn softmax_ce_forward(
    logits: &[f64],
    rows: usize,
    classes: usize,
    targets: &RefTargets,
    weights: &[f64],
    scale: f64,
) -> (Vec<f64>, f64) {
    assert_eq!(logits.len(), rows * classes);
    assert_eq!(weights.len(), rows);
    let row_losses: Vec<f64> = (0..rows)
        .map(|r| {
            let ls = log_softmax(&logits[r * classes..(r + 1) * classes]);
            let t = targets.row(r, classes);
            -t.iter().zip(&ls).map(|(t, l)| t * l).sum::<f64>()
        })
        .collect();
    let loss = scale * row_losses.iter().zip(weights).map(|(l, w)| l * w).sum::<f64>();
    (row_losses, loss)
}

/// d loss / d logits = scale * w_i * (softmax_i * sum_k t_ik - t_i).
pub fn softmax_ce_backward(
    logits: &[f64],
    rows: usize,
    classes: usize,
    targets: &RefTargets,
    weights: &[f64],
    scale: f64,
) -> Vec<f64> {
    assert_eq!(logits.len(), rows * classes);
    assert_eq!(weights.len(), rows);
    let mut d = vec![0.0; rows * classes];
    for r in 0..rows {
        let ls = log_softmax(&logits[r * classes..(r + 1) * classes]);
        let t = targets.row(r, classes);
        let sum_t: f64 = t.iter().sum();
        for k in 0..classes {
            d[r * classes + k] = scale * weights[r] * (ls[k].exp() * sum_t - t[k]);
        }
    }
    d
}
