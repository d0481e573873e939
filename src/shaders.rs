//! The WGSL sources, embedded at compile time. One file per operation family in `shaders/`,
//! each holding that family's forward and backward entry points.

/// A shader file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// 3x3 / 1x1 convolutions as implicit GEMM: forward, backward-data, backward-weights.
    Conv2d,
    /// conv2d's direct path with operands shared through subgroup broadcasts: `conv2d.wgsl`
    /// followed by `conv2d_subgroup.wgsl`, one module (needs the subgroup feature).
    Conv2dSubgroup,
    /// Batch norm fused with the following (leaky) ReLU: statistics, apply, backward.
    BatchNorm,
    /// Standalone (leaky) ReLU forward and backward.
    Activation,
    /// Global average pooling forward and backward.
    Pool,
    /// Fully connected layer forward and backward.
    Dense,
    /// Softmax cross-entropy with hard or soft targets and per-row weights.
    SoftmaxCe,
    /// SGD / Adam updates, EMA of the weights, gradient norm and NaN check.
    Optimizer,
    /// AdaMatch loss: logit interpolation, distribution alignment, pseudo-labels, gradients.
    AdaMatch,
    /// FixMatch loss (the baseline): fixed-threshold hard pseudo-labels, gradients.
    FixMatch,
    /// Weak/strong data augmentation of u8 images into the scaled f32 input, and plain scaling.
    Augment,
}

impl Shader {
    pub const ALL: &'static [Shader] = &[
        Shader::Conv2d,
        Shader::Conv2dSubgroup,
        Shader::BatchNorm,
        Shader::Activation,
        Shader::Pool,
        Shader::Dense,
        Shader::SoftmaxCe,
        Shader::Optimizer,
        Shader::AdaMatch,
        Shader::FixMatch,
        Shader::Augment,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Conv2d => "conv2d.wgsl",
            Shader::Conv2dSubgroup => "conv2d_subgroup.wgsl",
            Shader::BatchNorm => "batchnorm.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Dense => "dense.wgsl",
            Shader::SoftmaxCe => "softmax_ce.wgsl",
            Shader::Optimizer => "optimizer.wgsl",
            Shader::AdaMatch => "adamatch.wgsl",
            Shader::FixMatch => "fixmatch.wgsl",
            Shader::Augment => "augment.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Conv2d => include_str!("../shaders/conv2d.wgsl"),
            Shader::Conv2dSubgroup => concat!(
                include_str!("../shaders/conv2d.wgsl"),
                include_str!("../shaders/conv2d_subgroup.wgsl")
            ),
            Shader::BatchNorm => include_str!("../shaders/batchnorm.wgsl"),
            Shader::Activation => include_str!("../shaders/activation.wgsl"),
            Shader::Pool => include_str!("../shaders/pool.wgsl"),
            Shader::Dense => include_str!("../shaders/dense.wgsl"),
            Shader::SoftmaxCe => include_str!("../shaders/softmax_ce.wgsl"),
            Shader::Optimizer => include_str!("../shaders/optimizer.wgsl"),
            Shader::AdaMatch => include_str!("../shaders/adamatch.wgsl"),
            Shader::FixMatch => include_str!("../shaders/fixmatch.wgsl"),
            Shader::Augment => include_str!("../shaders/augment.wgsl"),
        }
    }

    /// The shader calls subgroup builtins (its module needs a device with the subgroup feature).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::Conv2dSubgroup)
    }
}
