//! Image folders: labeled and unlabeled, any size and format, bad files.

use std::path::Path;

use adamatch_wgpu::data::folder::{load_dir, load_labeled_dir, load_unlabeled_dir};
use adamatch_wgpu::data::image::resize_and_pad;

use crate::err_text;

fn save_rgb(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8 ^ seed, (y * 5) as u8, seed.wrapping_mul(3)])
    });
    img.save(path).unwrap();
}

#[test]
fn labeled_folder_with_mixed_sizes_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_rgb(&root.join("3/a.png"), 32, 32, 1);
    save_rgb(&root.join("3/b.PNG"), 64, 20, 2);
    save_rgb(&root.join("7/c.jpg"), 50, 80, 3);
    save_rgb(&root.join("7/nested/d.jpeg"), 10, 10, 4);
    std::fs::write(root.join("7/readme.txt"), "not an image").unwrap();
    let gray = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x + y) as u8 * 4]));
    std::fs::create_dir_all(root.join("0")).unwrap();
    gray.save(root.join("0/g.png")).unwrap();
    // A subfolder without images is a class without examples: an error naming it.
    std::fs::create_dir_all(root.join("other")).unwrap();
    let msg = err_text(load_dir(root, 32));
    assert!(msg.contains("'other'") && msg.contains("no image"), "{msg}");
    std::fs::remove_dir(root.join("other")).unwrap();
    let d = load_dir(root, 32).unwrap();
    assert_eq!(d.len(), 5);
    // The classes are the subfolder names; labels index them.
    assert_eq!(d.classes, ["0", "3", "7"]);
    assert_eq!(d.labels.as_ref().unwrap(), &[0, 1, 1, 2, 2]);
    // A 32x32 PNG is loaded unchanged.
    let a = image::open(root.join("3/a.png")).unwrap().to_rgb8();
    assert_eq!(d.image(1), a.as_raw().as_slice());
    // Others go through resize_and_pad.
    let b = image::open(root.join("3/b.PNG")).unwrap();
    assert_eq!(d.image(2), &resize_and_pad(&b, 32)[..]);
    // Gray: three equal channels.
    assert!(d.image(0).chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    // Deterministic order.
    assert_eq!(load_labeled_dir(root, 32).unwrap(), d);
}

#[test]
fn unlabeled_folder_is_recursive_and_misnamed_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_rgb(&root.join("x/y/1.png"), 40, 30, 9);
    save_rgb(&root.join("z.jpg"), 33, 33, 8);
    // A PNG named .jpg: the format comes from the content.
    std::fs::copy(root.join("x/y/1.png"), root.join("misnamed.jpg")).unwrap();
    let d = load_unlabeled_dir(root, 32).unwrap();
    assert_eq!(d.len(), 3);
    assert!(d.labels.is_none());
    assert_eq!(d.image(0), d.image(1)); // misnamed.jpg sorts before x/y/1.png
}

