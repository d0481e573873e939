//! Every WGSL kernel against the f64 CPU reference in `tests/reference/`, on shapes that are not
//! multiples of the workgroup sizes. Runs on any adapter; CI uses lavapipe.

#[path = "../reference/mod.rs"]
mod reference;

mod activation;
mod adamatch;
mod augment;
mod batchnorm;
mod conv2d;
mod dense;
mod fixmatch;
mod optimizer;
mod pool;
mod softmax_ce;

use std::sync::OnceLock;

use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};

/// One device shared by all tests in this binary.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new_blocking(&AdapterChoice::default()).expect("a GPU adapter for the kernel tests"))
}
