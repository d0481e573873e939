//! Batch norm fused with the following leaky ReLU (slope 0 = ReLU), on `rows` x `channels` data
//! (channel fastest): z = gamma * (x - mean) / sqrt(var + eps) + beta, y = act(z). Variance is
//! the biased batch variance (Keras); act'(z) = 1 if z > 0 else slope.

fn act(z: f64, slope: f64) -> f64 {
    if z > 0.0 {
        z
    } else {
        slope * z
    }
}

fn act_grad(z: f64, slope: f64) -> f64 {
    if z > 0.0 {
        1.0
    } else {
        slope
    }
}

/// Per-channel mean and biased variance (two-pass).
pub fn batchnorm_moments(x: &[f64], rows: usize, channels: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(x.len(), rows * channels);
    let mut mean = vec![0.0; channels];
    for row in x.chunks_exact(channels) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut var = vec![0.0; channels];
    for row in x.chunks_exact(channels) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= rows as f64);
    (mean, var)
}

/// Training mode: normalise with the batch statistics. Returns (y, batch mean, biased batch var).
pub fn batchnorm_forward_train(
    x: &[f64],
    rows: usize,
    channels: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    slope: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = batchnorm_moments(x, rows, channels);
    let y = batchnorm_forward_inference(x, rows, channels, gamma, beta, &mean, &var, eps, slope);
    (y, mean, var)
}

/// Inference mode (or any given statistics): y = act(gamma * (x - mean) / sqrt(var + eps) + beta).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_inference(
    x: &[f64],
    rows: usize,
    channels: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    slope: f64,
) -> Vec<f64> {
    assert_eq!(x.len(), rows * channels);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i % channels;
            let z = gamma[c] * (v - mean[c]) / (var[c] + eps).sqrt() + beta[c];
            act(z, slope)
        })
        .collect()
}

/// Per-channel (sum dz, sum dz * xhat) and the elementwise dz, for given statistics.
#[allow(clippy::too_many_arguments)]
fn dz_sums(
    x: &[f64],
    dy: &[f64],
    channels: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    slope: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dz = vec![0.0; x.len()];
    let mut xhat = vec![0.0; x.len()];
    let mut sum_dz = vec![0.0; channels];
    let mut sum_dz_xhat = vec![0.0; channels];
    for i in 0..x.len() {
        let c = i % channels;
        xhat[i] = (x[i] - mean[c]) / (var[c] + eps).sqrt();
        let z = gamma[c] * xhat[i] + beta[c];
        dz[i] = dy[i] * act_grad(z, slope);
        sum_dz[c] += dz[i];
        sum_dz_xhat[c] += dz[i] * xhat[i];
    }
    (dz, xhat, sum_dz, sum_dz_xhat)
}

/// Backward of [`batchnorm_forward_train`] w.r.t. x, gamma, beta (the batch statistics depend
/// on x). `dy` is the gradient w.r.t. y. Returns (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_train(
    x: &[f64],
    dy: &[f64],
    rows: usize,
    channels: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    slope: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mean, var) = batchnorm_moments(x, rows, channels);
    let (dz, xhat, sum_dz, sum_dz_xhat) = dz_sums(x, dy, channels, gamma, beta, &mean, &var, eps, slope);
    let n = rows as f64;
    let dx = (0..x.len())
        .map(|i| {
            let c = i % channels;
            let rstd = 1.0 / (var[c] + eps).sqrt();
            // dxhat = gamma * dz; mean(dxhat) and mean(dxhat * xhat) over the rows.
            let mean_dxhat = gamma[c] * sum_dz[c] / n;
            let mean_dxhat_xhat = gamma[c] * sum_dz_xhat[c] / n;
            rstd * (gamma[c] * dz[i] - mean_dxhat - xhat[i] * mean_dxhat_xhat)
        })
        .collect();
    (dx, sum_dz_xhat, sum_dz)
}

/// Backward of [`batchnorm_forward_inference`] (statistics are constants). Returns
/// (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_inference(
    x: &[f64],
    dy: &[f64],
    rows: usize,
    channels: usize,
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    slope: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(x.len(), rows * channels);
    let (dz, _, sum_dz, sum_dz_xhat) = dz_sums(x, dy, channels, gamma, beta, mean, var, eps, slope);
    let dx = dz
        .iter()
        .enumerate()
        .map(|(i, &g)| {
            let c = i % channels;
            gamma[c] * g / (var[c] + eps).sqrt()
        })
        .collect();
    (dx, sum_dz_xhat, sum_dz)
}
