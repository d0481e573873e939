//! AdaMatch training: presets ([`config`]), the GPU step ([`trainer`]), checkpoints, evaluation,
//! plots and the loop behind `adamatch-wgpu train` ([`run`]).

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod plots;
pub mod run;
pub mod trainer;
