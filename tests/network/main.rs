//! The whole WideResNet on the GPU against the f64 CPU reference network: forward in both BN
//! modes, every parameter's gradient and the input gradient, finite differences, determinism,
//! and the safetensors weight format, for both shortcut rules ([`ShortcutInput`]).

#[path = "../reference/mod.rs"]
mod reference;

mod gradients;
mod weights;

use std::sync::OnceLock;

use adamatch_wgpu::gpu::{AdapterChoice, GpuContext, Op, Tensor};
use adamatch_wgpu::kernels::softmax_ce::{softmax_ce_backward, softmax_ce_forward, Targets};
use adamatch_wgpu::network::{Activation, Pass, ShortcutInput, WideResNet, WideResNetConfig, Workspace};

pub use reference::network::named;
use reference::network::{RefConfig, RefShortcut};

pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new_blocking(&AdapterChoice::default()).expect("a GPU adapter for the network tests")
    })
}

/// A small WideResNet: depth 10 (one block per stage), odd image size so stride-2 stages see
/// odd spatial sizes (11 -> 6 -> 3). At width 1 stage 1's block is 16 -> 16 channels (identity
/// shortcut); at width 2 it is 16 -> 32 (projection).
pub fn small_config(activation: Activation, width: usize, shortcut: ShortcutInput) -> WideResNetConfig {
    WideResNetConfig {
        depth: 10,
        width,
        activation,
        bn_momentum: 0.9,
        bn_eps: 1e-3,
        num_classes: 10,
        image_size: 11,
        shortcut,
    }
}

pub fn ref_config(c: &WideResNetConfig) -> RefConfig {
    RefConfig {
        depth: c.depth,
        width: c.width,
        slope: c.activation.slope() as f64,
        eps: c.bn_eps as f64,
        momentum: c.bn_momentum as f64,
        classes: c.num_classes,
        image_size: c.image_size,
        shortcut: match c.shortcut {
            ShortcutInput::Activated => RefShortcut::Activated,
            ShortcutInput::Official => RefShortcut::Official,
        },
    }
}

/// A network whose BN parameters and running statistics are not the trivial 1/0, so every
/// formula term matters.
pub fn perturbed_net(ctx: &GpuContext, cfg: WideResNetConfig, seed: u64) -> WideResNet {
    let net = WideResNet::new(ctx, cfg, seed).unwrap();
    let mut params = net.initial_params(seed);
    let noise = reference::random_vec(seed + 100, params.len());
    for s in net.param_specs() {
        let name = &s.name;
        for i in s.offset..s.offset + s.len() {
            if name.ends_with("gamma") {
                params[i] = 1.0 + 0.3 * noise[i];
            } else if name.ends_with("beta") || name.ends_with("bias") {
                params[i] = 0.2 * noise[i];
            }
        }
    }
    net.write_params(ctx, &params);
    let mut running = net.initial_running();
    let rn = reference::random_vec(seed + 200, running.len());
    for s in net.running_specs() {
        for i in s.offset..s.offset + s.len() {
            running[i] = if s.name.ends_with("var") {
                1.0 + 0.5 * rn[i].abs()
            } else {
                0.3 * rn[i]
            };
        }
    }
    net.write_running(ctx, &running);
    net
}

/// Mean cross-entropy against `labels`: forward ops (loss into `loss`) and the backward op that
/// writes the workspace's logit gradient.
pub struct GpuLoss {
    pub loss: Tensor,
    forward: Vec<Op>,
    backward: Op,
}

impl GpuLoss {
    pub fn new(ctx: &GpuContext, ws: &Workspace, labels: &[u32], classes: usize) -> GpuLoss {
        let rows = labels.len();
        let labels = Tensor::from_u32(ctx, "labels", &[rows], labels);
        let weights = Tensor::from_f32(ctx, "row weights", &[rows], &vec![1.0; rows]);
        let row_loss = Tensor::zeros(ctx, "row loss", &[rows]);
        let loss = Tensor::zeros(ctx, "loss", &[1]);
        let scale = 1.0 / rows as f32;
        let forward = softmax_ce_forward(
            ctx,
            rows,
            classes,
            &ws.logits,
            Targets::Hard(&labels),
            &weights,
            scale,
            &row_loss,
            &loss,
        );
        let backward = softmax_ce_backward(
            ctx,
            rows,
            classes,
            &ws.logits,
            Targets::Hard(&labels),
            &weights,
            scale,
            &ws.d_logits,
            false,
        );
        GpuLoss {
            loss,
            forward,
            backward,
        }
    }

    /// Forward pass, loss and logit gradient, then `backward` when given. Returns the loss.
    pub fn run(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        ws: &mut Workspace,
        forward: Pass,
        backward: Option<Pass>,
    ) -> f32 {
        ws.run(ctx, net, forward).unwrap();
        let mut ops: Vec<&Op> = self.forward.iter().collect();
        ops.push(&self.backward);
        ctx.run(&ops).unwrap();
        if let Some(b) = backward {
            ws.run(ctx, net, b).unwrap();
        }
        self.loss.read_f32(ctx).unwrap()[0]
    }
}

/// A perturbed small network with a workspace holding seeded inputs and a cross-entropy loss
/// against seeded labels: the common setup of the GPU-only tests.
pub fn small_setup(
    activation: Activation,
    width: usize,
    shortcut: ShortcutInput,
    batch: usize,
    seed: u64,
    input_grad: bool,
) -> (WideResNetConfig, WideResNet, Workspace, GpuLoss) {
    let ctx = ctx();
    let cfg = small_config(activation, width, shortcut);
    let net = perturbed_net(ctx, cfg.clone(), seed);
    let ws = Workspace::new(ctx, &net, batch, input_grad);
    ws.input.write_f32(ctx, &input(&cfg, batch, seed));
    let loss = GpuLoss::new(ctx, &ws, &labels(batch, seed), cfg.num_classes);
    (cfg, net, ws, loss)
}

/// Training-mode backward that overwrites the gradients.
pub const BACKWARD: Pass = Pass::Backward {
    batch_stats: true,
    accumulate: false,
};

pub fn labels(batch: usize, seed: u64) -> Vec<u32> {
    (0..batch).map(|i| ((i as u64 * 7 + seed * 3) % 10) as u32).collect()
}

pub fn input(cfg: &WideResNetConfig, batch: usize, seed: u64) -> Vec<f32> {
    reference::random_vec(seed, batch * cfg.image_size * cfg.image_size * 3)
}
