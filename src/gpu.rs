//! GPU context, buffers and recorded operations.
//!
//! Everything the engine runs is an [`Op`]: a compute pipeline, a bind group made once, and a
//! dispatch size. A network builds its ops once per batch size and records them into one command
//! encoder per step, so nothing is created on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};

use crate::profile::{
    autotune_from_env, conv_path_from_env, conv_tiles_from_env, AdapterProfile, BatchNormTuning, ConvPass, ConvPath,
    ConvTiles, CONV_PATH_ENV,
};
use crate::shaders::Shader;

/// Largest workgroup count wgpu allows in one dispatch dimension.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// Which adapter to use. Both fields are matched case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// `vulkan`, `metal`, `dx12`, `gl`, `webgpu` or `all` (None = Vulkan/Metal/DX12, then GL).
    pub backend: Option<String>,
    /// A substring of the adapter name (None = best adapter: discrete, then integrated, then CPU).
    pub adapter: Option<String>,
    /// Force every convolution onto this path (None: `ADAMATCH_CONV_PATH` when set, else the
    /// adapter's own, [`ConvPath::for_adapter`]). A path the adapter cannot run is an error.
    pub conv_path: Option<ConvPath>,
    /// Force the tiled path's tiles (None: `ADAMATCH_CONV_TILES` when set, else each layer's
    /// tuned tiles where autotuning runs, else [`ConvTiles::DEFAULT`]).
    pub conv_tiles: Option<ConvTiles>,
    /// Switch the tiled path's autotuning on or off (None: `ADAMATCH_AUTOTUNE` when set, else
    /// on for GPUs and off for CPU adapters).
    pub autotune: Option<bool>,
}

/// A convolution pass at one layer shape (batch, in_h, in_w, in_c, out_c, kernel, stride): what
/// the tiled path's tiles are tuned for.
pub type ConvTuneKey = (ConvPass, [usize; 7]);

/// Limits the engine needs beyond WebGPU's defaults, with the reason shown when one is missing.
struct NeededLimit {
    name: &'static str,
    need: u64,
    have: fn(&wgpu::Limits) -> u64,
}

const NEEDED_LIMITS: &[NeededLimit] = &[
    NeededLimit {
        name: "max_storage_buffers_per_shader_stage",
        need: 8,
        have: |l| l.max_storage_buffers_per_shader_stage as u64,
    },
    NeededLimit {
        name: "max_compute_invocations_per_workgroup",
        need: 256,
        have: |l| l.max_compute_invocations_per_workgroup as u64,
    },
    NeededLimit {
        name: "max_compute_workgroup_size_x",
        need: 256,
        have: |l| l.max_compute_workgroup_size_x as u64,
    },
    NeededLimit {
        name: "max_compute_workgroup_storage_size",
        need: 16_384,
        have: |l| l.max_compute_workgroup_storage_size as u64,
    },
    NeededLimit {
        name: "max_storage_buffer_binding_size",
        need: 128 << 20,
        have: |l| l.max_storage_buffer_binding_size,
    },
];

