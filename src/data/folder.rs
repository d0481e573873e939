//! Image folders: labeled (`DIR/<class>/*.png`, one subfolder per class, any names) and
//! unlabeled (PNG/JPEG files directly in `DIR`, or anywhere under it for `images:DIR`). Any size is accepted; every image goes through
//! [`super::image::resize_and_pad`] to the side asked for (32 unless `train --image-size`).
//! The format is detected from the content, so a misnamed file still loads; files are decoded
//! in parallel, in a deterministic (sorted) order.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::image::resize_and_pad;
use super::{image_bytes, Dataset, Label};

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

/// Decodes one image file (format from its content) and fits it into `side` x `side` x 3.
pub fn load_image_file(path: &Path, side: usize) -> Result<Vec<u8>> {
    let img = ::image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .map_err(|e| anyhow!("{}: not a readable PNG/JPEG image: {e}", path.display()))?;
    Ok(resize_and_pad(&img, side))
}

/// Decodes `paths` in parallel (one chunk per core) into NHWC bytes; the first failing file in
/// order is the error.
fn decode_all(paths: &[PathBuf], side: usize) -> Result<Vec<u8>> {
    let b = image_bytes(side);
    let mut out = vec![0u8; paths.len() * b];
    let per = paths.len().div_ceil(super::worker_count(paths.len(), 16)).max(1);
    let results = super::par_chunks_mut(&mut out, per * b, |c, dst| -> Result<()> {
        for (p, d) in paths[c * per..].iter().zip(dst.chunks_exact_mut(b)) {
            d.copy_from_slice(&load_image_file(p, side)?);
        }
        Ok(())
    });
    results.into_iter().collect::<Result<()>>()?;
    Ok(out)
}

/// What a folder holds: images in class subfolders (labeled), or images anywhere under it with no
/// class subfolders (unlabeled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FolderLayout {
    /// `DIR/<class>/...`: the subfolder names, sorted as [`super::sort_class_names`] does.
    Labeled(Vec<String>),
    /// Images directly in `DIR` (and maybe deeper).
    Unlabeled,
}

/// Reads a folder's layout: labeled when every image lies in a subfolder and there is one, the
/// subfolders then being the classes; unlabeled when images lie directly in it and it has no
/// subfolder holding images. Images both directly in it and in subfolders are ambiguous: an error
/// that says how to read the folder either way. A class subfolder without images is an error
/// naming it (never a silently absent class).
pub fn layout(dir: &Path) -> Result<FolderLayout> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let (mut subfolders, mut top_images) = (Vec::new(), Vec::new());
    for entry in rd {
        let entry = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?;
        let ft = entry
            .file_type()
            .with_context(|| format!("{}: cannot stat", entry.path().display()))?;
        let name = entry.file_name();
        if ft.is_dir() {
            let Some(name) = name.to_str() else {
                bail!("{}: a class folder name is not valid UTF-8", entry.path().display());
            };
            if !name.starts_with('.') {
                subfolders.push(name.to_string());
            }
        } else if is_image_name(&entry.path()) {
            top_images.push(entry.path());
        }
    }
    if subfolders.is_empty() {
        return Ok(FolderLayout::Unlabeled);
    }
    let mut with_images = Vec::new();
    let mut empty = Vec::new();
    for name in &subfolders {
        if list_images(&dir.join(name))?.is_empty() {
            empty.push(name.clone());
        } else {
            with_images.push(name.clone());
        }
    }
    if with_images.is_empty() {
        return Ok(FolderLayout::Unlabeled);
    }
    if let Some(image) = top_images.first() {
        bail!(
            "{}: images both directly in the folder ({}) and in subfolders ('{}'): a labeled folder \
             keeps each image in its class's subfolder; to use every image without labels, move them \
             into one folder or name the folder as images:{}",
            dir.display(),
            image.display(),
            with_images[0],
            dir.display()
        );
    }
    if let Some(name) = empty.first() {
        bail!(
            "{}: class folder '{name}' holds no PNG/JPEG image (every subfolder of a labeled folder is a class)",
            dir.display()
        );
    }
    if with_images.len() > super::MAX_CLASSES {
        bail!(
            "{}: {} class folders; at most {} classes are supported",
            dir.display(),
            with_images.len(),
            super::MAX_CLASSES
        );
    }
    super::sort_class_names(&mut with_images);
    Ok(FolderLayout::Labeled(with_images))
}

/// Whether `dir` is a labeled folder (class subfolders holding images).
pub fn is_labeled_dir(dir: &Path) -> bool {
    matches!(layout(dir), Ok(FolderLayout::Labeled(_)))
}

/// Loads a labeled folder `DIR/<class>/...` (PNG/JPEG files, searched recursively in each class
/// folder) with the subfolder names as classes (see [`layout`]). Errors on an unlabeled or
/// ambiguous folder, an empty class folder, fewer than 2 or more than 1000 classes, or an
/// unreadable image. Images are fitted into `side` x `side`.
pub fn load_labeled_dir(dir: &Path, side: usize) -> Result<Dataset> {
    let classes = match layout(dir)? {
        FolderLayout::Labeled(c) => c,
        FolderLayout::Unlabeled => bail!("{}: no class subfolders holding PNG/JPEG images", dir.display()),
    };
    let mut paths = Vec::new();
    let mut labels = Vec::new();
    for (k, class) in classes.iter().enumerate() {
        let files = list_images(&dir.join(class))?;
        labels.extend(std::iter::repeat_n(k as Label, files.len()));
        paths.extend(files);
    }
    let images = decode_all(&paths, side)?;
    Dataset::sized(images, side, Some(labels), classes, dir.display().to_string())
}

/// Loads every PNG/JPEG under `dir` (recursively, sorted by path) without labels, fitted into
/// `side` x `side`.
pub fn load_unlabeled_dir(dir: &Path, side: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let paths = list_images(dir)?;
    if paths.is_empty() {
        bail!("{}: no PNG/JPEG images found", dir.display());
    }
    let images = decode_all(&paths, side)?;
    Dataset::sized(images, side, None, Vec::new(), dir.display().to_string())
}

/// Loads a folder: labeled when it has class subfolders, unlabeled otherwise (see [`layout`]).
pub fn load_dir(dir: &Path, side: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    match layout(dir)? {
        FolderLayout::Labeled(_) => load_labeled_dir(dir, side),
        FolderLayout::Unlabeled => load_unlabeled_dir(dir, side),
    }
}
