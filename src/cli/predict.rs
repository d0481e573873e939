//! `info` (the adapters) and `predict` (classify image files).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::GpuArgs;
use crate::console::{printable, printable_path};
use crate::gpu::{self, GpuContext};
use crate::inference::Classifier;
use crate::input::InputScale;
use crate::profile::ConvTiles;
use crate::weights;

#[derive(Args)]
pub struct PredictArgs {
    /// Weights file written by `train` (safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Input scaling; defaults to the one recorded in the weights file.
    #[arg(long, value_enum)]
    input_scale: Option<InputScale>,
    /// One JSON object per image (file, class, probs, logits).
    #[arg(long)]
    json: bool,
    /// Images (any size; resized to 32x32 keeping aspect ratio, zero padded).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn info(args: &GpuArgs) -> Result<()> {
    let adapters = gpu::list_adapters(args.backend.as_deref())?;
    if adapters.is_empty() {
        bail!("no GPU adapter found. Install your GPU's driver, or for a CPU fallback on Debian/Ubuntu: apt-get install -y mesa-vulkan-drivers");
    }
    for (i, a) in adapters.iter().enumerate() {
        let inf = a.get_info();
        crate::outln!("[{i}] {}", inf.name)?;
        crate::outln!(
            "    backend: {:?}, type: {:?}, driver: {} {}",
            inf.backend,
            inf.device_type,
            inf.driver,
            inf.driver_info
        )?;
        crate::outln!(
            "    timestamp queries: {}",
            a.features().contains(wgpu::Features::TIMESTAMP_QUERY)
        )?;
        for (name, v) in gpu::describe_limits(&a.limits()) {
            crate::outln!("    {name}: {v}")?;
        }
    }
    match GpuContext::new_blocking(&args.choice()) {
        Ok(ctx) => crate::outln!(
            "selected: {}\n    kernels: convolution path {}, batch-norm tuning {:?}\n    tiled path's tile candidates: {}",
            ctx.adapter_summary(),
            ctx.profile.conv_kernels(),
            ctx.profile.batchnorm,
            ConvTiles::ALL.map(|t| t.to_string()).join(", ")
        )?,
        Err(e) => crate::outln!("no usable adapter for the current choice: {e:#}")?,
    }
    Ok(())
}

pub fn run(gpu: &GpuArgs, args: &PredictArgs) -> Result<()> {
    let w = weights::load(&args.weights)?;
    let scale = match args.input_scale {
        Some(s) => {
            if s != w.input_scale {
                crate::errln!(
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
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "{} is not a regular file (a device or pipe): predict takes image files",
                path.display()
            );
        }
        let reader = image::ImageReader::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
        let img = crate::data::image::decode_upright(reader)
            .with_context(|| format!("cannot decode image {}", path.display()))?;
        pixels.extend_from_slice(&crate::data::image::resize_and_pad(&img, w.config.image_size));
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
            crate::outln!("{obj}")?;
        } else if p.probs.len() <= 10 {
            let probs: Vec<String> = p.probs.iter().map(|v| format!("{v:.4}")).collect();
            crate::outln!(
                "{}: class {} (p = {:.4})  probs [{}]",
                printable_path(path),
                printable(&w.classes[p.class]),
                p.probs[p.class],
                probs.join(", ")
            )?;
        } else {
            let mut order: Vec<usize> = (0..p.probs.len()).collect();
            order.sort_by(|&a, &b| p.probs[b].total_cmp(&p.probs[a]).then(a.cmp(&b)));
            let top: Vec<String> = order[..5]
                .iter()
                .map(|&c| format!("{} {:.4}", printable(&w.classes[c]), p.probs[c]))
                .collect();
            crate::outln!(
                "{}: class {} (p = {:.4})  top 5 of {}: {}",
                printable_path(path),
                printable(&w.classes[p.class]),
                p.probs[p.class],
                p.probs.len(),
                top.join(", ")
            )?;
        }
    }
    Ok(())
}
