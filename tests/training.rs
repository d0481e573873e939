//! The training loop end to end on the built-in synthetic pair: a resumed run equals an
//! uninterrupted one bitwise, the run directory holds what it promises, divergence stops the run
//! with the last good checkpoint kept, and an existing run is never overwritten.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use adamatch_wgpu::data::spec::DatasetSpec;
use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};
use adamatch_wgpu::network::WideResNetConfig;
use adamatch_wgpu::train::config::{Algorithm, TrainConfig};
use adamatch_wgpu::train::run::{train, RunOptions, CHECKPOINT, MODEL};
use adamatch_wgpu::train::trainer::Trainer;
use adamatch_wgpu::weights;
use safetensors::SafeTensors;

fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new_blocking(&AdapterChoice::default()).expect("a GPU adapter"))
}

fn out_dir_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("adamatch-training-{}-{name}", std::process::id()))
}

fn out_dir(name: &str) -> PathBuf {
    let d = out_dir_path(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(dir: &Path, resume: bool, stop_after: Option<u64>) -> RunOptions {
    RunOptions {
        out_dir: dir.to_path_buf(),
        source: DatasetSpec::default(),
        target: DatasetSpec::default_target(),
        setting: Default::default(),
        labels_seed: 0,
        source_test: None,
        target_test: None,
        data_dir: std::env::temp_dir(),
        resume,
        overwrite: false,
        init: None,
        stop_after,
        progress: false,
        interrupted: Arc::new(AtomicBool::new(false)),
    }
}

/// A preset shrunk to a few cheap steps: batch 2, uratio 2, 6 steps.
fn small(preset: &str) -> TrainConfig {
    let mut c = TrainConfig::preset(preset).unwrap();
    c.network = WideResNetConfig {
        depth: 10,
        width: 1,
        ..c.network
    };
    c.batch = 2;
    c.uratio = 2;
    c.steps = 6;
    c.source_steps = 0;
    c.log_every = 1;
    c.eval_every = 3;
    c.checkpoint_every = 2;
    c.eval_limit = Some(16);
    c
}

/// The test split of `spec` at `size` x `size`, as `eval` loads it.
fn test_split(spec: DatasetSpec, size: usize) -> adamatch_wgpu::data::Source {
    use adamatch_wgpu::data::spec::{load_sized, Split};
    load_sized(
        &spec,
        Split::Test,
        adamatch_wgpu::data::Preprocess::Pad,
        &std::env::temp_dir(),
        size,
    )
    .unwrap()
}

/// The error an evaluation of `data` must end in.
fn eval_error(
    ev: &mut adamatch_wgpu::train::eval::Evaluator,
    net: &adamatch_wgpu::network::WideResNet,
    data: &adamatch_wgpu::data::Dataset,
    scale: adamatch_wgpu::input::InputScale,
) -> String {
    match ev.run(ctx(), net, data, scale, None, None) {
        Ok(_) => panic!("{}: the evaluation was accepted", data.name),
        Err(e) => format!("{e:#}"),
    }
}

/// Every tensor of two checkpoints, bit for bit, and their step and RNG position.
fn assert_same_checkpoint(a: &Path, b: &Path) {
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (sa, sb) = (
        SafeTensors::deserialize(&ba).unwrap(),
        SafeTensors::deserialize(&bb).unwrap(),
    );
    let mut names = sa.names();
    names.sort();
    let mut names_b = sb.names();
    names_b.sort();
    assert_eq!(names, names_b);
    for n in names {
        let (ta, tb) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
        assert!(
            ta.data() == tb.data(),
            "checkpoint tensor '{n}' differs between the straight and the resumed run"
        );
    }
    let meta = |bytes: &[u8]| SafeTensors::read_metadata(bytes).unwrap().1.metadata().clone().unwrap();
    let (ma, mb) = (meta(&ba), meta(&bb));
    assert_eq!(ma["step"], mb["step"]);
    assert_eq!(ma["rng"], mb["rng"], "the host RNG position differs");
}

/// The name of `resume_equals_straight`'s runs of `cfg`.
fn run_name(cfg: &TrainConfig) -> String {
    let n = &cfg.network;
    format!(
        "{}-{:?}-{}px-s{}",
        cfg.preset, cfg.algorithm, n.image_size, cfg.source_steps
    )
}

fn resume_equals_straight(cfg: TrainConfig, expected_state: &[&str]) {
    let ctx = ctx();
    let preset = run_name(&cfg);
    let straight = out_dir(&format!("{preset}-straight"));
    let s = train(ctx, cfg.clone(), &options(&straight, false, None)).unwrap();
    assert!(s.finished && s.steps_done == cfg.steps);

    let resumed = out_dir(&format!("{preset}-resumed"));
    let s = train(ctx, cfg.clone(), &options(&resumed, false, Some(3))).unwrap();
    assert!(!s.finished && s.steps_done == 3, "the first half stops at step 3");
    assert!(
        !resumed.join(MODEL).exists(),
        "an interrupted run does not export a model"
    );
    let s = train(ctx, cfg.clone(), &options(&resumed, true, None)).unwrap();
    assert!(s.finished && s.steps_done == cfg.steps);

    assert_same_checkpoint(&straight.join(CHECKPOINT), &resumed.join(CHECKPOINT));
    // The checkpoint holds every piece of state, not just the weights.
    let bytes = std::fs::read(straight.join(CHECKPOINT)).unwrap();
    let names = SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for want in ["params", "running"].iter().chain(expected_state) {
        assert!(names.iter().any(|n| n == want), "checkpoint lacks '{want}': {names:?}");
    }
    let (wa, wb) = (
        weights::load(&straight.join(MODEL)).unwrap(),
        weights::load(&resumed.join(MODEL)).unwrap(),
    );
    assert!(
        wa.params == wb.params && wa.running == wb.running,
        "exported weights differ"
    );
    // And the files byte for byte (sorted metadata): `cmp` and checksums call them equal.
    for f in [MODEL, CHECKPOINT] {
        assert!(
            std::fs::read(straight.join(f)).unwrap() == std::fs::read(resumed.join(f)).unwrap(),
            "{f} differs in its bytes between the straight and the resumed run"
        );
    }
    // The resumed run's log continues the first half's without duplicated steps.
    let lines = |d: &Path| {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(&straight), lines(&resumed));
}

/// `--image-size 48`: the built-in pair resized to 48x48, augmented and trained at that side,
/// stopped and resumed bit for bit, the side recorded in config.json and the weights; a folder
/// of photos of other sizes is fitted into 48x48 for `eval`, and data of another side is
/// refused by name.
#[test]
fn a_run_at_48x48_resumes_exactly_and_records_its_image_size() {
    use adamatch_wgpu::inference::Classifier;
    use adamatch_wgpu::train::eval::Evaluator;
    let ctx = ctx();
    let mut cfg = small("paper");
    cfg.network.image_size = 48;
    resume_equals_straight(cfg.clone(), &["opt.velocity", "adamatch.p_target_history"]);
    let straight = out_dir_path(&format!("{}-straight", run_name(&cfg)));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["network"]["image_size"], 48);
    let w = weights::load(&straight.join(MODEL)).unwrap();
    assert_eq!(w.config.image_size, 48);

    // Photos of other sizes (and aspect ratios) fitted into 48x48 for the exported model.
    let photos = out_dir("photos-48");
    for (c, (w_px, h_px)) in [(64u32, 40u32), (20, 30)].into_iter().enumerate() {
        let sub = photos.join(c.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..3u32 {
            image::RgbImage::from_fn(w_px, h_px, |x, y| image::Rgb([(x * 4 + i) as u8, (y * 6) as u8, 90]))
                .save(sub.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let data = test_split(DatasetSpec::Dir(photos.clone()), 48);
    let data = data.as_dataset().unwrap();
    assert_eq!((data.size, data.len(), data.image(0).len()), (48, 6, 48 * 48 * 3));
    let clf = Classifier::new(ctx, &w, w.input_scale, 1).unwrap();
    let mut ev = Evaluator::new(ctx, &clf.net, 4, w.classes.clone()).unwrap();
    let unlabeled = adamatch_wgpu::data::Dataset::sized(data.images.clone(), 48, None, Vec::new(), "photos").unwrap();
    let r = ev
        .run(ctx, &clf.net, &unlabeled, w.input_scale, None, Some(0.5))
        .unwrap();
    assert_eq!(r.predicted.iter().sum::<u64>(), 6);
    // The same folder at 32x32 is refused, naming both sides.
    let small_data = test_split(DatasetSpec::Images(photos), 32);
    let err = eval_error(&mut ev, &clf.net, small_data.as_dataset().unwrap(), w.input_scale);
    assert!(err.contains("32x32") && err.contains("48x48"), "{err}");

    // The 48 px weights start a 32 px run (the tensors do not depend on the side).
    let mut opts = options(&out_dir("init-from-48"), false, None);
    opts.init = Some(straight.join(MODEL));
    let mut c = small("paper");
    c.steps = 1;
    train(ctx, c, &opts).unwrap();

    // Sides training cannot take are refused by name.
    for bad in [20, 8, 136] {
        let mut c = small("tiny");
        c.network.image_size = bad;
        let err = format!(
            "{:#}",
            train(ctx, c, &options(&out_dir("bad-size"), false, None))
                .err()
                .unwrap()
        );
        assert!(
            err.contains(&format!("--image-size {bad}")) && err.contains("multiple of 8"),
            "{err}"
        );
    }
}

#[test]
fn paper_run_resumed_midway_equals_the_straight_run() {
    let state = [
        "opt.velocity",
        "ema.params",
        "ema.running",
        "adamatch.p_source_ema",
        "adamatch.p_target_history",
        "adamatch.history_state",
    ];
    resume_equals_straight(small("paper"), &state);
}

#[test]
fn keras_run_resumed_midway_equals_the_straight_run() {
    // Adam state, no EMA, Keras alignment and soft pseudo-labels.
    resume_equals_straight(small("keras-example"), &["opt.m", "opt.v"]);
}

#[test]
fn fixmatch_run_resumed_midway_equals_the_straight_run_and_logs_its_threshold() {
    let mut cfg = small("tiny");
    cfg.algorithm = Algorithm::Fixmatch;
    resume_equals_straight(cfg.clone(), &["opt.velocity", "ema.params"]);
    let metrics =
        std::fs::read_to_string(out_dir_path(&format!("{}-straight", run_name(&cfg))).join("metrics.jsonl")).unwrap();
    for l in metrics.lines().filter(|l| l.contains("\"kind\":\"train\"")) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["metrics"]["c_tau"].as_f64(), Some(cfg.confidence as f64), "{l}");
        assert_eq!(v["metrics"]["mu"].as_f64(), Some(1.0), "{l}");
        assert!(
            v["metrics"].get("align_ratio_min").is_none(),
            "FixMatch has no alignment: {l}"
        );
    }
}

#[test]
fn a_run_resumed_at_or_after_the_end_of_its_source_phase_equals_the_straight_run() {
    // Stopped at step 3: at the end of a 3-step source-only phase (the checkpoint holds that
    // phase's state and the resumed run starts the adaptation), and 1 step into the adaptation
    // of a run whose source phase is 2 steps (its checkpoint holds AdaMatch's state).
    for source_steps in [3, 2] {
        let cfg = TrainConfig {
            source_steps,
            ..small("tiny")
        };
        let mut state = vec!["opt.velocity", "ema.params"];
        if source_steps < 3 {
            state.push("adamatch.p_target_history");
        }
        resume_equals_straight(cfg, &state);
    }
}

/// A run's metrics.jsonl lines, without what timing or the phase's name adds, with their steps
/// moved by `shift`.
fn metrics_lines(dir: &Path, shift: u64) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("images_per_s");
            o.remove("phase");
            let step = o["step"].as_u64().unwrap() + shift;
            o.insert("step".into(), step.into());
            if let Some(m) = o.get_mut("metrics") {
                m["step"] = step.into();
            }
            v
        })
        .collect()
}

