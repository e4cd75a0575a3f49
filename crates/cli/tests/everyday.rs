//! Everyday use without surprises (docs/reliability.md, "Everyday use"):
//! runs started in the same second, closed pipes, printed commands that
//! must work when pasted, advice that must lead somewhere, wrong answers
//! that must be errors, degenerate sizes, checkpoint pruning and Ctrl-C.
//! Each test runs the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{data_dir, fails, mnist, ok};

/// A short training run: `epochs` epochs of 4 steps.
fn tiny_train(epochs: u32) -> Command {
    let mut cmd = mnist();
    cmd.args([
        "train",
        "--epochs",
        &epochs.to_string(),
        "--batch-size",
        "100",
    ])
    .args(["--train-limit", "400", "--test-limit", "100"]);
    cmd
}

/// The MNIST directory holding the four files themselves.
fn mnist_files() -> PathBuf {
    mnist_data::resolve_data_dir(
        Some(&data_dir()),
        None,
        Path::new("."),
        mnist_data::Dataset::Mnist,
    )
}

/// A trained model's weights file (recording MNIST as its dataset).
fn trained_weights(dir: &Path) -> PathBuf {
    let run = dir.join("weights-run");
    ok(tiny_train(1).arg("--out").arg(&run));
    run.join("model.safetensors")
}

/// A dark "7" on white paper, as a user would photograph it.
fn seven_png(path: &Path) {
    image::GrayImage::from_fn(120, 120, |x, y| {
        let bar = (30..90).contains(&x) && (25..35).contains(&y);
        let diagonal_x = 90.0 - (y as f32 - 25.0) * 0.45;
        let diagonal = (25..100).contains(&y) && (x as f32 - diagonal_x).abs() < 5.0;
        image::Luma([if bar || diagonal { 20 } else { 235 }])
    })
    .save(path)
    .unwrap();
}

