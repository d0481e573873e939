//! The training step on the GPU against the f64 CPU reference step
//! (`tests/reference/train_step.rs`), which is composed of the per-family references.

#[path = "../reference/mod.rs"]
mod reference;

mod overrides;
mod plots;
mod report;
mod step;

use std::sync::OnceLock;

use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};

pub use reference::network::named;

/// One device shared by all tests in this binary.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new_blocking(&AdapterChoice::default()).expect("a GPU adapter for the training tests")
    })
}
