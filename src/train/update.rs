//! The end of a step: the gradient check, the optimizer with its state, and the EMA of the
//! weights, as one part that owns its tensors.

use anyhow::Result;

use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::optimizer;
use crate::network::WideResNet;

use super::config::{Optimizer, TrainConfig};

/// Optimizer state, same flat layout as the parameters.
pub enum OptState {
    Sgd { velocity: Tensor },
    Adam { m: Tensor, v: Tensor },
}

impl OptState {
    /// Named state tensors, for checkpoints.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            OptState::Sgd { velocity } => vec![("opt.velocity", velocity)],
            OptState::Adam { m, v } => vec![("opt.m", m), ("opt.v", v)],
        }
    }
}

/// The update ops after the backward passes and what they keep between steps.
pub(super) struct Update {
    /// Squared gradient norm and a non-finite flag, of the last step.
    pub(super) grad_metrics: Tensor,
    pub(super) opt: OptState,
    /// The EMA copy used for evaluation (None: evaluate the trained network).
    pub(super) ema_net: Option<WideResNet>,
    /// Gradient check, optimizer and EMA, in that order.
    pub(super) ops: Vec<Op>,
}

impl Update {
    /// The update of `net` by `cfg`'s optimizer, reading the step's `scalars` (lr, decay, bias
    /// corrections), and with `cfg.ema` an EMA copy of it.
    pub(super) fn new(ctx: &GpuContext, cfg: &TrainConfig, net: &WideResNet, scalars: &Tensor) -> Result<Update> {
        let p = net.params_len();
        let params = Tensor::view(&net.params, 0, &[p]);
        let grads = Tensor::view(&net.grads, 0, &[p]);
        let mask = Tensor::from_f32(ctx, "decay mask", &[p], &net.decay_mask());
        let grad_metrics = Tensor::zeros(ctx, "grad metrics", &[2]);
        let mut ops = optimizer::grad_check(ctx, &grads, &grad_metrics);
        let opt = match cfg.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                let velocity = Tensor::zeros(ctx, "sgd velocity", &[p]);
                ops.push(optimizer::sgd_step(
                    ctx, &params, &grads, &velocity, &mask, scalars, momentum, nesterov,
                ));
                OptState::Sgd { velocity }
            }
            Optimizer::Adam { beta1, beta2, eps } => {
                let m = Tensor::zeros(ctx, "adam m", &[p]);
                let v = Tensor::zeros(ctx, "adam v", &[p]);
                ops.push(optimizer::adam_step(
                    ctx, &params, &grads, &m, &v, &mask, scalars, beta1, beta2, eps,
                ));
                OptState::Adam { m, v }
            }
        };
        let ema_net = match cfg.ema {
            Some(decay) => {
                let ema = WideResNet::new(ctx, cfg.network.clone(), cfg.seed)?;
                let r = net.running_len();
                ops.push(optimizer::ema_update(
                    ctx,
                    &Tensor::view(&ema.params, 0, &[p]),
                    &params,
                    decay,
                ));
                ops.push(optimizer::ema_update(
                    ctx,
                    &Tensor::view(&ema.running, 0, &[r]),
                    &Tensor::view(&net.running, 0, &[r]),
                    decay,
                ));
                Some(ema)
            }
            None => None,
        };
        Ok(Update {
            grad_metrics,
            opt,
            ema_net,
            ops,
        })
    }
}
