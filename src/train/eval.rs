//! What a network makes of a dataset: accuracy, per-class accuracy and confusion matrix where
//! the dataset is labeled, and always what can be known without labels: the predicted-class
//! histogram, the mean top-1 probability and the share of images a confidence threshold keeps
//! (the pseudo-label mask rate).

use anyhow::{bail, Result};
use serde::Serialize;

use crate::console::printable;
use crate::data::{check_same_classes, Dataset};
use crate::gpu::GpuContext;
use crate::input::InputScale;
use crate::network::{Pass, WideResNet, Workspace};

use super::config::{Algorithm, TrainConfig};

#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    /// The class names the network's outputs stand for (indices of `predicted` and `confusion`).
    pub classes: Vec<String>,
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

/// Seed of the evaluation subsets (`eval_limit`): the same images for every run and seed.
pub const EVAL_SAMPLE_SEED: u64 = 0;

/// An inference-mode workspace for evaluating one network repeatedly.
pub struct Evaluator {
    ws: Workspace,
    classes: Vec<String>,
}

impl Evaluator {
    /// An evaluator for `net`, whose outputs stand for `classes` (one name per output).
    pub fn new(ctx: &GpuContext, net: &WideResNet, batch: usize, classes: Vec<String>) -> Result<Evaluator> {
        if classes.len() != net.config.num_classes {
            bail!(
                "{} class names for a network with {} outputs",
                classes.len(),
                net.config.num_classes
            );
        }
        Ok(Evaluator {
            ws: Workspace::new(ctx, net, batch.max(1), false),
            classes,
        })
    }

