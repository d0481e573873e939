//! One AdaMatch (or FixMatch, or source-only) optimizer step, entirely on the GPU.
//!
//! Per step the host uploads the u8 batches, each image's augmentation parameters, the
//! interpolation lambdas and the step's scalars (lr, mu, ...): small writes, no readback. The whole
//! step — augmentation, the two forward passes, the loss reductions, both backward passes, the
//! gradient check, the optimizer and the EMA — is recorded into one command encoder.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::ImageSource;
use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::conv2d::ConvPass;
use crate::kernels::optimizer::{self, StepScalars};
use crate::network::{Pass, WideResNet, Workspace};
use crate::weights::Weights;

pub use super::batch::HostBatch;
use super::calibration::BnCalibration;
use super::config::{Phase, SourcePassBn, TrainConfig};
use super::loss::StepLoss;
use super::step_inputs::StepInputs;
pub use super::step_metrics::StepMetrics;
pub use super::update::OptState;
use super::update::Update;

/// A named group of consecutive ops of one step (see [`Trainer::step_phases`]).
pub struct StepPhase<'a> {
    pub name: &'static str,
    /// Part of the main (joint) pass's forward or backward: what `bench --step` compares the
    /// whole step with.
    pub main_pass: bool,
    pub ops: Vec<&'a Op>,
}

/// The training state on the GPU and the host RNG, with every op of the step built once: an
/// assembly of parts, each owning its buffers ([`StepInputs`], [`StepLoss`], [`Update`],
/// [`BnCalibration`]).
pub struct Trainer {
    /// The run's configuration (its `algorithm` the adaptation's, its `steps` the whole run's).
    pub cfg: TrainConfig,
    /// The phase the state is in (see [`TrainConfig::phase_at`]): what the step's parts are
    /// built for.
    phase: Phase,
    pub net: WideResNet,
    /// The (joint) pass's images: [src weak, src strong, tgt weak, tgt strong], or [src weak,
    /// src strong] for source-only.
    main: Workspace,
    inputs: StepInputs,
    scalars: Tensor,
    loss: StepLoss,
    update: Update,
    pub rng: ChaCha8Rng,
    /// Steps done.
    pub step: u64,
    last_lr: f32,
    /// The last step's target labels (diagnostics, see [`StepMetrics::pseudo_label_acc`]).
    last_target_labels: Vec<crate::data::Label>,
    /// The labeled target images of semi-supervised domain adaptation
    /// ([`Trainer::set_labeled_target`]).
    labeled_target: Option<crate::data::Dataset>,
    /// Batch-norm recalibration of the evaluation weights (`bn_calibration` batches), if on.
    calibration: Option<BnCalibration>,
}

/// Images of the main pass: the joint batch, or both views of the labeled images (source-only).
fn main_rows(cfg: &TrainConfig) -> usize {
    if cfg.algorithm.uses_target() {
        cfg.joint_batch()
    } else {
        2 * cfg.labeled_batch()
    }
}

