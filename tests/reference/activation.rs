//! Leaky ReLU (slope 0 = ReLU); derivative at 0 is `slope`.

pub fn activation_forward(x: &[f64], slope: f64) -> Vec<f64> {
    x.iter().map(|&v| if v > 0.0 { v } else { slope * v }).collect()
}

pub fn activation_backward(x: &[f64], dy: &[f64], slope: f64) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| if v > 0.0 { g } else { slope * g })
        .collect()
}
