//! adamatch-wgpu: AdaMatch domain adaptation trained on the GPU with hand-written WGSL kernels.
//!
//! Modules, one per concern:
//! - [`gpu`]: adapter selection, device, buffers ([`gpu::Tensor`]), recorded ops, readback.
//! - [`shaders`]: the embedded WGSL sources.
//! - [`kernels`]: one Rust wrapper per shader file.
//! - [`network`]: the WideResNet built from the kernels; [`weights`]: safetensors files.
//! - [`data`]: dataset loaders (MNIST IDX, SVHN MAT, image folders), synthetic domains, downloads.
//! - [`train`]: the AdaMatch step and training loop; [`inference`]: classification; [`bench`].

pub mod bench;
pub mod data;
pub mod gpu;
pub mod inference;
pub mod input;
pub mod kernels;
pub mod network;
pub mod shaders;
pub mod train;
pub mod weights;