#[test]
fn the_one_command_recipe_is_a_source_only_run_then_a_run_from_its_model() {
    // `--source-steps 3 --steps 7` against `--algorithm source-only --steps 3` followed by
    // `--steps 4 --init <its model.safetensors>`: the same log lines, evaluations and model, bit
    // for bit (batch-norm calibration on, an evaluation after every step).
    let ctx = ctx();
    let cfg = TrainConfig {
        steps: 7,
        source_steps: 3,
        eval_every: 1,
        ..small("tiny")
    };
    assert!(cfg.bn_calibration > 0);
    let one = out_dir("recipe-one-command");
    let summary = train(ctx, cfg.clone(), &options(&one, false, None)).unwrap();
    let source_phase = summary
        .source_phase_eval
        .expect("an evaluation at the end of the source phase");

    let first = out_dir("recipe-source-only");
    let first_cfg = TrainConfig {
        algorithm: Algorithm::SourceOnly,
        steps: 3,
        source_steps: 0,
        ..cfg.clone()
    };
    let first_summary = train(ctx, first_cfg, &options(&first, false, None)).unwrap();
    let second = out_dir("recipe-from-its-model");
    let mut opts = options(&second, false, None);
    opts.init = Some(first.join(MODEL));
    let second_cfg = TrainConfig {
        steps: 4,
        source_steps: 0,
        ..cfg.clone()
    };
    train(ctx, second_cfg, &opts).unwrap();

    let json = |e: &adamatch_wgpu::train::eval::EvalResult| serde_json::to_value(e).unwrap();
    assert_eq!(json(&source_phase.1), json(&first_summary.last_eval.unwrap().1));
    let mut expected = metrics_lines(&first, 0);
    expected.extend(metrics_lines(&second, 3));
    let got = metrics_lines(&one, 0);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "the one command's line differs from the two commands'");
    }
    let (a, b) = (
        weights::load(&one.join(MODEL)).unwrap(),
        weights::load(&second.join(MODEL)).unwrap(),
    );
    assert!(a.params == b.params && a.running == b.running, "the models differ");

    // Each line names its phase; the source phase ends with an evaluation.
    let text = std::fs::read_to_string(one.join("metrics.jsonl")).unwrap();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let want = if v["step"].as_u64().unwrap() <= 3 {
            "source-only"
        } else {
            "adamatch"
        };
        assert_eq!(v["phase"], want, "{l}");
    }
}

