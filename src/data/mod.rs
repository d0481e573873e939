//! The data layer: loaders, the built-in synthetic domain pair, downloads and the `data` CLI.
//!
//! Everything here works on the host in `u8`: a [`Dataset`] holds N images of 32x32x3 bytes in
//! NHWC order (RGB interleaved) plus optional labels, indices into its class list (`0`..`9` for
//! the digit datasets; a labeled image folder's subfolder names). Float conversion and normalisation
//! happen on the GPU. Training draws samples through [`ImageSource`], which covers both finite
//! datasets and the infinite procedural streams of [`synth`].
//!
//! Modules:
//! - [`image`]: Pillow-compatible resize-and-pad to 32x32 (shared with `predict` and the web build).
//! - [`idx`]: MNIST IDX files (gzipped or raw).
//! - [`mat`]: a minimal MATLAB v5 reader for the SVHN `.mat` files.
//! - [`folder`]: labeled (`DIR/<class>/`) and unlabeled image folders.
//! - [`synth`]: `synth-digits` / `synth-house`, generated from (seed, index).
//! - [`spec`]: dataset names and paths, splits, [`spec::load`].
//! - [`preview`]: sample grids with labels.
//! - `download` and `cli` (native only): the cache, checksummed downloads, `data ...` commands.

pub mod folder;
pub mod idx;
pub mod image;
pub mod mat;
pub mod preview;
pub mod spec;
pub mod synth;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod download;

pub use spec::{load, load_sized, parse_dataset_spec, DatasetSpec, Split};

use anyhow::{bail, Result};

/// Side of a network input image in pixels unless `train --image-size` says otherwise; the side
/// MNIST (padded), SVHN and the built-in pair are made at.
pub const IMAGE_SIZE: usize = 32;
/// Channels of a network input image (RGB).
pub const CHANNELS: usize = 3;
/// Bytes of one 32x32x3 image.
pub const IMAGE_BYTES: usize = IMAGE_SIZE * IMAGE_SIZE * CHANNELS;
/// The image sides training accepts: [`MIN_IMAGE_SIZE`] to [`MAX_TRAIN_IMAGE_SIZE`] in steps of
/// [`IMAGE_SIZE_STEP`].
pub const MIN_IMAGE_SIZE: usize = 16;
/// See [`MIN_IMAGE_SIZE`].
pub const MAX_TRAIN_IMAGE_SIZE: usize = 128;
/// A side that is a multiple of 8 makes every image of a batch start on a 256-byte boundary
/// (`8 * 8 * 3` f32 values are 768 bytes), the storage binding alignment most GPUs ask for.
pub const IMAGE_SIZE_STEP: usize = 8;

/// Bytes of one `size` x `size` x 3 image.
pub const fn image_bytes(size: usize) -> usize {
    size * size * CHANNELS
}

/// Refuses an image side training cannot use, naming the flag and the allowed values.
pub fn check_image_size(size: usize) -> Result<()> {
    if !(MIN_IMAGE_SIZE..=MAX_TRAIN_IMAGE_SIZE).contains(&size) || !size.is_multiple_of(IMAGE_SIZE_STEP) {
        bail!(
            "--image-size {size}: the side must be a multiple of {IMAGE_SIZE_STEP} from {MIN_IMAGE_SIZE} to \
             {MAX_TRAIN_IMAGE_SIZE} ({MIN_IMAGE_SIZE}, {}, ..., {MAX_TRAIN_IMAGE_SIZE})",
            MIN_IMAGE_SIZE + IMAGE_SIZE_STEP
        );
    }
    Ok(())
}
/// Number of classes of the digit datasets (MNIST, SVHN, the built-in pair): `0`..`9`.
pub const NUM_CLASSES: usize = 10;
/// The fewest classes a labeled dataset may have.
pub const MIN_CLASSES: usize = 2;
/// The most classes a labeled dataset may have.
pub const MAX_CLASSES: usize = 1000;

/// A class index into a dataset's class list.
pub type Label = u16;

/// The class names of the digit datasets: `"0"` to `"9"`.
pub fn digit_classes() -> Vec<String> {
    (0..NUM_CLASSES).map(|d| d.to_string()).collect()
}

