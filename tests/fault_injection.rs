//! Issue 24's fault injection: a training process ended without a chance to clean up at 20
//! seeded random moments (SIGKILL at a random time while it starts, trains, evaluates, writes
//! checkpoints, exports; or an abort at a seeded fault point, `ADAMATCH_FAULT`, such as a
//! checkpoint's temporary copy written and not yet renamed) and resumed each time ends with the
//! files of an uninterrupted run, byte for byte, and no temporary file left.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

mod common;
use adamatch_wgpu::train::tensorboard::{read_events, EVENTS_FILE};
use common::{bin, TINY};

/// A WRN-10-1 run on the built-in pair at 16 px (seconds on lavapipe) with a checkpoint every 2 steps and an evaluation every 4.
const RUN_FLAGS: &[&str] = &[
    "--bn-calibration",
    "2",
    "--image-size",
    "16",
    "--steps",
    "16",
    "--log-every",
    "1",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "2",
];

/// The run's files, with the wall-clock fields (images/s, the events' times) taken out.
fn run_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let mut bytes = std::fs::read(e.path()).unwrap();
        if name == EVENTS_FILE {
            // Without the wall clock: each event's step, tags and values but images/s.
            let events = read_events(&e.path()).unwrap();
            let lines: Vec<String> = events
                .into_iter()
                .map(|mut ev| {
                    ev.wall_time = 0.0;
                    if let Some(s) = &mut ev.summary {
                        s.value.retain(|v| v.tag != "train/images_per_s");
                    }
                    format!("{ev:?}")
                })
                .collect();
            bytes = lines.join("\n").into_bytes();
        }
        if name == "metrics.jsonl" {
            let lines: Vec<String> = String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v.as_object_mut().unwrap().remove("images_per_s");
                    v.to_string()
                })
                .collect();
            bytes = lines.join("\n").into_bytes();
        }
        files.insert(name, bytes);
    }
    files
}

/// A seeded generator (SplitMix64) for the kill moments.
struct Moments(u64);

impl Moments {
    fn next_fraction(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

#[test]
fn a_run_killed_at_20_random_moments_ends_byte_identical_to_a_straight_one() {
    let root = std::env::temp_dir().join(format!("adamatch-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (straight, killed) = (root.join("straight"), root.join("killed"));
    let t = Instant::now();
    let o = bin()
        .args(TINY)
        .args(RUN_FLAGS)
        .arg("--out")
        .arg(&straight)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = t.elapsed();

    // The fault points a timed kill rarely hits (a checkpoint's temporary copy written and not
    // yet renamed lasts milliseconds): each with the largest count one invocation reaches, taken
    // in turn (those of the training loop first, while the run has steps left).
    let points: &[(&str, u64)] = &[
        ("write:checkpoint.safetensors", 4),
        ("step", 8),
        ("eval", 2),
        ("write:config.json", 1),
        ("write:model.safetensors", 1),
        ("write:loss.png", 1),
        ("export", 1),
    ];
    let mut moments = Moments(24);
    let mut log = Vec::new();
    let mut faults = 0;
    for attempt in 0.. {
        if faults == 20 {
            break;
        }
        let mut cmd = bin();
        cmd.args(TINY).args(RUN_FLAGS).arg("--out").arg(&killed);
        if killed.join("checkpoint.safetensors").exists() {
            cmd.arg("--resume");
        } else if killed.exists() {
            // Killed before its first checkpoint: the run starts again.
            cmd.arg("--overwrite");
        }
        // Every other fault a SIGKILL at a moment up to the straight run's time (start-up,
        // training, evaluation, checkpoint writing, the export), else an abort at the next fault
        // point.
        let (delay, fault) = if attempt % 2 == 0 {
            (Some(whole.mul_f64(moments.next_fraction())), None)
        } else {
            let (point, most) = points[(attempt / 2) % points.len()];
            let n = 1 + (moments.next_fraction() * most as f64) as u64 % most;
            cmd.env("ADAMATCH_FAULT", format!("{point}:{n}"));
            (None, Some(format!("{point}:{n}")))
        };
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        if let Some(d) = delay {
            std::thread::sleep(d);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                faults += 1;
                log.push(format!("killed at {d:?}"));
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            log.push(format!(
                "finished before {}",
                fault.clone().unwrap_or_else(|| format!("{delay:?}"))
            ));
        } else {
            use std::os::unix::process::ExitStatusExt;
            assert!(
                fault.is_some() && out.status.signal() == Some(6),
                "an attempt failed after {log:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            faults += 1;
            log.push(format!("aborted at {}", fault.unwrap_or_default()));
        }
    }
    let o = bin()
        .args(TINY)
        .args(RUN_FLAGS)
        .arg("--out")
        .arg(&killed)
        .arg(if killed.join("checkpoint.safetensors").exists() {
            "--resume"
        } else {
            "--overwrite"
        })
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the last resume: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    eprintln!("{} attempts over a {whole:?} run: {}", log.len(), log.join(", "));
    let (a, b) = (run_files(&straight), run_files(&killed));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "other files (temporaries?) after {log:?}"
    );
    for (name, bytes) in &a {
        assert!(
            *bytes == b[name],
            "{name} differs from the straight run's after {log:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