#[test]
fn run_directory_holds_config_metrics_model_and_plots() {
    let ctx = ctx();
    let dir = out_dir("artifacts");
    let cfg = small("tiny");
    let summary = train(ctx, cfg.clone(), &options(&dir, false, None)).unwrap();
    let (src, tgt) = summary.last_eval.expect("a final evaluation");
    assert_eq!(src.images, 16);
    let confusion = tgt.confusion.as_ref().expect("synth-house's test split is labeled");
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 16);
    // The predicted-class counts are the confusion matrix's column sums.
    let columns: Vec<u64> = (0..10).map(|p| confusion.iter().map(|r| r[p]).sum()).collect();
    assert_eq!(tgt.predicted, columns);
    assert!(tgt.mean_confidence > 0.1 && tgt.mean_confidence <= 1.0);
    for f in [
        "config.json",
        "metrics.jsonl",
        CHECKPOINT,
        MODEL,
        "loss.png",
        "accuracy.png",
        "confusion.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} is missing from the run directory");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["batch"], 2);
    assert!(config["adapter"].as_str().unwrap().contains(&ctx.info.name));
    assert_eq!(config["convolution"], ctx.profile.conv_kernels());
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let train_lines = metrics.lines().filter(|l| l.contains("\"kind\":\"train\"")).count();
    assert_eq!(train_lines as u64, cfg.steps);
    for l in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["kind"] == "train" {
            assert!(v["metrics"]["total_loss"].as_f64().unwrap().is_finite());
        }
    }
    // The exported model is the EMA copy and loads for predict.
    let w = weights::load(&dir.join(MODEL)).unwrap();
    assert_eq!(w.extra.get("weights").map(String::as_str), Some("ema"));
    assert_eq!(w.config, cfg.network);
}

