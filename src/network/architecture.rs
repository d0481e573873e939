//! The network's structure: its config, layers and the layout of its tensors, from the config
//! alone (no GPU).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::kernels::conv2d::Conv2dShape;

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
pub(super) struct Layout {
    pub(super) specs: Vec<TensorSpec>,
    pub(super) len: usize,
}

impl Layout {
    pub(super) fn add(&mut self, name: String, shape: Vec<usize>, kind: Option<ParamKind>) -> usize {
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
pub(super) struct BnLayer {
    pub(super) gamma: usize,
    pub(super) beta: usize,
    pub(super) running_mean: usize,
    pub(super) running_var: usize,
    pub(super) channels: usize,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ConvLayer {
    pub(super) weight: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    pub(super) in_c: usize,
    pub(super) out_c: usize,
}

impl ConvLayer {
    /// This layer's geometry over a batch of `batch` square inputs of side `in_hw`.
    pub(super) fn shape(&self, batch: usize, in_hw: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_h: in_hw,
            in_w: in_hw,
            in_c: self.in_c,
            out_c: self.out_c,
            kernel: self.kernel,
            stride: self.stride,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Block {
    pub(super) bn1: BnLayer,
    pub(super) conv1: ConvLayer,
    pub(super) bn2: BnLayer,
    pub(super) conv2: ConvLayer,
    /// 1x1 projection when the shape changes; identity otherwise.
    pub(super) shortcut: Option<ConvLayer>,
    /// The shortcut (projection or identity) reads the first BN-act output `u1` rather than the
    /// raw block input (see [`ShortcutInput`]).
    pub(super) shortcut_activated: bool,
    pub(super) in_hw: usize,
    pub(super) out_hw: usize,
}

/// The network's structure and tensor layouts, computed from the config alone (no GPU), so a
/// weights file can be checked before any adapter is touched.
#[derive(Debug)]
pub struct Architecture {
    pub(super) param_layout: Layout,
    pub(super) running_layout: Layout,
    pub(super) stem: ConvLayer,
    pub(super) blocks: Vec<Block>,
    pub(super) head_bn: BnLayer,
    pub(super) dense_w: usize,
    pub(super) dense_b: usize,
    pub(super) final_c: usize,
    pub(super) final_hw: usize,
    pub(super) image_size: usize,
    pub(super) num_classes: usize,
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

    /// 1.0 where weight decay applies (conv and dense kernels: [`ParamKind::decays`]), else 0
    /// (gaps too): the optimizer's mask, in the layout and length of the flat parameter buffer.
    pub fn decay_mask(&self) -> Vec<f32> {
        let mut mask = vec![0.0f32; self.params_len()];
        for spec in self.param_specs() {
            if spec.kind.is_some_and(|k| k.decays()) {
                mask[spec.offset..spec.offset + spec.len()].fill(1.0);
            }
        }
        mask
    }

    /// Every convolution over a batch of `batch` images: the stem, then each block's conv1, conv2
    /// and projection shortcut.
    pub fn conv_shapes(&self, batch: usize) -> Vec<Conv2dShape> {
        let mut convs = vec![self.stem.shape(batch, self.image_size)];
        for b in &self.blocks {
            convs.extend([b.conv1.shape(batch, b.in_hw), b.conv2.shape(batch, b.out_hw)]);
            convs.extend(b.shortcut.map(|sc| sc.shape(batch, b.in_hw)));
        }
        convs
    }

    /// FLOPs of one image's forward pass (convolutions and dense; multiply-add = 2).
    pub fn forward_flops_per_image(&self) -> f64 {
        let conv: f64 = self.conv_shapes(1).iter().map(Conv2dShape::flops).sum();
        conv + 2.0 * (self.final_c * self.num_classes) as f64
    }
}
