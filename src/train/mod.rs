//! AdaMatch training: presets ([`config`]), the GPU step ([`trainer`]), checkpoints, evaluation,
//! plots and the loop behind `adamatch-wgpu train` ([`run`]). The browser build has the step,
//! its config and evaluation; checkpoints, plots and the loop (files, clocks) are native-only.

#[cfg(not(target_arch = "wasm32"))]
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod overrides;
#[cfg(not(target_arch = "wasm32"))]
pub mod parse;
#[cfg(not(target_arch = "wasm32"))]
pub mod plots;
#[cfg(not(target_arch = "wasm32"))]
pub mod record;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod trainer;

mod batch;
mod calibration;
mod loss;
pub mod schedule;
mod step_inputs;
mod step_metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod tensorboard;
mod update;