#[test]
fn divergence_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    let ctx = ctx();
    let dir = out_dir("diverge");
    let mut cfg = small("tiny");
    cfg.lr = 1e30;
    cfg.checkpoint_every = 1;
    let err = format!(
        "{:#}",
        train(ctx, cfg, &options(&dir, false, None))
            .err()
            .expect("the run must diverge")
    );
    assert!(err.contains("diverged") && err.contains("NaN"), "{err}");
    assert!(err.contains(CHECKPOINT) && err.contains("(step "), "{err}");
    assert!(!dir.join(MODEL).exists());

    // Before the first checkpoint, the message names none (issue 13: it named a missing file).
    let dir = out_dir("diverge-early");
    let mut cfg = small("tiny");
    cfg.lr = 1e30;
    cfg.checkpoint_every = 100;
    let err = format!("{:#}", train(ctx, cfg, &options(&dir, false, None)).err().unwrap());
    assert!(
        err.contains("No checkpoint was written") && !err.contains(CHECKPOINT),
        "{err}"
    );
    assert!(!dir.join(CHECKPOINT).exists());
}

#[test]
fn nonsense_hyperparameters_are_refused_before_training() {
    let ctx = ctx();
    type Breaks = fn(&mut TrainConfig);
    let cases: [(&str, Breaks); 9] = [
        ("--lr", |c| c.lr = f32::NAN),
        ("--lr", |c| c.lr = f32::INFINITY),
        ("--lr", |c| c.lr = -0.1),
        ("--weight-decay", |c| c.weight_decay = f32::NAN),
        ("--tau", |c| c.tau = 0.0),
        ("--tau", |c| c.tau = f32::NAN),
        ("--confidence", |c| c.confidence = 1.5),
        ("--ema", |c| c.ema = Some(1.0)),
        ("--bn-momentum", |c| c.network.bn_momentum = -0.5),
    ];
    for (flag, break_it) in cases {
        let mut cfg = small("tiny");
        break_it(&mut cfg);
        let dir = out_dir("nonsense");
        let err = format!(
            "{:#}",
            train(ctx, cfg, &options(&dir, false, None)).err().expect("refused")
        );
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(!dir.join(CHECKPOINT).exists(), "{flag}: it trained");
    }
}

#[test]
fn an_existing_run_is_not_overwritten() {
    let ctx = ctx();
    let dir = out_dir("existing");
    let mut cfg = small("tiny");
    cfg.steps = 2;
    train(ctx, cfg.clone(), &options(&dir, false, None)).unwrap();
    let before = std::fs::read(dir.join(CHECKPOINT)).unwrap();
    let err = format!("{:#}", train(ctx, cfg, &options(&dir, false, None)).err().unwrap());
    assert!(
        err.contains("already holds a run") && err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join(CHECKPOINT)).unwrap(), before);
}

#[test]
fn bn_calibration_leaves_the_training_state_untouched() {
    // Calibration draws from its own RNG and writes only its own copy of the evaluation weights:
    // the checkpoint (weights, optimizer, EMA, alignment state, RNG position) is bitwise the same
    // with and without it, and the exported model differs only in its running statistics.
    let ctx = ctx();
    let mut off = small("tiny");
    off.bn_calibration = 0;
    let mut on = off.clone();
    on.bn_calibration = 3;
    let (a, b) = (out_dir("calibration-off"), out_dir("calibration-on"));
    train(ctx, off, &options(&a, false, None)).unwrap();
    train(ctx, on, &options(&b, false, None)).unwrap();
    assert_same_checkpoint(&a.join(CHECKPOINT), &b.join(CHECKPOINT));
    let (wa, wb) = (
        weights::load(&a.join(MODEL)).unwrap(),
        weights::load(&b.join(MODEL)).unwrap(),
    );
    assert!(wa.params == wb.params, "calibration changed the exported weights");
    assert!(
        wa.running != wb.running,
        "calibration did not change the running statistics"
    );
    assert_eq!(wb.extra.get("bn_calibration").map(String::as_str), Some("3"));
}

#[test]
fn bn_calibration_sets_the_batch_statistics_of_the_training_mix() {
    check_calibration_mix(Algorithm::Adamatch, false);
}

