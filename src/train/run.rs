//! `adamatch-wgpu train`: the loop around [`Trainer`]: data, logging, evaluation, checkpoints,
//! Ctrl-C, resume, and the run directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::data::spec::{load_sized, DatasetSpec, Split};
use crate::data::{check_same_classes, Dataset, ImageSource, Source};
use crate::gpu::GpuContext;
use crate::weights;

use super::checkpoint;
use super::config::{Algorithm, TrainConfig};
use super::eval::{evaluate_run, EvalResult, Evaluator};
use super::plots;
use super::record::{self, RunInputs, RunRecord};
use super::tensorboard::EventLog;
use super::trainer::{StepMetrics, Trainer};

/// Which of the paper's three settings a run trains in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Setting {
    /// Unsupervised domain adaptation: a labeled source, an unlabeled target.
    #[default]
    Uda,
    /// Semi-supervised domain adaptation: also a few labeled target images (`per_class` of
    /// each class picked with the labels seed, or all of `labeled`'s images).
    Ssda {
        labeled: DatasetSpec,
        per_class: Option<usize>,
    },
    /// Semi-supervised learning: one dataset (the source), `per_class` labeled images of each
    /// class as the labeled part and its whole training split as the unlabeled part.
    Ssl { per_class: usize },
}

impl Setting {
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Uda => "uda",
            Setting::Ssda { .. } => "ssda",
            Setting::Ssl { .. } => "ssl",
        }
    }
}

/// Images a stream (the built-in training domains) offers to a labeled pick.
pub const STREAM_POOL: usize = 10_000;

pub struct RunOptions {
    pub out_dir: PathBuf,
    /// UDA, SSDA or SSL.
    pub setting: Setting,
    /// Seed of the labeled picks of SSDA and SSL (independent of the training seed).
    pub labels_seed: u64,
    pub source: DatasetSpec,
    pub target: DatasetSpec,
    /// The labeled source test set (default: the source's own test split).
    pub source_test: Option<DatasetSpec>,
    /// The labeled target test set (default: the target's own test split, which may be
    /// unlabeled: evaluation then reports what can be known without labels).
    pub target_test: Option<DatasetSpec>,
    pub data_dir: PathBuf,
    /// Continue from `out_dir/checkpoint.safetensors`: every setting must be the run's own.
    pub resume: bool,
    /// Replace the run in `out_dir` (its files; anything else there stays).
    pub overwrite: bool,
    /// Start from these weights (a `model.safetensors` of the same network) instead of a random
    /// initialisation, e.g. adaptation from a source-only model (the official code's
    /// `ablation/adamatch_pretrain.py`). Ignored by `resume`, which restores its checkpoint.
    pub init: Option<PathBuf>,
    /// Stop (with a checkpoint) after this many steps in this invocation, as an interruption
    /// would; used by tests.
    pub stop_after: Option<u64>,
    pub progress: bool,
    /// Set by a Ctrl-C handler: checkpoint and stop.
    pub interrupted: Arc<AtomicBool>,
}

impl RunOptions {
    /// The inputs as the run's record holds them.
    pub fn inputs(&self) -> RunInputs {
        let (target_labeled, target_labels_per_class, labels_per_class) = match &self.setting {
            Setting::Uda => (None, None, None),
            Setting::Ssda { labeled, per_class } => (Some(labeled.to_string()), *per_class, None),
            Setting::Ssl { per_class } => (None, None, Some(*per_class)),
        };
        RunInputs {
            setting: self.setting.name().to_string(),
            source: self.source.to_string(),
            target: match self.setting {
                Setting::Ssl { .. } => String::new(),
                _ => self.target.to_string(),
            },
            source_test: self.source_test.as_ref().map(DatasetSpec::to_string),
            target_test: self.target_test.as_ref().map(DatasetSpec::to_string),
            target_labeled,
            target_labels_per_class,
            labels_per_class,
            labels_seed: self.labels_seed,
            init: self.init.as_ref().map(|p| p.display().to_string()),
        }
    }
}

