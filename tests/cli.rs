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

/// A WRN-10-1 (leaky) weights file `dir/name` with `classes` outputs at `image_size` px and the
/// `extra` metadata.
fn weights_file(
    dir: &Path,
    name: &str,
    classes: usize,
    image_size: usize,
    extra: &BTreeMap<String, String>,
) -> PathBuf {
    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).unwrap();
    let cfg = WideResNetConfig {
        depth: 10,
        width: 1,
        num_classes: classes,
        image_size,
        activation: Activation::Leaky(0.1),
        ..WideResNetConfig::paper()
    };
    let net = WideResNet::new(&ctx, cfg, 3).unwrap();
    let path = dir.join(name);
    weights::save(&ctx, &net, &path, InputScale::Paper, extra).unwrap();
    path
}

/// `predict --json` of one image: its one line.
fn predict_json(weights: &Path, image: &Path) -> serde_json::Value {
    let out = bin()
        .args(["predict", "--json", "--weights"])
        .arg(weights)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
}

fn small_weights(dir: &Path) -> PathBuf {
    weights_file(dir, "small.safetensors", 10, 32, &BTreeMap::new())
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
        pixels.extend_from_slice(&adamatch_wgpu::data::image::resize_and_pad(
            &image::open(p).unwrap(),
            32,
        ));
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

    // A folder is named as one (issue 13: "The image format could not be determined").
    let out = bin().args(["predict", "--weights"]).arg(&w).arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is a directory") && err.contains("eval --data dir:"),
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

#[test]
fn bench_step_json_reports_a_sane_step() {
    let out = bin()
        .args([
            "bench", "--step", "--preset", "tiny", "--batch", "4", "--uratio", "2", "--steps", "1", "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("field {k} missing or not a number: {r}"))
    };
    assert_eq!(r["preset"], "tiny");
    assert_eq!(r["algorithm"], "adamatch");
    assert_eq!(num("source_batch"), 4.0);
    assert_eq!(num("target_batch"), 8.0);
    assert_eq!(num("images_per_step"), 12.0);
    assert_eq!(num("joint_batch"), 24.0);
    assert_eq!(num("steps"), 1.0);
    assert_eq!(r["step_times_ms"].as_array().unwrap().len(), 1);
    let step_ms = num("step_ms");
    assert!(step_ms > 0.0 && step_ms.is_finite());
    assert!((num("images_per_s") - 12.0 / (step_ms / 1e3)).abs() < 1e-6 * num("images_per_s"));
    // WRN-10-1 at 24 + 8 rows: forward 3 x conv FLOPs per image, about 0.02 GFLOP forward.
    let gflop = num("step_gflop");
    assert!(gflop > 0.5 && gflop < 10.0, "step GFLOP {gflop}");
    assert!((num("gflops") - gflop / (step_ms / 1e3)).abs() < 1e-6 * num("gflops"));
    assert!(num("gpu_memory_bytes") > 1e6, "{r}");
    if cfg!(target_os = "linux") {
        assert!(num("step_cpu_s") > 0.0, "{r}");
    }
    assert!(num("loss").is_finite());
    assert!(num("ops_per_step") > 100.0);
    assert!(["gpu timestamps", "wall clock"].contains(&r["kernel_timing"].as_str().unwrap()));
    // The profile covers every op once: family calls add up to the ops of a step, and the
    // conv families carry nearly all the FLOPs.
    let families = r["families"].as_array().unwrap();
    let calls: f64 = families.iter().map(|f| f["calls"].as_f64().unwrap()).sum();
    assert_eq!(calls, num("ops_per_step"));
    let fam_gflop: f64 = families.iter().map(|f| f["gflop"].as_f64().unwrap()).sum();
    assert!((fam_gflop - gflop).abs() < 1e-6 * gflop);
    for name in [
        "conv2d forward",
        "conv2d backward data",
        "conv2d backward weights",
        "batchnorm",
        "augment",
    ] {
        assert!(
            families.iter().any(|f| f["name"] == name),
            "family {name} missing: {families:?}"
        );
    }
    let share: f64 = families.iter().map(|f| f["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "shares add up to {share}");
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "augment",
            "forward (joint)",
            "forward (source)",
            "loss",
            "backward (joint)",
            "backward (source)",
            "update"
        ]
    );
    assert!(!r["kernels"].as_array().unwrap().is_empty());
    let e = &r["engine"];
    assert_eq!(e["batch"].as_f64(), Some(24.0));
    let engine_gflop = e["gflop"].as_f64().unwrap();
    assert!(engine_gflop > 0.5 * gflop && engine_gflop < gflop, "{e}");
    assert!(e["pass_ms"].as_f64().unwrap() > 0.0 && e["throughput_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn eval_of_an_unlabeled_folder_reports_predicted_classes_and_confidence() {
    let dir = tmp_dir("eval-unlabeled");
    let w = small_weights(&dir);
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..5u8 {
        image::RgbImage::from_fn(20, 24, |x, y| image::Rgb([x as u8 * 9, y as u8 * 7, 40 * i]))
            .save(photos.join(format!("p{i}.png")))
            .unwrap();
    }
    let out = bin()
        .args(["eval", "--weights"])
        .arg(&w)
        .arg("--data")
        .arg(format!("dir:{}", photos.display()))
        .args(["--json", "--threshold", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["labeled"], false);
    assert!(v.get("accuracy").is_none());
    assert_eq!(v["images"], 5);
    assert_eq!(
        v["predicted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum::<u64>(),
        5
    );
    assert_eq!(v["threshold"], 0.5);
    let c = v["mean_confidence"].as_f64().unwrap();
    assert!((0.1..=1.0).contains(&c), "{c}");

    let out = bin()
        .args(["eval", "--weights"])
        .arg(&w)
        .arg("--data")
        .arg(format!("dir:{}", photos.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unlabeled: mean confidence"), "{stdout}");

    let out = bin()
        .args(["eval", "--weights"])
        .arg(&w)
        .arg("--data")
        .arg(format!("dir:{}", photos.display()))
        .args(["--threshold", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--threshold") && stderr.contains("probability"),
        "{stderr}"
    );
}

#[test]
fn predict_prints_the_class_names_of_the_weights() {
    let dir = tmp_dir("predict-names");
    let names = ["bird", "cat", "dog"];
    let extra = BTreeMap::from([("classes".to_string(), serde_json::to_string(&names).unwrap())]);
    let w = weights_file(&dir, "animals.safetensors", 3, 32, &extra);
    let img = dir.join("x.png");
    image::RgbImage::from_fn(30, 30, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 90]))
        .save(&img)
        .unwrap();

    let v = predict_json(&w, &img);
    let class = v["class"].as_u64().unwrap() as usize;
    assert_eq!(v["class_name"], names[class]);
    assert_eq!(v["probs"].as_array().unwrap().len(), 3);
    let out = bin().args(["predict", "--weights"]).arg(&w).arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("class {} (p = ", names[class])), "{text}");

    // A names entry that does not fit the network is a clear error, never a wrong name.
    let extra = BTreeMap::from([("classes".to_string(), r#"["a","b"]"#.to_string())]);
    let bad = weights_file(&dir, "bad-names.safetensors", 3, 32, &extra);
    let out = bin()
        .args(["predict", "--weights"])
        .arg(&bad)
        .arg(&img)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-names.safetensors") && err.contains("names 2 classes but the network has 3"),
        "{err}"
    );
}

/// Weights trained at another side classify through `predict` and `eval` at their own side.
#[test]
fn predict_and_eval_use_the_image_size_of_the_weights() {
    let dir = tmp_dir("predict-48");
    let w = weights_file(&dir, "w48.safetensors", 10, 48, &BTreeMap::new());
    let img = dir.join("wide.png");
    image::RgbImage::from_fn(90, 40, |x, y| image::Rgb([(x * 2) as u8, (y * 6) as u8, 77]))
        .save(&img)
        .unwrap();
    let v = predict_json(&w, &img);
    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).unwrap();
    let loaded = weights::load(&w).unwrap();
    let mut clf = Classifier::new(&ctx, &loaded, InputScale::Paper, 1).unwrap();
    let pixels = adamatch_wgpu::data::image::resize_and_pad(&image::open(&img).unwrap(), 48);
    assert_eq!(pixels.len(), 48 * 48 * 3);
    let want = clf.classify(&ctx, &pixels).unwrap().remove(0);
    assert_eq!(v["class"].as_u64().unwrap() as usize, want.class);
    for (a, b) in v["probs"].as_array().unwrap().iter().zip(&want.probs) {
        assert!((a.as_f64().unwrap() - *b as f64).abs() < 1e-6);
    }
    // eval loads the built-in test set at 48x48 for these weights.
    let out = bin()
        .args(["eval", "--json", "--limit", "20", "--data", "synth-house", "--weights"])
        .arg(&w)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["images"], 20);
}

#[test]
fn an_image_size_training_cannot_take_is_refused_before_anything_runs() {
    let dir = tmp_dir("image-size");
    // 0 and 4096 named the network's limit ("maximum 512"), not the flag's range (issue 24).
    for bad in ["12", "44", "136", "0", "4096"] {
        let out = bin()
            .args(["train", "--preset", "tiny", "--image-size", bad, "--out"])
            .arg(dir.join("run"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "--image-size {bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("'{bad}' for '--image-size")) && err.contains("multiple of 8 from 16 to 128"),
            "{err}"
        );
        assert!(!err.contains("512"), "{err}");
        assert!(
            !dir.join("run").exists(),
            "--image-size {bad}: a run directory was made"
        );
    }
}

#[test]
fn train_setting_flags_are_checked_before_anything_runs() {
    let dir = tmp_dir("settings");
    for (args, want) in [
        (vec!["--setting", "ssl"], "--setting ssl needs --labels-per-class"),
        (vec!["--setting", "ssda"], "--setting ssda needs --target-labeled"),
        (
            vec!["--labels-per-class", "3"],
            "--labels-per-class does not apply to --setting uda",
        ),
        (
            vec!["--setting", "ssl", "--labels-per-class", "3", "--target", "synth-house"],
            "--target does not apply to --setting ssl",
        ),
        (
            vec!["--target-labeled", "synth-house", "--labels-per-class", "3"],
            "--labels-per-class does not apply to --setting ssda",
        ),
    ] {
        let out = bin()
            .args(["train", "--preset", "tiny", "--out"])
            .arg(dir.join("run"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!dir.join("run").exists(), "{args:?}: a run directory was made");
    }
}

/// `train` of a small tiny-preset network (WRN-10-1, batch 2, 16 evaluation images, one
/// calibration batch) for `steps` steps into `out`, with `extra` flags.
fn tiny_train(steps: &str, extra: &[&str], out: &Path) -> std::process::Output {
    bin()
        .args([
            "train", "--preset", "tiny", "--steps", steps, "--depth", "10", "--width", "1",
        ])
        .args([
            "--batch",
            "2",
            "--eval-limit",
            "16",
            "--bn-calibration",
            "1",
            "--no-progress",
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn two_processes_write_byte_identical_weights_and_checkpoints() {
    let dir = tmp_dir("bytes");
    let run = |name: &str| {
        let out = dir.join(name);
        let _ = std::fs::remove_dir_all(&out);
        let o = tiny_train("2", &["--eval-every", "2"], &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let (a, b) = (run("a"), run("b"));
    for f in ["model.safetensors", "checkpoint.safetensors"] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f}: two processes with the same seed wrote different bytes");
        // The header's keys come out sorted.
        let n = u64::from_le_bytes(x[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(x[8..8 + n].to_vec()).unwrap();
        let meta_at = header.find("\"__metadata__\"").unwrap();
        assert_eq!(meta_at, 1, "{f}: __metadata__ is not the first key: {}", &header[..80]);
    }
}

#[test]
fn tiny_starts_with_a_source_phase_unless_init_brings_the_model() {
    let dir = tmp_dir("phases");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let _ = std::fs::remove_dir_all(&out);
        let o = tiny_train("4", extra, &out);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{err}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        let said = format!("{err}{}", String::from_utf8_lossy(&o.stdout));
        (config["config"]["source_steps"].as_u64().unwrap(), said, out)
    };
    // The preset's share: 600 of tiny's 1600 steps, so 1 of 4.
    let (source_steps, err, first) = run("preset-share", &[]);
    assert_eq!(source_steps, 1);
    assert!(
        err.contains("target test after the source-only phase: accuracy"),
        "{err}"
    );
    assert!(
        err.contains("step 1 (source-only)") && err.contains("source-only phase is done; adamatch adapts"),
        "{err}"
    );
    // The recipe's baseline says what it does after its phase: no adaptation follows.
    let (_, err, _) = run("baseline", &["--algorithm", "source-only"]);
    assert!(err.contains("source-only training restarts from its model"), "{err}");
    let model = first.join("model.safetensors");
    let model = model.to_str().unwrap();
    let (source_steps, err, _) = run("init", &["--init", model]);
    assert_eq!(source_steps, 0);
    assert!(!err.contains("source-only phase"), "{err}");
    let (source_steps, _, _) = run("init-and-phase", &["--init", model, "--source-steps", "2"]);
    assert_eq!(source_steps, 2);
}

/// The total variation distance between two predicted-class counts in a metrics.jsonl record.
fn share_distance(a: &serde_json::Value, b: &serde_json::Value) -> f64 {
    let counts = |v: &serde_json::Value| -> Vec<f64> {
        v["predicted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (counts(a), counts(b));
    let (sa, sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
    0.5 * a.iter().zip(&b).map(|(x, y)| (x / sa - y / sb).abs()).sum::<f64>()
}

#[test]
fn an_unlabeled_target_gets_the_class_histogram_distances_and_no_verdict() {
    let dir = tmp_dir("unlabeled-report");
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for i in 0..12u32 {
        image::RgbImage::from_fn(32, 32, |x, y| {
            let v = ((x * (i + 3) + y * 5 + i * 17) % 256) as u8;
            image::Rgb([v, v.wrapping_mul(3), 255 - v])
        })
        .save(photos.join(format!("p{i:02}.png")))
        .unwrap();
    }
    let out = dir.join("run");
    let _ = std::fs::remove_dir_all(&out);
    let o = tiny_train("4", &["--target", &format!("dir:{}", photos.display())], &out);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("note: no verdict."), "{said}");
    // The distances printed are those of the evaluations in metrics.jsonl: after the source-only
    // phase (step 1 of 4) and at the end.
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    let at = |step: u64| {
        evals
            .iter()
            .find(|v| v["step"] == step)
            .unwrap_or_else(|| panic!("no eval at {step}"))
    };
    let [before, now] = [at(1), at(4)].map(|v| share_distance(&v["target"], &v["source"]));
    let want = format!(
        "distance from the source's (total variation): {before:.3} after the source-only phase, {now:.3} now ({})",
        if now < before { "closer" } else { "not closer" }
    );
    assert!(said.contains(&want), "wanted '{want}' in:\n{said}");
}

#[test]
fn a_negative_learning_rate_is_refused_in_either_spelling() {
    for args in [["--lr", "-0.1"], ["--lr=-0.1", ""], ["--lr", "NaN"]] {
        let out = bin()
            .args(["train", "--preset", "tiny", "--out"])
            .arg(tmp_dir("neg-lr").join("run"))
            .args(args.iter().filter(|a| !a.is_empty()))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("learning rate (--lr) must be a positive finite number"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_batch_beyond_the_adapter_is_refused_with_the_flag_and_the_limit() {
    let out = bin()
        .args(["train", "--preset", "tiny", "--batch", "100000000", "--out"])
        .arg(tmp_dir("huge-batch").join("run"))
        .output()
        .unwrap();
    // Before: a panic inside wgpu-core (rc 101).
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--batch 100000000") && err.contains("per buffer (max_"),
        "{err}"
    );
    // A network whose parameters alone exceed a buffer: the flags named.
    let out = bin()
        .args([
            "train", "--preset", "tiny", "--depth", "160", "--width", "32", "--batch", "1", "--out",
        ])
        .arg(tmp_dir("huge-net").join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--depth 160 --width 32") && err.contains("per buffer (max_"),
        "{err}"
    );
}

#[test]
fn bench_runs_the_conv_path_it_is_told_and_names_each_layers_kernel() {
    // --conv-path and ADAMATCH_CONV_PATH force the path; every convolution row of the report
    // then names one of that path's kernels (tiled runs on every adapter, direct on any native one).
    for (how, path) in [("flag", "tiled"), ("env", "direct")] {
        let mut cmd = bin();
        cmd.args([
            "bench", "--depth", "10", "--width", "1", "--batch", "2", "--reps", "1", "--json",
        ]);
        match how {
            "flag" => cmd.args(["--conv-path", path]).env_remove("ADAMATCH_CONV_PATH"),
            _ => cmd.env("ADAMATCH_CONV_PATH", path),
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["conv_path"], path, "{how}");
        let convs: Vec<&str> = r["kernels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kernel"].as_str().unwrap())
            .filter(|k| k.starts_with("conv2d_") && !k.ends_with("_reduce"))
            .collect();
        assert!(convs.len() >= 3, "{r}");
        for k in convs {
            assert_eq!(k.contains("_direct_"), path == "direct", "{how} {path}: {k}");
            assert!(!k.ends_with("_subgroup"), "{how} {path}: {k}");
        }
    }
    let out = bin().args(["bench", "--conv-path", "fast"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fast") && err.contains("tiled, direct, subgroup"), "{err}");
}
