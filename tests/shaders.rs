//! Every `shaders/*.wgsl` parses and validates with naga, with no GPU involved, so a shader
//! error names its file and line before any adapter is touched.

use std::path::Path;

use adamatch_wgpu::kernels::{conv2d, SHADERS};

#[test]
fn every_wgsl_file_validates() {
    // Each embedded shader's source as the crate compiles it (conv2d_subgroup.wgsl is appended to
    // conv2d.wgsl), with the subgroup capability only where the shader needs it.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut errors = Vec::new();
    for shader in SHADERS {
        let src = &shader.source();
        let name = dir.join(shader.file_name()).display().to_string();
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                errors.push(e.emit_to_string_with_path(src, &name));
                continue;
            }
        };
        let caps = if shader.needs_subgroups() {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::empty()
        };
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        validator
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        if let Err(e) = validator.validate(&module) {
            errors.push(e.emit_to_string_with_path(src, &name));
        }
    }
    assert!(errors.is_empty(), "shader errors:\n{}", errors.join("\n"));
}

#[test]
fn every_tile_candidates_module_is_embedded() {
    // kernels::SHADERS lists the tiled modules by hand: one per candidate but the default's.
    for (i, tiled) in conv2d::TILED_SHADERS.iter().enumerate() {
        assert!(
            SHADERS.contains(&tiled),
            "conv2d::TILED_SHADERS[{i}] is not in kernels::SHADERS"
        );
    }
    assert_eq!(
        conv2d::TILED_SHADERS.len() + 1,
        conv2d::ConvTiles::ALL.len(),
        "one module per tile candidate"
    );
}

#[test]
fn every_shader_file_is_embedded() {
    // A .wgsl file the crate does not embed would be validated here yet never run.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let embedded: Vec<&str> = adamatch_wgpu::kernels::SHADERS.iter().map(|s| s.file_name()).collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".wgsl") {
            assert!(
                embedded.contains(&name.as_str()),
                "shaders/{name} is not in kernels::SHADERS"
            );
        }
    }
}

/// `@compute ... fn name` entry points of a WGSL source.
fn compute_entry_points(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("@compute") {
        let rest = &src[i..];
        let after_fn = &rest[rest.find("fn ").expect("fn after @compute") + 3..];
        let name: String = after_fn
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn conv2d_kernels_name_exactly_the_shaders_entry_points() {
    // Every Conv2dKernel is an entry point of its shader, and every entry point of conv2d.wgsl and
    // conv2d_subgroup.wgsl is a Conv2dKernel: selection can reach each, and none is dead.
    use adamatch_wgpu::kernels::conv2d::Conv2dKernel;
    let mut declared = compute_entry_points(conv2d::SUBGROUP_SHADER.file_source());
    declared.sort();
    let mut named: Vec<String> = Conv2dKernel::ALL.iter().map(|k| k.entry_point().to_string()).collect();
    named.sort();
    assert_eq!(named, declared);
    let plain = compute_entry_points(conv2d::SHADER.file_source());
    for &k in Conv2dKernel::ALL {
        assert_eq!(
            plain.iter().any(|e| e == k.entry_point()),
            *k.shader() == conv2d::SHADER,
            "{k:?} is declared in the wrong file for {:?}",
            k.shader()
        );
    }
}

#[test]
fn bindings_are_found_by_name_in_every_shader() {
    // The declarations Op::new resolves names against: all of them, each name and number once.
    for shader in SHADERS {
        let src = shader.file_source();
        let mut numbers = Vec::new();
        for line in src.lines().filter(|l| l.contains("@binding(")) {
            let (_, decl) = line.split_once("var").expect("a var after @binding");
            let decl = decl.split_once('>').map_or(decl, |(_, r)| r);
            let name: String = decl
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let number = shader
                .binding(&name)
                .unwrap_or_else(|| panic!("{name} of {line:?} not found"));
            assert!(
                line.contains(&format!("@binding({number})")),
                "{name}: {number} for {line:?}"
            );
            numbers.push(number);
        }
        assert!(!numbers.is_empty(), "{} declares no bindings", shader.file_name());
        let count = numbers.len();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "{}: a binding number twice", shader.file_name());
        assert_eq!(shader.binding("no_such_buffer"), None);
    }
}

#[test]
fn every_vec4_view_has_its_buffer_and_every_entry_point_its_bindings() {
    // Op::new binds `x4` to the tensor passed as `x`: a binding ending in 4 must be such a view.
    for shader in SHADERS {
        let interface = shader.interface();
        for (name, _) in interface.bindings() {
            if let Some(base) = name.strip_suffix('4') {
                assert!(
                    interface.binding(base).is_some(),
                    "{}: '{name}' ends in 4 but no '{base}' is declared, so Op::new would read \
                     it as a vec4 view of a buffer that does not exist",
                    shader.file_name()
                );
            }
        }
    }
}

#[test]
fn each_entry_points_bindings_are_the_ones_naga_finds() {
    // Op::new binds what ShaderInterface (a reading of the WGSL text) says an entry point uses;
    // wgpu's automatic layout holds what naga's analysis says. They must agree exactly: one
    // binding too many or too few fails the bind group.
    for shader in SHADERS {
        let module = naga::front::wgsl::parse_str(&shader.source()).expect("parses");
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .expect("validates");
        let interface = shader.interface();
        assert!(
            !module.entry_points.is_empty(),
            "{}: no entry points",
            shader.file_name()
        );
        for (index, entry) in module.entry_points.iter().enumerate() {
            let uses = info.get_entry_point(index);
            let mut want: Vec<u32> = module
                .global_variables
                .iter()
                .filter(|&(handle, _)| !uses[handle].is_empty())
                .filter_map(|(_, var)| var.binding.as_ref().filter(|b| b.group == 0))
                .map(|b| b.binding)
                .collect();
            want.sort();
            let mut got: Vec<u32> = interface
                .used_by(&entry.name)
                .unwrap_or_else(|| panic!("{}: entry point {} not found", shader.file_name(), entry.name))
                .map(|(_, number)| number)
                .collect();
            got.sort();
            assert_eq!(got, want, "{}::{}: bindings used", shader.file_name(), entry.name);
        }
    }
}

#[test]
fn rust_constants_reach_the_wgsl_once_and_are_used() {
    // Each constant Rust writes for a shader is declared by Rust alone (the file does not declare
    // it again) and the file uses it: a constant the WGSL no longer reads is a stale contract.
    let mut unused = Vec::new();
    for shader in SHADERS {
        let src = shader.source();
        // The file's code without its comments.
        let file: String = shader
            .file_source()
            .lines()
            .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
            .collect::<Vec<_>>()
            .join("\n");
        // Rust prepends each once; a second declaration is the file's own.
        for (name, _) in shader.constants() {
            assert_eq!(
                src.matches(&format!("const {name}:")).count(),
                1,
                "{} declares {name}, which Rust writes for it",
                shader.file_name()
            );
        }
        for (name, _) in shader.wrapper_constants() {
            let used = file.match_indices(name).any(|(i, _)| {
                let before = file[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                let after = file[i + name.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                before && after
            });
            if !used {
                unused.push(format!(
                    "{} never uses {name}, which Rust writes for it",
                    shader.file_name()
                ));
            }
        }
    }
    assert!(unused.is_empty(), "{unused:#?}");
}
