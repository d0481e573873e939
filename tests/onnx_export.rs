//! `export --onnx`: the exported models, run by ONNX Runtime (CPU, from PyPI) and checked by
//! `onnx.checker`, against `predict --json` on the page's real sample photos, for the shipped
//! web model and networks of every shape the tool trains (the paper's WRN-28-2 with the
//! official shortcuts and leaky ReLU, the Keras example's with activated shortcuts and ReLU, a
//! 3-class 48 px network with the Keras input scaling).
//!
//! Needs a Python with onnx, onnxruntime and numpy: `scripts/ensure-test-python.sh` (run by the
//! README's test command) makes `target/test-venv`; `ADAMATCH_TEST_PYTHON` names another.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};
use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::network::{WideResNet, WideResNetConfig};
use adamatch_wgpu::weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::{bin, test_python};

/// ONNX Runtime against the GPU kernels: different summation orders in f32.
const LOGIT_TOL: f64 = 1e-4;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adamatch-onnx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A weights file of `cfg` at its initialisation, with batch-norm running statistics drawn at
/// random (so that a wrongly mapped mean, variance or epsilon shows).
fn weights_file(dir: &Path, name: &str, cfg: WideResNetConfig, scale: InputScale, classes: &[&str]) -> PathBuf {
    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).unwrap();
    let net = WideResNet::new(&ctx, cfg, 7).unwrap();
    let params = net.read_params(&ctx).unwrap();
    let mut running = net.read_running(&ctx).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for s in net.running_specs() {
        let var = s.name.ends_with("running_var");
        for v in &mut running[s.offset..s.offset + s.len()] {
            *v = if var {
                rng.random_range(0.5..2.0)
            } else {
                rng.random_range(-0.3..0.3)
            };
        }
    }
    let names = serde_json::to_string(classes).unwrap();
    let extra = BTreeMap::from([("classes".to_string(), names)]);
    let path = dir.join(name);
    std::fs::write(
        &path,
        weights::to_bytes(&net, &params, &running, scale, &extra).unwrap(),
    )
    .unwrap();
    path
}

/// The page's sample photos fitted to `side` as `predict` fits them, written as PNGs of that
/// side (which `predict` reads unchanged), and their pixels.
fn samples(dir: &Path, side: usize) -> (Vec<PathBuf>, Vec<u8>) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(manifest().join("web/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    names.sort();
    let (mut files, mut pixels) = (Vec::new(), Vec::new());
    for p in names {
        let img = image::open(&p).unwrap();
        let rgb = adamatch_wgpu::data::image::resize_and_pad(&img, side);
        let out = dir.join(format!("{}-{side}.png", p.file_stem().unwrap().to_string_lossy()));
        image::save_buffer(&out, &rgb, side as u32, side as u32, image::ExtendedColorType::Rgb8).unwrap();
        files.push(out);
        pixels.extend_from_slice(&rgb);
    }
    (files, pixels)
}

/// Exports `weights`, runs it with ONNX Runtime on the samples and `predict --json` on the same
/// images; returns the largest logit difference and the model's ops.
fn compare(py: &Path, dir: &Path, weights: &Path, side: usize, classes: &[&str]) -> (f64, Vec<String>) {
    let model = dir.join("model.onnx");
    let out = bin()
        .args(["export", "--overwrite", "--weights"])
        .arg(weights)
        .arg("--onnx")
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "export: {}", String::from_utf8_lossy(&out.stderr));
    let (files, pixels) = samples(dir, side);
    let raw = dir.join("pixels.u8");
    std::fs::write(&raw, &pixels).unwrap();
    let result = dir.join("onnx.json");
    let run = Command::new(py)
        .arg(manifest().join("tests/onnx/run_onnx.py"))
        .arg(&model)
        .arg(&raw)
        .arg(files.len().to_string())
        .arg(side.to_string())
        .arg(&result)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ort: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    assert_eq!(
        ort["classes"],
        serde_json::json!(classes),
        "the class names in the metadata"
    );
    assert_eq!(ort["opset"], 13);
    let ops: Vec<String> = serde_json::from_value(ort["ops"].clone()).unwrap();

    let out = bin()
        .args(["predict", "--json", "--weights"])
        .arg(weights)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "predict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let native: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(native.len(), files.len());
    let mut worst = 0.0f64;
    for (i, n) in native.iter().enumerate() {
        let a: Vec<f64> = serde_json::from_value(n["logits"].clone()).unwrap();
        let b: Vec<f64> = serde_json::from_value(ort["logits"][i].clone()).unwrap();
        assert_eq!(a.len(), classes.len());
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
        }
    }
    (worst, ops)
}

#[test]
fn exported_models_give_predicts_logits_in_onnx_runtime() {
    let Some(py) = test_python("onnx, onnxruntime, numpy") else {
        eprintln!(
            "SKIPPED exported_models_give_predicts_logits_in_onnx_runtime: no Python with onnx and \
             onnxruntime (run scripts/ensure-test-python.sh, or set ADAMATCH_TEST_PYTHON)"
        );
        return;
    };
    let dir = temp_dir("models");
    let digits: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let digits: Vec<&str> = digits.iter().map(String::as_str).collect();
    let three = ["cat", "dog", "bird"];
    let small = WideResNetConfig {
        depth: 10,
        width: 2,
        num_classes: 3,
        image_size: 48,
        ..WideResNetConfig::paper()
    };
    let cases: Vec<(&str, PathBuf, usize, &[&str])> = vec![
        ("web model", manifest().join("web/model.safetensors"), 32, &digits),
        (
            "paper WRN-28-2",
            weights_file(
                &dir,
                "paper.safetensors",
                WideResNetConfig::paper(),
                InputScale::Paper,
                &digits,
            ),
            32,
            &digits,
        ),
        (
            "keras-example WRN-28-2",
            weights_file(
                &dir,
                "keras.safetensors",
                WideResNetConfig::keras(),
                InputScale::Keras,
                &digits,
            ),
            32,
            &digits,
        ),
        (
            "3-class 48 px",
            weights_file(&dir, "three.safetensors", small, InputScale::Keras, &three),
            48,
            &three,
        ),
    ];
    for (name, weights, side, classes) in cases {
        let (worst, ops) = compare(&py, &dir, &weights, side, classes);
        eprintln!("{name}: largest logit difference {worst:.2e}; ops {ops:?}");
        assert!(
            worst <= LOGIT_TOL,
            "{name}: ONNX Runtime's logits differ from predict's by {worst:.2e}"
        );
        let relu = if name.starts_with("keras") { "Relu" } else { "LeakyRelu" };
        assert!(ops.iter().any(|o| o == relu), "{name}: {ops:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn export_refuses_to_overwrite_and_names_a_bad_weights_file() {
    let dir = temp_dir("errors");
    let onnx = dir.join("model.onnx");
    std::fs::write(&onnx, b"the user's file").unwrap();
    let out = bin()
        .args(["export", "--weights"])
        .arg(manifest().join("web/model.safetensors"))
        .arg("--onnx")
        .arg(&onnx)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists: pass --overwrite"), "{err}");
    assert_eq!(
        std::fs::read(&onnx).unwrap(),
        b"the user's file",
        "the file is untouched"
    );
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not weights").unwrap();
    let out = bin()
        .args(["export", "--weights"])
        .arg(&bad)
        .arg("--onnx")
        .arg(dir.join("new.onnx"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(!dir.join("new.onnx").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
