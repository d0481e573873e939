//! `train` (a run from the command line's preset and overrides) and `eval` (accuracy of
//! trained weights on a dataset).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::GpuArgs;
use crate::data::download::resolve_data_dir;
use crate::data::spec::{load_sized, parse_dataset_spec, DatasetSpec, Split};
use crate::data::Preprocess;
use crate::inference::Classifier;
use crate::input::InputScale;
use crate::train::checkpoint;
use crate::train::config::TrainConfig;
use crate::train::eval::{EvalResult, Evaluator};
use crate::train::overrides::ConfigOverrides;
use crate::train::parse;
use crate::train::record::RunInputs;
use crate::train::run::{RunOptions, Setting, CHECKPOINT};
use crate::weights;

/// The paper's three settings (see `train --setting`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SettingArg {
    Uda,
    Ssda,
    Ssl,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Labeled source domain: mnist, svhn, synth-digits[:SEED], synth-house[:SEED], idx:PATH,
    /// mat:PATH, dir:PATH or a path [default: synth-digits].
    #[arg(long)]
    source: Option<String>,
    /// Target domain; its labels, if any, are never used for training [default: synth-house].
    #[arg(long)]
    target: Option<String>,
    /// uda (labeled source, unlabeled target), ssda (also --target-labeled images) or ssl (one
    /// dataset, --source: --labels-per-class labeled images of each class, the rest unlabeled)
    /// [default: ssda with --target-labeled, else uda].
    #[arg(long, value_enum)]
    setting: Option<SettingArg>,
    /// SSDA: labeled target images (a dataset of the target domain; its training split).
    #[arg(long, value_name = "DATASET")]
    target_labeled: Option<String>,
    /// SSDA: use this many of --target-labeled's images per class (a seeded pick) [default: all].
    #[arg(long, value_name = "N", value_parser = parse::positive)]
    target_labels_per_class: Option<usize>,
    /// SSL: labeled images per class picked from the source's training split.
    #[arg(long, value_name = "N", value_parser = parse::positive)]
    labels_per_class: Option<usize>,
    /// Seed of the labeled picks (SSDA, SSL), apart from the training seed [default: 0].
    #[arg(long)]
    labels_seed: Option<u64>,
    /// Labeled source test set [default: the source's test split].
    #[arg(long, value_name = "DATASET")]
    source_test: Option<String>,
    /// Labeled target test set [default: the target's test split; when that is unlabeled,
    /// evaluation reports the predicted classes, mean confidence and mask rate instead].
    #[arg(long, value_name = "DATASET")]
    target_test: Option<String>,
    /// Run directory (config.json, metrics.jsonl, checkpoint, model.safetensors, plots).
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Continue the run in --out from its checkpoint, with the run's own settings (a flag given
    /// with a different value is refused).
    #[arg(long)]
    resume: bool,
    /// Replace the run that --out holds (its files; anything else in the folder stays).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Start from these weights (a model.safetensors of the same network, e.g. a source-only
    /// run's) instead of a random initialisation.
    #[arg(long, value_name = "WEIGHTS")]
    init: Option<PathBuf>,
    /// The preset and every setting of the configuration.
    #[command(flatten)]
    config: ConfigOverrides,
    /// Dataset cache [default: $ADAMATCH_DATA or the user cache dir/adamatch-wgpu].
    #[arg(long, env = "ADAMATCH_DATA")]
    data_dir: Option<PathBuf>,
    /// No progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
    /// Stop with a checkpoint after this many steps of this invocation (as an interruption would).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long)]
    weights: PathBuf,
    /// Dataset (its test split unless --split train). Labeled: accuracy, per-class accuracy
    /// and confusion matrix; always: predicted classes, mean confidence and mask rate.
    #[arg(long)]
    data: String,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// How 28x28 MNIST images become 32x32 [default: pad for paper-scaled weights, resize for keras].
    #[arg(long, value_enum)]
    preprocess: Option<Preprocess>,
    /// Evaluate at most N images: a seeded sample keeping each class's share (the same one
    /// `train --eval-limit` uses).
    #[arg(long, value_parser = parse::eval_limit)]
    limit: Option<usize>,
    /// Top-1 probability an image must reach to count in the mask rate (FixMatch's fixed
    /// threshold by default).
    #[arg(long, default_value_t = 0.95, value_parser = parse_probability)]
    threshold: f64,
    #[arg(long)]
    json: bool,
    #[arg(long, env = "ADAMATCH_DATA")]
    data_dir: Option<PathBuf>,
}

/// A probability in [0, 1] (refuses NaN).
fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a probability in [0, 1]")),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}

