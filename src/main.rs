//! The `adamatch-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use adamatch_wgpu::bench::{self, BenchOptions};
use adamatch_wgpu::data::cli::DataCommand;
use adamatch_wgpu::data::download::resolve_data_dir;
use adamatch_wgpu::data::spec::{load_sized, parse_dataset_spec, DatasetSpec, Split};
use adamatch_wgpu::data::Preprocess;
use adamatch_wgpu::gpu::{self, AdapterChoice, GpuContext};
use adamatch_wgpu::inference::Classifier;
use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::kernels::conv2d::ConvPath;
use adamatch_wgpu::network::{Activation, WideResNetConfig};
use adamatch_wgpu::serve::{self, ServeOptions, WebServer};
use adamatch_wgpu::train::config::{
    Algorithm, AlignmentKind, AugmentStyle, InvertViews, LrSchedule, Optimizer, PseudoLabels, SourcePassBn, TrainConfig,
};
use adamatch_wgpu::train::eval::Evaluator;
use adamatch_wgpu::train::run::{train, RunOptions, Setting};
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
    /// Run every convolution on this path instead of the adapter's own (tiled: GPUs; direct and
    /// subgroup: CPU adapters). Refused with the reason where the adapter cannot run it.
    #[arg(long, global = true, value_enum, env = "ADAMATCH_CONV_PATH")]
    conv_path: Option<ConvPath>,
}

impl GpuArgs {
    fn choice(&self) -> AdapterChoice {
        AdapterChoice {
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            conv_path: self.conv_path,
        }
    }

    fn context(&self) -> Result<GpuContext> {
        let ctx = GpuContext::new_blocking(&self.choice())?;
        eprintln!(
            "adapter: {} (convolution path: {})",
            ctx.adapter_summary(),
            ctx.profile.conv_path
        );
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
    /// Train with AdaMatch (or the FixMatch or source-only baseline) on a source and a target domain.
    Train(Box<TrainArgs>),
    /// Accuracy, per-class accuracy and confusion matrix of trained weights on a dataset.
    Eval(EvalArgs),
    /// Serve the web demo (web/) on this machine, with these weights as the page's default.
    Serve(ServeArgs),
    /// Download, check, inspect and preview datasets.
    Data {
        #[command(subcommand)]
        cmd: DataCommand,
    },
}

/// The paper's three settings (see `train --setting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SettingArg {
    Uda,
    Ssda,
    Ssl,
}