fn backends_from_name(name: Option<&str>) -> Result<wgpu::Backends> {
    Ok(match name.map(|s| s.to_ascii_lowercase()).as_deref() {
        // In a browser only WebGPU exists (this crate does not compile wgpu's WebGL backend).
        None | Some("") if cfg!(target_arch = "wasm32") => wgpu::Backends::BROWSER_WEBGPU,
        // GL only on request: it is a last resort for compute and its EGL probing is noisy.
        None | Some("") => wgpu::Backends::PRIMARY,
        Some("all") => wgpu::Backends::all(),
        Some("vulkan") | Some("vk") => wgpu::Backends::VULKAN,
        Some("metal") => wgpu::Backends::METAL,
        Some("dx12") | Some("d3d12") => wgpu::Backends::DX12,
        Some("gl") | Some("gles") | Some("opengl") => wgpu::Backends::GL,
        Some("webgpu") | Some("browser") => wgpu::Backends::BROWSER_WEBGPU,
        Some(other) => {
            bail!("unknown backend '{other}': expected one of vulkan, metal, dx12, gl, webgpu, all")
        }
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn device_type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HELP: &str = "no GPU adapter found. Install your GPU's driver (Vulkan, Metal or \
DX12), or for a CPU fallback on Debian/Ubuntu: `apt-get install -y mesa-vulkan-drivers` \
(lavapipe, slow but complete)";

/// All adapters wgpu can see for the given backend name (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn list_adapters(backend: Option<&str>) -> Result<Vec<wgpu::Adapter>> {
    let backends = backends_from_name(backend)?;
    let mut adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    if adapters.is_empty() && backend.is_none() {
        let gl = wgpu::Backends::GL;
        adapters = pollster::block_on(instance(gl).enumerate_adapters(gl));
    }
    Ok(adapters)
}

/// An instance for `backends` (environment variables such as WGPU_BACKEND still apply).
fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends.with_env();
    wgpu::Instance::new(desc)
}

/// The adapter limits worth printing in `info`.
pub fn describe_limits(l: &wgpu::Limits) -> Vec<(&'static str, u64)> {
    vec![
        ("max_buffer_size", l.max_buffer_size),
        ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size as u64,
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "min_storage_buffer_offset_alignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
    ]
}

/// The limits requested for the device, given the adapter's `have` (already checked against
/// [`NEEDED_LIMITS`], which are WebGPU's defaults).
fn required_limits(have: &wgpu::Limits) -> wgpu::Limits {
    let mut limits = wgpu::Limits::downlevel_defaults();
    limits.max_storage_buffers_per_shader_stage = 8;
    limits.max_compute_invocations_per_workgroup = 256;
    limits.max_compute_workgroup_size_x = 256;
    limits.max_compute_workgroup_size_y = have.max_compute_workgroup_size_y.min(256);
    limits.max_bind_groups = have.max_bind_groups.min(4);
    limits.min_storage_buffer_offset_alignment = have.min_storage_buffer_offset_alignment;
    limits.min_uniform_buffer_offset_alignment = have.min_uniform_buffer_offset_alignment;
    if cfg!(target_arch = "wasm32") {
        // The page's classification and training (the tiny preset's batches) fit WebGPU's
        // default buffer and workgroup-memory sizes; asking for no more keeps every WebGPU
        // device usable.
        limits.max_compute_workgroup_storage_size = 16_384;
        limits.max_storage_buffer_binding_size = 128 << 20;
        limits.max_buffer_size = have.max_buffer_size.min(256 << 20);
    } else {
        // Training at large batches wants the adapter's largest buffers.
        limits.max_compute_workgroup_storage_size = have.max_compute_workgroup_storage_size;
        limits.max_storage_buffer_binding_size = have.max_storage_buffer_binding_size;
        limits.max_buffer_size = have.max_buffer_size;
    }
    limits
}

/// The device, its queue, the kernels' adapter profile, and the pipeline cache. Cloning shares the
/// device, the caches and the memory count (see [`GpuContext::with_conv_path`]).
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// GPU timestamp queries are available (`crate::timing`: `bench`, the autotuner).
    pub timestamps: bool,
    /// What the kernels choose their variants by.
    pub profile: AdapterProfile,
    /// Compiled modules by [`Shader::module_name`], pipelines by module name and entry point.
    modules: Arc<Mutex<HashMap<&'static str, wgpu::ShaderModule>>>,
    pipelines: Arc<Mutex<HashMap<(&'static str, &'static str), wgpu::ComputePipeline>>>,
    /// Bytes of every storage and uniform buffer made through this context (never decreased:
    /// the engine allocates once and reuses, so this is its peak; `bench --step` reports it).
    allocated: Arc<AtomicU64>,
    /// See [`GpuContext::placeholder`].
    placeholder: Arc<OnceLock<Tensor>>,
    /// The tiled path's tiles per convolution pass and shape, chosen by autotuning
    /// (`crate::autotune`); shared by every context of the device.
    tuned_tiles: Arc<Mutex<HashMap<ConvTuneKey, ConvTiles>>>,
}

impl GpuContext {
    /// Picks an adapter as `choice` says and opens a device with the limits the engine needs.
    pub async fn new(choice: &AdapterChoice) -> Result<Self> {
        let backends = backends_from_name(choice.backend.as_deref())?;
        let adapter = Self::pick_adapter(&instance(backends), backends, choice).await?;
        let ctx = Self::from_adapter(adapter).await?;
        let ctx = match choice.conv_tiles {
            Some(tiles) => ctx.with_conv_tiles(tiles),
            None => ctx,
        };
        let ctx = match choice.autotune {
            Some(on) => ctx.with_autotune(on),
            None => ctx,
        };
        match choice.conv_path {
            Some(path) => ctx.with_conv_path(path),
            None => Ok(ctx),
        }
    }

