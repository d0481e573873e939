//! Optimizer updates, EMA and gradient check in f64, written straight from the formulas (not
//! from the kernels' operation order): objax Momentum, Keras 3 Adam, objax EMA.

/// `g' = g + wd * mask * p; v = momentum * v + g'; p -= lr * v` (or `lr * (g' + momentum * v)`
/// with Nesterov, using the updated `v`).
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    p: &mut [f64],
    g: &[f64],
    vel: &mut [f64],
    mask: &[f64],
    lr: f64,
    wd: f64,
    momentum: f64,
    nesterov: bool,
) {
    for i in 0..p.len() {
        let gi = g[i] + wd * mask[i] * p[i];
        vel[i] = momentum * vel[i] + gi;
        let step = if nesterov { gi + momentum * vel[i] } else { vel[i] };
        p[i] -= lr * step;
    }
}

/// Adam at step `t` (from 1): `m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
/// p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    mask: &[f64],
    lr: f64,
    wd: f64,
    t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
) {
    let alpha = lr * (1.0 - beta2.powf(t as f64)).sqrt() / (1.0 - beta1.powf(t as f64));
    for i in 0..p.len() {
        let gi = g[i] + wd * mask[i] * p[i];
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
        p[i] -= alpha * m[i] / (v[i].sqrt() + eps);
    }
}

/// `ema = decay * ema + (1 - decay) * x`.
pub fn ema_update(ema: &mut [f64], x: &[f64], decay: f64) {
    for (e, &xi) in ema.iter_mut().zip(x) {
        *e = decay * *e + (1.0 - decay) * xi;
    }
}

/// (sum of squares, any NaN/Inf).
pub fn grad_check(g: &[f32]) -> (f64, bool) {
    let sum = g.iter().map(|&x| x as f64 * x as f64).sum();
    (sum, g.iter().any(|x| !x.is_finite()))
}
