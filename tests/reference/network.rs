//! CPU reference WideResNet in f64, composed from the per-layer references. It rebuilds the
//! architecture from REFERENCE.md on its own (stage widths, strides, shortcut rules: the Keras
//! example's and the official AdaMatch code's `shared/zoo/wideresnet.py`) and only
//! borrows the parameter *names* from the library, so a wrong structure on the GPU side shows up
//! as a missing name or a mismatch.

use std::collections::HashMap;

use adamatch_wgpu::kernels::conv2d::Conv2dShape;

use super::{batchnorm as bn, conv2d as conv, dense, pool, softmax_ce};

pub type Params = HashMap<String, Vec<f64>>;

/// Named tensors of a flat GPU buffer laid out as `specs` say, as f64.
pub fn named(specs: &[adamatch_wgpu::network::TensorSpec], flat: &[f32]) -> Params {
    specs
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                flat[s.offset..s.offset + s.len()].iter().map(|&v| v as f64).collect(),
            )
        })
        .collect()
}

/// What a block's shortcut reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefShortcut {
    /// Keras example: projections read the first BN-act output, identities the raw input.
    Activated,
    /// Official `WideResNetBlock`: `y = act(bn(x)); if activate_before_residual: x = y;
    /// if passthrough: x = passthrough(x); return x + residual(y)`, with
    /// `activate_before_residual` on the first block of stage 1 only.
    Official,
}

#[derive(Clone, Copy, Debug)]
pub struct RefConfig {
    pub depth: usize,
    pub width: usize,
    pub slope: f64,
    pub eps: f64,
    pub momentum: f64,
    pub classes: usize,
    pub image_size: usize,
    pub shortcut: RefShortcut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics; running statistics updated.
    Train,
    /// Running statistics.
    Inference,
}

/// What a forward pass keeps for backward: (layer name, BN input, BN output) and conv inputs.
pub struct Cache {
    batch: usize,
    input: Vec<f64>,
    acts: Vec<Vec<f64>>,
    u1: Vec<Vec<f64>>,
    h1: Vec<Vec<f64>>,
    u2: Vec<Vec<f64>>,
    u_head: Vec<f64>,
    pooled: Vec<f64>,
    mode: Mode,
}

struct BlockDesc {
    name: String,
    in_c: usize,
    out_c: usize,
    stride: usize,
    in_hw: usize,
    out_hw: usize,
    projection: bool,
    /// The shortcut (projection or identity) reads the first BN-act output, not the block input.
    activated: bool,
}

fn blocks(cfg: &RefConfig) -> Vec<BlockDesc> {
    let n = (cfg.depth - 4) / 6;
    let widths = [16, 16 * cfg.width, 32 * cfg.width, 64 * cfg.width];
    let mut hw = cfg.image_size;
    let mut out = Vec::new();
    for stage in 1..=3 {
        for b in 0..n {
            let in_c = if b == 0 { widths[stage - 1] } else { widths[stage] };
            let stride = if b == 0 && stage > 1 { 2 } else { 1 };
            let out_hw = hw.div_ceil(stride);
            let projection = in_c != widths[stage] || stride != 1;
            out.push(BlockDesc {
                name: format!("stage{stage}.block{b}"),
                in_c,
                out_c: widths[stage],
                stride,
                in_hw: hw,
                out_hw,
                projection,
                activated: match cfg.shortcut {
                    RefShortcut::Activated => projection,
                    RefShortcut::Official => stage == 1 && b == 0,
                },
            });
            hw = out_hw;
        }
    }
    out
}

fn shape(batch: usize, hw: usize, in_c: usize, out_c: usize, kernel: usize, stride: usize) -> Conv2dShape {
    Conv2dShape {
        batch,
        in_h: hw,
        in_w: hw,
        in_c,
        out_c,
        kernel,
        stride,
    }
}

fn get<'a>(p: &'a Params, name: &str) -> &'a [f64] {
    p.get(name)
        .unwrap_or_else(|| panic!("reference network: no parameter '{name}'"))
}

