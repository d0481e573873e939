//! Activations for one batch size and the recorded ops of each pass over them.

use std::collections::HashMap;

use crate::gpu::{GpuContext, Op, Tensor};
use crate::kernels::batchnorm::{
    batchnorm_apply, batchnorm_backward, batchnorm_scratch_len, batchnorm_stats, BatchNormBackward, BatchNormShape,
};
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weights, conv2d_backward_weights_scratch_len, conv2d_forward, Conv2dShape,
};
use crate::kernels::dense::{dense_backward, dense_forward};
use crate::kernels::pool::{global_avg_pool_backward, global_avg_pool_forward};

use super::*;

/// Which pass to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Batch norm with batch statistics; `update_running` folds them into the running stats.
    ForwardTrain { update_running: bool },
    /// Batch norm with running statistics.
    ForwardInference,
    /// Gradients of the loss whose logit gradient is in [`Workspace::d_logits`], for a
    /// preceding forward pass of the matching mode. `accumulate` adds to `grads` instead of
    /// overwriting them (the second backward of an AdaMatch step).
    Backward { batch_stats: bool, accumulate: bool },
}

/// Activations for one batch size, the gradient scratch buffers, and the ops of each pass.
pub struct Workspace {
    pub batch: usize,
    /// Input images, NHWC f32 (already scaled).
    pub input: Tensor,
    /// Output logits [batch, classes].
    pub logits: Tensor,
    /// Gradient of the loss w.r.t. the logits, written by the caller's loss before a backward.
    pub d_logits: Tensor,
    /// Gradient w.r.t. the input, when the workspace was made with `input_grad`.
    pub d_input: Option<Tensor>,
    /// acts[0] = stem output; acts[b + 1] = block b output.
    acts: Vec<Tensor>,
    u1: Vec<Tensor>,
    h1: Vec<Tensor>,
    u2: Vec<Tensor>,
    sc: Vec<Option<Tensor>>,
    u_head: Tensor,
    pooled: Tensor,
    d_pooled: Tensor,
    /// Batch statistics (mean, var) of each BN layer in training mode, keyed by gamma index.
    stats: HashMap<usize, (Tensor, Tensor)>,
    /// Gradient scratch per activation shape (h, w, c): [dx, dx', du, dh].
    grad_pool: HashMap<(usize, usize, usize), [Tensor; 4]>,
    /// The split-K partial sums of every layer's weight gradient, one after another in the
    /// backward pass: one buffer of the largest layer's need, made with the first backward pass.
    dw_scratch: Option<Tensor>,
    /// The same for batch norm's partial sums and coefficients, made with the first pass that
    /// computes batch statistics or gradients.
    bn_scratch: Option<Tensor>,
    passes: HashMap<Pass, Vec<Op>>,
    /// The parameter buffer of the network `passes` bind (ops of another network are rebuilt).
    built_for: Option<wgpu::Buffer>,
}

impl Workspace {
    pub fn new(ctx: &GpuContext, net: &WideResNet, batch: usize, input_grad: bool) -> Workspace {
        let s = net.config.image_size;
        let input = Tensor::zeros(ctx, "input", &[batch, s, s, 3]);
        Self::with_input(ctx, net, input, input_grad)
    }

