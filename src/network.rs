//! The pre-activation WideResNet (REFERENCE.md, "Network") built from the WGSL kernels.
//!
//! Parameters live in one flat GPU buffer (and their gradients in a second one with the same
//! layout), each tensor at a 256-byte-aligned offset, so optimizers and EMA can treat all weights
//! as one array. Batch-norm running statistics live in a third buffer. A [`Workspace`] holds the
//! activations for one batch size and the recorded ops of each pass, built once and reused.

use std::collections::HashMap;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::batchnorm::{
    batchnorm_apply, batchnorm_backward, batchnorm_stats, BatchNormBackward, BatchNormShape,
};
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weights, conv2d_backward_weights_scratch_len, conv2d_forward, Conv2dShape,
};
use crate::kernels::dense::{dense_backward, dense_forward};
use crate::kernels::pool::{global_avg_pool_backward, global_avg_pool_forward};

/// Offsets in the flat parameter buffer are multiples of this many f32 (256 bytes, the largest
/// storage-offset alignment WebGPU allows), so any tensor can be bound on its own.
pub const PARAM_ALIGN: usize = 64;

/// The nonlinearity after every batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// Leaky ReLU with the given negative slope (the paper uses 0.1).
    Leaky(f32),
}

impl Activation {
    pub fn slope(self) -> f32 {
        match self {
            Activation::Relu => 0.0,
            Activation::Leaky(s) => s,
        }
    }

    pub fn name(self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::Leaky(s) => format!("leaky{s}"),
        }
    }

    /// Parses `relu`, `leaky` (slope 0.1) or `leaky0.2`.
    pub fn parse(s: &str) -> Result<Activation> {
        match s {
            "relu" => Ok(Activation::Relu),
            "leaky" | "leaky_relu" => Ok(Activation::Leaky(0.1)),
            _ => match s.strip_prefix("leaky").and_then(|v| v.parse::<f32>().ok()) {
                Some(v) => Ok(Activation::Leaky(v)),
                None => bail!("unknown activation '{s}': expected relu, leaky or leakyS (slope S)"),
            },
        }
    }
}

/// What each block's shortcut (1x1 projection or identity) reads. The two rules have the same
/// tensors but compute different functions; a weights file names its rule in its config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShortcutInput {
    /// The Keras example (keras.io `examples/vision/adamatch.py`, `wide_basic`): every 1x1
    /// projection reads the block's first BN-activation output; identity shortcuts add the raw
    /// block input. The default, so weight files from before this option load unchanged.
    #[default]
    Activated,
    /// The official AdaMatch code (google-research/adamatch, `shared/zoo/wideresnet.py`,
    /// `activate_before_residual` on the first block of stage 1 only): that block's shortcut reads
    /// its first BN-activation output (through the projection when the channels change, as an
    /// identity when they do not, i.e. at width 1); every other block's shortcut, projection or
    /// identity, reads the raw block input.
    Official,
}

/// WideResNet hyperparameters. `depth = 6n + 4` gives n blocks per stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WideResNetConfig {
    pub depth: usize,
    pub width: usize,
    pub activation: Activation,
    /// Running statistics: running = momentum * running + (1 - momentum) * batch.
    pub bn_momentum: f32,
    pub bn_eps: f32,
    pub num_classes: usize,
    /// Square input images of this size with 3 channels.
    pub image_size: usize,
    /// What the shortcuts read; absent in older files, which are [`ShortcutInput::Activated`].
    #[serde(default)]
    pub shortcut: ShortcutInput,
}

impl WideResNetConfig {
    /// Every field in one line, for messages that compare two configs.
    pub fn describe(&self) -> String {
        format!(
            "WRN-{}-{} ({}, BN momentum {}, eps {}, {} classes, {}x{} input, {:?} shortcuts)",
            self.depth,
            self.width,
            self.activation.name(),
            self.bn_momentum,
            self.bn_eps,
            self.num_classes,
            self.image_size,
            self.image_size,
            self.shortcut
        )
    }

    /// WRN-28-2 as the paper trains it (leaky ReLU 0.1, BN momentum 0.999, the official code's
    /// shortcuts).
    pub fn paper() -> Self {
        WideResNetConfig {
            depth: 28,
            width: 2,
            activation: Activation::Leaky(0.1),
            bn_momentum: 0.999,
            bn_eps: 1e-3,
            num_classes: 10,
            image_size: 32,
            shortcut: ShortcutInput::Official,
        }
    }

    /// WRN-28-2 as the Keras example builds it (ReLU, BN momentum 0.99, shortcuts from the
    /// activated input).
    pub fn keras() -> Self {
        WideResNetConfig {
            activation: Activation::Relu,
            bn_momentum: 0.99,
            shortcut: ShortcutInput::Activated,
            ..Self::paper()
        }
    }

