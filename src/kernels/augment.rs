//! Rust side of `shaders/augment.wgsl`: the weak and strong views of square u8 RGB images of any
//! even side (REFERENCE.md, "Augmentation"; 32x32 unless `train --image-size` says otherwise),
//! computed on the GPU and written directly as the network's scaled f32 input. Sizes below are
//! given at 32 px; geometric sizes scale with the side ([`pad`], [`cutout`], translations).
//!
//! # How it runs
//! The host keeps images as u8 NHWC and uploads a batch once per step, packed 4 bytes per u32
//! ([`image_words`]: 768 at 32, little-endian; [`write_images`] or [`pack_u8`]). For every image it draws
//! the random parameters of its view from the seeded RNG ([`draw_weak`], [`draw_strong`]) into one
//! [`AugParams`] (128 bytes) and uploads those ([`write_params`]). One [`augment_images`] op (one
//! workgroup per image) then produces the views into a row range of a workspace input, e.g.
//! `Tensor::view(&ws.input.buffer, row0 * image_bytes(s), &[n, s, s, 3])` (an image of a side
//! that is a multiple of 8 is a multiple of 768 bytes, so every row offset is 256-byte aligned).
//! [`scale_images`] is the evaluation path.
//!
//! Each view is three op slots, then a cutout, then the input scaling:
//! slot 0 is the weak view (or identity), slots 1-2 the RandAugment ops (or identity). Between ops
//! the image stays u8 (rounded and clipped like PIL after every op). All arithmetic is integer or
//! fixed point (Q16 matrices and blend factors, integer histograms with u32 atomics in workgroup
//! memory; the pixels themselves in a storage scratch the op owns), so the GPU result equals the CPU reference (tests/reference/augment.rs) bit for bit,
//! is the same on every device, and does not depend on execution order. The output values are
//! exactly [`InputScale::apply`] of each level.
//!
//! # Views
//! | view | ops |
//! |---|---|
//! | weak, paper | reflect-pad 4 px (mirror without edge repeat, as `tf.pad` REFLECT), random 32x32 crop (offsets 0..=8 per axis), random horizontal flip (p = 0.5); integer, no interpolation |
//! | weak, keras-example | random horizontal flip, then random translation by U[-0.1, 0.1] x 32 px per axis, **bilinear** (fractional shift, 1/256 px resolution), constant fill 0, as `RandomFlip("horizontal")` + `RandomTranslation(0.1, 0.1, fill_mode="constant")` |
//! | strong, paper | the paper weak view, then 2 ops drawn uniformly with replacement from the 14 below with uniform magnitudes (FixMatch's RandAugment), then a 16x16 cutout |
//! | strong, keras-example | Keras 3 `RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)` on the raw image: 2 distinct ops of Keras' 11, no weak view, no cutout |
//!
//! With the polarity symmetry on ([`Symmetries::invert`]; `train --invert strong` for the strong
//! views, `--invert all` for every view), a view first inverts the whole image (255 - v per
//! level) with p = 0.5, before slot 0.
//!
//! # Paper RandAugment ops (PIL semantics, FixMatch's ranges; [`RANDAUGMENT_OPS`], id = index)
//! Ranges are the FixMatch paper's (Sohn et al. 2020, Table 12) as in its RandAugment code; a
//! magnitude is drawn uniformly from the range for every image and op.
//!
//! | id | op | magnitude | range | definition |
//! |---|---|---|---|---|
//! | 0 | identity | - | - | |
//! | 1 | autocontrast | - | - | per channel, levels min..max stretched to 0..255: `(x - lo) * 255 / (hi - lo)` truncated (PIL `ImageOps.autocontrast`, cutoff 0) |
//! | 2 | equalize | - | - | per channel, PIL `ImageOps.equalize`: 256-bin histogram, `step = (1024 - last non-empty bin) / 256`, `lut[i] = min(255, (step / 2 + #pixels below i) / step)` |
//! | 3 | rotate | degrees, counter-clockwise | U[-30, 30] | about the image centre, nearest, fill 0 (PIL `Image.rotate`) |
//! | 4 | solarize | threshold T (integer) | U{0..=256} | levels >= T are inverted (PIL `ImageOps.solarize`) |
//! | 5 | color | factor | U[0.05, 0.95] | blend of the luma image and the image (PIL `ImageEnhance.Color`) |
//! | 6 | posterize | bits kept (integer) | U{4..=8} | PIL `ImageOps.posterize` |
//! | 7 | contrast | factor | U[0.05, 0.95] | blend of the mean luma (rounded) and the image (PIL `ImageEnhance.Contrast`) |
//! | 8 | brightness | factor | U[0.05, 0.95] | blend of black and the image (PIL `ImageEnhance.Brightness`) |
//! | 9 | sharpness | factor | U[0.05, 0.95] | blend of `ImageFilter.SMOOTH` and the image, border pixels kept (PIL `ImageEnhance.Sharpness`) |
//! | 10 | shear_x | s | U[-0.3, 0.3] | PIL `transform(AFFINE, (1, s, 0, 0, 1, 0))`: about the top-left corner, nearest, fill 0 |
//! | 11 | shear_y | s | U[-0.3, 0.3] | `(1, 0, 0, s, 1, 0)`, nearest, fill 0 |
//! | 12 | translate_x | fraction of the width | U[-0.3, 0.3] | `(1, 0, f * 32, 0, 1, 0)`: content moves left for f > 0, nearest, fill 0 |
//! | 13 | translate_y | fraction of the height | U[-0.3, 0.3] | `(1, 0, 0, 0, 1, f * 32)`, nearest, fill 0 |
//!
//! Cutout (paper): a 16x16 square centred at (U{0..31}, U{0..31}), clipped at the borders (so
//! 8x8 to 16x16 pixels), filled with mid-gray 127.5: 0.5 on [0, 1] images as in the FixMatch /
//! AdaMatch code, exactly 0 under the paper's (x - 127.5) / 128 and 0.5 under x / 255. It is
//! applied after the ops, to the scaled output.
//!
//! Blend ops compute `degenerate + f * (x - degenerate)` with f in Q16 and truncate like PIL's
//! `Image.blend`; luma is PIL's `convert("L")` (`(19595 R + 38470 G + 7471 B + 32768) >> 16`).
//! Geometric ops sample at output pixel centres mapped through the inverse matrix (pixel i covers
//! [i, i + 1), as PIL): nearest takes the pixel containing the point. Quantising the matrix to
//! Q16 moves a sample point by at most 0.001 px. Differences from Pillow, all at most one level:
//! autocontrast's table is integer (Pillow's float table can give 254 for the top level), the
//! SMOOTH filter rounds to nearest.
//!
//! # Keras-example RandAugment (Keras 3, `factor=0.5` becomes the range (0, 0.5) for every layer)
//! | Keras layer | here (label) | draw |
//! |---|---|---|
//! | random_shear | shear_x (both axes at once) | s_x, s_y ~ U[0, 0.5], one random sign; Keras' matrix `[[1, s_x], [s_y, 1]]` about the top-left pixel |
//! | random_translation | translate_x (both axes) | d_x, d_y ~ U[0, 0.5] x 32 px, right/down |
//! | random_rotation | rotate | U[0, 180] degrees counter-clockwise about the centre |
//! | random_brightness | brightness | + U[0, 0.5] x 255 levels (additive, rounded) |
//! | random_color_degeneration | color | factor 1 - U[0, 0.5] |
//! | random_contrast | contrast | factor U[1, 1.5] (Keras blends with the per-channel mean, here the mean luma as PIL) |
//! | random_sharpness | sharpness | factor 2 x U[0, 0.5] (Keras zero-pads the smoothing at the border, here PIL's kept border) |
//! | random_posterization | posterize | bits U{1, 2, 3} (Keras: `randint(1, 4)`) |
//! | solarization | solarize | add U[0, 127.5] levels (clipped), then invert levels >= U[0, 127.5] (both rounded) |
//! | auto_contrast | autocontrast | |
//! | equalization | equalize | |
//!
//! Keras' geometric layers use bilinear interpolation and their default `fill_mode="reflect"`
//! (symmetric, `d c b a | a b c d`), applied here per bilinear tap. Keras works in float and does
//! not round between ops; here every op rounds to u8 like PIL. Keras picks its two ops once per
//! batch call (the same two for every image); here they are drawn per image, as RandAugment is
//! usually understood.