/// What a finished (or stopped) run reports.
pub struct RunSummary {
    pub steps_done: u64,
    pub finished: bool,
    pub last_eval: Option<(EvalResult, EvalResult)>,
    /// The evaluation at the end of the source-only phase (when this invocation ran it).
    pub source_phase_eval: Option<(EvalResult, EvalResult)>,
    pub wall_s: f64,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";

pub use super::eval::EVAL_SAMPLE_SEED;

/// The run's data: training sources and test sets (the source's labeled; the target's labeled
/// or not, see [`RunOptions::target_test`]), and SSDA's labeled target images.
pub struct RunData {
    /// SSDA: the labeled target images (the pick).
    pub labeled_target: Option<Dataset>,
    /// The class names: the source's, which every labeled set of the run shares.
    pub classes: Vec<String>,
    pub source_train: Source,
    pub target_train: Source,
    pub source_test: Dataset,
    pub target_test: Dataset,
}

/// A finite labeled set to pick from: a dataset as it is, a stream's first [`STREAM_POOL`] images.
fn pickable(source: Source) -> Dataset {
    match source {
        Source::Finite(d) => d,
        s @ Source::Synthetic(_) => s.take(STREAM_POOL),
    }
}

/// Says what the run's image folders deliberately left out (files that are not images, tool
/// folders), once per folder.
fn note_skipped(opts: &RunOptions) -> Result<()> {
    let mut specs = vec![
        (&opts.source, Split::Train),
        (opts.source_test.as_ref().unwrap_or(&opts.source), Split::Test),
    ];
    if !matches!(opts.setting, Setting::Ssl { .. }) {
        specs.push((&opts.target, Split::Train));
        specs.push((opts.target_test.as_ref().unwrap_or(&opts.target), Split::Test));
    }
    if let Setting::Ssda { labeled, .. } = &opts.setting {
        specs.push((labeled, Split::Train));
    }
    let mut said = Vec::new();
    for (spec, split) in specs {
        if let Some(line) = crate::data::spec::skipped_summary(spec, split)? {
            if !said.contains(&line) {
                crate::errln!("note: {line}");
                said.push(line);
            }
        }
    }
    Ok(())
}

pub fn load_data(cfg: &TrainConfig, opts: &RunOptions) -> Result<RunData> {
    let pre = cfg.preprocess();
    let limit = cfg.eval_limit.unwrap_or(usize::MAX);
    let size = cfg.network.image_size;
    let mut source_train = load_sized(&opts.source, Split::Train, pre, &opts.data_dir, size)
        .with_context(|| format!("loading the source domain {}", opts.source))?;
    if !ImageSource::has_labels(&source_train) {
        bail!(
            "the source domain {} has no labels: the source must be a labeled dataset (for an image \
             folder, one subfolder per class)",
            opts.source
        );
    }
    let target_train = match &opts.setting {
        // One domain: its whole training split is the unlabeled part (its labels, if read at
        // all, only score the pseudo-labels in the log), a seeded pick the labeled part.
        Setting::Ssl { per_class } => {
            let all = pickable(source_train);
            source_train = Source::Finite(
                all.labeled_subset(*per_class, opts.labels_seed)
                    .with_context(|| format!("--labels-per-class {per_class} of {}", opts.source))?,
            );
            Source::Finite(all)
        }
        _ => load_sized(&opts.target, Split::Train, pre, &opts.data_dir, size)
            .with_context(|| format!("loading the target domain {}", opts.target))?,
    };
    let labeled_target = match &opts.setting {
        Setting::Ssda { labeled, per_class } => {
            let all = pickable(
                load_sized(labeled, Split::Train, pre, &opts.data_dir, size)
                    .with_context(|| format!("loading --target-labeled {labeled}"))?,
            );
            if all.labels.is_none() {
                bail!("--target-labeled {labeled} has no labels");
            }
            let pick = match per_class {
                Some(n) => all
                    .labeled_subset(*n, opts.labels_seed)
                    .with_context(|| format!("--target-labels-per-class {n} of {labeled}"))?,
                None => all,
            };
            check_same_classes(
                &format!("--target-labeled {labeled}"),
                &pick.classes,
                &format!("the source domain {}", opts.source),
                &source_train.classes(),
            )?;
            Some(pick)
        }
        _ => None,
    };
    let source_test = match &opts.source_test {
        Some(spec) => load_sized(spec, Split::Test, pre, &opts.data_dir, size)
            .with_context(|| format!("loading --source-test {spec}"))?,
        None => load_sized(&opts.source, Split::Test, pre, &opts.data_dir, size)
            .with_context(|| format!("loading the source test set {}", opts.source))?,
    };
    if !ImageSource::has_labels(&source_test) {
        match &opts.source_test {
            Some(spec) => bail!("--source-test {spec} has no labels: name a labeled test set"),
            None => bail!(
                "the test split of the source domain {} has no labels: name a labeled one with --source-test",
                opts.source
            ),
        }
    }
    let target_test = match &opts.target_test {
        // SSL: one domain, one test set.
        None if matches!(opts.setting, Setting::Ssl { .. }) => source_test.clone(),
        Some(spec) => {
            let t = load_sized(spec, Split::Test, pre, &opts.data_dir, size)
                .with_context(|| format!("loading --target-test {spec}"))?;
            if !ImageSource::has_labels(&t) {
                bail!(
                    "--target-test {spec} has no labels: name a labeled test set, or leave the flag \
                     out to evaluate the target's own images without labels"
                );
            }
            t
        }
        None => load_sized(&opts.target, Split::Test, pre, &opts.data_dir, size)
            .with_context(|| format!("loading the target test set {}", opts.target))?,
    };
    let classes = source_train.classes();
    let source_name = format!("the source domain {}", opts.source);
    let test_name = |flag: &Option<DatasetSpec>, flag_name: &str, domain: &DatasetSpec| match flag {
        Some(spec) => format!("{flag_name} {spec}"),
        None => format!("the test split of {domain}"),
    };
    check_same_classes(
        &test_name(&opts.source_test, "--source-test", &opts.source),
        &source_test.classes(),
        &source_name,
        &classes,
    )?;
    if ImageSource::has_labels(&target_train) {
        check_same_classes(
            &format!("the target domain {} (labeled)", opts.target),
            &target_train.classes(),
            &source_name,
            &classes,
        )?;
    }
    if ImageSource::has_labels(&target_test) {
        check_same_classes(
            &test_name(&opts.target_test, "--target-test", &opts.target),
            &target_test.classes(),
            &source_name,
            &classes,
        )?;
    }
    let source_test = source_test.sample(limit, EVAL_SAMPLE_SEED);
    let target_test = target_test.sample(limit, EVAL_SAMPLE_SEED);
    Ok(RunData {
        labeled_target,
        classes,
        source_train,
        target_train,
        source_test,
        target_test,
    })
}

fn git_revision() -> &'static str {
    option_env!("ADAMATCH_GIT_REVISION").unwrap_or("unknown")
}

