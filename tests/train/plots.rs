//! The run plots: where the curves, the legend and the confusion cells land, read back from the
//! pixels of the rendered images.

use adamatch_wgpu::train::eval::EvalResult;
use adamatch_wgpu::train::plots::{confusion_chart, line_chart, line_chart_marked};
use image::{Rgb, RgbImage};

const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const LEGEND_BORDER: Rgb<u8> = Rgb([180, 180, 180]);

/// Pixels of exactly `color` in the rectangle [x0, x1) x [y0, y1).
fn count(img: &RgbImage, color: Rgb<u8>, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
    (y0..y1.min(img.height()))
        .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
        .filter(|&(x, y)| *img.get_pixel(x, y) == color)
        .count()
}

fn is_dark(p: &Rgb<u8>) -> bool {
    p.0.iter().all(|&c| c < 100)
}

#[test]
fn line_chart_draws_each_series_where_its_points_are_and_the_legend_in_an_empty_corner() {
    // A rising curve (bottom left to top right) and a flat one at the top: the lower right is
    // the emptiest corner.
    let rising: Vec<(f64, f64)> = (0..=50).map(|i| (i as f64 * 10.0, i as f64 * 2.0)).collect();
    let mut flat: Vec<(f64, f64)> = (0..=50).map(|i| (i as f64 * 10.0, 95.0)).collect();
    flat[7].1 = f64::NAN; // left out
    let img = line_chart("accuracy", "step", &[("rising", rising), ("flat", flat)]).unwrap();
    let (w, h) = img.dimensions();
    let (mid_x, mid_y) = (w / 2, h / 2);
    // The rising curve crosses the lower-left and upper-right quarters, not the other two
    // (except where the legend's sample line is drawn).
    assert!(
        count(&img, BLUE, (0, mid_x), (mid_y, h)) > 50,
        "rising curve missing at its start"
    );
    assert!(
        count(&img, BLUE, (mid_x, w), (0, mid_y)) > 50,
        "rising curve missing at its end"
    );
    assert!(
        count(&img, BLUE, (0, mid_x), (0, mid_y)) < 5,
        "rising curve drawn in the upper left"
    );
    // The flat curve at 95 of a 0..100 axis lies in the top fifth of the image.
    assert!(
        count(&img, ORANGE, (0, w), (0, h / 5)) > 200,
        "flat curve not near the top"
    );
    // The legend box (and both sample lines in it) sits in the lower right.
    assert!(
        count(&img, LEGEND_BORDER, (mid_x, w), (mid_y, h)) > 50,
        "no legend box in the lower right"
    );
    assert!(
        count(&img, LEGEND_BORDER, (mid_x, w), (0, mid_y)) < 10,
        "legend box in the upper right"
    );
    // The title is drawn above the plot, centred.
    let title_dark = (0..30).flat_map(|y| (w / 3..2 * w / 3).map(move |x| (x, y)));
    assert!(
        title_dark.filter(|&(x, y)| is_dark(img.get_pixel(x, y))).count() > 20,
        "no title"
    );
}

#[test]
fn line_chart_copes_with_empty_single_point_and_constant_series() {
    for series in [
        vec![],
        vec![(3.0, 1.0)],
        vec![(0.0, 2.0), (10.0, 2.0)],
        vec![(f64::NAN, 1.0)],
    ] {
        let img = line_chart("t", "step", &[("a", series.clone())]).unwrap();
        assert_eq!(img.dimensions(), (800, 450), "{series:?}");
        if series.iter().any(|(x, y): &(f64, f64)| x.is_finite() && y.is_finite()) {
            assert!(count(&img, BLUE, (0, 800), (0, 450)) > 10, "{series:?} not drawn");
        }
    }
}