/// Class names in the order their indices take: numerically when every name is a number
/// (`2 < 10`), otherwise lexicographically (by bytes).
pub fn sort_class_names(names: &mut [String]) {
    let numeric = |s: &str| !s.is_empty() && s.len() <= 30 && s.bytes().all(|b| b.is_ascii_digit());
    if names.iter().all(|n| numeric(n)) {
        names.sort_by(|a, b| {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        });
    } else {
        names.sort();
    }
}

/// An error listing how two class lists differ, or Ok when they are the same (names and order).
pub fn check_same_classes(what: &str, classes: &[String], reference_name: &str, reference: &[String]) -> Result<()> {
    if classes == reference {
        return Ok(());
    }
    let missing: Vec<&str> = reference
        .iter()
        .filter(|c| !classes.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = classes
        .iter()
        .filter(|c| !reference.contains(c))
        .map(String::as_str)
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("lacks {}", list_names(&missing)));
    }
    if !extra.is_empty() {
        why.push(format!("has {} that {reference_name} has not", list_names(&extra)));
    }
    if why.is_empty() {
        why.push(format!(
            "orders them differently ({} against {})",
            list_names(&classes.iter().map(String::as_str).collect::<Vec<_>>()),
            list_names(&reference.iter().map(String::as_str).collect::<Vec<_>>())
        ));
    }
    bail!(
        "{what} does not have the classes of {reference_name}: it {} ({} classes against {})",
        why.join(" and "),
        classes.len(),
        reference.len()
    )
}

/// Up to 12 names quoted, then a count of the rest.
fn list_names(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(12).map(|n| format!("'{n}'")).collect();
    let more = names.len().saturating_sub(12);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// How 28x28 MNIST digits become 32x32 network inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Preprocess {
    /// Paper: zero-pad 2 pixels on each side (images up to 32x32 are centred with zero padding).
    #[default]
    Pad,
    /// Keras example: Pillow bilinear resize keeping the aspect ratio, centred zero padding.
    Resize,
}

/// A finite set of square `size` x `size` x 3 `u8` images (NHWC) with optional labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// `len() * image_bytes(size)` bytes: image i is the i-th run of `image_bytes(size)`, rows,
    /// then columns, then RGB.
    pub images: Vec<u8>,
    /// Side of every image in pixels ([`IMAGE_SIZE`] unless resized).
    pub size: usize,
    /// One class index per image, or None for unlabeled data.
    pub labels: Option<Vec<Label>>,
    /// The class names the labels index (empty for unlabeled data).
    pub classes: Vec<String>,
    /// Where the data came from (file, folder or generator), for messages.
    pub name: String,
}

impl Default for Dataset {
    fn default() -> Self {
        Dataset {
            images: Vec::new(),
            size: IMAGE_SIZE,
            labels: None,
            classes: Vec::new(),
            name: String::new(),
        }
    }
}

impl Dataset {
    /// Builds a dataset of the digit classes `0`..`9` (see [`Dataset::with_classes`]).
    pub fn new(images: Vec<u8>, labels: Option<Vec<Label>>, name: impl Into<String>) -> Result<Self> {
        let classes = if labels.is_some() { digit_classes() } else { Vec::new() };
        Dataset::with_classes(images, labels, classes, name)
    }

    /// Builds a dataset of 32x32 images (see [`Dataset::sized`]).
    pub fn with_classes(
        images: Vec<u8>,
        labels: Option<Vec<Label>>,
        classes: Vec<String>,
        name: impl Into<String>,
    ) -> Result<Self> {
        Dataset::sized(images, IMAGE_SIZE, labels, classes, name)
    }

