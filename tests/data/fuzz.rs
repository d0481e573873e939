//! Property-based fuzzing of the IDX and MAT parsers: arbitrary bytes and mutations of valid
//! files must give Ok or Err, never a panic, a hang or a huge allocation.

use adamatch_wgpu::data::idx::{encode_idx, maybe_gunzip, parse_idx};
use adamatch_wgpu::data::mat::{mi, mx, read_svhn, write_mat};
use proptest::prelude::*;

fn valid_mat(compress: bool) -> Vec<u8> {
    let x: Vec<u8> = (0..2 * 3072).map(|i| (i % 256) as u8).collect();
    write_mat(
        &[
            ("X", mx::UINT8, &[32, 32, 3, 2], mi::UINT8, &x),
            ("y", mx::DOUBLE, &[2, 1], mi::UINT8, &[3, 10]),
        ],
        compress,
    )
}

/// Applies (position, xor) mutations and an optional truncation.
fn mutate(mut b: Vec<u8>, muts: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(p, x) in muts {
        if !b.is_empty() {
            let n = b.len();
            b[p % n] ^= x;
        }
    }
    if let Some(c) = cut {
        let n = b.len();
        b.truncate(c % (n + 1));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn idx_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_idx(&bytes);
        let _ = maybe_gunzip(&bytes);
    }

    #[test]
    fn idx_mutated(muts in proptest::collection::vec((0usize..2000, any::<u8>()), 0..6),
                   cut in proptest::option::of(0usize..2000),
                   gz in any::<bool>()) {
        let data: Vec<u8> = (0..3 * 5 * 7).map(|i| i as u8).collect();
        let mut b = encode_idx(&[3, 5, 7], &data);
        if gz { b = crate::gzip(&b); }
        let b = mutate(b, &muts, cut);
        if let Ok(raw) = maybe_gunzip(&b) {
            if let Ok(arr) = parse_idx(&raw) {
                prop_assert_eq!(arr.dims.iter().product::<usize>(), arr.data.len());
            }
        }
    }

    #[test]
    fn mat_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = read_svhn(&mut &bytes[..], Some(bytes.len() as u64));
        let _ = read_svhn(&mut &bytes[..], None);
    }

    #[test]
    fn mat_random_after_valid_header(body in proptest::collection::vec(any::<u8>(), 0..800)) {
        let mut b = valid_mat(false)[..128].to_vec();
        b.extend_from_slice(&body);
        let _ = read_svhn(&mut &b[..], Some(b.len() as u64));
    }

    #[test]
    fn mat_mutated(muts in proptest::collection::vec((0usize..8000, any::<u8>()), 1..6),
                   cut in proptest::option::of(0usize..8000),
                   compress in any::<bool>()) {
        let b = mutate(valid_mat(compress), &muts, cut);
        if let Ok((images, labels)) = read_svhn(&mut &b[..], Some(b.len() as u64)) {
            prop_assert_eq!(images.len(), labels.len() * 3072);
            prop_assert!(labels.iter().all(|&l| l < 10));
        }
    }
}
