//! Saving and loading weights as safetensors.
//!
//! Every trainable tensor and BN running statistic is stored under the name in
//! [`WideResNet::param_specs`] / [`WideResNet::running_specs`] as little-endian f32, with the
//! network configuration and the input scaling in the file's metadata. The README's weight-format
//! table documents names, layouts and the transposes PyTorch and Keras need.

use std::collections::{BTreeMap, HashMap};
#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

#[cfg(not(target_arch = "wasm32"))]
use anyhow::Context;
use anyhow::{anyhow, bail, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::input::InputScale;
use crate::network::{Architecture, WideResNet, WideResNetConfig};

pub const FORMAT: &str = "adamatch-wgpu/1";
pub const LAYOUT: &str = "activations NHWC; conv kernels HWIO [KH,KW,Cin,Cout]; dense kernel [in,out]; TF SAME padding";

/// The contents of a weights file, parsed and checked against the network it describes.
pub struct Weights {
    pub config: WideResNetConfig,
    pub input_scale: InputScale,
    /// The class names, one per output (metadata `classes`, a JSON array; `"0"`, `"1"`, ... in
    /// files written before class names existed).
    pub classes: Vec<String>,
    /// Flat parameters in the layout of a `WideResNet::new(config)`.
    pub params: Vec<f32>,
    /// Flat running statistics in that layout.
    pub running: Vec<f32>,
    /// Metadata entries not interpreted here (training step, preset, ...).
    pub extra: HashMap<String, String>,
}

/// Serializes the named tensors of `net` from flat host copies of its buffers.
pub fn to_bytes(
    net: &WideResNet,
    params: &[f32],
    running: &[f32],
    input_scale: InputScale,
    extra: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for s in net.param_specs() {
        tensors.push((s.name.clone(), s.shape.clone(), &params[s.offset..s.offset + s.len()]));
    }
    for s in net.running_specs() {
        tensors.push((s.name.clone(), s.shape.clone(), &running[s.offset..s.offset + s.len()]));
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| bytemuck::cast_slice(d).to_vec())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta: HashMap<String, String> = extra.clone().into_iter().collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("layout".into(), LAYOUT.into());
    meta.insert("config".into(), serde_json::to_string(&net.config)?);
    meta.insert("input_scale".into(), input_scale.name().into());
    serialize_canonical(views, meta)
}

/// `safetensors::serialize` with its JSON header rewritten with the keys of every object sorted.
/// The crate takes the metadata as a `HashMap`, whose order differs from process to process, so
/// without this the same tensors and metadata gave different bytes in each run (and `cmp` or a
/// checksum called identical models different).
pub fn serialize_canonical(views: Vec<(String, TensorView<'_>)>, meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes = safetensors::serialize(views, Some(meta))?;
    let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
    let mut text = serde_json::to_string(&sorted_json(&header))?.into_bytes();
    // The same entries in another order: the same length before the padding to 8 bytes.
    if text.len() > n {
        bail!(
            "internal error: the sorted safetensors header grew ({} > {n} bytes)",
            text.len()
        );
    }
    text.resize(n, b' ');
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..8]);
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// `v` with every object's keys in sorted order (whatever map type serde_json was built with).
pub fn sorted_json(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            serde_json::Value::Object(keys.into_iter().map(|k| (k.clone(), sorted_json(&map[k]))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use crate::files::write_atomically;

/// The largest safetensors header accepted (the crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Opens a safetensors file the user named (`what`: "weights file", "checkpoint") and checks,
/// before reading more than 8 bytes, that it is a regular file whose declared header fits in it.
/// Returns the file, its size and the header's length.
#[cfg(not(target_arch = "wasm32"))]
fn open_checked(path: &Path, what: &str) -> Result<(std::fs::File, u64, u64)> {
    use std::io::Read;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{what} {} is not a regular file (a folder, device or pipe): name a .safetensors file",
            path.display()
        );
    }
    let size = meta.len();
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    let mut len = [0u8; 8];
    if size < 8 || f.read_exact(&mut len).is_err() {
        bail!(
            "{what} {} is not a safetensors file: {size} bytes, shorter than its 8-byte header length",
            path.display()
        );
    }
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES || n > size - 8 {
        bail!(
            "{what} {} is not a safetensors file: its header declares {n} bytes but the file holds {} after the length",
            path.display(),
            size - 8
        );
    }
    Ok((f, size, n))
}

/// Reads a safetensors file whole after [`open_checked`]'s checks, never more than the size the
/// file had when opened.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_checked(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    let (mut f, size, _) = open_checked(path, what)?;
    f.rewind()
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(size)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(bytes)
}

/// The JSON header of a safetensors file, read without its tensors.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_header(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let (f, _, n) = open_checked(path, what)?;
    let mut header = Vec::with_capacity(n as usize);
    f.take(n)
        .read_to_end(&mut header)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(header)
}