/// The run's inputs: the flags given, over the defaults of a new run or over the record of the
/// run `--resume` continues (so that a resumed run needs no flag repeated).
fn run_inputs(a: &TrainArgs, saved: Option<&RunInputs>) -> RunInputs {
    let mut i = saved.cloned().unwrap_or_else(|| RunInputs {
        setting: String::new(),
        source: "synth-digits".into(),
        target: DatasetSpec::default_target().to_string(),
        ..RunInputs::default()
    });
    macro_rules! given {
        ($field:ident <- $arg:expr) => {
            if let Some(v) = $arg {
                i.$field = v;
            }
        };
    }
    given!(source <- a.source.clone());
    given!(target <- a.target.clone());
    given!(labels_seed <- a.labels_seed);
    given!(source_test <- a.source_test.clone().map(Some));
    given!(target_test <- a.target_test.clone().map(Some));
    given!(target_labeled <- a.target_labeled.clone().map(Some));
    given!(target_labels_per_class <- a.target_labels_per_class.map(Some));
    given!(labels_per_class <- a.labels_per_class.map(Some));
    given!(init <- a.init.as_ref().map(|p| Some(p.display().to_string())));
    if let Some(s) = a.setting {
        i.setting = format!("{s:?}").to_lowercase();
    } else if a.target_labeled.is_some() || i.setting.is_empty() {
        // SSDA when labeled target images are named, else UDA.
        i.setting = if i.target_labeled.is_some() { "ssda" } else { "uda" }.into();
    }
    if i.setting == "ssl" && saved.is_none() {
        i.target = String::new();
    }
    i
}

/// The run's setting from its inputs; a flag of another setting is an error naming both.
fn setting_of(i: &RunInputs, a: &TrainArgs) -> Result<Setting> {
    let chosen = i.setting.as_str();
    let refuse = |flag: &str, given: bool| -> Result<()> {
        if given {
            bail!("{flag} does not apply to --setting {chosen}");
        }
        Ok(())
    };
    Ok(match chosen {
        "ssda" => {
            refuse("--labels-per-class", i.labels_per_class.is_some())?;
            let labeled = i
                .target_labeled
                .as_deref()
                .context("--setting ssda needs --target-labeled DATASET (labeled target images)")?;
            Setting::Ssda {
                labeled: parse_dataset_spec(labeled).context("--target-labeled")?,
                per_class: i.target_labels_per_class,
            }
        }
        "ssl" => {
            refuse("--target", a.target.is_some())?;
            refuse("--target-labeled", i.target_labeled.is_some())?;
            refuse("--target-labels-per-class", i.target_labels_per_class.is_some())?;
            Setting::Ssl {
                per_class: i
                    .labels_per_class
                    .context("--setting ssl needs --labels-per-class N (labeled images per class of --source)")?,
            }
        }
        _ => {
            refuse("--labels-per-class", i.labels_per_class.is_some())?;
            refuse("--target-labels-per-class", i.target_labels_per_class.is_some())?;
            Setting::Uda
        }
    })
}

/// The configuration and inputs of the run: a new run's from the preset and flags, a resumed
/// run's from its checkpoint with the flags given on top (`train` refuses any difference).
fn resolve_run(a: &TrainArgs) -> Result<(TrainConfig, RunInputs)> {
    let ckpt = a.out.join(CHECKPOINT);
    if a.resume && ckpt.exists() {
        if let Some(run) = checkpoint::peek(&ckpt)?.record {
            return Ok((a.config.apply(run.config.clone())?, run_inputs(a, Some(&run.inputs))));
        }
    }
    let mut cfg = a.config.config("paper")?;
    if a.init.is_some() && a.config.source_steps.is_none() {
        // The weights given are the model to adapt from: no source-only phase unless asked.
        cfg.source_steps = 0;
    }
    Ok((cfg, run_inputs(a, None)))
}

