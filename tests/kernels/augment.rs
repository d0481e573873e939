//! Augmentation kernels against the CPU reference. The kernels are integer / fixed point, so every
//! GPU result must equal the reference bit for bit (tolerance 0, also for the bilinear ops); the
//! integer forms are checked against PIL's float definitions separately (within 1 level).

use std::collections::HashSet;

use adamatch_wgpu::gpu::{GpuContext, Tensor};
use adamatch_wgpu::input::InputScale;
use adamatch_wgpu::kernels::augment::{
    augment_images, cutout_value, draw_strong, draw_weak, image_tensor, pack_u8, params_tensor, scale_images,
    write_images, write_params, AugParams, Border, Interp, KerasOp, OpSlot, RandOp, StrongKind, Symmetries, WeakKind,
    KERAS_RANDAUGMENT_OPS, RANDAUGMENT_OPS, RECOLOR_MIN_CONTRAST,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ctx;
use crate::reference::augment as cpu;

/// The default side; `*_at_48` tests repeat the checks at another side.
const N: usize = 32;
const IMAGE_BYTES: usize = N * N * 3;
const IMAGE_FLOATS: usize = IMAGE_BYTES;

// ---------------------------------------------------------------------------------------------
// Test images (u8, 32x32x3 HWC)

fn image_from(f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    (0..N * N * 3).map(|i| f((i / 3) % N, (i / 3) / N, i % 3)).collect()
}

fn noise_image(seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..IMAGE_BYTES).map(|_| rng.random()).collect()
}

fn gradient_image() -> Vec<u8> {
    image_from(|x, y, c| [x * 8, y * 8, 255 - (x + y) * 4][c] as u8)
}

fn checker_image() -> Vec<u8> {
    image_from(|x, y, c| {
        if (x / 4 + y / 4) % 2 == 0 {
            [230, 40, 40][c]
        } else {
            [20, 60, 200][c]
        }
    })
}

/// Levels 100..=140 only: autocontrast and equalize have work to do.
fn low_contrast_image(seed: u64) -> Vec<u8> {
    noise_image(seed).iter().map(|&v| 100 + v % 41).collect()
}

fn constant_image() -> Vec<u8> {
    image_from(|_, _, c| [90, 120, 150][c])
}

