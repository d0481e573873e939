//! PNG plots of a run: loss curves, accuracy curves and the final confusion matrix, drawn with
//! plotters (bitmap backend) in DejaVu Sans embedded from the `dejavu` crate, so no system fonts
//! are needed and the files are the same on every machine.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::eval::EvalResult;

const FONT: &str = "sans-serif";
/// matplotlib's first four colours, in the order the series are given.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];
const LINE_SIZE: (u32, u32) = (800, 450);
/// Confusion cells narrower than this show their shade only, no count.
const MIN_NUMBERED_CELL: u32 = 30;

/// Registers the embedded font with plotters once; false if its bytes do not parse.
fn register_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok())
}

/// Renders `draw` onto a white `w` x `h` canvas.
fn render(
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<RgbImage> {
    if !register_font() {
        return Err(anyhow!("the embedded DejaVu Sans font does not parse; plots not drawn"));
    }
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| anyhow!("drawing a plot: {e}"))?;
    }
    RgbImage::from_raw(w, h, buf).context("plot buffer size")
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// Tick labels with as many decimals as the tick spacing needs (0.25 steps show two, 20 none).
fn tick_label(span: f64, ticks: usize) -> impl Fn(&f64) -> String {
    let step = span / ticks.max(1) as f64;
    let decimals = if step > 0.0 && step < 1.0 {
        ((-step.log10()).ceil() as usize).min(6)
    } else {
        0
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// The plot corner where the fewest points lie: the legend goes there (as matplotlib's
/// `loc="best"`), so it covers as little of the curves as possible.
fn emptiest_corner(points: &[(f64, f64)], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, 0.6, 1.0, 0.6, 1.0),
        (SeriesLabelPosition::LowerRight, 0.6, 1.0, 0.0, 0.4),
        (SeriesLabelPosition::UpperLeft, 0.0, 0.4, 0.6, 1.0),
        (SeriesLabelPosition::LowerLeft, 0.0, 0.4, 0.0, 0.4),
    ];
    let count = |&(_, ax, bx, ay, by): &(SeriesLabelPosition, f64, f64, f64, f64)| {
        points
            .iter()
            .filter(|(x, y)| {
                let (fx, fy) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
                (ax..=bx).contains(&fx) && (ay..=by).contains(&fy)
            })
            .count()
    };
    // The first corner with the fewest points: ties keep the upper right.
    let best = corners.iter().min_by_key(|c| count(c)).expect("four corners");
    best.0.clone()
}

/// A line chart of named series of (x, y) points, with a grid, ticks at round values and a
/// legend in the emptiest corner. Non-finite points are left out.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<RgbImage> {
    line_chart_marked(title, x_label, series, None)
}

