//! Property-based fuzzing of the IDX and MAT parsers, the weights loader (bytes and hostile
//! metadata) and the image decode path: arbitrary bytes and mutations of valid files must give Ok
//! or Err, never a panic, a hang or a huge allocation.

use adamatch_wgpu::data::idx::{encode_idx, maybe_gunzip, parse_idx};
use adamatch_wgpu::data::mat::{mi, mx, read_svhn, write_mat};
use proptest::prelude::*;

fn valid_mat(compress: bool) -> Vec<u8> {
    let x: Vec<u8> = (0..2 * 3072).map(|i| (i % 256) as u8).collect();
    write_mat(
        &[
            ("X", mx::UINT8, &[32, 32, 3, 2], mi::UINT8, &x),
            ("y", mx::DOUBLE, &[2, 1], mi::UINT8, &[3, 10]),
        ],
        compress,
    )
}

/// Applies (position, xor) mutations and an optional truncation.
fn mutate(mut b: Vec<u8>, muts: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(p, x) in muts {
        if !b.is_empty() {
            let n = b.len();
            b[p % n] ^= x;
        }
    }
    if let Some(c) = cut {
        let n = b.len();
        b.truncate(c % (n + 1));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn idx_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_idx(&bytes);
        let _ = maybe_gunzip(&bytes);
    }

    #[test]
    fn idx_mutated(muts in proptest::collection::vec((0usize..2000, any::<u8>()), 0..6),
                   cut in proptest::option::of(0usize..2000),
                   gz in any::<bool>()) {
        let data: Vec<u8> = (0..3 * 5 * 7).map(|i| i as u8).collect();
        let mut b = encode_idx(&[3, 5, 7], &data);
        if gz { b = crate::gzip(&b); }
        let b = mutate(b, &muts, cut);
        if let Ok(raw) = maybe_gunzip(&b) {
            if let Ok(arr) = parse_idx(&raw) {
                prop_assert_eq!(arr.dims.iter().product::<usize>(), arr.data.len());
            }
        }
    }

    #[test]
    fn mat_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = read_svhn(&mut &bytes[..], Some(bytes.len() as u64));
        let _ = read_svhn(&mut &bytes[..], None);
    }

    #[test]
    fn mat_random_after_valid_header(body in proptest::collection::vec(any::<u8>(), 0..800)) {
        let mut b = valid_mat(false)[..128].to_vec();
        b.extend_from_slice(&body);
        let _ = read_svhn(&mut &b[..], Some(b.len() as u64));
    }

    #[test]
    fn mat_mutated(muts in proptest::collection::vec((0usize..8000, any::<u8>()), 1..6),
                   cut in proptest::option::of(0usize..8000),
                   compress in any::<bool>()) {
        let b = mutate(valid_mat(compress), &muts, cut);
        if let Ok((images, labels)) = read_svhn(&mut &b[..], Some(b.len() as u64)) {
            prop_assert_eq!(images.len(), labels.len() * 3072);
            prop_assert!(labels.iter().all(|&l| l < 10));
        }
    }
}

/// A valid weights file of a WRN-10-1 built on the CPU (no GPU needed): every tensor the config
/// declares, filled with small values, and the metadata `train` writes.
fn valid_weights(config: &serde_json::Value, classes: Option<&str>) -> Vec<u8> {
    use adamatch_wgpu::network::{Architecture, WideResNetConfig};
    use safetensors::tensor::{Dtype, TensorView};
    let cfg: WideResNetConfig = serde_json::from_value(config.clone()).unwrap();
    let arch = Architecture::new(&cfg).unwrap();
    let specs: Vec<_> = arch.param_specs().iter().chain(arch.running_specs()).cloned().collect();
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            (0..s.len())
                .flat_map(|i| (0.01 * (i % 7) as f32 + 0.5).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = specs
        .iter()
        .zip(&data)
        .map(|(s, d)| (s.name.clone(), TensorView::new(Dtype::F32, s.shape.clone(), d).unwrap()))
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), adamatch_wgpu::weights::FORMAT.to_string());
    meta.insert("config".to_string(), config.to_string());
    meta.insert("input_scale".to_string(), "paper".to_string());
    if let Some(c) = classes {
        meta.insert("classes".to_string(), c.to_string());
    }
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn small_config() -> serde_json::Value {
    use adamatch_wgpu::network::WideResNetConfig;
    serde_json::to_value(WideResNetConfig {
        depth: 10,
        width: 1,
        ..WideResNetConfig::paper()
    })
    .unwrap()
}

