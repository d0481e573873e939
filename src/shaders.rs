//! The WGSL sources, embedded at compile time. One file per operation family in `shaders/`,
//! each holding that family's forward and backward entry points.

use std::sync::OnceLock;

/// Declares a `#[repr(C)]` struct that the host writes into a buffer and a shader reads, once: the
/// Rust struct, and in its `WGSL` constant the same struct in WGSL, which [`Shader::source`]
/// prepends to the shader. Fields are `u32`, `i32` or `f32` (4 bytes each, so both layouts are
/// the fields in order, with no padding rules to disagree on).
macro_rules! wgsl_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ident,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        impl $name {
            /// This struct's WGSL declaration.
            pub const WGSL: &'static str = concat!(
                "struct ", stringify!($name), " {\n",
                $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                "}\n"
            );
        }

        // Only types spelled the same in both languages.
        const _: fn() = || {
            $($crate::shaders::wgsl_scalar::<$ty>();)*
        };
    };
}
pub(crate) use wgsl_struct;

/// The field types [`wgsl_struct!`] takes: 4-byte scalars named alike in Rust and WGSL.
pub trait WgslScalar {}
impl WgslScalar for u32 {}
impl WgslScalar for i32 {}
impl WgslScalar for f32 {}

#[doc(hidden)]
pub fn wgsl_scalar<T: WgslScalar>() {}

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

    /// The WGSL as the crate compiles it: the constants and structs Rust defines for it (see
    /// [`Shader::constants`], [`Shader::structs`]), then the file (`conv2d_subgroup.wgsl` after
    /// `conv2d.wgsl`).
    pub fn source(self) -> String {
        let mut src = String::from("// Constants and structs written in Rust and prepended by src/shaders.rs.\n");
        for (name, value) in self.constants() {
            src.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        for decl in self.structs() {
            src.push_str(decl);
        }
        src.push_str(self.file_source());
        src
    }

    /// The file as written (without the constants [`Shader::source`] prepends).
    pub fn file_source(self) -> &'static str {
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

    /// The constants the shader shares with its Rust wrapper (tile and workgroup sizes, flags,
    /// op codes): the one place they are written is the wrapper's `WGSL_CONSTANTS`.
    pub fn constants(self) -> &'static [(&'static str, u32)] {
        use crate::kernels::*;
        match self {
            Shader::Conv2d | Shader::Conv2dSubgroup => conv2d::WGSL_CONSTANTS,
            Shader::BatchNorm => batchnorm::WGSL_CONSTANTS,
            Shader::Activation => activation::WGSL_CONSTANTS,
            Shader::Pool => pool::WGSL_CONSTANTS,
            Shader::Dense => dense::WGSL_CONSTANTS,
            Shader::SoftmaxCe => softmax_ce::WGSL_CONSTANTS,
            Shader::Optimizer => optimizer::WGSL_CONSTANTS,
            Shader::AdaMatch => adamatch::WGSL_CONSTANTS,
            Shader::FixMatch => fixmatch::WGSL_CONSTANTS,
            Shader::Augment => augment::WGSL_CONSTANTS,
        }
    }

    /// The WGSL declarations of the structs the wrapper writes into the shader's buffers
    /// (declared with [`wgsl_struct!`] in the wrapper).
    pub fn structs(self) -> &'static [&'static str] {
        use crate::kernels::*;
        match self {
            Shader::Conv2d | Shader::Conv2dSubgroup => conv2d::WGSL_STRUCTS,
            Shader::BatchNorm => batchnorm::WGSL_STRUCTS,
            Shader::Activation => activation::WGSL_STRUCTS,
            Shader::Pool => pool::WGSL_STRUCTS,
            Shader::Dense => dense::WGSL_STRUCTS,
            Shader::SoftmaxCe => softmax_ce::WGSL_STRUCTS,
            Shader::Optimizer => optimizer::WGSL_STRUCTS,
            Shader::AdaMatch => adamatch::WGSL_STRUCTS,
            Shader::FixMatch => fixmatch::WGSL_STRUCTS,
            Shader::Augment => &[],
        }
    }

    /// The binding number the shader declares for the buffer `name`
    /// (`@group(0) @binding(N) var<...> name`), read from the source once per process.
    pub fn binding(self, name: &str) -> Option<u32> {
        static TABLES: OnceLock<Vec<Vec<(&'static str, u32)>>> = OnceLock::new();
        let tables = TABLES.get_or_init(|| Shader::ALL.iter().map(|s| bindings(s.file_source())).collect());
        let i = Shader::ALL.iter().position(|s| *s == self)?;
        tables[i].iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }

    /// The shader calls subgroup builtins (its module needs a device with the subgroup feature).
    pub fn needs_subgroups(self) -> bool {
        matches!(self, Shader::Conv2dSubgroup)
    }
}

/// Every `@binding(N) var<...> name` declaration of a WGSL source, as (name, N).
fn bindings(src: &'static str) -> Vec<(&'static str, u32)> {
    let mut out = Vec::new();
    for line in src.lines() {
        let Some(at) = line.find("@binding(") else { continue };
        let rest = &line[at + "@binding(".len()..];
        let Some((number, rest)) = rest.split_once(')') else {
            continue;
        };
        let Ok(number) = number.trim().parse() else { continue };
        let Some((_, rest)) = rest.split_once("var") else {
            continue;
        };
        // Skip the address space (`<storage, read>`), if any, then take the name.
        let rest = match rest.trim_start().strip_prefix('<') {
            Some(r) => r.split_once('>').map_or("", |(_, r)| r),
            None => rest,
        };
        let name = rest
            .trim_start()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next();
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            out.push((name, number));
        }
    }
    out
}