#[allow(clippy::too_many_arguments)]
fn bn_forward(
    cfg: &RefConfig,
    p: &Params,
    running: &mut Params,
    name: &str,
    x: &[f64],
    rows: usize,
    c: usize,
    mode: Mode,
) -> Vec<f64> {
    let (g, b) = (get(p, &format!("{name}.gamma")), get(p, &format!("{name}.beta")));
    match mode {
        Mode::Train => {
            let (y, mean, var) = bn::batchnorm_forward_train(x, rows, c, g, b, cfg.eps, cfg.slope);
            for (key, batch) in [("running_mean", &mean), ("running_var", &var)] {
                let r = running.get_mut(&format!("{name}.{key}")).unwrap();
                for (rv, bv) in r.iter_mut().zip(batch) {
                    *rv = cfg.momentum * *rv + (1.0 - cfg.momentum) * bv;
                }
            }
            y
        }
        Mode::Inference => {
            let m = get(running, &format!("{name}.running_mean"));
            let v = get(running, &format!("{name}.running_var"));
            bn::batchnorm_forward_inference(x, rows, c, g, b, m, v, cfg.eps, cfg.slope)
        }
    }
}

/// Logits for NHWC input `x` of `batch` images; updates `running` in training mode.
pub fn forward(
    cfg: &RefConfig,
    p: &Params,
    running: &mut Params,
    x: &[f64],
    batch: usize,
    mode: Mode,
) -> (Vec<f64>, Cache) {
    let s = cfg.image_size;
    let mut act = conv::conv2d_forward(x, get(p, "stem.conv"), &shape(batch, s, 3, 16, 3, 1));
    let mut cache = Cache {
        batch,
        input: x.to_vec(),
        acts: vec![],
        u1: vec![],
        h1: vec![],
        u2: vec![],
        u_head: vec![],
        pooled: vec![],
        mode,
    };
    for b in blocks(cfg) {
        let rows_in = batch * b.in_hw * b.in_hw;
        let rows_out = batch * b.out_hw * b.out_hw;
        let u1 = bn_forward(cfg, p, running, &format!("{}.bn1", b.name), &act, rows_in, b.in_c, mode);
        let h1 = conv::conv2d_forward(
            &u1,
            get(p, &format!("{}.conv1", b.name)),
            &shape(batch, b.in_hw, b.in_c, b.out_c, 3, b.stride),
        );
        let u2 = bn_forward(
            cfg,
            p,
            running,
            &format!("{}.bn2", b.name),
            &h1,
            rows_out,
            b.out_c,
            mode,
        );
        let mut out = conv::conv2d_forward(
            &u2,
            get(p, &format!("{}.conv2", b.name)),
            &shape(batch, b.out_hw, b.out_c, b.out_c, 3, 1),
        );
        let source = if b.activated { &u1 } else { &act };
        let short = if b.projection {
            conv::conv2d_forward(
                source,
                get(p, &format!("{}.shortcut", b.name)),
                &shape(batch, b.in_hw, b.in_c, b.out_c, 1, b.stride),
            )
        } else {
            source.clone()
        };
        for (o, s) in out.iter_mut().zip(&short) {
            *o += s;
        }
        cache.acts.push(act);
        cache.u1.push(u1);
        cache.h1.push(h1);
        cache.u2.push(u2);
        act = out;
    }
    let bl = blocks(cfg);
    let last = bl.last().unwrap();
    let (hw, c) = (last.out_hw, last.out_c);
    let u_head = bn_forward(cfg, p, running, "head.bn", &act, batch * hw * hw, c, mode);
    let pooled = pool::global_avg_pool_forward(&u_head, batch, hw * hw, c);
    let logits = dense::dense_forward(
        &pooled,
        get(p, "head.dense.kernel"),
        get(p, "head.dense.bias"),
        batch,
        c,
        cfg.classes,
    );
    cache.acts.push(act);
    cache.u_head = u_head;
    cache.pooled = pooled;
    (logits, cache)
}