#[derive(Args)]
struct TrainArgs {
    /// paper (default), keras-example or tiny; every value can be overridden below.
    #[arg(long, default_value = "paper")]
    preset: String,
    /// Labeled source domain: mnist, svhn, synth-digits[:SEED], synth-house[:SEED], idx:PATH,
    /// mat:PATH, dir:PATH or a path.
    #[arg(long, default_value = "synth-digits")]
    source: String,
    /// Target domain; its labels, if any, are never used for training [default: synth-house].
    #[arg(long)]
    target: Option<String>,
    /// uda (labeled source, unlabeled target), ssda (also --target-labeled images) or ssl (one
    /// dataset, --source: --labels-per-class labeled images of each class, the rest unlabeled)
    /// [default: ssda with --target-labeled, else uda].
    #[arg(long, value_enum)]
    setting: Option<SettingArg>,
    /// SSDA: labeled target images (a dataset of the target domain; its training split).
    #[arg(long, value_name = "DATASET")]
    target_labeled: Option<String>,
    /// SSDA: use this many of --target-labeled's images per class (a seeded pick) [default: all].
    #[arg(long, value_name = "N")]
    target_labels_per_class: Option<usize>,
    /// SSL: labeled images per class picked from the source's training split.
    #[arg(long, value_name = "N")]
    labels_per_class: Option<usize>,
    /// Seed of the labeled picks (SSDA, SSL), apart from the training seed.
    #[arg(long, default_value_t = 0)]
    labels_seed: u64,
    /// Labeled source test set [default: the source's test split].
    #[arg(long, value_name = "DATASET")]
    source_test: Option<String>,
    /// Labeled target test set [default: the target's test split; when that is unlabeled,
    /// evaluation reports the predicted classes, mean confidence and mask rate instead].
    #[arg(long, value_name = "DATASET")]
    target_test: Option<String>,
    /// Run directory (config.json, metrics.jsonl, checkpoint, model.safetensors, plots).
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start from these weights (a model.safetensors of the same network, e.g. a source-only
    /// run's) instead of a random initialisation.
    #[arg(long, value_name = "WEIGHTS")]
    init: Option<PathBuf>,
    /// adamatch, or a baseline: fixmatch or source-only.
    #[arg(long, value_parser = ["adamatch", "fixmatch", "source-only"])]
    algorithm: Option<String>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Source images per step (the target batch is uratio times larger).
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    uratio: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// sgd or adam.
    #[arg(long, value_parser = ["sgd", "adam"])]
    optimizer: Option<String>,
    /// Nesterov momentum for SGD.
    #[arg(long)]
    nesterov: bool,
    /// EMA momentum of the evaluation weights, or "none".
    #[arg(long)]
    ema: Option<String>,
    /// AdaMatch's relative confidence threshold factor.
    #[arg(long, allow_negative_numbers = true)]
    tau: Option<f32>,
    /// FixMatch's fixed confidence threshold [default: 0.95].
    #[arg(long, allow_negative_numbers = true)]
    confidence: Option<f32>,
    /// Distribution alignment: paper (EMA / 128-batch history) or keras (per batch, clipped).
    #[arg(long, value_parser = ["paper", "keras"])]
    alignment: Option<String>,
    /// Pseudo-labels: hard (argmax) or soft.
    #[arg(long, value_parser = ["hard", "soft"])]
    pseudo_labels: Option<String>,
    /// Source loss = SCALE * (CE_weak + CE_strong).
    #[arg(long, allow_negative_numbers = true)]
    source_scale: Option<f32>,
    /// Batch norm of the second (source-only) pass: train (batch statistics) or inference.
    #[arg(long, value_parser = ["train", "inference"])]
    source_pass_bn: Option<String>,
    /// Augmentations: paper or keras.
    #[arg(long, value_parser = ["paper", "keras"])]
    augment: Option<String>,
    /// Random horizontal flips in the weak and strong views (true or false).
    #[arg(long)]
    hflip: Option<bool>,
    /// Which training views invert the levels of their image (p = 0.5): none, strong or all.
    /// For digits and text, which read the same light on dark and dark on light.
    #[arg(long, value_enum)]
    invert: Option<InvertViews>,
    /// Batch-norm recalibration: training-mode passes over N batches of weak views set the
    /// evaluation weights' statistics before each evaluation and the export (0: off).
    #[arg(long)]
    bn_calibration: Option<usize>,
    /// Learning-rate schedule: paper, keras (cosine to 0.25x) or constant.
    #[arg(long, value_parser = ["paper", "keras", "constant"])]
    lr_schedule: Option<String>,
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    width: Option<usize>,
    /// Side of the network's input images in pixels: a multiple of 8 from 16 to 128 (default
    /// 32). Image files are fitted into it; MNIST, SVHN and the built-in pair are resized to it.
    #[arg(long)]
    image_size: Option<usize>,
    /// relu, leaky (0.1) or leakyS.
    #[arg(long)]
    activation: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    bn_momentum: Option<f32>,
    /// paper or keras.
    #[arg(long, value_parser = ["paper", "keras"])]
    input_scale: Option<String>,
    #[arg(long)]
    log_every: Option<u64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Test images per evaluation ("all" for the whole test sets).
    #[arg(long)]
    eval_limit: Option<String>,
    /// Dataset cache [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
    #[arg(long, env = "ADAMATCH_DATA")]
    data_dir: Option<PathBuf>,
    /// No progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
    /// Stop with a checkpoint after this many steps of this invocation (as an interruption would).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    weights: PathBuf,
    /// Dataset (its test split unless --split train). Labeled: accuracy, per-class accuracy
    /// and confusion matrix; always: predicted classes, mean confidence and mask rate.
    #[arg(long)]
    data: String,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// How 28x28 MNIST images become 32x32 [default: pad for paper-scaled weights, resize for keras].
    #[arg(long, value_enum)]
    preprocess: Option<Preprocess>,
    /// Evaluate at most N images: a seeded sample keeping each class's share (the same one
    /// `train --eval-limit` uses).
    #[arg(long)]
    limit: Option<usize>,
    /// Top-1 probability an image must reach to count in the mask rate (FixMatch's fixed
    /// threshold by default).
    #[arg(long, default_value_t = 0.95, value_parser = parse_probability)]
    threshold: f64,
    #[arg(long)]
    json: bool,
    #[arg(long, env = "ADAMATCH_DATA")]
    data_dir: Option<PathBuf>,
}

/// A probability in [0, 1] (refuses NaN).
fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a probability in [0, 1]")),
        Err(e) => Err(format!("'{s}': {e}")),
    }
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
struct ServeArgs {
    /// Weights the page loads by default [default: the web directory's model.safetensors].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Port on the host (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on (browsers allow WebGPU on localhost without https).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The web directory with the built bundle [default: web/ of the source tree this binary was
    /// built from].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds a client has to send its request head (the whole exchange gets twice this).
    #[arg(long, default_value_t = serve::DEFAULT_DEADLINE.as_secs_f64(), value_parser = parse_deadline)]
    deadline: f64,
}

