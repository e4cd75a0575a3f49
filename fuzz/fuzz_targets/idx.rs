//! Arbitrary bytes as an IDX image file and as an IDX label file: the
//! parser must never panic, never allocate beyond the input, and accept
//! only self-consistent files.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_data::idx::{parse_images, parse_labels};

fuzz_target!(|data: &[u8]| {
    if let Ok(images) = parse_images(data.to_vec()) {
        assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        assert_eq!(images.pixels.len() + 16, data.len());
    }
    if let Ok(labels) = parse_labels(data.to_vec(), 10) {
        assert!(labels.iter().all(|&label| label < 10));
        assert_eq!(labels.len() + 8, data.len());
    }
});
