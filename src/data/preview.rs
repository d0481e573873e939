//! Sample grids: tiles of 32x32 images, enlarged, each with its class index drawn underneath in
//! a built-in 3x5 pixel font (no font files). For the digit datasets the index is the digit;
//! `data info` lists which name each index stands for.

use super::{Label, IMAGE_BYTES, IMAGE_SIZE};

/// 3x5 bitmaps of the digits 0..=9, one row per byte (3 low bits, MSB = left).
const FONT: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b011, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Layout of a preview grid.
#[derive(Clone, Copy, Debug)]
pub struct GridLayout {
    /// Tiles per row.
    pub cols: usize,
    /// Each 32x32 image is enlarged by this integer factor (nearest neighbour).
    pub scale: usize,
}

impl Default for GridLayout {
    fn default() -> Self {
        GridLayout { cols: 10, scale: 3 }
    }
}

/// Renders `images` (NHWC, 3072 bytes each) into an RGB grid. With labels, each tile gets a
/// strip underneath showing its class index (`labels[i]` in decimal, drawn in white on dark
/// gray). Returns (width, height, RGB bytes).
pub fn render_grid(images: &[u8], labels: Option<&[Label]>, layout: GridLayout) -> (u32, u32, Vec<u8>) {
    let n = images.len() / IMAGE_BYTES;
    let cols = layout.cols.max(1).min(n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let s = layout.scale.max(1);
    let tile = IMAGE_SIZE * s;
    let pad = 2;
    let strip = if labels.is_some() { 7 * s.min(3) } else { 0 };
    let cell_w = tile + pad;
    let cell_h = tile + strip + pad;
    let (w, h) = (cols * cell_w + pad, rows * cell_h + pad);
    let mut buf = vec![48u8; w * h * 3];
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        let (ox, oy) = (pad + c * cell_w, pad + r * cell_h);
        let img = &images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES];
        for y in 0..tile {
            for x in 0..tile {
                let src = ((y / s) * IMAGE_SIZE + x / s) * 3;
                let dst = ((oy + y) * w + ox + x) * 3;
                buf[dst..dst + 3].copy_from_slice(&img[src..src + 3]);
            }
        }
        if let Some(l) = labels {
            let text = l[i].to_string();
            let fs = s.clamp(1, 3);
            // Glyphs 3 wide with 1 blank column between; at most what fits under the tile.
            let fit = (tile / (4 * fs)).max(1);
            let digits: Vec<usize> = text.bytes().take(fit).map(|b| (b - b'0') as usize).collect();
            let width = digits.len() * 4 * fs - fs;
            let gx0 = ox + (tile / 2).saturating_sub(width / 2);
            let gy = oy + tile + fs;
            for (k, &digit) in digits.iter().enumerate() {
                let gx = gx0 + k * 4 * fs;
                for (row, bits) in FONT[digit].iter().enumerate() {
                    for col in 0..3 {
                        if bits >> (2 - col) & 1 == 1 {
                            for dy in 0..fs {
                                for dx in 0..fs {
                                    let p = ((gy + row * fs + dy) * w + gx + col * fs + dx) * 3;
                                    buf[p..p + 3].fill(255);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (w as u32, h as u32, buf)
}
