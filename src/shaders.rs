//! The WGSL sources, embedded at compile time. One file per operation family in `shaders/`,
//! each holding that family's forward and backward entry points.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

mod interface;
pub use interface::ShaderInterface;

/// Declares a `#[repr(C)]` struct that the host writes into a buffer and a shader reads, once: the
/// Rust struct, and in its `WGSL` constant the same struct in WGSL, which [`Shader::source`]
/// prepends to the shader. Fields are `u32`, `i32` or `f32`, arrays of them (`[i32; 6]` is
/// `array<i32, 6>`), other such structs, or arrays of those (`[OpSlot; SLOTS]`, the length a
/// literal or a constant the shader is also compiled with). Every member is then 4-byte aligned
/// with a size a multiple of 4, so both layouts are the fields in order with no padding rules to
/// disagree on (in storage buffers; a uniform buffer's arrays need 16-byte strides, which naga
/// refuses, so uniform structs keep to scalars).
macro_rules! wgsl_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:tt,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        #[allow(dead_code)]
        impl $name {
            /// The field names, in order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field),)*];

            /// This struct's WGSL declaration.
            pub const WGSL: &'static str = concat!(
                "struct ", stringify!($name), " {\n",
                $("    ", stringify!($field), ": ", $crate::shaders::wgsl_type_name!($ty), ",\n",)*
                "}\n"
            );
        }

        impl $crate::shaders::WgslType for $name {}

        // Only types spelled alike in both languages.
        const _: fn() = || {
            $($crate::shaders::wgsl_type::<$ty>();)*
        };
    };
}
pub(crate) use wgsl_struct;

/// The WGSL spelling of a [`wgsl_struct!`] field's type.
macro_rules! wgsl_type_name {
    ([$elem:ident; $len:tt]) => {
        concat!("array<", stringify!($elem), ", ", stringify!($len), ">")
    };
    ($ty:ident) => {
        stringify!($ty)
    };
}
pub(crate) use wgsl_type_name;

/// The field types [`wgsl_struct!`] takes: 4-byte scalars named alike in Rust and WGSL, arrays of
/// them, and the structs it declares.
pub trait WgslType {}
impl WgslType for u32 {}
impl WgslType for i32 {}
impl WgslType for f32 {}
impl<T: WgslType, const N: usize> WgslType for [T; N] {}

#[doc(hidden)]
pub fn wgsl_type<T: WgslType>() {}

/// Workgroup size of the reductions that sum in one fixed tree (the losses' metrics, the
/// convolution weight gradient's split-K partials): every shader is compiled with it as
/// `REDUCE_WG`.
pub const REDUCE_WG: u32 = 256;

/// The constants every shader is compiled with (see [`Shader::source`]).
const PRELUDE_CONSTANTS: &[(&str, u32)] = &[("REDUCE_WG", REDUCE_WG)];

/// WGSL every shader is compiled with, ahead of its file: the dispatch index of a 2D-split grid and
/// the single-workgroup tree sum.
const PRELUDE: &str = "\
// The invocation's index in a dispatch of `wg`-invocation workgroups that gpu::grid_1d split into
// 2D where it was wider than 65,535 workgroups; callers bounds-check it.
fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * wg + lid;
}

// Partial sums of workgroup_sum (in no entry point's interface that does not call it).
var<workgroup> reduce_partial: array<f32, REDUCE_WG>;

// The sum of the `value`s of a REDUCE_WG-invocation workgroup in one fixed tree order, so it is
// bitwise reproducible; every invocation gets it. Every invocation must call it (barriers).
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    reduce_partial[lid] = value;
    workgroupBarrier();
    for (var stride = REDUCE_WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            reduce_partial[lid] += reduce_partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = reduce_partial[0];
    // The next call's writes wait for every invocation's read.
    workgroupBarrier();
    return total;
}
";