#[allow(clippy::too_many_arguments)]
fn bn_backward(
    cfg: &RefConfig,
    p: &Params,
    running: &Params,
    grads: &mut Params,
    name: &str,
    x: &[f64],
    dy: &[f64],
    rows: usize,
    c: usize,
    mode: Mode,
) -> Vec<f64> {
    let (g, b) = (get(p, &format!("{name}.gamma")), get(p, &format!("{name}.beta")));
    let (dx, dg, db) = match mode {
        Mode::Train => bn::batchnorm_backward_train(x, dy, rows, c, g, b, cfg.eps, cfg.slope),
        Mode::Inference => {
            let m = get(running, &format!("{name}.running_mean"));
            let v = get(running, &format!("{name}.running_var"));
            bn::batchnorm_backward_inference(x, dy, rows, c, g, b, m, v, cfg.eps, cfg.slope)
        }
    };
    grads.insert(format!("{name}.gamma"), dg);
    grads.insert(format!("{name}.beta"), db);
    dx
}

/// Gradients of every parameter and of the input, given the logits' gradient. `running` must be
/// the statistics the forward pass used in inference mode (ignored in training mode).
pub fn backward(cfg: &RefConfig, p: &Params, running: &Params, cache: &Cache, d_logits: &[f64]) -> (Params, Vec<f64>) {
    let batch = cache.batch;
    let bl = blocks(cfg);
    let last = bl.last().unwrap();
    let (hw, c) = (last.out_hw, last.out_c);
    let mut grads = Params::new();
    let (d_pooled, dw, db) = dense::dense_backward(
        &cache.pooled,
        get(p, "head.dense.kernel"),
        d_logits,
        batch,
        c,
        cfg.classes,
    );
    grads.insert("head.dense.kernel".into(), dw);
    grads.insert("head.dense.bias".into(), db);
    let d_uhead = pool::global_avg_pool_backward(&d_pooled, batch, hw * hw, c);
    let mut d_out = bn_backward(
        cfg,
        p,
        running,
        &mut grads,
        "head.bn",
        cache.acts.last().unwrap(),
        &d_uhead,
        batch * hw * hw,
        c,
        cache.mode,
    );
    for (i, b) in bl.iter().enumerate().rev() {
        let s2 = shape(batch, b.out_hw, b.out_c, b.out_c, 3, 1);
        let w2 = get(p, &format!("{}.conv2", b.name));
        grads.insert(
            format!("{}.conv2", b.name),
            conv::conv2d_backward_weights(&cache.u2[i], &d_out, &s2),
        );
        let du2 = conv::conv2d_backward_data(&d_out, w2, &s2);
        let dh1 = bn_backward(
            cfg,
            p,
            running,
            &mut grads,
            &format!("{}.bn2", b.name),
            &cache.h1[i],
            &du2,
            batch * b.out_hw * b.out_hw,
            b.out_c,
            cache.mode,
        );
        let s1 = shape(batch, b.in_hw, b.in_c, b.out_c, 3, b.stride);
        grads.insert(
            format!("{}.conv1", b.name),
            conv::conv2d_backward_weights(&cache.u1[i], &dh1, &s1),
        );
        let mut du1 = conv::conv2d_backward_data(&dh1, get(p, &format!("{}.conv1", b.name)), &s1);
        // The gradient arriving at whatever the shortcut read.
        let d_short = if b.projection {
            let ss = shape(batch, b.in_hw, b.in_c, b.out_c, 1, b.stride);
            let source = if b.activated { &cache.u1[i] } else { &cache.acts[i] };
            grads.insert(
                format!("{}.shortcut", b.name),
                conv::conv2d_backward_weights(source, &d_out, &ss),
            );
            conv::conv2d_backward_data(&d_out, get(p, &format!("{}.shortcut", b.name)), &ss)
        } else {
            d_out.clone()
        };
        if b.activated {
            for (a, v) in du1.iter_mut().zip(&d_short) {
                *a += v;
            }
        }
        let mut d_in = bn_backward(
            cfg,
            p,
            running,
            &mut grads,
            &format!("{}.bn1", b.name),
            &cache.acts[i],
            &du1,
            batch * b.in_hw * b.in_hw,
            b.in_c,
            cache.mode,
        );
        if !b.activated {
            for (a, v) in d_in.iter_mut().zip(&d_short) {
                *a += v;
            }
        }
        d_out = d_in;
    }
    let s0 = shape(batch, cfg.image_size, 3, 16, 3, 1);
    grads.insert(
        "stem.conv".into(),
        conv::conv2d_backward_weights(&cache.input, &d_out, &s0),
    );
    let d_input = conv::conv2d_backward_data(&d_out, get(p, "stem.conv"), &s0);
    (grads, d_input)
}

