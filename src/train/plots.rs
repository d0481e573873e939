//! PNG plots of a run: loss curves, accuracy curves and the final confusion matrix, drawn with
//! the `image` crate and the public-domain 8x8 bitmap font of `font8x8` (no system fonts needed).

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use super::eval::EvalResult;

const W: u32 = 720;
const H: u32 = 420;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
];

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + i as i64 * 8 + col, y + row as i64);
                    if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                        img.put_pixel(px as u32, py as u32, color);
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, color);
            }
        }
    }
}

/// A line chart of named series of (x, y) points.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let black = Rgb([0, 0, 0]);
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    y0 = y0.min(0.0);
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (pw, ph) = (W as f64 - LEFT - RIGHT, H as f64 - TOP - BOTTOM);
    let map = |x: f64, y: f64| (LEFT + (x - x0) / (x1 - x0) * pw, TOP + ph - (y - y0) / (y1 - y0) * ph);
    line(&mut img, (LEFT, TOP), (LEFT, TOP + ph), black);
    line(&mut img, (LEFT, TOP + ph), (LEFT + pw, TOP + ph), black);
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (yv, xv) = (y0 + f * (y1 - y0), x0 + f * (x1 - x0));
        let (_, py) = map(x0, yv);
        text(&mut img, 4, py as i64 - 4, &format!("{yv:>7.3}"), black);
        line(&mut img, (LEFT - 4.0, py), (LEFT, py), black);
        let (px, _) = map(xv, y0);
        let label = format!("{xv:.0}");
        text(
            &mut img,
            px as i64 - 4 * label.len() as i64,
            (TOP + ph + 8.0) as i64,
            &label,
            black,
        );
    }
    text(&mut img, (W as i64 - 8 * title.len() as i64) / 2, 12, title, black);
    text(
        &mut img,
        (W as i64 - 8 * x_label.len() as i64) / 2,
        H as i64 - 18,
        x_label,
        black,
    );
    for (k, (name, points)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let valid: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        for w in valid.windows(2) {
            line(&mut img, map(w[0].0, w[0].1), map(w[1].0, w[1].1), color);
        }
        if valid.len() == 1 {
            let (x, y) = map(valid[0].0, valid[0].1);
            line(&mut img, (x - 2.0, y), (x + 2.0, y), color);
        }
        let ly = TOP as i64 + 4 + 14 * k as i64;
        let lx = (LEFT + pw) as i64 - 8 * 18;
        line(
            &mut img,
            (lx as f64, ly as f64 + 4.0),
            (lx as f64 + 16.0, ly as f64 + 4.0),
            color,
        );
        text(&mut img, lx + 22, ly, name, color);
    }
    img
}

/// The confusion matrix as a heat map with counts (rows: true class, columns: predicted); for
/// an unlabeled evaluation, one row of predicted-class counts.
pub fn confusion_chart(title: &str, eval: &EvalResult) -> RgbImage {
    let unlabeled = [eval.predicted.clone()];
    let (confusion, per_class): (&[Vec<u64>], Option<&Vec<f64>>) = match (&eval.confusion, &eval.per_class) {
        (Some(c), Some(p)) => (c, Some(p)),
        _ => (&unlabeled, None),
    };
    let k = eval.predicted.len().max(1) as u32;
    let rows = confusion.len() as u32;
    // 44-pixel cells with counts up to 20 classes; smaller cells, shade only, beyond.
    let cell = (880 / k).clamp(2, 44);
    let numbers = cell >= 30;
    let (ox, oy) = (60u32, 50u32);
    let mut img = RgbImage::from_pixel(
        (ox + k * cell + 80).max(8 * title.len() as u32 + 16),
        oy + rows * cell + 40,
        Rgb([255, 255, 255]),
    );
    let black = Rgb([0, 0, 0]);
    text(&mut img, 8, 12, title, black);
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &v) in row.iter().enumerate() {
            let frac = v as f64 / total as f64;
            let shade = (255.0 * (1.0 - frac)) as u8;
            let color = Rgb([shade, shade, 255]);
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    img.put_pixel(ox + p as u32 * cell + x, oy + t as u32 * cell + y, color);
                }
            }
            if numbers {
                let fg = if frac > 0.5 { Rgb([255, 255, 255]) } else { black };
                let s = v.to_string();
                let tx = (ox + p as u32 * cell + cell / 2) as i64 - 4 * s.len() as i64;
                text(&mut img, tx, (oy + t as u32 * cell + cell / 2) as i64 - 4, &s, fg);
            }
        }
        let Some(per_class) = per_class.filter(|_| numbers) else {
            continue;
        };
        text(
            &mut img,
            ox as i64 - 20,
            (oy + t as u32 * cell + cell / 2) as i64 - 4,
            &t.to_string(),
            black,
        );
        let acc = format!("{:.0}%", 100.0 * per_class[t]);
        text(
            &mut img,
            (ox + k * cell + 8) as i64,
            (oy + t as u32 * cell + cell / 2) as i64 - 4,
            &acc,
            black,
        );
    }
    for p in (0..k).filter(|_| numbers) {
        text(
            &mut img,
            (ox + p * cell + cell / 2) as i64 - 4,
            oy as i64 - 14,
            &p.to_string(),
            black,
        );
    }
    let legend = if per_class.is_some() {
        "rows: true class, columns: predicted"
    } else {
        "images predicted as each class (no labels)"
    };
    text(&mut img, ox as i64, (oy + rows * cell + 14) as i64, legend, black);
    img
}

