//! Image folders: labeled (`DIR/0/*.png ... DIR/9/*.jpg`) and unlabeled (any PNG/JPEG under
//! `DIR`). Any size is accepted; every image goes through [`super::image::resize_and_pad`].
//! The format is detected from the content, so a misnamed file still loads; files are decoded
//! in parallel, in a deterministic (sorted) order.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::image::resize_and_pad;
use super::{Dataset, IMAGE_BYTES, NUM_CLASSES};

/// Deepest folder nesting searched (guards against pathological trees).
const MAX_DEPTH: usize = 32;

fn is_image_name(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// All PNG/JPEG files (by extension, case-insensitive) under `dir`, recursively, sorted.
/// Symbolic links to folders are not followed.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
        for entry in rd {
            let entry = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?;
            let path = entry.path();
            let ft = entry
                .file_type()
                .with_context(|| format!("{}: cannot stat", path.display()))?;
            if ft.is_dir() {
                if depth < MAX_DEPTH {
                    walk(&path, depth + 1, out)?;
                }
            } else if is_image_name(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    out.sort();
    Ok(out)
}

/// Decodes one image file (format from its content) and resizes it to 32x32x3.
pub fn load_image_file(path: &Path) -> Result<[u8; IMAGE_BYTES]> {
    let img = ::image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .map_err(|e| anyhow!("{}: not a readable PNG/JPEG image: {e}", path.display()))?;
    Ok(resize_and_pad(&img))
}

/// Decodes `paths` in parallel (one chunk per core) into NHWC bytes; the first failing file in
/// order is the error.
fn decode_all(paths: &[PathBuf]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; paths.len() * IMAGE_BYTES];
    let per = paths.len().div_ceil(super::worker_count(paths.len(), 16)).max(1);
    let results = super::par_chunks_mut(&mut out, per * IMAGE_BYTES, |c, dst| -> Result<()> {
        for (p, d) in paths[c * per..].iter().zip(dst.chunks_exact_mut(IMAGE_BYTES)) {
            d.copy_from_slice(&load_image_file(p)?);
        }
        Ok(())
    });
    results.into_iter().collect::<Result<()>>()?;
    Ok(out)
}

/// Whether `dir` has at least one label sub-folder `0`..`9`.
pub fn is_labeled_dir(dir: &Path) -> bool {
    (0..NUM_CLASSES).any(|d| dir.join(d.to_string()).is_dir())
}

/// Loads `DIR/0/..` to `DIR/9/..` (PNG/JPEG files, searched recursively in each label folder)
/// with the folder name as label. Missing label folders are allowed (a class may be absent);
/// other entries of `DIR` are ignored. Errors on an empty result or an unreadable image.
pub fn load_labeled_dir(dir: &Path) -> Result<Dataset> {
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for d in 0..NUM_CLASSES {
        let sub = dir.join(d.to_string());
        if !sub.is_dir() {
            continue;
        }
        let files = list_images(&sub)?;
        labels.extend(std::iter::repeat_n(d as u8, files.len()));
        paths.extend(files);
    }
    if paths.is_empty() {
        bail!("{}: no PNG/JPEG images in label folders 0..9", dir.display());
    }
    let images = decode_all(&paths)?;
    Dataset::new(images, Some(labels), dir.display().to_string())
}

/// Loads every PNG/JPEG under `dir` (recursively, sorted by path) without labels.
pub fn load_unlabeled_dir(dir: &Path) -> Result<Dataset> {
    let paths = list_images(dir)?;
    if paths.is_empty() {
        bail!("{}: no PNG/JPEG images found", dir.display());
    }
    let images = decode_all(&paths)?;
    Dataset::new(images, None, dir.display().to_string())
}

/// Loads a folder: labeled when it has label sub-folders `0`..`9`, unlabeled otherwise.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    if is_labeled_dir(dir) {
        load_labeled_dir(dir)
    } else {
        load_unlabeled_dir(dir)
    }
}