    pub fn blocks_per_stage(&self) -> Result<usize> {
        if self.depth < 10 || !(self.depth - 4).is_multiple_of(6) {
            bail!(
                "WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {}",
                self.depth
            );
        }
        if self.width == 0 || self.num_classes == 0 || self.image_size == 0 {
            bail!("WideResNet width, classes and image size must be positive");
        }
        // Sane maxima, checked before anything is sized by them (a weights file's metadata is
        // untrusted input: depth 100 and width 100 asked for 61 GB).
        for (what, value, max) in [
            ("depth", self.depth, MAX_DEPTH),
            ("width", self.width, MAX_WIDTH),
            ("classes", self.num_classes, crate::data::MAX_CLASSES),
            ("image size", self.image_size, MAX_IMAGE_SIZE),
        ] {
            if value > max {
                bail!("WideResNet {what} {value} is beyond the supported maximum {max}");
            }
        }
        Ok((self.depth - 4) / 6)
    }
}

/// The deepest WideResNet accepted (the paper's largest is 28).
pub const MAX_DEPTH: usize = 160;
/// The widest WideResNet accepted (the paper's widest is 10).
pub const MAX_WIDTH: usize = 32;
/// The largest input side accepted.
pub const MAX_IMAGE_SIZE: usize = 512;

/// What a parameter tensor is; decides weight decay and documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    ConvKernel,
    DenseKernel,
    DenseBias,
    BnGamma,
    BnBeta,
}

impl ParamKind {
    /// Weight decay applies to conv and dense kernels only (not BN, not bias).
    pub fn decays(self) -> bool {
        matches!(self, ParamKind::ConvKernel | ParamKind::DenseKernel)
    }
}

/// One named tensor in a flat buffer.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// Element offset in the flat buffer.
    pub offset: usize,
    pub kind: Option<ParamKind>,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Default)]
struct Layout {
    specs: Vec<TensorSpec>,
    len: usize,
}

impl Layout {
    fn add(&mut self, name: String, shape: Vec<usize>, kind: Option<ParamKind>) -> usize {
        let offset = self.len.next_multiple_of(PARAM_ALIGN);
        let len: usize = shape.iter().product();
        self.len = offset + len;
        self.specs.push(TensorSpec {
            name,
            shape,
            offset,
            kind,
        });
        self.specs.len() - 1
    }
}

#[derive(Clone, Copy, Debug)]
struct BnLayer {
    gamma: usize,
    beta: usize,
    running_mean: usize,
    running_var: usize,
    channels: usize,
}

#[derive(Clone, Copy, Debug)]
struct ConvLayer {
    weight: usize,
    kernel: usize,
    stride: usize,
    in_c: usize,
    out_c: usize,
}

#[derive(Clone, Debug)]
struct Block {
    bn1: BnLayer,
    conv1: ConvLayer,
    bn2: BnLayer,
    conv2: ConvLayer,
    /// 1x1 projection when the shape changes; identity otherwise.
    shortcut: Option<ConvLayer>,
    /// The shortcut (projection or identity) reads the first BN-act output `u1` rather than the
    /// raw block input (see [`ShortcutInput`]).
    shortcut_activated: bool,
    in_hw: usize,
    out_hw: usize,
}

/// The network's structure and tensor layouts, computed from the config alone (no GPU), so a
/// weights file can be checked before any adapter is touched.
#[derive(Debug)]
pub struct Architecture {
    param_layout: Layout,
    running_layout: Layout,
    stem: ConvLayer,
    blocks: Vec<Block>,
    head_bn: BnLayer,
    dense_w: usize,
    dense_b: usize,
    final_c: usize,
    final_hw: usize,
    image_size: usize,
    num_classes: usize,
}