use bytemuck::{Pod, Zeroable};
use rand::Rng;

use crate::gpu::{grid_1d, GpuContext, Op, Tensor};
use crate::input::InputScale;
use crate::shaders::{shader_file, wgsl_struct, Shader};

/// `shaders/augment.wgsl` with what this file writes for it.
pub static SHADER: Shader = shader_file!("augment.wgsl", WGSL_CONSTANTS, WGSL_STRUCTS);

/// The constants `shaders/augment.wgsl` is compiled with, and the structs it shares with this file:
/// written here once, prepended to the shader by [`Shader::source`].
const WGSL_STRUCTS: &[&str] = &[OpSlot::WGSL, AugParams::WGSL];
const WGSL_CONSTANTS: &[(&str, u32)] = &[
    ("WG", WG),
    ("SLOTS", SLOTS as u32),
    ("OP_IDENTITY", OP_IDENTITY),
    ("OP_AFFINE", OP_AFFINE),
    ("OP_AUTOCONTRAST", OP_AUTOCONTRAST),
    ("OP_EQUALIZE", OP_EQUALIZE),
    ("OP_SOLARIZE", OP_SOLARIZE),
    ("OP_POSTERIZE", OP_POSTERIZE),
    ("OP_COLOR", OP_COLOR),
    ("OP_CONTRAST", OP_CONTRAST),
    ("OP_BRIGHTNESS", OP_BRIGHTNESS),
    ("OP_SHARPNESS", OP_SHARPNESS),
    ("BORDER_CONSTANT", BORDER_CONSTANT),
    ("BORDER_REFLECT", BORDER_REFLECT),
    ("BORDER_REFLECT101", BORDER_REFLECT101),
];

/// Border rules of [`OP_AFFINE`] (bits 2-3 of [`OpSlot::mode`]), one per [`Border`].
const BORDER_CONSTANT: u32 = 0;
const BORDER_REFLECT: u32 = 1;
const BORDER_REFLECT101: u32 = 2;

/// Colour channels and the bytes of one u8 image of side `size` (NHWC; also its f32 values once
/// augmented), as the data layer holds them.
pub use crate::data::{image_bytes, CHANNELS};
/// Op slots per image: the weak view and two RandAugment ops.
pub const SLOTS: usize = 3;

/// Packed u32 words of one image of side `size` (`size` is even, so the bytes fill whole words).
pub const fn image_words(size: usize) -> usize {
    image_bytes(size) / 4
}

