//! Resizing any image to the network's 32x32x3 input, shared by the loaders, `predict` and the
//! web build (this module has no filesystem or network dependency and compiles on wasm32).
//!
//! The resampler reproduces Pillow's `Image.resize(..., Image.BILINEAR)` bit for bit on 8-bit
//! images (separable triangle filter whose support widens when downscaling, 22-bit fixed-point
//! coefficients, horizontal pass first, rounding half up), because the Keras example preprocesses
//! with PIL and the `keras-example` preset should see the same pixels.

use super::image_bytes;

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Per-output-pixel filter taps along one axis, as Pillow's `precompute_coeffs` +
/// `normalize_coeffs_8bpc` compute them.
#[derive(Clone, Debug)]
struct AxisCoeffs {
    /// (first input index, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
    /// Taps per output pixel (row stride of `weights`).
    ksize: usize,
    /// Fixed-point weights, `ksize` per output pixel.
    weights: Vec<i32>,
}

impl AxisCoeffs {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        // Bilinear (triangle) filter: support 1 input pixel, widened by the downscale factor.
        let support = filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) truncates toward zero, as does `as i64`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let t = ((x as i64 + xmin) as f64 - center + 0.5) * ss;
                let w = if t.abs() < 1.0 { 1.0 - t.abs() } else { 0.0 };
                *kx = w;
                ww += w;
            }
            for x in 0..n {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                weights[xx * ksize + x] = if w < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            bounds.push((xmin as usize, n));
        }
        AxisCoeffs { bounds, ksize, weights }
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// A Pillow-compatible bilinear resizer for one (input size, output size, channels) triple; the
/// coefficients are computed once so that resizing a whole dataset of same-sized images is cheap.
#[derive(Clone, Debug)]
pub struct Resizer {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    channels: usize,
    horiz: Option<AxisCoeffs>,
    vert: Option<AxisCoeffs>,
}

impl Resizer {
    /// Prepares a resize of `in_w x in_h` images with `channels` interleaved 8-bit channels to
    /// `out_w x out_h`. All sizes must be at least 1 (checked by [`Resizer::resize`]).
    pub fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize, channels: usize) -> Self {
        let horiz = (in_w != out_w).then(|| AxisCoeffs::new(in_w, out_w));
        let vert = (in_h != out_h).then(|| AxisCoeffs::new(in_h, out_h));
        Resizer {
            in_w,
            in_h,
            out_w,
            out_h,
            channels,
            horiz,
            vert,
        }
    }

    /// Resizes `src` (`in_h * in_w * channels` bytes, row-major, channels interleaved) into
    /// `dst` (`out_h * out_w * channels` bytes). Panics if a buffer has the wrong length, which is
    /// a programming error (callers validate file contents before).
    pub fn resize(&self, src: &[u8], dst: &mut [u8]) {
        let mut scratch = Vec::new();
        self.resize_with_scratch(src, dst, &mut scratch);
    }

    /// [`Resizer::resize`] reusing `scratch` for the intermediate image, so that resizing many
    /// images allocates once.
    pub fn resize_with_scratch(&self, src: &[u8], dst: &mut [u8], scratch: &mut Vec<u8>) {
        let c = self.channels;
        assert_eq!(src.len(), self.in_w * self.in_h * c, "resize: source length");
        assert_eq!(dst.len(), self.out_w * self.out_h * c, "resize: destination length");
        // Horizontal pass (over every input row; Pillow restricts it to the rows the vertical
        // pass reads, which gives the same values).
        let (tmp, tmp_w): (&[u8], usize) = match &self.horiz {
            None => (src, self.in_w),
            Some(h) => {
                scratch.resize(self.out_w * self.in_h * c, 0);
                let t = &mut scratch[..];
                for y in 0..self.in_h {
                    let row = &src[y * self.in_w * c..(y + 1) * self.in_w * c];
                    let out = &mut t[y * self.out_w * c..(y + 1) * self.out_w * c];
                    for (xx, &(xmin, n)) in h.bounds.iter().enumerate() {
                        let k = &h.weights[xx * h.ksize..xx * h.ksize + n];
                        for ch in 0..c {
                            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                            for (x, &w) in k.iter().enumerate() {
                                ss += row[(xmin + x) * c + ch] as i32 * w;
                            }
                            out[xx * c + ch] = clip8(ss);
                        }
                    }
                }
                (&scratch[..], self.out_w)
            }
        };
        match &self.vert {
            None => dst.copy_from_slice(tmp),
            Some(v) => {
                // Row-wide accumulation (vectorises): acc += weight * source row, per tap.
                let stride = tmp_w * c;
                let mut acc = vec![0i32; stride];
                for (yy, &(ymin, n)) in v.bounds.iter().enumerate() {
                    let k = &v.weights[yy * v.ksize..yy * v.ksize + n];
                    acc.fill(1 << (PRECISION_BITS - 1));
                    for (y, &w) in k.iter().enumerate() {
                        let row = &tmp[(ymin + y) * stride..(ymin + y + 1) * stride];
                        for (a, &p) in acc.iter_mut().zip(row) {
                            *a += p as i32 * w;
                        }
                    }
                    for (o, &a) in dst[yy * stride..(yy + 1) * stride].iter_mut().zip(&acc) {
                        *o = clip8(a);
                    }
                }
            }
        }
    }
}

