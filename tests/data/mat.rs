//! SVHN `.mat` loading: the committed scipy-made fixture, MATLAB-style variants written here,
//! and bad input.

use adamatch_wgpu::data::mat::{load_svhn_mat, mi, mx, read_svhn, write_mat};
use adamatch_wgpu::data::IMAGE_BYTES;

use crate::err_text;

/// X[h, w, c, i] of the fixture (see tests/fixtures/make_svhn_fixture.py).
fn fixture_pixel(h: usize, w: usize, c: usize, i: usize) -> u8 {
    ((7 * h + 3 * w + 50 * c + 11 * i) % 256) as u8
}

fn check_layout(images: &[u8], n: usize) {
    assert_eq!(images.len(), n * IMAGE_BYTES);
    for i in 0..n {
        for h in 0..32 {
            for w in 0..32 {
                for c in 0..3 {
                    let got = images[i * IMAGE_BYTES + (h * 32 + w) * 3 + c];
                    assert_eq!(got, fixture_pixel(h, w, c, i), "image {i} ({h},{w},{c})");
                }
            }
        }
    }
}

#[test]
fn scipy_fixture_loads_in_nhwc_with_10_as_0() {
    let d = load_svhn_mat(&crate::fixture("svhn_small.mat")).unwrap();
    assert_eq!(d.len(), 5);
    assert_eq!(d.labels.as_ref().unwrap(), &[1, 0, 3, 0, 9]);
    check_layout(&d.images, 5);
}

/// Column-major X data for `n` images with the fixture formula.
fn x_data(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * IMAGE_BYTES);
    for i in 0..n {
        for c in 0..3 {
            for w in 0..32 {
                for h in 0..32 {
                    v.push(fixture_pixel(h, w, c, i));
                }
            }
        }
    }
    v
}

fn f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn matlab_style_variants_load() {
    let n = 3;
    let x = x_data(n);
    let y_u8 = [10u8, 2, 5]; // MATLAB stores an integer-valued double array as miUINT8
    let y_f64 = f64s(&[10.0, 2.0, 5.0]);
    for compress in [false, true] {
        for (storage, y) in [(mi::UINT8, &y_u8[..]), (mi::DOUBLE, &y_f64[..])] {
            let bytes = write_mat(
                &[
                    ("__note", mx::UINT8, &[1, 2], mi::UINT8, &[1, 2]),
                    ("y", mx::DOUBLE, &[n, 1], storage, y),
                    ("X", mx::UINT8, &[32, 32, 3, n], mi::UINT8, &x),
                ],
                compress,
            );
            let (images, labels) = read_svhn(&mut &bytes[..], Some(bytes.len() as u64)).unwrap();
            assert_eq!(labels, vec![0, 2, 5], "compress={compress} storage={storage}");
            check_layout(&images, n);
        }
    }
    // One image: MATLAB drops the trailing singleton dimension; 1xN labels; X stored as double.
    let x1: Vec<u8> = x_data(1).iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
    let bytes = write_mat(
        &[
            ("X", mx::DOUBLE, &[32, 32, 3], mi::DOUBLE, &x1),
            ("y", mx::DOUBLE, &[1, 1], mi::UINT8, &[7]),
        ],
        true,
    );
    let (images, labels) = read_svhn(&mut &bytes[..], None).unwrap();
    assert_eq!(labels, vec![7]);
    check_layout(&images, 1);
}

#[test]
fn bad_mat_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2;
    let x = x_data(n);
    let good = |y: &[u8], ystore: u32, compress: bool| {
        write_mat(
            &[
                ("X", mx::UINT8, &[32, 32, 3, n], mi::UINT8, &x),
                ("y", mx::DOUBLE, &[n, 1], ystore, y),
            ],
            compress,
        )
    };
    let ok = good(&[1, 2], mi::UINT8, true);
    let ok_raw = good(&[1, 2], mi::UINT8, false);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("trunc-header.mat", ok[..100].to_vec(), "truncated"),
        ("trunc-body.mat", ok[..ok.len() / 2].to_vec(), "truncated"),
        ("trunc-raw.mat", ok_raw[..ok_raw.len() - 100].to_vec(), "truncated"),
        ("nomagic.mat", vec![b'x'; 300], "not a MATLAB 5.0 MAT-file"),
        ("labels11.mat", good(&[1, 11], mi::UINT8, true), "label 11 at index 1"),
        (
            "labelsfrac.mat",
            good(&f64s(&[1.0, 2.5]), mi::DOUBLE, false),
            "label 2.5",
        ),
        (
            "shape.mat",
            write_mat(&[("X", mx::UINT8, &[32, 16, 6, n], mi::UINT8, &x)], true),
            "shape [32, 16, 6, 2]",
        ),
        (
            "noy.mat",
            write_mat(&[("X", mx::UINT8, &[32, 32, 3, n], mi::UINT8, &x)], false),
            "no variable 'y'",
        ),
        (
            "count.mat",
            write_mat(
                &[
                    ("X", mx::UINT8, &[32, 32, 3, n], mi::UINT8, &x),
                    ("y", mx::DOUBLE, &[3, 1], mi::UINT8, &[1, 2, 3]),
                ],
                true,
            ),
            "2 images but 'y' holds 3 labels",
        ),
    ];
    let mut v73 = ok.clone();
    v73[124] = 0x00;
    v73[125] = 0x02;
    cases.push(("v73.mat", v73, "v7.3"));
    // Corrupt the compressed stream of X (after its zlib header).
    let mut corrupt = ok.clone();
    for b in &mut corrupt[150..400] {
        *b ^= 0x5a;
    }
    cases.push(("corrupt.mat", corrupt, "corrupt"));
    // A huge claimed size must not allocate or hang: dims say 2^30 images.
    let mut huge = ok_raw.clone();
    let dims_at = 128 + 8 + 16 + 8 + 12; // tag, flags element, dims tag, then dims[3]
    huge[dims_at..dims_at + 4].copy_from_slice(&(1i32 << 30).to_le_bytes());
    cases.push(("huge.mat", huge, "need"));
    for (name, bytes, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let msg = err_text(load_svhn_mat(&p));
        assert!(msg.contains(name), "{name}: message does not name the file: {msg}");
        assert!(msg.contains(needle), "{name}: expected '{needle}' in: {msg}");
    }
    let msg = err_text(load_svhn_mat(&dir.path().join("absent.mat")));
    assert!(msg.contains("absent.mat") && msg.contains("cannot open"), "{msg}");
}
