//! What the binary-driven test files share: the binary and the smallest training run.

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
