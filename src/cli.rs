//! The `adamatch-wgpu` command line: the arguments of every subcommand and its handler, one
//! module per command family (`data` lives with the datasets, in [`crate::data::cli`]).

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::data::cli::DataCommand;
use crate::gpu::{AdapterChoice, GpuContext};
use crate::profile::{ConvPath, ConvTiles};

pub mod bench;
pub mod export;
pub mod predict;
pub mod serve;
pub mod train;

#[derive(Parser)]
#[command(
    name = "adamatch-wgpu",
    version,
    about = "AdaMatch domain adaptation trained on any GPU with hand-written WGSL kernels"
)]
pub struct Cli {
    #[command(flatten)]
    pub gpu: GpuArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to pick the adapter and its kernels; every subcommand takes these.
#[derive(Args, Clone)]
pub struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12, gl or all.
    #[arg(long, global = true, env = "ADAMATCH_BACKEND")]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (see `info`).
    #[arg(long, global = true, env = "ADAMATCH_ADAPTER")]
    adapter: Option<String>,
    /// Run every convolution on this path instead of the adapter's own (tiled: GPUs; direct and
    /// subgroup: CPU adapters). Refused with the reason where the adapter cannot run it.
    /// `ADAMATCH_CONV_PATH` does the same for every process (read by the GPU context alone);
    /// this flag wins over it.
    #[arg(long, global = true, value_enum)]
    conv_path: Option<ConvPath>,
    /// The tiled path's tiles, MxNxK (GEMM rows and columns per workgroup, reduction steps
    /// staged at a time), one of the candidates `info` lists (default 144x32x16). Every choice
    /// gives the same bits; they differ in speed. `ADAMATCH_CONV_TILES` does the same for every
    /// process; this flag wins over it.
    #[arg(long, global = true)]
    conv_tiles: Option<ConvTiles>,
    /// Tune the tiled path's tiles per layer shape the first time a network runs on this
    /// adapter (on: the default on GPUs) or keep the default tiles (off: the default on CPU
    /// adapters, whose own paths are not tiled). The choices are cached per
    /// adapter, driver and version in the cache directory and never change a result's bits.
    /// `ADAMATCH_AUTOTUNE` does the same for every process; this flag wins over it.
    #[arg(long, global = true, value_parser = crate::profile::parse_on_off)]
    autotune: Option<bool>,
}

impl GpuArgs {
    pub fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            conv_path: self.conv_path,
            conv_tiles: self.conv_tiles,
            autotune: self.autotune,
        }
    }

    pub fn context(&self) -> Result<GpuContext> {
        let ctx = GpuContext::new_blocking(&self.choice())?;
        crate::errln!(
            "adapter: {} (convolution path: {})",
            ctx.adapter_summary(),
            ctx.profile.conv_kernels()
        );
        Ok(ctx)
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// List every GPU adapter and the limits that matter.
    Info,
    /// Classify PNG/JPEG images with trained weights.
    Predict(predict::PredictArgs),
    /// Time each kernel at WRN-28-2 shapes and the whole training-mode forward+backward.
    Bench(bench::BenchArgs),
    /// Train with AdaMatch (or the FixMatch or source-only baseline) on a source and a target domain.
    Train(Box<train::TrainArgs>),
    /// Accuracy, per-class accuracy and confusion matrix of trained weights on a dataset.
    Eval(train::EvalArgs),
    /// Write trained weights as an ONNX model, for ONNX Runtime, TensorRT, OpenVINO and others.
    Export(export::ExportArgs),
    /// Serve the web demo (web/) on this machine, with these weights as the page's default.
    Serve(serve::ServeArgs),
    /// Download, check, inspect and preview datasets.
    Data {
        #[command(subcommand)]
        cmd: DataCommand,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let gpu = &cli.gpu;
    match cli.command {
        Command::Info => predict::info(gpu),
        Command::Predict(a) => predict::run(gpu, &a),
        Command::Bench(a) => bench::run(gpu, &a),
        Command::Train(a) => train::run(gpu, &a),
        Command::Eval(a) => train::eval(gpu, &a),
        Command::Export(a) => export::run(&a),
        Command::Serve(a) => serve::run(&a),
        Command::Data { cmd } => crate::data::cli::run(cmd),
    }
}