/// Mean softmax cross-entropy over the batch with hard labels, and its logit gradient.
pub fn mean_ce(logits: &[f64], labels: &[u32], classes: usize) -> (f64, Vec<f64>) {
    let rows = labels.len();
    let w = vec![1.0; rows];
    let t = softmax_ce::RefTargets::Hard(labels);
    let scale = 1.0 / rows as f64;
    let (_, loss) = softmax_ce::softmax_ce_forward(logits, rows, classes, &t, &w, scale);
    let d = softmax_ce::softmax_ce_backward(logits, rows, classes, &t, &w, scale);
    (loss, d)
}

/// How close a forward pass came to an activation kink: over every batch-norm output z (before
/// the activation), the smallest |z| relative to the size of the terms it is computed from,
/// `|gamma| (|x| + |mean|) / sqrt(var + eps) + |beta|`, and where. The activation's derivative
/// jumps at z = 0, so where this margin is near f32 rounding (1e-7 to 1e-6) the GPU may take the
/// other branch for that element and move upstream gradients by up to ~1e-2 of their norm.
/// `running` as for [`backward`].
pub fn activation_margin(cfg: &RefConfig, p: &Params, running: &Params, cache: &Cache) -> (f64, String) {
    let batch = cache.batch;
    let bl = blocks(cfg);
    let mut layers: Vec<(String, &[f64], usize, usize)> = Vec::new();
    for (i, b) in bl.iter().enumerate() {
        let rows_in = batch * b.in_hw * b.in_hw;
        layers.push((format!("{}.bn1", b.name), &cache.acts[i], rows_in, b.in_c));
        let rows_out = batch * b.out_hw * b.out_hw;
        layers.push((format!("{}.bn2", b.name), &cache.h1[i], rows_out, b.out_c));
    }
    let last = bl.last().unwrap();
    let rows = batch * last.out_hw * last.out_hw;
    layers.push(("head.bn".into(), cache.acts.last().unwrap(), rows, last.out_c));
    let mut best = (f64::INFINITY, String::new());
    for (name, x, rows, c) in layers {
        let (mean, var) = match cache.mode {
            Mode::Train => bn::batchnorm_moments(x, rows, c),
            Mode::Inference => (
                get(running, &format!("{name}.running_mean")).to_vec(),
                get(running, &format!("{name}.running_var")).to_vec(),
            ),
        };
        let (g, b) = (get(p, &format!("{name}.gamma")), get(p, &format!("{name}.beta")));
        for (r, row) in x.chunks_exact(c).enumerate() {
            for k in 0..c {
                let s = 1.0 / (var[k] + cfg.eps).sqrt();
                let z = g[k] * (row[k] - mean[k]) * s + b[k];
                let scale = g[k].abs() * (row[k].abs() + mean[k].abs()) * s + b[k].abs();
                let m = z.abs() / scale.max(f64::MIN_POSITIVE);
                if m < best.0 {
                    best = (m, format!("{name}, row {r}, channel {k}"));
                }
            }
        }
    }
    best
}
