//! Augmentation on square u8 HWC RGB images of any side (taken from the buffer's length), written from the PIL / Keras definitions one pixel at a
//! time. The kernel's arithmetic is integer / fixed point (Q16 matrices and factors), so this
//! reference applies the same quantised parameters and must match it exactly. The `pil_*_f64`
//! functions are the unquantised float definitions, used to check that the integer forms stay
//! within one level of them.

use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::kernels::augment::{
    cutout_value, AugParams, OpSlot, OP_AFFINE, OP_AUTOCONTRAST, OP_BRIGHTNESS, OP_COLOR, OP_CONTRAST, OP_EQUALIZE,
    OP_IDENTITY, OP_POSTERIZE, OP_SHARPNESS, OP_SOLARIZE,
};

/// The side of a square RGB image of `img.len()` bytes.
pub fn side(img: &[u8]) -> i64 {
    let n = ((img.len() / 3) as f64).sqrt().round() as i64;
    assert_eq!((n * n * 3) as usize, img.len(), "not a square RGB image");
    n
}

fn at(img: &[u8], x: i64, y: i64, c: usize) -> u8 {
    img[(y * side(img) + x) as usize * 3 + c]
}

/// PIL's `convert("L")`.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.blend(degenerate, image, factor)` with a Q16 factor: truncated, clipped, plus `add`.
fn blend_q16(degenerate: u8, x: u8, factor_q16: i32, add: i32) -> u8 {
    let d = degenerate as i64;
    let num = d * 65536 + factor_q16 as i64 * (x as i64 - d);
    (num.div_euclid(65536) + add as i64).clamp(0, 255) as u8
}

/// Index of `i` under the border rule of `mode` (bits 2-3), or None for the constant fill.
fn border(mut i: i64, rule: u32, n: i64) -> Option<i64> {
    match rule {
        0 => (0..n).contains(&i).then_some(i),
        1 => {
            // Symmetric: -1 -> 0, n -> n - 1.
            while !(0..n).contains(&i) {
                i = if i < 0 { -i - 1 } else { 2 * n - 1 - i };
            }
            Some(i)
        }
        2 => {
            // Without edge repeat: -1 -> 1, n -> n - 2.
            while !(0..n).contains(&i) {
                i = if i < 0 { -i } else { 2 * n - 2 - i };
            }
            Some(i)
        }
        _ => panic!("unknown border rule {rule}"),
    }
}

fn tap(img: &[u8], x: i64, y: i64, rule: u32, fill: u8) -> [u8; 3] {
    let n = side(img);
    match (border(x, rule, n), border(y, rule, n)) {
        (Some(bx), Some(by)) => [at(img, bx, by, 0), at(img, bx, by, 1), at(img, bx, by, 2)],
        _ => [fill; 3],
    }
}

fn affine(img: &[u8], s: &OpSlot) -> Vec<u8> {
    let m: Vec<i64> = s.m.iter().map(|&v| v as i64).collect();
    let bilinear = s.mode & 1 == 1;
    let rule = (s.mode >> 2) & 3;
    let fill = ((s.mode >> 8) & 255) as u8;
    let n = side(img);
    let mut out = vec![0u8; img.len()];
    for y in 0..n {
        for x in 0..n {
            // Source point of the pixel centre, in units of 1/131072 px.
            let sx = m[0] * (2 * x + 1) + m[1] * (2 * y + 1) + 2 * m[2];
            let sy = m[3] * (2 * x + 1) + m[4] * (2 * y + 1) + 2 * m[5];
            let v = if !bilinear {
                tap(img, sx.div_euclid(131072), sy.div_euclid(131072), rule, fill)
            } else {
                // Sample between pixel centres: shift by half a pixel, 8-bit weights.
                let (px, py) = (sx - 65536, sy - 65536);
                let (x0, y0) = (px.div_euclid(131072), py.div_euclid(131072));
                let wx = (px.rem_euclid(131072) >> 9) as f64;
                let wy = (py.rem_euclid(131072) >> 9) as f64;
                let t = [
                    tap(img, x0, y0, rule, fill),
                    tap(img, x0 + 1, y0, rule, fill),
                    tap(img, x0, y0 + 1, rule, fill),
                    tap(img, x0 + 1, y0 + 1, rule, fill),
                ];
                let mut v = [0u8; 3];
                for c in 0..3 {
                    let sum = (t[0][c] as f64 * (256.0 - wx) + t[1][c] as f64 * wx) * (256.0 - wy)
                        + (t[2][c] as f64 * (256.0 - wx) + t[3][c] as f64 * wx) * wy;
                    v[c] = (sum / 65536.0 + 0.5).floor() as u8;
                }
                v
            };
            out[(y * n + x) as usize * 3..][..3].copy_from_slice(&v);
        }
    }
    out
}

