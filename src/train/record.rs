//! A run directory as the user's record: which files make a run, what a run was asked to train
//! on ([`RunInputs`]), its identity (a hash of the resolved configuration and inputs, carried by
//! the checkpoint and `config.json`), and the differences between a run and the flags of a
//! `--resume`, each named by its flag.

use std::path::Path;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::TrainConfig;

/// The TensorBoard event file (`super::tensorboard`): TensorBoard reads files with `tfevents` in
/// their name; one per run directory, so the name is fixed.
pub const EVENTS_FILE: &str = "events.out.tfevents.adamatch-wgpu";

/// The files a run writes into its directory (besides temporary ones, see [`is_temporary`]).
pub const RUN_FILES: &[&str] = &[
    "checkpoint.safetensors",
    "model.safetensors",
    "config.json",
    "metrics.jsonl",
    EVENTS_FILE,
    "loss.png",
    "accuracy.png",
    "confusion.png",
    "predicted.png",
];

/// Whether a file name is one of this tool's temporary files (`.NAME.tmp-PID`).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes the temporary files a killed run left in `dir` (`.checkpoint.safetensors.tmp-PID`
/// and the like: a process killed while writing cannot remove its own). Where `/proc` tells which
/// processes live, a live process's file is left alone.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let proc = Path::new("/proc/self").exists();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = RUN_FILES.iter().any(|f| name.starts_with(&format!(".{f}.tmp-")));
        if !ours {
            continue;
        }
        let pid = name.rsplit("tmp-").next().unwrap_or("");
        if proc && pid != std::process::id().to_string() && Path::new("/proc").join(pid).exists() {
            continue;
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// The run files present in `dir` (none when it does not exist).
pub fn existing_run_files(dir: &Path) -> Vec<&'static str> {
    RUN_FILES.iter().copied().filter(|f| dir.join(f).exists()).collect()
}

/// Removes a run's files from `dir` (`train --overwrite`), leaving anything else the user put
/// there.
pub fn remove_run_files(dir: &Path) -> Result<()> {
    for f in existing_run_files(dir) {
        let p = dir.join(f);
        std::fs::remove_file(&p).map_err(|e| anyhow::anyhow!("--overwrite: cannot remove {}: {e}", p.display()))?;
    }
    Ok(())
}

/// What a run trains on, as the flags name it: with the [`TrainConfig`], everything that decides
/// the run. Stored in the checkpoint so that `--resume` needs no flag repeated and refuses one
/// that differs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInputs {
    /// uda, ssda or ssl.
    pub setting: String,
    pub source: String,
    pub target: String,
    pub source_test: Option<String>,
    pub target_test: Option<String>,
    pub target_labeled: Option<String>,
    pub target_labels_per_class: Option<usize>,
    pub labels_per_class: Option<usize>,
    pub labels_seed: u64,
    /// The `--init` weights file, as given.
    pub init: Option<String>,
}

/// A run's resolved configuration and inputs: what its identity hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: TrainConfig,
    pub inputs: RunInputs,
}

impl RunRecord {
    /// The run's identity: the first 16 bytes of the SHA-256 of its record as sorted JSON, in hex.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(&crate::weights::sorted_json(
            &serde_json::to_value(self).expect("a serializable record"),
        ))
        .expect("JSON of a value");
        Sha256::digest(&json)[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The settings of a record, each under the flag that sets it: `config.network.depth` is
/// `--depth`, `config.lr` is `--lr`, `inputs.source_test` is `--source-test`.
fn settings(r: &RunRecord) -> Vec<(String, Value)> {
    let flag = |field: &str| format!("--{}", field.replace('_', "-"));
    let mut out = Vec::new();
    let value = serde_json::to_value(r).expect("a serializable record");
    if let Value::Object(config) = &value["config"] {
        for (k, v) in config {
            match (k.as_str(), v) {
                ("network", Value::Object(net)) => out.extend(net.iter().map(|(k, v)| (flag(k), v.clone()))),
                _ => out.push((flag(k), v.clone())),
            }
        }
    }
    if let Value::Object(inputs) = &value["inputs"] {
        out.extend(inputs.iter().map(|(k, v)| (flag(k), v.clone())));
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        // The config's f32 values, widened on their way into JSON: shown as the f32 they are.
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if (x as f32) as f64 == x {
                (x as f32).to_string()
            } else {
                x.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Each setting in which `given` differs from the run `saved`, as "--flag: RUN in the run, GIVEN
/// given".
pub fn differences(saved: &RunRecord, given: &RunRecord) -> Vec<String> {
    let (a, b) = (settings(saved), settings(given));
    let mut out = Vec::new();
    for (flag, x) in &a {
        let y = b
            .iter()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null);
        if *x != y {
            out.push(format!("{flag}: {} in the run, {} given", show(x), show(&y)));
        }
    }
    out.sort();
    out
}

/// Refuses a `--resume` whose settings differ from the run's, listing each flag with both values.
pub fn check_same_run(dir: &Path, saved: &RunRecord, given: &RunRecord) -> Result<()> {
    let diffs = differences(saved, given);
    if !diffs.is_empty() {
        bail!(
            "--resume: {} was trained with other settings than these; a resumed run keeps its own \
             (leave these flags out, or start a new run with another --out):\n  {}",
            dir.display(),
            diffs.join("\n  ")
        );
    }
    Ok(())
}
