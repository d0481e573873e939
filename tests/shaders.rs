//! Every `shaders/*.wgsl` parses and validates with naga, with no GPU involved, so a shader
//! error names its file and line before any adapter is touched.

use std::path::Path;

#[test]
fn every_wgsl_file_validates() {
    // Each embedded shader's source as the crate compiles it (conv2d_subgroup.wgsl is appended to
    // conv2d.wgsl), with the subgroup capability only where the shader needs it.
    use adamatch_wgpu::shaders::Shader;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut errors = Vec::new();
    for shader in Shader::ALL {
        let src = shader.source();
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
    assert!(Shader::ALL.len() >= 6, "expected the engine's shaders");
    assert!(errors.is_empty(), "shader errors:\n{}", errors.join("\n"));
}

#[test]
fn every_shader_file_is_embedded() {
    // A .wgsl file the crate does not embed would be validated here yet never run.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let embedded: Vec<&str> = adamatch_wgpu::shaders::Shader::ALL
        .iter()
        .map(|s| s.file_name())
        .collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".wgsl") {
            assert!(
                embedded.contains(&name.as_str()),
                "shaders/{name} is not in Shader::ALL"
            );
        }
    }
}
