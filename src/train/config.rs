//! Training hyperparameters and the presets of REFERENCE.md (`paper`, `keras-example`) plus
//! `tiny`, a small network and batch that learns visibly within minutes on a CPU adapter.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::input::InputScale;
use crate::network::{Activation, WideResNetConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// The full AdaMatch step.
    Adamatch,
    /// The baseline: supervised loss on the source's weak and strong views only.
    SourceOnly,
    /// The semi-supervised baseline FixMatch: supervised loss on the source's weak views and
    /// hard pseudo-labels of confident target views (a fixed threshold, `confidence`).
    Fixmatch,
}

impl Algorithm {
    /// Whether the step trains on target images (everything but source-only).
    pub fn uses_target(self) -> bool {
        self != Algorithm::SourceOnly
    }

    /// The name `--algorithm` takes.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Adamatch => "adamatch",
            Algorithm::SourceOnly => "source-only",
            Algorithm::Fixmatch => "fixmatch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Optimizer {
    /// SGD with momentum (objax semantics), optionally Nesterov.
    Sgd { momentum: f32, nesterov: bool },
    /// Adam with Keras 3 semantics.
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

/// The optimizers, as `--optimizer` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum 0.9 (the paper).
    Sgd,
    /// Adam with Keras' defaults (the Keras example).
    Adam,
}

impl Optimizer {
    /// `kind` with the settings the presets use: momentum 0.9 for SGD (Nesterov when asked), and
    /// Keras' beta1 0.9, beta2 0.999, eps 1e-7 for Adam.
    pub fn of(kind: OptimizerKind, nesterov: bool) -> Optimizer {
        match kind {
            OptimizerKind::Sgd => Optimizer::Sgd {
                momentum: 0.9,
                nesterov,
            },
            OptimizerKind::Adam => Optimizer::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-7,
            },
        }
    }
}

/// The learning-rate schedules, as `--lr-schedule` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum LrScheduleKind {
    /// The paper's cosine decay to lr / 4.
    Paper,
    /// The Keras example's CosineDecay to 0.25 lr.
    Keras,
    /// No decay.
    Constant,
}

