//! Autotuning in the browser: the native tuner (`crate::autotune`) on the page's WebGPU device,
//! timed by WebGPU timestamps where the browser grants `timestamp-query`, else by
//! `performance.now()` around awaited submissions; the choices kept in `localStorage` (none
//! in a worker, which then tunes once per device).

use anyhow::{anyhow, Result};
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

use crate::autotune::{self, ChoiceStore, Choices, TuneSummary, CACHE_FILE};
use crate::gpu::GpuContext;
use crate::kernels::conv2d::{ConvPass, ConvTiles};
use crate::network::{Architecture, WideResNetConfig};

/// What tuning did, as the page's `tuning` getters report it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TuningReport {
    /// The tiled path's tiles: "autotuned per layer", or the tiles every layer runs.
    pub tiles: String,
    pub timed: usize,
    pub cached: usize,
    pub seconds: f64,
    pub clock: String,
}

impl TuningReport {
    fn new(ctx: &GpuContext, s: &TuneSummary) -> TuningReport {
        TuningReport {
            tiles: ctx.profile.tiles_in_use().unwrap_or_default(),
            timed: s.timed,
            cached: s.cached,
            seconds: s.seconds,
            clock: s.clock.into(),
        }
    }

    /// As a plain JavaScript object.
    pub fn to_js(&self) -> JsValue {
        let text = serde_json::to_string(self).unwrap_or_default();
        js_sys::JSON::parse(&text).unwrap_or(JsValue::NULL)
    }
}

/// Tunes the convolutions of `network` over `work`'s (images, passes) where the context tunes.
/// A failure, the browser's own errors included (a candidate it refuses), is logged to the
/// console, and every layer keeps the default tiles: tuning is never worth failing a page for.
pub(super) async fn tune_network(
    ctx: &GpuContext,
    network: &WideResNetConfig,
    work: &[(usize, &'static [ConvPass])],
) -> TuningReport {
    let tuning = async {
        let arch = Architecture::new(network)?;
        let requests: Vec<_> = work
            .iter()
            .flat_map(|&(rows, passes)| autotune::requests(&arch.conv_shapes(rows), passes))
            .collect();
        autotune::tune(ctx, &requests, &LocalStorage, seconds_now).await
    };
    match super::gpu_checked(ctx, "autotuning the convolution tiles", tuning).await {
        Ok(s) => TuningReport::new(ctx, &s),
        Err(e) => {
            ctx.forget_tuned_tiles();
            super::console_error(&format!(
                "adamatch-wgpu: autotuning the convolution tiles failed ({e:#}); the default ones stay in use"
            ));
            TuningReport {
                tiles: format!("{} (autotuning failed)", ConvTiles::DEFAULT),
                ..TuningReport::default()
            }
        }
    }
}

/// `performance.now()` in seconds (`Date.now()` where there is no `performance`).
fn seconds_now() -> f64 {
    let now = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
        .ok()
        .filter(|p| p.is_object())
        .and_then(|p| {
            let f = js_sys::Reflect::get(&p, &JsValue::from_str("now")).ok()?;
            f.dyn_into::<js_sys::Function>().ok()?.call0(&p).ok()?.as_f64()
        });
    now.unwrap_or_else(js_sys::Date::now) / 1e3
}

/// The page's `localStorage` under the cache file's name.
struct LocalStorage;

impl LocalStorage {
    fn storage() -> Option<JsValue> {
        // Reading the property throws on opaque origins: no storage then.
        js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("localStorage"))
            .ok()
            .filter(|s| s.is_object())
    }

    fn method(storage: &JsValue, name: &str) -> Option<js_sys::Function> {
        js_sys::Reflect::get(storage, &JsValue::from_str(name))
            .ok()?
            .dyn_into()
            .ok()
    }
}

impl ChoiceStore for LocalStorage {
    fn load(&self) -> Choices {
        let text = Self::storage().and_then(|s| {
            Self::method(&s, "getItem")?
                .call1(&s, &JsValue::from_str(CACHE_FILE))
                .ok()?
                .as_string()
        });
        text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn save(&self, choices: &Choices) -> Result<()> {
        let Some(storage) = Self::storage() else {
            return Ok(());
        };
        let set = Self::method(&storage, "setItem").ok_or_else(|| anyhow!("localStorage has no setItem"))?;
        let text = serde_json::to_string(choices)?;
        set.call2(&storage, &JsValue::from_str(CACHE_FILE), &JsValue::from_str(&text))
            .map_err(|e| anyhow!("saving the tuned tiles in localStorage: {e:?}"))?;
        Ok(())
    }
}