/// The paper weak view's reflect padding: 4 px at 32, an eighth of the side.
pub const fn pad(size: usize) -> u32 {
    (size / 8) as u32
}

/// Side of the paper's cutout square: 16 px at 32, half the side.
pub const fn cutout(size: usize) -> u32 {
    (size / 2) as u32
}

/// Kernel op codes ([`OpSlot::kind`]).
pub const OP_IDENTITY: u32 = 0;
pub const OP_AFFINE: u32 = 1;
pub const OP_AUTOCONTRAST: u32 = 2;
pub const OP_EQUALIZE: u32 = 3;
pub const OP_SOLARIZE: u32 = 4;
pub const OP_POSTERIZE: u32 = 5;
pub const OP_COLOR: u32 = 6;
pub const OP_CONTRAST: u32 = 7;
pub const OP_BRIGHTNESS: u32 = 8;
pub const OP_SHARPNESS: u32 = 9;

/// One fixed-point unit (Q16) of matrices and blend factors.
pub const Q16: f64 = 65536.0;

/// The 14 RandAugment ops; index = op id ([`RandOp`]).
pub const RANDAUGMENT_OPS: [&str; 14] = [
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
];

/// The 11 layers of Keras 3's RandAugment, in its `_AUGMENT_LAYERS` order ([`KerasOp`]).
pub const KERAS_RANDAUGMENT_OPS: [&str; 11] = [
    "random_shear",
    "random_translation",
    "random_rotation",
    "random_brightness",
    "random_color_degeneration",
    "random_contrast",
    "random_sharpness",
    "random_posterization",
    "solarization",
    "auto_contrast",
    "equalization",
];

/// A RandAugment op; `op as u32` is its index in [`RANDAUGMENT_OPS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RandOp {
    Identity = 0,
    AutoContrast,
    Equalize,
    Rotate,
    Solarize,
    Color,
    Posterize,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

impl RandOp {
    pub const ALL: [RandOp; 14] = [
        RandOp::Identity,
        RandOp::AutoContrast,
        RandOp::Equalize,
        RandOp::Rotate,
        RandOp::Solarize,
        RandOp::Color,
        RandOp::Posterize,
        RandOp::Contrast,
        RandOp::Brightness,
        RandOp::Sharpness,
        RandOp::ShearX,
        RandOp::ShearY,
        RandOp::TranslateX,
        RandOp::TranslateY,
    ];

    pub fn name(self) -> &'static str {
        RANDAUGMENT_OPS[self as usize]
    }

    pub fn from_id(id: u32) -> Option<RandOp> {
        RandOp::ALL.get(id as usize).copied()
    }

    /// The paper preset's magnitude range (FixMatch), inclusive; (0, 0) for ops without one.
    pub fn paper_range(self) -> (f64, f64) {
        match self {
            RandOp::Identity | RandOp::AutoContrast | RandOp::Equalize => (0.0, 0.0),
            RandOp::Rotate => (-30.0, 30.0),
            RandOp::Solarize => (0.0, 256.0),
            RandOp::Posterize => (4.0, 8.0),
            RandOp::Color | RandOp::Contrast | RandOp::Brightness | RandOp::Sharpness => (0.05, 0.95),
            RandOp::ShearX | RandOp::ShearY | RandOp::TranslateX | RandOp::TranslateY => (-0.3, 0.3),
        }
    }

    /// A magnitude drawn uniformly from [`RandOp::paper_range`] (integers for solarize and posterize).
    pub fn draw_paper_magnitude(self, rng: &mut impl Rng) -> f64 {
        let (lo, hi) = self.paper_range();
        match self {
            RandOp::Identity | RandOp::AutoContrast | RandOp::Equalize => 0.0,
            RandOp::Solarize | RandOp::Posterize => rng.random_range(lo as u32..=hi as u32) as f64,
            _ => rng.random_range(lo..=hi),
        }
    }
}

/// A layer of Keras 3's RandAugment; `op as usize` indexes [`KERAS_RANDAUGMENT_OPS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KerasOp {
    Shear,
    Translation,
    Rotation,
    Brightness,
    ColorDegeneration,
    Contrast,
    Sharpness,
    Posterization,
    Solarization,
    AutoContrast,
    Equalization,
}

impl KerasOp {
    pub const ALL: [KerasOp; 11] = [
        KerasOp::Shear,
        KerasOp::Translation,
        KerasOp::Rotation,
        KerasOp::Brightness,
        KerasOp::ColorDegeneration,
        KerasOp::Contrast,
        KerasOp::Sharpness,
        KerasOp::Posterization,
        KerasOp::Solarization,
        KerasOp::AutoContrast,
        KerasOp::Equalization,
    ];

