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