    /// Blocking form of [`GpuContext::new`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(choice: &AdapterChoice) -> Result<Self> {
        pollster::block_on(Self::new(choice))
    }

    #[cfg(not(target_arch = "wasm32"))]
    async fn pick_adapter(
        instance: &wgpu::Instance,
        backends: wgpu::Backends,
        choice: &AdapterChoice,
    ) -> Result<wgpu::Adapter> {
        let mut adapters = instance.enumerate_adapters(backends).await;
        if adapters.is_empty() && choice.backend.is_none() {
            adapters = self::instance(wgpu::Backends::GL)
                .enumerate_adapters(wgpu::Backends::GL)
                .await;
        }
        if adapters.is_empty() {
            bail!("{NO_ADAPTER_HELP}");
        }
        if let Some(want) = &choice.adapter {
            let want_lc = want.to_ascii_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(&want_lc));
            if adapters.is_empty() {
                bail!(
                    "no adapter matches '{want}'; available: {} (see `adamatch-wgpu info`)",
                    names.join(", ")
                );
            }
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (device_type_rank(i.device_type), i.backend != wgpu::Backend::Vulkan)
        });
        Ok(adapters.swap_remove(0))
    }

    #[cfg(target_arch = "wasm32")]
    async fn pick_adapter(
        instance: &wgpu::Instance,
        _backends: wgpu::Backends,
        _choice: &AdapterChoice,
    ) -> Result<wgpu::Adapter> {
        instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|_| {
                anyhow!(
                    "WebGPU is not available: this browser offers no GPU adapter (it may be switched \
                     off, or the page is not served from localhost or https)"
                )
            })
    }

    /// Opens a device on `adapter`, checking every limit the engine needs first.
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let have = adapter.limits();
        for l in NEEDED_LIMITS {
            let v = (l.have)(&have);
            if v < l.need {
                bail!(
                    "adapter '{}' ({:?}) is too small: limit {} is {} but the engine needs {}",
                    info.name,
                    info.backend,
                    l.name,
                    v,
                    l.need
                );
            }
        }
        let limits = required_limits(&have);
        // Timestamps time `bench`'s kernels and the autotuner's candidates (in a browser too,
        // where it grants them).
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut features = wgpu::Features::empty();
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let subgroup_size = (adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size);
        if subgroup_size.is_some() {
            features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("adamatch-wgpu"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .with_context(|| format!("could not open a device on adapter '{}'", info.name))?;
        let mut profile = AdapterProfile::new(
            info.device_type == wgpu::DeviceType::Cpu,
            cfg!(target_arch = "wasm32"),
            subgroup_size,
        );
        if let Some(path) = conv_path_from_env()? {
            profile = profile
                .with_conv_path(path)
                .with_context(|| format!("{CONV_PATH_ENV}={}", path.name()))?;
        }
        if let Some(tiles) = conv_tiles_from_env()? {
            profile = profile.with_conv_tiles(tiles);
        }
        if let Some(on) = autotune_from_env()? {
            profile = profile.with_autotune(on);
        }
        Ok(Self {
            device,
            queue,
            info,
            limits,
            timestamps,
            profile,
            modules: Default::default(),
            pipelines: Default::default(),
            allocated: Default::default(),
            placeholder: Default::default(),
            tuned_tiles: Default::default(),
        })
    }

    /// This context (the same device, caches and memory count) with every convolution on
    /// `path`, or an error saying why the adapter cannot run it.
    pub fn with_conv_path(&self, path: ConvPath) -> Result<GpuContext> {
        Ok(GpuContext {
            profile: self.profile.with_conv_path(path)?,
            ..self.clone()
        })
    }

    /// This context with the tiled path's kernels on `tiles` (any adapter runs every candidate).
    pub fn with_conv_tiles(&self, tiles: ConvTiles) -> GpuContext {
        GpuContext {
            profile: self.profile.with_conv_tiles(tiles),
            ..self.clone()
        }
    }

    /// This context with autotuning of the tiled path's tiles on or off.
    pub fn with_autotune(&self, on: bool) -> GpuContext {
        GpuContext {
            profile: self.profile.with_autotune(on),
            ..self.clone()
        }
    }

    /// The tiles the tiled path runs `key` with: the forced ones, else the tuned ones (when
    /// this context tunes and `key` was tuned), else [`ConvTiles::DEFAULT`].
    pub fn conv_tiles_for(&self, key: &ConvTuneKey) -> ConvTiles {
        if let Some(t) = self.profile.conv_tiles {
            return t;
        }
        if self.profile.tunes_tiles() {
            if let Some(&t) = self.tuned_tiles.lock().unwrap().get(key) {
                return t;
            }
        }
        ConvTiles::DEFAULT
    }

    /// The tuned tiles of `key`, if tuning (or the cache) gave it some.
    pub fn tuned_tiles(&self, key: &ConvTuneKey) -> Option<ConvTiles> {
        self.tuned_tiles.lock().unwrap().get(key).copied()
    }

    /// Every pass and shape with tuned tiles on this device, in order.
    pub fn tuned_keys(&self) -> Vec<ConvTuneKey> {
        let mut keys: Vec<ConvTuneKey> = self.tuned_tiles.lock().unwrap().keys().copied().collect();
        keys.sort();
        keys
    }

    /// Forgets every tuned choice of this device (after a failed tuning: the default tiles run).
    pub fn forget_tuned_tiles(&self) {
        self.tuned_tiles.lock().unwrap().clear();
    }

    /// Records the tuned tiles of `key` for every context sharing this device.
    pub fn set_tuned_tiles(&self, key: ConvTuneKey, tiles: ConvTiles) {
        self.tuned_tiles.lock().unwrap().insert(key, tiles);
    }

    /// This context with batch norm's workgroup split forced to `tuning` (any adapter runs
    /// either; they differ in speed and summation order).
    pub fn with_batchnorm_tuning(&self, tuning: BatchNormTuning) -> GpuContext {
        GpuContext {
            profile: AdapterProfile {
                batchnorm: tuning,
                ..self.profile
            },
            ..self.clone()
        }
    }

    /// One line naming the adapter, for logs and run configs.
    pub fn adapter_summary(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// The pipeline for `entry` in `shader`, compiled once per process.
    pub fn pipeline(&self, shader: &'static Shader, entry: &'static str) -> wgpu::ComputePipeline {
        let mut pipelines = self.pipelines.lock().unwrap();
        if let Some(p) = pipelines.get(&(shader.module_name, entry)) {
            return p.clone();
        }
        let module = {
            let mut modules = self.modules.lock().unwrap();
            modules
                .entry(shader.module_name)
                .or_insert_with(|| {
                    self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.module_name()),
                        source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                    })
                })
                .clone()
        };
        let label = format!("{}::{}", shader.module_name(), entry);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        pipelines.insert((shader.module_name, entry), pipeline.clone());
        pipeline
    }

    /// One vec4 of zeros, made once per device: bound where an entry point declares a buffer
    /// that a flag tells it not to read (conv2d's residual without one).
    pub fn placeholder(&self) -> Tensor {
        self.placeholder
            .get_or_init(|| Tensor::zeros(self, "placeholder", &[4]))
            .clone()
    }

    /// Total bytes of the storage and uniform buffers made so far (readback staging excluded).
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// A zero-filled storage buffer of `bytes` bytes (at least 4).
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        let size = bytes.max(4).next_multiple_of(4);
        self.allocated.fetch_add(size, Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `bytes` (padded to 16 bytes).
    pub fn uniform_buffer(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let mut data = bytes.to_vec();
        data.resize(bytes.len().max(16).next_multiple_of(16), 0);
        self.allocated.fetch_add(data.len() as u64, Ordering::Relaxed);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: data.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, &data);
        buf
    }

    /// Records `ops` into one command encoder (one compute pass) and submits it.
    pub fn submit(&self, ops: &[&Op]) {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in ops {
                op.record(&mut pass);
            }
        }
        self.queue.submit([encoder.finish()]);
    }

    /// Blocks until all submitted work is done (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("GPU wait failed: {e}"))?;
        Ok(())
    }

    /// Runs `ops` and waits for them (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&self, ops: &[&Op]) -> Result<()> {
        self.submit(ops);
        self.wait()
    }

    /// Resolves when the device has finished everything submitted so far (natively this
    /// blocks; in a browser it awaits the queue's promise).
    pub async fn work_done(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        return self.wait();
        #[cfg(target_arch = "wasm32")]
        {
            let (tx, rx) = futures_channel::oneshot::channel();
            self.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            rx.await.map_err(|_| anyhow!("the GPU device was lost"))
        }
    }

    /// Runs `ops` and awaits them ([`GpuContext::run`] on any target).
    pub async fn run_async(&self, ops: &[&Op]) -> Result<()> {
        self.submit(ops);
        self.work_done().await
    }

    /// Copies `bytes` bytes at `offset` of `buffer` back to the host.
    pub async fn read_bytes_async(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.wait()?;
        rx.await
            .map_err(|_| anyhow!("GPU readback was cancelled"))?
            .map_err(|e| anyhow!("GPU readback failed: {e}"))?;
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| anyhow!("GPU readback failed: {e:?}"))?
            .to_vec();
        staging.unmap();
        Ok(data[..bytes as usize].to_vec())
    }

    /// Blocking readback (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        pollster::block_on(self.read_bytes_async(buffer, offset, bytes))
    }
}