/// The `--resume` command a run printed, as words.
fn printed_resume_command(output: &str) -> Vec<String> {
    let at = output
        .find("mnist train --resume ")
        .unwrap_or_else(|| panic!("no resume command in:\n{output}"));
    output[at..]
        .lines()
        .next()
        .unwrap()
        .trim_end_matches('`')
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Run a printed `mnist ...` command line with the test binary.
fn run_printed(words: &[String]) -> Command {
    assert_eq!(words[0], "mnist");
    let mut cmd = mnist();
    cmd.args(&words[1..]);
    cmd
}

fn utc_stamp(seconds: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{seconds}"), "+%Y%m%d-%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn runs_started_in_the_same_second_get_directories_of_their_own() {
    let cwd = tempfile::tempdir().unwrap();
    // Every default name of the coming minute is taken already (as by a run
    // started in that second), so both runs below collide with one.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in now..now + 60 {
        std::fs::create_dir_all(cwd.path().join("runs").join(utc_stamp(s))).unwrap();
    }
    let start = || {
        tiny_train(1)
            .current_dir(cwd.path())
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let finished: Vec<PathBuf> = std::fs::read_dir(cwd.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.safetensors").is_file())
        .collect();
    assert_eq!(finished.len(), 2, "two runs, two directories: {finished:?}");
    for run in &finished {
        let name = run.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.contains('-') && name.rsplit('-').next().unwrap().parse::<u32>().unwrap() >= 2,
            "{name}"
        );
        assert!(run.join("metrics.json").is_file());
    }
}

#[test]
fn a_closed_pipe_does_not_stop_training_or_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // `mnist train ... | head -2`
    let mut child = tiny_train(3)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stdout was closed"), "{stderr}");
    assert!(
        run.join("model.safetensors").is_file(),
        "the run finished and saved"
    );
    assert!(run.join("checkpoints/epoch-0003").is_dir());

    // `mnist predict ... | head -0`: stdout is gone before the answer.
    let picture = dir.path().join("seven.png");
    seven_png(&picture);
    let mut child = mnist()
        .args(["predict", "--weights"])
        .arg(run.join("model.safetensors"))
        .arg(&picture)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_printed_resume_command_works_for_a_run_with_its_own_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // The data somewhere only --data-dir names.
    let elsewhere = dir.path().join("my-data");
    std::fs::create_dir(&elsewhere).unwrap();
    for file in mnist_data::Dataset::Mnist.files() {
        std::os::unix::fs::symlink(mnist_files().join(file.name), elsewhere.join(file.name))
            .unwrap();
    }
    let nowhere = dir.path().join("no-data-here");
    let run = dir.path().join("run");
    let out = ok(tiny_train(3)
        .env("MNIST_DATA_DIR", &nowhere)
        .arg("--data-dir")
        .arg(&elsewhere)
        .args(["--time-limit", "0.0001", "--out"])
        .arg(&run));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let command = printed_resume_command(&stdout);
    let out = ok(run_printed(&command).env("MNIST_DATA_DIR", &nowhere));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Epoch [3/3]"), "{stdout}");
    assert!(
        stdout.contains(&elsewhere.display().to_string()),
        "read the recorded data: {stdout}"
    );
}

#[test]
fn refusals_give_advice_that_leads_somewhere() {
    let dir = tempfile::tempdir().unwrap();

    // A finished run whose checkpoints were removed.
    let finished = dir.path().join("finished");
    ok(tiny_train(1).arg("--out").arg(&finished));
    std::fs::remove_dir_all(finished.join("checkpoints")).unwrap();
    let resume = fails(mnist().args(["train", "--resume"]).arg(&finished));
    assert!(resume.contains("another --out"), "{resume}");
    let again = fails(tiny_train(1).arg("--out").arg(&finished));
    assert!(again.contains("choose another --out"), "{again}");
    assert!(
        !again.contains("--resume"),
        "no loop back to --resume: {again}"
    );
    ok(tiny_train(1).arg("--out").arg(dir.path().join("another")));

    // A run killed before its first checkpoint: resume says to start it
    // again, and the command it gives works.
    let killed = dir.path().join("killed");
    std::fs::create_dir_all(killed.join("checkpoints/.epoch-0001-x1y2")).unwrap();
    let resume = fails(mnist().args(["train", "--resume"]).arg(&killed));
    assert!(
        resume.contains(&format!("mnist train --out {}", killed.display())),
        "{resume}"
    );
    ok(tiny_train(1).arg("--out").arg(&killed));
    assert!(killed.join("model.safetensors").is_file());

    // A finished run with its checkpoints: extending it as advised works.
    let done = dir.path().join("done");
    ok(tiny_train(1).arg("--out").arg(&done));
    let resume = fails(mnist().args(["train", "--resume"]).arg(&done));
    let command = printed_resume_command(&resume);
    ok(&mut run_printed(&command));
}

#[test]
fn wrong_answers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let weights = trained_weights(dir.path());
    let picture = dir.path().join("seven.png");
    seven_png(&picture);

    // Weights with a NaN: refused by eval and predict, naming file and tensor.
    let mut bytes = std::fs::read(&weights).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, bytes).unwrap();
    for command in [&["eval", "--weights"][..], &["predict", "--weights"][..]] {
        let mut cmd = mnist();
        cmd.args(command).arg(&broken);
        if command[0] == "predict" {
            cmd.arg(&picture);
        }
        let stderr = fails(&mut cmd);
        assert!(
            stderr.contains("broken.safetensors") && stderr.contains("NaN or infinite"),
            "{stderr}"
        );
        assert!(stderr.contains("tensor `"), "{stderr}");
    }

    // MNIST weights asked to name Fashion-MNIST classes.
    let stderr = fails(
        mnist()
            .args(["predict", "--dataset", "fashion-mnist", "--weights"])
            .arg(&weights)
            .arg(&picture),
    );
    assert!(stderr.contains("was trained on mnist"), "{stderr}");
    let stderr = fails(
        mnist()
            .args(["eval", "--dataset", "fashion-mnist", "--weights"])
            .arg(&weights),
    );
    assert!(stderr.contains("was trained on mnist"), "{stderr}");

    // One unreadable picture among good ones.
    let bad = dir.path().join("not-a-picture.png");
    std::fs::write(&bad, b"nope").unwrap();
    let out = mnist()
        .args(["predict", "--weights"])
        .arg(&weights)
        .arg(&picture)
        .arg(&bad)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(
        stdout.contains("seven.png: "),
        "the good picture is answered: {stdout}"
    );
    assert!(stderr.contains("not-a-picture.png"), "{stderr}");
    assert!(
        stderr.contains("1 of 2 pictures could not be read"),
        "{stderr}"
    );
}