/// The [`Shader`] of one file of `shaders/` without subgroups: its name, its text, and the
/// constants and structs its wrapper writes for it.
macro_rules! shader_file {
    ($file:literal, $constants:expr, $structs:expr) => {
        $crate::shaders::Shader {
            file_name: $file,
            module_name: $file,
            file_source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file)),
            constants: &[$constants],
            structs: $structs,
            needs_subgroups: false,
        }
    };
}
pub(crate) use shader_file;

/// One shader module: a file in `shaders/` (or two, concatenated) with the constants and structs
/// its Rust wrapper writes for it. Each wrapper in `src/kernels/` defines its own as `SHADER`
/// (`kernels::SHADERS` lists them all); this file knows none of them.
#[derive(Debug)]
pub struct Shader {
    /// The module's file, or the last of its files.
    pub file_name: &'static str,
    /// The module's own name, unique among the crate's modules: its file name, or for one
    /// of several modules compiled from one file with other constants, the file name and a mark.
    pub module_name: &'static str,
    /// The WGSL as written.
    pub file_source: &'static str,
    /// The wrapper's constants (tile and workgroup sizes, flags, op codes), written once there;
    /// a module of two files takes the first file's list and the second's.
    pub constants: &'static [&'static [(&'static str, u32)]],
    /// The WGSL declarations of the structs the wrapper writes into the shader's buffers
    /// (declared with [`wgsl_struct!`] in the wrapper).
    pub structs: &'static [&'static str],
    /// The shader calls subgroup builtins (its module needs a device with the subgroup feature).
    pub needs_subgroups: bool,
}

impl PartialEq for Shader {
    fn eq(&self, other: &Shader) -> bool {
        self.module_name == other.module_name
    }
}

impl Eq for Shader {}

impl Shader {
    pub fn file_name(&self) -> &'static str {
        self.file_name
    }

    /// See [`Shader::module_name`]: what compiled modules and pipelines are cached by.
    pub fn module_name(&self) -> &'static str {
        self.module_name
    }

    /// The file as written (without what [`Shader::source`] prepends).
    pub fn file_source(&self) -> &'static str {
        self.file_source
    }

    /// The WGSL as the crate compiles it: the constants and structs Rust defines for it (see
    /// [`Shader::constants`], [`Shader::structs`]), the prelude every shader shares
    /// (`linear_index`), then the file.
    pub fn source(&self) -> String {
        let mut src =
            String::from("// Constants, structs and helpers written in Rust and prepended by src/shaders.rs.\n");
        for (name, value) in self.constants() {
            src.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        for decl in self.structs {
            src.push_str(decl);
        }
        src.push_str(PRELUDE);
        src.push_str(self.file_source);
        src
    }

    /// The constants the shader shares with Rust: the prelude's ([`REDUCE_WG`]), then its
    /// wrapper's.
    pub fn constants(&self) -> impl Iterator<Item = (&'static str, u32)> {
        PRELUDE_CONSTANTS.iter().copied().chain(self.wrapper_constants())
    }

    /// The wrapper's own constants for this shader.
    pub fn wrapper_constants(&self) -> impl Iterator<Item = (&'static str, u32)> {
        self.constants.iter().flat_map(|list| list.iter().copied())
    }

    /// The WGSL declarations of the wrapper's structs.
    pub fn structs(&self) -> &'static [&'static str] {
        self.structs
    }

    /// The binding number the shader declares for the buffer `name`
    /// (`@group(0) @binding(N) var<...> name`).
    pub fn binding(&self, name: &str) -> Option<u32> {
        self.interface().binding(name)
    }

    /// The module's bindings and what each entry point uses, read from [`Shader::source`] once
    /// per process.
    pub fn interface(&self) -> &'static ShaderInterface {
        static INTERFACES: OnceLock<Mutex<HashMap<&'static str, &'static ShaderInterface>>> = OnceLock::new();
        let mut interfaces = INTERFACES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        interfaces
            .entry(self.module_name)
            .or_insert_with(|| Box::leak(Box::new(ShaderInterface::read(&self.source()))))
    }

    /// The shader calls subgroup builtins (its module needs a device with the subgroup feature).
    pub fn needs_subgroups(&self) -> bool {
        self.needs_subgroups
    }
}