fn per_channel_lut(img: &[u8], lut: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let luts: Vec<Vec<u8>> = (0..3).map(lut).collect();
    img.iter().enumerate().map(|(i, &v)| luts[i % 3][v as usize]).collect()
}

fn histogram(img: &[u8], c: usize) -> [u32; 256] {
    let mut h = [0u32; 256];
    for px in img.chunks_exact(3) {
        h[px[c] as usize] += 1;
    }
    h
}

/// `ImageOps.autocontrast(cutoff=0)` per channel, integer table.
fn autocontrast(img: &[u8]) -> Vec<u8> {
    per_channel_lut(img, |c| {
        let h = histogram(img, c);
        let lo = h.iter().position(|&n| n > 0).unwrap() as i64;
        let hi = h.iter().rposition(|&n| n > 0).unwrap() as i64;
        (0..256i64)
            .map(|i| {
                if hi <= lo {
                    i as u8
                } else {
                    ((i - lo) * 255).div_euclid(hi - lo).clamp(0, 255) as u8
                }
            })
            .collect()
    })
}

/// `ImageOps.equalize`, as Pillow's Python code.
fn equalize(img: &[u8]) -> Vec<u8> {
    per_channel_lut(img, |c| {
        let h = histogram(img, c);
        let histo: Vec<u32> = h.iter().copied().filter(|&n| n > 0).collect();
        if histo.len() <= 1 {
            return (0..=255).collect();
        }
        let step = (histo.iter().sum::<u32>() - histo[histo.len() - 1]) / 256;
        if step == 0 {
            return (0..=255).collect();
        }
        let mut n = step / 2;
        let mut lut = Vec::with_capacity(256);
        for &count in &h {
            lut.push((n / step).min(255) as u8);
            n += count;
        }
        lut
    })
}

fn smooth_at(img: &[u8], x: i64, y: i64, c: usize) -> u8 {
    let n = side(img);
    if x == 0 || y == 0 || x == n - 1 || y == n - 1 {
        return at(img, x, y, c);
    }
    let mut s = 4 * at(img, x, y, c) as u32;
    for dy in -1..=1 {
        for dx in -1..=1 {
            s += at(img, x + dx, y + dy, c) as u32;
        }
    }
    (s as f64 / 13.0 + 0.5).floor() as u8
}

/// One op slot.
pub fn apply_slot(img: &[u8], s: &OpSlot) -> Vec<u8> {
    let n = side(img);
    let pixels = || (0..n).flat_map(|y| (0..n).map(move |x| (x, y)));
    let pointwise = |f: &dyn Fn(i64, i64, usize, u8) -> u8| -> Vec<u8> {
        pixels()
            .flat_map(|(x, y)| (0..3).map(move |c| (x, y, c)))
            .map(|(x, y, c)| f(x, y, c, at(img, x, y, c)))
            .collect()
    };
    match s.kind {
        OP_IDENTITY => img.to_vec(),
        OP_AFFINE => affine(img, s),
        OP_AUTOCONTRAST => autocontrast(img),
        OP_EQUALIZE => equalize(img),
        OP_SOLARIZE => pointwise(&|_, _, _, v| {
            let v = (v as u32 + s.m[1] as u32).min(255);
            if v < s.m[0] as u32 {
                v as u8
            } else {
                255 - v as u8
            }
        }),
        OP_POSTERIZE => pointwise(&|_, _, _, v| v & !((1u16 << (8 - s.m[0])) - 1) as u8),
        OP_COLOR => pointwise(&|x, y, _, v| {
            let l = luma(at(img, x, y, 0), at(img, x, y, 1), at(img, x, y, 2));
            blend_q16(l, v, s.m[0], 0)
        }),
        OP_CONTRAST => {
            let sum: u32 = img.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u32).sum();
            let mean = (sum as f64 / (n * n) as f64 + 0.5) as u8;
            pointwise(&|_, _, _, v| blend_q16(mean, v, s.m[0], 0))
        }
        OP_BRIGHTNESS => pointwise(&|_, _, _, v| blend_q16(0, v, s.m[0], s.m[1])),
        OP_SHARPNESS => pointwise(&|x, y, c, v| blend_q16(smooth_at(img, x, y, c), v, s.m[0], 0)),
        k => panic!("unknown op kind {k}"),
    }
}