/// The convolution passes a run of `cfg` builds, as (images per pass, passes): each phase's
/// main and second pass (forward and backward) and batch-norm calibration (forward), and the evaluations
/// (forward). What the browser tunes before it builds a run (natively each workspace tunes its
/// own passes as it builds them).
pub fn conv_work(cfg: &TrainConfig) -> Vec<(usize, &'static [ConvPass])> {
    let mut work: Vec<(usize, &'static [ConvPass])> = Vec::new();
    let last = cfg.steps.saturating_sub(1);
    for phase in [cfg.phase_at(0), cfg.phase_at(last)] {
        work.push((main_rows(&phase.cfg), &ConvPass::ALL));
        if let Some(rows) = super::loss::second_pass_rows(&phase.cfg) {
            work.push((rows, &ConvPass::ALL));
        }
        if phase.cfg.bn_calibration > 0 {
            work.push((super::calibration::calibration_rows(&phase.cfg), &[ConvPass::Forward]));
        }
    }
    work.push((cfg.eval_batch(), &[ConvPass::Forward]));
    work.dedup();
    work
}

/// Refuses a batch whose largest buffer (the first stage's activations of the main pass) the
/// adapter cannot hold, naming the flags and the limit, instead of a panic inside wgpu.
fn check_fits(ctx: &GpuContext, cfg: &TrainConfig) -> Result<()> {
    let n = &cfg.network;
    let rows = main_rows(cfg);
    let channels = 16 * n.width.max(1);
    let bytes = rows as u128 * (n.image_size * n.image_size) as u128 * channels as u128 * 4;
    let l = &ctx.limits;
    let (limit, name) = if l.max_storage_buffer_binding_size < l.max_buffer_size {
        (l.max_storage_buffer_binding_size, "max_storage_buffer_binding_size")
    } else {
        (l.max_buffer_size, "max_buffer_size")
    };
    let params = crate::network::Architecture::new(n)?.params_len() as u128 * 4;
    if params > limit as u128 {
        bail!(
            "--depth {} --width {} has {:.1} MB of parameters in one buffer; this adapter allows {:.1} MB per \
             buffer ({name}). Use a smaller network.",
            n.depth,
            n.width,
            params as f64 / 1e6,
            limit as f64 / 1e6
        );
    }
    if bytes > limit as u128 {
        bail!(
            "--batch {} with --uratio {} is {rows} images per step, whose first-stage activations need a \
             {:.1} MB buffer; this adapter allows {:.1} MB per buffer ({name}). Lower --batch or --uratio.",
            cfg.batch,
            cfg.uratio,
            bytes as f64 / 1e6,
            limit as f64 / 1e6
        );
    }
    Ok(())
}

impl Trainer {
    pub fn new(ctx: &GpuContext, cfg: TrainConfig) -> Result<Trainer> {
        cfg.validate()?;
        // The run's own algorithm: the adaptation phase's batch is the larger.
        check_fits(ctx, &cfg)?;
        let phase = cfg.phase_at(0);
        let net = WideResNet::new(ctx, cfg.network.clone(), cfg.seed)?;
        let main = Workspace::new(ctx, &net, main_rows(&phase.cfg), false);
        let inputs = StepInputs::new(ctx, &phase.cfg, &main.input);
        let scalars = optimizer::step_scalars_tensor(ctx);
        let loss = StepLoss::new(ctx, &phase.cfg, &net, &main, &inputs.labels, &scalars);
        let update = Update::new(ctx, &cfg, &net, &scalars)?;
        let calibration = BnCalibration::new(ctx, &phase.cfg, &inputs)?;
        let trainer = Trainer {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            phase,
            net,
            main,
            inputs,
            scalars,
            loss,
            update,
            step: 0,
            last_lr: 0.0,
            last_target_labels: Vec::new(),
            labeled_target: None,
            calibration,
        };
        trainer.init_ema(ctx);
        Ok(trainer)
    }

    /// The phase the trainer's state is in (the phase of the last step taken).
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Builds the parts whose buffers depend on the phase's algorithm (the main pass, the
    /// step's inputs, the loss with fresh state, the calibration) for `phase`; the network, the
    /// optimizer, the EMA, the RNG and the step count are left as they are.
    fn build_phase(&mut self, ctx: &GpuContext, phase: Phase) -> Result<()> {
        let cfg = &phase.cfg;
        let main = Workspace::new(ctx, &self.net, main_rows(cfg), false);
        let inputs = StepInputs::new(ctx, cfg, &main.input);
        let loss = StepLoss::new(ctx, cfg, &self.net, &main, &inputs.labels, &self.scalars);
        // Everything built before anything is replaced: a failure leaves the trainer as it was.
        let calibration = BnCalibration::new(ctx, cfg, &inputs)?;
        (self.main, self.inputs, self.loss, self.calibration, self.phase) = (main, inputs, loss, calibration, phase);
        Ok(())
    }

    /// Puts a trainer about to be given a checkpoint's state after `done` steps into the phase
    /// that state belongs to ([`TrainConfig::phase_after`]).
    pub fn enter_phase_after(&mut self, ctx: &GpuContext, done: u64) -> Result<()> {
        let phase = self.cfg.phase_after(done);
        if phase != self.phase {
            self.build_phase(ctx, phase)?;
        }
        Ok(())
    }

    /// Whether the next step starts the adaptation phase ([`Trainer::start_adaptation_async`]
    /// must run first; [`Trainer::step_async`] does).
    pub fn adaptation_due(&self) -> bool {
        // Read on every step: compares numbers instead of building the next phase's config.
        let s = self.cfg.source_steps;
        s > 0 && self.phase.start == 0 && self.step >= s && self.step < self.cfg.steps
    }

    /// Ends the source-only phase as a run of it would end, and starts the adaptation as a run
    /// given its model by `--init` would start: the network takes the weights that phase
    /// exports (the EMA copy, batch-norm statistics recalibrated), the optimizer state is zeroed,
    /// the EMA restarts from the weights, the RNG from the seed, and the schedule from the
    /// phase's first step.
    pub async fn start_adaptation_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<()> {
        let local = self.step - self.phase.start;
        let eval = self.update.ema_net.as_ref();
        let model = match &mut self.calibration {
            Some(cal) => Some(
                cal.run(
                    ctx,
                    &self.phase.cfg,
                    eval.unwrap_or(&self.net),
                    local,
                    (source, self.labeled_target.as_ref(), target),
                )
                .await?,
            ),
            None => eval,
        };
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        if let Some(model) = model {
            encoder.copy_buffer_to_buffer(&model.params, 0, &self.net.params, 0, self.net.params.size());
            encoder.copy_buffer_to_buffer(&model.running, 0, &self.net.running, 0, self.net.running.size());
        }
        for (_, t) in self.update.opt.tensors() {
            encoder.clear_buffer(&t.buffer, t.offset, Some(t.len() as u64 * 4));
        }
        ctx.queue.submit([encoder.finish()]);
        self.build_phase(ctx, self.cfg.phase_at(self.step))?;
        self.init_ema(ctx);
        self.rng = ChaCha8Rng::seed_from_u64(self.cfg.seed);
        Ok(())
    }

    /// The scalars of step `t` (0-based): lr, weight decay, Adam bias corrections, mu, each
    /// counted within the step's phase.
    pub fn scalars_at(&self, t: u64) -> StepScalars {
        let phase = self.cfg.phase_at(t);
        super::schedule::step_scalars(&phase.cfg, t - phase.start)
    }

    /// The EMA copy of the weights, evaluated instead of them when there is one.
    pub fn ema_net(&self) -> Option<&WideResNet> {
        self.update.ema_net.as_ref()
    }

    /// The labeled target images drawn from in semi-supervised domain adaptation (the config's
    /// `labeled_target_batch` per step); required when that is positive.
    pub fn set_labeled_target(&mut self, data: crate::data::Dataset) -> Result<()> {
        if data.labels.is_none() || data.is_empty() {
            bail!("{}: the labeled target set needs labeled images", data.name);
        }
        self.labeled_target = Some(data);
        Ok(())
    }

    /// Draws the next step's batch and random parameters from the host RNG (see
    /// [`super::batch::draw_batch`] for the order).
    pub fn draw_batch(&mut self, source: &dyn ImageSource, target: &dyn ImageSource) -> Result<HostBatch> {
        let labeled_target = self.labeled_target.as_ref();
        super::batch::draw_batch(
            &mut self.rng,
            &self.phase.cfg,
            labeled_target,
            self.loss.lambdas(),
            source,
            target,
        )
    }

    /// Uploads a batch and the scalars of the current step (small writes, no readback).
    fn upload_batch(&mut self, ctx: &GpuContext, batch: &HostBatch) -> Result<()> {
        let (classes, uses_target) = (self.cfg.network.num_classes, self.phase.cfg.algorithm.uses_target());
        self.inputs.upload(ctx, batch, classes, uses_target)?;
        self.loss.upload(ctx, batch);
        let scalars = super::schedule::step_scalars(&self.phase.cfg, self.step - self.phase.start);
        self.last_lr = scalars.lr;
        self.last_target_labels.clone_from(&batch.target_labels);
        optimizer::write_step_scalars(ctx, &self.scalars, &scalars);
        Ok(())
    }

    /// Replaces the (fresh) network's parameters and running statistics with `w`'s, which must
    /// describe the same network and input scaling, and starts the EMA copy from them.
    pub fn load_weights(&self, ctx: &GpuContext, w: &Weights) -> Result<()> {
        // The tensors do not depend on the image side (global pooling before the head), so
        // weights trained at one side start a run at another.
        let at_this_side = crate::network::WideResNetConfig {
            image_size: self.cfg.network.image_size,
            ..w.config.clone()
        };
        if at_this_side != self.cfg.network {
            bail!(
                "the weights are a {} network, this run trains a {}: give the weights' architecture \
                 (--depth, --width, ...) or the preset it was trained with",
                w.config.describe(),
                self.cfg.network.describe()
            );
        }
        if w.input_scale != self.cfg.input_scale {
            bail!(
                "the weights expect input scaling '{}', this run uses '{}'",
                w.input_scale.name(),
                self.cfg.input_scale.name()
            );
        }
        ctx.queue
            .write_buffer(&self.net.params, 0, bytemuck::cast_slice(&w.params));
        ctx.queue
            .write_buffer(&self.net.running, 0, bytemuck::cast_slice(&w.running));
        self.init_ema(ctx);
        Ok(())
    }

    /// Forgets the batch-norm calibration made at this step: the weights or the data it was
    /// drawn from changed.
    pub fn forget_calibration(&mut self) {
        if let Some(cal) = &mut self.calibration {
            cal.forget();
        }
    }

    /// Copies the raw weights into the EMA copy ([`Trainer::new`] and [`Trainer::load_weights`]
    /// do; after anything else that writes the weights, call it).
    pub fn init_ema(&self, ctx: &GpuContext) {
        if let Some(ema) = &self.update.ema_net {
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&self.net.params, 0, &ema.params, 0, self.net.params.size());
            encoder.copy_buffer_to_buffer(&self.net.running, 0, &ema.running, 0, self.net.running.size());
            ctx.queue.submit([encoder.finish()]);
        }
    }

    /// [`Trainer::step_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn step(&mut self, ctx: &GpuContext, source: &dyn ImageSource, target: &dyn ImageSource) -> Result<()> {
        pollster::block_on(self.step_async(ctx, source, target))
    }

    /// Runs one optimizer step on a batch drawn from the RNG (submitted, not waited for),
    /// starting the adaptation phase first when it is due (which waits for the GPU).
    pub async fn step_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<()> {
        if self.adaptation_due() {
            self.start_adaptation_async(ctx, source, target).await?;
        }
        let batch = self.draw_batch(source, target)?;
        self.step_with(ctx, &batch)
    }

    /// The passes of one step: (main forward, second forward, main backward, second backward).
    fn pass_kinds(&self) -> (Pass, Pass, Pass, Pass) {
        let second_batch_stats = self.cfg.source_pass_bn == SourcePassBn::Train;
        let second_fwd = if second_batch_stats {
            Pass::ForwardTrain { update_running: false }
        } else {
            Pass::ForwardInference
        };
        (
            Pass::ForwardTrain { update_running: true },
            second_fwd,
            Pass::Backward {
                batch_stats: true,
                accumulate: false,
            },
            Pass::Backward {
                batch_stats: second_batch_stats,
                accumulate: true,
            },
        )
    }

    /// Every op of one step in recording order, grouped in phases (built on the first call).
    /// [`Trainer::step_with`] records exactly these; `bench --step` times them one by one.
    pub fn step_phases(&mut self, ctx: &GpuContext) -> Vec<StepPhase<'_>> {
        let (main_fwd, second_fwd, main_bwd, second_bwd) = self.pass_kinds();
        self.main.ops(ctx, &self.net, main_fwd);
        self.main.ops(ctx, &self.net, main_bwd);
        if let Some(second) = self.loss.second_pass_mut() {
            second.ops(ctx, &self.net, second_fwd);
            second.ops(ctx, &self.net, second_bwd);
        }
        fn built(ws: &Workspace, pass: Pass) -> Vec<&Op> {
            ws.built_ops(pass).expect("pass built above").iter().collect()
        }
        fn phase<'a>(name: &'static str, main_pass: bool, ops: Vec<&'a Op>) -> StepPhase<'a> {
            StepPhase { name, main_pass, ops }
        }
        let joint = self.phase.cfg.algorithm.uses_target();
        let mut phases = vec![
            phase("augment", false, self.inputs.aug_ops.iter().collect()),
            phase(
                if joint { "forward (joint)" } else { "forward (source)" },
                true,
                built(&self.main, main_fwd),
            ),
        ];
        if let Some(second) = self.loss.second_pass() {
            phases.push(phase("forward (source)", false, built(second, second_fwd)));
        }
        phases.push(phase("loss", false, self.loss.ops().iter().collect()));
        phases.push(phase(
            if joint { "backward (joint)" } else { "backward (source)" },
            true,
            built(&self.main, main_bwd),
        ));
        if let Some(second) = self.loss.second_pass() {
            phases.push(phase("backward (source)", false, built(second, second_bwd)));
        }
        phases.push(phase("update", false, self.update.ops.iter().collect()));
        phases
    }

    /// Runs one optimizer step on the given batch (submitted, not waited for).
    pub fn step_with(&mut self, ctx: &GpuContext, batch: &HostBatch) -> Result<()> {
        if self.adaptation_due() {
            bail!(
                "step {}: the adaptation phase starts here (Trainer::step_async starts it)",
                self.step
            );
        }
        self.forget_calibration();
        self.upload_batch(ctx, batch)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for phase in self.step_phases(ctx) {
                for op in phase.ops {
                    op.record(&mut pass);
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);
        self.step += 1;
        Ok(())
    }

    /// [`Trainer::metrics_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn metrics(&self, ctx: &GpuContext) -> Result<StepMetrics> {
        pollster::block_on(self.metrics_async(ctx))
    }

    /// Reads the last step's metrics (waits for the GPU; call at the logging interval only).
    pub async fn metrics_async(&self, ctx: &GpuContext) -> Result<StepMetrics> {
        let g = self.update.grad_metrics.read_f32_async(ctx).await?;
        let mut m = StepMetrics {
            step: self.step,
            lr: self.last_lr,
            grad_norm: g[0].sqrt(),
            non_finite: g[1] != 0.0,
            ..Default::default()
        };
        self.loss.read_metrics(ctx, &mut m, &self.last_target_labels).await?;
        m.non_finite |= !m.loss.total_loss.is_finite();
        Ok(m)
    }

    /// The network used for evaluation and export: the EMA copy when there is one.
    pub fn eval_net(&self) -> &WideResNet {
        self.update.ema_net.as_ref().unwrap_or(&self.net)
    }

    /// [`Trainer::calibrated_eval_net_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn calibrated_eval_net(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<&WideResNet> {
        pollster::block_on(self.calibrated_eval_net_async(ctx, source, target))
    }

    /// The network to evaluate and export now: [`Trainer::eval_net`], or with `bn_calibration`
    /// a copy of it whose batch-norm statistics are recomputed for its weights (see
    /// [`BnCalibration`]). The batches come from their own RNG, seeded by the run's seed and the
    /// step, so training draws the same batches with or without calibration.
    pub async fn calibrated_eval_net_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
    ) -> Result<&WideResNet> {
        let eval = self.update.ema_net.as_ref().unwrap_or(&self.net);
        match &mut self.calibration {
            Some(cal) => {
                let local = self.step - self.phase.start;
                let data = (source, self.labeled_target.as_ref(), target);
                cal.run(ctx, &self.phase.cfg, eval, local, data).await
            }
            None => Ok(eval),
        }
    }

    /// The metadata of an exported weights file besides the network and input scaling: the
    /// step, preset, which weights (EMA or raw), the calibration and the class names.
    pub fn export_metadata(&self, classes: &[String]) -> Result<BTreeMap<String, String>> {
        let cfg = &self.cfg;
        let mut extra = BTreeMap::new();
        extra.insert("step".to_string(), self.step.to_string());
        extra.insert("preset".to_string(), cfg.preset.clone());
        let which = if cfg.ema.is_some() { "ema" } else { "raw" };
        extra.insert("weights".to_string(), which.to_string());
        if cfg.bn_calibration > 0 {
            extra.insert("bn_calibration".to_string(), cfg.bn_calibration.to_string());
        }
        extra.insert("classes".to_string(), serde_json::to_string(classes)?);
        Ok(extra)
    }

    /// The weights file (`.safetensors` bytes) `train` writes as `model.safetensors` at this
    /// step: the calibrated evaluation network with [`Trainer::export_metadata`].
    pub async fn export_weights_async(
        &mut self,
        ctx: &GpuContext,
        source: &dyn ImageSource,
        target: &dyn ImageSource,
        classes: &[String],
    ) -> Result<Vec<u8>> {
        let extra = self.export_metadata(classes)?;
        let scale = self.cfg.input_scale;
        let net = self.calibrated_eval_net_async(ctx, source, target).await?;
        let params = net.read_params_async(ctx).await?;
        let running = net.read_running_async(ctx).await?;
        crate::weights::to_bytes(net, &params, &running, scale, &extra)
    }

    /// Every piece of GPU state a checkpoint must hold, by name (flat f32 tensors).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "params".to_string(),
                Tensor::view(&self.net.params, 0, &[self.net.params_len()]),
            ),
            (
                "running".to_string(),
                Tensor::view(&self.net.running, 0, &[self.net.running_len()]),
            ),
        ];
        for (name, t) in self.update.opt.tensors() {
            out.push((name.to_string(), t.clone()));
        }
        if let Some(ema) = &self.update.ema_net {
            out.push(("ema.params".into(), Tensor::view(&ema.params, 0, &[ema.params_len()])));
            out.push((
                "ema.running".into(),
                Tensor::view(&ema.running, 0, &[ema.running_len()]),
            ));
        }
        for (name, t) in self.loss.state_tensors() {
            out.push((name.to_string(), t.clone()));
        }
        out
    }
}
