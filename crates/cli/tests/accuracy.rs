//! Learning on real data: one epoch on 6,000 MNIST images must reach 90%
//! test accuracy (on 2,000 test images, to keep the suite quick).

mod common;

use common::{mnist, ok};
use serde_json::Value;

#[test]
fn one_epoch_on_6000_images_reaches_90_percent() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(mnist()
        .args([
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--train-limit",
            "6000",
            "--test-limit",
            "2000",
        ])
        .arg("--out")
        .arg(&run));
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["test_accuracy"].as_f64().unwrap();
    eprintln!(
        "test accuracy after one epoch on 6,000 images: {:.2}%",
        100.0 * accuracy
    );
    assert!(accuracy >= 0.90, "test accuracy {accuracy}");
}
