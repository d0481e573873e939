//! The browser build's JavaScript API (wasm32 with the `web` feature; `scripts/build-web.sh`).
//!
//! The same network, kernels and `shaders/*.wgsl` as native `predict` ([`WebClassifier`],
//! over [`crate::inference::Classifier`]) and native `train` ([`WebTrainer`], over
//! [`crate::train::trainer::Trainer`]), on the browser's WebGPU. Readback is `map_async` awaited
//! through a channel (a blocking poll does nothing on the web), and every GPU call runs inside
//! error scopes so that a failure (a shader the browser rejects, an allocation refused) comes
//! back as a rejected promise with the browser's message instead of a console warning and
//! garbage.
//!
//! ```js
//! import init, { WebClassifier, WebTrainer, prepareInput } from "./pkg/adamatch_wgpu.js";
//! await init();
//! const clf = await WebClassifier.create();          // rejects when WebGPU is missing;
//!                                                    // { autotune: true } tunes on any adapter
//! const about = await clf.loadWeights(bytes);        // Uint8Array of a .safetensors file
//! clf.tuning;                                        // { tiles, timed, cached, seconds, clock }
//! const r = await clf.classifyRgba(rgba, w, h);      // ImageData.data, any size
//! r.probs; r.logits; r.predicted; r.input;           // Float32Array x2, number, 32x32x3 Uint8Array
//! r.className; clf.classes;                          // the predicted class's name; every name
//!
//! const t = await WebTrainer.create({ preset: "tiny", steps: 600, seed: 0, algorithm: "adamatch" });
//! await t.setTargetImages(files);                    // optional: the user's unlabeled photos
//! const m = await t.step(20);                        // the last step's metrics
//! const e = await t.evaluate();                      // { step, source, target } test results
//! const weights = await t.exportWeights();           // Uint8Array: model.safetensors
//! t.stepsDone; t.imagesPerSecond; t.elapsedSeconds;  // at any moment
//! ```

mod classifier;
mod trainer;
mod tuning;

pub use classifier::{Classification, WebClassifier};
pub use trainer::WebTrainer;

use anyhow::{bail, Result};
use wasm_bindgen::prelude::*;

use crate::data::image::resize_and_pad_rgba;
use crate::gpu::{AdapterChoice, GpuContext};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Runs when the module is instantiated: panics print their message to the console (a wasm
/// panic otherwise shows only "unreachable").
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("adamatch-wgpu panicked: {info}"))
    }));
}

/// Every WGSL module exactly as the engine hands it to the device (the constants Rust writes for
/// it prepended), as a JSON object from file name to source: the browser test compiles each.
#[wasm_bindgen(js_name = shaderSources)]
pub fn shader_sources() -> String {
    let sources: std::collections::BTreeMap<&str, String> = crate::kernels::SHADERS
        .iter()
        .map(|s| (s.module_name(), s.source()))
        .collect();
    serde_json::to_string(&sources).unwrap_or_default()
}

/// An anyhow chain as one JS error message.
fn js_error(e: anyhow::Error) -> JsError {
    JsError::new(&format!("{e:#}"))
}

/// Runs `work` inside out-of-memory, validation and internal error scopes and fails with the
/// first error the browser reports.
async fn gpu_checked<T>(ctx: &GpuContext, what: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let scopes = [
        ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
        ctx.device.push_error_scope(wgpu::ErrorFilter::Validation),
        ctx.device.push_error_scope(wgpu::ErrorFilter::Internal),
    ];
    let result = work.await;
    // Scopes pop innermost first.
    let mut first_error = None;
    for scope in scopes.into_iter().rev() {
        if let Some(e) = scope.pop().await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => bail!("the GPU reported an error while {what}: {e}"),
        None => result,
    }
}

/// The default network's 32x32x3 input (RGB, row-major) for an RGBA image of any size: the same
/// aspect-preserving Pillow-bilinear resize and centred zero padding as `predict` (a loaded
/// model of another `--image-size` gets its own side in [`WebClassifier::classify_rgba`]).
#[wasm_bindgen(js_name = prepareInput)]
pub fn prepare_input(rgba: &[u8], width: u32, height: u32) -> Result<Vec<u8>, JsError> {
    check_rgba(rgba, width, height).map_err(js_error)?;
    Ok(resize_and_pad_rgba(rgba, width, height, crate::data::IMAGE_SIZE))
}

fn check_rgba(rgba: &[u8], width: u32, height: u32) -> Result<()> {
    let want = width as u64 * height as u64 * 4;
    if width == 0 || height == 0 {
        bail!("the image is empty ({width}x{height})");
    }
    if rgba.len() as u64 != want {
        bail!(
            "{} bytes of RGBA pixels for a {width}x{height} image (expected {want})",
            rgba.len()
        );
    }
    Ok(())
}

/// The `autotune` option (`true`/`false` or `"on"`/`"off"`; absent: the adapter's default,
/// on for GPUs and off for software adapters), from an options object.
fn autotune_option(options: &JsValue) -> Result<Option<bool>> {
    if !options.is_object() {
        return Ok(None);
    }
    let v = js_sys::Reflect::get(options, &JsValue::from_str("autotune")).unwrap_or(JsValue::UNDEFINED);
    if v.is_undefined() || v.is_null() {
        Ok(None)
    } else if let Some(b) = v.as_bool() {
        Ok(Some(b))
    } else if let Some(text) = v.as_string() {
        crate::profile::parse_on_off(&text)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("option autotune: {e}"))
    } else {
        bail!("option autotune: expected true, false, \"on\" or \"off\"")
    }
}

/// Opens the browser's WebGPU device with the limits training and inference need, autotuning
/// the convolutions' tiles as `autotune` says; fails with a message naming the problem when the
/// browser has no WebGPU or its adapter is too small.
async fn open_device(autotune: Option<bool>) -> Result<GpuContext> {
    if !has_webgpu() {
        bail!(
            "WebGPU is not available in this browser (navigator.gpu is missing). Use a recent \
             Chrome, Edge or Safari, or Firefox with WebGPU enabled, over https or localhost."
        );
    }
    let choice = AdapterChoice {
        backend: Some("webgpu".into()),
        adapter: None,
        conv_path: None,
        conv_tiles: None,
        autotune,
    };
    GpuContext::new(&choice).await
}

/// What the adapter calls itself (browsers often leave its description empty).
fn adapter_name(ctx: &GpuContext) -> String {
    let i = &ctx.info;
    match (i.name.is_empty(), i.device_type) {
        (false, _) => i.name.clone(),
        (true, wgpu::DeviceType::Cpu) => "WebGPU software fallback adapter".into(),
        (true, _) => "WebGPU adapter".into(),
    }
}

/// Whether `navigator.gpu` exists (in a window or a worker).
fn has_webgpu() -> bool {
    let get = |obj: &JsValue, key: &str| js_sys::Reflect::get(obj, &JsValue::from_str(key)).ok();
    get(&js_sys::global(), "navigator")
        .filter(|nav| nav.is_object())
        .and_then(|nav| get(&nav, "gpu"))
        .is_some_and(|gpu| gpu.is_object())
}
