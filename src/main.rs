//! The `adamatch-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use adamatch_wgpu::bench::{self, BenchOptions};
use adamatch_wgpu::gpu::{self, AdapterChoice, GpuContext};
use adamatch_wgpu::inference::Classifier;
use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::network::{Activation, WideResNetConfig};
use adamatch_wgpu::weights;

#[derive(Parser)]
#[command(
    name = "adamatch-wgpu",
    version,
    about = "AdaMatch domain adaptation trained on any GPU with hand-written WGSL kernels"
)]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12, gl or all.
    #[arg(long, global = true, env = "ADAMATCH_BACKEND")]
    backend: Option<String>,
    /// Use the adapter whose name contains this text (see `info`).
    #[arg(long, global = true, env = "ADAMATCH_ADAPTER")]
    adapter: Option<String>,
}

impl GpuArgs {
    fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
        }
    }

    fn context(&self) -> Result<GpuContext> {
        let ctx = GpuContext::new_blocking(&self.choice())?;
        eprintln!("adapter: {}", ctx.adapter_summary());
        Ok(ctx)
    }
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter and the limits that matter.
    Info,
    /// Classify PNG/JPEG images with trained weights.
    Predict(PredictArgs),
    /// Time each kernel at WRN-28-2 shapes and the whole training-mode forward+backward.
    Bench(BenchArgs),
}

#[derive(Args)]
struct PredictArgs {
    /// Weights file written by `train` (safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Input scaling; defaults to the one recorded in the weights file.
    #[arg(long, value_parser = ["paper", "keras"])]
    input_scale: Option<String>,
    /// One JSON object per image (file, class, probs, logits).
    #[arg(long)]
    json: bool,
    /// Images (any size; resized to 32x32 keeping aspect ratio, zero padded).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Batch size of the timed pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 28)]
    depth: usize,
    #[arg(long, default_value_t = 2)]
    width: usize,
    /// relu or leaky (slope 0.1).
    #[arg(long, default_value = "leaky")]
    activation: String,
    /// Timed repetitions of the whole pass.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long)]
    json: bool,
}

fn info(args: &GpuArgs) -> Result<()> {
    let adapters = gpu::list_adapters(args.backend.as_deref())?;
    if adapters.is_empty() {
        bail!("no GPU adapter found. Install your GPU's driver, or for a CPU fallback on Debian/Ubuntu: apt-get install -y mesa-vulkan-drivers");
    }
    for (i, a) in adapters.iter().enumerate() {
        let inf = a.get_info();
        println!("[{i}] {}", inf.name);
        println!(
            "    backend: {:?}, type: {:?}, driver: {} {}",
            inf.backend, inf.device_type, inf.driver, inf.driver_info
        );
        println!(
            "    timestamp queries: {}",
            a.features().contains(wgpu::Features::TIMESTAMP_QUERY)
        );
        for (name, v) in gpu::describe_limits(&a.limits()) {
            println!("    {name}: {v}");
        }
    }
    match GpuContext::new_blocking(&args.choice()) {
        Ok(ctx) => println!("selected: {}", ctx.adapter_summary()),
        Err(e) => println!("no usable adapter for the current choice: {e:#}"),
    }
    Ok(())
}

fn predict(gpu: &GpuArgs, args: &PredictArgs) -> Result<()> {
    let w = weights::load(&args.weights)?;
    let scale = match &args.input_scale {
        Some(s) => {
            let s = InputScale::parse(s)?;
            if s != w.input_scale {
                eprintln!(
                    "warning: {} was trained with input scale '{}', using '{}' as asked",
                    args.weights.display(),
                    w.input_scale.name(),
                    s.name()
                );
            }
            s
        }
        None => w.input_scale,
    };
    let mut pixels = Vec::new();
    for path in &args.images {
        let img = image::open(path).with_context(|| format!("cannot decode image {}", path.display()))?;
        pixels.extend_from_slice(&adamatch_wgpu::data::image::resize_and_pad(&img));
    }
    let ctx = gpu.context()?;
    let mut clf = Classifier::new(&ctx, &w, scale, args.images.len().min(64))?;
    let preds = clf.classify(&ctx, &pixels)?;
    for (path, p) in args.images.iter().zip(preds) {
        if args.json {
            let obj = serde_json::json!({
                "file": path.display().to_string(),
                "class": p.class,
                "probs": p.probs,
                "logits": p.logits,
            });
            println!("{obj}");
        } else {
            let probs: Vec<String> = p.probs.iter().map(|v| format!("{v:.4}")).collect();
            println!(
                "{}: class {} (p = {:.4})  probs [{}]",
                path.display(),
                p.class,
                p.probs[p.class],
                probs.join(", ")
            );
        }
    }
    Ok(())
}

fn bench_cmd(gpu: &GpuArgs, args: &BenchArgs) -> Result<()> {
    let ctx = gpu.context()?;
    let activation = Activation::parse(&args.activation)?;
    let config = WideResNetConfig {
        depth: args.depth,
        width: args.width,
        activation,
        ..WideResNetConfig::paper()
    };
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let report = bench::run(
        &ctx,
        &BenchOptions {
            config,
            batch: args.batch,
            reps: args.reps,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        bench::print_report(&report);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info => info(&cli.gpu),
        Command::Predict(a) => predict(&cli.gpu, a),
        Command::Bench(a) => bench_cmd(&cli.gpu, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