    /// A workspace reading its images from `input` ([batch, size, size, 3]), e.g. a row range of
    /// another workspace's input: the AdaMatch source pass reads the joint pass's first rows.
    pub fn with_input(ctx: &GpuContext, net: &WideResNet, input: Tensor, input_grad: bool) -> Workspace {
        let s = net.config.image_size;
        let batch = input.shape[0];
        assert_eq!(
            input.shape,
            vec![batch, s, s, 3],
            "workspace input must be [batch, {s}, {s}, 3]"
        );
        let t = |name: &str, hw: usize, c: usize| Tensor::zeros(ctx, name, &[batch, hw, hw, c]);
        let acts_shape = |i: usize| -> (usize, usize) {
            if i == 0 {
                (s, net.stem.out_c)
            } else {
                let b = &net.blocks[i - 1];
                (b.out_hw, b.conv2.out_c)
            }
        };
        let acts: Vec<Tensor> = (0..=net.blocks.len())
            .map(|i| {
                let (hw, c) = acts_shape(i);
                t(&format!("act{i}"), hw, c)
            })
            .collect();
        let u1 = net.blocks.iter().map(|b| t("u1", b.in_hw, b.conv1.in_c)).collect();
        let h1 = net.blocks.iter().map(|b| t("h1", b.out_hw, b.conv1.out_c)).collect();
        let u2 = net.blocks.iter().map(|b| t("u2", b.out_hw, b.conv2.in_c)).collect();
        let sc = net
            .blocks
            .iter()
            .map(|b| b.shortcut.map(|c| t("shortcut", b.out_hw, c.out_c)))
            .collect();
        let mut stats = HashMap::new();
        let mut bns = vec![net.head_bn];
        for b in &net.blocks {
            bns.push(b.bn1);
            bns.push(b.bn2);
        }
        for bn in bns {
            stats.insert(
                bn.gamma,
                (
                    Tensor::zeros(ctx, "bn mean", &[bn.channels]),
                    Tensor::zeros(ctx, "bn var", &[bn.channels]),
                ),
            );
        }
        let mut grad_pool = HashMap::new();
        for i in 0..=net.blocks.len() {
            let (hw, c) = acts_shape(i);
            grad_pool.entry((hw, hw, c)).or_insert_with(|| {
                [
                    t("grad dx", hw, c),
                    t("grad dx'", hw, c),
                    t("grad du", hw, c),
                    t("grad dh", hw, c),
                ]
            });
        }
        for b in &net.blocks {
            let (hw, c) = (b.in_hw, b.conv1.in_c);
            grad_pool.entry((hw, hw, c)).or_insert_with(|| {
                [
                    t("grad dx", hw, c),
                    t("grad dx'", hw, c),
                    t("grad du", hw, c),
                    t("grad dh", hw, c),
                ]
            });
        }
        let classes = net.config.num_classes;
        Workspace {
            batch,
            input,
            logits: Tensor::zeros(ctx, "logits", &[batch, classes]),
            d_logits: Tensor::zeros(ctx, "d_logits", &[batch, classes]),
            d_input: input_grad.then(|| t("d_input", s, 3)),
            acts,
            u1,
            h1,
            u2,
            sc,
            u_head: t("u_head", net.final_hw, net.final_c),
            pooled: Tensor::zeros(ctx, "pooled", &[batch, net.final_c]),
            d_pooled: Tensor::zeros(ctx, "d_pooled", &[batch, net.final_c]),
            stats,
            grad_pool,
            dw_scratch: None,
            bn_scratch: None,
            passes: HashMap::new(),
            built_for: None,
        }
    }

    /// Every batch norm of `net` with its side: each block's two, then the head's.
    fn batch_norms(net: &WideResNet) -> Vec<(BnLayer, usize)> {
        let mut bns: Vec<(BnLayer, usize)> = net
            .blocks
            .iter()
            .flat_map(|b| [(b.bn1, b.in_hw), (b.bn2, b.out_hw)])
            .collect();
        bns.push((net.head_bn, net.final_hw));
        bns
    }

