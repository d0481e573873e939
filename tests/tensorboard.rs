//! The TensorBoard event file of a run (`train::tensorboard`), read back by TensorBoard's own
//! reader (`EventAccumulator`, from PyPI): every scalar of metrics.jsonl at the same steps, the
//! resolved configuration as text, and no step twice after a run killed and resumed.
//!
//! Needs a Python with tensorboard: `scripts/ensure-test-python.sh` (run by the README's test
//! command) makes `target/test-venv`; `ADAMATCH_TEST_PYTHON` names another.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use adamatch_wgpu::train::tensorboard::{read_events, EVENTS_FILE};
use common::{bin, test_python, TINY};

/// Every number of a metrics.jsonl record by path, as the README documents the tags:
/// `train/<metric>` (the `metrics` level left out) and `eval/<source|target>/<field>`.
fn expected_scalars(record: &serde_json::Value, out: &mut BTreeMap<String, Vec<(u64, f32)>>) {
    fn walk(path: String, v: &serde_json::Value, step: u64, out: &mut BTreeMap<String, Vec<(u64, f32)>>) {
        match v {
            serde_json::Value::Number(n) => out.entry(path).or_default().push((step, n.as_f64().unwrap() as f32)),
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    if k != "step" {
                        walk(format!("{path}/{k}"), v, step, out);
                    }
                }
            }
            _ => {}
        }
    }
    let step = record["step"].as_u64().unwrap();
    let kind = record["kind"].as_str().unwrap();
    for (k, v) in record.as_object().unwrap() {
        match k.as_str() {
            "step" | "kind" => {}
            "metrics" => walk(kind.to_string(), v, step, out),
            _ => walk(format!("{kind}/{k}"), v, step, out),
        }
    }
}

const RUN_FLAGS: &[&str] = &[
    "--image-size",
    "16",
    "--steps",
    "8",
    "--log-every",
    "1",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "4",
];

#[test]
fn tensorboard_reads_every_scalar_of_metrics_jsonl_and_a_resumed_run_logs_no_step_twice() {
    let Some(py) = test_python("tensorboard") else {
        eprintln!(
            "SKIPPED tensorboard_reads_every_scalar_of_metrics_jsonl: no Python with tensorboard \
             (run scripts/ensure-test-python.sh, or set ADAMATCH_TEST_PYTHON)"
        );
        return;
    };
    let root = std::env::temp_dir().join(format!("adamatch-tensorboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("run");
    // Stopped in its sixth step, after the checkpoint of step 4 and the events of step 5.
    let o = bin()
        .args(TINY)
        .args(RUN_FLAGS)
        .arg("--out")
        .arg(&dir)
        .env("ADAMATCH_FAULT", "step:6")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the fault stops the run");
    let before: Vec<i64> = read_events(&dir.join(EVENTS_FILE))
        .unwrap()
        .iter()
        .map(|e| e.step)
        .collect();
    assert!(before.contains(&5), "the killed run logged step 5: {before:?}");
    let o = bin()
        .args(TINY)
        .args(RUN_FLAGS)
        .arg("--out")
        .arg(&dir)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let out = root.join("events.json");
    let r = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard/read_events.py"))
        .arg(&dir)
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let mut got: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
    for (tag, points) in read["scalars"].as_object().unwrap() {
        for p in points.as_array().unwrap() {
            got.entry(tag.clone())
                .or_default()
                .push((p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32));
        }
    }
    let mut want = BTreeMap::new();
    for line in std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines() {
        expected_scalars(&serde_json::from_str(line).unwrap(), &mut want);
    }
    assert!(want.contains_key("train/total_loss") && want.contains_key("eval/source/accuracy"));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same tags as metrics.jsonl's numbers"
    );
    for (tag, points) in &want {
        assert_eq!(&got[tag], points, "{tag}: every step once, the same values");
    }
    assert_eq!(
        got["train/total_loss"].iter().map(|p| p.0).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let text = read["text"]["config"].as_str().unwrap();
    assert!(text.contains(config.trim()), "the configuration as text: {text}");
    std::fs::remove_dir_all(&root).unwrap();
}