/// A 5x7 bitmap digit drawn 4x on a coloured gradient: house-number-like, for the preview.
fn digit_image(digit: usize, seed: u64) -> Vec<u8> {
    const FONT: [[u8; 7]; 10] = [
        [14, 17, 19, 21, 25, 17, 14],
        [4, 12, 4, 4, 4, 4, 14],
        [14, 17, 1, 2, 4, 8, 31],
        [31, 2, 4, 2, 1, 17, 14],
        [2, 6, 10, 18, 31, 2, 2],
        [31, 16, 30, 1, 1, 17, 14],
        [6, 8, 16, 30, 17, 17, 14],
        [31, 1, 2, 4, 8, 8, 8],
        [14, 17, 17, 14, 17, 17, 14],
        [14, 17, 17, 15, 1, 2, 12],
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bg: [f64; 3] = [
        rng.random_range(20.0..120.0),
        rng.random_range(40.0..160.0),
        rng.random_range(60.0..200.0),
    ];
    let fg: [f64; 3] = [
        rng.random_range(180.0..255.0),
        rng.random_range(150.0..255.0),
        rng.random_range(0.0..120.0),
    ];
    image_from(|x, y, c| {
        let (gx, gy) = (x as i64 - 6, y as i64 - 2);
        let on =
            (0..20).contains(&gx) && (0..28).contains(&gy) && (FONT[digit][(gy / 4) as usize] >> (4 - gx / 4)) & 1 == 1;
        let shade = 0.7 + 0.3 * (x + y) as f64 / 62.0;
        (if on { fg[c] } else { bg[c] * shade }) as u8
    })
}

fn test_images() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("noise", noise_image(7)),
        ("gradient", gradient_image()),
        ("checkerboard", checker_image()),
        ("low-contrast", low_contrast_image(8)),
        ("constant", constant_image()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running the kernel

fn run_augment(ctx: &GpuContext, images: &[Vec<u8>], params: &[AugParams], scale: InputScale) -> Vec<f32> {
    run_augment_sized(ctx, N, images, params, scale)
}

fn run_augment_sized(
    ctx: &GpuContext,
    size: usize,
    images: &[Vec<u8>],
    params: &[AugParams],
    scale: InputScale,
) -> Vec<f32> {
    let n = images.len();
    assert_eq!(params.len(), n);
    let src = image_tensor(ctx, "src", n, size);
    write_images(ctx, &src, &images.concat());
    let p = params_tensor(ctx, "params", n);
    write_params(ctx, &p, params);
    let dst = Tensor::zeros(ctx, "dst", &[n, size, size, 3]);
    let op = augment_images(ctx, n, size, &src, &p, &dst, scale);
    ctx.run(&[&op]).unwrap();
    dst.read_f32(ctx).unwrap()
}

/// Asserts GPU image `i` equals the reference bit for bit, naming the case and first bad pixel.
fn assert_same(what: &str, gpu: &[f32], want: &[f32]) {
    let n = ((gpu.len() / 3) as f64).sqrt() as usize;
    assert_eq!(gpu.len(), want.len(), "{what}: length");
    if let Some(i) = (0..gpu.len()).find(|&i| gpu[i].to_bits() != want[i].to_bits()) {
        let bad = (0..gpu.len())
            .filter(|&i| gpu[i].to_bits() != want[i].to_bits())
            .count();
        panic!(
            "{what}: {bad} values differ; first at pixel ({}, {}) channel {}: gpu {} vs reference {}",
            (i / 3) % n,
            (i / 3) / n,
            i % 3,
            gpu[i],
            want[i]
        );
    }
}

/// Runs every (image, params) case in one dispatch and compares each with the reference.
fn check_cases(ctx: &GpuContext, cases: &[(String, Vec<u8>, AugParams)], scale: InputScale) {
    let images: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let params: Vec<AugParams> = cases.iter().map(|c| c.2).collect();
    let out = run_augment(ctx, &images, &params, scale);
    for (i, (what, img, p)) in cases.iter().enumerate() {
        let want = cpu::augment(img, p, scale);
        assert_same(what, &out[i * IMAGE_FLOATS..(i + 1) * IMAGE_FLOATS], &want);
    }
}

fn one_op(slot: OpSlot) -> AugParams {
    AugParams::identity().with_slot(1, slot)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn scale_images_matches_input_scale_bitwise() {
    let ctx = ctx();
    for (n, scale) in [
        (1usize, InputScale::Paper),
        (3, InputScale::Keras),
        (5, InputScale::Paper),
    ] {
        let bytes: Vec<u8> = (0..n).flat_map(|i| noise_image(100 + i as u64)).collect();
        let src = Tensor::from_u32(ctx, "src", &[n * IMAGE_BYTES / 4], &pack_u8(&bytes));
        let dst = Tensor::zeros(ctx, "dst", &[n, N, N, 3]);
        ctx.run(&[&scale_images(ctx, n, N, &src, &dst, scale)]).unwrap();
        assert_same(
            &format!("scale_images n={n}"),
            &dst.read_f32(ctx).unwrap(),
            &scale.scale(&bytes),
        );
    }
}

#[test]
fn pack_u8_is_little_endian_and_equals_raw_upload() {
    assert_eq!(pack_u8(&[1, 2, 3, 4, 255, 0, 0, 128]), vec![0x0403_0201, 0x8000_00ff]);
    // write_images (raw bytes) and from_u32(pack_u8) must give the same kernel input.
    let ctx = ctx();
    let img = noise_image(3);
    let a = image_tensor(ctx, "a", 1, N);
    write_images(ctx, &a, &img);
    let b = Tensor::from_u32(ctx, "b", &[IMAGE_BYTES / 4], &pack_u8(&img));
    let p = params_tensor(ctx, "p", 1);
    write_params(ctx, &p, &[AugParams::identity()]);
    let (da, db) = (
        Tensor::zeros(ctx, "da", &[IMAGE_FLOATS]),
        Tensor::zeros(ctx, "db", &[IMAGE_FLOATS]),
    );
    let ops = [
        augment_images(ctx, 1, N, &a, &p, &da, InputScale::Paper),
        augment_images(ctx, 1, N, &b, &p, &db, InputScale::Paper),
    ];
    ctx.run(&[&ops[0], &ops[1]]).unwrap();
    let want = InputScale::Paper.scale(&img);
    assert_same("identity via write_images", &da.read_f32(ctx).unwrap(), &want);
    assert_same("identity via pack_u8", &db.read_f32(ctx).unwrap(), &want);
}

#[test]
fn weak_paper_crop_and_flip_match_reference() {
    let ctx = ctx();
    let img = noise_image(11);
    let mut cases = Vec::new();
    for flip in [false, true] {
        for (cx, cy) in [(0, 0), (8, 8), (4, 4), (0, 8), (3, 6), (8, 1)] {
            let p = AugParams::identity().with_slot(0, OpSlot::weak_paper(N, flip, cx, cy));
            cases.push((format!("weak paper flip={flip} crop=({cx},{cy})"), img.clone(), p));
        }
    }
    check_cases(ctx, &cases, InputScale::Paper);

    // The reference against the definition: pad 4 with tf.pad REFLECT, crop, flip.
    let reflect = |i: i64| -> usize {
        if i < 0 {
            (-i) as usize
        } else if i >= N as i64 {
            (2 * N as i64 - 2 - i) as usize
        } else {
            i as usize
        }
    };
    for (_, _, p) in &cases {
        let s = p.slots[0];
        let flip = s.m[0] < 0;
        let cx = if flip { s.m[2] / 65536 - 28 } else { s.m[2] / 65536 + 4 } as i64;
        let cy = (s.m[5] / 65536 + 4) as i64;
        let got = cpu::augment_levels(&img, p);
        for y in 0..N {
            for x in 0..N {
                let xc = if flip { N - 1 - x } else { x } as i64;
                let (sx, sy) = (reflect(xc + cx - 4), reflect(y as i64 + cy - 4));
                for c in 0..3 {
                    assert_eq!(
                        got[(y * N + x) * 3 + c],
                        img[(sy * N + sx) * 3 + c],
                        "crop ({cx},{cy}) flip {flip}"
                    );
                }
            }
        }
    }
    // Crop (4, 4) without flip is the image itself.
    assert_eq!(cpu::augment_levels(&img, &cases[2].2), img);
}

#[test]
fn weak_keras_flip_and_translation_match_reference() {
    let ctx = ctx();
    let img = gradient_image();
    let mut cases = Vec::new();
    for flip in [false, true] {
        for (dx, dy) in [(0.0, 0.0), (3.2, -3.2), (-1.37, 2.71), (0.5, 0.25), (-3.0, 0.0)] {
            let p = AugParams::identity().with_slot(0, OpSlot::weak_keras(N, flip, dx, dy));
            cases.push((format!("weak keras flip={flip} shift=({dx},{dy})"), img.clone(), p));
        }
    }
    check_cases(ctx, &cases, InputScale::Keras);

    // Integer shifts are exact moves with zero fill; no shift + flip is a mirror.
    let moved = cpu::augment_levels(&img, &cases[4].2); // (-3, 0), no flip
    for y in 0..N {
        for x in 0..N {
            for c in 0..3 {
                let want = if x + 3 < N { img[(y * N + x + 3) * 3 + c] } else { 0 };
                assert_eq!(moved[(y * N + x) * 3 + c], want);
            }
        }
    }
    let mirrored = cpu::augment_levels(&img, &cases[5].2);
    for y in 0..N {
        for x in 0..N {
            assert_eq!(mirrored[(y * N + x) * 3], img[(y * N + N - 1 - x) * 3]);
        }
    }
    // Fractional shifts against float bilinear: within 1 level.
    for (what, _, p) in &cases[..5] {
        let s = p.slots[0];
        let m = [1.0, 0.0, s.m[2] as f64 / 65536.0, 0.0, 1.0, s.m[5] as f64 / 65536.0];
        let float = cpu::affine_f64(&img, m, true, 0);
        let int = cpu::augment_levels(&img, p);
        let worst = float
            .iter()
            .zip(&int)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "{what}: integer bilinear is {worst} levels from float bilinear"
        );
    }
}

/// Every RandAugment op at the ends of its paper range and a random magnitude, on five images
/// (random, gradient, checkerboard, low contrast, constant), plus the Keras variants.
#[test]
fn each_randaugment_op_matches_reference() {
    let ctx = ctx();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut slots: Vec<(String, OpSlot)> = Vec::new();
    for op in RandOp::ALL {
        let (lo, hi) = op.paper_range();
        let mid = op.draw_paper_magnitude(&mut rng);
        for m in [lo, hi, mid] {
            slots.push((format!("{} {m:.3}", op.name()), OpSlot::paper(N, op, m)));
        }
    }
    for op in KerasOp::ALL {
        slots.push((format!("keras {}", op.name()), op.draw(N, &mut rng)));
    }
    slots.push(("keras rotate 180".into(), OpSlot::keras_rotate(N, 180.0)));
    slots.push(("keras shear -0.5".into(), OpSlot::keras_shear(-0.5, -0.5)));
    slots.push(("keras translate 16".into(), OpSlot::keras_translate(16.0, 16.0)));
    slots.push(("solarize add 127 th 0".into(), OpSlot::solarize(0, 127)));
    slots.push(("brightness add 127".into(), OpSlot::brightness(1.0, 127)));
    slots.push(("posterize 1".into(), OpSlot::posterize(1)));
    slots.push(("sharpness 1.9".into(), OpSlot::sharpness(1.9)));
    slots.push(("contrast 1.9".into(), OpSlot::contrast(1.9)));
    slots.push((
        "bilinear reflect-101 rotate 17".into(),
        OpSlot::affine(OpSlot::rotation_matrix(N, 17.0), Interp::Bilinear, Border::Reflect101),
    ));
    slots.push((
        "nearest gray-fill rotate -41".into(),
        OpSlot::affine(
            OpSlot::rotation_matrix(N, -41.0),
            Interp::Nearest,
            Border::Constant(128),
        ),
    ));
    let mut cases = Vec::new();
    for (name, slot) in &slots {
        for (img_name, img) in test_images() {
            cases.push((format!("{name} on {img_name}"), img, one_op(*slot)));
        }
    }
    check_cases(ctx, &cases, InputScale::Paper);

    // Each op except identity changes a low-contrast image at the strong end of its range
    // (autocontrast and equalize leave full-range noise alone).
    let noise = low_contrast_image(7);
    for op in RandOp::ALL.into_iter().skip(1) {
        let (lo, hi) = op.paper_range();
        let m = match op {
            RandOp::Solarize | RandOp::Posterize => lo,
            RandOp::Color | RandOp::Contrast | RandOp::Brightness | RandOp::Sharpness => lo,
            _ => hi,
        };
        let out = cpu::augment_levels(&noise, &one_op(OpSlot::paper(N, op, m)));
        assert!(out != noise, "{} at {m} left the image unchanged", op.name());
    }
}

#[test]
fn integer_ops_follow_pil_float_definitions() {
    let images = test_images();
    // Blends: quantised factor and integer arithmetic within one level of PIL's float blend.
    for (name, img) in &images {
        for f in [0.05, 0.37, 0.95, 1.3, 1.9] {
            let color = cpu::augment_levels(img, &one_op(OpSlot::color(f)));
            let bright = cpu::augment_levels(img, &one_op(OpSlot::brightness(f, 0)));
            for (i, px) in img.chunks_exact(3).enumerate() {
                let l = cpu::luma(px[0], px[1], px[2]);
                for (c, &v) in px.iter().enumerate() {
                    let j = i * 3 + c;
                    let dc = (color[j] as i32 - cpu::pil_blend_f64(l, v, f) as i32).abs();
                    let db = (bright[j] as i32 - cpu::pil_blend_f64(0, v, f) as i32).abs();
                    assert!(
                        dc <= 1 && db <= 1,
                        "{name}: color/brightness {f} off by {dc}/{db} levels"
                    );
                }
            }
        }
        let ac = cpu::augment_levels(img, &one_op(OpSlot::autocontrast()));
        let worst = ac
            .iter()
            .zip(cpu::pil_autocontrast_f64(img))
            .map(|(a, b)| (*a as i32 - b as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "{name}: autocontrast {worst} levels from Pillow's float table"
        );
    }
    // Nearest geometric ops: Q16 matrices move sample points by < 0.001 px, so at most a few
    // pixels (points within 0.001 px of a pixel edge) may pick a neighbour.
    let img = noise_image(9);
    for (name, slot, m) in [
        ("rotate 23", OpSlot::rotate(N, 23.0), OpSlot::rotation_matrix(N, 23.0)),
        (
            "rotate -30",
            OpSlot::rotate(N, -30.0),
            OpSlot::rotation_matrix(N, -30.0),
        ),
        ("shear_x 0.3", OpSlot::shear_x(0.3), [1.0, 0.3, 0.0, 0.0, 1.0, 0.0]),
        (
            "shear_y -0.17",
            OpSlot::shear_y(-0.17),
            [1.0, 0.0, 0.0, -0.17, 1.0, 0.0],
        ),
        (
            "translate_x 0.3",
            OpSlot::translate_x(N, 0.3),
            [1.0, 0.0, 9.6, 0.0, 1.0, 0.0],
        ),
    ] {
        let int = cpu::augment_levels(&img, &one_op(slot));
        let float = cpu::affine_f64(&img, m, false, 0);
        let moved = int
            .chunks_exact(3)
            .zip(float.chunks_exact(3))
            .filter(|(a, b)| a != b)
            .count();
        assert!(moved <= 4, "{name}: {moved} pixels differ from the float matrix");
    }
    // Exact cases: rotate 90 is a transpose-and-mirror, translate_y by 0.25 is an 8-row shift.
    let r90 = cpu::augment_levels(&img, &one_op(OpSlot::rotate(N, 90.0)));
    let t = cpu::augment_levels(&img, &one_op(OpSlot::translate_y(N, 0.25)));
    for y in 0..N {
        for x in 0..N {
            // Counter-clockwise: output (x, y) shows input (N - 1 - y, x).
            assert_eq!(
                r90[(y * N + x) * 3],
                img[(x * N + N - 1 - y) * 3],
                "rotate 90 at ({x},{y})"
            );
            let want = if y + 8 < N { img[((y + 8) * N + x) * 3] } else { 0 };
            assert_eq!(t[(y * N + x) * 3], want, "translate_y 0.25 at ({x},{y})");
        }
    }
}

#[test]
fn cutout_matches_reference_and_is_clipped() {
    let ctx = ctx();
    let img = noise_image(21);
    let centres = [(0, 0), (31, 31), (16, 16), (5, 28), (8, 8), (24, 3)];
    for scale in [InputScale::Paper, InputScale::Keras] {
        let cases: Vec<_> = centres
            .iter()
            .map(|&(x, y)| {
                (
                    format!("cutout at ({x},{y})"),
                    img.clone(),
                    AugParams::identity().with_cutout(x, y, 16),
                )
            })
            .collect();
        check_cases(ctx, &cases, scale);
        for (what, _, p) in &cases {
            let out = cpu::augment(&img, p, scale);
            let filled = out
                .chunks_exact(3)
                .filter(|px| px.iter().all(|&v| v == cutout_value(scale)))
                .count();
            let span = |c: i32| (c - 8).max(0)..(c + 8).min(32);
            let area = span(p.cutout_x).len() * span(p.cutout_y).len();
            assert_eq!(filled, area, "{what}: filled pixels");
        }
    }
    assert_eq!(cutout_value(InputScale::Paper), 0.0);
    assert_eq!(cutout_value(InputScale::Keras), 0.5);
}

/// Every view kind, with the polarity symmetry on for every other group of four (so some views
/// of each kind are inverted).
fn preset_params(seed: u64, n: usize) -> Vec<(AugParams, InputScale)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let sym = Symmetries {
                hflip: true,
                invert: i % 8 >= 4,
                recolor: i % 16 >= 8,
            };
            match i % 4 {
                0 => (draw_weak(&mut rng, N, WeakKind::Paper, sym), InputScale::Paper),
                1 => (draw_strong(&mut rng, N, StrongKind::Paper, sym), InputScale::Paper),
                2 => (draw_weak(&mut rng, N, WeakKind::Keras, sym), InputScale::Keras),
                _ => (draw_strong(&mut rng, N, StrongKind::Keras, sym), InputScale::Keras),
            }
        })
        .collect()
}

