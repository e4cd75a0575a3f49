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