impl Architecture {
    pub fn new(config: &WideResNetConfig) -> Result<Self> {
        let n = config.blocks_per_stage()?;
        let mut p = Layout::default();
        let mut r = Layout::default();
        let bn = |p: &mut Layout, r: &mut Layout, name: &str, c: usize| BnLayer {
            gamma: p.add(format!("{name}.gamma"), vec![c], Some(ParamKind::BnGamma)),
            beta: p.add(format!("{name}.beta"), vec![c], Some(ParamKind::BnBeta)),
            running_mean: r.add(format!("{name}.running_mean"), vec![c], None),
            running_var: r.add(format!("{name}.running_var"), vec![c], None),
            channels: c,
        };
        let conv = |p: &mut Layout, name: &str, k: usize, stride: usize, in_c: usize, out_c: usize| ConvLayer {
            weight: p.add(name.to_string(), vec![k, k, in_c, out_c], Some(ParamKind::ConvKernel)),
            kernel: k,
            stride,
            in_c,
            out_c,
        };

        let stem = conv(&mut p, "stem.conv", 3, 1, 3, 16);
        let widths = [16, 16 * config.width, 32 * config.width, 64 * config.width];
        let mut blocks = Vec::new();
        let mut hw = config.image_size;
        for stage in 1..=3 {
            for b in 0..n {
                let in_c = if b == 0 { widths[stage - 1] } else { widths[stage] };
                let out_c = widths[stage];
                let stride = if b == 0 && stage > 1 { 2 } else { 1 };
                let name = format!("stage{stage}.block{b}");
                let out_hw = hw.div_ceil(stride);
                let bn1 = bn(&mut p, &mut r, &format!("{name}.bn1"), in_c);
                let conv1 = conv(&mut p, &format!("{name}.conv1"), 3, stride, in_c, out_c);
                let bn2 = bn(&mut p, &mut r, &format!("{name}.bn2"), out_c);
                let conv2 = conv(&mut p, &format!("{name}.conv2"), 3, 1, out_c, out_c);
                let shortcut = (in_c != out_c || stride != 1)
                    .then(|| conv(&mut p, &format!("{name}.shortcut"), 1, stride, in_c, out_c));
                let shortcut_activated = match config.shortcut {
                    ShortcutInput::Activated => shortcut.is_some(),
                    ShortcutInput::Official => stage == 1 && b == 0,
                };
                blocks.push(Block {
                    bn1,
                    conv1,
                    bn2,
                    conv2,
                    shortcut,
                    shortcut_activated,
                    in_hw: hw,
                    out_hw,
                });
                hw = out_hw;
            }
        }
        let final_c = widths[3];
        let head_bn = bn(&mut p, &mut r, "head.bn", final_c);
        let dense_w = p.add(
            "head.dense.kernel".into(),
            vec![final_c, config.num_classes],
            Some(ParamKind::DenseKernel),
        );
        let dense_b = p.add(
            "head.dense.bias".into(),
            vec![config.num_classes],
            Some(ParamKind::DenseBias),
        );
        Ok(Architecture {
            param_layout: p,
            running_layout: r,
            stem,
            blocks,
            head_bn,
            dense_w,
            dense_b,
            final_c,
            final_hw: hw,
            image_size: config.image_size,
            num_classes: config.num_classes,
        })
    }

    /// Trainable tensors in a fixed order with their offsets in the flat parameter buffer.
    pub fn param_specs(&self) -> &[TensorSpec] {
        &self.param_layout.specs
    }

    /// BN running statistics with their offsets in the flat running-statistics buffer.
    pub fn running_specs(&self) -> &[TensorSpec] {
        &self.running_layout.specs
    }

    /// Length in f32 of the flat parameter buffer (including alignment gaps).
    pub fn params_len(&self) -> usize {
        self.param_layout.len
    }

    pub fn running_len(&self) -> usize {
        self.running_layout.len
    }

    /// Number of trainable scalars (no gaps).
    pub fn trainable_count(&self) -> usize {
        self.param_layout.specs.iter().map(|s| s.len()).sum()
    }

    /// Trainable scalars plus BN running statistics: the number Keras' `count_params` reports.
    pub fn keras_param_count(&self) -> usize {
        self.trainable_count() + self.running_layout.specs.iter().map(|s| s.len()).sum::<usize>()
    }

    /// FLOPs of one image's forward pass (convolutions and dense; multiply-add = 2).
    pub fn forward_flops_per_image(&self) -> f64 {
        let conv =
            |c: &ConvLayer, out_hw: usize| 2.0 * (out_hw * out_hw * c.kernel * c.kernel * c.in_c * c.out_c) as f64;
        let mut f = conv(&self.stem, self.image_size);
        for b in &self.blocks {
            f += conv(&b.conv1, b.out_hw) + conv(&b.conv2, b.out_hw);
            if let Some(s) = &b.shortcut {
                f += conv(s, b.out_hw);
            }
        }
        f + 2.0 * (self.final_c * self.num_classes) as f64
    }
}

/// The network: structure plus parameters, gradients and running statistics on the GPU.
pub struct WideResNet {
    pub config: WideResNetConfig,
    pub arch: Architecture,
    /// Trainable parameters, one flat f32 buffer (see [`Architecture::param_specs`]).
    pub params: wgpu::Buffer,
    /// Gradients, same layout as `params`.
    pub grads: wgpu::Buffer,
    /// Batch-norm running means and variances.
    pub running: wgpu::Buffer,
}

impl std::ops::Deref for WideResNet {
    type Target = Architecture;
    fn deref(&self) -> &Architecture {
        &self.arch
    }
}

impl WideResNet {
    /// Builds the structure and He-normal-initialized parameters from `seed`.
    pub fn new(ctx: &GpuContext, config: WideResNetConfig, seed: u64) -> Result<Self> {
        let arch = Architecture::new(&config)?;
        let params = ctx.storage_buffer("params", arch.params_len() as u64 * 4);
        let grads = ctx.storage_buffer("grads", arch.params_len() as u64 * 4);
        let running = ctx.storage_buffer("bn running stats", arch.running_len() as u64 * 4);
        let net = WideResNet {
            config,
            arch,
            params,
            grads,
            running,
        };
        ctx.queue
            .write_buffer(&net.params, 0, bytemuck::cast_slice(&net.initial_params(seed)));
        ctx.queue
            .write_buffer(&net.running, 0, bytemuck::cast_slice(&net.initial_running()));
        Ok(net)
    }