fn preset_images(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 3 {
            0 => noise_image(200 + i as u64),
            1 => digit_image(i % 10, i as u64),
            _ => gradient_image(),
        })
        .collect()
}

/// Every op, every preset view and the cutout at sides other than 32 (the geometric sizes scale
/// with the side), exact; 16 is the smallest side training takes, 48 and 56 are not powers of two,
/// and 56x56 is 3,136 pixels: not a multiple of the 256 invocations of a workgroup.
#[test]
fn ops_and_views_match_reference_at_other_sides() {
    let ctx = ctx();
    for size in [16usize, 48, 56] {
        let bytes = size * size * 3;
        let mut rng = ChaCha8Rng::seed_from_u64(size as u64);
        let mut images: Vec<(String, Vec<u8>)> = vec![
            ("noise".into(), (0..bytes).map(|_| rng.random()).collect()),
            (
                "low-contrast".into(),
                (0..bytes).map(|_| 100 + rng.random::<u8>() % 41).collect(),
            ),
        ];
        images.push((
            "gradient".into(),
            (0..bytes)
                .map(|i| {
                    let (x, y, c) = ((i / 3) % size, (i / 3) / size, i % 3);
                    [x * 255 / size, y * 255 / size, 255 - (x + y) * 127 / size][c] as u8
                })
                .collect(),
        ));
        let mut params: Vec<(String, AugParams, InputScale)> = Vec::new();
        for op in RandOp::ALL {
            let (lo, hi) = op.paper_range();
            for m in [lo, hi] {
                let slot = OpSlot::paper(size, op, m);
                params.push((format!("{} {m:.2}", op.name()), one_op(slot), InputScale::Paper));
            }
        }
        for op in KerasOp::ALL {
            params.push((
                format!("keras {}", op.name()),
                one_op(op.draw(size, &mut rng)),
                InputScale::Keras,
            ));
        }
        let sym = Symmetries {
            hflip: true,
            invert: true,
            recolor: true,
        };
        for i in 0..24 {
            let (p, scale) = match i % 4 {
                0 => (draw_weak(&mut rng, size, WeakKind::Paper, sym), InputScale::Paper),
                1 => (draw_strong(&mut rng, size, StrongKind::Paper, sym), InputScale::Paper),
                2 => (draw_weak(&mut rng, size, WeakKind::Keras, sym), InputScale::Keras),
                _ => (draw_strong(&mut rng, size, StrongKind::Keras, sym), InputScale::Keras),
            };
            params.push((format!("view {i} ops {:?}", p.rand_ops()), p, scale));
        }
        // The paper strong view's cutout is half the side; its weak view's crop moves by up to an
        // eighth of the side each way.
        let strong = draw_strong(&mut rng, size, StrongKind::Paper, sym);
        assert_eq!(strong.cutout_size as usize, size / 2, "cutout at {size}");
        for scale in [InputScale::Paper, InputScale::Keras] {
            let cases: Vec<(String, Vec<u8>, AugParams)> = params
                .iter()
                .filter(|(_, _, s)| *s == scale)
                .flat_map(|(name, p, _)| {
                    images
                        .iter()
                        .map(move |(img_name, img)| (format!("{size}x{size}: {name} on {img_name}"), img.clone(), *p))
                })
                .collect();
            let imgs: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
            let ps: Vec<AugParams> = cases.iter().map(|c| c.2).collect();
            let out = run_augment_sized(ctx, size, &imgs, &ps, scale);
            for (i, (what, img, p)) in cases.iter().enumerate() {
                assert_same(what, &out[i * bytes..(i + 1) * bytes], &cpu::augment(img, p, scale));
            }
        }
        // A translation by 0.25 of the side moves the content by a quarter of the side.
        let img = &images[2].1;
        let t = cpu::augment_levels(img, &one_op(OpSlot::paper(size, RandOp::TranslateY, 0.25)));
        let q = size / 4;
        assert_eq!(
            &t[..(size - q) * size * 3],
            &img[q * size * 3..],
            "translate_y 0.25 at {size}"
        );
    }
}

