//! The browser build's JavaScript API (wasm32 with the `web` feature; `scripts/build-web.sh`).
//!
//! The same [`Classifier`], network, kernels and `shaders/*.wgsl` as the native `predict`, on
//! the browser's WebGPU. Readback is `map_async` awaited through a channel (a blocking poll does
//! nothing on the web), and every GPU step runs inside error scopes so that a failure (a shader
//! the browser rejects, an allocation refused) comes back as a rejected promise with the
//! browser's message instead of a console warning and garbage.
//!
//! ```js
//! import init, { WebClassifier, prepareInput } from "./pkg/adamatch_wgpu.js";
//! await init();
//! const clf = await WebClassifier.create();          // rejects when WebGPU is missing
//! const about = await clf.loadWeights(bytes);        // Uint8Array of a .safetensors file
//! const r = await clf.classifyRgba(rgba, w, h);      // ImageData.data, any size
//! r.probs; r.logits; r.predicted; r.input;           // Float32Array x2, number, 32x32x3 Uint8Array
//! r.className; clf.classes;                          // the predicted class's name; every name
//! ```

use std::cell::RefCell;

use anyhow::{anyhow, bail, Result};
use wasm_bindgen::prelude::*;

use crate::data::image::resize_and_pad_rgba;
use crate::gpu::{AdapterChoice, GpuContext};
use crate::inference::Classifier;
use crate::weights::{self, Weights};

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
    let sources: std::collections::BTreeMap<&str, String> = crate::shaders::Shader::ALL
        .iter()
        .map(|s| (s.file_name(), s.source()))
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

/// One image's result.
#[wasm_bindgen]
pub struct Classification {
    predicted: usize,
    class_name: String,
    probs: Vec<f32>,
    logits: Vec<f32>,
    input: Vec<u8>,
}

#[wasm_bindgen]
impl Classification {
    /// The most probable class (the first one on ties, as `predict`).
    #[wasm_bindgen(getter)]
    pub fn predicted(&self) -> usize {
        self.predicted
    }

    /// The name of the most probable class (the weights' `classes`; `"0"`..`"9"` for digits).
    #[wasm_bindgen(getter, js_name = className)]
    pub fn class_name(&self) -> String {
        self.class_name.clone()
    }

    /// Softmax probabilities, one per class.
    #[wasm_bindgen(getter)]
    pub fn probs(&self) -> Vec<f32> {
        self.probs.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn logits(&self) -> Vec<f32> {
        self.logits.clone()
    }

    /// The 32x32x3 RGB image the network saw (before input scaling).
    #[wasm_bindgen(getter)]
    pub fn input(&self) -> Vec<u8> {
        self.input.clone()
    }
}

struct Model {
    classifier: Classifier,
    classes: Vec<String>,
    about: String,
}

/// A WebGPU device and (after [`WebClassifier::load_weights`]) a network on it.
#[wasm_bindgen]
pub struct WebClassifier {
    ctx: GpuContext,
    /// None until weights load. A failed load keeps the previous model.
    model: RefCell<Option<Model>>,
}

#[wasm_bindgen]
impl WebClassifier {
    /// Opens a WebGPU device with the limits inference needs. Rejects with a message naming the
    /// problem when the browser has no WebGPU or its adapter is too small.
    pub async fn create() -> Result<WebClassifier, JsError> {
        if !has_webgpu() {
            return Err(JsError::new(
                "WebGPU is not available in this browser (navigator.gpu is missing). Use a recent \
                 Chrome, Edge or Safari, or Firefox with WebGPU enabled, over https or localhost.",
            ));
        }
        let choice = AdapterChoice {
            backend: Some("webgpu".into()),
            adapter: None,
            conv_path: None,
        };
        let ctx = GpuContext::new(&choice).await.map_err(js_error)?;
        Ok(WebClassifier {
            ctx,
            model: RefCell::new(None),
        })
    }

    /// What the adapter calls itself (browsers often leave its description empty).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        let i = &self.ctx.info;
        match (i.name.is_empty(), i.device_type) {
            (false, _) => i.name.clone(),
            (true, wgpu::DeviceType::Cpu) => "WebGPU software fallback adapter".into(),
            (true, _) => "WebGPU adapter".into(),
        }
    }

