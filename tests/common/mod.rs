//! What the binary-driven test files share: the binary and the smallest training run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The release-like binary, with a runtime directory for the Vulkan loader.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adamatch-wgpu"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

/// A few steps of a WRN-10-1 on the built-in pair: seconds on lavapipe.
#[allow(dead_code)] // not every test file trains
pub const TINY: &[&str] = &[
    "train",
    "--preset",
    "tiny",
    "--depth",
    "10",
    "--width",
    "1",
    "--batch",
    "2",
    "--uratio",
    "2",
    "--eval-limit",
    "16",
    "--no-progress",
];

/// The tests' Python (`ADAMATCH_TEST_PYTHON`, else the `target/test-venv` that
/// `scripts/ensure-test-python.sh` makes) if it can import `modules` (e.g. "onnx, onnxruntime");
/// None otherwise, and the test then says SKIPPED.
#[allow(dead_code)] // only the tests that run Python use it
pub fn test_python(modules: &str) -> Option<PathBuf> {
    let p = std::env::var_os("ADAMATCH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}