/// Channel `c` of level `v` recoloured: the straight line from `dark`'s channel at 0 to
/// `light`'s at 255, rounded to nearest (computed in f64).
pub fn recolor_level(p: &AugParams, c: usize, v: u8) -> u8 {
    let (dark, light) = (p.dark.to_le_bytes()[c] as f64, p.light.to_le_bytes()[c] as f64);
    (dark + (light - dark) * v as f64 / 255.0).round() as u8
}

/// The inversion and the recolouring (when asked), then the three slots in order (u8 levels,
/// before cutout and scaling).
pub fn augment_levels(img: &[u8], p: &AugParams) -> Vec<u8> {
    let input: Vec<u8> = img
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let v = if p.invert == 0 { v } else { 255 - v };
            if p.recolor == 0 {
                v
            } else {
                recolor_level(p, i % 3, v)
            }
        })
        .collect();
    p.slots.iter().fold(input, |acc, s| apply_slot(&acc, s))
}

/// Whether pixel (x, y) is inside the cutout square.
pub fn in_cutout(p: &AugParams, x: i64, y: i64) -> bool {
    let size = p.cutout_size as i64;
    let (x0, y0) = (p.cutout_x as i64 - size / 2, p.cutout_y as i64 - size / 2);
    size > 0 && (x0..x0 + size).contains(&x) && (y0..y0 + size).contains(&y)
}

/// The full view: slots, cutout, scaling. f32 NHWC.
pub fn augment(img: &[u8], p: &AugParams, scale: InputScale) -> Vec<f32> {
    let n = side(img);
    let levels = augment_levels(img, p);
    levels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (x, y) = ((i / 3) as i64 % n, (i / 3) as i64 / n);
            if in_cutout(p, x, y) {
                cutout_value(scale)
            } else {
                scale.apply(v)
            }
        })
        .collect()
}

/// PIL's float blend (`Image.blend`): truncated and clipped, unquantised factor.
pub fn pil_blend_f64(degenerate: u8, x: u8, factor: f64) -> u8 {
    let t = degenerate as f64 + factor * (x as f64 - degenerate as f64);
    t.clamp(0.0, 255.0) as u8
}

/// Pillow's autocontrast table in float: `int(i * scale + offset)`, clipped.
pub fn pil_autocontrast_f64(img: &[u8]) -> Vec<u8> {
    per_channel_lut(img, |c| {
        let h = histogram(img, c);
        let lo = h.iter().position(|&n| n > 0).unwrap() as f64;
        let hi = h.iter().rposition(|&n| n > 0).unwrap() as f64;
        (0..256)
            .map(|i| {
                if hi <= lo {
                    i as u8
                } else {
                    let scale = 255.0 / (hi - lo);
                    (i as f64 * scale - lo * scale).clamp(0.0, 255.0) as u8
                }
            })
            .collect()
    })
}

/// A geometric op with an unquantised matrix, nearest (PIL) or bilinear (float weights),
/// constant fill only.
pub fn affine_f64(img: &[u8], m: [f64; 6], bilinear: bool, fill: u8) -> Vec<u8> {
    let n = side(img);
    let get = |x: i64, y: i64, c: usize| -> f64 {
        if (0..n).contains(&x) && (0..n).contains(&y) {
            at(img, x, y, c) as f64
        } else {
            fill as f64
        }
    };
    let mut out = vec![0u8; img.len()];
    for y in 0..n {
        for x in 0..n {
            let (u, v) = (x as f64 + 0.5, y as f64 + 0.5);
            let sx = m[0] * u + m[1] * v + m[2];
            let sy = m[3] * u + m[4] * v + m[5];
            for c in 0..3 {
                let val = if !bilinear {
                    get(sx.floor() as i64, sy.floor() as i64, c)
                } else {
                    let (px, py) = (sx - 0.5, sy - 0.5);
                    let (x0, y0) = (px.floor(), py.floor());
                    let (fx, fy) = (px - x0, py - y0);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    let top = get(x0, y0, c) * (1.0 - fx) + get(x0 + 1, y0, c) * fx;
                    let bottom = get(x0, y0 + 1, c) * (1.0 - fx) + get(x0 + 1, y0 + 1, c) * fx;
                    (top * (1.0 - fy) + bottom * fy).round()
                };
                out[(y * n + x) as usize * 3 + c] = val as u8;
            }
        }
    }
    out
}