/// A dense f32 (or u32) array in a GPU buffer, possibly a sub-range of a larger buffer.
/// Activations are NHWC; convolution weights are HWIO (`[KH, KW, Cin, Cout]`).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    /// Byte offset into `buffer` (a multiple of the storage offset alignment).
    pub offset: u64,
    pub shape: Vec<usize>,
}

impl Tensor {
    /// A new zero-filled tensor in its own buffer.
    pub fn zeros(ctx: &GpuContext, label: &str, shape: &[usize]) -> Tensor {
        let len: usize = shape.iter().product();
        Tensor {
            buffer: ctx.storage_buffer(label, len as u64 * 4),
            offset: 0,
            shape: shape.to_vec(),
        }
    }

    /// A new tensor holding `data`.
    pub fn from_f32(ctx: &GpuContext, label: &str, shape: &[usize], data: &[f32]) -> Tensor {
        let t = Tensor::zeros(ctx, label, shape);
        assert_eq!(
            t.len(),
            data.len(),
            "tensor '{label}': shape {shape:?} does not match data"
        );
        t.write_f32(ctx, data);
        t
    }

    /// A new tensor of u32 values (labels, indices).
    pub fn from_u32(ctx: &GpuContext, label: &str, shape: &[usize], data: &[u32]) -> Tensor {
        let t = Tensor::zeros(ctx, label, shape);
        assert_eq!(
            t.len(),
            data.len(),
            "tensor '{label}': shape {shape:?} does not match data"
        );
        if !data.is_empty() {
            ctx.queue.write_buffer(&t.buffer, t.offset, bytemuck::cast_slice(data));
        }
        t
    }