/// Hostile values for a config entry.
fn hostile_value() -> impl Strategy<Value = Option<serde_json::Value>> {
    prop_oneof![
        Just(None),
        Just(Some(serde_json::json!(u64::MAX))),
        Just(Some(serde_json::json!(1u64 << 62))),
        Just(Some(serde_json::json!(-1))),
        Just(Some(serde_json::json!(0))),
        Just(Some(serde_json::json!(1.5))),
        Just(Some(serde_json::json!("ten"))),
        Just(Some(serde_json::json!(null))),
        Just(Some(serde_json::json!([1, 2]))),
        Just(Some(serde_json::json!({"Leaky": -1e30}))),
        (0u64..200).prop_map(|v| Some(serde_json::json!(v))),
    ]
}

#[test]
fn the_valid_weights_fixture_loads() {
    adamatch_wgpu::weights::from_bytes(&valid_weights(&small_config(), None)).expect("the fuzz fixture is valid");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The weights loader on hostile metadata: any config entry replaced or removed, hostile class
    /// lists. Ok or Err, never a panic or an allocation sized by the metadata.
    #[test]
    fn weights_with_hostile_metadata(key in prop::sample::select(vec![
            "depth", "width", "num_classes", "image_size", "bn_momentum", "bn_eps", "activation", "shortcut"]),
        value in hostile_value(),
        classes in prop::option::of(prop::sample::select(vec![
            "[]", "[\"a\"]", "[\"a\",\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]", "{}", "7", "not json",
            "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]"]))) {
        let good = valid_weights(&small_config(), None);
        let st = safetensors::SafeTensors::deserialize(&good).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        let mut config = small_config();
        match value {
            Some(v) => { config[key] = v; }
            None => { config.as_object_mut().unwrap().remove(key); }
        }
        meta.insert("config".into(), config.to_string());
        if let Some(c) = classes {
            meta.insert("classes".into(), c.to_string());
        }
        let bytes = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        let _ = adamatch_wgpu::weights::from_bytes(&bytes);
    }

    /// The weights loader on mutated and truncated bytes.
    #[test]
    fn weights_mutated(muts in proptest::collection::vec((0usize..40_000, any::<u8>()), 0..6),
                       cut in proptest::option::of(0usize..40_000)) {
        let b = mutate(valid_weights(&small_config(), None), &muts, cut);
        let _ = adamatch_wgpu::weights::from_bytes(&b);
    }

    /// The image path of folders and `predict`: mutated PNG and JPEG files decode or fail with the
    /// file named, never panic; what decodes is resized to 32x32x3.
    #[test]
    fn images_mutated(muts in proptest::collection::vec((0usize..4000, any::<u8>()), 1..6),
                      cut in proptest::option::of(0usize..4000),
                      jpeg in any::<bool>()) {
        let img = image::RgbImage::from_fn(23, 17, |x, y| image::Rgb([(x * 11) as u8, (y * 13) as u8, 99]));
        let mut bytes = Vec::new();
        let format = if jpeg { image::ImageFormat::Jpeg } else { image::ImageFormat::Png };
        img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
        let b = mutate(bytes, &muts, cut);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if jpeg { "x.jpg" } else { "x.png" });
        std::fs::write(&path, &b).unwrap();
        match adamatch_wgpu::data::folder::load_image_file(&path, 32) {
            Ok(px) => prop_assert_eq!(px.len(), 32 * 32 * 3),
            Err(e) => prop_assert!(format!("{e:#}").contains("x."), "{e:#}"),
        }
    }
}
