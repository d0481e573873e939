//! Image folders: labeled (`DIR/<class>/*.png`, one subfolder per class, any names) and
//! unlabeled (image files directly in `DIR`, or anywhere under it for `images:DIR`). Any size is accepted; every image goes through
//! [`super::image::resize_and_pad`] to the side asked for (32 unless `train --image-size`).
//! The format is detected from the content, so a misnamed file still loads; files are decoded
//! in parallel, in a deterministic (sorted) order.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::image::resize_and_pad;
use super::{image_bytes, Dataset, Label};

/// Deepest folder nesting followed; deeper is an error naming the folder (never a silent drop).
pub const MAX_DEPTH: usize = 64;

/// File extensions decoded as images (case-insensitive); the format itself is read from the
/// content.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"];

/// Folders of version control, notebooks, archivers and file managers: never classes or images,
/// skipped and counted.
pub const TOOL_FOLDERS: &[&str] = &[
    ".git",
    ".svn",
    ".hg",
    ".ipynb_checkpoints",
    "__MACOSX",
    ".Trash",
    ".Trashes",
    ".thumbnails",
    ".Spotlight-V100",
    ".fseventsd",
];

fn is_image_name(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // `._x.png`: macOS AppleDouble metadata beside x.png, not an image.
    !name.starts_with("._")
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_tool_folder(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| TOOL_FOLDERS.contains(&n))
}

/// What a folder tree holds: its image files and what was deliberately left out (files that are
/// not images, tool folders), both sorted.
#[derive(Debug, Default)]
pub struct FolderScan {
    pub images: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
}

impl FolderScan {
    /// A line for the user: how many files and folders were skipped, with a few names.
    pub fn skipped_summary(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let names: Vec<String> = self
            .skipped
            .iter()
            .take(4)
            .map(|p| crate::console::printable_path(p))
            .collect();
        let more = self.skipped.len().saturating_sub(names.len());
        Some(format!(
            "skipped {} entr{} that are not images or are tool folders ({}{})",
            self.skipped.len(),
            if self.skipped.len() == 1 { "y" } else { "ies" },
            names.join(", "),
            if more > 0 {
                format!(", and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

/// Every image file under `dir`, recursively, following symbolic links to folders (a link
/// leading back to one of its own ancestors is an error, as is nesting beyond [`MAX_DEPTH`]);
/// other files and tool folders are counted in `skipped`. An entry that cannot be read (a
/// dangling link) is an error naming it.
pub fn scan(dir: &Path) -> Result<FolderScan> {
    fn walk(dir: &Path, depth: usize, ancestors: &mut Vec<PathBuf>, out: &mut FolderScan) -> Result<()> {
        let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
        for entry in rd {
            let entry = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path)
                .with_context(|| format!("{}: cannot read (a broken symbolic link?)", path.display()))?;
            if meta.is_dir() {
                if is_tool_folder(&path) {
                    out.skipped.push(path);
                    continue;
                }
                let real = path
                    .canonicalize()
                    .with_context(|| format!("{}: cannot resolve", path.display()))?;
                if ancestors.contains(&real) {
                    bail!(
                        "{}: a symbolic link loop (it leads back to {}, which holds it)",
                        path.display(),
                        real.display()
                    );
                }
                if depth >= MAX_DEPTH {
                    bail!(
                        "{}: folders nested more than {MAX_DEPTH} deep; move the images up",
                        path.display()
                    );
                }
                ancestors.push(real);
                walk(&path, depth + 1, ancestors, out)?;
                ancestors.pop();
            } else if meta.is_file() && is_image_name(&path) {
                out.images.push(path);
            } else {
                out.skipped.push(path);
            }
        }
        Ok(())
    }
    let mut out = FolderScan::default();
    let root = dir
        .canonicalize()
        .with_context(|| format!("{}: cannot read folder", dir.display()))?;
    walk(dir, 0, &mut vec![root], &mut out)?;
    out.images.sort();
    out.skipped.sort();
    Ok(out)
}

/// All image files under `dir`, recursively, sorted (see [`scan`]).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(scan(dir)?.images)
}

/// Decodes one image file (format from its content) and fits it into `side` x `side` x 3.
pub fn load_image_file(path: &Path, side: usize) -> Result<Vec<u8>> {
    let reader = ::image::ImageReader::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let img = super::image::decode_upright(reader).map_err(|e| {
        anyhow!(
            "{}: not a readable image ({}): {e}",
            path.display(),
            IMAGE_EXTENSIONS.join(", ")
        )
    })?;
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
        let path = entry.path();
        // Symbolic links to folders are class folders too.
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("{}: cannot read (a broken symbolic link?)", path.display()))?;
        let name = entry.file_name();
        if meta.is_dir() {
            let Some(name) = name.to_str() else {
                bail!("{}: a class folder name is not valid UTF-8", path.display());
            };
            if !is_tool_folder(&path) {
                subfolders.push(name.to_string());
            }
        } else if meta.is_file() && is_image_name(&path) {
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
            "{}: class folder '{name}' holds no image (every subfolder of a labeled folder is a class)",
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

/// Loads a labeled folder `DIR/<class>/...` (image files, searched recursively in each class
/// folder) with the subfolder names as classes (see [`layout`]). Errors on an unlabeled or
/// ambiguous folder, an empty class folder, fewer than 2 or more than 1000 classes, or an
/// unreadable image. Images are fitted into `side` x `side`.
pub fn load_labeled_dir(dir: &Path, side: usize) -> Result<Dataset> {
    let classes = match layout(dir)? {
        FolderLayout::Labeled(c) => c,
        FolderLayout::Unlabeled => bail!("{}: no class subfolders holding images", dir.display()),
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

/// Loads every image under `dir` (recursively, sorted by path) without labels, fitted into
/// `side` x `side`.
pub fn load_unlabeled_dir(dir: &Path, side: usize) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let paths = list_images(dir)?;
    if paths.is_empty() {
        bail!("{}: no images found ({})", dir.display(), IMAGE_EXTENSIONS.join(", "));
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
