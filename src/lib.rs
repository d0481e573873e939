//! adamatch-wgpu: AdaMatch domain adaptation trained on the GPU with hand-written WGSL kernels.
//!
//! Modules, one per concern:
//! - [`profile`]: the adapter facts and kernel variants the kernels choose by (imports nothing).
//! - [`gpu`]: adapter selection, device, buffers ([`gpu::Tensor`]), recorded ops, readback.
//! - [`shaders`]: the embedded WGSL sources.
//! - [`kernels`]: one Rust wrapper per shader file.
//! - [`network`]: the WideResNet built from the kernels; [`weights`]: safetensors files.
//! - [`data`]: dataset loaders (MNIST IDX, SVHN MAT, image folders), synthetic domains, downloads.
//! - [`train`]: the AdaMatch step and training loop; [`inference`]: classification; [`bench`].
//! - [`cli`]: the command line's subcommands and their handlers (`src/main.rs` only parses).
//! - `web` (wasm32 with the `web` feature): the browser exports over [`inference`] and
//!   [`train`]; [`serve`]: the web demo over HTTP on this machine (native).
//!
//! On wasm32 the crate has inference and the training step ([`train::trainer`], its config and
//! evaluation, every readback awaited); the training loop of `train` (files, clocks, Ctrl-C),
//! `bench` and the CLI are native-only.

pub mod autotune;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod console;
pub mod data;
pub mod fault;
#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod gpu;
pub mod inference;
pub mod input;
pub mod kernels;
pub mod network;
pub mod profile;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;
pub mod shaders;
pub mod timing;
pub mod train;
#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub mod web;
pub mod weights;