#[test]
fn bn_calibration_mixes_in_the_labeled_target_images_as_training_does() {
    // Semi-supervised: a training batch holds B source, T labeled target and uB target rows; the
    // source-only phase of such a run trains on B source and T labeled target rows only.
    check_calibration_mix(Algorithm::Adamatch, true);
    check_calibration_mix(Algorithm::SourceOnly, true);
}

/// Constant images make every calibration batch the same, so the first batch norm's statistics
/// have a closed form: the stem convolution (SAME zero padding) of a constant source image, a
/// constant labeled target image (with `labeled_target`) and a constant target image (when the
/// algorithm uses the target), mixed in a training batch's proportions.
fn check_calibration_mix(algorithm: Algorithm, labeled_target: bool) {
    use adamatch_wgpu::data::{Dataset, IMAGE_BYTES};
    use adamatch_wgpu::train::trainer::Trainer;
    let ctx = ctx();
    let mut cfg = small("tiny");
    cfg.algorithm = algorithm;
    cfg.batch = 3;
    cfg.uratio = 2;
    cfg.bn_calibration = 4;
    cfg.labeled_target_batch = if labeled_target { 2 } else { 0 };
    let (vs, vl, vt) = (200u8, 90u8, 31u8);
    let constant = |v: u8, n: usize| Dataset::new(vec![v; n * IMAGE_BYTES], Some(vec![0; n]), "constant").unwrap();
    let (source, target) = (constant(vs, 5), constant(vt, 7));
    let mut trainer = Trainer::new(ctx, cfg.clone()).unwrap();
    if labeled_target {
        trainer.set_labeled_target(constant(vl, 3)).unwrap();
    }
    let net = trainer.calibrated_eval_net(ctx, &source, &target).unwrap();
    let params = net.read_params(ctx).unwrap();
    let running = net.read_running(ctx).unwrap();
    let find = |specs: &[adamatch_wgpu::network::TensorSpec], name: &str| {
        specs.iter().find(|s| s.name == name).unwrap().offset
    };
    let arch = &net.arch;
    let k = find(arch.param_specs(), "stem.conv");
    let rm = find(arch.running_specs(), "stage1.block0.bn1.running_mean");
    let rv = find(arch.running_specs(), "stage1.block0.bn1.running_var");
    let out_c = 16;
    let stem = |v: u8| -> Vec<Vec<f64>> {
        let x = (v as f64 - 127.5) / 128.0;
        (0..out_c)
            .map(|o| {
                let mut px = Vec::new();
                for y in 0..32i32 {
                    for xx in 0..32i32 {
                        let mut s = 0.0;
                        for dy in -1..=1 {
                            for dx in -1..=1 {
                                if (0..32).contains(&(y + dy)) && (0..32).contains(&(xx + dx)) {
                                    for ci in 0..3 {
                                        let w = params[k + (((dy + 1) * 3 + dx + 1) as usize * 3 + ci) * out_c + o];
                                        s += x * w as f64;
                                    }
                                }
                            }
                        }
                        px.push(s);
                    }
                }
                px
            })
            .collect()
    };
    // (rows per batch, the stem's output of that image).
    let mut mix = vec![(cfg.batch as f64, stem(vs))];
    if labeled_target {
        mix.push((cfg.labeled_target_batch as f64, stem(vl)));
    }
    if algorithm.uses_target() {
        mix.push((cfg.target_batch() as f64, stem(vt)));
    }
    for o in 0..out_c {
        let n: f64 = mix.iter().map(|(rows, _)| rows * 1024.0).sum();
        let mean = mix
            .iter()
            .map(|(rows, px)| rows * px[o].iter().sum::<f64>())
            .sum::<f64>()
            / n;
        let var = mix
            .iter()
            .map(|(rows, px)| rows * px[o].iter().map(|v| (v - mean).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n;
        let (gm, gv) = (running[rm + o] as f64, running[rv + o] as f64);
        assert!(
            (gm - mean).abs() <= 1e-4 * (1.0 + mean.abs()),
            "{algorithm:?}, labeled target {labeled_target}: channel {o}: mean {gm} vs {mean}"
        );
        assert!(
            (gv - var).abs() <= 1e-4 * (1.0 + var.abs()),
            "{algorithm:?}, labeled target {labeled_target}: channel {o}: var {gv} vs {var}"
        );
    }
}

#[test]
fn bn_calibration_runs_once_per_step() {
    // Evaluating and exporting at one step (the end of a run, the browser's evaluate then
    // exportWeights) calibrate once: a second call at the same step keeps the statistics even
    // when handed other images, and a training step makes the next call calibrate again.
    use adamatch_wgpu::data::{Dataset, IMAGE_BYTES};
    let ctx = ctx();
    let mut cfg = small("tiny");
    cfg.batch = 3;
    cfg.uratio = 2;
    cfg.bn_calibration = 2;
    let constant = |v: u8, n: usize| Dataset::new(vec![v; n * IMAGE_BYTES], Some(vec![0; n]), "constant").unwrap();
    let (bright, dark) = ((constant(200, 5), constant(31, 7)), (constant(90, 5), constant(10, 7)));
    let mut trainer = Trainer::new(ctx, cfg).unwrap();
    let running = |t: &mut Trainer, data: &(Dataset, Dataset)| {
        let net = t.calibrated_eval_net(ctx, &data.0, &data.1).unwrap();
        net.read_running(ctx).unwrap()
    };
    let first = running(&mut trainer, &bright);
    assert!(first == running(&mut trainer, &dark), "recalibrated at the same step");
    let exported =
        pollster::block_on(trainer.export_weights_async(ctx, &dark.0, &dark.1, &adamatch_wgpu::data::digit_classes()))
            .unwrap();
    assert!(
        weights::from_bytes(&exported).unwrap().running == first,
        "the export used other statistics"
    );
    trainer.step(ctx, &bright.0, &bright.1).unwrap();
    let after_step = running(&mut trainer, &dark);
    assert!(after_step != first, "not recalibrated after a step");
}

#[test]
fn init_starts_from_the_given_weights_and_refuses_another_network() {
    let ctx = ctx();
    let mut cfg = small("tiny");
    cfg.bn_calibration = 0;
    let a = out_dir("init-source");
    train(ctx, cfg.clone(), &options(&a, false, None)).unwrap();
    let w = weights::load(&a.join(MODEL)).unwrap();

    // The trainer's raw and EMA weights are the file's, bit for bit, before the first step.
    let trainer = Trainer::new(ctx, cfg.clone()).unwrap();
    assert!(
        trainer.net.read_params(ctx).unwrap() != w.params,
        "a fresh network already equals the file"
    );
    trainer.load_weights(ctx, &w).unwrap();
    assert!(trainer.net.read_params(ctx).unwrap() == w.params);
    assert!(trainer.net.read_running(ctx).unwrap() == w.running);
    let ema = trainer.ema_net().expect("the tiny preset has an EMA");
    assert!(ema.read_params(ctx).unwrap() == w.params);

    // A run started from it records where it started, and trains on from there.
    let b = out_dir("init-run");
    let mut opts = options(&b, false, None);
    opts.init = Some(a.join(MODEL));
    train(ctx, cfg.clone(), &opts).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["init"], a.join(MODEL).display().to_string());
    let plain = out_dir("init-none");
    train(ctx, cfg.clone(), &options(&plain, false, None)).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("config.json")).unwrap()).unwrap();
    assert!(config["init"].is_null());
    assert!(
        weights::load(&b.join(MODEL)).unwrap().params != weights::load(&plain.join(MODEL)).unwrap().params,
        "the initial weights made no difference"
    );

    // Another architecture is refused, naming the flag, the file and both networks.
    let mut deeper = cfg.clone();
    deeper.network.depth = 16;
    let c = out_dir("init-mismatch");
    let mut opts = options(&c, false, None);
    opts.init = Some(a.join(MODEL));
    let err = format!(
        "{:#}",
        train(ctx, deeper, &opts)
            .err()
            .expect("a deeper network must refuse the weights")
    );
    assert!(err.contains("--init") && err.contains("model.safetensors"), "{err}");
    assert!(err.contains("WRN-10-1") && err.contains("WRN-16-1"), "{err}");
}

