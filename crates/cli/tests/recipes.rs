//! Beyond the notebook, end to end on small subsets of real MNIST: other
//! models and recipes, the weights' moving average, resuming them,
//! ensembles and predicting users' own pictures.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{data_dir, fails, mnist, ok};
use mnist_model::torch_io::read_safetensors;
use serde_json::Value;

/// A seed-plus run on 600 images with every training feature switched on.
fn seed_plus(out: &Path, epochs: &str) -> std::process::Command {
    let mut cmd = mnist();
    cmd.args(["train", "--recipe", "seed-plus", "--epochs", epochs])
        .args([
            "--batch-size",
            "50",
            "--train-limit",
            "600",
            "--test-limit",
            "200",
        ])
        .args(["--ema", "0.9", "--erase", "0.5", "--squeeze", "0.1"])
        .arg("--out")
        .arg(out);
    cmd
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the two-epoch run `whole` in `split`, its second epoch's
/// checkpoint and final weights removed (as if interrupted after epoch 1),
/// resumes to exactly `whole`'s weights.
fn assert_resumes_to_the_same_weights(whole: &Path, split: &Path, what: &str) {
    copy_dir(whole, split);
    std::fs::remove_dir_all(split.join("checkpoints/epoch-0002")).unwrap();
    std::fs::remove_file(split.join("model.safetensors")).unwrap();
    ok(mnist().arg("train").arg("--resume").arg(split));
    let tensors = |run: &Path| read_safetensors(&run.join("model.safetensors")).unwrap();
    assert!(
        tensors(whole) == tensors(split),
        "resumed {what} weights differ"
    );
}

fn metrics(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn seed_plus_trains_averages_and_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let out = ok(&mut seed_plus(&whole, "2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("SeedPlusCNN(") && stdout.contains("(bn1): BatchNorm2d(16"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Model seed-plus (171254 parameters)"),
        "{stdout}"
    );
    assert!(stdout.contains("(weight average)"), "{stdout}");
    assert!(
        stdout.contains("optimizer=AdamW") && stdout.contains("OneCycleLR"),
        "{stdout}"
    );
    assert!(
        whole
            .join("checkpoints/epoch-0002/ema.safetensors")
            .is_file()
    );
    assert_eq!(metrics(&whole)["model"], "seed-plus");

    // Interrupted after its first epoch (the second epoch's checkpoint and
    // the final weights gone), then resumed: the same weights, so
    // augmentation, dropout, batch norm, the one-cycle schedule and the
    // average all continue exactly where they stopped.
    assert_resumes_to_the_same_weights(&whole, &dir.path().join("split"), "seed-plus");

    // The weights file says which model it holds: eval needs no --model.
    let eval = ok(mnist()
        .args(["eval", "--test-limit", "200", "--json", "--weights"])
        .arg(whole.join("model.safetensors"))
        .arg("--out")
        .arg(dir.path().join("eval")));
    let report: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(report["test_accuracy"], metrics(&whole)["test_accuracy"]);
}

#[test]
fn hvc_loss_falls_in_a_short_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("hvc");
    ok(mnist()
        .args([
            "train",
            "--recipe",
            "hvc",
            "--epochs",
            "3",
            "--batch-size",
            "20",
        ])
        .args([
            "--train-limit",
            "200",
            "--test-limit",
            "100",
            "--lr",
            "0.003",
        ])
        .args(["--backend", "flex", "--out"])
        .arg(&run));
    let history = metrics(&run)["history"].as_array().unwrap().clone();
    let loss = |i: usize| history[i]["train_loss"].as_f64().unwrap();
    assert!(loss(2) < loss(0), "HVC loss did not fall: {history:?}");
    assert_eq!(metrics(&run)["parameters"], 1_514_268);
}

#[test]
fn the_kaggle_cnn_trains_and_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let train = |run: &Path| {
        let mut cmd = mnist();
        cmd.args(["train", "--recipe", "kaggle", "--epochs", "2"])
            .args(["--batch-size", "50", "--train-limit", "400"])
            .args(["--test-limit", "100", "--backend", "flex", "--out"])
            .arg(run);
        cmd
    };
    let whole = dir.path().join("whole");
    let out = ok(&mut train(&whole));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("KaggleCNN(")
            && stdout.contains("(6): Sequential(Conv2d(64, 128, kernel_size=(4, 4)"),
        "{stdout}"
    );
    assert_eq!(metrics(&whole)["parameters"], 325_994);
    assert_eq!(metrics(&whole)["recipe"], "kaggle");
    let history = metrics(&whole)["history"].as_array().unwrap().clone();
    let loss = |i: usize| history[i]["train_loss"].as_f64().unwrap();
    assert!(loss(1) < loss(0), "loss did not fall: {history:?}");

    // Its strided convolutions, batch norm + ReLU and dropout continue
    // exactly where an interrupted run stopped.
    assert_resumes_to_the_same_weights(&whole, &dir.path().join("split"), "kaggle");
}