/// [`line_chart`] with a labeled vertical line at `marker`'s x (where a run's phase changes).
pub fn line_chart_marked(
    title: &str,
    x_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    marker: Option<(f64, &str)>,
) -> Result<RgbImage> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, p)| {
            (
                *name,
                p.iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect(),
            )
        })
        .collect();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |(a, b, c, d), &(x, y)| {
            (a.min(x), b.max(x), c.min(y), d.max(y))
        });
    if all.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    // Losses and accuracies are non-negative: the axis starts at 0 so curves compare by height.
    y0 = y0.min(0.0);
    y1 = if y1 - y0 < 1e-12 {
        y0 + 1.0
    } else {
        y1 + 0.05 * (y1 - y0)
    };
    let legend_at = emptiest_corner(&all, (x0, x1), (y0, y1));
    render(LINE_SIZE, |root| {
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&tick_label(x1 - x0, 10))
            .y_label_formatter(&tick_label(y1 - y0, 8))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(205, 205, 205))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(plot_err)?;
        if let Some((x, label)) = marker.filter(|(x, _)| (x0..=x1).contains(x)) {
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(LineSeries::new([(x, y0), (x, y1)], grey.stroke_width(1)))
                .map_err(plot_err)?;
            let style = TextStyle::from((FONT, 13).into_font()).color(&grey);
            chart
                .draw_series([Text::new(format!(" {label}"), (x, y1), style)])
                .map_err(plot_err)?;
        }
        for (k, (name, points)) in series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let style = color.stroke_width(2);
            let drawn: Vec<(f64, f64)> = if points.len() == 1 {
                // One point: a short dash, so it shows.
                let (x, y) = points[0];
                let d = 0.005 * (x1 - x0);
                vec![(x - d, y), (x + d, y)]
            } else {
                points.clone()
            };
            chart
                .draw_series(LineSeries::new(drawn, style))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FONT, 14))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The confusion matrix as a heat map (rows: true class, columns: predicted; the shade is the
/// share of the row) with counts in the cells and each class's accuracy at the row's end; for an
/// unlabeled evaluation, one row of predicted-class counts.
pub fn confusion_chart(title: &str, eval: &EvalResult) -> Result<RgbImage> {
    let unlabeled = [eval.predicted.clone()];
    let (confusion, per_class): (&[Vec<u64>], Option<&Vec<f64>>) = match (&eval.confusion, &eval.per_class) {
        (Some(c), Some(p)) => (c, Some(p)),
        _ => (&unlabeled, None),
    };
    let k = eval.predicted.len().max(1) as u32;
    let rows = confusion.len().max(1) as u32;
    // 44-pixel cells up to 20 classes; smaller cells, shade only, beyond.
    let cell = (880 / k).clamp(2, 44);
    let numbers = cell >= MIN_NUMBERED_CELL;
    let name = |i: usize| -> String {
        let n = eval.classes.get(i).cloned().unwrap_or_else(|| i.to_string());
        if n.chars().count() > 8 {
            format!("{}…", n.chars().take(7).collect::<String>())
        } else {
            n
        }
    };
    let (left, right, top, bottom) = (90u32, 70u32, 84u32, 64u32);
    let size = ((left + k * cell + right).max(560), top + rows * cell + bottom);
    render(size, |root| {
        root.fill(&WHITE).map_err(plot_err)?;
        let (w, _) = root.dim_in_pixel();
        root.draw(&Text::new(
            title.to_string(),
            (w as i32 / 2, 16),
            TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(plot_err)?;
        let grid = root.margin(top, bottom, left, size.0 - left - k * cell);
        let mut chart = ChartBuilder::on(&grid)
            .build_cartesian_2d(0f64..k as f64, rows as f64..0f64)
            .map_err(plot_err)?;
        let centered = |size: i32| TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for (t, row) in confusion.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1);
            chart
                .draw_series(row.iter().enumerate().map(|(p, &v)| {
                    let frac = v as f64 / total as f64;
                    let shade = (255.0 * (1.0 - frac)).round() as u8;
                    let corner = |dp: f64, dt: f64| (p as f64 + dp, t as f64 + dt);
                    Rectangle::new(
                        [corner(0.02, 0.02), corner(0.98, 0.98)],
                        RGBColor(shade, shade, 255).filled(),
                    )
                }))
                .map_err(plot_err)?;
            if numbers {
                chart
                    .draw_series(row.iter().enumerate().map(|(p, &v)| {
                        let dark = v as f64 / total as f64 > 0.5;
                        let style = centered(13).color(if dark { &WHITE } else { &BLACK });
                        Text::new(v.to_string(), (p as f64 + 0.5, t as f64 + 0.5), style)
                    }))
                    .map_err(plot_err)?;
            }
        }
        // Class names along both axes and per-class accuracies, in pixels beside the grid.
        let at = |p: f64, t: f64| chart.backend_coord(&(p, t));
        let every = if numbers { 1 } else { (k as usize).div_ceil(20) };
        for p in (0..k as usize).step_by(every) {
            let (x, y) = at(p as f64 + 0.5, 0.0);
            root.draw(&Text::new(name(p), (x, y - 14), centered(13)))
                .map_err(plot_err)?;
        }
        let (xm, _) = at(k as f64 / 2.0, 0.0);
        root.draw(&Text::new("predicted class", (xm, top as i32 - 40), centered(14)))
            .map_err(plot_err)?;
        if let Some(per_class) = per_class {
            for t in (0..rows as usize).step_by(every) {
                let (x, y) = at(0.0, t as f64 + 0.5);
                let label = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
                root.draw(&Text::new(name(t), (x - 6, y), label)).map_err(plot_err)?;
                let (xr, _) = at(k as f64, 0.0);
                let acc = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
                root.draw(&Text::new(format!("{:.0}%", 100.0 * per_class[t]), (xr + 6, y), acc))
                    .map_err(plot_err)?;
            }
        }
        let legend: &[&str] = if per_class.is_some() {
            &[
                "rows: true class, with its accuracy at the right",
                "columns: predicted class; shade: share of the row",
            ]
        } else {
            &["images predicted as each class (no labels)"]
        };
        let (_, yb) = at(0.0, rows as f64);
        let left_text = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, line) in legend.iter().enumerate() {
            root.draw(&Text::new(*line, (12, yb + 20 + 18 * i as i32), left_text.clone()))
                .map_err(plot_err)?;
        }
        Ok(())
    })
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
    // The last step of a source-only phase that another phase followed.
    let (mut source_phase_end, mut adapted) = (None, false);
    for l in text_in.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["phase"].as_str() {
            Some("source-only") if !adapted => source_phase_end = Some(step),
            Some(_) => adapted = true,
            None => {}
        }
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
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .with_context(|| format!("encoding {}", path.display()))?;
        crate::weights::write_atomically(&path, &png)
    };
    let marker = source_phase_end.filter(|_| adapted).map(|x| (x, "adapting"));
    save(
        line_chart_marked(
            "training loss",
            "step",
            &[("total", total), ("source", source), ("target", target)],
            marker,
        )?,
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
    save(line_chart_marked(title, "step", &series, marker)?, "accuracy.png")?;
    match final_target {
        Some(e) if e.labeled => save(confusion_chart("target test confusion matrix", e)?, "confusion.png")?,
        Some(e) => save(
            confusion_chart("target test (unlabeled): predicted classes", e)?,
            "predicted.png",
        )?,
        None => {}
    }
    Ok(())
}
