//! Dataset names and paths as the command line gives them, and [`load`], which turns one into
//! images for a split.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::synth::{SynthDomain, SynthStream, TEST_SIZE};
use super::{folder, idx, mat, Preprocess, Source, IMAGE_SIZE};

/// Train or test split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Split {
    /// The training split (an infinite stream for synthetic data).
    #[default]
    Train,
    /// The test split.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// A dataset named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetSpec {
    /// MNIST from the cache (`DATA_DIR/mnist/`, see `data download mnist`).
    Mnist,
    /// SVHN cropped digits from the cache (`DATA_DIR/svhn/`, see `data download svhn`).
    Svhn,
    /// A built-in synthetic domain with its generator seed.
    Synth {
        /// `synth-digits` or `synth-house`.
        domain: SynthDomain,
        /// Generator seed (`synth-house:7`); 0 by default.
        seed: u64,
    },
    /// IDX files: a folder with `train-*`/`t10k-*` image and label files, or one image file
    /// (its labels are the file with `images`/`idx3` replaced by `labels`/`idx1`, if present).
    Idx(PathBuf),
    /// SVHN-layout MAT-file: a folder with `train_32x32.mat`/`test_32x32.mat`, or one file.
    Mat(PathBuf),
    /// An image folder: `DIR/train` and `DIR/test` if both exist, else `DIR` itself; labeled
    /// when its images lie in class subfolders (see [`folder::layout`]).
    Dir(PathBuf),
    /// Every PNG/JPEG under a folder, recursively, without labels (split as for `dir:`): for
    /// unlabeled photos kept in subfolders, which `dir:` would read as classes.
    Images(PathBuf),
}

impl Default for DatasetSpec {
    /// The default source domain: `synth-digits` (works offline).
    fn default() -> Self {
        DatasetSpec::Synth {
            domain: SynthDomain::Digits,
            seed: 0,
        }
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatasetSpec::Mnist => write!(f, "mnist"),
            DatasetSpec::Svhn => write!(f, "svhn"),
            DatasetSpec::Synth { domain, seed: 0 } => write!(f, "{}", domain.name()),
            DatasetSpec::Synth { domain, seed } => write!(f, "{}:{seed}", domain.name()),
            DatasetSpec::Idx(p) => write!(f, "idx:{}", p.display()),
            DatasetSpec::Mat(p) => write!(f, "mat:{}", p.display()),
            DatasetSpec::Dir(p) => write!(f, "dir:{}", p.display()),
            DatasetSpec::Images(p) => write!(f, "images:{}", p.display()),
        }
    }
}

impl std::str::FromStr for DatasetSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_dataset_spec(s)
    }
}

impl DatasetSpec {
    /// The default target domain: `synth-house`.
    pub fn default_target() -> Self {
        DatasetSpec::Synth {
            domain: SynthDomain::House,
            seed: 0,
        }
    }
}

const SPEC_HELP: &str = "expected mnist, svhn, synth-digits[:SEED], synth-house[:SEED], \
    idx:PATH, mat:PATH, dir:PATH, images:PATH, or an existing file or folder";

/// Parses a dataset argument: `mnist`, `svhn`, `synth-digits`, `synth-house` (optionally
/// `:SEED`), `idx:PATH`, `mat:PATH`, `dir:PATH`, `images:PATH`, or a bare path whose kind is detected from its
/// content (gzip/IDX magic or a MAT-file header for files; for folders, `.mat` files, IDX files,
/// or else an image folder). Names are case-insensitive.
pub fn parse_dataset_spec(s: &str) -> Result<DatasetSpec> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "mnist" => return Ok(DatasetSpec::Mnist),
        "svhn" => return Ok(DatasetSpec::Svhn),
        _ => {}
    }
    for domain in [SynthDomain::Digits, SynthDomain::House] {
        if let Some(rest) = lower.strip_prefix(domain.name()) {
            if rest.is_empty() {
                return Ok(DatasetSpec::Synth { domain, seed: 0 });
            }
            if let Some(seed) = rest.strip_prefix(':') {
                let seed = seed
                    .parse()
                    .with_context(|| format!("'{s}': the seed after ':' must be an integer"))?;
                return Ok(DatasetSpec::Synth { domain, seed });
            }
        }
    }
    for (prefix, make) in [
        ("idx:", DatasetSpec::Idx as fn(PathBuf) -> DatasetSpec),
        ("mat:", DatasetSpec::Mat),
        ("dir:", DatasetSpec::Dir),
        ("images:", DatasetSpec::Images),
    ] {
        if lower.starts_with(prefix) {
            let path = &s[prefix.len()..];
            if path.is_empty() {
                bail!("'{s}': missing path after '{prefix}'");
            }
            return Ok(make(PathBuf::from(path)));
        }
    }
    let path = Path::new(s);
    if !path.exists() {
        bail!("unknown dataset '{s}': {SPEC_HELP}");
    }
    detect(path).with_context(|| format!("dataset '{s}'"))
}

