//! Checkpoints: every piece of training state (weights, BN statistics, optimizer state, EMA,
//! distribution-alignment state, host RNG position, step) in one safetensors file, written to a
//! temporary file and renamed, so a resumed run continues bitwise like an uninterrupted one.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::gpu::GpuContext;
use crate::weights::write_atomically;

use super::config::TrainConfig;
use super::record::RunRecord;
use super::trainer::Trainer;

pub const CHECKPOINT_FORMAT: &str = "adamatch-wgpu-checkpoint/1";

fn rng_state(rng: &ChaCha8Rng) -> String {
    let seed: String = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
    format!("{seed}:{}:{}", rng.get_stream(), rng.get_word_pos())
}

fn parse_rng_state(s: &str) -> Result<ChaCha8Rng> {
    use rand::SeedableRng;
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 || parts[0].len() != 64 {
        bail!("bad RNG state '{s}'");
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&parts[0][2 * i..2 * i + 2], 16).map_err(|_| anyhow!("bad RNG seed in '{s}'"))?;
    }
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(parts[1].parse().map_err(|_| anyhow!("bad RNG stream in '{s}'"))?);
    rng.set_word_pos(parts[2].parse().map_err(|_| anyhow!("bad RNG position in '{s}'"))?);
    Ok(rng)
}

/// Writes the trainer's whole state to `path` (waits for the GPU), with the run's record and
/// identity.
pub fn save(ctx: &GpuContext, trainer: &Trainer, record: &RunRecord, path: &Path) -> Result<()> {
    let tensors = trainer.state_tensors();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            Ok((
                name.clone(),
                t.shape.clone(),
                bytemuck::cast_slice(&t.read_f32(ctx)?).to_vec(),
            ))
        })
        .collect::<Result<_>>()?;
    let views = data
        .iter()
        .map(|(n, s, d)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), d)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
    meta.insert("config".to_string(), serde_json::to_string(&trainer.cfg)?);
    meta.insert("step".to_string(), trainer.step.to_string());
    meta.insert("rng".to_string(), rng_state(&trainer.rng));
    meta.insert("run".to_string(), serde_json::to_string(record)?);
    meta.insert("run_id".to_string(), record.id());
    let bytes = crate::weights::serialize_canonical(views, meta)?;
    write_atomically(path, &bytes)
}

/// What a checkpoint says of its run, read without its tensors.
pub struct Peeked {
    pub step: u64,
    pub config: TrainConfig,
    /// The run's record and identity (None in checkpoints written before they were stored).
    pub record: Option<RunRecord>,
}

/// The step, config and run record of a checkpoint, reading its header only.
pub fn peek(path: &Path) -> Result<Peeked> {
    let header = crate::weights::read_header(path, "checkpoint")?;
    let meta: HashMap<String, String> = serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("__metadata__")?.clone()).ok())
        .unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        bail!(
            "{} is not an adamatch-wgpu checkpoint (format {:?})",
            path.display(),
            meta.get("format")
        );
    }
    let step = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("checkpoint has no step"))?;
    let config = serde_json::from_str(meta.get("config").ok_or_else(|| anyhow!("checkpoint has no config"))?)
        .map_err(|e| anyhow!("checkpoint {} has an unreadable config: {e}", path.display()))?;
    let record = match meta.get("run") {
        None => None,
        Some(json) => {
            let r: RunRecord = serde_json::from_str(json)
                .map_err(|e| anyhow!("checkpoint {} has an unreadable run record: {e}", path.display()))?;
            if meta.get("run_id") != Some(&r.id()) {
                bail!(
                    "checkpoint {}: its run identity does not match its record (edited by hand?)",
                    path.display()
                );
            }
            Some(r)
        }
    };
    Ok(Peeked { step, config, record })
}

/// Restores a trainer built from the checkpoint's own config to the saved state.
pub fn restore(ctx: &GpuContext, trainer: &mut Trainer, path: &Path) -> Result<()> {
    let what = || format!("checkpoint {}", path.display());
    let bytes = crate::weights::read_checked(path, "checkpoint")?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{} is not a safetensors file: {e}", what()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("{}: {e}", what()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let step: u64 = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{} has no step", what()))?;
    let rng =
        parse_rng_state(meta.get("rng").ok_or_else(|| anyhow!("{} has no RNG state", what()))?).with_context(what)?;
    // The state tensors (the loss's among them) are those of the phase the run was in.
    trainer.enter_phase_after(ctx, step)?;
    for (name, t) in trainer.state_tensors() {
        let view = st
            .tensor(&name)
            .map_err(|_| anyhow!("{}: tensor '{name}' is missing", what()))?;
        if view.dtype() != Dtype::F32 || view.shape() != t.shape.as_slice() {
            bail!(
                "{}: tensor '{name}' has {:?} {:?}, expected F32 {:?}",
                what(),
                view.dtype(),
                view.shape(),
                t.shape
            );
        }
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        t.write_f32(ctx, &data);
    }
    trainer.step = step;
    trainer.forget_calibration();
    trainer.rng = rng;
    Ok(())
}