/// Writes the first `n` synth-house test images as PNGs straight into `dir` (no class folders:
/// an unlabeled folder, as a user's photos are).
fn write_png_folder(dir: &Path, n: usize) {
    use adamatch_wgpu::data::synth::{SynthDomain, SynthStream};
    let d = SynthStream::test(SynthDomain::House, 3, n).materialize(0, n);
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        image::RgbImage::from_raw(32, 32, d.image(i).to_vec())
            .unwrap()
            .save(dir.join(format!("img{i:03}.png")))
            .unwrap();
    }
}

#[test]
fn an_unlabeled_target_trains_and_reports_what_is_known_without_labels() {
    use adamatch_wgpu::inference::Classifier;
    let ctx = ctx();
    let photos = out_dir("unlabeled-photos");
    write_png_folder(&photos, 12);
    let dir = out_dir("unlabeled-run");
    let cfg = small("tiny");
    let mut opts = options(&dir, false, None);
    opts.target = DatasetSpec::Dir(photos.clone());
    let summary = train(ctx, cfg.clone(), &opts).expect("an unlabeled target trains");
    let (src, tgt) = summary.last_eval.expect("a final evaluation");
    assert!(src.labeled && src.accuracy.is_some());
    assert!(!tgt.labeled && tgt.accuracy.is_none() && tgt.confusion.is_none());
    assert_eq!(tgt.images, 12);
    assert_eq!(tgt.predicted.iter().sum::<u64>(), 12);
    let threshold = tgt.threshold.expect("a mask-rate threshold");
    assert!((threshold - cfg.tau as f64 * src.mean_confidence).abs() < 1e-12);

    // The numbers are the exported model's own on the folder's images.
    let w = weights::load(&dir.join(MODEL)).unwrap();
    let images = adamatch_wgpu::data::folder::load_dir(&photos, 32).unwrap();
    let mut clf = Classifier::new(ctx, &w, w.input_scale, 4).unwrap();
    let preds = clf.classify(ctx, &images.images).unwrap();
    let mut predicted = vec![0u64; 10];
    let (mut confidence, mut kept) = (0f64, 0usize);
    for p in &preds {
        predicted[p.class] += 1;
        confidence += p.probs[p.class] as f64;
        kept += (p.probs[p.class] as f64 >= threshold) as usize;
    }
    assert_eq!(tgt.predicted, predicted);
    assert!(
        (tgt.mean_confidence - confidence / 12.0).abs() < 1e-4,
        "{} vs {}",
        tgt.mean_confidence,
        confidence / 12.0
    );
    assert_eq!(tgt.mask_rate, Some(kept as f64 / 12.0));

    // metrics.jsonl, config.json and the plots say which case applies.
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert_eq!(evals.len(), 2);
    for v in &evals {
        assert_eq!(v["target"]["labeled"], false, "{v}");
        assert!(v["target"].get("accuracy").is_none(), "{v}");
        assert!(v["target"]["mask_rate"]
            .as_f64()
            .is_some_and(|r| (0.0..=1.0).contains(&r)));
        assert_eq!(v["source"]["labeled"], true);
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["target_test_labeled"], false);
    assert!(dir.join("predicted.png").is_file() && !dir.join("confusion.png").exists());
}