    /// He-normal conv kernels (truncated at 2 sigma, as Keras' `he_normal`), Glorot-uniform dense
    /// kernel (Keras' Dense default), zero bias, BN gamma 1 and beta 0.
    pub fn initial_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut flat = vec![0.0f32; self.param_layout.len];
        for spec in &self.param_layout.specs {
            let dst = &mut flat[spec.offset..spec.offset + spec.len()];
            match spec.kind.unwrap() {
                ParamKind::ConvKernel => {
                    let fan_in = (spec.shape[0] * spec.shape[1] * spec.shape[2]) as f64;
                    // Keras divides by the std of a unit normal truncated at 2 sigma.
                    let std = (2.0 / fan_in).sqrt() / 0.879_625_661_034_239_8;
                    for v in dst.iter_mut() {
                        *v = (truncated_normal(&mut rng) * std) as f32;
                    }
                }
                ParamKind::DenseKernel => {
                    let limit = (6.0 / (spec.shape[0] + spec.shape[1]) as f64).sqrt();
                    for v in dst.iter_mut() {
                        *v = rng.random_range(-limit..limit) as f32;
                    }
                }
                ParamKind::BnGamma => dst.fill(1.0),
                ParamKind::DenseBias | ParamKind::BnBeta => dst.fill(0.0),
            }
        }
        flat
    }

    /// Running means 0, running variances 1.
    pub fn initial_running(&self) -> Vec<f32> {
        let mut flat = vec![0.0f32; self.running_layout.len];
        for spec in &self.running_layout.specs {
            if spec.name.ends_with("running_var") {
                flat[spec.offset..spec.offset + spec.len()].fill(1.0);
            }
        }
        flat
    }

    fn param(&self, idx: usize) -> Tensor {
        let s = &self.param_layout.specs[idx];
        Tensor::view(&self.params, s.offset, &s.shape)
    }

    fn grad(&self, idx: usize) -> Tensor {
        let s = &self.param_layout.specs[idx];
        Tensor::view(&self.grads, s.offset, &s.shape)
    }

    fn running_tensor(&self, idx: usize) -> Tensor {
        let s = &self.running_layout.specs[idx];
        Tensor::view(&self.running, s.offset, &s.shape)
    }

    /// Reads all parameters (flat layout, gaps included).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_params(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.params, 0, &[self.param_layout.len]).read_f32(ctx)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_grads(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.grads, 0, &[self.param_layout.len]).read_f32(ctx)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_running(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        Tensor::view(&self.running, 0, &[self.running_layout.len]).read_f32(ctx)
    }

    pub fn write_params(&self, ctx: &GpuContext, flat: &[f32]) {
        Tensor::view(&self.params, 0, &[self.param_layout.len]).write_f32(ctx, flat);
    }

    pub fn write_running(&self, ctx: &GpuContext, flat: &[f32]) {
        Tensor::view(&self.running, 0, &[self.running_layout.len]).write_f32(ctx, flat);
    }
}

/// A standard normal sample truncated to [-2, 2] by rejection.
fn truncated_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let v: f64 = StandardNormal.sample(rng);
        if v.abs() <= 2.0 {
            return v;
        }
    }
}

/// Which pass to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Batch norm with batch statistics; `update_running` folds them into the running stats.
    ForwardTrain { update_running: bool },
    /// Batch norm with running statistics.
    ForwardInference,
    /// Gradients of the loss whose logit gradient is in [`Workspace::d_logits`], for a
    /// preceding forward pass of the matching mode. `accumulate` adds to `grads` instead of
    /// overwriting them (the second backward of an AdaMatch step).
    Backward { batch_stats: bool, accumulate: bool },
}

/// Activations for one batch size, the gradient scratch buffers, and the ops of each pass.
pub struct Workspace {
    pub batch: usize,
    /// Input images, NHWC f32 (already scaled).
    pub input: Tensor,
    /// Output logits [batch, classes].
    pub logits: Tensor,
    /// Gradient of the loss w.r.t. the logits, written by the caller's loss before a backward.
    pub d_logits: Tensor,
    /// Gradient w.r.t. the input, when the workspace was made with `input_grad`.
    pub d_input: Option<Tensor>,
    /// acts[0] = stem output; acts[b + 1] = block b output.
    acts: Vec<Tensor>,
    u1: Vec<Tensor>,
    h1: Vec<Tensor>,
    u2: Vec<Tensor>,
    sc: Vec<Option<Tensor>>,
    u_head: Tensor,
    pooled: Tensor,
    d_pooled: Tensor,
    /// Batch statistics (mean, var) of each BN layer in training mode, keyed by gamma index.
    stats: HashMap<usize, (Tensor, Tensor)>,
    /// Gradient scratch per activation shape (h, w, c): [dx, dx', du, dh].
    grad_pool: HashMap<(usize, usize, usize), [Tensor; 4]>,
    /// The split-K partial sums of every layer's weight gradient, one after another in the
    /// backward pass: one buffer of the largest layer's need, made with the first backward pass.
    dw_scratch: Option<Tensor>,
    passes: HashMap<Pass, Vec<Op>>,
}

