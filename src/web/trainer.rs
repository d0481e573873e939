//! `WebTrainer`: the native `train` step on the browser's WebGPU.
//!
//! The same [`Trainer`] (host RNG, augmentation parameters, the whole step in one command
//! encoder), evaluation and weights export as `adamatch-wgpu train`, on the built-in pair
//! generated in wasm or on the user's own unlabeled photos as the target. Each step is submitted
//! and then awaited (`onSubmittedWorkDone`), so the page's main thread is never held longer than
//! recording one step, the queue never runs more than one step ahead, and a pause takes effect
//! after the current step. Metrics and evaluation are `map_async` readbacks, awaited.

use std::cell::{Cell, RefCell};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use wasm_bindgen::prelude::*;

use super::tuning::{tune_network, TuningReport};
use super::{adapter_name, autotune_option, gpu_checked, js_error, open_device};
use crate::data::spec::{load_sized, DatasetSpec, Split};
use crate::data::synth::{SynthStream, TEST_SIZE};
use crate::data::{Dataset, ImageSource, Source};
use crate::gpu::GpuContext;
use crate::train::config::TrainConfig;
use crate::train::eval::{evaluate_run, Evaluator, EVAL_SAMPLE_SEED};
use crate::train::overrides::ConfigOverrides;
use crate::train::trainer::{conv_work, StepMetrics, Trainer};

/// The target domain: the built-in synth-house, or the user's own unlabeled images.
enum Target {
    Builtin { train: Source, test: Dataset },
    Photos(Dataset),
}

impl Target {
    fn train(&self) -> &dyn ImageSource {
        match self {
            Target::Builtin { train, .. } => train,
            Target::Photos(d) => d,
        }
    }

    /// What evaluation scores the target with: synth-house's labeled test set, or the photos
    /// themselves (no labels: the predicted-class histogram and confidence).
    fn test(&self) -> &Dataset {
        match self {
            Target::Builtin { test, .. } => test,
            Target::Photos(d) => d,
        }
    }
}

struct Run {
    trainer: Trainer,
    source: Source,
    source_test: Dataset,
    target: Target,
    evaluator: Evaluator,
    classes: Vec<String>,
    tuning: TuningReport,
}

/// A training run on the browser's GPU.
#[wasm_bindgen]
pub struct WebTrainer {
    ctx: GpuContext,
    /// The RefCell borrow is the lock: a call while another awaits the GPU is refused.
    run: RefCell<Run>,
    config_json: String,
    total_steps: u64,
    /// The source's class names, in output order.
    classes: Vec<String>,
    /// Readable at any moment, also while a call holds `run`.
    steps_done: Cell<u64>,
    train_ms: Cell<f64>,
    images: Cell<f64>,
}

/// The run's configuration from the page's options object: `train`'s settings by their camelCase
/// names ([`ConfigOverrides`]: `bnCalibration` is `--bn-calibration`), over the preset ("tiny"
/// unless `preset` names another), checked as `train` checks them.
fn config_from_options(options: &JsValue) -> Result<TrainConfig> {
    let mut given = serde_json::Map::new();
    if options.is_object() {
        for entry in js_sys::Object::entries(&js_sys::Object::from(options.clone())).iter() {
            let pair = js_sys::Array::from(&entry);
            let key = pair.get(0).as_string().unwrap_or_default();
            if key == "autotune" {
                // An adapter setting, not the run's (`autotune_option`).
                continue;
            }
            if let Some(value) = json_value(&key, &pair.get(1))? {
                given.insert(key, value);
            }
        }
    } else if !options.is_undefined() && !options.is_null() {
        bail!("the options must be an object, e.g. {{ preset: \"tiny\", steps: 600 }}");
    }
    // Each option alone first, so that an error names the option it is about.
    for (key, value) in &given {
        let alone = serde_json::Map::from_iter([(key.clone(), value.clone())]);
        serde_json::from_value::<ConfigOverrides>(alone.into()).map_err(|e| anyhow!("option {key}: {e}"))?;
    }
    let overrides: ConfigOverrides = serde_json::from_value(given.into())?;
    overrides.config("tiny")
}

