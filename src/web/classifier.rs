//! `WebClassifier`: the native `predict` on the browser's WebGPU.

use std::cell::RefCell;

use anyhow::anyhow;
use wasm_bindgen::prelude::*;

use super::tuning::{tune_network, TuningReport};
use super::{adapter_name, autotune_option, check_rgba, gpu_checked, js_error, open_device};
use crate::data::image::resize_and_pad_rgba;
use crate::gpu::GpuContext;
use crate::inference::Classifier;
use crate::kernels::conv2d::ConvPass;
use crate::weights::{self, Weights};

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
    tuning: TuningReport,
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
    /// problem when the browser has no WebGPU or its adapter is too small. `options` (optional):
    /// `{ autotune: true | false }` to tune the convolutions' tiles on any adapter or on none
    /// (by default on GPUs, not on software adapters).
    pub async fn create(options: JsValue) -> Result<WebClassifier, JsError> {
        let autotune = autotune_option(&options).map_err(js_error)?;
        let ctx = open_device(autotune).await.map_err(js_error)?;
        Ok(WebClassifier {
            ctx,
            model: RefCell::new(None),
        })
    }

    /// What the adapter calls itself (browsers often leave its description empty).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        adapter_name(&self.ctx)
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
            let tuning = tune_network(ctx, &w.config, &[(1, &[ConvPass::Forward])]).await;
            let black = vec![0u8; classifier.image_len()];
            classifier.classify_async(ctx, &black).await?;
            Ok(Model {
                classifier,
                classes: w.classes.clone(),
                about: about.clone(),
                tuning,
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

    /// What autotuning did for the loaded model: `{ tiles, timed, cached, seconds, clock }`
    /// (`tiles` "autotuned per layer" or the tiles every layer runs; null before a load).
    #[wasm_bindgen(getter)]
    pub fn tuning(&self) -> JsValue {
        match self.model.try_borrow() {
            Ok(m) => m.as_ref().map(|m| m.tuning.to_js()).unwrap_or(JsValue::NULL),
            Err(_) => JsValue::NULL,
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

pub(super) fn describe(w: &Weights, bytes: usize) -> String {
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
