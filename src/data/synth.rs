//! The built-in synthetic domain pair, generated procedurally from (seed, index) with no files:
//!
//! - `synth-digits` (source, MNIST-like): white-on-black gray digits drawn as pen strokes from
//!   three handwriting styles per digit, with a random smooth warp, affine jitter (rotation,
//!   shear, scale, aspect, position) and stroke width; about 20 px tall, centred like MNIST
//!   padded to 32x32.
//! - `synth-house` (target, SVHN-like): colour digits from three printed-font families (sans,
//!   block, serif) that differ from the handwriting, plates of both polarities (a light colour
//!   digit on a dark colour ground, or its negative), gradient and value-noise textured
//!   backgrounds, partial distractor digits at the left and right edges, blur, pixel noise,
//!   contrast and brightness changes.
//!
//! Every image is a pure function of (domain, seed, split, index): the training split is an
//! infinite stream, the test split a fixed set of [`TEST_SIZE`] images drawn from a disjoint
//! stream. Labels are uniform over 0..=9. Generation uses only f32 arithmetic and a SplitMix64
//! generator, so it is fast (tens of microseconds per image) and reproducible.

use std::sync::OnceLock;

use super::{Dataset, ImageSource, Label, Split, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES};

/// Size of a synthetic test split.
pub const TEST_SIZE: usize = 10_000;

/// Which synthetic domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SynthDomain {
    /// `synth-digits`: MNIST-like handwritten gray digits (source domain).
    Digits,
    /// `synth-house`: SVHN-like colour house-number digits (target domain).
    House,
}

impl SynthDomain {
    /// The dataset name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SynthDomain::Digits => "synth-digits",
            SynthDomain::House => "synth-house",
        }
    }
}

/// SplitMix64: tiny, fast, and identical on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is a function of `seed` only.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    /// Uniform in [a, b).
    pub fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.f32()
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
    /// True with probability p.
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }
    /// Approximately standard normal (sum of 4 uniforms, rescaled).
    pub fn normal(&mut self) -> f32 {
        let b = self.next_u64();
        let s: u32 = (0..4).map(|k| ((b >> (16 * k)) & 0xffff) as u32).sum();
        (s as f32 / 65535.0 - 2.0) * 1.732_050_8
    }
}