#[test]
fn empty_and_corrupt_folders_fail_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let msg = err_text(load_dir(&empty, 32));
    assert!(msg.contains("empty") && msg.contains("no image"), "{msg}");

    let labeled_empty = root.join("le");
    std::fs::create_dir_all(labeled_empty.join("4")).unwrap();
    let msg = err_text(load_dir(&labeled_empty, 32));
    assert!(msg.contains("le") && msg.contains("no image"), "{msg}");

    let bad = root.join("bad");
    save_rgb(&bad.join("ok.png"), 20, 20, 1);
    let png = std::fs::read(bad.join("ok.png")).unwrap();
    std::fs::write(bad.join("trunc.png"), &png[..png.len() / 2]).unwrap();
    let msg = err_text(load_dir(&bad, 32));
    assert!(msg.contains("trunc.png") && msg.contains("not a readable"), "{msg}");

    let bad2 = root.join("bad2");
    save_rgb(&bad2.join("5/a.jpg"), 20, 20, 1);
    std::fs::write(bad2.join("5/garbage.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let msg = err_text(load_dir(&bad2, 32));
    assert!(msg.contains("garbage.jpg"), "{msg}");

    let msg = err_text(load_dir(&root.join("missing"), 32));
    assert!(msg.contains("missing") && msg.contains("not a folder"), "{msg}");
}

#[test]
fn class_folders_take_any_names_sorted_numerically_or_lexicographically() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (k, class) in ["dog", "cat", "Bird", "cat"].iter().enumerate() {
        save_rgb(&root.join(format!("{class}/{k}.png")), 12, 9, k as u8);
    }
    let d = load_dir(root, 32).unwrap();
    // Byte order: upper case first.
    assert_eq!(d.classes, ["Bird", "cat", "dog"]);
    assert_eq!(d.labels.as_ref().unwrap(), &[0, 1, 1, 2]);
    assert_eq!(d.histogram().unwrap(), [1, 2, 1]);

    // All-digit names sort as numbers (leading zeros aside).
    let num = root.join("num");
    for class in ["10", "2", "007", "1"] {
        save_rgb(&num.join(format!("{class}/a.png")), 8, 8, 1);
    }
    assert_eq!(load_dir(&num, 32).unwrap().classes, ["1", "2", "007", "10"]);

    // A folder {0, 1, 12}: 12 is a class, never dropped (issue 13's probe).
    let twelve = root.join("twelve");
    for class in ["0", "1", "12"] {
        for k in 0..4 {
            save_rgb(&twelve.join(format!("{class}/{k}.png")), 8, 8, k);
        }
    }
    let d = load_dir(&twelve, 32).unwrap();
    assert_eq!(
        (d.len(), d.classes.clone()),
        (12, vec!["0".to_string(), "1".into(), "12".into()])
    );

    // One class is not a classification problem.
    let one = root.join("one");
    save_rgb(&one.join("only/a.png"), 8, 8, 1);
    let msg = err_text(load_dir(&one, 32));
    assert!(msg.contains("1 classes") && msg.contains("2 to 1000"), "{msg}");

    // Images both at the top and in subfolders: ambiguous, and the message says what to do.
    let mixed = root.join("mixed");
    save_rgb(&mixed.join("top.png"), 8, 8, 1);
    save_rgb(&mixed.join("2024/a.png"), 8, 8, 2);
    let msg = err_text(load_dir(&mixed, 32));
    assert!(msg.contains("top.png") && msg.contains("images:"), "{msg}");
    // images: reads every image without labels.
    let d = load_unlabeled_dir(&mixed, 32).unwrap();
    assert_eq!((d.len(), d.labels.is_none(), d.classes.len()), (2, true, 0));
}

/// Issue 24 row 7: class folders named `..dots` and `...` were dropped without a word (7 of 9
/// classes); tool folders are skipped and counted.
#[test]
fn dot_named_class_folders_are_classes_and_tool_folders_are_counted() {
    use adamatch_wgpu::data::folder::scan;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (i, class) in ["..dots", "...", ".hidden", "a"].iter().enumerate() {
        save_rgb(&root.join(class).join("x.png"), 8, 8, i as u8);
    }
    save_rgb(&root.join(".git/objects/y.png"), 8, 8, 9);
    std::fs::write(root.join("a/.DS_Store"), "finder").unwrap();
    std::fs::write(root.join("a/._x.png"), "AppleDouble").unwrap();
    std::fs::write(root.join("a/notes.txt"), "text").unwrap();
    let d = load_dir(root, 32).unwrap();
    assert_eq!(d.classes, ["...", "..dots", ".hidden", "a"]);
    assert_eq!(d.len(), 4);
    let s = scan(root).unwrap();
    let skipped: Vec<String> = s
        .skipped
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert_eq!(skipped, [".git", "a/.DS_Store", "a/._x.png", "a/notes.txt"]);
    let line = s.skipped_summary().unwrap();
    assert!(line.starts_with("skipped 4 entries"), "{line}");
}

/// Issue 24 row 8: a class folder that is a symbolic link was dropped without a word; a link
/// back to an ancestor is an error naming it, not an endless walk.
#[test]
fn linked_class_folders_are_followed_and_link_loops_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, elsewhere) = (dir.path().join("data"), dir.path().join("elsewhere"));
    save_rgb(&root.join("a/1.png"), 8, 8, 1);
    save_rgb(&elsewhere.join("2.png"), 8, 8, 2);
    save_rgb(&elsewhere.join("3.png"), 8, 8, 3);
    std::os::unix::fs::symlink(&elsewhere, root.join("b")).unwrap();
    let d = load_dir(&root, 32).unwrap();
    assert_eq!(d.classes, ["a", "b"]);
    assert_eq!(d.labels.as_ref().unwrap(), &[0, 1, 1]);
    std::os::unix::fs::symlink(&root, elsewhere.join("loop")).unwrap();
    let msg = err_text(load_dir(&root, 32));
    assert!(msg.contains("loop") && msg.contains("elsewhere"), "{msg}");
    // A dangling link is named, not skipped.
    std::fs::remove_file(elsewhere.join("loop")).unwrap();
    std::os::unix::fs::symlink(root.join("gone"), root.join("a/dangling.png")).unwrap();
    let msg = err_text(load_dir(&root, 32));
    assert!(msg.contains("dangling.png"), "{msg}");
}

