//! Resize-and-pad: bit-exact agreement with the Keras example's PIL preprocessing.

use adamatch_wgpu::data::image::{pad_center, resize_and_pad, resize_and_pad_pixels, resize_and_pad_rgba};
use adamatch_wgpu::data::IMAGE_BYTES;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Every case of `tests/fixtures/pil_resize.json` (made by `make_pil_resize_fixture.py` with
/// Pillow) must match exactly: upscales, downscales, gray and RGB, odd aspect ratios.
#[test]
fn matches_pillow_bilinear_exactly() {
    let text = std::fs::read_to_string(crate::fixture("pil_resize.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let (w, h, ch) = (
            c["width"].as_u64().unwrap() as usize,
            c["height"].as_u64().unwrap() as usize,
            c["channels"].as_u64().unwrap() as usize,
        );
        let input = unhex(c["input"].as_str().unwrap());
        let expected = unhex(c["expected"].as_str().unwrap());
        let mut out = vec![0u8; IMAGE_BYTES];
        resize_and_pad_pixels(&input, w, h, ch, &mut out);
        let diff = out.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{w}x{h}x{ch}: {diff} bytes differ from Pillow");
    }
}

#[test]
fn dynamic_image_gray_and_rgb_agree_with_raw_path() {
    let (w, h) = (45u32, 20u32);
    let gray = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 5 + y * 3) as u8]));
    let out_gray = resize_and_pad(&image::DynamicImage::ImageLuma8(gray.clone()), 32);
    // Gray is replicated to 3 equal channels.
    assert!(out_gray.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    // The same picture as RGB gives the same pixels (the filter is per channel).
    let rgb = image::DynamicImage::ImageLuma8(gray).to_rgb8();
    let out_rgb = resize_and_pad(&image::DynamicImage::ImageRgb8(rgb.clone()), 32);
    assert_eq!(out_gray, out_rgb);
    // RGBA with any alpha gives the RGB result.
    let rgba: Vec<u8> = rgb.pixels().flat_map(|p| [p[0], p[1], p[2], 17]).collect();
    assert_eq!(resize_and_pad_rgba(&rgba, w, h, 32), out_rgb.to_vec());
    // 45x20 -> 32x14, centred vertically: rows 0..9 and 23..32 are zero padding.
    let (nw, nh) = adamatch_wgpu::data::image::fitted_size(45, 20, 32);
    assert_eq!((nw, nh), (32, 14));
    for y in (0..9).chain(23..32) {
        assert!(out_rgb[y * 96..(y + 1) * 96].iter().all(|&v| v == 0), "row {y}");
    }
    assert!(out_rgb[9 * 96..23 * 96].iter().any(|&v| v != 0));
}

#[test]
fn zero_sized_rgba_gives_black_tile() {
    assert_eq!(resize_and_pad_rgba(&[], 0, 0, 32), vec![0u8; IMAGE_BYTES]);
}

#[test]
fn pad_center_places_mnist_at_offset_2() {
    let px: Vec<u8> = (0..28 * 28).map(|i| (i % 251 + 1) as u8).collect();
    let mut out = vec![0u8; IMAGE_BYTES];
    pad_center(&px, 28, 28, 1, &mut out);
    for y in 0..32 {
        for x in 0..32 {
            let v = out[(y * 32 + x) * 3];
            let inside = (2..30).contains(&y) && (2..30).contains(&x);
            let want = if inside { px[(y - 2) * 28 + x - 2] } else { 0 };
            assert_eq!(v, want, "({y},{x})");
        }
    }
}
