//! The WGSL sources, embedded at compile time. One file per operation family in `shaders/`,
//! each holding that family's forward and backward entry points.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

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
    /// The module's name: its file, or the last of its files.
    pub file_name: &'static str,
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
        self.file_name == other.file_name
    }
}

impl Eq for Shader {}

impl Shader {
    pub fn file_name(&self) -> &'static str {
        self.file_name
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

    /// The module's bindings and what each entry point uses, as naga reads them from
    /// [`Shader::source`], once per process.
    pub fn interface(&self) -> &'static ShaderInterface {
        static INTERFACES: OnceLock<Mutex<HashMap<&'static str, &'static ShaderInterface>>> = OnceLock::new();
        let mut interfaces = INTERFACES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        interfaces
            .entry(self.file_name)
            .or_insert_with(|| Box::leak(Box::new(ShaderInterface::read(self))))
    }

    /// The shader calls subgroup builtins (its module needs a device with the subgroup feature).
    pub fn needs_subgroups(&self) -> bool {
        self.needs_subgroups
    }
}

/// A shader module's resource interface: every `@binding(N) var<...> name` of group 0, and the
/// bindings each entry point uses, which are the entries of its pipeline's automatic layout (wgpu
/// makes that layout from the same naga analysis).
#[derive(Debug)]
pub struct ShaderInterface {
    bindings: Vec<(String, u32)>,
    entry_points: HashMap<String, Vec<u32>>,
}

impl ShaderInterface {
    /// Read from the WGSL text: `tests/shaders.rs` checks the result against naga's analysis
    /// (wgpu's) for every entry point of every shader. naga itself is not linked for this: it
    /// would add about 700 KiB (half again) to the browser's wasm, where the browser compiles
    /// the WGSL.
    fn read(shader: &Shader) -> ShaderInterface {
        let source = strip_comments(&shader.source());
        let bindings: Vec<(String, u32)> = bindings(&source)
            .into_iter()
            .map(|(name, number)| (name.to_string(), number))
            .collect();
        let functions = functions(&source);
        let entry_points = functions
            .iter()
            .filter(|f| f.entry_point)
            .map(|entry| {
                let names = reachable_names(entry, &functions);
                let used = bindings
                    .iter()
                    .filter(|(name, _)| names.contains(name.as_str()))
                    .map(|(_, number)| *number)
                    .collect();
                (entry.name.to_string(), used)
            })
            .collect();
        ShaderInterface { bindings, entry_points }
    }

    /// The binding number of the buffer `name`.
    pub fn binding(&self, name: &str) -> Option<u32> {
        self.bindings.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
    }

    /// The name of binding `number`.
    pub fn binding_name(&self, number: u32) -> Option<&str> {
        self.bindings
            .iter()
            .find(|(_, b)| *b == number)
            .map(|(n, _)| n.as_str())
    }

    /// Every binding: (name, number), in declaration order.
    pub fn bindings(&self) -> impl Iterator<Item = (&str, u32)> {
        self.bindings.iter().map(|(n, b)| (n.as_str(), *b))
    }

    /// The bindings `entry` uses (its pipeline layout's entries), or `None` for no such entry point.
    pub fn used_by(&self, entry: &str) -> Option<&[u32]> {
        self.entry_points.get(entry).map(Vec::as_slice)
    }
}

/// `src` with its `//` and `/* */` comments blanked out.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            let mut depth = 1;
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                let next = after[i + c.len_utf8()..].chars().next();
                match (c, next) {
                    ('/', Some('*')) => depth += 1,
                    ('*', Some('/')) => depth -= 1,
                    _ => continue,
                }
                chars.next();
                if depth == 0 {
                    end = i + 2;
                    break;
                }
            }
            out.push(' ');
            rest = &after[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A function of a WGSL module: its name, whether it is a `@compute` entry point, and the
/// identifiers its body names (member names after a `.` left out).
struct WgslFunction<'a> {
    name: &'a str,
    entry_point: bool,
    names: HashSet<&'a str>,
}

/// Every top-level function of a comment-free WGSL source.
fn functions(src: &str) -> Vec<WgslFunction<'_>> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item_start = 0;
    let mut i = 0;
    let bytes = src.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    item_start = i + 1;
                }
            }
            b';' if depth == 0 => item_start = i + 1,
            _ if depth == 0 && bytes[i..].starts_with(b"fn ") && (i == 0 || !is_ident(bytes[i - 1])) => {
                let name = identifiers(&src[i + 3..]).next().map_or("", |id| id.name);
                let open = src[i..].find('{').map_or(src.len(), |o| i + o);
                let close = matching_brace(src, open);
                out.push(WgslFunction {
                    name,
                    entry_point: src[item_start..i].contains("@compute"),
                    names: free_names(&src[i..open], &src[open..close]),
                });
                i = close + 1;
                item_start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The identifiers a function's body names that are not its own: member names (after a `.`),
/// its parameters and its `let` / `var` / `const` locals left out (a local shadowing a global
/// hides it in the whole function here: an approximation the naga comparison test checks).
fn free_names<'a>(signature: &'a str, body: &'a str) -> HashSet<&'a str> {
    let params = signature.split_once('(').map_or("", |(_, r)| r);
    let mut own: HashSet<&str> = identifiers(params)
        .filter(|id| id.before_colon)
        .map(|id| id.name)
        .collect();
    let mut names = HashSet::new();
    let mut previous = "";
    for id in identifiers(body) {
        if matches!(previous, "let" | "var" | "const") {
            own.insert(id.name);
        } else if !id.after_dot {
            names.insert(id.name);
        }
        previous = id.name;
    }
    names.retain(|n| !own.contains(n));
    names
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The index of the `}` closing the `{` at `open` (or the end of `src`).
fn matching_brace(src: &str, open: usize) -> usize {
    let mut depth = 0usize;
    for (i, b) in src.bytes().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    src.len()
}

/// An identifier of a WGSL source, with whether a `.` precedes it (a member name) and a `:`
/// follows it (a parameter, member or typed declaration).
struct Identifier<'a> {
    name: &'a str,
    after_dot: bool,
    before_colon: bool,
}

/// The identifiers of `src`, in order.
fn identifiers(src: &str) -> impl Iterator<Item = Identifier<'_>> {
    let bytes = src.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if is_ident(bytes[i]) && !bytes[i].is_ascii_digit() && (i == 0 || !is_ident(bytes[i - 1])) {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                return Some(Identifier {
                    name: &src[start..i],
                    after_dot: src[..start].trim_end().ends_with('.'),
                    before_colon: src[i..].trim_start().starts_with(':'),
                });
            }
            i += 1;
        }
        None
    })
}

/// Every identifier named by `entry` or by a function it calls, directly or not.
fn reachable_names<'a>(entry: &WgslFunction<'a>, functions: &[WgslFunction<'a>]) -> HashSet<&'a str> {
    let mut names: HashSet<&str> = entry.names.clone();
    let mut visited: HashSet<&str> = HashSet::from([entry.name]);
    let mut queue: Vec<&WgslFunction> = vec![entry];
    while let Some(f) = queue.pop() {
        for callee in functions.iter().filter(|g| f.names.contains(g.name)) {
            if visited.insert(callee.name) {
                names.extend(callee.names.iter().copied());
                queue.push(callee);
            }
        }
    }
    names
}

/// Every `@binding(N) var<...> name` declaration of a WGSL source, as (name, N).
fn bindings(src: &str) -> Vec<(&str, u32)> {
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