/// Both presets' weak and strong views, 83 images (not a multiple of anything), exact.
#[test]
fn preset_views_match_reference() {
    let ctx = ctx();
    let n = 83;
    let draws = preset_params(77, n);
    let images = preset_images(n);
    let inverted = draws.iter().filter(|(p, _)| p.invert == 1).count();
    assert!(
        inverted >= 10,
        "only {inverted} of {n} views inverted: the inversion is barely exercised"
    );
    for scale in [InputScale::Paper, InputScale::Keras] {
        let cases: Vec<_> = draws
            .iter()
            .zip(&images)
            .enumerate()
            .filter(|(_, ((_, s), _))| *s == scale)
            .map(|(i, ((p, _), img))| (format!("image {i} ops {:?}", p.rand_ops()), img.clone(), *p))
            .collect();
        check_cases(ctx, &cases, scale);
    }
}

#[test]
fn fixed_seed_gives_bitwise_same_views_and_another_seed_different_ones() {
    let ctx = ctx();
    let n = 13;
    let images = preset_images(n);
    let run = |seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params: Vec<AugParams> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    draw_strong(&mut rng, N, StrongKind::Paper, Symmetries::PAPER)
                } else {
                    draw_strong(&mut rng, N, StrongKind::Keras, Symmetries::PAPER)
                }
            })
            .collect();
        (params.clone(), run_augment(ctx, &images, &params, InputScale::Paper))
    };
    let (pa, a) = run(1234);
    let (pb, b) = run(1234);
    let (pc, c) = run(1235);
    assert_eq!(pa, pb, "same seed, same draws");
    assert_same("same seed, same views", &a, &b);
    assert_ne!(pa, pc, "another seed, other draws");
    for i in 0..n {
        let (x, y) = (
            &a[i * IMAGE_FLOATS..][..IMAGE_FLOATS],
            &c[i * IMAGE_FLOATS..][..IMAGE_FLOATS],
        );
        assert!(
            x.iter().zip(y).any(|(p, q)| p != q),
            "image {i}: another seed gave the same view"
        );
    }
}

