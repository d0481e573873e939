//! Dataset names, prefixes, content detection and `load` for every kind of spec.

use std::path::PathBuf;

use adamatch_wgpu::data::idx::encode_idx;
use adamatch_wgpu::data::synth::{SynthDomain, TEST_SIZE};
use adamatch_wgpu::data::{load, parse_dataset_spec, DatasetSpec, ImageSource, Preprocess, Source, Split};

use crate::{err_text, gzip};

#[test]
fn names_and_prefixes_parse() {
    assert_eq!(parse_dataset_spec("mnist").unwrap(), DatasetSpec::Mnist);
    assert_eq!(parse_dataset_spec("SVHN").unwrap(), DatasetSpec::Svhn);
    assert_eq!(
        parse_dataset_spec("synth-digits").unwrap(),
        DatasetSpec::Synth {
            domain: SynthDomain::Digits,
            seed: 0
        }
    );
    assert_eq!(
        parse_dataset_spec("synth-house:42").unwrap(),
        DatasetSpec::Synth {
            domain: SynthDomain::House,
            seed: 42
        }
    );
    assert_eq!(DatasetSpec::default(), parse_dataset_spec("synth-digits").unwrap());
    assert_eq!(
        parse_dataset_spec("idx:/a/b").unwrap(),
        DatasetSpec::Idx(PathBuf::from("/a/b"))
    );
    assert_eq!(
        parse_dataset_spec("mat:x.mat").unwrap(),
        DatasetSpec::Mat("x.mat".into())
    );
    assert_eq!(parse_dataset_spec("dir:imgs").unwrap(), DatasetSpec::Dir("imgs".into()));
    assert_eq!(
        parse_dataset_spec("images:photos").unwrap(),
        DatasetSpec::Images("photos".into())
    );
    for s in [
        "images:w",
        "mnist",
        "svhn",
        "synth-house",
        "synth-digits:3",
        "idx:/x",
        "mat:y",
        "dir:z",
    ] {
        let spec = parse_dataset_spec(s).unwrap();
        assert_eq!(parse_dataset_spec(&spec.to_string()).unwrap(), spec);
    }
    assert!(err_text(parse_dataset_spec("cifar")).contains("unknown dataset 'cifar'"));
    assert!(err_text(parse_dataset_spec("synth-house:x")).contains("seed"));
    assert!(err_text(parse_dataset_spec("idx:")).contains("missing path"));
}

#[test]
fn paths_are_detected_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let idx = encode_idx(&[1, 28, 28], &[0; 784]);
    let f_gz = root.join("anything.bin");
    std::fs::write(&f_gz, gzip(&idx)).unwrap();
    let f_raw = root.join("raw.dat");
    std::fs::write(&f_raw, &idx).unwrap();
    let f_mat = root.join("data.bin");
    std::fs::copy(crate::fixture("svhn_small.mat"), &f_mat).unwrap();
    let f_txt = root.join("notes.txt");
    std::fs::write(&f_txt, "hello").unwrap();
    let s = |p: &std::path::Path| parse_dataset_spec(p.to_str().unwrap());
    assert_eq!(s(&f_gz).unwrap(), DatasetSpec::Idx(f_gz.clone()));
    assert_eq!(s(&f_raw).unwrap(), DatasetSpec::Idx(f_raw.clone()));
    assert_eq!(s(&f_mat).unwrap(), DatasetSpec::Mat(f_mat.clone()));
    assert!(err_text(s(&f_txt)).contains("not an IDX"));
    // Folders: .mat files -> mat, IDX files -> idx, else images.
    let m = root.join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(crate::fixture("svhn_small.mat"), m.join("test_32x32.mat")).unwrap();
    assert_eq!(s(&m).unwrap(), DatasetSpec::Mat(m.clone()));
    let i = root.join("i");
    std::fs::create_dir_all(&i).unwrap();
    std::fs::write(i.join("t10k-images-idx3-ubyte"), &idx).unwrap();
    assert_eq!(s(&i).unwrap(), DatasetSpec::Idx(i.clone()));
    let d = root.join("d");
    std::fs::create_dir_all(&d).unwrap();
    assert_eq!(s(&d).unwrap(), DatasetSpec::Dir(d.clone()));
}