/// A deadline in seconds: positive and finite, at most an hour.
fn parse_deadline(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a deadline in (0, 3600] seconds")),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Time the whole training step of --preset instead of the network's forward+backward.
    #[arg(long)]
    step: bool,
    /// With --step: paper (default), keras-example or tiny.
    #[arg(long, default_value = "paper", requires = "step")]
    preset: String,
    /// With --step: timed steps (after --warmup untimed ones).
    #[arg(long, default_value_t = 3, requires = "step")]
    steps: usize,
    #[arg(long, default_value_t = 1, requires = "step")]
    warmup: usize,
    /// With --step: target images per source image (default: the preset's).
    #[arg(long, requires = "step")]
    uratio: Option<usize>,
    /// With --step: skip the op-by-op profile.
    #[arg(long, requires = "step")]
    no_profile: bool,
    /// With --step: the side of the images (default: the preset's, 32).
    #[arg(long, requires = "step")]
    image_size: Option<usize>,
    /// With --step: timed runs of the main pass's forward+backward alone (0 skips it).
    #[arg(long, default_value_t = 1, requires = "step")]
    engine_reps: usize,
    /// Batch size of the timed pass (64); with --step, source images per step (the preset's).
    #[arg(long)]
    batch: Option<usize>,
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
        if path.is_dir() {
            bail!(
                "{} is a directory: predict takes image files (for a folder, `eval --data dir:{}`)",
                path.display(),
                path.display()
            );
        }
        let img = image::open(path).with_context(|| format!("cannot decode image {}", path.display()))?;
        pixels.extend_from_slice(&adamatch_wgpu::data::image::resize_and_pad(&img, w.config.image_size));
    }
    let ctx = gpu.context()?;
    let mut clf = Classifier::new(&ctx, &w, scale, args.images.len().min(64))?;
    let preds = clf.classify(&ctx, &pixels)?;
    for (path, p) in args.images.iter().zip(preds) {
        if args.json {
            let obj = serde_json::json!({
                "file": path.display().to_string(),
                "class": p.class,
                "class_name": w.classes[p.class],
                "probs": p.probs,
                "logits": p.logits,
            });
            println!("{obj}");
        } else if p.probs.len() <= 10 {
            let probs: Vec<String> = p.probs.iter().map(|v| format!("{v:.4}")).collect();
            println!(
                "{}: class {} (p = {:.4})  probs [{}]",
                path.display(),
                w.classes[p.class],
                p.probs[p.class],
                probs.join(", ")
            );
        } else {
            let mut order: Vec<usize> = (0..p.probs.len()).collect();
            order.sort_by(|&a, &b| p.probs[b].total_cmp(&p.probs[a]).then(a.cmp(&b)));
            let top: Vec<String> = order[..5]
                .iter()
                .map(|&c| format!("{} {:.4}", w.classes[c], p.probs[c]))
                .collect();
            println!(
                "{}: class {} (p = {:.4})  top 5 of {}: {}",
                path.display(),
                w.classes[p.class],
                p.probs[p.class],
                p.probs.len(),
                top.join(", ")
            );
        }
    }
    Ok(())
}

fn serve_cmd(a: &ServeArgs) -> Result<()> {
    let opts = ServeOptions {
        dir: a.dir.clone().unwrap_or_else(serve::default_web_dir),
        weights: a.weights.clone(),
        host: a.host.clone(),
        port: a.port,
        deadline: std::time::Duration::from_secs_f64(a.deadline),
    };
    let server = WebServer::bind(&opts)?;
    // 127.0.0.1 is a secure context like localhost, so WebGPU works without https.
    let banner = format!(
        "serving http://{}/\n  page: {}\n  weights: {} (at {})\nCtrl-C stops.\n",
        server.local_addr()?,
        opts.dir.display(),
        server.weights().display(),
        serve::WEIGHTS_URL
    );
    // A closed stdout (a script that read the URL and went on) must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, banner.as_bytes()).and_then(|_| std::io::Write::flush(&mut out));
    drop(out);
    server.run()
}

fn bench_step_cmd(gpu: &GpuArgs, args: &BenchArgs) -> Result<()> {
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        bench::step::print_report(&report);
    }
    Ok(())
}