#[test]
fn writes_only_its_rows_of_a_larger_input() {
    let ctx = ctx();
    let (rows, row0, n) = (10usize, 4usize, 3usize);
    let input = Tensor::from_f32(ctx, "input", &[rows, N, N, 3], &vec![-7.0; rows * IMAGE_FLOATS]);
    let view = Tensor::view(&input.buffer, row0 * IMAGE_FLOATS, &[n, N, N, 3]);
    let images = preset_images(n);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params: Vec<AugParams> = (0..n)
        .map(|_| draw_strong(&mut rng, N, StrongKind::Paper, Symmetries::PAPER))
        .collect();
    let src = image_tensor(ctx, "src", n, N);
    write_images(ctx, &src, &images.concat());
    let p = params_tensor(ctx, "p", n);
    write_params(ctx, &p, &params);
    ctx.run(&[&augment_images(ctx, n, N, &src, &p, &view, InputScale::Paper)])
        .unwrap();
    let out = input.read_f32(ctx).unwrap();
    for r in 0..rows {
        let row = &out[r * IMAGE_FLOATS..][..IMAGE_FLOATS];
        if (row0..row0 + n).contains(&r) {
            assert_same(
                &format!("row {r}"),
                row,
                &cpu::augment(&images[r - row0], &params[r - row0], InputScale::Paper),
            );
        } else {
            assert!(row.iter().all(|&v| v == -7.0), "row {r} outside the view was written");
        }
    }
}

