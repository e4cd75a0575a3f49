//! The real MNIST files, through the data crate: sizes, first label, pixel statistics.

#![allow(clippy::unwrap_used)]

mod common;

use mnist_data::{Dataset, load};

#[test]
fn real_mnist_has_the_published_shape_and_statistics() {
    let data = load(
        Dataset::Mnist,
        &mnist_data::resolve_data_dir(
            Some(&common::data_dir()),
            None,
            std::path::Path::new("."),
            Dataset::Mnist,
        ),
    )
    .unwrap();
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    assert_eq!((data.train.rows, data.train.cols), (28, 28));
    assert_eq!(data.train.labels[0], 5, "the first training digit is a 5");
    let n = data.train.pixels.len() as f64;
    let mean = data
        .train
        .pixels
        .iter()
        .map(|&p| f64::from(p) / 255.0)
        .sum::<f64>()
        / n;
    let var = data
        .train
        .pixels
        .iter()
        .map(|&p| (f64::from(p) / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!((mean - 0.1307).abs() < 5e-5, "mean {mean}");
    assert!((var.sqrt() - 0.3081).abs() < 5e-5, "std {}", var.sqrt());
}
