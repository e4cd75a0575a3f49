//! `--val N`: training images held out (chosen by `--val-seed`, the same
//! for every `--seed`), scored after every epoch, choosing the best epoch
//! and saving its weights; `mnist eval --val N` scores weights on the same
//! split. The test set is only reported.

#![allow(clippy::unwrap_used)]

mod common;

use common::{mnist, ok};
use serde_json::Value;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_held_out_split_is_scored_each_epoch_and_chooses_the_best_epoch() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("run");
    let train = |extra: &[&str]| {
        let printed = ok(mnist()
            .args([
                "train",
                "--train-limit",
                "1500",
                "--test-limit",
                "300",
                "--batch-size",
                "100",
            ])
            .args([
                "--val",
                "400",
                "--val-seed",
                "3",
                "--keep-checkpoints",
                "0",
                "--out",
            ])
            .arg(&out)
            .args(extra));
        String::from_utf8_lossy(&printed.stdout).into_owned()
    };
    let printed = train(&["--epochs", "2"]);
    assert!(
        printed.contains("1500 training, 400 held out for validation (seed 3)"),
        "{printed}"
    );
    // Resumed, the run holds out the same images and goes on scoring them.
    let resumed = ok(mnist()
        .args(["train", "--epochs", "3", "--resume"])
        .arg(&out));
    let resumed = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.contains("400 held out for validation (seed 3)"),
        "{resumed}"
    );

    let metrics = json(&out.join("metrics.json"));
    assert_eq!(metrics["train_images"], 1500);
    let history = metrics["history"].as_array().unwrap();
    let scores: Vec<f64> = history
        .iter()
        .map(|p| p["val_accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3);
    let best = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let best_epoch = scores.iter().position(|&a| a == best).unwrap() + 1;
    let v = &metrics["validation"];
    assert_eq!(
        (v["images"].as_u64(), v["seed"].as_u64()),
        (Some(400), Some(3))
    );
    assert_eq!(v["best_epoch"].as_u64(), Some(best_epoch as u64));
    assert_eq!(v["best_accuracy"].as_f64(), Some(best));
    assert_eq!(v["final_accuracy"].as_f64(), Some(scores[2]));
    assert_eq!(
        v["test_accuracy_at_best"],
        history[best_epoch - 1]["test_accuracy"]
    );

    // The saved best weights score the split as training recorded.
    let eval = ok(mnist()
        .args([
            "eval",
            "--json",
            "--val",
            "400",
            "--val-seed",
            "3",
            "--weights",
        ])
        .arg(out.join(v["best_weights"].as_str().unwrap()))
        .arg("--out")
        .arg(temp.path().join("eval")));
    let scored: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(scored["scored_on"], "validation");
    assert_eq!(scored["test_images"], 400);
    assert_eq!(scored["test_accuracy"].as_f64(), Some(best));
    assert_eq!(scored["tta"], false);

    // The same split with test-time augmentation, as eval and predict do it.
    let eval = ok(mnist()
        .args([
            "eval",
            "--json",
            "--tta",
            "--val",
            "400",
            "--val-seed",
            "3",
            "--weights",
        ])
        .arg(out.join("best-val.safetensors"))
        .arg("--out")
        .arg(temp.path().join("eval-tta")));
    let with_tta: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(
        (&with_tta["tta"], &with_tta["test_images"]),
        (&Value::Bool(true), &Value::from(400))
    );
    let picture = temp.path().join("digit.png");
    let test = mnist_data::load_test(mnist_data::Dataset::Mnist, &common::data_dir()).unwrap();
    image::GrayImage::from_raw(28, 28, test.image(0).to_vec())
        .unwrap()
        .save(&picture)
        .unwrap();
    let answers: Vec<Value> = [&["--tta"][..], &[]]
        .iter()
        .map(|extra| {
            let printed = ok(mnist()
                .args(["predict", "--json", "--weights"])
                .arg(out.join("model.safetensors"))
                .args(*extra)
                .arg(&picture));
            serde_json::from_slice(&printed.stdout).unwrap()
        })
        .collect();
    let top = |answer: &Value| answer[0]["top"][0]["probability"].as_f64().unwrap();
    assert!(top(&answers[0]) > 0.0 && top(&answers[0]) <= 1.0);
    assert_ne!(
        top(&answers[0]),
        top(&answers[1]),
        "--tta averages other views"
    );
}

#[test]
fn a_split_that_leaves_nothing_to_train_on_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let err = common::fails(
        mnist()
            .args(["train", "--train-limit", "100", "--val", "60000", "--out"])
            .arg(temp.path().join("run")),
    );
    assert!(err.contains("--val 60000 holds out every one"), "{err}");
    let err = common::fails(mnist().args(["train", "--val", "0"]));
    assert!(err.contains("--val 0 leaves no images"), "{err}");
}