    pub fn name(self) -> &'static str {
        KERAS_RANDAUGMENT_OPS[self as usize]
    }

    /// The op with its random parameters drawn as Keras does with `factor=0.5` (table in the
    /// module docs).
    pub fn draw(self, size: usize, rng: &mut impl Rng) -> OpSlot {
        let s = size as f64;
        match self {
            KerasOp::Shear => {
                let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
                let sy = sign * rng.random_range(0.0..=0.5);
                let sx = sign * rng.random_range(0.0..=0.5);
                OpSlot::keras_shear(sx, sy)
            }
            KerasOp::Translation => {
                let dy = rng.random_range(0.0..=0.5) * s;
                let dx = rng.random_range(0.0..=0.5) * s;
                OpSlot::keras_translate(dx, dy)
            }
            KerasOp::Rotation => OpSlot::keras_rotate(size, rng.random_range(0.0..=180.0)),
            KerasOp::Brightness => {
                let add = (rng.random_range(0.0..=0.5) * 255.0f64).round() as i32;
                OpSlot::brightness(1.0, add).labelled(RandOp::Brightness)
            }
            KerasOp::ColorDegeneration => OpSlot::color(1.0 - rng.random_range(0.0..=0.5)).labelled(RandOp::Color),
            KerasOp::Contrast => OpSlot::contrast(rng.random_range(1.0..=1.5)).labelled(RandOp::Contrast),
            KerasOp::Sharpness => OpSlot::sharpness(2.0 * rng.random_range(0.0..=0.5)).labelled(RandOp::Sharpness),
            KerasOp::Posterization => OpSlot::posterize(rng.random_range(1..4)).labelled(RandOp::Posterize),
            KerasOp::Solarization => {
                let add = (rng.random_range(0.0..=0.5) * 255.0f64).round() as u32;
                let threshold = (rng.random_range(0.0..=0.5) * 255.0f64).round() as u32;
                OpSlot::solarize(threshold, add).labelled(RandOp::Solarize)
            }
            KerasOp::AutoContrast => OpSlot::autocontrast().labelled(RandOp::AutoContrast),
            KerasOp::Equalization => OpSlot::equalize().labelled(RandOp::Equalize),
        }
    }
}

/// Sampling of geometric ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// The pixel containing the sample point (PIL's NEAREST).
    Nearest,
    /// Bilinear between the four nearest pixel centres, 8-bit weights, rounded.
    Bilinear,
}

/// What geometric ops read outside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// A constant level on all channels (per bilinear tap).
    Constant(u8),
    /// Symmetric mirror, edge repeated: `d c b a | a b c d` (Keras' "reflect").
    Reflect,
    /// Mirror without repeating the edge: `d c b | a b c d` (`tf.pad` REFLECT).
    Reflect101,
}

wgsl_struct! {
    /// One op of a view. `m` is a Q16 inverse affine matrix `(a, b, c, d, e, f)` mapping an output
    /// point (x, y) to the input point (a x + b y + c, d x + e y + f) for [`OP_AFFINE`] (pixel i covers
    /// [i, i + 1)), or the op's integer parameters: solarize (threshold, added levels), posterize
    /// (bits), color/contrast/sharpness (Q16 factor), brightness (Q16 factor, added levels).
    #[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq, Eq)]
    pub struct OpSlot {
        /// Kernel op code (`OP_*`).
        pub kind: u32,
        /// 0, or 1 + the [`RandOp`] id this op stands for (bookkeeping; the kernel ignores it).
        pub label: u32,
        /// [`OP_AFFINE`]: bit 0 bilinear, bits 2-3 border (`BORDER_*`), bits 8-15 the constant
        /// fill level.
        pub mode: u32,
        pub m: [i32; 6],
    }
}

fn q16(v: f64) -> i32 {
    (v * Q16).round() as i32
}

impl OpSlot {
    pub fn identity() -> OpSlot {
        OpSlot::default()
    }

    fn simple(kind: u32, m0: i32, m1: i32) -> OpSlot {
        OpSlot {
            kind,
            label: 0,
            mode: 0,
            m: [m0, m1, 0, 0, 0, 0],
        }
    }

    /// Tags the slot as standing for `op` (for statistics and tests).
    pub fn labelled(mut self, op: RandOp) -> OpSlot {
        self.label = op as u32 + 1;
        self
    }

    /// The RandAugment op this slot stands for, if any.
    pub fn rand_op(&self) -> Option<RandOp> {
        self.label.checked_sub(1).and_then(RandOp::from_id)
    }

    /// A geometric op: `m` maps output points to input points (see [`OpSlot`]), quantised to Q16.
    pub fn affine(m: [f64; 6], interp: Interp, border: Border) -> OpSlot {
        let (b, fill) = match border {
            Border::Constant(f) => (BORDER_CONSTANT, f),
            Border::Reflect => (BORDER_REFLECT, 0),
            Border::Reflect101 => (BORDER_REFLECT101, 0),
        };
        OpSlot {
            kind: OP_AFFINE,
            label: 0,
            mode: (interp == Interp::Bilinear) as u32 | b << 2 | (fill as u32) << 8,
            m: m.map(q16),
        }
    }

    /// The paper's weak view of a `size`-pixel image: crop at (`crop_x`, `crop_y`) (0..=2
    /// [`pad`]; 0..=8 at 32) of the image reflect-padded by [`pad`], then mirror left-right when
    /// `flip`.
    pub fn weak_paper(size: usize, flip: bool, crop_x: u32, crop_y: u32) -> OpSlot {
        let pad = pad(size);
        assert!(
            crop_x <= 2 * pad && crop_y <= 2 * pad,
            "weak_paper: crop offsets are 0..={}",
            2 * pad
        );
        let (ox, oy) = (crop_x as f64 - pad as f64, crop_y as f64 - pad as f64);
        let m = if flip {
            [-1.0, 0.0, size as f64 + ox, 0.0, 1.0, oy]
        } else {
            [1.0, 0.0, ox, 0.0, 1.0, oy]
        };
        OpSlot::affine(m, Interp::Nearest, Border::Reflect101)
    }

