use std::collections::BTreeMap;

use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::network::{Activation, ShortcutInput, WideResNet};
use adamatch_wgpu::weights;
use safetensors::tensor::{Dtype, TensorView};

use crate::{ctx, perturbed_net, small_config};

fn tmp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("adamatch-wgpu-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn safetensors_round_trip_restores_every_tensor() {
    let ctx = ctx();
    let cfg = small_config(Activation::Leaky(0.1), 2, ShortcutInput::Official);
    let net = perturbed_net(ctx, cfg.clone(), 21);
    let path = tmp_path("round_trip.safetensors");
    let mut extra = BTreeMap::new();
    extra.insert("step".to_string(), "42".to_string());
    weights::save(ctx, &net, &path, InputScale::Paper, &extra).unwrap();

    let loaded = weights::load(&path).unwrap();
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.config.shortcut, ShortcutInput::Official);
    assert_eq!(loaded.input_scale, InputScale::Paper);
    assert_eq!(loaded.extra.get("step").map(String::as_str), Some("42"));
    let other = WideResNet::new(ctx, loaded.config.clone(), 999).unwrap();
    other.write_params(ctx, &loaded.params);
    other.write_running(ctx, &loaded.running);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(other.read_params(ctx).unwrap()),
        bits(net.read_params(ctx).unwrap())
    );
    assert_eq!(
        bits(other.read_running(ctx).unwrap()),
        bits(net.read_running(ctx).unwrap())
    );
}

/// Rewrites a valid file's tensors through `edit` (name, shape, data) and returns the error text.
/// `name` keeps each test's file apart: the tests run in parallel.
fn load_error_after(name: &str, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) -> String {
    let ctx = ctx();
    let net = perturbed_net(ctx, small_config(Activation::Relu, 1, ShortcutInput::Activated), 22);
    let good = weights::to_bytes(
        &net,
        &net.read_params(ctx).unwrap(),
        &net.read_running(ctx).unwrap(),
        InputScale::Keras,
        &BTreeMap::new(),
    )
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    let bytes = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    let path = tmp_path(&format!("{name}.safetensors"));
    std::fs::write(&path, bytes).unwrap();
    let err = format!(
        "{:#}",
        weights::load(&path).err().expect("the edited file must not load")
    );
    assert!(
        err.contains(&format!("{name}.safetensors")),
        "error does not name the file: {err}"
    );
    err
}

#[test]
fn missing_tensor_is_named() {
    let err = load_error_after("missing", |t| t.retain(|(n, _, _)| n != "stage2.block0.conv1"));
    assert!(err.contains("'stage2.block0.conv1' is missing"), "{err}");
}

#[test]
fn extra_tensor_is_named() {
    let err = load_error_after("extra", |t| t.push(("head.extra".into(), vec![2], vec![0; 8])));
    assert!(err.contains("unexpected tensor 'head.extra'"), "{err}");
}

#[test]
fn misshapen_tensor_is_named() {
    let err = load_error_after("misshapen", |t| {
        let e = t.iter_mut().find(|(n, _, _)| n == "head.dense.bias").unwrap();
        e.1 = vec![5, 2];
    });
    assert!(
        err.contains("'head.dense.bias' has shape [5, 2], expected [10]"),
        "{err}"
    );
}

