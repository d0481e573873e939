//! The `data` subcommands through clap, as `main.rs` wires them.

use adamatch_wgpu::data::cli::{run, DataCommand};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: DataCommand,
}

fn cmd(args: &[&str]) -> DataCommand {
    let mut v = vec!["adamatch-wgpu"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).unwrap().cmd
}

#[test]
fn preview_writes_a_labeled_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/grid.png");
    let o = out.to_str().unwrap();
    run(cmd(&[
        "preview",
        "synth-house",
        "--out",
        o,
        "--count",
        "12",
        "--cols",
        "4",
    ]))
    .unwrap();
    let img = image::open(&out).unwrap();
    // 4 columns x 3 rows of 96 px tiles, 2 px gaps, a 21 px label strip per row.
    assert_eq!((img.width(), img.height()), (4 * 98 + 2, 3 * (96 + 21 + 2) + 2));
    // The test split of a synthetic set, with a seeded selection; unknown names fail.
    run(cmd(&[
        "preview",
        "synth-digits",
        "--split",
        "test",
        "--out",
        o,
        "--seed",
        "3",
    ]))
    .unwrap();
    let msg = format!("{:#}", run(cmd(&["preview", "nonsense", "--out", o])).unwrap_err());
    assert!(msg.contains("unknown dataset 'nonsense'"), "{msg}");
}

#[test]
fn info_and_check_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    run(cmd(&[
        "info",
        "synth-digits",
        "--stream-samples",
        "200",
        "--data-dir",
        d,
    ]))
    .unwrap();
    run(cmd(&[
        "info",
        crate::fixture("svhn_small.mat").to_str().unwrap(),
        "--split",
        "test",
    ]))
    .unwrap();
    // Nothing cached: listing everything is fine, asking for mnist explicitly fails.
    run(cmd(&["check", "--data-dir", d])).unwrap();
    assert!(run(cmd(&["check", "mnist", "--data-dir", d])).is_err());
    // A corrupt cached file fails the check.
    std::fs::create_dir_all(dir.path().join("svhn")).unwrap();
    std::fs::write(dir.path().join("svhn/test_32x32.mat"), b"garbage").unwrap();
    let msg = format!("{:#}", run(cmd(&["check", "--data-dir", d])).unwrap_err());
    assert!(msg.contains("1 bad"), "{msg}");
}
