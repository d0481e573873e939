//! adamatch-wgpu: AdaMatch domain adaptation trained on the GPU with hand-written WGSL kernels.
//!
//! Modules, one per concern:
//! - [`gpu`]: adapter selection, device, buffers ([`gpu::Tensor`]), recorded ops, readback.
//! - [`shaders`]: the embedded WGSL sources.
//! - [`kernels`]: one Rust wrapper per shader file.
//! - [`data`]: dataset loaders (MNIST IDX, SVHN MAT, image folders), synthetic domains, downloads.

pub mod data;
pub mod gpu;
pub mod kernels;
pub mod shaders;