#[test]
fn draws_cover_their_documented_ranges() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut ops = HashSet::new();
    let (mut crops, mut flips) = (HashSet::new(), 0);
    let (mut centre_x, mut centre_y) = (HashSet::new(), HashSet::new());
    let draws = 4000;
    for _ in 0..draws {
        let p = draw_strong(&mut rng, N, StrongKind::Paper, Symmetries::PAPER);
        let w = p.slots[0];
        assert_eq!((w.kind, w.mode), (1, 2 << 2), "paper weak: nearest, reflect-101");
        let flip = w.m[0] < 0;
        flips += flip as u32;
        let cx = if flip { w.m[2] / 65536 - 28 } else { w.m[2] / 65536 + 4 };
        crops.insert((cx, w.m[5] / 65536 + 4));
        assert_eq!(p.cutout_size, 16);
        centre_x.insert(p.cutout_x);
        centre_y.insert(p.cutout_y);
        assert_eq!(p.rand_ops().len(), 2);
        ops.extend(p.rand_ops());
        for s in &p.slots[1..] {
            let op = s.rand_op().unwrap();
            let (lo, hi) = op.paper_range();
            let m = match op {
                RandOp::Solarize | RandOp::Posterize => s.m[0] as f64,
                RandOp::Color | RandOp::Contrast | RandOp::Brightness | RandOp::Sharpness => s.m[0] as f64 / 65536.0,
                RandOp::ShearX => s.m[1] as f64 / 65536.0,
                RandOp::ShearY => s.m[3] as f64 / 65536.0,
                RandOp::TranslateX => s.m[2] as f64 / 65536.0 / 32.0,
                RandOp::TranslateY => s.m[5] as f64 / 65536.0 / 32.0,
                RandOp::Rotate => (s.m[1] as f64 / 65536.0).asin().to_degrees(),
                _ => 0.0,
            };
            assert!(
                m >= lo - 1e-4 && m <= hi + 1e-4,
                "{}: magnitude {m} outside [{lo}, {hi}]",
                op.name()
            );
        }
    }
    assert_eq!(ops.len(), RANDAUGMENT_OPS.len(), "every RandAugment op is drawn");
    assert_eq!(crops.len(), 81, "every crop offset 0..=8 x 0..=8 is drawn");
    assert_eq!(centre_x, (0..32).collect(), "cutout centres x cover 0..=31");
    assert_eq!(centre_y, (0..32).collect(), "cutout centres y cover 0..=31");
    assert!(
        (flips as f64 / draws as f64 - 0.5).abs() < 0.05,
        "flip rate {flips}/{draws}"
    );

    let mut keras_ops = HashSet::new();
    for _ in 0..draws {
        let p = draw_strong(&mut rng, N, StrongKind::Keras, Symmetries::PAPER);
        assert_eq!(p.slots[0], OpSlot::identity(), "keras strong has no weak view");
        assert_eq!(p.cutout_size, 0, "keras strong has no cutout");
        let ops = p.rand_ops();
        assert_eq!(ops.len(), 2);
        assert_ne!(p.slots[1], p.slots[2]);
        assert_ne!(ops[0], ops[1], "two distinct Keras layers");
        keras_ops.extend(ops);
        let w = draw_weak(&mut rng, N, WeakKind::Keras, Symmetries::PAPER).slots[0];
        let flip = w.m[0] < 0;
        let dx = if flip {
            w.m[2] as f64 / 65536.0 - 32.0
        } else {
            -w.m[2] as f64 / 65536.0
        };
        let dy = -w.m[5] as f64 / 65536.0;
        assert!(
            dx.abs() <= 3.2 + 1e-4 && dy.abs() <= 3.2 + 1e-4,
            "keras weak shift ({dx}, {dy})"
        );
        assert_eq!(w.mode, 1, "keras weak: bilinear, zero fill");
    }
    assert_eq!(
        keras_ops.len(),
        KERAS_RANDAUGMENT_OPS.len(),
        "every Keras layer is drawn"
    );
}