    /// The Keras example's weak view: mirror left-right when `flip`, then shift the content by
    /// (`dx`, `dy`) pixels (right/down positive), bilinear, zero fill.
    pub fn weak_keras(size: usize, flip: bool, dx: f64, dy: f64) -> OpSlot {
        let m = if flip {
            [-1.0, 0.0, size as f64 + dx, 0.0, 1.0, -dy]
        } else {
            [1.0, 0.0, -dx, 0.0, 1.0, -dy]
        };
        OpSlot::affine(m, Interp::Bilinear, Border::Constant(0))
    }

    /// PIL's `Image.rotate(degrees)` matrix: counter-clockwise about the centre of a
    /// `size`-pixel image.
    pub fn rotation_matrix(size: usize, degrees: f64) -> [f64; 6] {
        let a = -degrees.to_radians();
        let (sin, cos) = a.sin_cos();
        let c = size as f64 / 2.0;
        [cos, sin, c - cos * c - sin * c, -sin, cos, c + sin * c - cos * c]
    }

    /// PIL rotate, nearest, fill 0.
    pub fn rotate(size: usize, degrees: f64) -> OpSlot {
        OpSlot::affine(
            OpSlot::rotation_matrix(size, degrees),
            Interp::Nearest,
            Border::Constant(0),
        )
        .labelled(RandOp::Rotate)
    }

    /// PIL `transform(AFFINE, (1, s, 0, 0, 1, 0))`, nearest, fill 0.
    pub fn shear_x(s: f64) -> OpSlot {
        OpSlot::affine([1.0, s, 0.0, 0.0, 1.0, 0.0], Interp::Nearest, Border::Constant(0)).labelled(RandOp::ShearX)
    }

    /// PIL `transform(AFFINE, (1, 0, 0, s, 1, 0))`, nearest, fill 0.
    pub fn shear_y(s: f64) -> OpSlot {
        OpSlot::affine([1.0, 0.0, 0.0, s, 1.0, 0.0], Interp::Nearest, Border::Constant(0)).labelled(RandOp::ShearY)
    }

    /// PIL `transform(AFFINE, (1, 0, f * size, 0, 1, 0))` (content moves left for f > 0), nearest, fill 0.
    pub fn translate_x(size: usize, fraction: f64) -> OpSlot {
        let m = [1.0, 0.0, fraction * size as f64, 0.0, 1.0, 0.0];
        OpSlot::affine(m, Interp::Nearest, Border::Constant(0)).labelled(RandOp::TranslateX)
    }

    /// PIL `transform(AFFINE, (1, 0, 0, 0, 1, f * size))`, nearest, fill 0.
    pub fn translate_y(size: usize, fraction: f64) -> OpSlot {
        let m = [1.0, 0.0, 0.0, 0.0, 1.0, fraction * size as f64];
        OpSlot::affine(m, Interp::Nearest, Border::Constant(0)).labelled(RandOp::TranslateY)
    }

    /// Keras `RandomShear`: input = (x + s_x y, s_y x + y) on the pixel grid (origin at the
    /// top-left pixel's centre), bilinear, reflect.
    pub fn keras_shear(sx: f64, sy: f64) -> OpSlot {
        // Pixel-grid coordinates are ours minus 0.5: m' = A (p - 0.5) + 0.5.
        let m = [1.0, sx, -0.5 * sx, sy, 1.0, -0.5 * sy];
        OpSlot::affine(m, Interp::Bilinear, Border::Reflect).labelled(RandOp::ShearX)
    }

    /// Keras `RandomTranslation`: content moves by (dx, dy) px, bilinear, reflect.
    pub fn keras_translate(dx: f64, dy: f64) -> OpSlot {
        OpSlot::affine([1.0, 0.0, -dx, 0.0, 1.0, -dy], Interp::Bilinear, Border::Reflect).labelled(RandOp::TranslateX)
    }

    /// Keras `RandomRotation`: counter-clockwise about the centre, bilinear, reflect.
    pub fn keras_rotate(size: usize, degrees: f64) -> OpSlot {
        OpSlot::affine(
            OpSlot::rotation_matrix(size, degrees),
            Interp::Bilinear,
            Border::Reflect,
        )
        .labelled(RandOp::Rotate)
    }

    pub fn autocontrast() -> OpSlot {
        OpSlot::simple(OP_AUTOCONTRAST, 0, 0).labelled(RandOp::AutoContrast)
    }

    pub fn equalize() -> OpSlot {
        OpSlot::simple(OP_EQUALIZE, 0, 0).labelled(RandOp::Equalize)
    }

    /// Adds `add` levels (clipped at 255), then inverts levels >= `threshold` (0..=256).
    pub fn solarize(threshold: u32, add: u32) -> OpSlot {
        assert!(
            threshold <= 256 && add <= 255,
            "solarize: threshold 0..=256, add 0..=255"
        );
        OpSlot::simple(OP_SOLARIZE, threshold as i32, add as i32).labelled(RandOp::Solarize)
    }

    /// Keeps the top `bits` (1..=8) bits of every level.
    pub fn posterize(bits: u32) -> OpSlot {
        assert!((1..=8).contains(&bits), "posterize: bits 1..=8");
        OpSlot::simple(OP_POSTERIZE, bits as i32, 0).labelled(RandOp::Posterize)
    }