impl Workspace {
    pub fn new(ctx: &GpuContext, net: &WideResNet, batch: usize, input_grad: bool) -> Workspace {
        let s = net.config.image_size;
        let input = Tensor::zeros(ctx, "input", &[batch, s, s, 3]);
        Self::with_input(ctx, net, input, input_grad)
    }

    /// A workspace reading its images from `input` ([batch, size, size, 3]), e.g. a row range of
    /// another workspace's input: the AdaMatch source pass reads the joint pass's first rows.
    pub fn with_input(ctx: &GpuContext, net: &WideResNet, input: Tensor, input_grad: bool) -> Workspace {
        let s = net.config.image_size;
        let batch = input.shape[0];
        assert_eq!(
            input.shape,
            vec![batch, s, s, 3],
            "workspace input must be [batch, {s}, {s}, 3]"
        );
        let t = |name: &str, hw: usize, c: usize| Tensor::zeros(ctx, name, &[batch, hw, hw, c]);
        let acts_shape = |i: usize| -> (usize, usize) {
            if i == 0 {
                (s, net.stem.out_c)
            } else {
                let b = &net.blocks[i - 1];
                (b.out_hw, b.conv2.out_c)
            }
        };
        let acts: Vec<Tensor> = (0..=net.blocks.len())
            .map(|i| {
                let (hw, c) = acts_shape(i);
                t(&format!("act{i}"), hw, c)
            })
            .collect();
        let u1 = net.blocks.iter().map(|b| t("u1", b.in_hw, b.conv1.in_c)).collect();
        let h1 = net.blocks.iter().map(|b| t("h1", b.out_hw, b.conv1.out_c)).collect();
        let u2 = net.blocks.iter().map(|b| t("u2", b.out_hw, b.conv2.in_c)).collect();
        let sc = net
            .blocks
            .iter()
            .map(|b| b.shortcut.map(|c| t("shortcut", b.out_hw, c.out_c)))
            .collect();
        let mut stats = HashMap::new();
        let mut bns = vec![net.head_bn];
        for b in &net.blocks {
            bns.push(b.bn1);
            bns.push(b.bn2);
        }
        for bn in bns {
            stats.insert(
                bn.gamma,
                (
                    Tensor::zeros(ctx, "bn mean", &[bn.channels]),
                    Tensor::zeros(ctx, "bn var", &[bn.channels]),
                ),
            );
        }
        let mut grad_pool = HashMap::new();
        for i in 0..=net.blocks.len() {
            let (hw, c) = acts_shape(i);
            grad_pool.entry((hw, hw, c)).or_insert_with(|| {
                [
                    t("grad dx", hw, c),
                    t("grad dx'", hw, c),
                    t("grad du", hw, c),
                    t("grad dh", hw, c),
                ]
            });
        }
        for b in &net.blocks {
            let (hw, c) = (b.in_hw, b.conv1.in_c);
            grad_pool.entry((hw, hw, c)).or_insert_with(|| {
                [
                    t("grad dx", hw, c),
                    t("grad dx'", hw, c),
                    t("grad du", hw, c),
                    t("grad dh", hw, c),
                ]
            });
        }
        let classes = net.config.num_classes;
        Workspace {
            batch,
            input,
            logits: Tensor::zeros(ctx, "logits", &[batch, classes]),
            d_logits: Tensor::zeros(ctx, "d_logits", &[batch, classes]),
            d_input: input_grad.then(|| t("d_input", s, 3)),
            acts,
            u1,
            h1,
            u2,
            sc,
            u_head: t("u_head", net.final_hw, net.final_c),
            pooled: Tensor::zeros(ctx, "pooled", &[batch, net.final_c]),
            d_pooled: Tensor::zeros(ctx, "d_pooled", &[batch, net.final_c]),
            stats,
            grad_pool,
            dw_scratch: None,
            passes: HashMap::new(),
        }
    }

    /// Every convolution of `net` with its input side: the stem, then each block's conv1, conv2
    /// and projection shortcut.
    fn convolutions(net: &WideResNet) -> Vec<(ConvLayer, usize)> {
        let mut convs = vec![(net.stem, net.config.image_size)];
        for b in &net.blocks {
            convs.extend([(b.conv1, b.in_hw), (b.conv2, b.out_hw)]);
            convs.extend(b.shortcut.map(|sc| (sc, b.in_hw)));
        }
        convs
    }

