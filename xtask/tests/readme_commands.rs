//! The README's two commands are what CI runs: the test command in
//! `.ci/run` is the README's, word for word, and CI runs `cargo xtask train`
//! in a fresh clone before it.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn workspace_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The commands of the README's first shell block ("Quick start"), without
/// their comments.
fn quick_start_commands() -> Vec<String> {
    let readme = workspace_file("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a sh block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

/// `cargo xtask` builds itself in release (sharing the test suite's build)
/// and lets cargo show the first build's progress.
#[test]
fn the_xtask_alias_builds_in_release_and_is_not_quiet() {
    let config = workspace_file(".cargo/config.toml");
    let alias = config
        .lines()
        .find(|l| l.starts_with("xtask ="))
        .expect("the xtask alias");
    assert!(alias.contains("--release"), "{alias}");
    assert!(!alias.contains("--quiet"), "{alias}");
}

#[test]
fn ci_runs_the_readmes_two_commands() {
    let commands = quick_start_commands();
    assert_eq!(commands.len(), 2, "run and test: {commands:?}");
    assert_eq!(commands[0], "cargo xtask train");
    let ci = workspace_file(".ci/run");
    let test_line = ci
        .lines()
        .find(|l| l.starts_with("TEST_COMMAND=("))
        .expect(".ci/run names its test command");
    let ci_test = test_line
        .trim_start_matches("TEST_COMMAND=(")
        .trim_end_matches(')');
    assert_eq!(ci_test, commands[1], "the README's test command is CI's");
    assert!(
        ci.lines().any(|l| l.trim() == commands[0]),
        ".ci/run runs `{}`",
        commands[0]
    );
    assert!(
        ci.contains("\"${TEST_COMMAND[@]}\""),
        ".ci/run runs the test command"
    );
}