/// Writes `loss.png`, `accuracy.png` and (with a final evaluation) `confusion.png` into `dir`
/// from the run's `metrics.jsonl`. With an unlabeled target test set, `accuracy.png` draws the
/// target's mean confidence and mask rate instead of its accuracy, and `predicted.png` replaces
/// `confusion.png`.
pub fn write_plots(dir: &Path, metrics: &Path, final_target: Option<&EvalResult>) -> Result<()> {
    let text_in = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let mut total = Vec::new();
    let mut source = Vec::new();
    let mut target = Vec::new();
    let mut src_acc = Vec::new();
    let mut tgt_acc = Vec::new();
    let mut tgt_confidence = Vec::new();
    let mut tgt_mask = Vec::new();
    for l in text_in.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["kind"].as_str() {
            Some("train") => {
                let m = &v["metrics"];
                total.push((step, m["total_loss"].as_f64().unwrap_or(f64::NAN)));
                source.push((step, m["source_loss"].as_f64().unwrap_or(f64::NAN)));
                target.push((step, m["target_loss"].as_f64().unwrap_or(f64::NAN)));
            }
            Some("eval") => {
                src_acc.push((step, 100.0 * v["source"]["accuracy"].as_f64().unwrap_or(f64::NAN)));
                let t = &v["target"];
                if t["labeled"].as_bool() == Some(false) {
                    tgt_confidence.push((step, 100.0 * t["mean_confidence"].as_f64().unwrap_or(f64::NAN)));
                    tgt_mask.push((step, 100.0 * t["mask_rate"].as_f64().unwrap_or(f64::NAN)));
                } else {
                    tgt_acc.push((step, 100.0 * t["accuracy"].as_f64().unwrap_or(f64::NAN)));
                }
            }
            _ => {}
        }
    }
    let save = |img: RgbImage, name: &str| -> Result<()> {
        let path = dir.join(name);
        img.save(&path).with_context(|| format!("writing {}", path.display()))
    };
    save(
        line_chart(
            "training loss",
            "step",
            &[("total", total), ("source", source), ("target", target)],
        ),
        "loss.png",
    )?;
    let (title, series) = if tgt_acc.is_empty() && !tgt_confidence.is_empty() {
        (
            "source test accuracy; target unlabeled (%)",
            vec![
                ("source test", src_acc),
                ("target confidence", tgt_confidence),
                ("target mask rate", tgt_mask),
            ],
        )
    } else {
        (
            "test accuracy (%)",
            vec![("source test", src_acc), ("target test", tgt_acc)],
        )
    };
    save(line_chart(title, "step", &series), "accuracy.png")?;
    match final_target {
        Some(e) if e.labeled => save(confusion_chart("target test confusion matrix", e), "confusion.png")?,
        Some(e) => save(
            confusion_chart("target test (unlabeled): predicted classes", e),
            "predicted.png",
        )?,
        None => {}
    }
    Ok(())
}
