//! What a network makes of a dataset: accuracy, per-class accuracy and confusion matrix where
//! the dataset is labeled, and always what can be known without labels: the predicted-class
//! histogram, the mean top-1 probability and the share of images a confidence threshold keeps
//! (the pseudo-label mask rate).

use anyhow::{bail, Result};
use serde::Serialize;

use crate::data::{Dataset, IMAGE_BYTES};
use crate::gpu::GpuContext;
use crate::input::InputScale;
use crate::network::{Pass, WideResNet, Workspace};

#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    /// Whether the dataset has labels; `accuracy`, `per_class` and `confusion` exist only then.
    pub labeled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Accuracy per true class (NaN-free: 0 for a class with no image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_class: Option<Vec<f64>>,
    /// confusion[true][predicted]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Vec<Vec<u64>>>,
    /// How many images the network assigns to each class.
    pub predicted: Vec<u64>,
    /// Mean top-1 softmax probability.
    pub mean_confidence: f64,
    /// The confidence threshold of `mask_rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Share of images whose top-1 probability reaches `threshold`: the rows a pseudo-label loss
    /// at that threshold would keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_rate: Option<f64>,
}

/// An inference-mode workspace for evaluating one network repeatedly.
pub struct Evaluator {
    ws: Workspace,
}

impl Evaluator {
    pub fn new(ctx: &GpuContext, net: &WideResNet, batch: usize) -> Evaluator {
        Evaluator {
            ws: Workspace::new(ctx, net, batch.max(1), false),
        }
    }

    /// Evaluates `net` (which must have the architecture the evaluator was built for) on the
    /// first `limit` images of `data`; `threshold` (a top-1 probability) sets `mask_rate`.
    pub fn run(
        &mut self,
        ctx: &GpuContext,
        net: &WideResNet,
        data: &Dataset,
        scale: InputScale,
        limit: Option<usize>,
        threshold: Option<f64>,
    ) -> Result<EvalResult> {
        let classes = net.config.num_classes;
        let n = limit.unwrap_or(usize::MAX).min(data.len());
        if n == 0 {
            bail!("{}: no image to evaluate", data.name);
        }
        let labels = data.labels.as_deref();
        let mut confusion = vec![vec![0u64; classes]; classes];
        let mut predicted = vec![0u64; classes];
        let (mut confidence_sum, mut confident) = (0f64, 0u64);
        let batch = self.ws.batch;
        let mut start = 0;
        while start < n {
            let m = batch.min(n - start);
            let mut input = scale.scale(&data.images[start * IMAGE_BYTES..(start + m) * IMAGE_BYTES]);
            input.resize(batch * IMAGE_BYTES, 0.0);
            self.ws.input.write_f32(ctx, &input);
            self.ws.run(ctx, net, Pass::ForwardInference)?;
            let logits = self.ws.logits.read_f32(ctx)?;
            for (i, row) in logits.chunks(classes).take(m).enumerate() {
                let pred = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
                predicted[pred] += 1;
                let top1 = top1_probability(row, pred);
                confidence_sum += top1;
                if threshold.is_some_and(|t| top1 >= t) {
                    confident += 1;
                }
                if let Some(labels) = labels {
                    let truth = labels[start + i] as usize;
                    if truth < classes {
                        confusion[truth][pred] += 1;
                    }
                }
            }
            start += m;
        }
        let (accuracy, per_class, confusion) = match labels {
            None => (None, None, None),
            Some(_) => {
                let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
                let per_class = confusion
                    .iter()
                    .enumerate()
                    .map(|(c, row)| {
                        let total: u64 = row.iter().sum();
                        if total == 0 {
                            0.0
                        } else {
                            row[c] as f64 / total as f64
                        }
                    })
                    .collect();
                (Some(correct as f64 / n as f64), Some(per_class), Some(confusion))
            }
        };
        Ok(EvalResult {
            images: n,
            labeled: labels.is_some(),
            accuracy,
            per_class,
            confusion,
            predicted,
            mean_confidence: confidence_sum / n as f64,
            threshold,
            mask_rate: threshold.map(|_| confident as f64 / n as f64),
        })
    }
}

/// The softmax probability of class `top` in a row of logits, in f64.
fn top1_probability(row: &[f32], top: usize) -> f64 {
    let max = row[top] as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    1.0 / sum
}

impl EvalResult {
    /// One line for logs: the accuracy where there are labels; otherwise what is known without
    /// them (mean top-1 probability, mask rate at the threshold, predicted-class shares).
    pub fn summary(&self) -> String {
        if let Some(a) = self.accuracy {
            return format!("accuracy {:.2}%", 100.0 * a);
        }
        let n = self.images.max(1) as f64;
        let shares: Vec<String> = self
            .predicted
            .iter()
            .enumerate()
            .map(|(c, &k)| format!("{c}:{:.0}%", 100.0 * k as f64 / n))
            .collect();
        let mask = match (self.mask_rate, self.threshold) {
            (Some(r), Some(t)) => format!(", {:.1}% at least {t:.2} sure", 100.0 * r),
            _ => String::new(),
        };
        format!(
            "unlabeled: mean confidence {:.3}{mask}; predicted {}",
            self.mean_confidence,
            shares.join(" ")
        )
    }

    /// A printable confusion matrix (rows: true class, columns: predicted), or the predicted
    /// counts for unlabeled data.
    pub fn confusion_table(&self) -> String {
        let (Some(confusion), Some(per_class)) = (&self.confusion, &self.per_class) else {
            let mut s = String::from("predicted");
            for c in 0..self.predicted.len() {
                s += &format!("{c:>7}");
            }
            s += "\n   images";
            for v in &self.predicted {
                s += &format!("{v:>7}");
            }
            s.push('\n');
            return s;
        };
        let k = confusion.len();
        let mut s = String::from("true\\pred");
        for c in 0..k {
            s += &format!("{c:>7}");
        }
        s += "   acc\n";
        for (t, row) in confusion.iter().enumerate() {
            s += &format!("{t:>9}");
            for v in row {
                s += &format!("{v:>7}");
            }
            s += &format!("  {:>5.1}%\n", 100.0 * per_class[t]);
        }
        s
    }
}
