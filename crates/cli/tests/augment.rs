//! `mnist augment`: the preview sheet of training images beside their
//! augmented versions, on real MNIST.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{fails, mnist, ok};

/// 28×28 drawn ×3, with a 2-pixel gap and 8 after each pair.
const CELL: u32 = 84;

fn sheet(out: &Path, flags: &[&str]) -> image::GrayImage {
    let mut cmd = mnist();
    cmd.args(["augment", "--count", "4", "--train-limit", "100", "--out"])
        .arg(out)
        .args(flags);
    let stdout = String::from_utf8(ok(&mut cmd).stdout).unwrap();
    assert!(
        stdout.contains("4 mnist training images of epoch 1"),
        "{stdout}"
    );
    image::open(out).unwrap().to_luma8()
}

/// The (original, augmented) cells of pair `n` in the first row.
fn pair(sheet: &image::GrayImage, n: u32) -> (Vec<u8>, Vec<u8>) {
    let left = 2 + n * (2 * CELL + 2 + 8);
    let cell = |x0: u32| {
        let mut pixels = Vec::new();
        for y in 2..2 + CELL {
            for x in x0..x0 + CELL {
                pixels.push(sheet.get_pixel(x, y).0[0]);
            }
        }
        pixels
    };
    (cell(left), cell(left + CELL + 2))
}

#[test]
fn the_sheet_pairs_each_image_with_its_augmentation() {
    let dir = tempfile::tempdir().unwrap();
    let plain = sheet(&dir.path().join("plain.png"), &[]);
    assert_eq!(plain.dimensions(), (2 + 4 * (2 * CELL + 10), 2 + CELL + 2));
    // Without augmentation both halves of every pair are the same image,
    // and a digit: some ink, mostly background.
    for n in 0..4 {
        let (original, augmented) = pair(&plain, n);
        assert_eq!(original, augmented, "pair {n}");
        let ink = original.iter().filter(|&&v| v > 128).count();
        assert!(ink > 100 && ink < original.len() / 2, "pair {n}: {ink}");
    }
    // The paper's augmentation changes every image (it always squeezes the
    // width by at least a pixel); the originals stay as they were.
    let paper = sheet(
        &dir.path().join("paper.png"),
        &["--recipe", "hvc", "--augment", "hvc-paper"],
    );
    for n in 0..4 {
        let (original, augmented) = pair(&paper, n);
        assert_eq!(original, pair(&plain, n).0, "pair {n}: same image shown");
        assert_ne!(original, augmented, "pair {n}");
    }
}

#[test]
fn bad_preview_settings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.png");
    let err = fails(mnist().args(["augment", "--count", "0", "--out"]).arg(&out));
    assert!(err.contains("--count"), "{err}");
    let err = fails(
        mnist()
            .args(["augment", "--rotate", "500", "--out"])
            .arg(&out),
    );
    assert!(
        err.contains("rotation") && err.contains("--rotate"),
        "{err}"
    );
    assert!(!out.exists());
}