#[test]
fn garbage_and_missing_files_give_clear_errors() {
    let path = tmp_path("garbage.safetensors");
    std::fs::write(&path, b"definitely not a weights file").unwrap();
    let err = format!("{:#}", weights::load(&path).err().unwrap());
    assert!(
        err.contains("garbage.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );
    let missing = tmp_path("does-not-exist.safetensors");
    let err = format!("{:#}", weights::load(&missing).err().unwrap());
    assert!(err.contains("does-not-exist.safetensors"), "{err}");
}

/// The metadata's `config` JSON of a weights file.
fn config_json(bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let config = &meta.metadata().as_ref().unwrap()["config"];
    serde_json::from_str(config).unwrap()
}

/// The shortcut rule is stored in the metadata's config as `shortcut` (`activated` or
/// `official`) and read back; a config without the entry (every file written before the option
/// existed) loads as `Activated`.
#[test]
fn shortcut_rule_is_stored_and_defaults_to_activated() {
    let ctx = ctx();
    let net = perturbed_net(ctx, small_config(Activation::Relu, 1, ShortcutInput::Official), 23);
    let (params, running) = (net.read_params(ctx).unwrap(), net.read_running(ctx).unwrap());
    let bytes =
        |net: &WideResNet| weights::to_bytes(net, &params, &running, InputScale::Keras, &BTreeMap::new()).unwrap();
    let official = bytes(&net);
    assert_eq!(config_json(&official)["shortcut"], "official");
    assert_eq!(
        weights::from_bytes(&official).unwrap().config.shortcut,
        ShortcutInput::Official
    );
    let activated_cfg = small_config(Activation::Relu, 1, ShortcutInput::Activated);
    let activated = bytes(&WideResNet::new(ctx, activated_cfg, 0).unwrap());
    assert_eq!(config_json(&activated)["shortcut"], "activated");
    assert_eq!(
        weights::from_bytes(&activated).unwrap().config.shortcut,
        ShortcutInput::Activated
    );

    // The official file with the entry removed from its config: an older file.
    let st = safetensors::SafeTensors::deserialize(&official).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&official).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut config = config_json(&official);
    config.remove("shortcut");
    meta.insert("config".into(), serde_json::to_string(&config).unwrap());
    let older = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    let loaded = weights::from_bytes(&older).unwrap();
    assert_eq!(loaded.config.shortcut, ShortcutInput::Activated);
    assert_eq!(
        loaded.config,
        small_config(Activation::Relu, 1, ShortcutInput::Activated)
    );
    assert_eq!(loaded.params, params);

    // An unknown rule is refused, naming it.
    let mut meta = header.metadata().clone().unwrap();
    let mut config = config_json(&official);
    config.insert("shortcut".into(), "sideways".into());
    meta.insert("config".into(), serde_json::to_string(&config).unwrap());
    let bad = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    let err = format!(
        "{:#}",
        weights::from_bytes(&bad)
            .err()
            .expect("an unknown shortcut rule must not load")
    );
    assert!(err.contains("sideways"), "{err}");

    // The shipped web model is a tiny-preset run and records the rule it was trained with.
    let demo = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/web/model.safetensors")).unwrap();
    assert_eq!(config_json(&demo)["shortcut"], "official");
    assert_eq!(
        weights::from_bytes(&demo).unwrap().config.shortcut,
        ShortcutInput::Official
    );
}

/// A config in the metadata that declares a huge or overflowing network is refused before
/// anything is allocated for it (issue 13: depth 100, width 100 aborted allocating 61 GB; width
/// 2^62 overflowed into a shape with a 0).
#[test]
fn a_config_declaring_a_huge_network_is_refused_before_allocating() {
    let ctx = ctx();
    let net = perturbed_net(ctx, small_config(Activation::Relu, 1, ShortcutInput::Official), 5);
    let (params, running) = (net.read_params(ctx).unwrap(), net.read_running(ctx).unwrap());
    let good = weights::to_bytes(&net, &params, &running, InputScale::Paper, &BTreeMap::new()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    for (edit, want) in [
        (
            vec![("depth", 100u64), ("width", 100)],
            "beyond the supported maximum 32",
        ),
        (
            vec![("depth", 160), ("width", 32)],
            "has shape [3, 3, 16, 16], expected [3, 3, 16, 512]",
        ),
        (vec![("width", 1 << 62)], "width 4611686018427387904 is beyond"),
        (vec![("num_classes", 1 << 40)], "classes 1099511627776 is beyond"),
        (
            vec![("image_size", u64::MAX)],
            "image size 18446744073709551615 is beyond",
        ),
    ] {
        let mut meta = header.metadata().clone().unwrap();
        let mut config = config_json(&good);
        for (k, v) in &edit {
            config.insert(k.to_string(), (*v).into());
        }
        meta.insert("config".into(), serde_json::to_string(&config).unwrap());
        let bad = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        let err = format!("{:#}", weights::from_bytes(&bad).err().expect("refused"));
        assert!(err.contains(want), "{edit:?}: {err}");
    }
}