#[test]
fn target_test_names_a_labeled_test_set_and_refuses_an_unlabeled_one() {
    let ctx = ctx();
    let (photos, labeled) = (out_dir("tt-photos"), out_dir("tt-labeled"));
    write_png_folder(&photos, 8);
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    write_class_folders(&labeled, &digits.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    let dir = out_dir("tt-run");
    let mut cfg = small("tiny");
    cfg.steps = 3;
    let mut opts = options(&dir, false, None);
    opts.target = DatasetSpec::Dir(photos.clone());
    opts.target_test = Some(DatasetSpec::Dir(labeled.clone()));
    let summary = train(ctx, cfg.clone(), &opts).unwrap();
    let (_, tgt) = summary.last_eval.unwrap();
    assert!(tgt.labeled && tgt.accuracy.is_some());
    assert_eq!(tgt.images, 10);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["target_test"], format!("dir:{}", labeled.display()));

    let dir = out_dir("tt-refused");
    let mut opts = options(&dir, false, None);
    opts.target_test = Some(DatasetSpec::Dir(photos.clone()));
    let err = format!(
        "{:#}",
        train(ctx, cfg.clone(), &opts)
            .err()
            .expect("an unlabeled --target-test is refused")
    );
    assert!(err.contains("--target-test") && err.contains("no labels"), "{err}");
    let mut opts = options(&dir, false, None);
    opts.source = DatasetSpec::Dir(photos);
    let err = format!(
        "{:#}",
        train(ctx, cfg, &opts).err().expect("an unlabeled source is refused")
    );
    assert!(err.contains("source") && err.contains("no labels"), "{err}");
}

/// Writes `per_class` synth-digits test images per class into `dir/<name>/` (image k of class c
/// is a digit c, so the classes are learnable).
fn write_class_folders(dir: &Path, names: &[&str], per_class: usize) {
    use adamatch_wgpu::data::synth::{SynthDomain, SynthStream};
    let d = SynthStream::test(SynthDomain::Digits, 5, 400).materialize(0, 400);
    let mut written = vec![0usize; names.len()];
    for i in 0..d.len() {
        let c = d.label(i).unwrap() as usize;
        if c >= names.len() || written[c] == per_class {
            continue;
        }
        let sub = dir.join(names[c]);
        std::fs::create_dir_all(&sub).unwrap();
        image::RgbImage::from_raw(32, 32, d.image(i).to_vec())
            .unwrap()
            .save(sub.join(format!("{i:03}.png")))
            .unwrap();
        written[c] += 1;
    }
    assert!(written.iter().all(|&w| w == per_class), "{written:?}");
}

