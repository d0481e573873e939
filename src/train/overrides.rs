//! The settings a user gives a run on top of its preset, by name, written once: `train` reads
//! them from its flags (clap, `--bn-calibration`) and the page's `WebTrainer.create` from an
//! options object (serde, `bnCalibration`), and both apply them here.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::config::{
    Algorithm, AlignmentKind, AugmentStyle, LrSchedule, LrScheduleKind, Optimizer, OptimizerKind, PseudoLabels,
    SourcePassBn, TrainConfig, ViewSet,
};
#[cfg(not(target_arch = "wasm32"))]
use super::parse;
use crate::input::InputScale;
use crate::network::Activation;

/// `--eval-limit`'s value: a count of test images, or `None` for all of them (`all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalLimit(pub Option<usize>);

impl<'de> Deserialize<'de> for EvalLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Count(usize),
            Word(String),
        }
        match Given::deserialize(d) {
            Ok(Given::Count(n)) => Ok(EvalLimit(Some(n))),
            Ok(Given::Word(w)) if w == "all" => Ok(EvalLimit(None)),
            _ => Err(serde::de::Error::custom(
                "expected a whole number of test images or \"all\"",
            )),
        }
    }
}

/// Every setting of a run's configuration a user can give; `None` (or `false`) keeps the
/// preset's value. The doc comments are `train --help`'s text.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigOverrides {
    /// paper, keras-example or tiny; every value can be overridden below [default: paper; the
    /// page's: tiny].
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub preset: Option<String>,
    /// adamatch, or a baseline: fixmatch or source-only.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub algorithm: Option<Algorithm>,
    /// Steps of the whole run, the source-only phase included.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::steps))]
    pub steps: Option<u64>,
    /// Steps of the source-only phase the run starts with; the algorithm then adapts from its
    /// model with a fresh optimizer and schedule (0: adapt from the start) [default: the
    /// preset's share of --steps: tiny 600 of 1600, paper and keras-example 0; 0 with --init].
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::source_steps))]
    pub source_steps: Option<u64>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub seed: Option<u64>,
    /// Source images per step (the target batch is uratio times larger).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::positive))]
    pub batch: Option<usize>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::positive))]
    pub uratio: Option<usize>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub lr: Option<f32>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub weight_decay: Option<f32>,
    /// sgd or adam.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub optimizer: Option<OptimizerKind>,
    /// Nesterov momentum for SGD.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub nesterov: bool,
    /// EMA momentum of the evaluation weights, or "none".
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub ema: Option<String>,
    /// AdaMatch's relative confidence threshold factor.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub tau: Option<f32>,
    /// FixMatch's fixed confidence threshold [default: 0.95].
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub confidence: Option<f32>,
    /// Distribution alignment: paper (EMA / 128-batch history) or keras (per batch, clipped).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub alignment: Option<AlignmentKind>,
    /// Pseudo-labels: hard (argmax) or soft.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub pseudo_labels: Option<PseudoLabels>,
    /// Source loss = SCALE * (CE_weak + CE_strong).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub source_scale: Option<f32>,
    /// Batch norm of the second (source-only) pass: train (batch statistics) or inference.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub source_pass_bn: Option<SourcePassBn>,
    /// Augmentations: paper or keras.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub augment: Option<AugmentStyle>,
    /// Random horizontal flips in the weak and strong views (true or false).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub hflip: Option<bool>,
    /// Which training views invert the levels of their image (p = 0.5): none, strong or all.
    /// For digits and text, which read the same light on dark and dark on light.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub invert: Option<ViewSet>,
    /// --invert in the source-only phase only (--source-steps): none, strong or all [default:
    /// --invert's].
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub source_phase_invert: Option<ViewSet>,
    /// Which training views recolour their image (p = 0.5), each channel's levels mapped onto a
    /// random range: none, strong or all. For a grayscale source and a target in colour.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub recolor: Option<ViewSet>,
    /// Batch-norm recalibration: training-mode passes over N batches of weak views set the
    /// evaluation weights' statistics before each evaluation and the export (0: off).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::bn_calibration))]
    pub bn_calibration: Option<usize>,
    /// Learning-rate schedule: paper, keras (cosine to 0.25x) or constant.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub lr_schedule: Option<LrScheduleKind>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::depth))]
    pub depth: Option<usize>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::width))]
    pub width: Option<usize>,
    /// Side of the network's input images in pixels: a multiple of 8 from 16 to 128 (default
    /// 32). Image files are fitted into it; MNIST, SVHN and the built-in pair are resized to it.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::image_size))]
    pub image_size: Option<usize>,
    /// relu, leaky (0.1) or leakyS.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub activation: Option<String>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, allow_negative_numbers = true))]
    pub bn_momentum: Option<f32>,
    /// paper or keras.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum))]
    pub input_scale: Option<InputScale>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::steps))]
    pub log_every: Option<u64>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::steps))]
    pub eval_every: Option<u64>,
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::steps))]
    pub checkpoint_every: Option<u64>,
    /// Test images per evaluation ("all" for the whole test sets).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = parse::eval_limit_or_all))]
    pub eval_limit: Option<EvalLimit>,
}

