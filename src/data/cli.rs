//! The `data` subcommands: `download`, `check`, `info`, `preview` (native only).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::download::{check_file, dataset_files, download_dataset, resolve_data_dir, DownloadOptions, FileStatus};
use super::preview::{render_grid, GridLayout};
use super::{channel_means, ImageSource, Preprocess, Source, Split, IMAGE_BYTES};

/// Re-exported so that the training command finds everything it needs here.
pub use super::spec::{load, parse_dataset_spec, DatasetSpec};

/// Datasets that `data download` and `data check` know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Downloadable {
    /// MNIST (4 gzipped IDX files, 11 MB).
    Mnist,
    /// SVHN cropped digits (train_32x32.mat and test_32x32.mat, 246 MB).
    Svhn,
}

impl Downloadable {
    fn name(self) -> &'static str {
        match self {
            Downloadable::Mnist => "mnist",
            Downloadable::Svhn => "svhn",
        }
    }
}

/// Which splits `data info` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitChoice {
    /// The training split.
    Train,
    /// The test split.
    Test,
    /// Both splits.
    #[default]
    Both,
}

/// `adamatch-wgpu data ...`: manage and inspect datasets.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Download MNIST or SVHN into the cache, verifying SHA-256 checksums.
    Download {
        /// Dataset to fetch.
        dataset: Downloadable,
        /// Cache directory [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
        #[arg(long, env = "ADAMATCH_DATA")]
        data_dir: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Verify the checksums of what is in the cache.
    Check {
        /// Datasets to check [default: all].
        datasets: Vec<Downloadable>,
        /// Cache directory [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
        #[arg(long, env = "ADAMATCH_DATA")]
        data_dir: Option<PathBuf>,
    },
    /// Print image counts, label histograms and channel means.
    Info {
        /// mnist, svhn, synth-digits, synth-house (either with an optional :SEED), idx:PATH,
        /// mat:PATH, dir:PATH or a path.
        #[arg(default_value = "synth-digits")]
        dataset: String,
        /// Which split(s).
        #[arg(long, value_enum, default_value_t = SplitChoice::Both)]
        split: SplitChoice,
        /// How 28x28 MNIST images become 32x32 (pad: paper, resize: Keras example).
        #[arg(long, value_enum, default_value_t = Preprocess::Pad)]
        preprocess: Preprocess,
        /// Images summarised from an infinite synthetic training stream.
        #[arg(long, default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
        stream_samples: usize,
        /// Cache directory [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
        #[arg(long, env = "ADAMATCH_DATA")]
        data_dir: Option<PathBuf>,
    },
    /// Write a PNG grid of samples with their labels.
    Preview {
        /// Dataset (as for `info`).
        #[arg(default_value = "synth-digits")]
        dataset: String,
        /// Output PNG file.
        #[arg(long, default_value = "grid.png")]
        out: PathBuf,
        /// Split to sample.
        #[arg(long, value_enum, default_value_t = Split::Train)]
        split: Split,
        /// Number of samples.
        #[arg(long, default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
        count: usize,
        /// Tiles per row.
        #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000))]
        cols: usize,
        /// Enlargement factor of each 32x32 tile.
        #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=32))]
        scale: usize,
        /// Seed choosing which samples are shown (0 = the first ones).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How 28x28 MNIST images become 32x32.
        #[arg(long, value_enum, default_value_t = Preprocess::Pad)]
        preprocess: Preprocess,
        /// Cache directory [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
        #[arg(long, env = "ADAMATCH_DATA")]
        data_dir: Option<PathBuf>,
    },
}

/// Runs a `data` subcommand, printing its report on stdout.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Download {
            dataset,
            data_dir,
            quiet,
        } => {
            let dir = resolve_data_dir(data_dir.as_deref());
            let opts = DownloadOptions {
                progress: !quiet,
                ..Default::default()
            };
            download_dataset(dataset.name(), &dir, &opts)
        }
        DataCommand::Check { datasets, data_dir } => {
            let dir = resolve_data_dir(data_dir.as_deref());
            // Without arguments, missing datasets are only listed; bad files always fail.
            let explicit = !datasets.is_empty();
            let list = if explicit {
                datasets
            } else {
                vec![Downloadable::Mnist, Downloadable::Svhn]
            };
            check(&list, &dir, explicit)
        }
        DataCommand::Info {
            dataset,
            split,
            preprocess,
            stream_samples,
            data_dir,
        } => {
            let dir = resolve_data_dir(data_dir.as_deref());
            let spec = parse_dataset_spec(&dataset)?;
            let splits: &[Split] = match split {
                SplitChoice::Train => &[Split::Train],
                SplitChoice::Test => &[Split::Test],
                SplitChoice::Both => &[Split::Train, Split::Test],
            };
            for &s in splits {
                info(&spec, s, preprocess, stream_samples, &dir)?;
            }
            Ok(())
        }
        DataCommand::Preview {
            dataset,
            out,
            split,
            count,
            cols,
            scale,
            seed,
            preprocess,
            data_dir,
        } => {
            let dir = resolve_data_dir(data_dir.as_deref());
            let spec = parse_dataset_spec(&dataset)?;
            let source = load(&spec, split, preprocess, &dir)?;
            preview(&source, &out, count, GridLayout { cols, scale }, seed)?;
            crate::outln!("wrote {} ({count} samples of {})", out.display(), source.describe())?;
            Ok(())
        }
    }
}