    /// Builds a dataset, checking that `images` holds a whole number of `size` x `size` x 3
    /// images, that the labels (if any) match the image count and index `classes`, and that a
    /// labeled dataset has [`MIN_CLASSES`] to [`MAX_CLASSES`] distinct classes.
    pub fn sized(
        images: Vec<u8>,
        size: usize,
        labels: Option<Vec<Label>>,
        classes: Vec<String>,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        let bytes = image_bytes(size);
        if size == 0 || !images.len().is_multiple_of(bytes) {
            bail!(
                "{name}: {} image bytes is not a multiple of {size}*{size}*3",
                images.len()
            );
        }
        let n = images.len() / bytes;
        match &labels {
            Some(l) => {
                if l.len() != n {
                    bail!("{name}: {n} images but {} labels", l.len());
                }
                if !(MIN_CLASSES..=MAX_CLASSES).contains(&classes.len()) {
                    bail!(
                        "{name}: {} classes; a labeled dataset has {MIN_CLASSES} to {MAX_CLASSES}",
                        classes.len()
                    );
                }
                let mut sorted = classes.clone();
                sorted.sort();
                if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                    bail!("{name}: class '{}' appears twice", w[0]);
                }
                if let Some((i, &v)) = l.iter().enumerate().find(|(_, &v)| v as usize >= classes.len()) {
                    bail!(
                        "{name}: label {v} at index {i} is out of range 0..={}",
                        classes.len() - 1
                    );
                }
            }
            None if !classes.is_empty() => bail!("{name}: class names without labels"),
            None => {}
        }
        Ok(Dataset {
            images,
            size,
            labels,
            classes,
            name,
        })
    }

    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        image_bytes(self.size)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / self.image_bytes()
    }

    /// True when the dataset holds no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// The bytes of image `i` (`size` x `size` x 3, NHWC). Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.images[i * b..(i + 1) * b]
    }

    /// The same images at side `size`: PIL's bilinear resize (antialiased when shrinking) of
    /// every image; the dataset itself when it already has that side.
    pub fn resized(self, size: usize) -> Dataset {
        if size == self.size {
            return self;
        }
        let resizer = image::Resizer::new(self.size, self.size, size, size, CHANNELS);
        let (from, to) = (self.image_bytes(), image_bytes(size));
        let mut images = vec![0u8; self.len() * to];
        let per = 256;
        par_chunks_mut(&mut images, per * to, |c, dst| {
            let mut scratch = Vec::new();
            for (k, d) in dst.chunks_exact_mut(to).enumerate() {
                let i = c * per + k;
                resizer.resize_with_scratch(&self.images[i * from..(i + 1) * from], d, &mut scratch);
            }
        });
        Dataset { images, size, ..self }
    }

    /// The label of image `i`, or None for unlabeled data. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> Option<Label> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// Count of each class (in the order of `classes`), or None for unlabeled data.
    pub fn histogram(&self) -> Option<Vec<usize>> {
        self.labels.as_ref().map(|l| {
            let mut h = vec![0usize; self.classes.len()];
            for &v in l {
                h[v as usize] += 1;
            }
            h
        })
    }

    /// A seeded pick of `per_class` images of every class (the labeled part of a semi-supervised
    /// setting), in the dataset's order. Errors on unlabeled data and name any class with fewer
    /// images than asked.
    pub fn labeled_subset(&self, per_class: usize, seed: u64) -> Result<Dataset> {
        let Some(labels) = &self.labels else {
            bail!("{}: has no labels to pick labeled images from", self.name);
        };
        if per_class == 0 {
            bail!("{}: at least one labeled image per class is needed", self.name);
        }
        let mut by_class = vec![Vec::new(); self.classes.len()];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let mut rng = synth::Rng::new(seed ^ 0x6c61_6265_6c73);
        let mut keep = Vec::with_capacity(per_class * by_class.len());
        for (c, mut idx) in by_class.into_iter().enumerate() {
            if idx.len() < per_class {
                bail!(
                    "{}: class '{}' has {} images, fewer than the {per_class} labeled per class asked for",
                    self.name,
                    self.classes[c],
                    idx.len()
                );
            }
            // A partial Fisher-Yates shuffle: the first per_class entries are the pick.
            for i in 0..per_class {
                let j = i + (rng.next_u64() % (idx.len() - i) as u64) as usize;
                idx.swap(i, j);
            }
            keep.extend_from_slice(&idx[..per_class]);
        }
        keep.sort_unstable();
        let mut images = Vec::with_capacity(keep.len() * self.image_bytes());
        for &i in &keep {
            images.extend_from_slice(self.image(i));
        }
        Dataset::sized(
            images,
            self.size,
            Some(keep.iter().map(|&i| labels[i]).collect()),
            self.classes.clone(),
            format!("{} ({per_class} labeled per class, seed {seed})", self.name),
        )
    }

    /// Mean of each RGB channel over all pixels (0..255), for `data info` and domain statistics.
    pub fn channel_means(&self) -> [f64; 3] {
        channel_means(&self.images)
    }
}