/// Resizes an 8-bit image with Pillow's bilinear filter. `pixels` is `height * width * channels`
/// bytes (row-major, channels interleaved); the result is `new_h * new_w * channels` bytes.
/// Panics if `pixels` has the wrong length or a size is zero.
pub fn pil_bilinear_resize(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_w: usize,
    new_h: usize,
) -> Vec<u8> {
    assert!(width > 0 && height > 0 && new_w > 0 && new_h > 0, "resize: zero size");
    let mut out = vec![0u8; new_w * new_h * channels];
    Resizer::new(width, height, new_w, new_h, channels).resize(pixels, &mut out);
    out
}

/// The size an image keeps inside the `side` x `side` square, as the Keras example computes it
/// (at 32): `scale = side / max(h, w)`, `new = int(side * scale)` (truncation), never below 1
/// pixel.
pub fn fitted_size(width: usize, height: usize, side: usize) -> (usize, usize) {
    let scale = side as f64 / width.max(height) as f64;
    let nw = ((width as f64 * scale) as usize).clamp(1, side);
    let nh = ((height as f64 * scale) as usize).clamp(1, side);
    (nw, nh)
}

/// The side of a square RGB tile of `bytes` bytes. Panics if there is none (a programming error).
fn tile_side(bytes: usize) -> usize {
    let side = ((bytes / 3) as f64).sqrt().round() as usize;
    assert_eq!(side * side * 3, bytes, "not a square RGB tile: {bytes} bytes");
    side
}

/// Copies a `width x height` image with `channels` channels (1 = gray, repeated to RGB; 3 = RGB;
/// 4 = RGBA, alpha dropped) into the centre of a zeroed square NHWC tile `out` (its side from its
/// length: 3072 bytes are 32x32), with the Keras example's floor rounding of the offsets. The
/// image must fit.
pub fn pad_center(pixels: &[u8], width: usize, height: usize, channels: usize, out: &mut [u8]) {
    let side = tile_side(out.len());
    assert!(width <= side && height <= side, "pad_center: image too large");
    assert_eq!(pixels.len(), width * height * channels, "pad_center: length");
    out.fill(0);
    let top = (side - height) / 2;
    let left = (side - width) / 2;
    for y in 0..height {
        let src = &pixels[y * width * channels..(y + 1) * width * channels];
        let d0 = ((top + y) * side + left) * 3;
        let dst = &mut out[d0..d0 + width * 3];
        match channels {
            1 => {
                for (d, &v) in dst.chunks_exact_mut(3).zip(src) {
                    d[0] = v;
                    d[1] = v;
                    d[2] = v;
                }
            }
            3 => dst.copy_from_slice(src),
            _ => {
                for (d, s) in dst.chunks_exact_mut(3).zip(src.chunks_exact(channels)) {
                    d.copy_from_slice(&s[..3]);
                }
            }
        }
    }
}

