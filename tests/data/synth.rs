//! The synthetic domain pair: determinism, labels, and a measurable domain gap.

use adamatch_wgpu::data::synth::{generate, generate_range, SynthDomain, SynthStream};
use adamatch_wgpu::data::{Dataset, ImageSource, Split, IMAGE_BYTES};

#[test]
fn deterministic_for_a_seed_and_distinct_across_seeds_and_splits() {
    for domain in [SynthDomain::Digits, SynthDomain::House] {
        let a = generate_range(domain, 7, Split::Train, 100, 64);
        let b = generate_range(domain, 7, Split::Train, 100, 64);
        assert_eq!(a, b, "{domain:?}");
        // Parallel generation equals one-by-one generation.
        let mut one = vec![0u8; IMAGE_BYTES];
        let l = generate(domain, 7, Split::Train, 163, &mut one) as u16;
        assert_eq!(one, a.image(63));
        assert_eq!(Some(l), a.label(63));
        let c = generate_range(domain, 8, Split::Train, 100, 64);
        let t = generate_range(domain, 7, Split::Test, 100, 64);
        for i in 0..64 {
            assert_ne!(a.image(i), c.image(i), "{domain:?} seeds 7/8 image {i}");
            assert_ne!(a.image(i), t.image(i), "{domain:?} train/test image {i}");
        }
        // Streams: fill(index) is generate(index).
        let s = SynthStream::train(domain, 7);
        let mut f = vec![0u8; IMAGE_BYTES];
        assert_eq!(s.fill(163, &mut f), Some(l));
        assert_eq!(f, one);
    }
}

struct Stats {
    mean: f64,
    /// Mean over pixels of max(R,G,B) - min(R,G,B).
    chroma: f64,
    /// Mean of the 4-pixel border (where SVHN has background and distractors, MNIST black).
    border: f64,
}

fn stats(d: &Dataset) -> Stats {
    let (mut sum, mut chroma, mut border, mut nb) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..d.len() {
        for (p, px) in d.image(i).chunks_exact(3).enumerate() {
            let (y, x) = (p / 32, p % 32);
            let m = (px[0] as f64 + px[1] as f64 + px[2] as f64) / 3.0;
            sum += m;
            chroma += (*px.iter().max().unwrap() - *px.iter().min().unwrap()) as f64;
            if !(4..28).contains(&y) || !(4..28).contains(&x) {
                border += m;
                nb += 1.0;
            }
        }
    }
    let n = (d.len() * 1024) as f64;
    Stats {
        mean: sum / n,
        chroma: chroma / n,
        border: border / nb,
    }
}

#[test]
fn all_labels_present_and_domains_differ() {
    let digits = SynthStream::test(SynthDomain::Digits, 0, 2000).materialize(0, 2000);
    let house = SynthStream::test(SynthDomain::House, 0, 2000).materialize(0, 2000);
    for d in [&digits, &house] {
        let h = d.histogram().unwrap();
        assert!(h.iter().all(|&c| c > 150), "labels not balanced: {h:?}");
    }
    let (sd, sh) = (stats(&digits), stats(&house));
    println!(
        "synth-digits: mean {:.1} chroma {:.1} border {:.1}; synth-house: mean {:.1} chroma {:.1} border {:.1}",
        sd.mean, sd.chroma, sd.border, sh.mean, sh.chroma, sh.border
    );
    // Digits: gray, white on black, ink only in the middle.
    assert_eq!(sd.chroma, 0.0);
    assert!(sd.mean > 15.0 && sd.mean < 70.0, "digits mean {}", sd.mean);
    assert!(sd.border < 2.0, "digits border {}", sd.border);
    // House: coloured, brighter on average, textured background reaching the border.
    assert!(sh.chroma > 10.0, "house chroma {}", sh.chroma);
    assert!(sh.mean > sd.mean + 30.0, "house mean {} vs digits {}", sh.mean, sd.mean);
    assert!(sh.border > 25.0, "house border {}", sh.border);
    // Both polarities, about half each: light digits on dark grounds and dark digits on light
    // grounds (the corner pixel is ground, partly textured).
    let corner = |i: usize| house.image(i)[..3].iter().map(|&v| v as f64).sum::<f64>() / 3.0;
    let dark_ground = (0..house.len()).filter(|&i| corner(i) < 110.0).count();
    let light_ground = (0..house.len()).filter(|&i| corner(i) > 145.0).count();
    println!("dark grounds: {dark_ground}, light grounds: {light_ground} of 2000");
    assert!(
        (850..=1150).contains(&dark_ground),
        "dark grounds: {dark_ground} of 2000"
    );
    assert!(
        (850..=1150).contains(&light_ground),
        "light grounds: {light_ground} of 2000"
    );
}