/// An option's value as JSON (whole numbers as integers, which count options need), or `None`
/// for undefined and null (the preset's value, as for an option not given).
fn json_value(key: &str, value: &JsValue) -> Result<Option<serde_json::Value>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    if let Some(x) = value.as_f64() {
        if !x.is_finite() {
            bail!("option {key}: expected a finite number, got {x}");
        }
        const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
        let whole = x.fract() == 0.0 && x.abs() <= MAX_SAFE_INTEGER;
        return Ok(Some(if whole { (x as i64).into() } else { x.into() }));
    }
    if let Some(b) = value.as_bool() {
        return Ok(Some(b.into()));
    }
    if let Some(s) = value.as_string() {
        return Ok(Some(s.into()));
    }
    bail!("option {key}: expected a number, a string or a boolean, got {value:?}")
}

/// A JavaScript property of `obj`, or None when absent or undefined.
fn property(obj: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// Decodes one entry of `setTargetImages`: an encoded PNG/JPEG file (`Uint8Array` or
/// `ArrayBuffer`, optionally as `{ name, bytes }`) or RGBA pixels (`{ data, width, height }`,
/// e.g. an `ImageData`), fitted into the network's side as `predict` fits a file.
fn target_image(entry: &JsValue, index: usize, side: usize) -> Result<Vec<u8>> {
    let name = property(entry, "name")
        .and_then(|n| n.as_string())
        .map(|n| format!("“{n}”"))
        .unwrap_or_else(|| format!("{}", index + 1));
    let encoded = if entry.is_instance_of::<js_sys::Uint8Array>() || entry.is_instance_of::<js_sys::ArrayBuffer>() {
        Some(entry.clone())
    } else {
        property(entry, "bytes")
    };
    if let Some(bytes) = encoded {
        let bytes = js_sys::Uint8Array::new(&bytes).to_vec();
        let img = crate::data::image::decode_upright_bytes(&bytes)
            .map_err(|e| anyhow!("target image {name}: not a readable image: {e}"))?;
        return Ok(crate::data::image::resize_and_pad(&img, side));
    }
    let (Some(data), Some(w), Some(h)) = (
        property(entry, "data"),
        property(entry, "width").and_then(|v| v.as_f64()),
        property(entry, "height").and_then(|v| v.as_f64()),
    ) else {
        bail!(
            "target image {name}: expected the bytes of a PNG/JPEG file (Uint8Array) or RGBA pixels \
             ({{ data, width, height }}, e.g. an ImageData)"
        );
    };
    let rgba = js_sys::Uint8Array::new(&data).to_vec();
    let (w, h) = (w as u32, h as u32);
    super::check_rgba(&rgba, w, h).with_context(|| format!("target image {name}"))?;
    Ok(crate::data::image::resize_and_pad_rgba(&rgba, w, h, side))
}

/// A value as a plain JavaScript object (through JSON: the fields `train` writes to its files).
fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue> {
    let text = serde_json::to_string(value)?;
    js_sys::JSON::parse(&text).map_err(|e| anyhow!("internal error: JSON.parse failed: {e:?}"))
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Lets the page's event loop run (a `setTimeout(0)` task) between long pieces of host work:
/// generating the built-in data, decoding photos.
async fn yield_to_page() {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let scheduled = set_timeout.is_some_and(|f| f.call2(&global, &resolve, &JsValue::from(0)).is_ok());
        if !scheduled {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

#[wasm_bindgen]
impl WebTrainer {
    /// Opens a WebGPU device and builds a run: `options` are `train`'s configuration flags in
    /// camelCase, every one of them (`preset` "tiny" by default, `steps`, `seed`, `algorithm`
    /// "adamatch" | "source-only" | "fixmatch", `batch`, `uratio`, `lr`, `depth`, `width`,
    /// `imageSize`, `evalLimit`, `bnCalibration`, `tau`, `invert`, ...: see
    /// [`ConfigOverrides`]); the built-in synth-digits as the labeled source and synth-house as
    /// the target until `setTargetImages`; and `autotune` (true | false) to tune the
    /// convolutions' tiles on any adapter or on none (by default on GPUs, not on software
    /// adapters). Rejects on a missing WebGPU, an unknown option or a value `train` would refuse,
    /// naming the option.
    pub async fn create(options: JsValue) -> Result<WebTrainer, JsError> {
        let cfg = config_from_options(&options).map_err(js_error)?;
        let autotune = autotune_option(&options).map_err(js_error)?;
        let ctx = open_device(autotune).await.map_err(js_error)?;
        let run = gpu_checked(&ctx, "building the training step", new_run(&ctx, cfg))
            .await
            .map_err(js_error)?;
        let config_json = serde_json::to_string(&run.trainer.cfg).map_err(|e| js_error(e.into()))?;
        Ok(WebTrainer {
            ctx,
            total_steps: run.trainer.cfg.steps,
            classes: run.classes.clone(),
            run: RefCell::new(run),
            config_json,
            steps_done: Cell::new(0),
            train_ms: Cell::new(0.0),
            images: Cell::new(0.0),
        })
    }

    /// Replaces the target domain with the user's own unlabeled images (any size, at least one;
    /// before the first step). Each entry is the bytes of a PNG or JPEG file (`Uint8Array`,
    /// `ArrayBuffer`, or `{ name, bytes }`) or RGBA pixels (`{ data, width, height }`). Rejects
    /// naming the first image that cannot be decoded; the target is then unchanged.
    #[wasm_bindgen(js_name = setTargetImages)]
    // The RefCell borrow is the lock (see `run`).
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn set_target_images(&self, images: js_sys::Array) -> Result<u32, JsError> {
        let mut run = self.run.try_borrow_mut().map_err(|_| busy())?;
        if run.trainer.step > 0 {
            return Err(JsError::new(
                "setTargetImages: the run has already trained; the target is fixed for a run (create a new trainer)",
            ));
        }
        if !run.trainer.cfg.algorithm.uses_target() {
            return Err(JsError::new(
                "setTargetImages: a source-only run trains on no target images (use algorithm \"adamatch\")",
            ));
        }
        if images.length() == 0 {
            return Err(JsError::new("setTargetImages: no images given"));
        }
        let side = run.trainer.cfg.network.image_size;
        let mut pixels = Vec::with_capacity(images.length() as usize * crate::data::image_bytes(side));
        for (i, entry) in images.iter().enumerate() {
            pixels.extend(target_image(&entry, i, side).map_err(js_error)?);
            yield_to_page().await;
        }
        let photos = Dataset::sized(pixels, side, None, Vec::new(), "your images").map_err(js_error)?;
        let n = photos.len() as u32;
        run.target = Target::Photos(photos);
        // An evaluation before this one calibrated batch norm on the built-in target.
        run.trainer.forget_calibration();
        Ok(n)
    }

    /// Runs `n` steps (never past `steps`), one submitted and awaited at a time, and returns the
    /// last step's metrics: `{ step, total_loss, source_loss, target_loss, mask_rate, c_tau, mu,
    /// lr, grad_norm, non_finite, ... }` as in `train`'s metrics.jsonl, with `images_per_s` of
    /// this call and `phase` ("source-only" in a source-only phase, else the algorithm; the
    /// step after that phase starts the adaptation from its model, as `train` does). Rejects
    /// when the loss or a gradient is NaN/Inf.
    // The RefCell borrow is the lock (see `run`).
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn step(&self, n: u32) -> Result<JsValue, JsError> {
        let mut guard = self.run.try_borrow_mut().map_err(|_| busy())?;
        let run = &mut *guard;
        let ctx = &self.ctx;
        let left = run.trainer.cfg.steps.saturating_sub(run.trainer.step);
        if left == 0 {
            return Err(JsError::new(&format!(
                "the run is finished ({} steps); create a new trainer to train again",
                run.trainer.cfg.steps
            )));
        }
        let n = (n.max(1) as u64).min(left);
        let start = now_ms();
        let mut images = 0.0;
        let metrics = gpu_checked(ctx, "training", async {
            for _ in 0..n {
                run.trainer.step_async(ctx, &run.source, run.target.train()).await?;
                ctx.work_done().await?;
                self.steps_done.set(run.trainer.step);
                images += run.trainer.phase().cfg.images_per_step() as f64;
            }
            run.trainer.metrics_async(ctx).await
        })
        .await
        .map_err(js_error)?;
        let ms = now_ms() - start;
        self.train_ms.set(self.train_ms.get() + ms);
        self.images.set(self.images.get() + images);
        if metrics.non_finite {
            return Err(JsError::new(&format!(
                "training diverged at step {}: the loss or a gradient is NaN/Inf (loss {}, grad norm {}); try a lower lr",
                metrics.step, metrics.loss.total_loss, metrics.grad_norm
            )));
        }
        #[derive(serde::Serialize)]
        struct Reported<'a> {
            #[serde(flatten)]
            metrics: &'a StepMetrics,
            phase: &'static str,
            images_per_s: f64,
        }
        let reported = Reported {
            metrics: &metrics,
            phase: run.trainer.phase().name(),
            images_per_s: images / (ms / 1e3).max(1e-9),
        };
        to_js(&reported).map_err(js_error)
    }

    /// Evaluates the weights `exportWeights` would give now (the EMA copy, batch-norm statistics
    /// recalibrated as `train` does) on the built-in test sets: `{ step, source, target }`, each
    /// as `train`'s eval lines (`accuracy`, `per_class`, `confusion`, `predicted`,
    /// `mean_confidence`, ...). With the user's photos as the target, `target` has no labels:
    /// the predicted-class histogram and confidence on those photos.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn evaluate(&self) -> Result<JsValue, JsError> {
        let mut guard = self.run.try_borrow_mut().map_err(|_| busy())?;
        let run = &mut *guard;
        let ctx = &self.ctx;
        let cfg = run.trainer.cfg.clone();
        let (s, t) = gpu_checked(ctx, "evaluating", async {
            let net = run
                .trainer
                .calibrated_eval_net_async(ctx, &run.source, run.target.train())
                .await?;
            evaluate_run(ctx, &mut run.evaluator, net, &cfg, &run.source_test, run.target.test()).await
        })
        .await
        .map_err(js_error)?;
        let value = serde_json::json!({ "step": run.trainer.step, "source": s, "target": t });
        to_js(&value).map_err(js_error)
    }

    /// The weights as a `.safetensors` file, byte for byte what `train` writes as
    /// `model.safetensors` at this step (`predict`, `eval` and the page's classifier load it).
    #[wasm_bindgen(js_name = exportWeights)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn export_weights(&self) -> Result<Vec<u8>, JsError> {
        let mut guard = self.run.try_borrow_mut().map_err(|_| busy())?;
        let run = &mut *guard;
        let ctx = &self.ctx;
        gpu_checked(ctx, "exporting the weights", async {
            run.trainer
                .export_weights_async(ctx, &run.source, run.target.train(), &run.classes)
                .await
        })
        .await
        .map_err(js_error)
    }

    /// Steps done so far.
    #[wasm_bindgen(getter, js_name = stepsDone)]
    pub fn steps_done(&self) -> f64 {
        self.steps_done.get() as f64
    }

    /// The run's length in steps.
    #[wasm_bindgen(getter)]
    pub fn steps(&self) -> f64 {
        self.total_steps as f64
    }

    /// Seconds spent in `step` calls so far (evaluation and export not included).
    #[wasm_bindgen(getter, js_name = elapsedSeconds)]
    pub fn elapsed_seconds(&self) -> f64 {
        self.train_ms.get() / 1e3
    }

    /// Training throughput so far: images drawn per step (source batch, plus the target batch
    /// when the algorithm uses it, as `train` counts) per second of `step` calls.
    #[wasm_bindgen(getter, js_name = imagesPerSecond)]
    pub fn images_per_second(&self) -> f64 {
        let s = self.train_ms.get() / 1e3;
        if s > 0.0 {
            self.images.get() / s
        } else {
            0.0
        }
    }

    /// The run's full configuration as JSON (the `config` of `train`'s config.json).
    #[wasm_bindgen(getter)]
    pub fn config(&self) -> String {
        self.config_json.clone()
    }

    /// The class names, in output order.
    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> Vec<String> {
        self.classes.clone()
    }

    /// What the adapter calls itself.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        adapter_name(&self.ctx)
    }

    /// What autotuning did before the run was built: `{ tiles, timed, cached, seconds, clock }`
    /// (`tiles` "autotuned per layer" or the tiles every layer runs).
    #[wasm_bindgen(getter)]
    pub fn tuning(&self) -> JsValue {
        match self.run.try_borrow() {
            Ok(run) => run.tuning.to_js(),
            Err(_) => JsValue::NULL,
        }
    }
}

