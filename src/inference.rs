//! Classifying images with trained weights: the path `predict`, `eval` and the web build share.

use anyhow::Result;

use crate::gpu::GpuContext;
use crate::input::InputScale;
use crate::network::{Pass, WideResNet, Workspace};
use crate::weights::Weights;

/// Softmax of one row, computed in f64 for stable probabilities.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// One image's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Prediction {
    pub class: usize,
    pub probs: Vec<f32>,
    pub logits: Vec<f32>,
}

impl Prediction {
    fn from_logits(logits: Vec<f32>) -> Prediction {
        let probs = softmax(&logits);
        let class = probs
            .iter()
            .enumerate()
            .fold(0, |best, (i, &p)| if p > probs[best] { i } else { best });
        Prediction { class, probs, logits }
    }
}

/// A network in inference mode with a workspace for up to `max_batch` images.
pub struct Classifier {
    pub net: WideResNet,
    pub input_scale: InputScale,
    ws: Workspace,
}

impl Classifier {
    pub fn new(ctx: &GpuContext, weights: &Weights, input_scale: InputScale, max_batch: usize) -> Result<Classifier> {
        let net = WideResNet::new(ctx, weights.config.clone(), 0)?;
        net.write_params(ctx, &weights.params);
        net.write_running(ctx, &weights.running);
        let ws = Workspace::new(ctx, &net, max_batch.max(1), false);
        Ok(Classifier { net, input_scale, ws })
    }

    /// Pixels per image: size x size x 3.
    pub fn image_len(&self) -> usize {
        let s = self.net.config.image_size;
        s * s * 3
    }

    /// Classifies u8 NHWC images (already resized), in chunks of the workspace batch.
    pub async fn classify_async(&mut self, ctx: &GpuContext, pixels: &[u8]) -> Result<Vec<Prediction>> {
        let per = self.image_len();
        let classes = self.net.config.num_classes;
        let mut out = Vec::new();
        for chunk in pixels.chunks(per * self.ws.batch) {
            let n = chunk.len() / per;
            // The workspace has a fixed batch; pad the last chunk with zeros. Inference-mode BN
            // treats images independently, so padding does not change the real rows.
            let mut input = self.input_scale.scale(chunk);
            input.resize(self.ws.batch * per, 0.0);
            self.ws.input.write_f32(ctx, &input);
            let ops: Vec<&crate::gpu::Op> = self.ws.ops(ctx, &self.net, Pass::ForwardInference).iter().collect();
            ctx.submit(&ops);
            let logits = self.ws.logits.read_f32_async(ctx).await?;
            out.extend(
                logits
                    .chunks(classes)
                    .take(n)
                    .map(|l| Prediction::from_logits(l.to_vec())),
            );
        }
        Ok(out)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn classify(&mut self, ctx: &GpuContext, pixels: &[u8]) -> Result<Vec<Prediction>> {
        pollster::block_on(self.classify_async(ctx, pixels))
    }
}