    /// The ops of `pass`, built on first use and reused afterwards.
    pub fn ops(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass) -> &[Op] {
        if self.built_for.as_ref() != Some(&net.params) {
            // Another network of the same architecture (an evaluator given a new copy): the ops
            // bind its buffers.
            self.passes.clear();
            self.built_for = Some(net.params.clone());
        }
        if !self.passes.contains_key(&pass) {
            #[cfg(not(target_arch = "wasm32"))]
            if ctx.profile.tunes_tiles() {
                // The tiled path's tiles are chosen before the first ops that use them are made.
                use crate::kernels::conv2d::ConvPass;
                let passes: &[ConvPass] = match pass {
                    Pass::Backward { .. } => &ConvPass::ALL,
                    _ => &[ConvPass::Forward],
                };
                crate::autotune::tune_or_warn(ctx, &net.conv_shapes(self.batch), passes);
            }
            if matches!(pass, Pass::Backward { .. }) && self.dw_scratch.is_none() {
                let len = net
                    .conv_shapes(self.batch)
                    .iter()
                    .map(|s| conv2d_backward_weights_scratch_len(ctx, s))
                    .max()
                    .unwrap_or(1);
                self.dw_scratch = Some(Tensor::zeros(ctx, "conv2d dw partials", &[len]));
            }
            if !matches!(pass, Pass::ForwardInference) && self.bn_scratch.is_none() {
                let len = Self::batch_norms(net)
                    .iter()
                    .map(|(bn, hw)| batchnorm_scratch_len(ctx, &self.bn_shape(*hw, bn.channels)))
                    .max()
                    .unwrap_or(1);
                self.bn_scratch = Some(Tensor::zeros(ctx, "batchnorm partials", &[len]));
            }
            let ops = match pass {
                Pass::ForwardTrain { update_running } => self.build_forward(ctx, net, Some(update_running)),
                Pass::ForwardInference => self.build_forward(ctx, net, None),
                Pass::Backward {
                    batch_stats,
                    accumulate,
                } => self.build_backward(ctx, net, batch_stats, accumulate),
            };
            self.passes.insert(pass, ops);
        }
        &self.passes[&pass]
    }

    /// The ops of `pass` if [`Workspace::ops`] has built them (a shared borrow, so the ops of
    /// several passes can be held at once).
    pub fn built_ops(&self, pass: Pass) -> Option<&[Op]> {
        self.passes.get(&pass).map(|v| v.as_slice())
    }

    /// Records `pass` into an open compute pass.
    pub fn record(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass, cpass: &mut wgpu::ComputePass<'_>) {
        for op in self.ops(ctx, net, pass) {
            op.record(cpass);
        }
    }

    /// Records `pass` into one command encoder and submits it (not waited for: a readback after
    /// it sees its results).
    pub fn submit(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass) {
        let ops: Vec<&Op> = self.ops(ctx, net, pass).iter().collect();
        ctx.submit(&ops);
    }