    /// PIL `ImageEnhance.Color(factor)` (factor 0..=4).
    pub fn color(factor: f64) -> OpSlot {
        assert!((0.0..=4.0).contains(&factor), "color: factor 0..=4");
        OpSlot::simple(OP_COLOR, q16(factor), 0).labelled(RandOp::Color)
    }

    /// PIL `ImageEnhance.Contrast(factor)` (factor 0..=4).
    pub fn contrast(factor: f64) -> OpSlot {
        assert!((0.0..=4.0).contains(&factor), "contrast: factor 0..=4");
        OpSlot::simple(OP_CONTRAST, q16(factor), 0).labelled(RandOp::Contrast)
    }

    /// PIL `ImageEnhance.Brightness(factor)` (0..=4), then `add` levels (-255..=255), clipped.
    pub fn brightness(factor: f64, add: i32) -> OpSlot {
        assert!((0.0..=4.0).contains(&factor), "brightness: factor 0..=4");
        assert!((-255..=255).contains(&add), "brightness: add -255..=255");
        OpSlot::simple(OP_BRIGHTNESS, q16(factor), add).labelled(RandOp::Brightness)
    }

    /// PIL `ImageEnhance.Sharpness(factor)` (factor 0..=4).
    pub fn sharpness(factor: f64) -> OpSlot {
        assert!((0.0..=4.0).contains(&factor), "sharpness: factor 0..=4");
        OpSlot::simple(OP_SHARPNESS, q16(factor), 0).labelled(RandOp::Sharpness)
    }

    /// The paper preset's op `op` with `magnitude` in the units of the module docs' table, for a
    /// `size`-pixel image.
    pub fn paper(size: usize, op: RandOp, magnitude: f64) -> OpSlot {
        match op {
            RandOp::Identity => OpSlot::identity().labelled(RandOp::Identity),
            RandOp::AutoContrast => OpSlot::autocontrast(),
            RandOp::Equalize => OpSlot::equalize(),
            RandOp::Rotate => OpSlot::rotate(size, magnitude),
            RandOp::Solarize => OpSlot::solarize(magnitude as u32, 0),
            RandOp::Color => OpSlot::color(magnitude),
            RandOp::Posterize => OpSlot::posterize(magnitude as u32),
            RandOp::Contrast => OpSlot::contrast(magnitude),
            RandOp::Brightness => OpSlot::brightness(magnitude, 0),
            RandOp::Sharpness => OpSlot::sharpness(magnitude),
            RandOp::ShearX => OpSlot::shear_x(magnitude),
            RandOp::ShearY => OpSlot::shear_y(magnitude),
            RandOp::TranslateX => OpSlot::translate_x(size, magnitude),
            RandOp::TranslateY => OpSlot::translate_y(size, magnitude),
        }
    }
}

wgsl_struct! {
    /// The random parameters of one image's view (136 bytes, the shader's `AugParams`).
    #[derive(Clone, Copy, Pod, Zeroable, Debug, Default, PartialEq, Eq)]
    pub struct AugParams {
        /// Side of the cutout square (0 = none).
        pub cutout_size: u32,
        /// Centre of the cutout square: it covers [x - size/2, x + size/2) x [y - size/2, y + size/2).
        pub cutout_x: i32,
        pub cutout_y: i32,
        /// 1: invert every level (255 - v) of the input image before the slots (the polarity
        /// symmetry, [`Symmetries::invert`]); 0: keep it.
        pub invert: u32,
        /// 1: map each channel's levels linearly from [0, 255] onto [dark, light] of that
        /// channel, after the inversion (the colour symmetry, [`Symmetries::recolor`]); 0: keep.
        pub recolor: u32,
        /// The colours level 0 and level 255 become under `recolor`: RGB, one byte each (R low).
        pub dark: u32,
        pub light: u32,
        /// Slot 0: the weak view (or identity); slots 1-2: RandAugment ops (or identity).
        pub slots: [OpSlot; SLOTS],
    }
}

const _: () = assert!(std::mem::size_of::<AugParams>() == 136);

impl AugParams {
    /// No augmentation at all (the output is the scaled image).
    pub fn identity() -> AugParams {
        AugParams::default()
    }

    pub fn with_slot(mut self, i: usize, slot: OpSlot) -> AugParams {
        self.slots[i] = slot;
        self
    }

    pub fn with_invert(mut self, invert: bool) -> AugParams {
        self.invert = invert as u32;
        self
    }

    /// Recolours the view (see [`AugParams::recolor`]); `None` keeps its colours.
    pub fn with_recolor(mut self, colours: Option<([u8; 3], [u8; 3])>) -> AugParams {
        let pack = |c: [u8; 3]| u32::from_le_bytes([c[0], c[1], c[2], 0]);
        (self.recolor, self.dark, self.light) = match colours {
            Some((dark, light)) => (1, pack(dark), pack(light)),
            None => (0, 0, 0),
        };
        self
    }

    pub fn with_cutout(mut self, x: i32, y: i32, size: u32) -> AugParams {
        self.cutout_x = x;
        self.cutout_y = y;
        self.cutout_size = size;
        self
    }

    /// The RandAugment ops of this view, in order.
    pub fn rand_ops(&self) -> Vec<RandOp> {
        self.slots.iter().filter_map(|s| s.rand_op()).collect()
    }
}

/// Which weak view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeakKind {
    /// Reflect-pad 4, random crop, random horizontal flip.
    Paper,
    /// Random horizontal flip, random bilinear translation up to 10%, zero fill.
    Keras,
}