fn eval(confusion: Vec<Vec<u64>>) -> EvalResult {
    let k = confusion.len();
    let predicted = (0..k).map(|p| confusion.iter().map(|r| r[p]).sum()).collect();
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(t, r)| r[t] as f64 / r.iter().sum::<u64>().max(1) as f64)
        .collect();
    EvalResult {
        images: confusion.iter().flatten().sum::<u64>() as usize,
        classes: (0..k).map(|c| format!("class{c}")).collect(),
        labeled: true,
        accuracy: Some(0.0),
        per_class: Some(per_class),
        confusion: Some(confusion),
        predicted,
        mean_confidence: 0.5,
        threshold: None,
        mask_rate: None,
    }
}

#[test]
fn confusion_chart_shades_each_cell_by_its_share_of_the_row() {
    let confusion = vec![vec![8, 2, 0], vec![0, 10, 0], vec![5, 0, 5]];
    let img = confusion_chart("confusion", &eval(confusion.clone())).unwrap();
    // Find the grid: the fully blue cell (row 1, column 1) is the only (0, 0, 255) block.
    let full = Rgb([0, 0, 255]);
    let blues: Vec<(u32, u32)> = img
        .enumerate_pixels()
        .filter(|(_, _, p)| **p == full)
        .map(|(x, y, _)| (x, y))
        .collect();
    assert!(!blues.is_empty(), "no fully shaded cell");
    let (bx0, by0) = blues
        .iter()
        .fold((u32::MAX, u32::MAX), |(a, b), &(x, y)| (a.min(x), b.min(y)));
    let (bx1, by1) = blues.iter().fold((0, 0), |(a, b), &(x, y)| (a.max(x), b.max(y)));
    let cell = bx1 + 1 - bx0;
    assert!(
        (by1 + 1 - by0).abs_diff(cell) <= 2,
        "cell not square: {cell} x {}",
        by1 + 1 - by0
    );
    // A cell's shade fills 96% of its square (a white gap between cells).
    let step = (cell as f64 / 0.96).round() as u32;
    for (t, row) in confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &v) in row.iter().enumerate() {
            // A point near the cell's top-left corner, clear of the count in its centre.
            let x = (bx0 as i64 + (p as i64 - 1) * step as i64 + 4) as u32;
            let y = (by0 as i64 + (t as i64 - 1) * step as i64 + 4) as u32;
            let shade = (255.0 * (1.0 - v as f64 / total as f64)).round() as i64;
            let got = img.get_pixel(x, y);
            assert!(
                (got.0[0] as i64 - shade).abs() <= 1 && got.0[2] == 255,
                "cell ({t}, {p}) = {v}/{total}: pixel {got:?} at ({x}, {y}), want ({shade}, {shade}, 255)"
            );
        }
    }
}

#[test]
fn the_phase_marker_is_a_vertical_line_at_its_step() {
    // A flat series from step 0 to 1000, the marker at 250: a column of the marker's grey a
    // quarter of the way across the plot area, and none elsewhere.
    const GREY: Rgb<u8> = Rgb([120, 120, 120]);
    let flat: Vec<(f64, f64)> = (0..=10).map(|i| (i as f64 * 100.0, 50.0)).collect();
    let plain = line_chart("loss", "step", &[("flat", flat.clone())]).unwrap();
    let marked = line_chart_marked("loss", "step", &[("flat", flat)], Some((250.0, "adapting"))).unwrap();
    let (w, h) = marked.dimensions();
    let columns = |img: &RgbImage| -> Vec<u32> {
        (0..w)
            .filter(|&x| count(img, GREY, (x, x + 1), (0, h)) > (h / 3) as usize)
            .collect()
    };
    assert!(columns(&plain).is_empty(), "the plain chart has a vertical grey line");
    let columns = columns(&marked);
    assert!(!columns.is_empty(), "no vertical line of the marker's colour");
    // The plot area spans most of the width: 250 of 1000 lands in its first third.
    assert!(
        columns.iter().all(|&x| x > w / 10 && x < w / 3),
        "the marker is at columns {columns:?} of {w}"
    );
}