#[test]
fn named_classes_set_the_head_and_reach_config_weights_and_eval() {
    use adamatch_wgpu::inference::Classifier;
    use adamatch_wgpu::train::eval::Evaluator;
    let ctx = ctx();
    let animals = out_dir("animals");
    write_class_folders(&animals, &["cat", "dog", "bird"], 6);
    let photos = out_dir("animal-photos");
    write_png_folder(&photos, 8);
    let dir = out_dir("animals-run");
    let mut cfg = small("tiny");
    cfg.steps = 3;
    let mut opts = options(&dir, false, None);
    opts.source = DatasetSpec::Dir(animals.clone());
    opts.target = DatasetSpec::Dir(photos.clone());
    let summary = train(ctx, cfg.clone(), &opts).unwrap();
    let (src, tgt) = summary.last_eval.unwrap();
    // Classes sort lexicographically; the head has one output per class.
    let names = ["bird", "cat", "dog"];
    assert_eq!(src.classes, names);
    assert_eq!(src.confusion.as_ref().unwrap().len(), 3);
    assert_eq!(tgt.predicted.len(), 3);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["classes"], serde_json::json!(names));
    assert_eq!(config["config"]["network"]["num_classes"], 3);
    let w = weights::load(&dir.join(MODEL)).unwrap();
    assert_eq!(
        (w.config.num_classes, w.classes.clone()),
        (3, names.map(String::from).to_vec())
    );

    // eval of the exported model on the same folder: the run's own numbers.
    let data = test_split(DatasetSpec::Dir(animals.clone()), 32).sample(16, 0);
    let clf = Classifier::new(ctx, &w, w.input_scale, 1).unwrap();
    let mut ev = Evaluator::new(ctx, &clf.net, 8, w.classes.clone()).unwrap();
    let r = ev.run(ctx, &clf.net, &data, w.input_scale, None, None).unwrap();
    assert_eq!(r.accuracy, src.accuracy);
    assert!(r.confusion_table().contains("bird"), "{}", r.confusion_table());

    // A labeled set with other classes is refused with the differences listed, by train and eval.
    let pets = out_dir("pets");
    write_class_folders(&pets, &["cat", "dog", "fish", "hamster"], 2);
    let mut opts = options(&out_dir("animals-mismatch"), false, None);
    opts.source = DatasetSpec::Dir(animals.clone());
    opts.target = DatasetSpec::Dir(photos.clone());
    opts.target_test = Some(DatasetSpec::Dir(pets.clone()));
    let err = format!("{:#}", train(ctx, cfg.clone(), &opts).err().expect("a class mismatch"));
    for want in [
        "--target-test",
        "lacks 'bird'",
        "'fish', 'hamster'",
        "4 classes against 3",
    ] {
        assert!(err.contains(want), "'{want}' missing from: {err}");
    }
    let pets_data = test_split(DatasetSpec::Dir(pets), 32);
    let err = eval_error(&mut ev, &clf.net, pets_data.as_dataset().unwrap(), w.input_scale);
    assert!(err.contains("lacks 'bird'"), "{err}");

    // --init refuses weights of other classes even with the same head size.
    let renamed = out_dir("animals-renamed");
    write_class_folders(&renamed, &["ant", "bee", "cow"], 6);
    let mut opts = options(&out_dir("animals-init"), false, None);
    opts.source = DatasetSpec::Dir(renamed);
    opts.target = DatasetSpec::Dir(photos);
    opts.init = Some(dir.join(MODEL));
    let err = format!("{:#}", train(ctx, cfg, &opts).err().expect("other classes"));
    assert!(err.contains("--init") && err.contains("'ant'"), "{err}");
}

#[test]
fn ssda_and_ssl_runs_train_and_record_their_setting() {
    use adamatch_wgpu::data::synth::SynthDomain;
    use adamatch_wgpu::train::run::Setting;
    let ctx = ctx();
    let mut cfg = small("tiny");
    cfg.steps = 3;

    // SSDA: one labeled image per class of the target domain (picked from its stream's pool).
    let dir = out_dir("ssda");
    let mut opts = options(&dir, false, None);
    opts.setting = Setting::Ssda {
        labeled: DatasetSpec::Synth {
            domain: SynthDomain::House,
            seed: 0,
        },
        per_class: Some(1),
    };
    let s = train(ctx, cfg.clone(), &opts).unwrap();
    assert!(s.finished);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["setting"], "ssda");
    assert_eq!(config["labeled_target_images"], 10);
    assert_eq!(config["config"]["labeled_target_batch"], cfg.batch);
    // Resuming without the labeled target images is refused.
    let mut again = options(&dir, true, None);
    again.setting = Setting::Uda;
    let err = format!("{:#}", train(ctx, cfg.clone(), &again).err().unwrap());
    assert!(err.contains("--target-labeled"), "{err}");

    // SSL: one dataset; 2 labeled images per class, all 30 as the unlabeled part, one test set.
    let digits = out_dir("ssl-digits");
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    write_class_folders(&digits, &names.iter().map(String::as_str).collect::<Vec<_>>(), 3);
    let dir = out_dir("ssl");
    let mut opts = options(&dir, false, None);
    opts.source = DatasetSpec::Dir(digits.clone());
    opts.setting = Setting::Ssl { per_class: 2 };
    let s = train(ctx, cfg.clone(), &opts).unwrap();
    let (src, tgt) = s.last_eval.unwrap();
    assert_eq!((src.images, tgt.images), (16, 16), "the same (sampled) test set");
    assert_eq!(src.accuracy, tgt.accuracy);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["setting"].as_str(), config["labels_per_class"].as_u64()),
        (Some("ssl"), Some(2))
    );

    // A pick larger than a class is an error naming the class and the flag.
    let mut opts = options(&out_dir("ssl-too-many"), false, None);
    opts.source = DatasetSpec::Dir(digits);
    opts.setting = Setting::Ssl { per_class: 4 };
    let err = format!("{:#}", train(ctx, cfg.clone(), &opts).err().unwrap());
    assert!(
        err.contains("--labels-per-class 4") && err.contains("class '0' has 3 images"),
        "{err}"
    );

    // SSDA labeled images of other classes are refused with the differences.
    let pets = out_dir("ssda-pets");
    write_class_folders(&pets, &["cat", "dog"], 2);
    let mut opts = options(&out_dir("ssda-mismatch"), false, None);
    opts.setting = Setting::Ssda {
        labeled: DatasetSpec::Dir(pets),
        per_class: None,
    };
    let err = format!("{:#}", train(ctx, cfg, &opts).err().unwrap());
    assert!(err.contains("--target-labeled") && err.contains("lacks '0'"), "{err}");
}