#[test]
fn degenerate_sizes_are_refused_or_said() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, expected) in [
        (&["--train-limit", "0"][..], "--train-limit 0"),
        (&["--test-limit", "0"][..], "--test-limit 0"),
        (
            &["--time-limit", "0"][..],
            "--time-limit must be a positive",
        ),
    ] {
        let out = dir.path().join("never");
        let stderr = fails(mnist().arg("train").args(flags).arg("--out").arg(&out));
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?}");
    }
    let stderr = fails(mnist().args(["train", "--seed", "-1"]));
    assert!(stderr.contains("`-1` is not a seed"), "{stderr}");

    // A batch larger than the training set: one step an epoch, said so.
    let out = ok(mnist()
        .args([
            "train",
            "--epochs",
            "1",
            "--train-limit",
            "300",
            "--test-limit",
            "100",
        ])
        .args(["--batch-size", "1000", "--out"])
        .arg(dir.path().join("big-batch")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--batch-size 1000 is larger than the 300 training images"),
        "{stderr}"
    );

    // eval reads the test files only.
    let weights = trained_weights(dir.path());
    let test_only = dir.path().join("test-only");
    std::fs::create_dir(&test_only).unwrap();
    for file in &mnist_data::Dataset::Mnist.files()[2..] {
        std::os::unix::fs::symlink(mnist_files().join(file.name), test_only.join(file.name))
            .unwrap();
    }
    let out = ok(mnist()
        .args(["eval", "--test-limit", "100", "--data-dir"])
        .arg(&test_only)
        .arg("--weights")
        .arg(&weights)
        .arg("--out")
        .arg(dir.path().join("eval")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("on the 100 test images"));
    let stderr = fails(
        mnist()
            .args(["eval", "--test-limit", "0", "--weights"])
            .arg(&weights),
    );
    assert!(stderr.contains("--test-limit 0"), "{stderr}");
}

#[test]
fn old_checkpoints_are_pruned_but_the_run_still_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(tiny_train(4)
        .args(["--keep-checkpoints", "2", "--out"])
        .arg(&run));
    let mut left: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["epoch-0003", "epoch-0004"]);
    ok(mnist()
        .args(["train", "--epochs", "5", "--resume"])
        .arg(&run));
    assert!(run.join("checkpoints/epoch-0005").is_dir());
    // The default keeps three.
    let default = dir.path().join("default");
    ok(tiny_train(5).arg("--out").arg(&default));
    assert_eq!(
        std::fs::read_dir(default.join("checkpoints"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn ctrl_c_says_where_the_run_stopped_and_how_to_continue() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let child = mnist()
        .args([
            "train",
            "--epochs",
            "200",
            "--batch-size",
            "100",
            "--train-limit",
            "2000",
        ])
        .args(["--test-limit", "100", "--out"])
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run.join("checkpoints/epoch-0001").is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    common::interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Interrupted during epoch"), "{stderr}");
    let command = printed_resume_command(&stderr);

    // Flags beside --resume that it ignores are named.
    let mut resume = run_printed(&command);
    resume.args(["--epochs", "10", "--lr", "0.5", "--batch-size", "7"]);
    let out = ok(&mut resume);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ignoring --lr, --batch-size")
            || stderr.contains("ignoring --batch-size, --lr"),
        "{stderr}"
    );
    assert!(run.join("model.safetensors").is_file());
}