fn bench_cmd(gpu: &GpuArgs, args: &BenchArgs) -> Result<()> {
    if args.step {
        return bench_step_cmd(gpu, args);
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
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        bench::print_report(&report);
    }
    Ok(())
}

/// The preset with every flag the user gave applied on top.
fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut c = TrainConfig::preset(&a.preset)?;
    if let Some(v) = &a.algorithm {
        c.algorithm = match v.as_str() {
            "source-only" => Algorithm::SourceOnly,
            "fixmatch" => Algorithm::Fixmatch,
            _ => Algorithm::Adamatch,
        };
    }
    macro_rules! set {
        ($($field:ident).+ <- $arg:expr) => {
            if let Some(v) = $arg {
                c.$($field).+ = v;
            }
        };
    }
    set!(steps <- a.steps);
    set!(seed <- a.seed);
    set!(batch <- a.batch);
    set!(uratio <- a.uratio);
    set!(lr <- a.lr);
    set!(weight_decay <- a.weight_decay);
    set!(tau <- a.tau);
    set!(confidence <- a.confidence);
    set!(network.depth <- a.depth);
    set!(network.width <- a.width);
    set!(network.image_size <- a.image_size);
    set!(network.bn_momentum <- a.bn_momentum);
    set!(log_every <- a.log_every);
    set!(eval_every <- a.eval_every);
    set!(checkpoint_every <- a.checkpoint_every);
    if let Some(v) = &a.activation {
        c.network.activation = Activation::parse(v)?;
    }
    if let Some(v) = &a.input_scale {
        c.input_scale = InputScale::parse(v)?;
    }
    if let Some(v) = &a.optimizer {
        c.optimizer = match v.as_str() {
            "adam" => Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
            _ => Optimizer::Sgd {
                momentum: 0.9,
                nesterov: a.nesterov,
            },
        };
    }
    if let Optimizer::Sgd { nesterov, .. } = &mut c.optimizer {
        *nesterov |= a.nesterov;
    }
    if let Some(v) = &a.ema {
        c.ema = if v == "none" {
            None
        } else {
            Some(
                v.parse()
                    .with_context(|| format!("--ema {v}: expected a number or none"))?,
            )
        };
    }
    if let Some(v) = &a.alignment {
        c.alignment = if v == "keras" {
            AlignmentKind::Keras
        } else {
            AlignmentKind::Paper
        };
    }
    if let Some(v) = &a.pseudo_labels {
        c.pseudo_labels = if v == "soft" {
            PseudoLabels::Soft
        } else {
            PseudoLabels::Hard
        };
    }
    set!(source_scale <- a.source_scale);
    set!(hflip <- a.hflip);
    set!(invert <- a.invert);
    set!(bn_calibration <- a.bn_calibration);
    if let Some(v) = &a.source_pass_bn {
        c.source_pass_bn = if v == "inference" {
            SourcePassBn::Inference
        } else {
            SourcePassBn::Train
        };
    }
    if let Some(v) = &a.augment {
        c.augment = if v == "keras" {
            AugmentStyle::Keras
        } else {
            AugmentStyle::Paper
        };
    }
    if let Some(v) = &a.lr_schedule {
        c.lr_schedule = match v.as_str() {
            "keras" => LrSchedule::KerasCosine { alpha: 0.25 },
            "constant" => LrSchedule::Constant,
            _ => LrSchedule::PaperCosine,
        };
    }
    if let Some(v) = &a.eval_limit {
        c.eval_limit = if v == "all" {
            None
        } else {
            Some(
                v.parse()
                    .with_context(|| format!("--eval-limit {v}: expected a number or all"))?,
            )
        };
    }
    c.validate()?;
    Ok(c)
}

