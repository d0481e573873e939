//! Files written so that a crash never leaves half of one under its final name.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file under the final name.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|_| {
            crate::fault::point(&format!(
                "write:{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("")
            ));
            std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        // A full disk must not stay full of our half-written file.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
