//! `bench`: kernel timings at WideResNet shapes, or the whole training step (`--step`).

use anyhow::{bail, Result};
use clap::Args;

use super::GpuArgs;
use crate::bench::{self, BenchOptions};
use crate::network::{Activation, WideResNetConfig};
use crate::train::config::TrainConfig;
use crate::train::parse;

#[derive(Args)]
pub struct BenchArgs {
    /// Time the whole training step of --preset instead of the network's forward+backward.
    #[arg(long)]
    step: bool,
    /// With --step: paper (default), keras-example or tiny.
    #[arg(long, default_value = "paper", requires = "step")]
    preset: String,
    /// With --step: timed steps (after --warmup untimed ones).
    #[arg(long, default_value_t = 3, requires = "step", value_parser = parse::positive)]
    steps: usize,
    #[arg(long, default_value_t = 1, requires = "step", value_parser = |s: &str| parse::count::<usize>(s, 0, 1_000_000))]
    warmup: usize,
    /// With --step: target images per source image (default: the preset's).
    #[arg(long, requires = "step", value_parser = parse::positive)]
    uratio: Option<usize>,
    /// With --step: skip the op-by-op profile.
    #[arg(long, requires = "step")]
    no_profile: bool,
    /// With --step: the side of the images (default: the preset's, 32).
    #[arg(long, requires = "step", value_parser = parse::image_size)]
    image_size: Option<usize>,
    /// With --step: timed runs of the main pass's forward+backward alone (0 skips it).
    #[arg(long, default_value_t = 1, requires = "step", value_parser = |s: &str| parse::count::<usize>(s, 0, 1_000_000))]
    engine_reps: usize,
    /// Batch size of the timed pass (64); with --step, source images per step (the preset's).
    #[arg(long, value_parser = parse::positive)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 28, value_parser = parse::depth)]
    depth: usize,
    #[arg(long, default_value_t = 2, value_parser = parse::width)]
    width: usize,
    /// relu or leaky (slope 0.1).
    #[arg(long, default_value = "leaky")]
    activation: String,
    /// Timed repetitions of the whole pass.
    #[arg(long, default_value_t = 3, value_parser = parse::positive)]
    reps: usize,
    #[arg(long)]
    json: bool,
}

fn run_step(gpu: &GpuArgs, args: &BenchArgs) -> Result<()> {
    let mut config = TrainConfig::preset(&args.preset)?;
    if let Some(b) = args.batch {
        config.batch = b;
    }
    if let Some(u) = args.uratio {
        config.uratio = u;
    }
    if let Some(s) = args.image_size {
        config.network.image_size = s;
    }
    config.validate()?;
    let ctx = gpu.context()?;
    let report = bench::step::run(
        &ctx,
        &bench::step::StepBenchOptions {
            config,
            warmup: args.warmup,
            steps: args.steps,
            profile: !args.no_profile,
            engine_reps: args.engine_reps,
        },
    )?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        bench::step::print_report(&report)?;
    }
    Ok(())
}

pub fn run(gpu: &GpuArgs, args: &BenchArgs) -> Result<()> {
    if args.step {
        return run_step(gpu, args);
    }
    let ctx = gpu.context()?;
    let activation = Activation::parse(&args.activation)?;
    let config = WideResNetConfig {
        depth: args.depth,
        width: args.width,
        activation,
        ..WideResNetConfig::paper()
    };
    let batch = args.batch.unwrap_or(64);
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let report = bench::run(
        &ctx,
        &BenchOptions {
            config,
            batch,
            reps: args.reps,
        },
    )?;
    if args.json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        bench::print_report(&report)?;
    }
    Ok(())
}