/// Keeps the metrics lines of steps up to `step` (a resumed run rewrites what came after).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    weights::write_atomically(path, out.as_bytes())
}

fn append_line(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// An entry of an existing run's config.json (None when absent or unreadable).
fn read_config_entry(path: &Path, key: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get(key).cloned()
}

/// Checks what `opts.out_dir` holds against what is asked: a new run needs a directory without a
/// run (or `overwrite`); a resumed one a checkpoint of this very run. Returns the configuration
/// to train with (a resumed run's own).
fn check_run_directory(cfg: TrainConfig, opts: &RunOptions) -> Result<TrainConfig> {
    let dir = &opts.out_dir;
    let ckpt = dir.join(CHECKPOINT);
    if !opts.resume {
        let present = record::existing_run_files(dir);
        if !present.is_empty() && !opts.overwrite {
            bail!(
                "{} already holds a run ({}): pass --resume to continue it (its checkpoint), --overwrite to \
                 replace it, or choose another --out",
                dir.display(),
                present.join(", ")
            );
        }
        return Ok(cfg);
    }
    if opts.overwrite {
        bail!(
            "--resume continues the run in {} and --overwrite replaces it: pass one of them",
            dir.display()
        );
    }
    if !ckpt.exists() {
        let present = record::existing_run_files(dir);
        if present.is_empty() {
            bail!("--resume: no checkpoint at {}", ckpt.display());
        }
        bail!(
            "--resume: no checkpoint at {} ({} holds {}): the run stopped before its first checkpoint \
             or its checkpoint was removed; start it again with --overwrite",
            ckpt.display(),
            dir.display(),
            present.join(", ")
        );
    }
    let saved = checkpoint::peek(&ckpt)?;
    let given = RunRecord {
        config: cfg.clone(),
        inputs: opts.inputs(),
    };
    match &saved.record {
        Some(run) => {
            // The flags describe the run itself or nothing is resumed.
            let mut given = given;
            given.config.network.num_classes = run.config.network.num_classes;
            given.config.labeled_target_batch = run.config.labeled_target_batch;
            record::check_same_run(dir, run, &given)?;
            if let Some(id) =
                read_config_entry(&dir.join("config.json"), "run_id").and_then(|v| v.as_str().map(str::to_string))
            {
                if id != run.id() {
                    bail!(
                        "--resume: {} belongs to another run (run {}) than {}'s config.json (run {id}): it was \
                         copied from elsewhere; resume it in its own directory, or move it away to keep this run",
                        ckpt.display(),
                        run.id(),
                        dir.display()
                    );
                }
            }
        }
        None => {
            if saved.config != cfg {
                crate::errln!("note: resuming with the checkpoint's own configuration; other flags are ignored");
            }
        }
    }
    crate::errln!("resuming {} from step {}", dir.display(), saved.step);
    Ok(saved.config)
}

/// The network's head: one output per class of the source. A resumed run must still have its
/// classes and its labeled target images.
fn fit_classes(cfg: &mut TrainConfig, opts: &RunOptions, data: &RunData) -> Result<()> {
    if opts.resume {
        if cfg.network.num_classes != data.classes.len() {
            bail!(
                "--resume: the checkpoint's network has {} classes but the source {} now has {}",
                cfg.network.num_classes,
                opts.source,
                data.classes.len()
            );
        }
        if let Some(saved) = read_config_entry(&opts.out_dir.join("config.json"), "classes")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        {
            check_same_classes(
                &format!("the source domain {}", opts.source),
                &data.classes,
                "the run being resumed",
                &saved,
            )?;
        }
        let ssda = data.labeled_target.is_some();
        if ssda != (cfg.labeled_target_batch > 0) {
            bail!(
                "--resume: the run being resumed was {}trained with labeled target images; give the same \
                 setting (--target-labeled) again",
                if ssda { "not " } else { "" }
            );
        }
    } else {
        cfg.network.num_classes = data.classes.len();
        // SSDA: a labeled target batch of the source batch's size, as in the official code.
        cfg.labeled_target_batch = if data.labeled_target.is_some() { cfg.batch } else { 0 };
    }
    Ok(())
}

/// The trainer of the run: restored from its checkpoint (and metrics.jsonl cut back to it), or
/// new, from `--init` weights or a random initialisation.
fn start_trainer(ctx: &GpuContext, cfg: &TrainConfig, opts: &RunOptions, data: &RunData) -> Result<Trainer> {
    let metrics_path = opts.out_dir.join("metrics.jsonl");
    let mut trainer = Trainer::new(ctx, cfg.clone())?;
    if let Some(d) = &data.labeled_target {
        trainer.set_labeled_target(d.clone())?;
    }
    if opts.resume {
        checkpoint::restore(ctx, &mut trainer, &opts.out_dir.join(CHECKPOINT))?;
        truncate_metrics(&metrics_path, trainer.step)?;
    } else {
        if let Some(path) = &opts.init {
            let w = weights::load(path)?;
            check_same_classes(
                &format!("--init {}", path.display()),
                &w.classes,
                &format!("the source domain {}", opts.source),
                &data.classes,
            )?;
            trainer
                .load_weights(ctx, &w)
                .with_context(|| format!("--init {}", path.display()))?;
        }
    }
    Ok(trainer)
}

/// Writes config.json: the run's identity and record, its classes and data, where it ran.
fn write_config_json(ctx: &GpuContext, opts: &RunOptions, run: &RunRecord, data: &RunData) -> Result<()> {
    let init = match &opts.init {
        // A checkpoint without a run record: its config.json entry stays true.
        None if opts.resume => {
            read_config_entry(&opts.out_dir.join("config.json"), "init").and_then(|v| v.as_str().map(str::to_string))
        }
        init => init.as_ref().map(|p| p.display().to_string()),
    };
    let config_json = json!({
        "run_id": run.id(),
        "config": &run.config,
        "init": init,
        "classes": &data.classes,
        "setting": opts.setting.name(),
        "labels_seed": opts.labels_seed,
        "labels_per_class": match &opts.setting {
            Setting::Ssl { per_class } => Some(*per_class),
            Setting::Ssda { per_class, .. } => *per_class,
            Setting::Uda => None,
        },
        "target_labeled": match &opts.setting {
            Setting::Ssda { labeled, .. } => Some(labeled.to_string()),
            _ => None,
        },
        "labeled_target_images": data.labeled_target.as_ref().map(Dataset::len),
        "source": opts.source.to_string(),
        "target": opts.target.to_string(),
        "source_test": opts.source_test.as_ref().unwrap_or(&opts.source).to_string(),
        "target_test": opts.target_test.as_ref().unwrap_or(&opts.target).to_string(),
        "target_test_labeled": data.target_test.labels.is_some(),
        "adapter": ctx.adapter_summary(),
        // Tuned tiles never change a result's bits: the per-layer choices stay in the cache.
        "convolution": ctx.profile.conv_kernels(),
        "autotune_cache": ctx.profile.tunes_tiles().then(|| crate::autotune::cache_path().display().to_string()),
        "git_revision": git_revision(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    weights::write_atomically(
        &opts.out_dir.join("config.json"),
        serde_json::to_string_pretty(&config_json)?.as_bytes(),
    )?;
    Ok(())
}

fn progress_bar(steps: u64, at: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .expect("a valid progress template"),
    );
    bar.set_position(at);
    bar
}

/// The error of a run whose loss or gradient went NaN or infinite at `step`, naming the last good
/// checkpoint.
fn diverged(step: u64, m: &StepMetrics, ckpt: &Path) -> anyhow::Error {
    let last_good = if ckpt.exists() {
        let at = checkpoint::peek(ckpt)
            .map(|p| format!(" (step {})", p.step))
            .unwrap_or_default();
        format!("The last good checkpoint is {}{at}; ", ckpt.display())
    } else {
        "No checkpoint was written before it; ".to_string()
    };
    anyhow::anyhow!(
        "training diverged at step {step}: the loss or a gradient is NaN/Inf (loss {}, grad norm {}). \
         {last_good}try a lower --lr.",
        m.loss.total_loss,
        m.grad_norm,
    )
}

/// The progress bar's message for a logged step running at `ips` images per second.
fn progress_message(m: &StepMetrics, ips: f64) -> String {
    let l = &m.loss;
    // Pseudo-label accuracy only where the target training set has labels.
    let pseudo = m
        .masked_pseudo_label_acc
        .map(|a| format!(" (right {:.0}%)", 100.0 * a))
        .unwrap_or_default();
    format!(
        "{ips:.0} img/s loss {:.4} (src {:.4} tgt {:.4}) mask {:.2}{pseudo} lr {:.5} mu {:.2}",
        l.total_loss, l.source_loss, l.target_loss, l.mask_rate, m.lr, l.mu
    )
}

/// The run's configuration and data, checked against the run directory and each other; nothing
/// is written yet.
fn prepare_run(cfg: TrainConfig, opts: &RunOptions) -> Result<(TrainConfig, RunData)> {
    let mut cfg = check_run_directory(cfg, opts)?;
    record::remove_stale_temporaries(&opts.out_dir);
    cfg.validate()?;
    let data = load_data(&cfg, opts)?;
    note_skipped(opts)?;
    fit_classes(&mut cfg, opts, &data)?;
    if data.target_test.labels.is_none() {
        crate::errln!(
            "note: the target test set {} is unlabeled: evaluation reports the predicted classes, the mean \
             confidence and the mask rate on it, not an accuracy (--target-test names a labeled one)",
            data.target_test.name
        );
    }
    Ok((cfg, data))
}

/// Makes the run directory (a replaced run's files removed first) and writes its config.json:
/// only once everything is checked, so that a failed start leaves none.
fn open_run_directory(ctx: &GpuContext, cfg: &TrainConfig, opts: &RunOptions, data: &RunData) -> Result<RunRecord> {
    let dir = &opts.out_dir;
    if opts.overwrite {
        record::remove_run_files(dir)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating the run directory {}", dir.display()))?;
    let run = RunRecord {
        config: cfg.clone(),
        inputs: opts.inputs(),
    };
    write_config_json(ctx, opts, &run, data)?;
    Ok(run)
}

/// Where the loop reports: metrics.jsonl, and the progress bar or log lines.
struct RunLog {
    metrics_path: PathBuf,
    /// The TensorBoard event file, written alongside metrics.jsonl.
    events: EventLog,
    bar: Option<indicatif::ProgressBar>,
    /// When and at which step the last train line was written (its images per second).
    last: (Instant, u64),
}

impl RunLog {
    /// The log of a run at step `at` (resumed there, or new at 0): the event file starts with
    /// the run's config.json as text, or is cut back to `at` as metrics.jsonl is.
    fn new(opts: &RunOptions, steps: u64, at: u64) -> Result<RunLog> {
        let config_path = opts.out_dir.join("config.json");
        let config =
            std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
        Ok(RunLog {
            metrics_path: opts.out_dir.join("metrics.jsonl"),
            events: EventLog::open(&opts.out_dir, opts.resume.then_some(at), &config)?,
            bar: opts.progress.then(|| progress_bar(steps, at)),
            last: (Instant::now(), at),
        })
    }

    /// Appends `record` to metrics.jsonl and its scalars to the event file.
    fn record(&self, record: &serde_json::Value) -> Result<()> {
        append_line(&self.metrics_path, record)?;
        self.events.append(record)
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => crate::errln!("{line}"),
        }
    }

    /// The train line of `step`; fails on a loss or gradient gone NaN or infinite.
    fn train_line(&mut self, ctx: &GpuContext, trainer: &Trainer, ckpt: &Path) -> Result<()> {
        let step = trainer.step;
        let m = trainer.metrics(ctx)?;
        if m.non_finite {
            return Err(diverged(step, &m, ckpt));
        }
        let (t0, s0) = self.last;
        let images = (step - s0) as f64 * trainer.phase().cfg.images_per_step() as f64;
        let ips = images / t0.elapsed().as_secs_f64().max(1e-9);
        self.last = (Instant::now(), step);
        self.record(&json!({"kind": "train", "images_per_s": ips, "metrics": &m, "phase": trainer.phase().name(), "step": step}))?;
        if let Some(b) = &self.bar {
            b.set_position(step);
            b.set_message(progress_message(&m, ips));
        }
        Ok(())
    }

    /// The eval line of `step` in `phase`, also said.
    fn eval_line(&self, step: u64, phase: &str, (s, t): &(EvalResult, EvalResult)) -> Result<()> {
        self.say(format!(
            "step {step} ({phase}): source test {}; target test {}",
            s.summary(),
            t.summary()
        ));
        self.record(&json!({"kind": "eval", "phase": phase, "step": step, "source": s, "target": t}))
    }
}

/// The EMA weights' accuracies on both test sets, after batch-norm calibration.
fn evaluate(
    ctx: &GpuContext,
    trainer: &mut Trainer,
    evaluator: &mut Evaluator,
    data: &RunData,
) -> Result<(EvalResult, EvalResult)> {
    let cfg = trainer.cfg.clone();
    let net = trainer.calibrated_eval_net(ctx, &data.source_train, &data.target_train)?;
    pollster::block_on(evaluate_run(
        ctx,
        evaluator,
        net,
        &cfg,
        &data.source_test,
        &data.target_test,
    ))
}

/// model.safetensors (the calibrated evaluation weights) and the plots of a finished run.
fn export(
    ctx: &GpuContext,
    trainer: &mut Trainer,
    data: &RunData,
    log: &RunLog,
    target: Option<&EvalResult>,
) -> Result<()> {
    crate::fault::point("export");
    let dir = log.metrics_path.parent().unwrap_or(Path::new("."));
    let extra = trainer.export_metadata(&data.classes)?;
    let scale = trainer.cfg.input_scale;
    let net = trainer.calibrated_eval_net(ctx, &data.source_train, &data.target_train)?;
    weights::save(ctx, net, &dir.join(MODEL), scale, &extra)?;
    if let Err(e) = plots::write_plots(dir, &log.metrics_path, target) {
        crate::errln!("warning: could not draw the plots: {e:#}");
    }
    Ok(())
}

/// Trains the run `opts` describes (new, or resumed from its checkpoint) to `cfg.steps` or until
/// interrupted: logs, evaluations and checkpoints at their intervals, the model and plots at the
/// end.
pub fn train(ctx: &GpuContext, cfg: TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    let ckpt = opts.out_dir.join(CHECKPOINT);
    let (cfg, data) = prepare_run(cfg, opts)?;
    let mut trainer = start_trainer(ctx, &cfg, opts, &data)?;
    let run = open_run_directory(ctx, &cfg, opts, &data)?;
    let mut evaluator = Evaluator::new(ctx, trainer.eval_net(), cfg.eval_batch(), data.classes.clone())?;
    let mut log = RunLog::new(opts, cfg.steps, trainer.step)?;

    let start = Instant::now();
    let start_step = trainer.step;
    let mut last_eval = None;
    let mut source_phase_eval = None;
    let mut finished = true;
    while trainer.step < cfg.steps {
        if trainer.adaptation_due() {
            let next = match cfg.algorithm {
                Algorithm::SourceOnly => {
                    "source-only training restarts from its model (the recipe's baseline)".to_string()
                }
                other => format!("{} adapts from its model", other.name()),
            };
            log.say(format!("step {}: the source-only phase is done; {next}", trainer.step));
        }
        trainer.step(ctx, &data.source_train, &data.target_train)?;
        crate::fault::point("step");
        let step = trainer.step;
        let stop_now =
            opts.interrupted.load(Ordering::SeqCst) || opts.stop_after.is_some_and(|n| step - start_step >= n);
        if step % cfg.log_every == 0 || step == cfg.steps || stop_now {
            log.train_line(ctx, &trainer, &ckpt)?;
        }
        let source_phase_end = cfg.source_steps > 0 && step == cfg.source_steps;
        if step % cfg.eval_every == 0 || step == cfg.steps || source_phase_end {
            let result = evaluate(ctx, &mut trainer, &mut evaluator, &data)?;
            crate::fault::point("eval");
            log.eval_line(step, trainer.phase().name(), &result)?;
            if source_phase_end {
                source_phase_eval = Some(result.clone());
            }
            last_eval = Some(result);
        }
        if step % cfg.checkpoint_every == 0 || step == cfg.steps || stop_now {
            checkpoint::save(ctx, &trainer, &run, &ckpt)?;
        }
        if stop_now && step < cfg.steps {
            finished = false;
            log.say(format!(
                "stopped at step {step}; checkpoint saved to {} (continue with --resume)",
                ckpt.display()
            ));
            break;
        }
    }
    if let Some(b) = &log.bar {
        b.finish_and_clear();
    }
    if finished && last_eval.is_none() && trainer.step == cfg.steps {
        // Resumed from the final checkpoint (stopped before the export): its evaluation is in
        // metrics.jsonl already; computed again (deterministically) for the report and plots.
        last_eval = Some(evaluate(ctx, &mut trainer, &mut evaluator, &data)?);
    }
    if finished {
        export(ctx, &mut trainer, &data, &log, last_eval.as_ref().map(|(_, t)| t))?;
    }
    Ok(RunSummary {
        steps_done: trainer.step,
        finished,
        last_eval,
        source_phase_eval,
        wall_s: start.elapsed().as_secs_f64(),
    })
}