#[test]
fn load_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The cache layout: DATA_DIR/mnist/*.gz and DATA_DIR/svhn/*.mat.
    let cache = root.join("cache");
    let mn = cache.join("mnist");
    std::fs::create_dir_all(&mn).unwrap();
    let img = |n: usize| encode_idx(&[n, 28, 28], &vec![200; n * 784]);
    let lab = |n: usize| encode_idx(&[n], &vec![3; n]);
    std::fs::write(mn.join("train-images-idx3-ubyte.gz"), gzip(&img(4))).unwrap();
    std::fs::write(mn.join("train-labels-idx1-ubyte.gz"), gzip(&lab(4))).unwrap();
    let train = load(&DatasetSpec::Mnist, Split::Train, Preprocess::Pad, &cache).unwrap();
    assert_eq!(train.len(), Some(4));
    let msg = err_text(load(&DatasetSpec::Mnist, Split::Test, Preprocess::Pad, &cache));
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("data download mnist"),
        "{msg}"
    );
    let msg = err_text(load(&DatasetSpec::Svhn, Split::Train, Preprocess::Pad, &cache));
    assert!(
        msg.contains("train_32x32.mat") && msg.contains("data download svhn"),
        "{msg}"
    );
    let sv = cache.join("svhn");
    std::fs::create_dir_all(&sv).unwrap();
    std::fs::copy(crate::fixture("svhn_small.mat"), sv.join("test_32x32.mat")).unwrap();
    let t = load(&DatasetSpec::Svhn, Split::Test, Preprocess::Pad, &cache).unwrap();
    assert_eq!(t.len(), Some(5));

    // idx: folder picks the split's files (raw or gz); a single file finds its labels.
    std::fs::write(mn.join("t10k-images-idx3-ubyte"), img(2)).unwrap();
    let t = load(&DatasetSpec::Idx(mn.clone()), Split::Test, Preprocess::Resize, &cache).unwrap();
    assert_eq!(t.len(), Some(2));
    assert!(!t.has_labels());
    std::fs::write(mn.join("t10k-labels-idx1-ubyte"), lab(2)).unwrap();
    let f = load(
        &DatasetSpec::Idx(mn.join("t10k-images-idx3-ubyte")),
        Split::Train,
        Preprocess::Pad,
        &cache,
    )
    .unwrap();
    assert!(f.has_labels());
    assert_eq!(f.as_dataset().unwrap().labels.as_ref().unwrap(), &[3, 3]);

    // mat: folder and file.
    let m = load(&DatasetSpec::Mat(sv.clone()), Split::Test, Preprocess::Pad, &cache).unwrap();
    assert_eq!(m.len(), Some(5));
    let msg = err_text(load(
        &DatasetSpec::Mat(sv.clone()),
        Split::Train,
        Preprocess::Pad,
        &cache,
    ));
    assert!(msg.contains("train_32x32.mat"), "{msg}");

    // dir: train/test sub-folders.
    let d = root.join("imgs");
    for (split, n) in [("train", 3), ("test", 1)] {
        for class in ["5", "6"] {
            for k in 0..n {
                let p = d.join(split).join(class).join(format!("{k}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::new(20, 10).save(&p).unwrap();
            }
        }
    }
    let tr = load(&DatasetSpec::Dir(d.clone()), Split::Train, Preprocess::Pad, &cache).unwrap();
    let te = load(&DatasetSpec::Dir(d.clone()), Split::Test, Preprocess::Pad, &cache).unwrap();
    assert_eq!((tr.len(), te.len()), (Some(6), Some(2)));
    // images: the same split, every image unlabeled.
    let ti = load(&DatasetSpec::Images(d.clone()), Split::Train, Preprocess::Pad, &cache).unwrap();
    assert_eq!((ti.len(), ti.has_labels()), (Some(6), false));

    // Synthetic: infinite train stream, fixed test set.
    let spec = DatasetSpec::Synth {
        domain: SynthDomain::House,
        seed: 5,
    };
    let s = load(&spec, Split::Train, Preprocess::Pad, &cache).unwrap();
    assert!(matches!(s, Source::Synthetic(_)));
    assert_eq!(s.len(), None);
    let mut a = vec![0u8; 3072];
    assert!(s.fill(u64::MAX - 3, &mut a).is_some());
    let t = load(&spec, Split::Test, Preprocess::Pad, &cache).unwrap();
    assert_eq!(t.len(), Some(TEST_SIZE));
}

#[test]
fn evaluation_samples_keep_class_shares_and_are_seeded() {
    use adamatch_wgpu::data::{Dataset, IMAGE_BYTES};
    // 1,000 images sorted by class as folders list them: 300 of class 0, 100 each of 1..7.
    let labels: Vec<u16> = (0..8u16)
        .flat_map(|c| std::iter::repeat_n(c, if c == 0 { 300 } else { 100 }))
        .collect();
    // Image i holds i in its first two bytes, so each image says where it came from.
    let images: Vec<u8> = (0..labels.len())
        .flat_map(|i| {
            let mut img = vec![0u8; IMAGE_BYTES];
            img[..2].copy_from_slice(&(i as u16).to_le_bytes());
            img
        })
        .collect();
    let src = Source::Finite(Dataset::new(images, Some(labels.clone()), "sorted").unwrap());
    let s = src.sample(100, 0);
    assert_eq!(s.len(), 100);
    let h = s.histogram().unwrap();
    assert_eq!(&h[..8], &[30, 10, 10, 10, 10, 10, 10, 10], "class shares of the sample");
    // Every sampled image is an image of the set with its own label, in the set's order.
    let mut last = None;
    for i in 0..s.len() {
        let idx = u16::from_le_bytes([s.image(i)[0], s.image(i)[1]]) as usize;
        assert_eq!(src.as_dataset().unwrap().image(idx), s.image(i));
        assert_eq!(
            labels[idx],
            s.labels.as_ref().unwrap()[i],
            "a sampled image keeps its label"
        );
        assert!(last.is_none_or(|l| idx > l), "sample keeps the set's order");
        last = Some(idx);
    }
    assert_eq!(s, src.sample(100, 0), "same seed, same sample");
    assert_ne!(s, src.sample(100, 1), "another seed, another sample");
    // Not the first 100 (all class 0), and the whole set when it fits.
    assert_ne!(s, src.take(100));
    assert_eq!(src.sample(5000, 0), src.take(5000));
    // Unlabeled sets: a uniform seeded sample of the requested size.
    let unl = Source::Finite(Dataset::new(vec![7; 50 * IMAGE_BYTES], None, "unlabeled").unwrap());
    assert_eq!(unl.sample(20, 0).len(), 20);
}

#[test]
fn labeled_subset_picks_per_class_by_seed() {
    use adamatch_wgpu::data::synth::{SynthDomain, SynthStream};
    let d = SynthStream::test(SynthDomain::Digits, 1, 300).materialize(0, 300);
    let a = d.labeled_subset(4, 7).unwrap();
    assert_eq!(a.len(), 40);
    assert_eq!(a.histogram().unwrap(), vec![4; 10]);
    assert_eq!(a.classes, d.classes);
    // Deterministic for a seed, another pick for another seed, images with their own labels.
    assert_eq!(a, d.labeled_subset(4, 7).unwrap());
    assert_ne!(a.images, d.labeled_subset(4, 8).unwrap().images);
    for i in 0..a.len() {
        let j = (0..d.len())
            .find(|&j| d.image(j) == a.image(i))
            .expect("a picked image is the dataset's");
        assert_eq!(d.label(j), a.label(i));
    }
    let err = err_text(d.labeled_subset(1000, 0));
    assert!(
        err.contains("class '0'") && err.contains("fewer than the 1000"),
        "{err}"
    );
    let unlabeled = adamatch_wgpu::data::Dataset::new(d.images.clone(), None, "u").unwrap();
    assert!(err_text(unlabeled.labeled_subset(1, 0)).contains("no labels"));
}
