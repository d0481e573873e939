//! The pre-activation WideResNet (REFERENCE.md, "Network") built from the WGSL kernels.
//!
//! Parameters live in one flat GPU buffer (and their gradients in a second one with the same
//! layout), each tensor at a 256-byte-aligned offset, so optimizers and EMA can treat all weights
//! as one array. Batch-norm running statistics live in a third buffer. A [`Workspace`] holds the
//! activations for one batch size and the recorded ops of each pass, built once and reused.

//!
//! - [`architecture`]: the config, the layers and the tensor layout, computed without a GPU;
//! - [`params`]: [`WideResNet`], those tensors on the GPU and their initialisation;
//! - [`workspace`]: [`Workspace`], the activations of one batch size and each pass's ops;
//! - [`onnx`]: the inference graph as an ONNX model.

mod architecture;
pub mod onnx;
mod params;
mod workspace;

pub use architecture::*;
pub use params::*;
pub use workspace::*;