fn check(list: &[Downloadable], dir: &Path, missing_is_error: bool) -> Result<()> {
    let (mut bad, mut missing) = (0, 0);
    crate::outln!("cache: {}", dir.display())?;
    for d in list {
        let sub = dir.join(d.name());
        for f in dataset_files(d.name())? {
            let path = sub.join(&f.name);
            match check_file(&sub, &f) {
                FileStatus::Ok => crate::outln!("  ok       {}", path.display())?,
                FileStatus::Missing { partial: None } => {
                    missing += 1;
                    crate::outln!("  missing  {}", path.display())?
                }
                FileStatus::Missing { partial: Some(n) } => {
                    missing += 1;
                    crate::outln!(
                        "  missing  {} ({n} bytes downloaded so far; `data download {}` resumes)",
                        path.display(),
                        d.name()
                    )?
                }
                FileStatus::Bad(why) => {
                    bad += 1;
                    crate::outln!("  BAD      {}: {why}", path.display())?
                }
            }
        }
    }
    if bad > 0 || (missing_is_error && missing > 0) {
        bail!(
            "{bad} bad and {missing} missing file(s); run `adamatch-wgpu data download mnist|svhn` \
             (a bad file is replaced by a verified download)"
        );
    }
    Ok(())
}

fn info(spec: &DatasetSpec, split: Split, preprocess: Preprocess, stream_samples: usize, dir: &Path) -> Result<()> {
    let t = Instant::now();
    let source = load(spec, split, preprocess, dir)?;
    let elapsed = t.elapsed();
    let sample;
    let ds = match &source {
        Source::Finite(d) => d,
        Source::Synthetic(_) => {
            sample = source.take(stream_samples);
            &sample
        }
    };
    crate::outln!("{spec} [{}]: {}", split.name(), source.describe())?;
    if let Some(line) = super::spec::skipped_summary(spec, split)? {
        crate::outln!("  {line}")?;
    }
    match ImageSource::len(&source) {
        Some(n) => crate::outln!("  images: {n} of 32x32x3 (loaded in {:.2} s)", elapsed.as_secs_f64())?,
        None => crate::outln!("  images: unlimited; statistics over the first {}", ds.len())?,
    }
    let m = channel_means(&ds.images);
    crate::outln!("  mean RGB: {:.2} {:.2} {:.2}", m[0], m[1], m[2])?;
    match ds.histogram() {
        None => crate::outln!("  labels: none (unlabeled)")?,
        Some(h) => {
            let total: usize = h.iter().sum();
            let max = h.iter().copied().max().unwrap_or(1).max(1);
            let classes = &ds.classes;
            let wide = classes.iter().map(|c| c.chars().count()).max().unwrap_or(1);
            crate::outln!("  labels: {} classes", classes.len())?;
            for (d, &c) in h.iter().enumerate() {
                let pct = 100.0 * c as f64 / total.max(1) as f64;
                let bar = "#".repeat((c * 40).div_ceil(max));
                let name = &*crate::console::printable(&classes[d]);
                if *name == d.to_string() {
                    crate::outln!("    {name:>wide$}: {c:>7} {pct:5.1}% {bar}")?;
                } else {
                    crate::outln!("    {name:>wide$} ({d}): {c:>7} {pct:5.1}% {bar}")?;
                }
            }
        }
    }
    Ok(())
}

/// Writes a PNG grid of `count` samples of `source` (with labels when it has them). With
/// `seed` 0 the first samples are shown, otherwise a seeded random selection.
pub fn preview(source: &dyn ImageSource, out: &Path, count: usize, layout: GridLayout, seed: u64) -> Result<()> {
    if source.is_empty() {
        bail!("{}: no image to preview", source.describe());
    }
    let n = match source.len() {
        Some(len) => count.min(len),
        None => count,
    };
    let indices: Vec<u64> = (0..n as u64)
        .map(|i| {
            if seed == 0 {
                i
            } else {
                let mut r = super::synth::Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                r.next_u64() % source.len().map(|l| l as u64).unwrap_or(u64::MAX)
            }
        })
        .collect();
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    source.gather(&indices, &mut images, &mut labels);
    let labels = source.has_labels().then_some(labels.as_slice());
    let (w, h, rgb) = render_grid(&images, labels, layout);
    let img = ::image::RgbImage::from_raw(w, h, rgb).context("grid buffer size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), ::image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot encode PNG", out.display()))?;
    // A temporary file and a rename: a full disk leaves no truncated grid.
    crate::weights::write_atomically(out, &png).with_context(|| format!("{}: cannot write PNG", out.display()))
}