/// Which strong view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrongKind {
    /// The paper weak view, 2 RandAugment ops (FixMatch ranges), 16x16 cutout.
    Paper,
    /// Keras 3 RandAugment(num_ops=2, factor=0.5) on the raw image, no cutout.
    Keras,
}

/// The label-preserving symmetries a view may apply: which transformations leave an image's
/// class unchanged in the user's domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symmetries {
    /// Mirror left-right (p = 0.5). True of natural photos; digits are not mirror images of
    /// themselves. The flip is drawn even when off, so the rest of the stream is the same.
    pub hflip: bool,
    /// Invert the levels of the whole image (p = 0.5) before the other ops: light on dark reads
    /// as dark on light, true of digits and text (house numbers come in both polarities, MNIST
    /// in one). CTAugment, the paper's strong augmentation, has a (blended) invert op; this is
    /// the full inversion in every view. Drawn only when on, so streams without it are unchanged.
    pub invert: bool,
    /// Recolour the image (p = 0.5) after the inversion: each channel's levels mapped linearly
    /// onto a random range, so a gray image becomes one colour on another (either polarity, the
    /// two at least [`RECOLOR_MIN_CONTRAST`] luma levels apart). The colour jitter a grayscale
    /// source (MNIST) needs before a model trained on it can read coloured targets (house
    /// numbers, printed plates). Drawn only when on, so streams without it are unchanged.
    pub recolor: bool,
}

/// The least luma difference between a recoloured view's two colours: the ink stays readable.
pub const RECOLOR_MIN_CONTRAST: u32 = 64;

impl Symmetries {
    /// The paper's views: flips, no inversion, no recolouring.
    pub const PAPER: Symmetries = Symmetries {
        hflip: true,
        invert: false,
        recolor: false,
    };
}

/// `hflip` false never mirrors; the flip is still drawn (see [`Symmetries::hflip`]).
fn draw_weak_slot(rng: &mut impl Rng, size: usize, kind: WeakKind, hflip: bool) -> OpSlot {
    let flip = rng.random_bool(0.5) && hflip;
    match kind {
        WeakKind::Paper => {
            let x = rng.random_range(0..=2 * pad(size));
            let y = rng.random_range(0..=2 * pad(size));
            OpSlot::weak_paper(size, flip, x, y)
        }
        WeakKind::Keras => {
            let dy = rng.random_range(-0.1..=0.1) * size as f64;
            let dx = rng.random_range(-0.1..=0.1) * size as f64;
            OpSlot::weak_keras(size, flip, dx, dy)
        }
    }
}

/// The inversion bit of one view: drawn (p = 0.5) only when the symmetry is on.
fn draw_invert(rng: &mut impl Rng, sym: Symmetries) -> bool {
    sym.invert && rng.random_bool(0.5)
}

/// PIL's luma (see the shader's `luma`) of an RGB colour.
fn luma(c: [u8; 3]) -> u32 {
    (c[0] as u32 * 19595 + c[1] as u32 * 38470 + c[2] as u32 * 7471 + 32768) >> 16
}

/// Two random colours at least [`RECOLOR_MIN_CONTRAST`] luma levels apart, with p = 0.5 when
/// the symmetry is on (nothing is drawn when off).
fn draw_recolor(rng: &mut impl Rng, sym: Symmetries) -> Option<([u8; 3], [u8; 3])> {
    if !sym.recolor || !rng.random_bool(0.5) {
        return None;
    }
    loop {
        let dark: [u8; 3] = rng.random();
        let light: [u8; 3] = rng.random();
        if luma(dark).abs_diff(luma(light)) >= RECOLOR_MIN_CONTRAST {
            return Some((dark, light));
        }
    }
}

/// Draws the weak view of one `size`-pixel image.
pub fn draw_weak(rng: &mut impl Rng, size: usize, kind: WeakKind, sym: Symmetries) -> AugParams {
    let slot = draw_weak_slot(rng, size, kind, sym.hflip);
    AugParams::identity()
        .with_slot(0, slot)
        .with_invert(draw_invert(rng, sym))
        .with_recolor(draw_recolor(rng, sym))
}

/// Draws the strong view of one `size`-pixel image.
pub fn draw_strong(rng: &mut impl Rng, size: usize, kind: StrongKind, sym: Symmetries) -> AugParams {
    match kind {
        StrongKind::Paper => {
            let weak = draw_weak_slot(rng, size, WeakKind::Paper, sym.hflip);
            let mut p = AugParams::identity()
                .with_slot(0, weak)
                .with_invert(draw_invert(rng, sym))
                .with_recolor(draw_recolor(rng, sym));
            for i in 1..SLOTS {
                let op = RandOp::ALL[rng.random_range(0..RandOp::ALL.len())];
                let magnitude = op.draw_paper_magnitude(rng);
                p.slots[i] = OpSlot::paper(size, op, magnitude);
            }
            let x = rng.random_range(0..size as i32);
            let y = rng.random_range(0..size as i32);
            p.with_cutout(x, y, cutout(size))
        }
        StrongKind::Keras => {
            // The Keras example draws flips in its weak pipeline only; its strong view mirrors
            // nothing, so `hflip` does not apply here.
            let invert = draw_invert(rng, sym);
            let recolor = draw_recolor(rng, sym);
            // Two distinct layers, as Keras' shuffle-and-take-two.
            let n = KerasOp::ALL.len();
            let first = rng.random_range(0..n);
            let mut second = rng.random_range(0..n - 1);
            if second >= first {
                second += 1;
            }
            let a = KerasOp::ALL[first].draw(size, rng);
            let b = KerasOp::ALL[second].draw(size, rng);
            AugParams::identity()
                .with_slot(1, a)
                .with_slot(2, b)
                .with_invert(invert)
                .with_recolor(recolor)
        }
    }
}