/// Resizes raw pixels to fit the square tile `out` (its side from its length: 3072 bytes are
/// 32x32) keeping the aspect ratio (Pillow bilinear), centres them on black with floor rounding,
/// and repeats a gray channel to RGB, writing NHWC bytes. `channels` is 1 (gray), 3 (RGB) or 4
/// (RGBA, alpha ignored). A zero-sized image gives an all-black tile.
pub fn resize_and_pad_pixels(pixels: &[u8], width: usize, height: usize, channels: usize, out: &mut [u8]) {
    assert!(matches!(channels, 1 | 3 | 4), "channels must be 1, 3 or 4");
    assert_eq!(pixels.len(), width * height * channels, "resize_and_pad: length");
    let side = tile_side(out.len());
    if width == 0 || height == 0 {
        out.fill(0);
        return;
    }
    // Drop alpha first so the resampler works on 1 or 3 channels, as PIL does for RGB.
    let rgb_owned;
    let (px, c) = if channels == 4 {
        rgb_owned = pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect::<Vec<u8>>();
        (&rgb_owned[..], 3)
    } else {
        (pixels, channels)
    };
    let (nw, nh) = fitted_size(width, height, side);
    if (nw, nh) == (width, height) {
        pad_center(px, width, height, c, out);
    } else {
        let resized = pil_bilinear_resize(px, width, height, c, nw, nh);
        pad_center(&resized, nw, nh, c, out);
    }
}

/// Resizes any decoded image to the network input: fit inside `side` x `side` (32 by default)
/// keeping the aspect ratio (Pillow-compatible bilinear), centred zero padding (floor), gray
/// repeated to 3 channels. Gray images (with or without alpha, any bit depth) are resized as one
/// channel, everything else as RGB; alpha is ignored. Returns `side * side * 3` bytes, NHWC
/// (row-major, RGB interleaved).
pub fn resize_and_pad(img: &image::DynamicImage, side: usize) -> Vec<u8> {
    use image::DynamicImage as D;
    let mut out = vec![0u8; image_bytes(side)];
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageLuma16(_) | D::ImageLumaA16(_) => {
            let g = img.to_luma8();
            resize_and_pad_pixels(g.as_raw(), w, h, 1, &mut out);
        }
        D::ImageRgb8(rgb) => resize_and_pad_pixels(rgb.as_raw(), w, h, 3, &mut out),
        _ => {
            let rgb = img.to_rgb8();
            resize_and_pad_pixels(rgb.as_raw(), w, h, 3, &mut out);
        }
    }
    out
}

/// [`resize_and_pad`] for an RGBA pixel buffer (e.g. a browser canvas's `ImageData`), alpha
/// ignored. Returns `side * side * 3` bytes, NHWC. A zero width or height gives a black tile.
/// Panics if `rgba.len() != width * height * 4`.
pub fn resize_and_pad_rgba(rgba: &[u8], width: u32, height: u32, side: usize) -> Vec<u8> {
    let mut out = vec![0u8; image_bytes(side)];
    resize_and_pad_pixels(rgba, width as usize, height as usize, 4, &mut out);
    out
}

/// Decodes an image (format from its content) upright: a JPEG's (or TIFF's, WebP's) EXIF
/// orientation is applied, as browsers do when they decode it, so a phone's portrait photo is
/// not read sideways.
pub fn decode_upright<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
) -> image::ImageResult<image::DynamicImage> {
    use image::ImageDecoder;
    let mut decoder = reader.with_guessed_format()?.into_decoder()?;
    // An unreadable orientation tag is no reason to refuse the pixels.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// [`decode_upright`] of a file's or an upload's bytes.
pub fn decode_upright_bytes(bytes: &[u8]) -> image::ImageResult<image::DynamicImage> {
    decode_upright(image::ImageReader::new(std::io::Cursor::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        let px: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = vec![0; 32 * 32 * 3];
        resize_and_pad_pixels(&px, 32, 32, 3, &mut out);
        assert_eq!(out, px);
    }

    #[test]
    fn fitted_sizes_follow_python_truncation() {
        assert_eq!(fitted_size(28, 28, 32), (32, 32));
        assert_eq!(fitted_size(100, 50, 32), (32, 16));
        assert_eq!(fitted_size(1000, 1, 32), (32, 1));
        assert_eq!(fitted_size(3, 7, 32), (13, 32));
        assert_eq!(fitted_size(100, 50, 48), (48, 24));
    }
}
