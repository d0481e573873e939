//! Accuracy, per-class accuracy and confusion matrix of a network on a labeled dataset.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::data::{Dataset, IMAGE_BYTES};
use crate::gpu::GpuContext;
use crate::input::InputScale;
use crate::network::{Pass, WideResNet, Workspace};

#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    pub accuracy: f64,
    /// Accuracy per true class (NaN-free: 0 for a class with no image).
    pub per_class: Vec<f64>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<u64>>,
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
    /// first `limit` images of `data`.
    pub fn run(
        &mut self,
        ctx: &GpuContext,
        net: &WideResNet,
        data: &Dataset,
        scale: InputScale,
        limit: Option<usize>,
    ) -> Result<EvalResult> {
        let labels = match &data.labels {
            Some(l) => l,
            None => bail!("{} has no labels to evaluate against", data.name),
        };
        let classes = net.config.num_classes;
        let n = limit.unwrap_or(usize::MAX).min(data.len());
        let mut confusion = vec![vec![0u64; classes]; classes];
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
                let truth = labels[start + i] as usize;
                if truth < classes {
                    confusion[truth][pred] += 1;
                }
            }
            start += m;
        }
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
        Ok(EvalResult {
            images: n,
            accuracy: correct as f64 / n.max(1) as f64,
            per_class,
            confusion,
        })
    }
}

impl EvalResult {
    /// A printable confusion matrix (rows: true class, columns: predicted).
    pub fn confusion_table(&self) -> String {
        let k = self.confusion.len();
        let mut s = String::from("true\\pred");
        for c in 0..k {
            s += &format!("{c:>7}");
        }
        s += "   acc\n";
        for (t, row) in self.confusion.iter().enumerate() {
            s += &format!("{t:>9}");
            for v in row {
                s += &format!("{v:>7}");
            }
            s += &format!("  {:>5.1}%\n", 100.0 * self.per_class[t]);
        }
        s
    }
}