/// Packs u8 images 4 bytes per u32, little-endian (byte 4k + j in bits 8j..8j+8 of word k), the
/// layout [`augment_images`] reads. `images.len()` must be a multiple of 4.
pub fn pack_u8(images: &[u8]) -> Vec<u32> {
    assert!(
        images.len().is_multiple_of(4),
        "pack_u8: {} bytes is not a multiple of 4",
        images.len()
    );
    images
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A buffer for `n` packed u8 images of side `size` (`n * image_words(size)` words).
pub fn image_tensor(ctx: &GpuContext, label: &str, n: usize, size: usize) -> Tensor {
    Tensor::zeros(ctx, label, &[n * image_words(size)])
}

/// Uploads u8 NHWC images (`n * image_bytes(size)` bytes) into an [`image_tensor`] (same bytes as [`pack_u8`]).
pub fn write_images(ctx: &GpuContext, t: &Tensor, images: &[u8]) {
    assert_eq!(
        t.bytes() as usize,
        images.len(),
        "write_images: buffer holds {} bytes",
        t.bytes()
    );
    if !images.is_empty() {
        ctx.queue.write_buffer(&t.buffer, t.offset, images);
    }
}

/// A buffer for `n` [`AugParams`].
pub fn params_tensor(ctx: &GpuContext, label: &str, n: usize) -> Tensor {
    Tensor::zeros(ctx, label, &[n * std::mem::size_of::<AugParams>() / 4])
}

/// Uploads per-image parameters into a [`params_tensor`].
pub fn write_params(ctx: &GpuContext, t: &Tensor, params: &[AugParams]) {
    let bytes: &[u8] = bytemuck::cast_slice(params);
    assert_eq!(
        t.bytes() as usize,
        bytes.len(),
        "write_params: buffer holds {} bytes",
        t.bytes()
    );
    if !bytes.is_empty() {
        ctx.queue.write_buffer(&t.buffer, t.offset, bytes);
    }
}

/// The scaled value of the cutout fill, mid-gray 127.5: (127.5 - 127.5) / 128 and 127.5 / 255.
pub fn cutout_value(scale: InputScale) -> f32 {
    match scale {
        InputScale::Paper => 0.0,
        InputScale::Keras => 0.5,
    }
}

const WG: u32 = 256;

/// The shader's uniform block: count, image side, cutout value, and the 256 scaled levels.
fn uniforms(count: usize, size: usize, scale: InputScale) -> Vec<u8> {
    let mut words: Vec<u32> = vec![count as u32, size as u32, cutout_value(scale).to_bits(), 0];
    words.extend((0..=255u8).map(|v| scale.apply(v).to_bits()));
    bytemuck::cast_slice(&words).to_vec()
}

/// One op covering `n` images of side `size`: `src` (packed u8, `n * image_words(size)` words)
/// and `params` (`n` [`AugParams`]) -> `dst` (`n * image_bytes(size)` f32, NHWC, scaled by
/// `scale`). One workgroup per image; the parameters decide the view (weak, strong, identity).
/// The op owns its scratch: two u32 pixel planes per image.
pub fn augment_images(
    ctx: &GpuContext,
    n: usize,
    size: usize,
    src: &Tensor,
    params: &Tensor,
    dst: &Tensor,
    scale: InputScale,
) -> Op {
    assert!(
        size >= 2 && size.is_multiple_of(2),
        "augment_images: the side must be even (got {size})"
    );
    assert_eq!(
        src.len(),
        n * image_words(size),
        "augment_images: src must hold {n} packed images"
    );
    assert_eq!(
        params.bytes() as usize,
        n * std::mem::size_of::<AugParams>(),
        "augment_images: params must hold {n} AugParams"
    );
    assert_eq!(
        dst.len(),
        n * image_bytes(size),
        "augment_images: dst must hold {n} images"
    );
    let scratch = Tensor::zeros(ctx, "augment scratch", &[(2 * n * size * size).max(1)]);
    Op::new(
        ctx,
        &SHADER,
        "augment_images",
        Some(&uniforms(n, size, scale)),
        &[("src", src), ("params", params), ("dst", dst), ("img", &scratch)],
        grid_1d(n, 1),
    )
    .with_detail(format!("augment {n}x{size}x{size}x3 ({})", scale.name()))
}

/// Plain scaling (evaluation): `dst = scale(src)` for `n` packed u8 images of side `size`.
pub fn scale_images(ctx: &GpuContext, n: usize, size: usize, src: &Tensor, dst: &Tensor, scale: InputScale) -> Op {
    assert_eq!(
        src.len(),
        n * image_words(size),
        "scale_images: src must hold {n} packed images"
    );
    assert_eq!(
        dst.len(),
        n * image_bytes(size),
        "scale_images: dst must hold {n} images"
    );
    let words = n * image_words(size);
    Op::new(
        ctx,
        &SHADER,
        "scale_images",
        Some(&uniforms(words, size, scale)),
        &[("src", src), ("dst", dst)],
        grid_1d(words, WG),
    )
    .with_detail(format!("scale {n}x{size}x{size}x3 ({})", scale.name()))
}
