//! MNIST IDX loading: writer round trips, both preprocessings, bad input, real MNIST t10k.

use adamatch_wgpu::data::idx::{encode_idx, load_idx, parse_idx};
use adamatch_wgpu::data::image::Resizer;
use adamatch_wgpu::data::{Preprocess, IMAGE_BYTES};

use crate::{err_text, gzip};

fn mnist_like(n: usize) -> (Vec<u8>, Vec<u8>) {
    let images: Vec<u8> = (0..n * 784).map(|i| ((i * 31) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    (encode_idx(&[n, 28, 28], &images), encode_idx(&[n], &labels))
}

#[test]
fn raw_and_gzipped_files_load_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = mnist_like(7);
    std::fs::write(dir.path().join("a-images-idx3-ubyte"), &img).unwrap();
    std::fs::write(dir.path().join("a-labels-idx1-ubyte"), &lab).unwrap();
    std::fs::write(dir.path().join("b-images-idx3-ubyte.gz"), gzip(&img)).unwrap();
    std::fs::write(dir.path().join("b-labels-idx1-ubyte.gz"), gzip(&lab)).unwrap();
    let a = load_idx(
        &dir.path().join("a-images-idx3-ubyte"),
        Some(&dir.path().join("a-labels-idx1-ubyte")),
        Preprocess::Pad,
    )
    .unwrap();
    let b = load_idx(
        &dir.path().join("b-images-idx3-ubyte.gz"),
        Some(&dir.path().join("b-labels-idx1-ubyte.gz")),
        Preprocess::Pad,
    )
    .unwrap();
    assert_eq!(a.images, b.images);
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.len(), 7);
    assert_eq!(a.labels.as_ref().unwrap(), &[0, 7, 4, 1, 8, 5, 2]);
    // Pad: pixel (r, c) of image i lands at (r+2, c+2), gray repeated in 3 channels.
    let raw = &parse_idx(&img).unwrap().data;
    for i in [0usize, 6] {
        let im = a.image(i);
        for (r, c) in [(0, 0), (13, 27), (27, 5)] {
            let v = raw[i * 784 + r * 28 + c];
            let p = ((r + 2) * 32 + c + 2) * 3;
            assert_eq!(&im[p..p + 3], &[v, v, v]);
        }
        assert_eq!(im[0], 0);
    }
}

#[test]
fn resize_preprocessing_uses_pillow_bilinear() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = mnist_like(3);
    let p = dir.path().join("x-images-idx3-ubyte");
    std::fs::write(&p, &img).unwrap();
    let d = load_idx(&p, None, Preprocess::Resize).unwrap();
    assert!(d.labels.is_none());
    let raw = &parse_idx(&img).unwrap().data;
    let mut want = vec![0u8; 1024];
    Resizer::new(28, 28, 32, 32, 1).resize(&raw[784..1568], &mut want);
    let got: Vec<u8> = d.image(1).chunks_exact(3).map(|p| p[0]).collect();
    assert_eq!(got, want);
}

#[test]
fn bad_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = mnist_like(4);
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good_img = write("good-images", &img);
    let good_lab = write("good-labels", &lab);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("truncated.gz", gzip(&img)[..200].to_vec(), true, "gzip"),
        (
            "badmagic",
            {
                let mut b = img.clone();
                b[0] = 1;
                b
            },
            true,
            "magic",
        ),
        ("shorthdr", vec![0, 0, 8, 3, 0, 0], true, "truncated IDX header"),
        ("shortdata", img[..img.len() - 10].to_vec(), true, "truncated IDX data"),
        ("trailing", [img.clone(), vec![0; 3]].concat(), true, "after the data"),
        (
            "int32",
            {
                let mut b = img.clone();
                b[2] = 0x0c;
                b
            },
            true,
            "element type",
        ),
        ("twodims", encode_idx(&[4, 784], &img[16..]), true, "3 dimensions"),
        (
            "labels-range",
            encode_idx(&[4], &[1, 2, 10, 3]),
            false,
            "label 10 at index 2",
        ),
        ("labels-count", encode_idx(&[3], &[1, 2, 3]), false, "3 labels"),
        ("labels-2d", encode_idx(&[2, 2], &[1, 2, 3, 4]), false, "1 dimension"),
        ("empty", vec![], true, "too short"),
    ];
    for (name, bytes, is_images, needle) in cases {
        let p = write(name, &bytes);
        let r = if is_images {
            load_idx(&p, Some(&good_lab), Preprocess::Pad)
        } else {
            load_idx(&good_img, Some(&p), Preprocess::Pad)
        };
        let msg = err_text(r);
        assert!(msg.contains(name), "{name}: message does not name the file: {msg}");
        assert!(msg.contains(needle), "{name}: expected '{needle}' in: {msg}");
    }
    let missing = dir.path().join("nope");
    let msg = err_text(load_idx(&missing, None, Preprocess::Pad));
    assert!(msg.contains("nope") && msg.contains("cannot read"), "{msg}");
    // Images larger than 32x32 cannot be padded, but can be resized.
    let big = write("big", &encode_idx(&[1, 40, 36], &vec![9u8; 1440]));
    let msg = err_text(load_idx(&big, None, Preprocess::Pad));
    assert!(msg.contains("larger than 32x32"), "{msg}");
    assert_eq!(load_idx(&big, None, Preprocess::Resize).unwrap().len(), 1);
}

/// The real MNIST test set from the shared folder: 10,000 images, the known label counts, the
/// known first labels, and padding that preserves every raw pixel.
#[test]
fn real_mnist_t10k_when_present() {
    let Some(dir) = crate::shared_mnist_dir() else {
        println!("SKIPPED real_mnist_t10k_when_present: shared/data/mnist-t10k not found");
        return;
    };
    let ip = dir.join("t10k-images-idx3-ubyte.gz");
    let lp = dir.join("t10k-labels-idx1-ubyte.gz");
    let d = load_idx(&ip, Some(&lp), Preprocess::Pad).unwrap();
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.images.len(), 10_000 * IMAGE_BYTES);
    assert_eq!(
        d.histogram().unwrap(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(&d.labels.as_ref().unwrap()[..5], &[7, 2, 1, 0, 4]);
    // Pixel sums are preserved by padding; border rows are zero.
    let raw = adamatch_wgpu::data::idx::read_idx(&ip).unwrap();
    let raw_sum: u64 = raw.data.iter().map(|&v| v as u64).sum();
    let pad_sum: u64 = d.images.iter().step_by(3).map(|&v| v as u64).sum();
    assert_eq!(raw_sum, pad_sum);
    assert!(d.image(0)[..2 * 96].iter().all(|&v| v == 0));
    let r = load_idx(&ip, Some(&lp), Preprocess::Resize).unwrap();
    assert_eq!(r.len(), 10_000);
    assert_ne!(r.images, d.images);
}
