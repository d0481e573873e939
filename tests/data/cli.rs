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

/// Issue 24: what an image folder deliberately leaves out is counted in `data info`.
#[test]
fn data_info_counts_what_a_folder_skips() {
    use adamatch_wgpu::data::spec::{parse_dataset_spec, skipped_summary, Split};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        image::RgbImage::new(8, 8).save(root.join(class).join("1.png")).unwrap();
    }
    std::fs::write(root.join("a/.DS_Store"), "x").unwrap();
    std::fs::write(root.join("README.txt"), "x").unwrap();
    let spec = parse_dataset_spec(&format!("dir:{}", root.display())).unwrap();
    let line = skipped_summary(&spec, Split::Train).unwrap().unwrap();
    assert!(
        line.contains("skipped 2 entries") && line.contains("README.txt"),
        "{line}"
    );
    run(cmd(&["info", &format!("dir:{}", root.display())])).unwrap();
    assert!(
        skipped_summary(&parse_dataset_spec("synth-digits").unwrap(), Split::Train)
            .unwrap()
            .is_none()
    );
}