    /// The ops of `pass`, built on first use and reused afterwards.
    pub fn ops(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass) -> &[Op] {
        if !self.passes.contains_key(&pass) {
            if matches!(pass, Pass::Backward { .. }) && self.dw_scratch.is_none() {
                let len = Self::convolutions(net)
                    .iter()
                    .map(|(c, hw)| conv2d_backward_weights_scratch_len(ctx, &self.conv_shape(c, *hw)))
                    .max()
                    .unwrap_or(1);
                self.dw_scratch = Some(Tensor::zeros(ctx, "conv2d dw partials", &[len]));
            }
            let ops = match pass {
                Pass::ForwardTrain { update_running } => self.build_forward(ctx, net, Some(update_running)),
                Pass::ForwardInference => self.build_forward(ctx, net, None),
                Pass::Backward {
                    batch_stats,
                    accumulate,
                } => self.build_backward(ctx, net, batch_stats, accumulate),
            };
            self.passes.insert(pass, ops);
        }
        &self.passes[&pass]
    }

    /// The ops of `pass` if [`Workspace::ops`] has built them (a shared borrow, so the ops of
    /// several passes can be held at once).
    pub fn built_ops(&self, pass: Pass) -> Option<&[Op]> {
        self.passes.get(&pass).map(|v| v.as_slice())
    }

    /// Records `pass` into an open compute pass.
    pub fn record(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass, cpass: &mut wgpu::ComputePass<'_>) {
        for op in self.ops(ctx, net, pass) {
            op.record(cpass);
        }
    }