/// Guesses the kind of a file or folder from its content.
fn detect(path: &Path) -> Result<DatasetSpec> {
    if path.is_dir() {
        let mut has_mat = false;
        let mut has_idx = false;
        let rd = std::fs::read_dir(path).with_context(|| format!("{}: cannot read folder", path.display()))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_ascii_lowercase();
            has_mat |= name.ends_with(".mat");
            has_idx |= name.contains("idx3") || name.contains("idx1");
        }
        return Ok(if has_mat {
            DatasetSpec::Mat(path.into())
        } else if has_idx {
            DatasetSpec::Idx(path.into())
        } else {
            DatasetSpec::Dir(path.into())
        });
    }
    let mut head = [0u8; 128];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
            }
        }
        n
    };
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        // Gzip: IDX is the only gzipped format we read.
        return Ok(DatasetSpec::Idx(path.into()));
    }
    if head.len() >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 0x08 {
        return Ok(DatasetSpec::Idx(path.into()));
    }
    if head.starts_with(b"MATLAB") || (head.len() == 128 && matches!(&head[126..], b"IM" | b"MI")) {
        return Ok(DatasetSpec::Mat(path.into()));
    }
    bail!(
        "{}: not an IDX (optionally gzipped) or MAT-file; {SPEC_HELP}",
        path.display()
    )
}

/// MNIST file names for a split (images, labels), gzipped as distributed.
pub fn mnist_file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        Split::Test => ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
}

/// SVHN file name for a split.
pub fn svhn_file_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train_32x32.mat",
        Split::Test => "test_32x32.mat",
    }
}

/// Finds an IDX file in `dir` whose name starts with one of `prefixes` and contains `kind`
/// (`images`/`labels`) and `tag` (`idx3`/`idx1`): accepts `train-images-idx3-ubyte`,
/// `train-images.idx3-ubyte`, with or without `.gz`. Sorted; raw files win over gzipped ones.
fn find_idx(dir: &Path, prefixes: &[&str], kind: &str, tag: &str) -> Result<Option<PathBuf>> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let mut found: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            prefixes.iter().any(|pre| n.starts_with(pre))
                && n.contains(kind)
                && n.contains(tag)
                && !n.ends_with(".part")
        })
        .collect();
    found.sort_by_key(|p| (p.extension().is_some_and(|e| e == "gz"), p.clone()));
    Ok(found.into_iter().next())
}

fn idx_split_files(dir: &Path, split: Split) -> Result<(PathBuf, Option<PathBuf>)> {
    let prefixes: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["t10k", "test"],
    };
    let images = find_idx(dir, prefixes, "images", "idx3")?.with_context(|| {
        format!(
            "{}: no {} image file (like {})",
            dir.display(),
            split.name(),
            mnist_file_names(split).0
        )
    })?;
    let labels = find_idx(dir, prefixes, "labels", "idx1")?;
    Ok((images, labels))
}

/// The labels file next to an IDX images file, if it exists.
fn idx_labels_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_string_lossy().into_owned();
    let lname = name.replace("images", "labels").replace("idx3", "idx1");
    if lname == name {
        return None;
    }
    let p = images.with_file_name(lname);
    p.is_file().then_some(p)
}

/// `DIR/train` or `DIR/test` when both exist, else `DIR` itself (the same images for both splits).
fn split_folder(dir: &Path, split: Split) -> PathBuf {
    if dir.join("train").is_dir() && dir.join("test").is_dir() {
        dir.join(split.name())
    } else {
        dir.to_path_buf()
    }
}

