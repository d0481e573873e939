//! Tests of the data layer (`src/data`): loaders on fixtures the tests make or ship, the real
//! MNIST test set when `../shared/data/mnist-t10k` exists, downloads against a local HTTP server,
//! the synthetic domains, and fuzzing of the IDX and MAT parsers.

mod cli;
mod download;
mod folder;
mod fuzz;
mod idx;
mod image;
mod mat;
mod spec;
mod synth;

use std::path::PathBuf;

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The shared real MNIST test set, when present (`../shared/data/mnist-t10k` next to the
/// repository, or `$ADAMATCH_SHARED/data/mnist-t10k`).
pub fn shared_mnist_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(s) = std::env::var_os("ADAMATCH_SHARED") {
        candidates.push(PathBuf::from(s).join("data/mnist-t10k"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for up in root.ancestors().skip(1).take(3) {
        candidates.push(up.join("shared/data/mnist-t10k"));
    }
    candidates
        .into_iter()
        .find(|p| p.join("t10k-images-idx3-ubyte.gz").is_file())
}

/// Gzip-compresses bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The full error chain of a result that must be an error.
pub fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}