    /// Loads a `.safetensors` weights file written by `train`, builds the network on the GPU
    /// and runs it once (so that the first timed classification does not include pipeline
    /// compilation). Returns a one-line description of the model. On error the previously
    /// loaded model, if any, stays in use.
    #[wasm_bindgen(js_name = loadWeights)]
    pub async fn load_weights(&self, bytes: Vec<u8>) -> Result<String, JsError> {
        let w = weights::from_bytes(&bytes)
            .map_err(|e| anyhow!("not a valid adamatch-wgpu weights file: {e:#}"))
            .map_err(js_error)?;
        let about = describe(&w, bytes.len());
        let ctx = &self.ctx;
        let model = gpu_checked(ctx, "building the network", async {
            let mut classifier = Classifier::new(ctx, &w, w.input_scale, 1)?;
            let black = vec![0u8; classifier.image_len()];
            classifier.classify_async(ctx, &black).await?;
            Ok(Model {
                classifier,
                classes: w.classes.clone(),
                about: about.clone(),
            })
        })
        .await
        .map_err(js_error)?;
        *self.model.try_borrow_mut().map_err(|_| busy())? = Some(model);
        Ok(about)
    }

    /// Whether weights are loaded.
    #[wasm_bindgen(getter)]
    pub fn loaded(&self) -> bool {
        self.model.try_borrow().map(|m| m.is_some()).unwrap_or(true)
    }

    /// The class names of the loaded weights, in output order (empty before a load).
    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> Vec<String> {
        match self.model.try_borrow() {
            Ok(m) => m.as_ref().map(|m| m.classes.clone()).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The side of the loaded weights' input images in pixels (32 before a load).
    #[wasm_bindgen(getter, js_name = imageSize)]
    pub fn image_size(&self) -> usize {
        match self.model.try_borrow() {
            Ok(m) => m
                .as_ref()
                .map(|m| m.classifier.net.config.image_size)
                .unwrap_or(crate::data::IMAGE_SIZE),
            Err(_) => crate::data::IMAGE_SIZE,
        }
    }

    /// The description [`WebClassifier::load_weights`] returned, or an empty string.
    #[wasm_bindgen(getter)]
    pub fn about(&self) -> String {
        match self.model.try_borrow() {
            Ok(m) => m.as_ref().map(|m| m.about.clone()).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Classifies an RGBA image of any size (e.g. `ImageData.data`): resize-and-pad to the
    /// weights' image size (32x32 unless trained with `--image-size`), the input scaling recorded
    /// in the weights, the network on the GPU, softmax.
    #[wasm_bindgen(js_name = classifyRgba)]
    // The RefCell borrow is the lock: a second call while this one awaits the GPU gets
    // `try_borrow_mut`'s "busy" error, never a panic.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn classify_rgba(&self, rgba: Vec<u8>, width: u32, height: u32) -> Result<Classification, JsError> {
        check_rgba(&rgba, width, height).map_err(js_error)?;
        let mut slot = self.model.try_borrow_mut().map_err(|_| busy())?;
        let model = slot
            .as_mut()
            .ok_or_else(|| JsError::new("no weights loaded: call loadWeights first"))?;
        let input = resize_and_pad_rgba(&rgba, width, height, model.classifier.net.config.image_size);
        let ctx = &self.ctx;
        let mut preds = gpu_checked(ctx, "classifying", model.classifier.classify_async(ctx, &input))
            .await
            .map_err(js_error)?;
        let p = preds
            .pop()
            .ok_or_else(|| JsError::new("the network returned no result"))?;
        Ok(Classification {
            predicted: p.class,
            class_name: model.classes[p.class].clone(),
            probs: p.probs,
            logits: p.logits,
            input,
        })
    }
}

fn busy() -> JsError {
    JsError::new("the classifier is busy with another request; wait for it to finish")
}

fn describe(w: &Weights, bytes: usize) -> String {
    let c = &w.config;
    format!(
        "WRN-{}-{}, {}, {}x{} input, input scale {}, {} classes, {} parameters ({:.1} MB)",
        c.depth,
        c.width,
        c.activation.name(),
        c.image_size,
        c.image_size,
        w.input_scale.name(),
        w.classes.len(),
        w.params.len(),
        bytes as f64 / 1e6
    )
}

/// Whether `navigator.gpu` exists (in a window or a worker).
fn has_webgpu() -> bool {
    let get = |obj: &JsValue, key: &str| js_sys::Reflect::get(obj, &JsValue::from_str(key)).ok();
    get(&js_sys::global(), "navigator")
        .filter(|nav| nav.is_object())
        .and_then(|nav| get(&nav, "gpu"))
        .is_some_and(|gpu| gpu.is_object())
}