/// Reads the network's parameters and running statistics and saves them to `path`.
#[cfg(not(target_arch = "wasm32"))]
pub fn save(
    ctx: &crate::gpu::GpuContext,
    net: &WideResNet,
    path: &Path,
    input_scale: InputScale,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let params = net.read_params(ctx)?;
    let running = net.read_running(ctx)?;
    write_atomically(path, &to_bytes(net, &params, &running, input_scale, extra)?)
}

/// Reads and checks a weights file.
#[cfg(not(target_arch = "wasm32"))]
pub fn load(path: &Path) -> Result<Weights> {
    let bytes = read_checked(path, "weights file")?;
    from_bytes(&bytes).with_context(|| format!("invalid weights file {}", path.display()))
}

/// Parses weights from bytes: the config from the metadata, then every tensor, failing with the
/// name of any missing, extra, misshapen or non-f32 tensor.
pub fn from_bytes(bytes: &[u8]) -> Result<Weights> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    let mut meta = header.metadata().clone().unwrap_or_default();
    match meta.remove("format").as_deref() {
        Some(FORMAT) => {}
        Some(other) => bail!("metadata 'format' is '{other}', expected '{FORMAT}'"),
        None => bail!("metadata has no 'format' entry: not written by adamatch-wgpu (expected '{FORMAT}')"),
    }
    let config: WideResNetConfig = serde_json::from_str(
        &meta
            .remove("config")
            .ok_or_else(|| anyhow!("metadata has no 'config' entry"))?,
    )
    .map_err(|e| anyhow!("metadata 'config' is not a valid network config: {e}"))?;
    config.blocks_per_stage()?;
    let input_scale = InputScale::parse(
        &meta
            .remove("input_scale")
            .ok_or_else(|| anyhow!("metadata has no 'input_scale' entry"))?,
    )?;
    meta.remove("layout");
    let classes = match meta.remove("classes") {
        None => (0..config.num_classes).map(|c| c.to_string()).collect(),
        Some(json) => {
            let classes: Vec<String> = serde_json::from_str(&json)
                .map_err(|e| anyhow!("metadata 'classes' is not a JSON array of names: {e}"))?;
            if classes.len() != config.num_classes {
                bail!(
                    "metadata 'classes' names {} classes but the network has {} outputs",
                    classes.len(),
                    config.num_classes
                );
            }
            let mut sorted = classes.clone();
            sorted.sort();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                bail!("metadata 'classes' names class '{}' twice", w[0]);
            }
            classes
        }
    };

    let arch = Architecture::new(&config)?;
    // Every tensor the config declares must be in the file, with its shape, before anything is
    // allocated for them (the config is untrusted: it could declare gigabytes).
    let mut expected: HashMap<&str, ()> = HashMap::new();
    for spec in arch.param_specs().iter().chain(arch.running_specs()) {
        expected.insert(&spec.name, ());
        let view = st
            .tensor(&spec.name)
            .map_err(|_| anyhow!("tensor '{}' is missing (expected shape {:?})", spec.name, spec.shape))?;
        if view.dtype() != Dtype::F32 {
            bail!("tensor '{}' has dtype {:?}, expected F32", spec.name, view.dtype());
        }
        if view.shape() != spec.shape.as_slice() {
            bail!(
                "tensor '{}' has shape {:?}, expected {:?}",
                spec.name,
                view.shape(),
                spec.shape
            );
        }
    }
    let mut params = vec![0.0f32; arch.params_len()];
    let mut running = vec![0.0f32; arch.running_len()];
    for (specs, flat) in [(arch.param_specs(), &mut params), (arch.running_specs(), &mut running)] {
        for spec in specs.iter() {
            let view = st.tensor(&spec.name).expect("checked above");
            let dst = &mut flat[spec.offset..spec.offset + spec.len()];
            for (d, c) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            if dst.iter().any(|v| !v.is_finite()) {
                bail!("tensor '{}' contains NaN or infinite values", spec.name);
            }
        }
    }
    let mut extra_names: Vec<&str> = st.names().into_iter().filter(|n| !expected.contains_key(n)).collect();
    extra_names.sort();
    if let Some(name) = extra_names.first() {
        bail!(
            "unexpected tensor '{name}' (not part of a depth-{} width-{} WideResNet){}",
            config.depth,
            config.width,
            if extra_names.len() > 1 {
                format!(" and {} more", extra_names.len() - 1)
            } else {
                String::new()
            }
        );
    }
    Ok(Weights {
        config,
        input_scale,
        classes,
        params,
        running,
        extra: meta,
    })
}