/// The SplitMix64 finaliser (a good 64-bit mixing function).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The per-image generator seed for (domain, seed, split, index).
fn image_seed(domain: SynthDomain, seed: u64, split: Split, index: u64) -> u64 {
    let d = match domain {
        SynthDomain::Digits => 0x6469_6769_7473,
        SynthDomain::House => 0x0068_6f75_7365,
    };
    let s = match split {
        Split::Train => 0x0074_7261_696e,
        Split::Test => 0x7465_7374,
    };
    mix64(mix64(mix64(seed ^ d).wrapping_add(s)).wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

// ---------------------------------------------------------------------------------------------
// Glyphs: strokes (polylines) in a unit box, x right, y down.

type Stroke = Vec<[f32; 2]>;
type Glyph = Vec<Stroke>;

/// Elliptic arc from angle a0 to a1 in degrees (0 = right, 90 = down, increasing clockwise on
/// screen).
fn arc(cx: f32, cy: f32, rx: f32, ry: f32, a0: f32, a1: f32) -> Stroke {
    let n = (((a1 - a0).abs() / 15.0).ceil() as usize).max(2);
    (0..=n)
        .map(|i| {
            let a = (a0 + (a1 - a0) * i as f32 / n as f32).to_radians();
            [cx + rx * a.cos(), cy + ry * a.sin()]
        })
        .collect()
}

fn line(p: &[[f32; 2]]) -> Stroke {
    p.to_vec()
}

/// Catmull-Rom spline through the points, 5 segments per span.
fn curve(p: &[[f32; 2]]) -> Stroke {
    let mut out = vec![p[0]];
    for i in 0..p.len() - 1 {
        let p0 = p[i.saturating_sub(1)];
        let p1 = p[i];
        let p2 = p[i + 1];
        let p3 = p[(i + 2).min(p.len() - 1)];
        for k in 1..=5 {
            let t = k as f32 / 5.0;
            let (t2, t3) = (t * t, t * t * t);
            let f = |a: f32, b: f32, c: f32, d: f32| {
                0.5 * (2.0 * b
                    + (-a + c) * t
                    + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                    + (-a + 3.0 * b - 3.0 * c + d) * t3)
            };
            out.push([f(p0[0], p1[0], p2[0], p3[0]), f(p0[1], p1[1], p2[1], p3[1])]);
        }
    }
    out
}

fn join(mut a: Stroke, b: Stroke) -> Stroke {
    a.extend(b);
    a
}

/// Handwriting styles for `synth-digits`: three per digit.
fn handwritten() -> Vec<Vec<Glyph>> {
    let mut styles = handwritten_0_to_4();
    styles.extend(handwritten_5_to_9());
    styles
}

/// Styles of the digits 0 to 4 (see [`handwritten`]).
fn handwritten_0_to_4() -> Vec<Vec<Glyph>> {
    vec![
        // 0
        vec![
            vec![arc(0.5, 0.5, 0.36, 0.48, -90.0, 280.0)],
            vec![arc(0.5, 0.5, 0.26, 0.48, -80.0, 290.0)],
            vec![arc(0.5, 0.5, 0.42, 0.46, -110.0, 262.0)],
        ],
        // 1
        vec![
            vec![line(&[[0.52, 0.02], [0.48, 0.98]])],
            vec![line(&[[0.3, 0.2], [0.56, 0.02], [0.54, 0.98]])],
            vec![
                line(&[[0.28, 0.22], [0.52, 0.02], [0.52, 0.98]]),
                line(&[[0.3, 0.98], [0.74, 0.97]]),
            ],
        ],
        // 2
        vec![
            vec![join(
                curve(&[
                    [0.12, 0.28],
                    [0.3, 0.06],
                    [0.58, 0.03],
                    [0.8, 0.18],
                    [0.78, 0.42],
                    [0.45, 0.72],
                    [0.1, 0.97],
                ]),
                line(&[[0.92, 0.95]]),
            )],
            vec![curve(&[
                [0.15, 0.3],
                [0.35, 0.05],
                [0.7, 0.05],
                [0.82, 0.3],
                [0.6, 0.6],
                [0.22, 0.9],
                [0.12, 0.96],
                [0.3, 0.92],
                [0.6, 0.94],
                [0.92, 0.98],
            ])],
            vec![join(
                arc(0.5, 0.3, 0.36, 0.28, 200.0, 400.0),
                line(&[[0.12, 0.98], [0.9, 0.98]]),
            )],
            // Looped 2: the diagonal curls into a small loop before the base.
            vec![curve(&[
                [0.18, 0.22],
                [0.45, 0.02],
                [0.78, 0.15],
                [0.7, 0.45],
                [0.35, 0.78],
                [0.2, 0.95],
                [0.38, 0.98],
                [0.42, 0.82],
                [0.3, 0.86],
                [0.6, 0.95],
                [0.9, 0.9],
            ])],
        ],
        // 3
        vec![
            vec![curve(&[
                [0.15, 0.12],
                [0.45, 0.02],
                [0.78, 0.12],
                [0.78, 0.32],
                [0.45, 0.48],
                [0.85, 0.64],
                [0.82, 0.88],
                [0.5, 0.99],
                [0.12, 0.88],
            ])],
            vec![
                line(&[[0.15, 0.03], [0.85, 0.03], [0.45, 0.42]]),
                curve(&[[0.45, 0.42], [0.8, 0.55], [0.85, 0.78], [0.55, 0.98], [0.15, 0.88]]),
            ],
            vec![
                arc(0.5, 0.27, 0.3, 0.24, 200.0, 450.0),
                arc(0.5, 0.74, 0.34, 0.25, 270.0, 520.0),
            ],
            // Big upper bump, small lower one, one stroke.
            vec![curve(&[
                [0.12, 0.18],
                [0.5, 0.02],
                [0.85, 0.2],
                [0.7, 0.42],
                [0.4, 0.52],
                [0.75, 0.62],
                [0.8, 0.85],
                [0.45, 0.98],
                [0.15, 0.85],
            ])],
        ],
        // 4
        vec![
            vec![
                line(&[[0.6, 0.02], [0.1, 0.65], [0.92, 0.65]]),
                line(&[[0.68, 0.3], [0.68, 0.98]]),
            ],
            vec![
                line(&[[0.2, 0.02], [0.15, 0.55], [0.85, 0.55]]),
                line(&[[0.7, 0.05], [0.7, 0.98]]),
            ],
            vec![
                line(&[[0.55, 0.02], [0.12, 0.62], [0.9, 0.62]]),
                line(&[[0.62, 0.02], [0.62, 0.98]]),
            ],
        ],
    ]
}

/// Styles of the digits 5 to 9 (see [`handwritten`]).
fn handwritten_5_to_9() -> Vec<Vec<Glyph>> {
    vec![
        // 5
        vec![
            vec![
                line(&[[0.8, 0.03], [0.25, 0.03], [0.2, 0.45]]),
                curve(&[
                    [0.2, 0.45],
                    [0.5, 0.38],
                    [0.82, 0.55],
                    [0.82, 0.8],
                    [0.5, 0.98],
                    [0.15, 0.88],
                ]),
            ],
            vec![
                curve(&[
                    [0.24, 0.03],
                    [0.2, 0.45],
                    [0.55, 0.4],
                    [0.8, 0.62],
                    [0.7, 0.9],
                    [0.4, 0.98],
                    [0.15, 0.9],
                ]),
                line(&[[0.24, 0.03], [0.84, 0.02]]),
            ],
            vec![
                line(&[[0.82, 0.03], [0.28, 0.03], [0.24, 0.44]]),
                arc(0.5, 0.68, 0.32, 0.3, 215.0, 510.0),
            ],
        ],
        // 6
        vec![
            vec![curve(&[
                [0.75, 0.05],
                [0.45, 0.15],
                [0.22, 0.45],
                [0.2, 0.75],
                [0.45, 0.98],
                [0.75, 0.85],
                [0.78, 0.62],
                [0.5, 0.5],
                [0.22, 0.65],
            ])],
            vec![
                curve(&[[0.7, 0.02], [0.35, 0.35], [0.22, 0.72]]),
                arc(0.5, 0.72, 0.28, 0.26, 180.0, 540.0),
            ],
            vec![
                line(&[[0.62, 0.02], [0.24, 0.66]]),
                arc(0.5, 0.74, 0.3, 0.24, 0.0, 360.0),
            ],
            // Long ascender, small loop.
            vec![
                curve(&[[0.8, 0.02], [0.45, 0.3], [0.25, 0.65], [0.28, 0.9]]),
                arc(0.48, 0.8, 0.22, 0.18, 150.0, 520.0),
            ],
        ],
        // 7
        vec![
            vec![line(&[[0.1, 0.05], [0.9, 0.05], [0.4, 0.98]])],
            vec![
                line(&[[0.1, 0.05], [0.9, 0.05], [0.45, 0.98]]),
                line(&[[0.38, 0.5], [0.82, 0.5]]),
            ],
            vec![
                line(&[[0.12, 0.1], [0.88, 0.04]]),
                curve(&[[0.88, 0.04], [0.6, 0.4], [0.45, 0.98]]),
            ],
        ],
        // 8
        vec![
            vec![
                arc(0.5, 0.26, 0.26, 0.23, 0.0, 360.0),
                arc(0.5, 0.72, 0.32, 0.26, 0.0, 360.0),
            ],
            vec![curve(&[
                [0.72, 0.12],
                [0.5, 0.02],
                [0.26, 0.14],
                [0.32, 0.36],
                [0.7, 0.6],
                [0.74, 0.86],
                [0.5, 0.98],
                [0.26, 0.86],
                [0.3, 0.6],
                [0.68, 0.36],
                [0.74, 0.14],
                [0.5, 0.02],
            ])],
            vec![
                arc(0.52, 0.25, 0.22, 0.22, 0.0, 360.0),
                arc(0.48, 0.72, 0.3, 0.27, 0.0, 360.0),
            ],
            // Slanted, drawn as an S and a closing diagonal.
            vec![
                curve(&[
                    [0.8, 0.1],
                    [0.55, 0.02],
                    [0.3, 0.15],
                    [0.45, 0.42],
                    [0.7, 0.65],
                    [0.6, 0.95],
                    [0.3, 0.92],
                    [0.3, 0.7],
                ]),
                line(&[[0.3, 0.7], [0.8, 0.1]]),
            ],
        ],
        // 9
        vec![
            vec![arc(0.5, 0.3, 0.3, 0.27, 0.0, 360.0), line(&[[0.8, 0.3], [0.75, 0.98]])],
            vec![
                arc(0.5, 0.28, 0.3, 0.26, 0.0, 360.0),
                curve(&[[0.8, 0.28], [0.75, 0.7], [0.55, 0.98], [0.25, 0.9]]),
            ],
            vec![
                arc(0.48, 0.3, 0.3, 0.26, 0.0, 360.0),
                line(&[[0.78, 0.32], [0.5, 0.98]]),
            ],
        ],
    ]
}

/// Printed-font families for `synth-house`: sans, block and serif, one glyph per digit each.
fn printed() -> Vec<Vec<Glyph>> {
    let sans: Vec<Glyph> = vec![
        vec![arc(0.5, 0.5, 0.42, 0.48, 0.0, 360.0)],
        vec![line(&[[0.2, 0.22], [0.6, 0.02], [0.6, 0.98]])],
        vec![join(
            arc(0.5, 0.28, 0.4, 0.26, 190.0, 375.0),
            line(&[[0.62, 0.56], [0.08, 0.98], [0.92, 0.98]]),
        )],
        vec![
            line(&[[0.12, 0.02], [0.85, 0.02], [0.45, 0.4]]),
            arc(0.48, 0.7, 0.4, 0.3, 240.0, 520.0),
        ],
        vec![line(&[[0.72, 0.98], [0.72, 0.02], [0.06, 0.7], [0.96, 0.7]])],
        vec![
            line(&[[0.86, 0.02], [0.22, 0.02], [0.16, 0.46]]),
            arc(0.5, 0.68, 0.4, 0.3, 220.0, 510.0),
        ],
        vec![
            arc(0.5, 0.7, 0.4, 0.28, 0.0, 360.0),
            curve(&[[0.85, 0.12], [0.55, 0.02], [0.2, 0.2], [0.1, 0.6], [0.12, 0.72]]),
        ],
        vec![line(&[[0.06, 0.02], [0.94, 0.02], [0.36, 0.98]])],
        vec![
            arc(0.5, 0.25, 0.34, 0.23, 0.0, 360.0),
            arc(0.5, 0.72, 0.42, 0.26, 0.0, 360.0),
        ],
        vec![
            arc(0.5, 0.3, 0.4, 0.28, 0.0, 360.0),
            curve(&[[0.9, 0.3], [0.88, 0.55], [0.8, 0.8], [0.45, 0.98], [0.14, 0.86]]),
        ],
    ];
    let block: Vec<Glyph> = vec![
        vec![line(&[[0.1, 0.02], [0.9, 0.02], [0.9, 0.98], [0.1, 0.98], [0.1, 0.02]])],
        vec![
            line(&[[0.25, 0.15], [0.55, 0.02], [0.55, 0.98]]),
            line(&[[0.25, 0.98], [0.85, 0.98]]),
        ],
        vec![line(&[
            [0.1, 0.02],
            [0.9, 0.02],
            [0.9, 0.5],
            [0.1, 0.5],
            [0.1, 0.98],
            [0.9, 0.98],
        ])],
        vec![
            line(&[[0.1, 0.02], [0.9, 0.02], [0.9, 0.98], [0.1, 0.98]]),
            line(&[[0.3, 0.5], [0.9, 0.5]]),
        ],
        vec![
            line(&[[0.1, 0.02], [0.1, 0.62], [0.92, 0.62]]),
            line(&[[0.72, 0.25], [0.72, 0.98]]),
        ],
        vec![line(&[
            [0.9, 0.02],
            [0.1, 0.02],
            [0.1, 0.5],
            [0.9, 0.5],
            [0.9, 0.98],
            [0.1, 0.98],
        ])],
        vec![line(&[
            [0.85, 0.02],
            [0.1, 0.02],
            [0.1, 0.98],
            [0.9, 0.98],
            [0.9, 0.5],
            [0.1, 0.5],
        ])],
        vec![line(&[[0.1, 0.02], [0.9, 0.02], [0.9, 0.98]])],
        vec![
            line(&[[0.1, 0.02], [0.9, 0.02], [0.9, 0.98], [0.1, 0.98], [0.1, 0.02]]),
            line(&[[0.1, 0.5], [0.9, 0.5]]),
        ],
        vec![line(&[
            [0.9, 0.5],
            [0.1, 0.5],
            [0.1, 0.02],
            [0.9, 0.02],
            [0.9, 0.98],
            [0.15, 0.98],
        ])],
    ];
    let mut serif = sans.clone();
    serif[1] = vec![
        line(&[[0.22, 0.2], [0.55, 0.02], [0.55, 0.98]]),
        line(&[[0.22, 0.98], [0.88, 0.98]]),
    ];
    serif[2] = vec![join(
        arc(0.5, 0.3, 0.38, 0.28, 180.0, 380.0),
        join(
            curve(&[[0.85, 0.38], [0.6, 0.62], [0.3, 0.8], [0.1, 0.98]]),
            line(&[[0.92, 0.98], [0.92, 0.86]]),
        ),
    )];
    serif[4] = vec![
        line(&[[0.66, 0.98], [0.66, 0.02], [0.06, 0.7], [0.94, 0.7]]),
        line(&[[0.42, 0.98], [0.9, 0.98]]),
    ];
    serif[7] = vec![line(&[[0.08, 0.18], [0.08, 0.02], [0.92, 0.02], [0.45, 0.98]])];
    serif[9] = vec![
        arc(0.48, 0.3, 0.38, 0.28, 0.0, 360.0),
        line(&[[0.86, 0.3], [0.86, 0.98]]),
    ];
    serif[6] = vec![
        arc(0.5, 0.7, 0.38, 0.28, 0.0, 360.0),
        line(&[[0.76, 0.02], [0.14, 0.66]]),
    ];
    // Transpose to [digit][family].
    (0..NUM_CLASSES)
        .map(|d| vec![sans[d].clone(), block[d].clone(), serif[d].clone()])
        .collect()
}

fn glyphs(domain: SynthDomain) -> &'static [Vec<Glyph>] {
    static HAND: OnceLock<Vec<Vec<Glyph>>> = OnceLock::new();
    static PRINT: OnceLock<Vec<Vec<Glyph>>> = OnceLock::new();
    match domain {
        SynthDomain::Digits => HAND.get_or_init(handwritten),
        SynthDomain::House => PRINT.get_or_init(printed),
    }
}

// ---------------------------------------------------------------------------------------------
// Rasterisation.

/// Maps unit-box glyph coordinates to pixels: centre, size, rotation, shear and an optional
/// smooth warp (handwriting wobble).
#[derive(Clone, Copy, Debug)]
struct Placement {
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    cos: f32,
    sin: f32,
    shear: f32,
    warp: [f32; 6],
}

impl Placement {
    fn map(&self, p: [f32; 2]) -> [f32; 2] {
        let wv = &self.warp;
        let ux = p[0] + wv[0] * (std::f32::consts::TAU * (wv[1] * p[1] + wv[2])).sin();
        let uy = p[1] + wv[3] * (std::f32::consts::TAU * (wv[4] * p[0] + wv[5])).sin();
        let x = (ux - 0.5) * self.w;
        let y = (uy - 0.5) * self.h;
        let x = x + self.shear * y;
        [
            self.cx + self.cos * x - self.sin * y,
            self.cy + self.sin * x + self.cos * y,
        ]
    }
}

/// Draws the glyph's strokes into a 32x32 coverage canvas (max-combined), with round caps and
/// joins, `radius` = half the stroke width in pixels and a 1-pixel anti-aliasing ramp.
fn draw_glyph(canvas: &mut [f32; 1024], glyph: &Glyph, pl: &Placement, radius: f32) {
    let n = IMAGE_SIZE as i32;
    let outer2 = (radius + 0.5) * (radius + 0.5);
    for stroke in glyph {
        let pts: Vec<[f32; 2]> = stroke.iter().map(|&p| pl.map(p)).collect();
        for s in pts.windows(2) {
            let (a, b) = (s[0], s[1]);
            let reach = radius + 1.0;
            let x0 = ((a[0].min(b[0]) - reach).floor() as i32).max(0);
            let x1 = ((a[0].max(b[0]) + reach).ceil() as i32).min(n - 1);
            let y0 = ((a[1].min(b[1]) - reach).floor() as i32).max(0);
            let y1 = ((a[1].max(b[1]) + reach).ceil() as i32).min(n - 1);
            if x0 > x1 || y0 > y1 {
                continue;
            }
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len2 = dx * dx + dy * dy;
            let inv = if len2 > 1e-12 { 1.0 / len2 } else { 0.0 };
            for y in y0..=y1 {
                let py = y as f32 + 0.5;
                for x in x0..=x1 {
                    let px = x as f32 + 0.5;
                    let t = (((px - a[0]) * dx + (py - a[1]) * dy) * inv).clamp(0.0, 1.0);
                    let ex = px - (a[0] + t * dx);
                    let ey = py - (a[1] + t * dy);
                    let d2 = ex * ex + ey * ey;
                    if d2 >= outer2 {
                        continue;
                    }
                    let c = (radius + 0.5 - d2.sqrt()).clamp(0.0, 1.0);
                    let cell = &mut canvas[(y * n + x) as usize];
                    if c > *cell {
                        *cell = c;
                    }
                }
            }
        }
    }
}

/// Separable Gaussian blur of one 32x32 plane (edges clamped); no-op for tiny sigma.
fn blur_plane(plane: &mut [f32; 1024], sigma: f32) {
    const N: usize = IMAGE_SIZE;
    if sigma < 0.15 {
        return;
    }
    let r = ((sigma * 2.5).ceil() as usize).clamp(1, 4);
    let taps = 2 * r + 1;
    let mut k = [0f32; 9];
    let mut sum = 0.0;
    for (i, kv) in k.iter_mut().enumerate().take(taps) {
        let x = i as f32 - r as f32;
        *kv = (-x * x / (2.0 * sigma * sigma)).exp();
        sum += *kv;
    }
    for kv in k.iter_mut() {
        *kv /= sum;
    }
    // Horizontal: each row padded with its edge values, then taps accumulated row-wide.
    let mut tmp = [0f32; 1024];
    let mut padded = [0f32; N + 8];
    for y in 0..N {
        let row = &plane[y * N..(y + 1) * N];
        padded[..r].fill(row[0]);
        padded[r..r + N].copy_from_slice(row);
        padded[r + N..r + N + r].fill(row[N - 1]);
        let out = &mut tmp[y * N..(y + 1) * N];
        for (t, &kv) in k.iter().enumerate().take(taps) {
            for (o, &v) in out.iter_mut().zip(&padded[t..t + N]) {
                *o += kv * v;
            }
        }
    }
    // Vertical: whole rows at a time, source row index clamped.
    for y in 0..N {
        let out = &mut plane[y * N..(y + 1) * N];
        out.fill(0.0);
        for (t, &kv) in k.iter().enumerate().take(taps) {
            let yy = (y + t).saturating_sub(r).min(N - 1);
            for (o, &v) in out.iter_mut().zip(&tmp[yy * N..(yy + 1) * N]) {
                *o += kv * v;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two domains.

fn gen_digits(rng: &mut Rng, label: usize, out: &mut [u8]) {
    let styles = &glyphs(SynthDomain::Digits)[label];
    let glyph = &styles[rng.below(styles.len() as u32) as usize];
    // MNIST: the digit's box is about 20 px tall (stroke included) ...
    let h = rng.range(15.5, 19.5);
    let w = h * rng.range(0.62, 1.05);
    let angle = rng.normal().clamp(-2.5, 2.5) * 0.12;
    let pl = Placement {
        cx: 16.0,
        cy: 16.0,
        w,
        h,
        cos: angle.cos(),
        sin: angle.sin(),
        shear: rng.range(-0.35, 0.2),
        warp: [
            rng.range(-0.06, 0.06),
            rng.range(0.3, 1.2),
            rng.f32(),
            rng.range(-0.06, 0.06),
            rng.range(0.3, 1.2),
            rng.f32(),
        ],
    };
    let radius = rng.range(0.7, 1.65);
    let mut canvas = [0f32; 1024];
    draw_glyph(&mut canvas, glyph, &pl, radius);
    // ... and its centre of mass is moved to the centre by an integer shift.
    center_of_mass_shift(&mut canvas);
    // MNIST strokes have soft anti-aliased edges and a saturated core.
    blur_plane(&mut canvas, rng.range(0.3, 0.55));
    let gain = rng.range(1.25, 1.7) * 255.0;
    for (i, &c) in canvas.iter().enumerate() {
        let v = (c * gain).min(255.0) as u8;
        out[i * 3..i * 3 + 3].fill(v);
    }
}

/// Translates a 32x32 plane by whole pixels (zero fill) so that its centre of mass (in pixel
/// index coordinates) lands as close as possible to (16, 16), as MNIST was centred.
fn center_of_mass_shift(plane: &mut [f32; 1024]) {
    const N: usize = IMAGE_SIZE;
    let (mut m, mut my, mut mx) = (0f32, 0f32, 0f32);
    for (i, &v) in plane.iter().enumerate() {
        m += v;
        my += v * (i / N) as f32;
        mx += v * (i % N) as f32;
    }
    if m <= 0.0 {
        return;
    }
    let dy = (16.0 - my / m).round() as i32;
    let dx = (16.0 - mx / m).round() as i32;
    if dx == 0 && dy == 0 {
        return;
    }
    let src = *plane;
    plane.fill(0.0);
    for y in 0..N as i32 {
        let sy = y - dy;
        if !(0..N as i32).contains(&sy) {
            continue;
        }
        for x in 0..N as i32 {
            let sx = x - dx;
            if (0..N as i32).contains(&sx) {
                plane[y as usize * N + x as usize] = src[sy as usize * N + sx as usize];
            }
        }
    }
}

/// A random colour as RGB in 0..255 with its luma.
fn colour(rng: &mut Rng) -> ([f32; 3], f32) {
    let c = [rng.range(0.0, 255.0), rng.range(0.0, 255.0), rng.range(0.0, 255.0)];
    // Pull towards gray: house numbers are mostly muted, sometimes vivid.
    let g = (c[0] + c[1] + c[2]) / 3.0;
    let s = rng.f32().powf(1.5) * 0.85;
    let c = c.map(|v| g + (v - g) * s);
    (c, 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])
}

fn gen_house(rng: &mut Rng, label: usize, out: &mut [u8]) {
    let families = glyphs(SynthDomain::House)[0].len();
    let family = rng.below(families as u32) as usize;
    // Two colours with enough luma contrast.
    let (mut bg, mut bg_l) = colour(rng);
    let (mut fg, mut fg_l) = colour(rng);
    for _ in 0..8 {
        if (fg_l - bg_l).abs() >= 45.0 {
            break;
        }
        (fg, fg_l) = colour(rng);
    }
    if (fg_l - bg_l).abs() < 45.0 {
        let target = if bg_l > 128.0 { 20.0 } else { 235.0 };
        fg = fg.map(|v| v + (target - fg_l));
    }
    // Plates of both polarities, as house numbers come: a lit plate (the lighter colour is the
    // digit, the ground is darkened and the digit brightened) or its negative, a painted plate
    // (a dark digit on a light ground, the complementary colours).
    if fg_l < bg_l {
        std::mem::swap(&mut fg, &mut bg);
        std::mem::swap(&mut fg_l, &mut bg_l);
    }
    const GROUND: f32 = 80.0 / 255.0;
    let lift = (255.0 - fg_l) * 0.6;
    bg = bg.map(|v| v * GROUND);
    fg = fg.map(|v| (v + lift).min(255.0));
    let (mut bg_l, mut fg_l) = (bg_l * GROUND, fg_l + lift);
    if rng.chance(0.5) {
        bg = bg.map(|v| 255.0 - v);
        fg = fg.map(|v| 255.0 - v);
        (bg_l, fg_l) = (255.0 - bg_l, 255.0 - fg_l);
    }

    // Glyph coverage: the centre digit plus partial neighbours at the edges.
    let h = rng.range(15.0, 22.0);
    let aspect = match family {
        1 => rng.range(0.5, 0.7),
        _ => rng.range(0.55, 0.8),
    };
    let w = h * aspect;
    let angle = rng.normal().clamp(-2.0, 2.0) * 0.06;
    let base = Placement {
        cx: 16.0 + rng.normal().clamp(-2.0, 2.0) * 1.2,
        cy: 16.0 + rng.normal().clamp(-2.0, 2.0) * 1.2,
        w,
        h,
        cos: angle.cos(),
        sin: angle.sin(),
        shear: if rng.chance(0.3) { rng.range(-0.25, 0.05) } else { 0.0 },
        warp: [0.0; 6],
    };
    let radius = h * rng.range(0.05, 0.1) + 0.3;
    let mut cov = [0f32; 1024];
    let set = glyphs(SynthDomain::House);
    draw_glyph(&mut cov, &set[label][family], &base, radius);
    let gap = h * rng.range(0.12, 0.4);
    for side in [-1.0f32, 1.0] {
        if rng.chance(0.3) {
            let d = rng.below(NUM_CLASSES as u32) as usize;
            let mut pl = base;
            pl.cx += side * (w + gap) * base.cos;
            pl.cy += side * (w + gap) * base.sin;
            draw_glyph(&mut cov, &set[d][family], &pl, radius);
        }
    }

    // Background: colour + linear gradient + value-noise texture.
    let ga = rng.range(0.0, std::f32::consts::TAU);
    let (gx, gy) = (ga.cos(), ga.sin());
    let gamp = rng.range(0.0, 45.0) * if rng.chance(0.5) { -1.0 } else { 1.0 };
    let tint = [rng.range(0.7, 1.3), rng.range(0.7, 1.3), rng.range(0.7, 1.3)];
    let tamp = if rng.chance(0.6) { rng.range(0.0, 30.0) } else { 0.0 };
    let mut grid = [0f32; 36];
    for g in grid.iter_mut() {
        *g = rng.range(-1.0, 1.0);
    }
    let fg_var = rng.range(0.0, 25.0);
    let mut planes = [[0f32; 1024]; 3];
    for y in 0..IMAGE_SIZE {
        for x in 0..IMAGE_SIZE {
            let i = y * IMAGE_SIZE + x;
            let (fx, fy) = (x as f32 / 31.0 * 5.0, y as f32 / 31.0 * 5.0);
            let (ix, iy) = ((fx as usize).min(4), (fy as usize).min(4));
            let (tx, ty) = (fx - ix as f32, fy - iy as f32);
            let g = |a: usize, b: usize| grid[b * 6 + a];
            let tex = (g(ix, iy) * (1.0 - tx) + g(ix + 1, iy) * tx) * (1.0 - ty)
                + (g(ix, iy + 1) * (1.0 - tx) + g(ix + 1, iy + 1) * tx) * ty;
            let lin = ((x as f32 - 15.5) * gx + (y as f32 - 15.5) * gy) / 16.0;
            let c = cov[i];
            for ch in 0..3 {
                let b = bg[ch] + gamp * lin * tint[ch] + tamp * tex;
                let f = fg[ch] + fg_var * lin;
                planes[ch][i] = b + (f - b) * c;
            }
        }
    }

    // Camera effects: blur, contrast/brightness, noise.
    let sigma = if rng.chance(0.75) { rng.range(0.2, 1.3) } else { 0.0 };
    let contrast = rng.range(0.8, 1.15);
    let brightness = rng.range(-25.0, 25.0);
    let noise = rng.range(0.0, 10.0);
    let mean = (bg_l + fg_l) * 0.5;
    for plane in planes.iter_mut() {
        blur_plane(plane, sigma);
    }
    // Sensor noise: one 64-bit draw per pixel gives three triangular variates (sum of two
    // 10-bit uniforms each, scaled to unit variance).
    let scale = noise * 2.449 / 1023.0;
    let offset = mean * (1.0 - contrast) + brightness;
    for i in 0..IMAGE_SIZE * IMAGE_SIZE {
        let b = rng.next_u64();
        for (ch, plane) in planes.iter().enumerate() {
            let u = ((b >> (20 * ch)) & 0x3ff) as f32 + ((b >> (20 * ch + 10)) & 0x3ff) as f32;
            let nv = plane[i] * contrast + offset + (u - 1023.0) * scale;
            out[i * 3 + ch] = nv.clamp(0.0, 255.0) as u8;
        }
    }
}

/// Generates image `index` of `domain`'s `split` stream for `seed` into `out` (3072 bytes,
/// 32x32x3 NHWC) and returns its label 0..=9. Pure: same arguments, same bytes.
pub fn generate(domain: SynthDomain, seed: u64, split: Split, index: u64, out: &mut [u8]) -> u8 {
    assert_eq!(out.len(), IMAGE_BYTES, "generate: output length");
    let mut rng = Rng::new(image_seed(domain, seed, split, index));
    let label = rng.below(NUM_CLASSES as u32) as usize;
    match domain {
        SynthDomain::Digits => gen_digits(&mut rng, label, out),
        SynthDomain::House => gen_house(&mut rng, label, out),
    }
    label as u8
}

/// Generates images `start..start+n` in parallel (one chunk per core) into a labeled dataset.
pub fn generate_range(domain: SynthDomain, seed: u64, split: Split, start: u64, n: usize) -> Dataset {
    let mut images = vec![0u8; n * IMAGE_BYTES];
    let per = n.div_ceil(super::worker_count(n, 256)).max(1);
    let labels: Vec<Label> = super::par_chunks_mut(&mut images, per * IMAGE_BYTES, |c, imgs| {
        imgs.chunks_exact_mut(IMAGE_BYTES)
            .enumerate()
            .map(|(k, img)| generate(domain, seed, split, start + (c * per + k) as u64, img) as Label)
            .collect::<Vec<Label>>()
    })
    .concat();
    Dataset {
        size: IMAGE_SIZE,
        images,
        labels: Some(labels),
        classes: super::digit_classes(),
        name: format!("{} seed {seed} {} split", domain.name(), split.name()),
    }
}

/// A synthetic stream: `len` None for the infinite training stream, Some(n) for a test split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthStream {
    /// Which domain.
    pub domain: SynthDomain,
    /// Generator seed (the same seed gives the same images).
    pub seed: u64,
    /// Which stream: train and test never share images.
    pub split: Split,
    /// Number of images (None = infinite).
    pub len: Option<usize>,
    /// Side of the images handed out: generated at [`IMAGE_SIZE`], then resized (PIL bilinear)
    /// when another side is asked for ([`SynthStream::with_size`]).
    pub size: usize,
}

impl SynthStream {
    /// The infinite training stream.
    pub fn train(domain: SynthDomain, seed: u64) -> Self {
        SynthStream {
            domain,
            seed,
            split: Split::Train,
            len: None,
            size: IMAGE_SIZE,
        }
    }

    /// The fixed test split of `n` images (normally [`TEST_SIZE`]).
    pub fn test(domain: SynthDomain, seed: u64, n: usize) -> Self {
        SynthStream {
            domain,
            seed,
            split: Split::Test,
            len: Some(n),
            size: IMAGE_SIZE,
        }
    }

    /// The same stream with images of side `size`.
    pub fn with_size(self, size: usize) -> Self {
        SynthStream { size, ..self }
    }

    /// Images `start..start+n` as a finite dataset (generated in parallel).
    pub fn materialize(&self, start: u64, n: usize) -> Dataset {
        let n = match self.len {
            Some(l) => n.min(l.saturating_sub(start as usize)),
            None => n,
        };
        generate_range(self.domain, self.seed, self.split, start, n).resized(self.size)
    }
}

impl ImageSource for SynthStream {
    fn len(&self) -> Option<usize> {
        self.len
    }

    fn image_size(&self) -> usize {
        self.size
    }

    fn has_labels(&self) -> bool {
        true
    }

    fn classes(&self) -> Vec<String> {
        super::digit_classes()
    }

    fn fill(&self, index: u64, out: &mut [u8]) -> Option<Label> {
        let index = match self.len {
            Some(n) => index % n as u64,
            None => index,
        };
        if self.size == IMAGE_SIZE {
            return Some(generate(self.domain, self.seed, self.split, index, out) as Label);
        }
        let mut native = [0u8; IMAGE_BYTES];
        let label = generate(self.domain, self.seed, self.split, index, &mut native);
        super::image::Resizer::new(IMAGE_SIZE, IMAGE_SIZE, self.size, self.size, 3).resize(&native, out);
        Some(label as Label)
    }

    fn describe(&self) -> String {
        match self.len {
            None => format!(
                "{} (seed {}, {}, infinite procedural stream)",
                self.domain.name(),
                self.seed,
                self.split.name()
            ),
            Some(n) => format!(
                "{} (seed {}, {}, {n} images)",
                self.domain.name(),
                self.seed,
                self.split.name()
            ),
        }
    }
}
