//! Global average pooling over NHWC with H*W flattened: x [batch, hw, c] -> y [batch, c].

pub fn global_avg_pool_forward(x: &[f64], batch: usize, hw: usize, c: usize) -> Vec<f64> {
    assert_eq!(x.len(), batch * hw * c);
    let mut y = vec![0.0; batch * c];
    for n in 0..batch {
        for p in 0..hw {
            for ch in 0..c {
                y[n * c + ch] += x[(n * hw + p) * c + ch];
            }
        }
    }
    y.iter_mut().for_each(|v| *v /= hw as f64);
    y
}

/// dx[n, p, c] = dy[n, c] / hw.
pub fn global_avg_pool_backward(dy: &[f64], batch: usize, hw: usize, c: usize) -> Vec<f64> {
    assert_eq!(dy.len(), batch * c);
    let mut dx = vec![0.0; batch * hw * c];
    for n in 0..batch {
        for p in 0..hw {
            for ch in 0..c {
                dx[(n * hw + p) * c + ch] = dy[n * c + ch] / hw as f64;
            }
        }
    }
    dx
}
