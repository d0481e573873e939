//! Writes the web demo's sample images (web/samples/): the first synth-house test image of each
//! digit (32x32, seed 0) and a 3-digit "house number" strip scaled up 4x, plus samples.json.
//!
//! `cargo run --example web_samples [-- OUT_DIR]` (default: web/samples).

use std::path::PathBuf;

use adamatch_wgpu::data::synth::{generate, SynthDomain};
use adamatch_wgpu::data::{Split, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES};

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/samples"));
    std::fs::create_dir_all(&out)?;

    // The first test image of every class.
    let mut first: [Option<(u64, Vec<u8>)>; NUM_CLASSES] = Default::default();
    let mut img = vec![0u8; IMAGE_BYTES];
    let mut index = 0u64;
    while first.iter().any(|f| f.is_none()) {
        let label = generate(SynthDomain::House, 0, Split::Test, index, &mut img) as usize;
        if first[label].is_none() {
            first[label] = Some((index, img.clone()));
        }
        index += 1;
    }
    let mut entries = Vec::new();
    let s = IMAGE_SIZE as u32;
    for (label, f) in first.iter().enumerate() {
        let (index, px) = f.as_ref().unwrap();
        let file = format!("digit-{label}.png");
        image::RgbImage::from_raw(s, s, px.clone())
            .unwrap()
            .save(out.join(&file))?;
        entries.push(serde_json::json!({ "file": file, "label": label, "test_index": index }));
    }

    // A strip of three consecutive test images, each scaled 4x (nearest): a "photo" larger than
    // the network input, to crop a digit from.
    let (start, scale) = (100u64, 4u32);
    let mut tiles = Vec::new();
    let mut labels = Vec::new();
    for k in 0..3 {
        labels.push(generate(SynthDomain::House, 0, Split::Test, start + k, &mut img));
        tiles.push(img.clone());
    }
    let strip = image::RgbImage::from_fn(3 * s * scale, s * scale, |x, y| {
        let tile = &tiles[(x / (s * scale)) as usize];
        let (px, py) = ((x % (s * scale)) / scale, y / scale);
        let o = ((py * s + px) * 3) as usize;
        image::Rgb([tile[o], tile[o + 1], tile[o + 2]])
    });
    strip.save(out.join("house-number.png"))?;
    entries.push(serde_json::json!({
        "file": "house-number.png",
        "labels": labels,
        "test_index": start,
        "note": "three test images side by side, 4x: crop one digit"
    }));

    std::fs::write(out.join("samples.json"), serde_json::to_string_pretty(&entries)? + "\n")?;
    println!("wrote {} samples to {}", entries.len(), out.display());
    Ok(())
}