impl LrSchedule {
    /// `kind` with the presets' settings.
    pub fn of(kind: LrScheduleKind) -> LrSchedule {
        match kind {
            LrScheduleKind::Paper => LrSchedule::PaperCosine,
            LrScheduleKind::Keras => LrSchedule::KerasCosine { alpha: 0.25 },
            LrScheduleKind::Constant => LrSchedule::Constant,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LrSchedule {
    /// lr * cos(acos(0.25) * t / T): the paper's decay, ending at lr / 4.
    PaperCosine,
    /// Keras CosineDecay(lr, T, alpha).
    KerasCosine {
        alpha: f32,
    },
    Constant,
}

/// How the second (source-only) forward pass runs its batch norms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SourcePassBn {
    /// Batch statistics of the source-only batch; running statistics discarded (paper).
    Train,
    /// Running statistics (the Keras example's `training=False`).
    Inference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum AlignmentKind {
    /// EMA of source means (momentum 0.999), mean of the last 128 target means.
    Paper,
    /// Per-batch means, ratio clipped to [0.1, 10].
    Keras,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum PseudoLabels {
    Hard,
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum AugmentStyle {
    /// Weak: reflect-pad 4 + crop + flip; strong: weak + 2 RandAugment ops + 16x16 cutout.
    Paper,
    /// Weak: flip + translate 10%; strong: RandAugment(2, 0.5) on the raw image.
    Keras,
}

/// Which training views a level symmetry applies to (p = 0.5 per view): the polarity symmetry of
/// digits and text ([`crate::kernels::augment::Symmetries::invert`]) or the colour symmetry
/// ([`crate::kernels::augment::Symmetries::recolor`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ViewSet {
    /// No view (the paper).
    #[default]
    None,
    /// Strong views only: the weak views (and so the pseudo-labels and half of the source loss)
    /// keep the images as they are, the strong views teach the symmetry.
    Strong,
    /// Weak and strong views alike.
    All,
}

/// Everything that defines a training run; written to `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: String,
    pub algorithm: Algorithm,
    pub network: WideResNetConfig,
    pub input_scale: InputScale,
    /// Source images per step (B).
    pub batch: usize,
    /// Labeled target images per step (T) in semi-supervised domain adaptation, after the B
    /// source images in each labeled view; 0 otherwise (set by `--target-labeled`, T = B as in
    /// the official code).
    #[serde(default)]
    pub labeled_target_batch: usize,
    /// Target images per source image (uratio).
    pub uratio: usize,
    pub steps: u64,
    /// Steps of the source-only phase the run starts with (0: none). The first `source_steps`
    /// steps train source-only on their own schedule; then `algorithm` starts from that phase's
    /// model (its exported weights) with a fresh optimizer, schedule, EMA and RNG, as a second
    /// run given that model by `--init` would. See [`TrainConfig::phase_at`].
    #[serde(default)]
    pub source_steps: u64,
    pub optimizer: Optimizer,
    pub lr: f32,
    pub lr_schedule: LrSchedule,
    /// Weight decay as a gradient term wd * w on conv and dense kernels.
    pub weight_decay: f32,
    /// EMA momentum of the evaluation weights; None evaluates the raw weights.
    pub ema: Option<f32>,
    /// AdaMatch's relative confidence threshold factor.
    pub tau: f32,
    /// FixMatch's fixed confidence threshold.
    #[serde(default = "default_confidence")]
    pub confidence: f32,
    pub alignment: AlignmentKind,
    pub pseudo_labels: PseudoLabels,
    /// Source loss = source_scale * (CE_weak + CE_strong).
    pub source_scale: f32,
    pub source_pass_bn: SourcePassBn,
    pub augment: AugmentStyle,
    /// Random horizontal flips in the weak (and so the strong) views. Digits are not mirror
    /// images of themselves; the official code chooses per run (`s` shift, `sm` shift+mirror).
    #[serde(default = "default_hflip")]
    pub hflip: bool,
    /// Which views invert the levels (p = 0.5): digits and text read the same in either polarity,
    /// and house numbers come in both while MNIST has one.
    #[serde(default)]
    pub invert: ViewSet,
    /// The source-only phase's polarity, where it differs from `invert`'s (a source model
    /// that must read both polarities of a target the adaptation then sees as it is).
    #[serde(default)]
    pub source_phase_invert: Option<ViewSet>,
    /// Which views recolour their image (p = 0.5): each channel's levels onto a random range, so
    /// a grayscale source teaches a model to read ink of any colour on a ground of any other.
    #[serde(default)]
    pub recolor: ViewSet,
    /// Batch-norm recalibration before each evaluation and the export: training-mode passes over
    /// this many fresh batches of weak views set the evaluation weights' statistics (0: off, the
    /// running statistics as trained).
    #[serde(default)]
    pub bn_calibration: usize,
    pub seed: u64,
    pub log_every: u64,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    /// Test images used per evaluation (None = the whole test set).
    pub eval_limit: Option<usize>,
}

fn default_hflip() -> bool {
    true
}

fn default_confidence() -> f32 {
    crate::kernels::fixmatch::DEFAULT_THRESHOLD
}

impl TrainConfig {
    pub fn preset(name: &str) -> Result<TrainConfig> {
        let paper = TrainConfig {
            preset: "paper".into(),
            algorithm: Algorithm::Adamatch,
            network: WideResNetConfig::paper(),
            input_scale: InputScale::Paper,
            batch: 64,
            labeled_target_batch: 0,
            uratio: 3,
            steps: 131_072,
            // The paper's runs adapt from a random initialisation.
            source_steps: 0,
            optimizer: Optimizer::of(OptimizerKind::Sgd, false),
            lr: 0.03,
            lr_schedule: LrSchedule::PaperCosine,
            weight_decay: 0.001,
            ema: Some(0.999),
            tau: 0.9,
            confidence: default_confidence(),
            alignment: AlignmentKind::Paper,
            pseudo_labels: PseudoLabels::Hard,
            source_scale: 0.5,
            source_pass_bn: SourcePassBn::Train,
            augment: AugmentStyle::Paper,
            hflip: true,
            invert: ViewSet::None,
            source_phase_invert: None,
            recolor: ViewSet::None,
            bn_calibration: 0,
            seed: 0,
            log_every: 50,
            eval_every: 2048,
            checkpoint_every: 2048,
            eval_limit: None,
        };
        Ok(match name {
            "paper" => paper,
            "keras-example" | "keras" => TrainConfig {
                preset: "keras-example".into(),
                network: WideResNetConfig::keras(),
                input_scale: InputScale::Keras,
                // 2 epochs of 60000 / 64 = 937 steps.
                steps: 2 * 937,
                optimizer: Optimizer::of(OptimizerKind::Adam, false),
                lr_schedule: LrSchedule::of(LrScheduleKind::Keras),
                // Declared as an L2 regularizer on the kernels but never added to the loss.
                weight_decay: 0.0,
                ema: None,
                alignment: AlignmentKind::Keras,
                pseudo_labels: PseudoLabels::Soft,
                source_scale: 1.0,
                source_pass_bn: SourcePassBn::Inference,
                augment: AugmentStyle::Keras,
                seed: 42,
                eval_every: 937,
                checkpoint_every: 500,
                ..paper
            },
            "tiny" => TrainConfig {
                preset: "tiny".into(),
                network: WideResNetConfig {
                    depth: 10,
                    width: 1,
                    activation: Activation::Leaky(0.1),
                    bn_momentum: 0.99,
                    ..WideResNetConfig::paper()
                },
                batch: 16,
                // A short run needs a faster start than the paper's 0.03 (measured on the
                // built-in pair: source-only reaches 63% instead of 41% on synth-house in 500
                // steps).
                lr: 0.1,
                // Measured on real domains (README, "Real domains"): AdaMatch after a 600-step
                // source-only phase leads the same steps of source-only by 9 to 21 points on
                // photo and printed digits, where from scratch it leads by 1.4 or loses; the
                // 1000-step adaptation phase is what photo digits needed.
                steps: 1600,
                source_steps: 600,
                // Measured on real MNIST (README, "Real domains"): flips cost accuracy on digits,
                // and without recalibration the running statistics of a 600-step run are far
                // off the final weights (source test 27.9% against 82.4% at step 300).
                hflip: false,
                bn_calibration: 32,
                ema: Some(0.99),
                log_every: 20,
                eval_every: 200,
                checkpoint_every: 200,
                eval_limit: Some(1000),
                ..paper
            },
            other => bail!("unknown preset '{other}': expected paper, keras-example or tiny"),
        })
    }

    /// Target images per step.
    pub fn target_batch(&self) -> usize {
        self.batch * self.uratio
    }

    /// Labeled images per step (L): the source batch and any labeled target images.
    pub fn labeled_batch(&self) -> usize {
        self.batch + self.labeled_target_batch
    }

    /// How dataset images are fitted to the network's side: zero padding for the paper's
    /// augmentation, resizing for the Keras example's.
    pub fn preprocess(&self) -> crate::data::Preprocess {
        match self.augment {
            AugmentStyle::Paper => crate::data::Preprocess::Pad,
            AugmentStyle::Keras => crate::data::Preprocess::Resize,
        }
    }

    /// Distinct images a step draws (the labeled batch and, when the algorithm uses it, the
    /// target batch): what images/s counts in `train`'s log and the browser trainer.
    pub fn images_per_step(&self) -> usize {
        self.labeled_batch()
            + if self.algorithm.uses_target() {
                self.target_batch()
            } else {
                0
            }
    }

    /// Images in the joint pass: both views of the labeled and of the target batch.
    /// Images per evaluation batch: 256, or fewer when `eval_limit` evaluates fewer.
    pub fn eval_batch(&self) -> usize {
        256.min(self.eval_limit.unwrap_or(256)).max(1)
    }

    pub fn joint_batch(&self) -> usize {
        2 * self.labeled_batch() + 2 * self.target_batch()
    }

    /// The phase step `t` (0-based) trains in: with `source_steps`, source-only for the first
    /// `source_steps` steps and `algorithm` after them; each phase's configuration counts its own
    /// steps (its schedule and its `steps` are the phase's).
    pub fn phase_at(&self, t: u64) -> Phase {
        let mut cfg = TrainConfig {
            source_steps: 0,
            source_phase_invert: None,
            ..self.clone()
        };
        let s = self.source_steps;
        if s == 0 {
            return Phase { start: 0, cfg };
        }
        if t < s {
            (cfg.algorithm, cfg.steps) = (Algorithm::SourceOnly, s);
            cfg.invert = self.source_phase_invert.unwrap_or(self.invert);
            // Labeled target images join the adaptation phase only. Measured on real targets
            // (README, "Real domains"): with one image per class in the source phase (half of
            // each step's labeled batch from 10 images) the recipe ended at 31.6% of photo
            // digits against 52.4% without labels; with them in the adaptation alone, 55.3%.
            cfg.labeled_target_batch = 0;
            Phase { start: 0, cfg }
        } else {
            cfg.steps = self.steps - s;
            Phase { start: s, cfg }
        }
    }

    /// The phase whose state a run holds after `done` steps: that of the last step taken (a run
    /// stopped at the end of its source-only phase holds that phase's state; the next step starts
    /// the adaptation).
    pub fn phase_after(&self, done: u64) -> Phase {
        self.phase_at(done.saturating_sub(1))
    }

    pub fn validate(&self) -> Result<()> {
        // The flag's own range first: the network's limits name no flag.
        crate::data::check_image_size(self.network.image_size)?;
        self.network.blocks_per_stage()?;
        if self.batch == 0 || self.uratio == 0 {
            bail!("batch (--batch) and uratio (--uratio) must be positive");
        }
        check_count("--steps", self.steps, 1, MAX_STEPS)?;
        if self.source_steps >= self.steps {
            bail!(
                "--source-steps {}: must be less than --steps {} (the steps after the source-only phase \
                 adapt), or 0 for no source-only phase",
                self.source_steps,
                self.steps
            );
        }
        if self.source_phase_invert.is_some() && self.source_steps == 0 {
            bail!("--source-phase-invert sets the source-only phase's polarity: this run has none (--source-steps 0)");
        }
        check_count(
            "--bn-calibration",
            self.bn_calibration as u64,
            0,
            MAX_BN_CALIBRATION as u64,
        )?;
        if let Some(n) = self.eval_limit {
            check_count("--eval-limit", n as u64, 1, MAX_EVAL_LIMIT as u64)?;
        }
        // Every range check is written so that NaN fails it.
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!(
                "the learning rate (--lr) must be a positive finite number, got {}",
                self.lr
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "the weight decay (--weight-decay) must be a finite number >= 0, got {}",
                self.weight_decay
            );
        }
        if !(self.tau > 0.0 && self.tau <= 1.0) {
            bail!("tau (--tau) must be in (0, 1], got {}", self.tau);
        }
        if !(self.confidence > 0.0 && self.confidence <= 1.0) {
            bail!(
                "the FixMatch confidence threshold (--confidence) must be in (0, 1], got {}",
                self.confidence
            );
        }
        if !(self.source_scale.is_finite() && self.source_scale > 0.0) {
            bail!(
                "--source-scale must be a positive finite number, got {}",
                self.source_scale
            );
        }
        if let Some(m) = self.ema {
            if !(0.0..1.0).contains(&m) {
                bail!("the EMA momentum (--ema) must be in [0, 1), got {m}");
            }
        }
        if !(0.0..1.0).contains(&self.network.bn_momentum) {
            bail!(
                "the batch-norm momentum (--bn-momentum) must be in [0, 1), got {}",
                self.network.bn_momentum
            );
        }
        match self.optimizer {
            Optimizer::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                bail!("the SGD momentum must be in [0, 1), got {momentum}")
            }
            Optimizer::Adam { beta1, beta2, eps }
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0 && eps.is_finite()) =>
            {
                bail!("Adam needs beta1 and beta2 in [0, 1) and a positive eps, got {beta1}, {beta2}, {eps}")
            }
            _ => {}
        }
        check_count("--log-every", self.log_every, 1, MAX_STEPS)?;
        check_count("--eval-every", self.eval_every, 1, MAX_STEPS)?;
        check_count("--checkpoint-every", self.checkpoint_every, 1, MAX_STEPS)?;
        Ok(())
    }
}

/// One phase of a run ([`TrainConfig::phase_at`]): the steps from `start` on train as a run of
/// `cfg` would from its step 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub start: u64,
    pub cfg: TrainConfig,
}

impl Phase {
    /// Which of a run's phases this is, as metrics.jsonl names it: `source-only` for a source
    /// phase, else the phase's algorithm.
    pub fn name(&self) -> &'static str {
        self.cfg.algorithm.name()
    }
}

/// The most steps a run may ask for (the paper's longest run is 131,072 steps of 64 images;
/// this is 7,600 times that).
pub const MAX_STEPS: u64 = 1_000_000_000;
/// The most batch-norm calibration batches (each a training-mode pass before every evaluation).
pub const MAX_BN_CALIBRATION: usize = 1024;
/// The most test images one evaluation may take per test set.
pub const MAX_EVAL_LIMIT: usize = 100_000_000;

/// Refuses a count outside `min..=max`, naming the flag and the range.
pub fn check_count(flag: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if !(min..=max).contains(&value) {
        bail!("{flag} {value}: must be from {min} to {max}");
    }
    Ok(())
}
