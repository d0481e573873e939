//! What a step reports: its losses, learning rate and health, read at the logging interval.

use crate::kernels::adamatch::LossMetrics;

/// Loss values and health of one step, read at the logging interval.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepMetrics {
    pub step: u64,
    /// What the loss kernels reported (source-only: the total and source losses alone); its
    /// fields appear at this level in `metrics.jsonl` and the page's reports.
    #[serde(flatten)]
    pub loss: LossMetrics,
    pub lr: f32,
    pub grad_norm: f32,
    /// A gradient was NaN or infinite, or the loss is.
    pub non_finite: bool,
    /// Distribution alignment ratio p_s / p_t of this step (AdaMatch): smallest and largest
    /// class entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align_ratio_min: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub align_ratio_max: Option<f32>,
    /// Diagnosis only, where the target training set has labels (never used in training): the
    /// fraction of this step's target rows whose pseudo-label is right, and of the masked ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_label_acc: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked_pseudo_label_acc: Option<f32>,
}