#[test]
fn preview_png() {
    // Rows: images; columns: original, paper weak, 3 paper strong, keras weak, 3 keras strong.
    let ctx = ctx();
    let rows: Vec<Vec<u8>> = vec![
        digit_image(3, 1),
        digit_image(7, 2),
        digit_image(5, 3),
        checker_image(),
        gradient_image(),
        noise_image(4),
    ];
    let cols = 9;
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut images = Vec::new();
    let mut params = Vec::new();
    let mut scales = Vec::new();
    for img in &rows {
        for col in 0..cols {
            let (p, s) = match col {
                0 => (AugParams::identity(), InputScale::Paper),
                1 => (
                    draw_weak(&mut rng, N, WeakKind::Paper, Symmetries::PAPER),
                    InputScale::Paper,
                ),
                2..=4 => (
                    draw_strong(&mut rng, N, StrongKind::Paper, Symmetries::PAPER),
                    InputScale::Paper,
                ),
                5 => (
                    draw_weak(&mut rng, N, WeakKind::Keras, Symmetries::PAPER),
                    InputScale::Keras,
                ),
                _ => (
                    draw_strong(&mut rng, N, StrongKind::Keras, Symmetries::PAPER),
                    InputScale::Keras,
                ),
            };
            images.push(img.clone());
            params.push(p);
            scales.push(s);
        }
    }
    // One run per scaling; decode floats back to levels for the picture.
    let paper = run_augment(ctx, &images, &params, InputScale::Paper);
    let keras = run_augment(ctx, &images, &params, InputScale::Keras);
    let (zoom, gap) = (4u32, 4u32);
    let cell = N as u32 * zoom + gap;
    let mut png = image::RgbImage::from_pixel(
        cols as u32 * cell + gap,
        rows.len() as u32 * cell + gap,
        image::Rgb([255, 255, 255]),
    );
    for (i, scale) in scales.iter().enumerate() {
        let out = if *scale == InputScale::Paper { &paper } else { &keras };
        let view = &out[i * IMAGE_FLOATS..][..IMAGE_FLOATS];
        let level = |v: f32| match scale {
            InputScale::Paper => (v * 128.0 + 127.5).round().clamp(0.0, 255.0) as u8,
            InputScale::Keras => (v * 255.0).round().clamp(0.0, 255.0) as u8,
        };
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        for y in 0..N as u32 * zoom {
            for x in 0..N as u32 * zoom {
                let j = ((y / zoom) as usize * N + (x / zoom) as usize) * 3;
                let px = image::Rgb([level(view[j]), level(view[j + 1]), level(view[j + 2])]);
                png.put_pixel(gap + c * cell + x, gap + r * cell + y, px);
            }
        }
        if r == 0 && c >= 2 && c != 5 {
            let names: Vec<&str> = params[i].rand_ops().iter().map(|o| o.name()).collect();
            println!("column {c}: {names:?}");
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/augment_preview.png");
    png.save(&path).unwrap();
    println!("wrote {}", path.display());
    // The picture must show what the kernel computed: check one strong view against the reference.
    assert_same(
        "preview strong view",
        &paper[2 * IMAGE_FLOATS..][..IMAGE_FLOATS],
        &cpu::augment(&rows[0], &params[2], InputScale::Paper),
    );
}

const NO_FLIP: Symmetries = Symmetries {
    hflip: false,
    invert: false,
    recolor: false,
};

#[test]
fn hflip_off_never_mirrors_and_keeps_the_stream() {
    // With flips off the views are the flip-on views with the flip removed: the same crops,
    // translations and RandAugment ops, drawn from the same stream position.
    for (weak, strong) in [
        (WeakKind::Paper, StrongKind::Paper),
        (WeakKind::Keras, StrongKind::Keras),
    ] {
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
        let mut flipped = 0;
        for i in 0..200 {
            let (on, off) = if i % 2 == 0 {
                (
                    draw_weak(&mut a, N, weak, Symmetries::PAPER),
                    draw_weak(&mut b, N, weak, NO_FLIP),
                )
            } else {
                (
                    draw_strong(&mut a, N, strong, Symmetries::PAPER),
                    draw_strong(&mut b, N, strong, NO_FLIP),
                )
            };
            // Slot 0 holds the weak view (crop or translation, and the flip: a negative x scale).
            let mirrored = |p: &AugParams| p.slots[0].m[0] < 0;
            assert!(!mirrored(&off), "view {i} mirrors with hflip off: {off:?}");
            flipped += mirrored(&on) as usize;
            // The translation part of the slot that mirrors differs; everything else is equal.
            assert_eq!(on.cutout_x, off.cutout_x);
            assert_eq!(on.cutout_y, off.cutout_y);
            for (s_on, s_off) in on.slots.iter().zip(&off.slots).skip(1) {
                assert_eq!(s_on, s_off);
            }
        }
        assert!(flipped > 25, "flips on: {flipped} of 200 views mirrored");
    }
}

/// 400 views of every kind in turn, drawn from one seed with no symmetry and with `on`.
fn views_off_and_on(on: Symmetries) -> Vec<(AugParams, AugParams)> {
    let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(9), ChaCha8Rng::seed_from_u64(9));
    (0..400)
        .map(|i| match i % 4 {
            0 => (
                draw_weak(&mut a, N, WeakKind::Paper, NO_FLIP),
                draw_weak(&mut b, N, WeakKind::Paper, on),
            ),
            1 => (
                draw_strong(&mut a, N, StrongKind::Paper, NO_FLIP),
                draw_strong(&mut b, N, StrongKind::Paper, on),
            ),
            2 => (
                draw_weak(&mut a, N, WeakKind::Keras, NO_FLIP),
                draw_weak(&mut b, N, WeakKind::Keras, on),
            ),
            _ => (
                draw_strong(&mut a, N, StrongKind::Keras, NO_FLIP),
                draw_strong(&mut b, N, StrongKind::Keras, on),
            ),
        })
        .collect()
}

#[test]
fn invert_turns_every_level_over_and_is_drawn_only_when_on() {
    // The kernel against the definition itself (255 - v, then the scaling), not the reference.
    let ctx = ctx();
    let images = preset_images(5);
    let params: Vec<AugParams> = (0..5).map(|i| AugParams::identity().with_invert(i % 2 == 0)).collect();
    let out = run_augment(ctx, &images, &params, InputScale::Paper);
    for (i, img) in images.iter().enumerate() {
        let want: Vec<f32> = img
            .iter()
            .map(|&v| InputScale::Paper.apply(if i % 2 == 0 { 255 - v } else { v }))
            .collect();
        assert_same(&format!("image {i}"), &out[i * IMAGE_FLOATS..][..IMAGE_FLOATS], &want);
    }
    // Off: never inverted, and the stream is the one without the symmetry. On: about half.
    let on = Symmetries {
        hflip: false,
        invert: true,
        recolor: false,
    };
    let mut inverted = 0;
    for (i, (off_view, on_view)) in views_off_and_on(on).into_iter().enumerate() {
        assert_eq!(off_view.invert, 0, "view {i} inverted with the symmetry off");
        inverted += on_view.invert as usize;
    }
    assert!(
        (150..=250).contains(&inverted),
        "{inverted} of 400 views inverted, expected about half"
    );
}

#[test]
fn recolor_maps_each_channel_onto_its_range_and_is_drawn_only_when_on() {
    // The kernel against the definition (dark + (light - dark) * v / 255 per channel, rounded,
    // after the inversion), on a gray ramp and coloured images, both polarities of the range.
    let ctx = ctx();
    let mut images = preset_images(4);
    images.push((0..IMAGE_BYTES).map(|i| ((i / 3) % 256) as u8).collect());
    let colours = [
        ([0u8, 0, 0], [255u8, 255, 255]),
        ([250, 10, 128], [3, 200, 77]),
        ([17, 99, 254], [255, 0, 1]),
        ([128, 128, 128], [0, 0, 0]),
        ([5, 6, 7], [250, 251, 252]),
    ];
    let params: Vec<AugParams> = colours
        .iter()
        .enumerate()
        .map(|(i, &c)| AugParams::identity().with_invert(i == 2).with_recolor(Some(c)))
        .collect();
    let out = run_augment(ctx, &images, &params, InputScale::Paper);
    for (i, img) in images.iter().enumerate() {
        let (dark, light) = colours[i];
        let want: Vec<f32> = img
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let v = if i == 2 { 255 - v } else { v } as f64;
                let (d, l) = (dark[k % 3] as f64, light[k % 3] as f64);
                InputScale::Paper.apply((d + (l - d) * v / 255.0).round() as u8)
            })
            .collect();
        assert_same(&format!("image {i}"), &out[i * IMAGE_FLOATS..][..IMAGE_FLOATS], &want);
    }
    // Off: never recoloured, and the stream is the one without the symmetry. On: about half,
    // with readable contrast, both polarities.
    let on = Symmetries {
        hflip: false,
        invert: false,
        recolor: true,
    };
    let luma = |c: u32| {
        let b = c.to_le_bytes();
        cpu::luma(b[0], b[1], b[2]) as u32
    };
    let (mut recoloured, mut dark_on_light) = (0, 0);
    for (i, (off_view, on_view)) in views_off_and_on(on).into_iter().enumerate() {
        assert_eq!(off_view.recolor, 0, "view {i} recoloured with the symmetry off");
        if on_view.recolor == 1 {
            recoloured += 1;
            let (d, l) = (luma(on_view.dark), luma(on_view.light));
            assert!(d.abs_diff(l) >= RECOLOR_MIN_CONTRAST, "view {i}: contrast {d} vs {l}");
            dark_on_light += (d > l) as usize;
        }
    }
    assert!(
        (150..=250).contains(&recoloured),
        "{recoloured} of 400 views recoloured, expected about half"
    );
    assert!(
        (recoloured / 4..=3 * recoloured / 4).contains(&dark_on_light),
        "{dark_on_light} of {recoloured} recoloured views dark on light, expected about half"
    );
}