/// Loads a split of a dataset.
///
/// `mnist`/`svhn` come from `data_dir` (the download cache; an error says how to fill it);
/// synthetic training data is an infinite stream ([`Source::Synthetic`]) and synthetic test data
/// a fixed set of [`TEST_SIZE`] images ([`Source::Finite`]); paths load as described on
/// [`DatasetSpec`] (a single IDX or MAT file is the same for both splits). `preprocess` applies
/// to IDX (MNIST) images; other formats are already 32x32 or are always resized keeping the
/// aspect ratio. Images are 32x32 ([`load_sized`] for another side).
pub fn load(spec: &DatasetSpec, split: Split, preprocess: Preprocess, data_dir: &Path) -> Result<Source> {
    load_sized(spec, split, preprocess, data_dir, IMAGE_SIZE)
}

/// [`load`] with images of side `size`: image files are fitted into it straight from their
/// pixels; MNIST, SVHN and the built-in pair are made at 32x32 as the paper has them, then
/// resized (PIL bilinear), so a digit fills the same share of the image at every side.
pub fn load_sized(
    spec: &DatasetSpec,
    split: Split,
    preprocess: Preprocess,
    data_dir: &Path,
    size: usize,
) -> Result<Source> {
    let ds = match spec {
        DatasetSpec::Synth { domain, seed } => {
            return Ok(match split {
                Split::Train => Source::Synthetic(SynthStream::train(*domain, *seed).with_size(size)),
                Split::Test => Source::Finite(
                    SynthStream::test(*domain, *seed, TEST_SIZE)
                        .with_size(size)
                        .materialize(0, TEST_SIZE),
                ),
            })
        }
        DatasetSpec::Mnist => {
            let dir = data_dir.join("mnist");
            let (img, lab) = mnist_file_names(split);
            let (ip, lp) = (dir.join(img), dir.join(lab));
            if !ip.is_file() || !lp.is_file() {
                bail!(
                    "MNIST {} is not in the cache: {} and {} are missing.\n\
                     Run `adamatch-wgpu data download mnist` (with --data-dir {} if that is not \
                     the default), or place the files there by hand.",
                    split.name(),
                    ip.display(),
                    lp.display(),
                    data_dir.display()
                );
            }
            idx::load_idx(&ip, Some(&lp), preprocess)?
        }
        DatasetSpec::Svhn => {
            let p = data_dir.join("svhn").join(svhn_file_name(split));
            if !p.is_file() {
                bail!(
                    "SVHN {} is not in the cache: {} is missing.\n\
                     Run `adamatch-wgpu data download svhn` (with --data-dir {} if that is not \
                     the default), or place the file there by hand.",
                    split.name(),
                    p.display(),
                    data_dir.display()
                );
            }
            mat::load_svhn_mat(&p)?
        }
        DatasetSpec::Idx(p) => {
            if p.is_dir() {
                let (ip, lp) = idx_split_files(p, split)?;
                idx::load_idx(&ip, lp.as_deref(), preprocess)?
            } else {
                let lp = idx_labels_for(p);
                idx::load_idx(p, lp.as_deref(), preprocess)?
            }
        }
        DatasetSpec::Mat(p) => {
            if p.is_dir() {
                mat::load_svhn_mat(&p.join(svhn_file_name(split)))?
            } else {
                mat::load_svhn_mat(p)?
            }
        }
        DatasetSpec::Dir(p) => folder::load_dir(&split_folder(p, split), size)?,
        DatasetSpec::Images(p) => folder::load_unlabeled_dir(&split_folder(p, split), size)?,
    };
    Ok(Source::Finite(ds.resized(size)))
}

/// For an image folder, the line saying what it deliberately left out (files that are not
/// images, tool folders); None for other datasets or when nothing was skipped.
pub fn skipped_summary(spec: &DatasetSpec, split: Split) -> Result<Option<String>> {
    Ok(match spec {
        DatasetSpec::Dir(p) | DatasetSpec::Images(p) => {
            let dir = split_folder(p, split);
            folder::scan(&dir)?
                .skipped_summary()
                .map(|s| format!("{}: {s}", crate::console::printable_path(&dir)))
        }
        _ => None,
    })
}