/// The run's setting from --setting and the flags that go with it; a flag of another setting is
/// an error naming both.
fn setting(a: &TrainArgs) -> Result<Setting> {
    let chosen = a.setting.unwrap_or(if a.target_labeled.is_some() {
        SettingArg::Ssda
    } else {
        SettingArg::Uda
    });
    let refuse = |flag: &str, given: bool| -> Result<()> {
        if given {
            bail!(
                "{flag} does not apply to --setting {}",
                format!("{chosen:?}").to_lowercase()
            );
        }
        Ok(())
    };
    Ok(match chosen {
        SettingArg::Uda => {
            refuse("--labels-per-class", a.labels_per_class.is_some())?;
            refuse("--target-labels-per-class", a.target_labels_per_class.is_some())?;
            Setting::Uda
        }
        SettingArg::Ssda => {
            refuse("--labels-per-class", a.labels_per_class.is_some())?;
            let labeled = a
                .target_labeled
                .as_deref()
                .context("--setting ssda needs --target-labeled DATASET (labeled target images)")?;
            Setting::Ssda {
                labeled: parse_dataset_spec(labeled).context("--target-labeled")?,
                per_class: a.target_labels_per_class,
            }
        }
        SettingArg::Ssl => {
            refuse("--target", a.target.is_some())?;
            refuse("--target-labeled", a.target_labeled.is_some())?;
            refuse("--target-labels-per-class", a.target_labels_per_class.is_some())?;
            Setting::Ssl {
                per_class: a
                    .labels_per_class
                    .context("--setting ssl needs --labels-per-class N (labeled images per class of --source)")?,
            }
        }
    })
}

fn train_cmd(gpu: &GpuArgs, a: &TrainArgs) -> Result<()> {
    let cfg = train_config(a)?;
    let ctx = gpu.context()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("second Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let opts = RunOptions {
        out_dir: a.out.clone(),
        setting: setting(a)?,
        labels_seed: a.labels_seed,
        source: parse_dataset_spec(&a.source)?,
        target: match &a.target {
            Some(t) => parse_dataset_spec(t)?,
            None => DatasetSpec::default_target(),
        },
        source_test: a
            .source_test
            .as_deref()
            .map(parse_dataset_spec)
            .transpose()
            .context("--source-test")?,
        target_test: a
            .target_test
            .as_deref()
            .map(parse_dataset_spec)
            .transpose()
            .context("--target-test")?,
        data_dir: resolve_data_dir(a.data_dir.as_deref()),
        resume: a.resume,
        init: a.init.clone(),
        stop_after: a.stop_after,
        progress: !a.no_progress,
        interrupted,
    };
    let data = match &opts.setting {
        Setting::Uda => format!("source {} -> target {}", opts.source, opts.target),
        Setting::Ssda { labeled, per_class } => format!(
            "source {} -> target {} with labeled target images from {labeled}{}",
            opts.source,
            opts.target,
            per_class.map(|n| format!(" ({n} per class)")).unwrap_or_default()
        ),
        Setting::Ssl { per_class } => format!(
            "{}: {per_class} labeled images per class, the rest unlabeled",
            opts.source
        ),
    };
    eprintln!(
        "preset {} ({:?}, {}), {} steps, {data}, run directory {}",
        cfg.preset,
        cfg.algorithm,
        opts.setting.name(),
        cfg.steps,
        a.out.display()
    );
    let summary = train(&ctx, cfg, &opts)?;
    if let Some((s, t)) = &summary.last_eval {
        println!("source test: {}", s.summary());
        println!("target test: {}", t.summary());
    }
    println!(
        "{} steps in {:.1} s; run directory {}",
        summary.steps_done,
        summary.wall_s,
        a.out.display()
    );
    Ok(())
}

fn eval_cmd(gpu: &GpuArgs, a: &EvalArgs) -> Result<()> {
    let w = weights::load(&a.weights)?;
    let spec = parse_dataset_spec(&a.data)?;
    let pre = a.preprocess.unwrap_or(match w.input_scale {
        InputScale::Paper => Preprocess::Pad,
        InputScale::Keras => Preprocess::Resize,
    });
    let data = load_sized(
        &spec,
        a.split,
        pre,
        &resolve_data_dir(a.data_dir.as_deref()),
        w.config.image_size,
    )?
    .sample(
        a.limit.unwrap_or(usize::MAX),
        adamatch_wgpu::train::run::EVAL_SAMPLE_SEED,
    );
    let ctx = gpu.context()?;
    let clf = Classifier::new(&ctx, &w, w.input_scale, 1)?;
    let mut ev = Evaluator::new(&ctx, &clf.net, 256, w.classes.clone())?;
    let r = ev.run(&ctx, &clf.net, &data, w.input_scale, None, Some(a.threshold))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{} ({} images): {}", spec, r.images, r.summary());
        print!("{}", r.confusion_table());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let gpu = cli.gpu.clone();
    let result = match cli.command {
        Command::Info => info(&gpu),
        Command::Predict(a) => predict(&gpu, &a),
        Command::Bench(a) => bench_cmd(&gpu, &a),
        Command::Train(a) => train_cmd(&gpu, &a),
        Command::Eval(a) => eval_cmd(&gpu, &a),
        Command::Serve(a) => serve_cmd(&a),
        Command::Data { cmd } => adamatch_wgpu::data::cli::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
