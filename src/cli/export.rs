//! `export`: trained weights as an ONNX model (`network::onnx`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::console::printable_path;
use crate::network::onnx::{self, OnnxSource};
use crate::weights;

#[derive(Args)]
pub struct ExportArgs {
    /// Weights file written by `train` (safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Where to write the ONNX model (uint8 RGB images [N, S, S, 3] in, logits [N, classes] out).
    #[arg(long)]
    onnx: PathBuf,
    /// Replace an existing file at --onnx.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    if args.onnx.exists() && !args.overwrite {
        bail!(
            "{} already exists: pass --overwrite to replace it, or choose another --onnx path",
            printable_path(&args.onnx)
        );
    }
    let w = weights::load(&args.weights)?;
    let bytes = onnx::export(&OnnxSource {
        config: &w.config,
        params: &w.params,
        running: &w.running,
        input_scale: w.input_scale,
        classes: &w.classes,
    })
    .with_context(|| format!("exporting {}", printable_path(&args.weights)))?;
    crate::files::write_atomically(&args.onnx, &bytes)
        .with_context(|| format!("writing {}", printable_path(&args.onnx)))?;
    let s = w.config.image_size;
    crate::outln!(
        "wrote {} ({:.1} MB, ONNX opset {}): input `image` uint8 [N, {s}, {s}, 3] (RGB, scaled in the graph: {}), output `logits` [N, {}]",
        printable_path(&args.onnx),
        bytes.len() as f64 / 1e6,
        onnx::OPSET,
        w.input_scale.name(),
        w.classes.len()
    )?;
    Ok(())
}
