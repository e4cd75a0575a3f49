//! Interrupted training: kill -9 mid-epoch, then `--resume` must end with
//! exactly the weights of an uninterrupted run (same seed, same backend).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fails, mnist, ok};

const RUN: [&str; 8] = [
    "--epochs",
    "3",
    "--batch-size",
    "100",
    "--train-limit",
    "3000",
    "--test-limit",
    "200",
];

fn train(out: &Path) -> std::process::Command {
    let mut cmd = mnist();
    cmd.arg("train").args(RUN).arg("--out").arg(out);
    cmd
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    ok(&mut train(&straight));

    let interrupted = dir.path().join("interrupted");
    let mut child = train(&interrupted)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = interrupted.join("checkpoints/epoch-0001/state.json");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !first.is_file() {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(
        !interrupted.join("model.safetensors").exists(),
        "killed before the end"
    );

    ok(mnist().arg("train").arg("--resume").arg(&interrupted));
    let a = std::fs::read(straight.join("model.safetensors")).unwrap();
    let b = std::fs::read(interrupted.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );

    // Nothing half-written is left among the checkpoints.
    for entry in std::fs::read_dir(interrupted.join("checkpoints")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(name.starts_with("epoch-"), "stray {name}");
    }
}

#[test]
fn a_time_limit_stops_after_a_whole_epoch_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    ok(&mut train(&straight));

    let limited = dir.path().join("limited");
    let out = ok(train(&limited).args(["--time-limit", "0.0001"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Stopping after epoch 1 of 3"), "{stdout}");
    assert!(stdout.contains("mnist train --resume"), "{stdout}");
    // The stopped run is reported and saved like a finished one.
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(limited.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["epochs"], 1, "{metrics}");
    assert_eq!(metrics["history"].as_array().unwrap().len(), 1);
    assert!(limited.join("model.safetensors").is_file());

    ok(mnist().arg("train").arg("--resume").arg(&limited));
    let a = std::fs::read(straight.join("model.safetensors")).unwrap();
    let b = std::fs::read(limited.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed run's weights differ from the straight run's"
    );

    let stderr = fails(train(&dir.path().join("bad")).args(["--time-limit", "-1"]));
    assert!(stderr.contains("--time-limit"), "{stderr}");
}

#[test]
fn resuming_a_finished_run_or_an_empty_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(mnist().arg("train").arg("--resume").arg(dir.path()));
    assert!(stderr.contains("no complete checkpoint"), "{stderr}");
    let stderr = fails(
        mnist()
            .arg("train")
            .arg("--resume")
            .arg(dir.path().join("absent")),
    );
    assert!(stderr.contains("absent"), "{stderr}");
}

/// Two runs with seed 0 on `backend` must give identical weights.
fn assert_reproducible(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        ok(mnist()
            .args([
                "train",
                "--backend",
                backend,
                "--epochs",
                "1",
                "--batch-size",
                "100",
            ])
            .args(["--train-limit", "300", "--test-limit", "100", "--out"])
            .arg(&out));
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    assert!(
        run("a") == run("b"),
        "{backend}: two runs with seed 0 gave different weights"
    );
}

#[test]
fn same_seed_same_weights_on_flex() {
    assert_reproducible("flex");
}

#[test]
fn same_seed_same_weights_on_ndarray() {
    assert_reproducible("ndarray");
}