pub fn run(gpu: &GpuArgs, a: &TrainArgs) -> Result<()> {
    let (cfg, inputs) = resolve_run(a)?;
    let setting = setting_of(&inputs, a)?;
    let dataset = |flag: &str, spec: &str| parse_dataset_spec(spec).with_context(|| flag.to_string());
    let dataset_opt = |flag: &str, spec: &Option<String>| spec.as_deref().map(|s| dataset(flag, s)).transpose();
    let ctx = gpu.context()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                crate::errln!("second Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            crate::errln!("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let opts = RunOptions {
        out_dir: a.out.clone(),
        source: dataset("--source", &inputs.source)?,
        target: match &setting {
            Setting::Ssl { .. } => DatasetSpec::default_target(),
            _ => dataset("--target", &inputs.target)?,
        },
        setting,
        labels_seed: inputs.labels_seed,
        source_test: dataset_opt("--source-test", &inputs.source_test)?,
        target_test: dataset_opt("--target-test", &inputs.target_test)?,
        data_dir: resolve_data_dir(a.data_dir.as_deref()),
        resume: a.resume,
        overwrite: a.overwrite,
        init: inputs.init.as_ref().map(PathBuf::from),
        stop_after: a.stop_after,
        progress: !a.no_progress,
        interrupted,
    };
    let data = match &opts.setting {
        Setting::Uda => format!("source {} -> target {}", opts.source, opts.target),
        Setting::Ssda { labeled, per_class } => format!(
            "source {} -> target {} with labeled target images from {labeled}{}",
            opts.source,
            opts.target,
            per_class.map(|n| format!(" ({n} per class)")).unwrap_or_default()
        ),
        Setting::Ssl { per_class } => format!(
            "{}: {per_class} labeled images per class, the rest unlabeled",
            opts.source
        ),
    };
    crate::errln!(
        "preset {} ({:?}, {}), {} steps, {data}, run directory {}",
        cfg.preset,
        cfg.algorithm,
        opts.setting.name(),
        cfg.steps,
        a.out.display()
    );
    let summary = crate::train::run::train(&ctx, cfg, &opts)?;
    if let Some((s, t)) = &summary.last_eval {
        if let Some((_, before)) = &summary.source_phase_eval {
            crate::outln!("target test after the source-only phase: {}", before.summary())?;
        }
        crate::outln!("source test: {}", s.summary())?;
        crate::outln!("target test: {}", t.summary())?;
        if let (Some((s_before, t_before)), None) = (&summary.source_phase_eval, t.accuracy) {
            report_unlabeled_adaptation((s_before, t_before), (s, t))?;
        }
    }
    crate::outln!(
        "{} steps in {:.1} s; run directory {}",
        summary.steps_done,
        summary.wall_s,
        a.out.display()
    )?;
    Ok(())
}

/// The label-free signals' record on real domains (`scripts/verdict_candidates.py`, README "Real
/// domains"): pairs of an adapted model and its source-only baseline, and in how many of them the
/// model each signal preferred was the one the target's labels preferred.
const VERDICT_PAIRS: u32 = 11;
const VERDICT_HISTOGRAM_RIGHT: u32 = 9;
const VERDICT_CONFIDENCE_RIGHT: u32 = 10;

/// What can be said without target labels about a run's adaptation, given the source and target
/// evaluations after the source-only phase and at the end, with how far each number is to be
/// trusted: the reliabilities are those measured on real domains (README, "Real domains").
fn report_unlabeled_adaptation(
    (source_before, target_before): (&EvalResult, &EvalResult),
    (source_now, target_now): (&EvalResult, &EvalResult),
) -> Result<()> {
    let before = target_before.predicted_share_distance(source_before);
    let now = target_now.predicted_share_distance(source_now);
    if let (Some(before), Some(now)) = (before, now) {
        crate::outln!(
            "target's predicted classes, distance from the source's (total variation): {before:.3} \
             after the source-only phase, {now:.3} now ({})",
            if now < before { "closer" } else { "not closer" }
        )?;
    }
    crate::outln!(
        "note: no verdict. Of {VERDICT_PAIRS} adapted models and their source-only baselines on \
         real targets, the model whose predicted classes were closer to the source's was the \
         better one in {VERDICT_HISTOGRAM_RIGHT} (the one loss included), the more confident one \
         in {VERDICT_CONFIDENCE_RIGHT} (never where adaptation lost: self-training raises the \
         confidence either way); the histogram assumes the source's class balance. A labeled \
         --target-test says whether adaptation helped"
    )?;
    Ok(())
}

pub fn eval(gpu: &GpuArgs, a: &EvalArgs) -> Result<()> {
    let w = weights::load(&a.weights)?;
    let spec = parse_dataset_spec(&a.data)?;
    let pre = a.preprocess.unwrap_or(match w.input_scale {
        InputScale::Paper => Preprocess::Pad,
        InputScale::Keras => Preprocess::Resize,
    });
    let data = load_sized(
        &spec,
        a.split,
        pre,
        &resolve_data_dir(a.data_dir.as_deref()),
        w.config.image_size,
    )?
    .sample(a.limit.unwrap_or(usize::MAX), crate::train::run::EVAL_SAMPLE_SEED);
    let ctx = gpu.context()?;
    let clf = Classifier::new(&ctx, &w, w.input_scale, 1)?;
    let mut ev = Evaluator::new(&ctx, &clf.net, 256, w.classes.clone())?;
    let r = ev.run(&ctx, &clf.net, &data, w.input_scale, None, Some(a.threshold))?;
    if a.json {
        crate::outln!("{}", serde_json::to_string(&r)?)?;
    } else {
        crate::outln!("{} ({} images): {}", spec, r.images, r.summary())?;
        crate::out!("{}", r.confusion_table())?;
    }
    Ok(())
}