/// Mean of each RGB channel over NHWC `u8` images (0..255); zeros for an empty buffer.
pub fn channel_means(images: &[u8]) -> [f64; 3] {
    let mut sums = [0u64; 3];
    for px in images.chunks_exact(3) {
        sums[0] += px[0] as u64;
        sums[1] += px[1] as u64;
        sums[2] += px[2] as u64;
    }
    let n = (images.len() / 3).max(1) as f64;
    sums.map(|s| s as f64 / n)
}

/// How many worker threads to use for `items` units of work with at least `min_per_worker`
/// units each: the available cores, 1 on wasm (no threads there).
pub(crate) fn worker_count(items: usize, min_per_worker: usize) -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(items.div_ceil(min_per_worker.max(1)))
        .max(1)
}

/// Runs `f(chunk_index, chunk)` over `out.chunks_mut(chunk)`, on scoped threads when there is
/// more than one chunk (inline on wasm), and returns the results in chunk order. A panic in a
/// worker is propagated.
pub(crate) fn par_chunks_mut<B: Send, R: Send>(
    out: &mut [B],
    chunk: usize,
    f: impl Fn(usize, &mut [B]) -> R + Sync,
) -> Vec<R> {
    let chunk = chunk.max(1);
    if out.len() <= chunk || cfg!(target_arch = "wasm32") {
        return out.chunks_mut(chunk).enumerate().map(|(i, c)| f(i, c)).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, c)| s.spawn(move || f(i, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Anything training can draw square RGB images from by index: a finite [`Dataset`] or an
/// infinite procedural stream ([`synth::SynthStream`]). Implementations are deterministic: the
/// same index gives the same image and label every time.
pub trait ImageSource: Send + Sync {
    /// Number of distinct images, or None for an infinite stream.
    fn len(&self) -> Option<usize>;

    /// Side of every image in pixels.
    fn image_size(&self) -> usize;

    /// Whether [`ImageSource::fill`] returns labels.
    fn has_labels(&self) -> bool;

    /// The class names the labels index (empty when unlabeled).
    fn classes(&self) -> Vec<String>;

    /// Writes image `index` (`image_bytes(image_size())` bytes, NHWC) into `out` and returns its
    /// label (None when unlabeled). Finite sources take `index` modulo their length, so a
    /// training loop can draw indices from any range. Panics if `out` has another length or the
    /// source is empty.
    fn fill(&self, index: u64, out: &mut [u8]) -> Option<Label>;

    /// A short description for messages.
    fn describe(&self) -> String;

    /// True for a source with no image (never true for an infinite stream).
    fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Gathers a batch: appends the images of `indices` to `images` and, when the source is
    /// labeled, their labels to `labels`.
    fn gather(&self, indices: &[u64], images: &mut Vec<u8>, labels: &mut Vec<Label>) {
        let b = image_bytes(self.image_size());
        let start = images.len();
        images.resize(start + indices.len() * b, 0);
        for (k, &i) in indices.iter().enumerate() {
            let out = &mut images[start + k * b..start + (k + 1) * b];
            if let Some(l) = self.fill(i, out) {
                labels.push(l);
            }
        }
    }
}

impl ImageSource for Dataset {
    fn len(&self) -> Option<usize> {
        Some(Dataset::len(self))
    }

    fn image_size(&self) -> usize {
        self.size
    }

    fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    fn classes(&self) -> Vec<String> {
        self.classes.clone()
    }

    fn fill(&self, index: u64, out: &mut [u8]) -> Option<Label> {
        let i = (index % Dataset::len(self) as u64) as usize;
        out.copy_from_slice(self.image(i));
        self.label(i)
    }

    fn describe(&self) -> String {
        format!("{} ({} images)", self.name, Dataset::len(self))
    }
}

/// What [`spec::load`] returns: a finite dataset or an infinite synthetic stream.
#[derive(Clone, Debug)]
pub enum Source {
    /// Images held in memory.
    Finite(Dataset),
    /// Images generated on demand from (seed, index).
    Synthetic(synth::SynthStream),
}

impl Source {
    /// The finite dataset, or None for a stream.
    pub fn as_dataset(&self) -> Option<&Dataset> {
        match self {
            Source::Finite(d) => Some(d),
            Source::Synthetic(_) => None,
        }
    }

    /// A finite dataset of at most `max` images: the first `max` of a stream, or the whole finite
    /// dataset (cloned, truncated to `max`).
    pub fn take(&self, max: usize) -> Dataset {
        match self {
            Source::Finite(d) => {
                let n = Dataset::len(d).min(max);
                Dataset {
                    images: d.images[..n * d.image_bytes()].to_vec(),
                    size: d.size,
                    labels: d.labels.as_ref().map(|l| l[..n].to_vec()),
                    classes: d.classes.clone(),
                    name: d.name.clone(),
                }
            }
            Source::Synthetic(s) => s.materialize(0, max),
        }
    }

    /// At most `max` images for evaluation: a whole finite dataset when it fits; otherwise a
    /// seeded sample that keeps each class's share (largest remainders; uniform for unlabeled
    /// data), in the dataset's order. Never the first `max` files: folders list their images
    /// class by class. A synthetic stream gives its first `max` images (i.i.d. already).
    pub fn sample(&self, max: usize, seed: u64) -> Dataset {
        let d = match self {
            Source::Finite(d) if Dataset::len(d) > max => d,
            _ => return self.take(max),
        };
        let mut rng = synth::Rng::new(seed);
        let mut shuffled = |mut idx: Vec<usize>| {
            for i in (1..idx.len()).rev() {
                idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            idx
        };
        let n = Dataset::len(d);
        let mut keep: Vec<usize> = match &d.labels {
            None => shuffled((0..n).collect()).into_iter().take(max).collect(),
            Some(labels) => {
                let k = d.classes.len();
                let mut by_class = vec![Vec::new(); k];
                for (i, &l) in labels.iter().enumerate() {
                    by_class[l as usize].push(i);
                }
                // Quotas proportional to the class counts, the remainder to the largest fractions.
                let exact: Vec<f64> = by_class
                    .iter()
                    .map(|c| c.len() as f64 * max as f64 / n as f64)
                    .collect();
                let mut quota: Vec<usize> = exact.iter().map(|q| q.floor() as usize).collect();
                let mut order: Vec<usize> = (0..k).collect();
                order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
                let mut left = max - quota.iter().sum::<usize>();
                for c in order {
                    if left == 0 {
                        break;
                    }
                    if quota[c] < by_class[c].len() {
                        quota[c] += 1;
                        left -= 1;
                    }
                }
                by_class
                    .into_iter()
                    .zip(quota)
                    .flat_map(|(c, q)| shuffled(c).into_iter().take(q))
                    .collect()
            }
        };
        keep.sort_unstable();
        let mut images = Vec::with_capacity(keep.len() * d.image_bytes());
        for &i in &keep {
            images.extend_from_slice(d.image(i));
        }
        Dataset {
            images,
            size: d.size,
            labels: d.labels.as_ref().map(|l| keep.iter().map(|&i| l[i]).collect()),
            classes: d.classes.clone(),
            name: d.name.clone(),
        }
    }
}

impl ImageSource for Source {
    fn len(&self) -> Option<usize> {
        match self {
            Source::Finite(d) => ImageSource::len(d),
            Source::Synthetic(s) => s.len(),
        }
    }

    fn image_size(&self) -> usize {
        match self {
            Source::Finite(d) => d.size,
            Source::Synthetic(s) => s.image_size(),
        }
    }

    fn has_labels(&self) -> bool {
        match self {
            Source::Finite(d) => d.has_labels(),
            Source::Synthetic(s) => s.has_labels(),
        }
    }

    fn classes(&self) -> Vec<String> {
        match self {
            Source::Finite(d) => d.classes.clone(),
            Source::Synthetic(s) => s.classes(),
        }
    }

    fn fill(&self, index: u64, out: &mut [u8]) -> Option<Label> {
        match self {
            Source::Finite(d) => d.fill(index, out),
            Source::Synthetic(s) => s.fill(index, out),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Finite(d) => d.describe(),
            Source::Synthetic(s) => s.describe(),
        }
    }
}