/// Issue 24 row 9: images more than 32 folders deep and GIF, WebP, BMP and TIFF files were
/// skipped without a word (8 of 14 files loaded).
#[test]
fn deep_trees_and_every_decodable_format_load() {
    use adamatch_wgpu::data::folder::MAX_DEPTH;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut deep = root.join("c");
    for i in 0..40 {
        deep = deep.join(format!("d{i}"));
    }
    save_rgb(&deep.join("deep.png"), 8, 8, 1);
    let img = image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 77]));
    for ext in ["bmp", "gif", "tiff", "tif", "webp", "png"] {
        let p = root.join("c").join(format!("f.{ext}"));
        if ext == "webp" {
            // The crate's WebP encoder is lossless; every format here keeps the pixels exactly
            // except GIF (a palette).
            image::DynamicImage::ImageRgba8(image::DynamicImage::ImageRgb8(img.clone()).to_rgba8())
                .save(&p)
                .unwrap();
        } else {
            img.save(&p).unwrap();
        }
    }
    save_rgb(&root.join("d/x.png"), 8, 8, 2);
    let d = load_dir(root, 32).unwrap();
    assert_eq!(d.len(), 8, "the deep PNG, six formats and d/x.png");
    let want = resize_and_pad(&image::DynamicImage::ImageRgb8(img), 32);
    // Sorted paths: c/d0/... first, then f.bmp f.gif f.png f.tif f.tiff f.webp.
    for (i, ext) in [(1, "bmp"), (3, "png"), (4, "tif"), (5, "tiff"), (6, "webp")] {
        assert_eq!(d.image(i), &want[..], "{ext} does not decode to the pixels written");
    }
    // Deeper than MAX_DEPTH: an error naming the folder, not a silent drop.
    let mut deeper = root.join("d");
    for i in 0..MAX_DEPTH + 1 {
        deeper = deeper.join(format!("e{i}"));
    }
    save_rgb(&deeper.join("lost.png"), 8, 8, 3);
    let msg = err_text(load_dir(root, 32));
    assert!(msg.contains("nested more than") && msg.contains("e0"), "{msg}");
}

/// A JPEG's APP1 segment holding only an EXIF orientation tag.
fn exif_orientation_segment(orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    // Tag 0x0112 (Orientation), type SHORT, count 1, the value in the first two bytes.
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&payload);
    seg
}

/// Issue 24 row 16: a phone JPEG with EXIF orientation 6 was classified sideways.
#[test]
fn jpeg_exif_orientation_is_applied() {
    use adamatch_wgpu::data::folder::load_image_file;
    use adamatch_wgpu::data::image::decode_upright_bytes;
    let dir = tempfile::tempdir().unwrap();
    // A landscape picture (as the sensor stored it) with a bright left edge.
    let stored = image::RgbImage::from_fn(40, 24, |x, _| {
        if x < 8 {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([10, 10, 10])
        }
    });
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(stored)
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let plain = image::load_from_memory(&jpeg).unwrap();
    let mut tagged = jpeg[..2].to_vec();
    tagged.extend_from_slice(&exif_orientation_segment(6));
    tagged.extend_from_slice(&jpeg[2..]);
    let path = dir.path().join("portrait.jpg");
    std::fs::write(&path, &tagged).unwrap();
    // Orientation 6: rotate 90 degrees clockwise to view; the bright edge ends on top.
    let upright = decode_upright_bytes(&tagged).unwrap();
    assert_eq!((upright.width(), upright.height()), (24, 40));
    assert_eq!(upright.to_rgb8(), plain.rotate90().to_rgb8());
    let top = upright.to_rgb8().get_pixel(12, 2)[0];
    let bottom = upright.to_rgb8().get_pixel(12, 37)[0];
    assert!(top > 200 && bottom < 60, "top {top}, bottom {bottom}");
    // The folder loader (native) and the browser trainer's decoder are one function.
    assert_eq!(
        load_image_file(&path, 32).unwrap(),
        resize_and_pad(&plain.rotate90(), 32)
    );
}
