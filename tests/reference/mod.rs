//! CPU reference implementations in f64, one `*_forward` / `*_backward` pair per layer (the
//! llm.c way). GPU kernels are tested against these; the network-level reference is built from
//! them. Layouts match the GPU: activations NHWC, conv weights HWIO.
#![allow(dead_code)]

pub mod activation;
pub mod adamatch;
pub mod augment;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod fixmatch;
pub mod network;
pub mod optimizer;
pub mod pool;
pub mod softmax_ce;
pub mod train_step;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Deterministic test data: uniform in [-1, 1).
pub fn random_vec(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// (argmax (first maximum), the maximum, the largest of the others) of a row.
pub fn top_two(v: &[f64]) -> (usize, f64, f64) {
    let top = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let arg = v.iter().position(|&x| x == top).unwrap();
    let second = v
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != arg)
        .map(|(_, &x)| x)
        .fold(f64::NEG_INFINITY, f64::max);
    (arg, top, second)
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `|gpu - cpu| <= atol + rtol * |cpu|` elementwise, naming the first bad index.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        gpu.len(),
        cpu.len(),
        "{what}: length {} vs reference {}",
        gpu.len(),
        cpu.len()
    );
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g as f64 - c).abs();
        let tol = atol + rtol * c.abs();
        assert!(
            err <= tol && g.is_finite(),
            "{what}: index {i}: gpu {g} vs cpu {c} (error {err:.3e} > tolerance {tol:.3e})"
        );
        if err > worst.1 {
            worst = (i, err);
        }
    }
}
