//! The command line end to end: `predict` on images written here, with weights saved here, and
//! its error paths; `info`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};
use adamatch_wgpu::inference::Classifier;
use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::network::{Activation, WideResNet, WideResNetConfig};
use adamatch_wgpu::weights;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adamatch-wgpu"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("adamatch-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_weights(dir: &Path) -> PathBuf {
    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).unwrap();
    let cfg = WideResNetConfig {
        depth: 10,
        width: 1,
        activation: Activation::Leaky(0.1),
        ..WideResNetConfig::paper()
    };
    let net = WideResNet::new(&ctx, cfg, 3).unwrap();
    let path = dir.join("small.safetensors");
    weights::save(&ctx, &net, &path, InputScale::Paper, &BTreeMap::new()).unwrap();
    path
}

#[test]
fn predict_json_matches_the_library_and_sums_to_one() {
    let dir = tmp_dir("predict");
    let w = small_weights(&dir);
    // A colour image of odd size and a gray one: both go through resize-and-pad.
    let rgb = image::RgbImage::from_fn(45, 20, |x, y| image::Rgb([(x * 5) as u8, (y * 12) as u8, 200]));
    let gray = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x + y) * 4) as u8]));
    let p1 = dir.join("a.png");
    let p2 = dir.join("b.png");
    rgb.save(&p1).unwrap();
    gray.save(&p2).unwrap();

    let out = bin()
        .args(["predict", "--json", "--weights"])
        .arg(&w)
        .arg(&p1)
        .arg(&p2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "predict failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);

    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).unwrap();
    let loaded = weights::load(&w).unwrap();
    let mut clf = Classifier::new(&ctx, &loaded, InputScale::Paper, 2).unwrap();
    let mut pixels = Vec::new();
    for p in [&p1, &p2] {
        pixels.extend_from_slice(&adamatch_wgpu::data::image::resize_and_pad(&image::open(p).unwrap()));
    }
    let want = clf.classify(&ctx, &pixels).unwrap();
    for (line, (want, path)) in lines.iter().zip(want.iter().zip([&p1, &p2])) {
        assert_eq!(line["file"].as_str().unwrap(), path.display().to_string());
        let probs: Vec<f64> = line["probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 10);
        assert!(
            (probs.iter().sum::<f64>() - 1.0).abs() < 1e-5,
            "probabilities sum to {}",
            probs.iter().sum::<f64>()
        );
        assert_eq!(line["class"].as_u64().unwrap() as usize, want.class);
        for (a, b) in probs.iter().zip(&want.probs) {
            assert!((a - *b as f64).abs() < 1e-6, "{a} vs {b}");
        }
        let argmax = probs
            .iter()
            .enumerate()
            .fold(0, |b, (i, &p)| if p > probs[b] { i } else { b });
        assert_eq!(argmax, want.class);
    }
}

#[test]
fn predict_names_a_bad_image_and_a_bad_weights_file() {
    let dir = tmp_dir("errors");
    let w = small_weights(&dir);
    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let out = bin().args(["predict", "--weights"]).arg(&w).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.png"), "error does not name the image: {err}");
    assert!(!err.contains("panicked"), "{err}");

    let bad_w = dir.join("weights.bin");
    std::fs::write(&bad_w, b"nope").unwrap();
    let out = bin()
        .args(["predict", "--weights"])
        .arg(&bad_w)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("weights.bin") && err.contains("not a safetensors file"),
        "{err}"
    );
}

#[test]
fn info_lists_an_adapter() {
    let out = bin().arg("info").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backend:") && text.contains("max_storage_buffer_binding_size"),
        "{text}"
    );
    assert!(text.contains("selected:"), "{text}");
}

#[test]
fn unknown_backend_is_a_clear_error() {
    let out = bin().args(["--backend", "glide", "info"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown backend 'glide'"));
}