    /// Runs `pass` now and waits (native only; tests, predict and eval).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&mut self, ctx: &GpuContext, net: &WideResNet, pass: Pass) -> anyhow::Result<()> {
        self.submit(ctx, net, pass);
        ctx.wait()
    }

    fn bn_shape(&self, hw: usize, c: usize) -> BatchNormShape {
        BatchNormShape {
            rows: self.batch * hw * hw,
            channels: c,
        }
    }

    /// BN (+ activation) forward of `x` into `y`. `update_running`: None = inference mode.
    #[allow(clippy::too_many_arguments)]
    fn bn_forward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        bn: &BnLayer,
        hw: usize,
        x: &Tensor,
        y: &Tensor,
        update_running: Option<bool>,
        ops: &mut Vec<Op>,
    ) {
        let shape = self.bn_shape(hw, bn.channels);
        let (rm, rv) = (net.running_tensor(bn.running_mean), net.running_tensor(bn.running_var));
        let (mean, var) = match update_running {
            Some(update) => {
                let (m, v) = &self.stats[&bn.gamma];
                ops.extend(batchnorm_stats(
                    ctx,
                    &shape,
                    x,
                    m,
                    v,
                    &rm,
                    &rv,
                    net.config.bn_momentum,
                    update,
                    self.bn_scratch.as_ref(),
                ));
                (m.clone(), v.clone())
            }
            None => (rm, rv),
        };
        let (g, b) = (net.param(bn.gamma), net.param(bn.beta));
        let cfg = &net.config;
        ops.push(batchnorm_apply(
            ctx,
            &shape,
            x,
            &mean,
            &var,
            &g,
            &b,
            y,
            cfg.bn_eps,
            cfg.activation.slope(),
        ));
    }

    fn conv_shape(&self, c: &ConvLayer, in_hw: usize) -> Conv2dShape {
        c.shape(self.batch, in_hw)
    }

    fn build_forward(&self, ctx: &GpuContext, net: &WideResNet, update_running: Option<bool>) -> Vec<Op> {
        let mut ops = self.build_forward_untagged(ctx, net, update_running);
        tag_details(&mut ops, self.batch);
        ops
    }

    fn build_backward(&self, ctx: &GpuContext, net: &WideResNet, batch_stats: bool, accumulate: bool) -> Vec<Op> {
        let mut ops = self.build_backward_untagged(ctx, net, batch_stats, accumulate);
        tag_details(&mut ops, self.batch);
        ops
    }

    /// `y = conv(x) [+ residual]` of layer `c` at input side `hw`, tagged with its shape.
    #[allow(clippy::too_many_arguments)]
    fn conv_forward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        c: &ConvLayer,
        hw: usize,
        x: &Tensor,
        y: &Tensor,
        residual: Option<&Tensor>,
    ) -> Vec<Op> {
        let shape = self.conv_shape(c, hw);
        tagged(
            [conv2d_forward(ctx, &shape, x, &net.param(c.weight), y, residual)],
            &shape,
        )
    }

    /// Layer `c`'s weight gradient from its input `x` and output gradient `dy`.
    #[allow(clippy::too_many_arguments)]
    fn conv_weight_grad(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        c: &ConvLayer,
        hw: usize,
        x: &Tensor,
        dy: &Tensor,
        accumulate: bool,
    ) -> Vec<Op> {
        let shape = self.conv_shape(c, hw);
        let dw = net.grad(c.weight);
        tagged(
            conv2d_backward_weights(ctx, &shape, x, dy, &dw, accumulate, self.dw_scratch.as_ref()),
            &shape,
        )
    }

    /// Layer `c`'s input gradient from `dy`, into `dx` (`add`: onto what `dx` holds).
    #[allow(clippy::too_many_arguments)]
    fn conv_data_grad(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        c: &ConvLayer,
        hw: usize,
        dy: &Tensor,
        dx: &Tensor,
        add: bool,
    ) -> Vec<Op> {
        let shape = self.conv_shape(c, hw);
        tagged(
            [conv2d_backward_data(ctx, &shape, dy, &net.param(c.weight), dx, add)],
            &shape,
        )
    }

    fn build_forward_untagged(&self, ctx: &GpuContext, net: &WideResNet, update_running: Option<bool>) -> Vec<Op> {
        let s = net.config.image_size;
        let mut ops = self.conv_forward(ctx, net, &net.stem, s, &self.input, &self.acts[0], None);
        for (i, b) in net.blocks.iter().enumerate() {
            self.block_forward(ctx, net, i, b, update_running, &mut ops);
        }
        let last = self.acts.last().unwrap();
        let (hw, c) = (net.final_hw, net.final_c);
        self.bn_forward(ctx, net, &net.head_bn, hw, last, &self.u_head, update_running, &mut ops);
        ops.push(global_avg_pool_forward(
            ctx,
            self.batch,
            hw * hw,
            c,
            &self.u_head,
            &self.pooled,
        ));
        let (w, bias) = (net.param(net.dense_w), net.param(net.dense_b));
        let classes = net.config.num_classes;
        ops.push(dense_forward(
            ctx,
            self.batch,
            c,
            classes,
            &self.pooled,
            &w,
            &bias,
            &self.logits,
        ));
        ops
    }

    fn build_backward_untagged(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        batch_stats: bool,
        accumulate: bool,
    ) -> Vec<Op> {
        let mut ops = Vec::new();
        let (hw, c) = (net.final_hw, net.final_c);
        let (w, classes) = (net.param(net.dense_w), net.config.num_classes);
        let (dw, db) = (net.grad(net.dense_w), net.grad(net.dense_b));
        let (x, dz, dx) = (&self.pooled, &self.d_logits, &self.d_pooled);
        ops.extend(dense_backward(
            ctx, self.batch, c, classes, x, &w, dz, dx, &dw, &db, accumulate,
        ));
        let du_head = &self.pool(hw, c)[2];
        ops.push(global_avg_pool_backward(
            ctx,
            self.batch,
            hw * hw,
            c,
            &self.d_pooled,
            du_head,
            false,
        ));
        let mut d_out = self.pool(hw, c)[0].clone();
        let last = self.acts.last().unwrap();
        let head = &net.head_bn;
        self.bn_backward(
            ctx,
            net,
            head,
            hw,
            last,
            du_head,
            &d_out,
            None,
            batch_stats,
            accumulate,
            &mut ops,
        );
        for (i, b) in net.blocks.iter().enumerate().rev() {
            d_out = self.block_backward(ctx, net, i, b, d_out, (batch_stats, accumulate), &mut ops);
        }
        let s = net.config.image_size;
        ops.extend(self.conv_weight_grad(ctx, net, &net.stem, s, &self.input, &d_out, accumulate));
        if let Some(d_input) = &self.d_input {
            ops.extend(self.conv_data_grad(ctx, net, &net.stem, s, &d_out, d_input, false));
        }
        ops
    }

    /// Block `i`'s forward: BN-act, conv1, BN-act, conv2 with the shortcut (projection or
    /// identity) added in conv2's epilogue.
    fn block_forward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        i: usize,
        b: &Block,
        update_running: Option<bool>,
        ops: &mut Vec<Op>,
    ) {
        let x = &self.acts[i];
        self.bn_forward(ctx, net, &b.bn1, b.in_hw, x, &self.u1[i], update_running, ops);
        // What the shortcut (projection or identity) reads.
        let sc_in = if b.shortcut_activated { &self.u1[i] } else { x };
        if let (Some(sc), Some(sc_out)) = (&b.shortcut, &self.sc[i]) {
            ops.extend(self.conv_forward(ctx, net, sc, b.in_hw, sc_in, sc_out, None));
        }
        ops.extend(self.conv_forward(ctx, net, &b.conv1, b.in_hw, &self.u1[i], &self.h1[i], None));
        self.bn_forward(
            ctx,
            net,
            &b.bn2,
            b.out_hw,
            &self.h1[i],
            &self.u2[i],
            update_running,
            ops,
        );
        // The residual add is fused into conv2's epilogue.
        let residual = self.sc[i].as_ref().unwrap_or(sc_in);
        let out = &self.acts[i + 1];
        ops.extend(self.conv_forward(ctx, net, &b.conv2, b.out_hw, &self.u2[i], out, Some(residual)));
    }

    /// Block `i`'s backward from the gradient at its output `d_out`; returns the gradient at
    /// its input. `(batch_stats, accumulate)` as in [`Pass::Backward`].
    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        i: usize,
        b: &Block,
        d_out: Tensor,
        (batch_stats, accumulate): (bool, bool),
        ops: &mut Vec<Op>,
    ) -> Tensor {
        let out_pool = self.pool(b.out_hw, b.conv2.out_c);
        let in_pool = self.pool(b.in_hw, b.conv1.in_c);
        let (du2, dh1) = (&out_pool[2], &out_pool[3]);
        ops.extend(self.conv_weight_grad(ctx, net, &b.conv2, b.out_hw, &self.u2[i], &d_out, accumulate));
        ops.extend(self.conv_data_grad(ctx, net, &b.conv2, b.out_hw, &d_out, du2, false));
        let h1 = &self.h1[i];
        self.bn_backward(
            ctx,
            net,
            &b.bn2,
            b.out_hw,
            h1,
            du2,
            dh1,
            None,
            batch_stats,
            accumulate,
            ops,
        );
        // An identity shortcut from u1 (official rule, stage 1 block 0 at width 1) sends d_out
        // to u1: conv1's data gradient is added onto d_out in place (no longer needed as
        // itself), which is then u1's whole gradient. Otherwise u1's gradient has its own buffer.
        let identity_from_u1 = b.shortcut.is_none() && b.shortcut_activated;
        let du1 = if identity_from_u1 { &d_out } else { &in_pool[2] };
        ops.extend(self.conv_weight_grad(ctx, net, &b.conv1, b.in_hw, &self.u1[i], dh1, accumulate));
        ops.extend(self.conv_data_grad(ctx, net, &b.conv1, b.in_hw, dh1, du1, identity_from_u1));
        let sc_in = if b.shortcut_activated {
            &self.u1[i]
        } else {
            &self.acts[i]
        };
        if let Some(sc) = &b.shortcut {
            ops.extend(self.conv_weight_grad(ctx, net, sc, b.in_hw, sc_in, &d_out, accumulate));
            if b.shortcut_activated {
                // The projection's data gradient, added into the gradient of what it read.
                ops.extend(self.conv_data_grad(ctx, net, sc, b.in_hw, &d_out, du1, true));
            }
        }
        let d_in = other_grad_buffer(in_pool, &d_out);
        // An identity shortcut from the raw input adds d_out to its gradient.
        let addend = (b.shortcut.is_none() && !b.shortcut_activated).then_some(&d_out);
        let x = &self.acts[i];
        self.bn_backward(
            ctx,
            net,
            &b.bn1,
            b.in_hw,
            x,
            du1,
            &d_in,
            addend,
            batch_stats,
            accumulate,
            ops,
        );
        // A projection from the raw input adds its data gradient after batch norm 1's
        // backward has written the block input's gradient.
        if let Some(sc) = b.shortcut.as_ref().filter(|_| !b.shortcut_activated) {
            ops.extend(self.conv_data_grad(ctx, net, sc, b.in_hw, &d_out, &d_in, true));
        }
        d_in
    }

    /// BN backward of `x` (BN input) with `dy` (gradient at the activation output) into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        &self,
        ctx: &GpuContext,
        net: &WideResNet,
        bn: &BnLayer,
        hw: usize,
        x: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        addend: Option<&Tensor>,
        batch_stats: bool,
        accumulate: bool,
        ops: &mut Vec<Op>,
    ) {
        let shape = self.bn_shape(hw, bn.channels);
        let (mean, var) = if batch_stats {
            self.stats[&bn.gamma].clone()
        } else {
            (net.running_tensor(bn.running_mean), net.running_tensor(bn.running_var))
        };
        let (gamma, beta) = (net.param(bn.gamma), net.param(bn.beta));
        let (dgamma, dbeta) = (net.grad(bn.gamma), net.grad(bn.beta));
        ops.extend(batchnorm_backward(
            ctx,
            &shape,
            &BatchNormBackward {
                x,
                dy,
                mean: &mean,
                var: &var,
                gamma: &gamma,
                beta: &beta,
                dx,
                dgamma: &dgamma,
                dbeta: &dbeta,
                addend,
                eps: net.config.bn_eps,
                slope: net.config.activation.slope(),
                batch_stats,
                accumulate_params: accumulate,
                scratch: self.bn_scratch.as_ref(),
            },
        ));
    }

    fn pool(&self, hw: usize, c: usize) -> &[Tensor; 4] {
        &self.grad_pool[&(hw, hw, c)]
    }
}

