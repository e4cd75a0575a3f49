//! Diagnostics through `tracing`: on stderr, at the level `RUST_LOG` or
//! `-v` / `-q` ask for, as text or JSON lines; stdout keeps the notebook's
//! lines alone.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{mnist, ok};
use serde_json::Value;

/// One short epoch (4 steps) into a fresh run directory.
fn one_epoch(dir: &tempfile::TempDir) -> Command {
    let mut cmd = mnist();
    cmd.args(["train", "--epochs", "1", "--batch-size", "100"])
        .args(["--train-limit", "400", "--test-limit", "100", "--out"])
        .arg(dir.path().join("run"))
        .env_remove("RUST_LOG");
    cmd
}

#[test]
fn json_diagnostics_parse_line_by_line_and_carry_the_phase_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(one_epoch(&dir).args(["-vv", "--log-format", "json"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |m: &str| events.iter().find(|e| e["message"] == m);
    let phases =
        message("epoch phase times").unwrap_or_else(|| panic!("no phase times in:\n{stderr}"));
    assert_eq!(phases["level"], "DEBUG");
    assert_eq!(phases["epoch"], 1);
    assert_eq!(phases["steps"], 4);
    for field in ["data_wait_s", "forward_s", "backward_s", "optimizer_s"] {
        let seconds = phases[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field}: {phases}"));
        assert!(seconds >= 0.0, "{field}: {seconds}");
    }
    assert!(phases["forward_s"].as_f64().unwrap() > 0.0, "{phases}");
    let loaded = message("loaded").unwrap_or_else(|| panic!("no data event in:\n{stderr}"));
    assert_eq!(loaded["dataset"], "mnist");
    let backend = message("backend").unwrap();
    assert_eq!(backend["chosen_by"], "default");
    assert!(message("checkpoint written").is_some(), "{stderr}");
    // stdout is the notebook's, untouched by diagnostics.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Epoch [1/1], Step [4/4], Loss: "),
        "{stdout}"
    );
    assert!(!stdout.contains("\"level\""), "{stdout}");
}

#[test]
fn rust_log_sets_the_level_and_quiet_silences_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(one_epoch(&dir).env("RUST_LOG", "debug"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("epoch phase times") && stderr.contains("forward_s="),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = ok(one_epoch(&dir).arg("-qq"));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "-qq prints nothing on stderr"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loss: "));

    // By default (warnings only) a healthy run has nothing to say.
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&mut one_epoch(&dir));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