impl ConfigOverrides {
    /// The preset named (`default_preset` when none is) with every given setting applied.
    pub fn config(&self, default_preset: &str) -> Result<TrainConfig> {
        self.apply(TrainConfig::preset(self.preset.as_deref().unwrap_or(default_preset))?)
    }

    /// `c` with every given setting applied (for `--resume`, `c` is the run's own), validated.
    pub fn apply(&self, mut c: TrainConfig) -> Result<TrainConfig> {
        if let Some(p) = &self.preset {
            c.preset = p.clone();
        }
        macro_rules! set {
            ($($field:ident).+ <- $given:expr) => {
                if let Some(v) = $given {
                    c.$($field).+ = v;
                }
            };
        }
        set!(algorithm <- self.algorithm);
        if let (Some(steps), None) = (self.steps, self.source_steps) {
            // The preset's (or the run's) share of the steps in the source-only phase.
            c.source_steps = (c.source_steps as u128 * steps as u128 / c.steps as u128) as u64;
        }
        set!(steps <- self.steps);
        set!(source_steps <- self.source_steps);
        set!(seed <- self.seed);
        set!(batch <- self.batch);
        set!(uratio <- self.uratio);
        set!(lr <- self.lr);
        set!(weight_decay <- self.weight_decay);
        set!(tau <- self.tau);
        set!(confidence <- self.confidence);
        set!(network.depth <- self.depth);
        set!(network.width <- self.width);
        set!(network.image_size <- self.image_size);
        set!(network.bn_momentum <- self.bn_momentum);
        set!(log_every <- self.log_every);
        set!(eval_every <- self.eval_every);
        set!(checkpoint_every <- self.checkpoint_every);
        set!(input_scale <- self.input_scale);
        set!(alignment <- self.alignment);
        set!(pseudo_labels <- self.pseudo_labels);
        set!(source_scale <- self.source_scale);
        set!(hflip <- self.hflip);
        set!(invert <- self.invert);
        set!(source_phase_invert <- self.source_phase_invert.map(Some));
        set!(recolor <- self.recolor);
        set!(bn_calibration <- self.bn_calibration);
        set!(source_pass_bn <- self.source_pass_bn);
        set!(augment <- self.augment);
        set!(lr_schedule <- self.lr_schedule.map(LrSchedule::of));
        set!(optimizer <- self.optimizer.map(|kind| Optimizer::of(kind, self.nesterov)));
        if let Some(v) = &self.activation {
            c.network.activation = Activation::parse(v)?;
        }
        if let Optimizer::Sgd { nesterov, .. } = &mut c.optimizer {
            *nesterov |= self.nesterov;
        }
        if let Some(v) = &self.ema {
            c.ema = if v == "none" {
                None
            } else {
                Some(
                    v.parse()
                        .with_context(|| format!("--ema {v}: expected a number or none"))?,
                )
            };
        }
        set!(eval_limit <- self.eval_limit.map(|l| l.0));
        c.validate()?;
        Ok(c)
    }
}