/// The gradient-buffer aliasing rule: a block input's gradient goes to whichever of the two dx
/// buffers of its shape (`pool[0]`, `pool[1]`) the block output's gradient `d_out` is not, so
/// the two never alias while the block's backward reads one and writes the other.
fn other_grad_buffer(pool: &[Tensor; 4], d_out: &Tensor) -> Tensor {
    if pool[0].buffer == d_out.buffer {
        pool[1].clone()
    } else {
        pool[0].clone()
    }
}

/// Gives ops without a description one from their dispatch size, so benchmark rows of the same
/// kernel at different shapes can be told apart.
fn tag_details(ops: &mut [Op], batch: usize) {
    for op in ops.iter_mut() {
        if op.detail.is_empty() {
            op.detail = format!("batch {batch}, grid {:?}", op.workgroups);
        }
    }
}

/// "3x3/2 64x32x32x32->64": kernel, stride, input NHWC and output channels.
pub fn conv_detail(s: &Conv2dShape) -> String {
    format!(
        "{k}x{k}/{} {}x{}x{}x{}->{}",
        s.stride,
        s.batch,
        s.in_h,
        s.in_w,
        s.in_c,
        s.out_c,
        k = s.kernel
    )
}

fn tagged(ops: impl IntoIterator<Item = Op>, s: &Conv2dShape) -> Vec<Op> {
    ops.into_iter().map(|op| op.with_detail(conv_detail(s))).collect()
}