fn busy() -> JsError {
    JsError::new("the trainer is busy with another call; wait for it to finish")
}

/// The test split of a built-in domain, as `load_sized` makes it (the same images in the same
/// order), generated in chunks with the page's event loop running in between: a whole split
/// holds the main thread for most of a second.
async fn synth_test_set(spec: &DatasetSpec, size: usize) -> Result<Source> {
    const CHUNK: usize = 1000;
    let DatasetSpec::Synth { domain, seed } = spec else {
        bail!("internal error: {spec} is not a built-in domain");
    };
    let stream = SynthStream::test(*domain, *seed, TEST_SIZE).with_size(size);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut name = String::new();
    for start in (0..TEST_SIZE).step_by(CHUNK) {
        let part = stream.materialize(start as u64, CHUNK);
        images.extend_from_slice(&part.images);
        labels.extend(part.labels.into_iter().flatten());
        name = part.name;
        yield_to_page().await;
    }
    let classes = ImageSource::classes(&stream);
    Ok(Source::Finite(Dataset::sized(
        images,
        size,
        Some(labels),
        classes,
        name,
    )?))
}

/// The run's data and training state: the built-in pair as `train` loads it with no dataset
/// named (the same streams, test sets and evaluation subsets), the network initialised from the
/// seed, the EMA copy set.
async fn new_run(ctx: &GpuContext, cfg: TrainConfig) -> Result<Run> {
    let pre = cfg.preprocess();
    let size = cfg.network.image_size;
    let limit = cfg.eval_limit.unwrap_or(usize::MAX);
    let no_dir = Path::new("");
    let load = |spec: &DatasetSpec, split: Split| load_sized(spec, split, pre, no_dir, size);
    let (source_spec, target_spec) = (DatasetSpec::default(), DatasetSpec::default_target());
    let source = load(&source_spec, Split::Train)?;
    let source_test = synth_test_set(&source_spec, size)
        .await?
        .sample(limit, EVAL_SAMPLE_SEED);
    let target = Target::Builtin {
        train: load(&target_spec, Split::Train)?,
        test: synth_test_set(&target_spec, size)
            .await?
            .sample(limit, EVAL_SAMPLE_SEED),
    };
    let classes = ImageSource::classes(&source);
    let mut cfg = cfg;
    cfg.network.num_classes = classes.len();
    // Before anything is built: the passes take their tiles when first built.
    let tuning = tune_network(ctx, &cfg.network, &conv_work(&cfg)).await;
    let trainer = Trainer::new(ctx, cfg)?;
    yield_to_page().await;
    let evaluator = Evaluator::new(ctx, trainer.eval_net(), trainer.cfg.eval_batch(), classes.clone())?;
    Ok(Run {
        trainer,
        source,
        source_test,
        target,
        evaluator,
        classes,
        tuning,
    })
}