    /// Runs `pass` now and waits (native only; tests, predict and eval).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass) -> Result<()> {
        let ops: Vec<&Op> = self.ops(ctx, net, pass).iter().collect();
        ctx.run(&ops)
    }

    fn bn_shape(&self, hw: usize, c: usize) -> BatchNormShape {
        BatchNormShape {
            rows: self.batch * hw * hw,
            channels: c,
        }
    }

    /// BN (+ activation) forward of `x` into `y`. `update_running`: None = inference mode.
    #[allow(clippy::too_many_arguments)]
    fn bn_forward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        bn: &BnLayer,
        hw: usize,
        x: &Tensor,
        y: &Tensor,
        update_running: Option<bool>,
        ops: &mut Vec<Op>,
    ) {
        let shape = self.bn_shape(hw, bn.channels);
        let (rm, rv) = (net.running_tensor(bn.running_mean), net.running_tensor(bn.running_var));
        let (mean, var) = match update_running {
            Some(update) => {
                let (m, v) = &self.stats[&bn.gamma];
                ops.extend(batchnorm_stats(
                    ctx,
                    &shape,
                    x,
                    m,
                    v,
                    &rm,
                    &rv,
                    net.config.bn_momentum,
                    update,
                ));
                (m.clone(), v.clone())
            }
            None => (rm, rv),
        };
        let (g, b) = (net.param(bn.gamma), net.param(bn.beta));
        let cfg = &net.config;
        ops.push(batchnorm_apply(
            ctx,
            &shape,
            x,
            &mean,
            &var,
            &g,
            &b,
            y,
            cfg.bn_eps,
            cfg.activation.slope(),
        ));
    }

    fn conv_shape(&self, c: &ConvLayer, in_hw: usize) -> Conv2dShape {
        Conv2dShape {
            batch: self.batch,
            in_h: in_hw,
            in_w: in_hw,
            in_c: c.in_c,
            out_c: c.out_c,
            kernel: c.kernel,
            stride: c.stride,
        }
    }

    fn build_forward(&self, ctx: &GpuContext, net: &WideResNet, update_running: Option<bool>) -> Vec<Op> {
        let mut ops = self.build_forward_untagged(ctx, net, update_running);
        tag_details(&mut ops, self.batch);
        ops
    }

    fn build_backward(&self, ctx: &GpuContext, net: &WideResNet, batch_stats: bool, accumulate: bool) -> Vec<Op> {
        let mut ops = self.build_backward_untagged(ctx, net, batch_stats, accumulate);
        tag_details(&mut ops, self.batch);
        ops
    }

    fn build_forward_untagged(&self, ctx: &GpuContext, net: &WideResNet, update_running: Option<bool>) -> Vec<Op> {
        let mut ops = Vec::new();
        let s = net.config.image_size;
        let stem = self.conv_shape(&net.stem, s);
        ops.extend(tagged(
            [conv2d_forward(
                ctx,
                &stem,
                &self.input,
                &net.param(net.stem.weight),
                &self.acts[0],
                None,
            )],
            &stem,
        ));
        for (i, b) in net.blocks.iter().enumerate() {
            let x = &self.acts[i];
            self.bn_forward(ctx, net, &b.bn1, b.in_hw, x, &self.u1[i], update_running, &mut ops);
            // What the shortcut (projection or identity) reads.
            let sc_in = if b.shortcut_activated { &self.u1[i] } else { x };
            if let (Some(sc), Some(sc_out)) = (&b.shortcut, &self.sc[i]) {
                let shape = self.conv_shape(sc, b.in_hw);
                ops.extend(tagged(
                    [conv2d_forward(ctx, &shape, sc_in, &net.param(sc.weight), sc_out, None)],
                    &shape,
                ));
            }
            let shape1 = self.conv_shape(&b.conv1, b.in_hw);
            ops.extend(tagged(
                [conv2d_forward(
                    ctx,
                    &shape1,
                    &self.u1[i],
                    &net.param(b.conv1.weight),
                    &self.h1[i],
                    None,
                )],
                &shape1,
            ));
            self.bn_forward(
                ctx,
                net,
                &b.bn2,
                b.out_hw,
                &self.h1[i],
                &self.u2[i],
                update_running,
                &mut ops,
            );
            let shape2 = self.conv_shape(&b.conv2, b.out_hw);
            // The residual add is fused into conv2's epilogue.
            let residual = self.sc[i].as_ref().unwrap_or(sc_in);
            ops.extend(tagged(
                [conv2d_forward(
                    ctx,
                    &shape2,
                    &self.u2[i],
                    &net.param(b.conv2.weight),
                    &self.acts[i + 1],
                    Some(residual),
                )],
                &shape2,
            ));
        }
        let last = self.acts.last().unwrap();
        self.bn_forward(
            ctx,
            net,
            &net.head_bn,
            net.final_hw,
            last,
            &self.u_head,
            update_running,
            &mut ops,
        );
        ops.push(global_avg_pool_forward(
            ctx,
            self.batch,
            net.final_hw * net.final_hw,
            net.final_c,
            &self.u_head,
            &self.pooled,
        ));
        ops.push(dense_forward(
            ctx,
            self.batch,
            net.final_c,
            net.config.num_classes,
            &self.pooled,
            &net.param(net.dense_w),
            &net.param(net.dense_b),
            &self.logits,
        ));
        ops
    }

    /// BN backward of `x` (BN input) with `dy` (gradient at the activation output) into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        bn: &BnLayer,
        hw: usize,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        addend: Option<&Tensor>,
        batch_stats: bool,
        accumulate: bool,
        ops: &mut Vec<Op>,
    ) {
        let shape = self.bn_shape(hw, bn.channels);
        let (mean, var) = if batch_stats {
            self.stats[&bn.gamma].clone()
        } else {
            (net.running_tensor(bn.running_mean), net.running_tensor(bn.running_var))
        };
        let (gamma, beta) = (net.param(bn.gamma), net.param(bn.beta));
        let (dgamma, dbeta) = (net.grad(bn.gamma), net.grad(bn.beta));
        ops.extend(batchnorm_backward(
            ctx,
            &shape,
            &BatchNormBackward {
                x,
                dy,
                mean: &mean,
                var: &var,
                gamma: &gamma,
                beta: &beta,
                dx,
                dgamma: &dgamma,
                dbeta: &dbeta,
                addend,
                eps: net.config.bn_eps,
                slope: net.config.activation.slope(),
                batch_stats,
                accumulate_params: accumulate,
            },
        ));
    }

    fn pool(&self, hw: usize, c: usize) -> &[Tensor; 4] {
        &self.grad_pool[&(hw, hw, c)]
    }

    fn build_backward_untagged(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        batch_stats: bool,
        accumulate: bool,
    ) -> Vec<Op> {
        let mut ops = Vec::new();
        let dw_scratch = self.dw_scratch.as_ref();
        let (hw, c) = (net.final_hw, net.final_c);
        ops.extend(dense_backward(
            ctx,
            self.batch,
            c,
            net.config.num_classes,
            &self.pooled,
            &net.param(net.dense_w),
            &self.d_logits,
            &self.d_pooled,
            &net.grad(net.dense_w),
            &net.grad(net.dense_b),
            accumulate,
        ));
        let du_head = &self.pool(hw, c)[2];
        ops.push(global_avg_pool_backward(
            ctx,
            self.batch,
            hw * hw,
            c,
            &self.d_pooled,
            du_head,
            false,
        ));
        let mut d_out = self.pool(hw, c)[0].clone();
        let last = self.acts.last().unwrap();
        self.bn_backward(
            ctx,
            net,
            &net.head_bn,
            hw,
            last,
            du_head,
            &d_out,
            None,
            batch_stats,
            accumulate,
            &mut ops,
        );

        for (i, b) in net.blocks.iter().enumerate().rev() {
            let out_pool = self.pool(b.out_hw, b.conv2.out_c);
            let in_pool = self.pool(b.in_hw, b.conv1.in_c);
            let (du2, dh1) = (&out_pool[2], &out_pool[3]);
            let shape2 = self.conv_shape(&b.conv2, b.out_hw);
            ops.extend(tagged(
                conv2d_backward_weights(
                    ctx,
                    &shape2,
                    &self.u2[i],
                    &d_out,
                    &net.grad(b.conv2.weight),
                    accumulate,
                    dw_scratch,
                ),
                &shape2,
            ));
            ops.extend(tagged(
                [conv2d_backward_data(
                    ctx,
                    &shape2,
                    &d_out,
                    &net.param(b.conv2.weight),
                    du2,
                    false,
                )],
                &shape2,
            ));
            self.bn_backward(
                ctx,
                net,
                &b.bn2,
                b.out_hw,
                &self.h1[i],
                du2,
                dh1,
                None,
                batch_stats,
                accumulate,
                &mut ops,
            );

            let shape1 = self.conv_shape(&b.conv1, b.in_hw);
            // An identity shortcut from u1 (official rule, stage 1 block 0 at width 1) sends d_out
            // to u1: conv1's data gradient is added onto d_out in place (no longer needed as
            // itself), which is then u1's whole gradient. Otherwise u1's gradient has its own buffer.
            let identity_from_u1 = b.shortcut.is_none() && b.shortcut_activated;
            let du1 = if identity_from_u1 { &d_out } else { &in_pool[2] };
            ops.extend(tagged(
                conv2d_backward_weights(
                    ctx,
                    &shape1,
                    &self.u1[i],
                    dh1,
                    &net.grad(b.conv1.weight),
                    accumulate,
                    dw_scratch,
                ),
                &shape1,
            ));
            ops.extend(tagged(
                [conv2d_backward_data(
                    ctx,
                    &shape1,
                    dh1,
                    &net.param(b.conv1.weight),
                    du1,
                    identity_from_u1,
                )],
                &shape1,
            ));
            let sc_in = if b.shortcut_activated {
                &self.u1[i]
            } else {
                &self.acts[i]
            };
            let projection = b.shortcut.map(|sc| (sc, self.conv_shape(&sc, b.in_hw)));
            // The projection's data gradient, added into the gradient of what it read.
            let projection_data_grad = |sc: &ConvLayer, shape: &Conv2dShape, into: &Tensor| {
                tagged(
                    [conv2d_backward_data(
                        ctx,
                        shape,
                        &d_out,
                        &net.param(sc.weight),
                        into,
                        true,
                    )],
                    shape,
                )
            };
            if let Some((sc, shape)) = &projection {
                ops.extend(tagged(
                    conv2d_backward_weights(ctx, shape, sc_in, &d_out, &net.grad(sc.weight), accumulate, dw_scratch),
                    shape,
                ));
                if b.shortcut_activated {
                    ops.extend(projection_data_grad(sc, shape, du1));
                }
            }
            // The block input's gradient goes to whichever dx buffer of its shape d_out is not.
            let d_in = if in_pool[0].buffer == d_out.buffer {
                in_pool[1].clone()
            } else {
                in_pool[0].clone()
            };
            // An identity shortcut from the raw input adds d_out to its gradient.
            let addend = (b.shortcut.is_none() && !b.shortcut_activated).then_some(&d_out);
            self.bn_backward(
                ctx,
                net,
                &b.bn1,
                b.in_hw,
                &self.acts[i],
                du1,
                &d_in,
                addend,
                batch_stats,
                accumulate,
                &mut ops,
            );
            // A projection from the raw input adds its data gradient after batch norm 1's
            // backward has written the block input's gradient.
            if let Some((sc, shape)) = projection.as_ref().filter(|_| !b.shortcut_activated) {
                ops.extend(projection_data_grad(sc, shape, &d_in));
            }
            d_out = d_in;
        }

        let stem = self.conv_shape(&net.stem, net.config.image_size);
        ops.extend(tagged(
            conv2d_backward_weights(
                ctx,
                &stem,
                &self.input,
                &d_out,
                &net.grad(net.stem.weight),
                accumulate,
                dw_scratch,
            ),
            &stem,
        ));
        if let Some(d_input) = &self.d_input {
            ops.extend(tagged(
                [conv2d_backward_data(
                    ctx,
                    &stem,
                    &d_out,
                    &net.param(net.stem.weight),
                    d_input,
                    false,
                )],
                &stem,
            ));
        }
        ops
    }
}

/// Gives ops without a description one from their dispatch size, so benchmark rows of the same
/// kernel at different shapes can be told apart.
fn tag_details(ops: &mut [Op], batch: usize) {
    for op in ops.iter_mut() {
        if op.detail.is_empty() {
            op.detail = format!("batch {batch}, grid {:?}", op.workgroups);
        }
    }
}

/// "3x3/2 64x32x32x32->64": kernel, stride, input NHWC and output channels.
pub fn conv_detail(s: &Conv2dShape) -> String {
    format!(
        "{k}x{k}/{} {}x{}x{}x{}->{}",
        s.stride,
        s.batch,
        s.in_h,
        s.in_w,
        s.in_c,
        s.out_c,
        k = s.kernel
    )
}

fn tagged(ops: impl IntoIterator<Item = Op>, s: &Conv2dShape) -> Vec<Op> {
    ops.into_iter().map(|op| op.with_detail(conv_detail(s))).collect()
}