/// Train a small seed CNN on 3,000 images; deterministic for a seed.
fn small_model(dir: &Path, seed: &str) -> PathBuf {
    let run = dir.join(format!("seed-{seed}"));
    ok(mnist()
        .args([
            "train",
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--lr",
            "0.003",
        ])
        .args([
            "--train-limit",
            "3000",
            "--test-limit",
            "500",
            "--seed",
            seed,
            "--out",
        ])
        .arg(&run));
    run.join("model.safetensors")
}

#[test]
fn ensembles_and_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (small_model(dir.path(), "1"), small_model(dir.path(), "2"));

    let eval = ok(mnist()
        .args(["eval", "--test-limit", "500", "--json", "--weights"])
        .arg(&a)
        .arg(&b)
        .arg("--out")
        .arg(dir.path().join("ensemble")));
    let report: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(report["model"], "ensemble of 2 (seed)");
    let members = report["member_accuracies"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let best_member = members
        .iter()
        .map(|m| m.as_f64().unwrap())
        .fold(0.0, f64::max);
    let ensemble = report["test_accuracy"].as_f64().unwrap();
    // Averaging two similar models lands near the better one, never far below.
    assert!(
        ensemble >= best_member - 0.02,
        "{ensemble} vs {best_member}"
    );

    // Test digits 0, 1, 2 (a 7, a 2 and a 1) drawn as a user would: dark
    // ink on white paper, five times larger, off-centre.
    let dataset = mnist_data::Dataset::Mnist;
    let dir_of_files =
        mnist_data::resolve_data_dir(Some(&data_dir()), None, Path::new("."), dataset);
    let test = mnist_data::load(dataset, &dir_of_files).unwrap().test;
    let mut pictures = Vec::new();
    for i in 0..3 {
        let digit = test.image(i);
        let picture = image::GrayImage::from_fn(200, 160, |x, y| {
            let (dx, dy) = (x as i64 - 20, y as i64 - 10);
            let inside = (0..140).contains(&dx) && (0..140).contains(&dy);
            let level = if inside {
                digit[(dy / 5 * 28 + dx / 5) as usize]
            } else {
                0
            };
            image::Luma([255 - level])
        });
        let path = dir.path().join(format!("digit-{i}.png"));
        picture.save(&path).unwrap();
        pictures.push(path);
    }
    let out = ok(mnist()
        .args(["predict", "--json", "--weights"])
        .arg(&a)
        .arg("--weights")
        .arg(&b)
        .args(&pictures));
    let predictions: Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions = predictions.as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for (i, prediction) in predictions.iter().enumerate() {
        let top = prediction["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let p: Vec<f64> = top
            .iter()
            .map(|g| g["probability"].as_f64().unwrap())
            .collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-5);
        assert_eq!(
            top[0]["class"].as_u64().unwrap(),
            u64::from(test.labels[i]),
            "picture {i}: {prediction}"
        );
    }

    // Plain output: one line per picture with three guesses.
    let out = ok(mnist()
        .args(["predict", "--weights"])
        .arg(&a)
        .arg(&pictures[0]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("digit-0.png: 7 "), "{text}");

    // A file that is no picture is named in the error.
    let bogus = dir.path().join("notes.png");
    std::fs::write(&bogus, "hello").unwrap();
    let stderr = fails(mnist().args(["predict", "--weights"]).arg(&a).arg(&bogus));
    assert!(stderr.contains("notes.png"), "{stderr}");
}

#[test]
fn bad_training_choices_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--model", "resnet"], "seed, seed-plus, hvc"),
        (&["--optimizer", "sgd"], "--optimizer"),
        (&["--schedule", "step"], "--schedule"),
        (&["--rotate", "400"], "rotation"),
        (&["--label-smoothing", "1.5"], "--label-smoothing"),
    ];
    for (flags, message) in cases {
        let out = dir.path().join("never");
        let stderr = fails(mnist().arg("train").args(flags).arg("--out").arg(&out));
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} created {}", out.display());
    }
}
