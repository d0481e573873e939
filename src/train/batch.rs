//! The host's side of a step: which images, labels and augmentation parameters it uses, drawn
//! from the run's RNG in a fixed order.

use anyhow::{bail, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, ImageSource};
use crate::kernels::augment::{self, AugParams, StrongKind, Symmetries, WeakKind};

use super::config::{AugmentStyle, TrainConfig, ViewSet};

/// Everything random about one step, drawn on the host: the images, labels, each view's
/// augmentation parameters and the logit-interpolation lambdas.
#[derive(Clone, Debug, Default)]
pub struct HostBatch {
    /// The L labeled images, u8 NHWC: B source images, then any labeled target images.
    pub source_images: Vec<u8>,
    pub labels: Vec<u32>,
    /// uB target images (empty for source-only).
    pub target_images: Vec<u8>,
    /// Their labels when the target set has them: for diagnostics only, never uploaded.
    pub target_labels: Vec<crate::data::Label>,
    /// Source weak, source strong, target weak, target strong.
    pub aug: [Vec<AugParams>; 4],
    /// [2B, classes] interpolation weights (AdaMatch only).
    pub lambdas: Vec<f32>,
}

/// Indices of a batch: uniform with replacement over a finite source, any u64 for a stream.
pub(super) fn draw_indices(rng: &mut ChaCha8Rng, source: &dyn ImageSource, n: usize) -> Vec<u64> {
    let len = source.len();
    (0..n)
        .map(|_| match len {
            Some(len) => rng.random_range(0..len as u64),
            None => rng.random::<u64>() >> 1,
        })
        .collect()
}

/// The weak view's kind and symmetries.
pub(super) fn weak_view(cfg: &TrainConfig) -> (WeakKind, Symmetries) {
    let kind = match cfg.augment {
        AugmentStyle::Paper => WeakKind::Paper,
        AugmentStyle::Keras => WeakKind::Keras,
    };
    (kind, symmetries(cfg, false))
}

/// The strong view's kind and symmetries.
fn strong_view(cfg: &TrainConfig) -> (StrongKind, Symmetries) {
    let kind = match cfg.augment {
        AugmentStyle::Paper => StrongKind::Paper,
        AugmentStyle::Keras => StrongKind::Keras,
    };
    (kind, symmetries(cfg, true))
}

/// The symmetries of the weak (`strong` false) or strong views.
fn symmetries(cfg: &TrainConfig, strong: bool) -> Symmetries {
    let applies = |views: ViewSet| match views {
        ViewSet::None => false,
        ViewSet::Strong => strong,
        ViewSet::All => true,
    };
    Symmetries {
        hflip: cfg.hflip,
        invert: applies(cfg.invert),
        recolor: applies(cfg.recolor),
    }
}

/// Draws a step's batch and random parameters from `rng`, in a fixed order: source indices,
/// labeled target indices (semi-supervised domain adaptation, from `labeled_target`), target
/// indices, the four views' augmentation parameters, then `lambdas` interpolation weights.
pub(super) fn draw_batch(
    rng: &mut ChaCha8Rng,
    cfg: &TrainConfig,
    labeled_target: Option<&Dataset>,
    lambdas: usize,
    source: &dyn ImageSource,
    target: &dyn ImageSource,
) -> Result<HostBatch> {
    let b = cfg.batch;
    let t = cfg.labeled_target_batch;
    let l = b + t;
    let ub = cfg.target_batch();
    let uses_target = cfg.algorithm.uses_target();
    let size = cfg.network.image_size;
    let sources = [
        Some(source),
        labeled_target.map(|d| d as &dyn ImageSource),
        uses_target.then_some(target),
    ];
    if let Some(other) = sources.into_iter().flatten().find(|d| d.image_size() != size) {
        bail!(
            "{} has {}x{} images; this run's network takes {size}x{size} (--image-size)",
            other.describe(),
            other.image_size(),
            other.image_size()
        );
    }
    let src_idx = draw_indices(rng, source, b);
    let labeled_idx = match (labeled_target, t) {
        (_, 0) => Vec::new(),
        (Some(d), _) => draw_indices(rng, d, t),
        (None, _) => bail!("semi-supervised domain adaptation needs its labeled target images"),
    };
    let tgt_idx = if uses_target {
        draw_indices(rng, target, ub)
    } else {
        Vec::new()
    };
    let mut batch = HostBatch::default();
    let mut labels = Vec::with_capacity(l);
    source.gather(&src_idx, &mut batch.source_images, &mut labels);
    if labels.len() != b {
        bail!("the source domain {} has no labels", source.describe());
    }
    if let Some(d) = labeled_target {
        d.gather(&labeled_idx, &mut batch.source_images, &mut labels);
    }
    batch.labels = labels.iter().map(|&l| l as u32).collect();
    if uses_target {
        target.gather(&tgt_idx, &mut batch.target_images, &mut batch.target_labels);
    }
    let ((weak, weak_sym), (strong, strong_sym)) = (weak_view(cfg), strong_view(cfg));
    let views: [(usize, bool); 4] = [(l, false), (l, true), (ub, false), (ub, true)];
    for (i, (n, is_strong)) in views.into_iter().enumerate() {
        if i >= 2 && !uses_target {
            break;
        }
        batch.aug[i] = (0..n)
            .map(|_| {
                if is_strong {
                    augment::draw_strong(rng, size, strong, strong_sym)
                } else {
                    augment::draw_weak(rng, size, weak, weak_sym)
                }
            })
            .collect();
    }
    batch.lambdas = (0..lambdas).map(|_| rng.random::<f32>()).collect();
    Ok(batch)
}