    /// A view of `len` elements of `buffer` at element offset `elem_offset`.
    pub fn view(buffer: &wgpu::Buffer, elem_offset: usize, shape: &[usize]) -> Tensor {
        Tensor {
            buffer: buffer.clone(),
            offset: elem_offset as u64 * 4,
            shape: shape.to_vec(),
        }
    }

    /// The `shape` elements of a kernel's scratch starting `elem_offset` elements into `scratch`
    /// (a caller's buffer shared by many ops that run one after another, its contents
    /// overwritten), or a new zeroed tensor of that shape when `scratch` is None. `elem_offset`
    /// must keep the storage offset alignment (a multiple of 64 elements).
    pub fn scratch(
        ctx: &GpuContext,
        scratch: Option<&Tensor>,
        label: &str,
        elem_offset: usize,
        shape: &[usize],
    ) -> Tensor {
        let need: usize = shape.iter().product();
        match scratch {
            Some(t) => {
                assert!(
                    t.len() >= elem_offset + need,
                    "{label}: scratch of {} elements, {} needed",
                    t.len(),
                    elem_offset + need
                );
                assert!(
                    elem_offset.is_multiple_of(64),
                    "{label}: unaligned scratch offset {elem_offset}"
                );
                Tensor {
                    buffer: t.buffer.clone(),
                    offset: t.offset + elem_offset as u64 * 4,
                    shape: shape.to_vec(),
                }
            }
            None => Tensor::zeros(ctx, label, shape),
        }
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }

    /// The bind-group resource for this tensor's range.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.bytes().max(4)),
        })
    }

    pub fn write_f32(&self, ctx: &GpuContext, data: &[f32]) {
        assert_eq!(
            self.len(),
            data.len(),
            "write_f32: shape {:?} does not match data",
            self.shape
        );
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let bytes = ctx.read_bytes(&self.buffer, self.offset, self.bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn read_f32_async(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        let bytes = ctx.read_bytes_async(&self.buffer, self.offset, self.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// One recorded dispatch: pipeline, bind group (made once) and workgroup counts.
///
/// Binding convention for every shader: `@binding(0)` is the op's uniform parameter block
/// (when the entry point has one), then storage buffers, which the Rust side names as the
/// shader does (`var<storage, read> x` is bound as "x"). Only the bindings an entry point uses
/// may be passed.
pub struct Op {
    /// `file::entry_point` of the kernel.
    pub label: String,
    /// What this dispatch computes (layer and shape), for benchmark tables.
    pub detail: String,
    pub workgroups: [u32; 3],
    /// Floating-point operations of one run (multiply-add = 2), for GFLOP/s reports.
    pub flops: f64,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    /// Kept alive with the bind group.
    _uniform: Option<wgpu::Buffer>,
}

impl Op {
    /// [`Op::new`] with binding numbers.
    fn numbered(
        ctx: &GpuContext,
        shader: &'static Shader,
        entry: &'static str,
        uniform: Option<&[u8]>,
        storage: &[(u32, &Tensor)],
        workgroups: [u32; 3],
    ) -> Op {
        let pipeline = ctx.pipeline(shader, entry);
        let label = format!("{}::{}", shader.module_name(), entry);
        let uniform_buf = uniform.map(|u| ctx.uniform_buffer(&label, u));
        let mut entries = Vec::with_capacity(storage.len() + 1);
        if let Some(u) = &uniform_buf {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        for (binding, t) in storage {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: t.binding(),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Op {
            label,
            detail: String::new(),
            workgroups,
            flops: 0.0,
            pipeline,
            bind_group,
            _uniform: uniform_buf,
        }
    }

    /// Builds an op for `shader::entry`: `uniform` goes to binding 0, and `storage` lists
    /// (name, tensor) pairs. Each binding the entry point uses takes the tensor of its name, or of
    /// its name less a trailing `4` (a `var<storage> x4: array<vec4<f32>>` is `x` read as vec4s),
    /// so one list serves every entry point of a family, whichever views each reads. Panics on a
    /// name the shader does not declare and on a binding the entry point uses that no pair
    /// supplies (bugs in the calling wrapper).
    pub fn new(
        ctx: &GpuContext,
        shader: &'static Shader,
        entry: &'static str,
        uniform: Option<&[u8]>,
        storage: &[(&str, &Tensor)],
        workgroups: [u32; 3],
    ) -> Op {
        let interface = shader.interface();
        let file = shader.file_name();
        for (name, _) in storage {
            assert!(
                interface.binding(name).is_some() || interface.binding(&format!("{name}4")).is_some(),
                "shaders/{file} declares no binding named '{name}' (nor '{name}4')"
            );
        }
        let used = interface
            .used_by(entry)
            .unwrap_or_else(|| panic!("shaders/{file} has no entry point '{entry}'"));
        let numbered: Vec<(u32, &Tensor)> = used
            .filter(|&(_, binding)| !(binding == 0 && uniform.is_some()))
            .map(|(name, binding)| {
                let (_, tensor) = storage
                    .iter()
                    .find(|(n, _)| *n == name || name.strip_suffix('4') == Some(*n))
                    .unwrap_or_else(|| {
                        panic!("shaders/{file}::{entry} reads '{name}', which its wrapper does not pass")
                    });
                (binding, *tensor)
            })
            .collect();
        Op::numbered(ctx, shader, entry, uniform, &numbered, workgroups)
    }

    /// Sets the FLOP count used in benchmark reports.
    pub fn with_flops(mut self, flops: f64) -> Op {
        self.flops = flops;
        self
    }

    /// Sets the description (layer, shape) used in benchmark reports.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Op {
        self.detail = detail.into();
        self
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        let [x, y, z] = self.workgroups;
        if x == 0 || y == 0 || z == 0 {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Workgroup counts covering `threads` invocations with `wg`-sized workgroups, split into 2D when
/// one dimension would exceed 65,535. Shaders recover the linear index as
/// `(wid.y * num_workgroups.x + wid.x) * WG + lid.x` and must bounds-check it.
pub fn grid_1d(threads: usize, wg: u32) -> [u32; 3] {
    let groups = threads.div_ceil(wg as usize) as u64;
    if groups == 0 {
        return [0, 1, 1];
    }
    let x = groups.min(MAX_WORKGROUPS_PER_DIM as u64);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}