    /// [`Evaluator::run_async`], waiting (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(
        &mut self,
        ctx: &GpuContext,
        net: &WideResNet,
        data: &Dataset,
        scale: InputScale,
        limit: Option<usize>,
        threshold: Option<f64>,
    ) -> Result<EvalResult> {
        pollster::block_on(self.run_async(ctx, net, data, scale, limit, threshold))
    }

    /// Evaluates `net` (which must have the architecture the evaluator was built for) on the
    /// first `limit` images of `data`; `threshold` (a top-1 probability) sets `mask_rate`.
    pub async fn run_async(
        &mut self,
        ctx: &GpuContext,
        net: &WideResNet,
        data: &Dataset,
        scale: InputScale,
        limit: Option<usize>,
        threshold: Option<f64>,
    ) -> Result<EvalResult> {
        let classes = net.config.num_classes;
        if classes != self.classes.len() {
            bail!("the evaluator was built for another network");
        }
        let n = limit.unwrap_or(usize::MAX).min(data.len());
        if n == 0 {
            bail!("{}: no image to evaluate", data.name);
        }
        if data.labels.is_some() {
            check_same_classes(&data.name, &data.classes, "the network", &self.classes)?;
        }
        let side = net.config.image_size;
        if data.size != side {
            bail!(
                "{}: {}x{} images; the network takes {side}x{side}",
                data.name,
                data.size,
                data.size
            );
        }
        let bytes = data.image_bytes();
        let labels = data.labels.as_deref();
        let mut confusion = vec![vec![0u64; classes]; classes];
        let mut predicted = vec![0u64; classes];
        let (mut confidence_sum, mut confident) = (0f64, 0u64);
        let batch = self.ws.batch;
        let mut start = 0;
        while start < n {
            let m = batch.min(n - start);
            let mut input = scale.scale(&data.images[start * bytes..(start + m) * bytes]);
            input.resize(batch * bytes, 0.0);
            self.ws.input.write_f32(ctx, &input);
            self.ws.submit(ctx, net, Pass::ForwardInference);
            let logits = self.ws.logits.read_f32_async(ctx).await?;
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
            classes: self.classes.clone(),
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

/// The source and target test results of one evaluation of a run: `net` on both test sets
/// (the first `limit` images of each); the target's mask rate at the run's own pseudo-label
/// threshold (FixMatch's fixed one, else AdaMatch's relative one: tau times the mean confidence
/// on the source).
pub async fn evaluate_run(
    ctx: &GpuContext,
    evaluator: &mut Evaluator,
    net: &WideResNet,
    cfg: &TrainConfig,
    source_test: &Dataset,
    target_test: &Dataset,
) -> Result<(EvalResult, EvalResult)> {
    let (scale, limit) = (cfg.input_scale, cfg.eval_limit);
    let s = evaluator.run_async(ctx, net, source_test, scale, limit, None).await?;
    let threshold = Some(match cfg.algorithm {
        Algorithm::Fixmatch => cfg.confidence as f64,
        _ => cfg.tau as f64 * s.mean_confidence,
    });
    let t = evaluator
        .run_async(ctx, net, target_test, scale, limit, threshold)
        .await?;
    Ok((s, t))
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
        let mut order: Vec<usize> = (0..self.predicted.len()).collect();
        let shown = if order.len() > SUMMARY_CLASSES {
            // The most predicted classes first (ties by index).
            order.sort_by_key(|&c| (std::cmp::Reverse(self.predicted[c]), c));
            order.truncate(SUMMARY_CLASSES);
            format!("predicted (top {SUMMARY_CLASSES} of {})", self.predicted.len())
        } else {
            "predicted".to_string()
        };
        let shares: Vec<String> = order
            .iter()
            .map(|&c| {
                format!(
                    "{}:{:.0}%",
                    printable(&self.classes[c]),
                    100.0 * self.predicted[c] as f64 / n
                )
            })
            .collect();
        let mask = match (self.mask_rate, self.threshold) {
            (Some(r), Some(t)) => format!(", {:.1}% at least {t:.2} sure", 100.0 * r),
            _ => String::new(),
        };
        format!(
            "unlabeled: mean confidence {:.3}{mask}; {shown} {}",
            self.mean_confidence,
            shares.join(" ")
        )
    }

    /// How far this result's predicted-class shares are from `other`'s: their total variation
    /// distance (half the summed absolute differences, 0 to 1). None unless both name the same
    /// classes and predicted some image.
    pub fn predicted_share_distance(&self, other: &EvalResult) -> Option<f64> {
        let (a, b) = (self.predicted.iter().sum::<u64>(), other.predicted.iter().sum::<u64>());
        if self.classes != other.classes || self.predicted.len() != other.predicted.len() || a == 0 || b == 0 {
            return None;
        }
        let (a, b) = (a as f64, b as f64);
        let sum: f64 = self
            .predicted
            .iter()
            .zip(&other.predicted)
            .map(|(&x, &y)| (x as f64 / a - y as f64 / b).abs())
            .sum();
        Some(0.5 * sum)
    }

    /// A printable table: with labels, the confusion matrix (rows: true class, columns:
    /// predicted, by index; up to 20 classes) or else one line per class, each with its name and
    /// accuracy; without labels, the count of images predicted as each class.
    pub fn confusion_table(&self) -> String {
        let name_width = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(1)
            .clamp(5, 24);
        let name = |c: usize| {
            let n: String = printable(&self.classes[c]).chars().take(name_width).collect();
            format!("{n:>name_width$} {:>4}", format!("({c})"))
        };
        let (Some(confusion), Some(per_class)) = (&self.confusion, &self.per_class) else {
            let mut s = format!("{:>w$}  images\n", "predicted", w = name_width + 5);
            for (c, v) in self.predicted.iter().enumerate() {
                s += &format!("{}  {v:>6}\n", name(c));
            }
            return s;
        };
        let k = confusion.len();
        let mut s = format!("{:>w$}", "true \\ predicted", w = name_width + 5);
        if k <= TABLE_CLASSES {
            for c in 0..k {
                s += &format!("{c:>6}");
            }
        } else {
            s += "  images  correct";
        }
        s += "     acc\n";
        for (t, row) in confusion.iter().enumerate() {
            s += &name(t);
            if k <= TABLE_CLASSES {
                for v in row {
                    s += &format!("{v:>6}");
                }
            } else {
                s += &format!("  {:>6}  {:>7}", row.iter().sum::<u64>(), row[t]);
            }
            s += &format!("  {:>5.1}%\n", 100.0 * per_class[t]);
        }
        s
    }
}

/// Classes listed in a log line's predicted shares (the most predicted ones beyond this).
const SUMMARY_CLASSES: usize = 10;
/// Largest class count printed as a full confusion matrix.
const TABLE_CLASSES: usize = 20;
