//! Helpers shared by the CLI's integration tests.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

#[cfg(feature = "serve")]
pub mod server;
#[cfg(feature = "serve")]
pub mod webdriver;

use std::path::PathBuf;
use std::process::{Command, Output};

/// The real MNIST files: `MNIST_DATA_DIR`, else `data/mnist/` in the
/// workspace (where `cargo xtask download` puts them). Missing data fails
/// the test with the way to get it: never a skip.
pub fn data_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    mnist_data::find_data_dir(mnist_data::Dataset::Mnist, &root).unwrap_or_else(|e| panic!("{e}"))
}

/// The `mnist` binary with the data directory set.
pub fn mnist() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist"));
    cmd.env("MNIST_DATA_DIR", data_dir());
    cmd
}

/// Run and insist on success, showing the output otherwise.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the mnist binary runs");
    assert!(
        out.status.success(),
        "{:?} failed:\nstdout:\n{}\nstderr:\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run and insist on failure; return stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the mnist binary runs");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Send Ctrl-C (SIGINT) to the process `pid`.
#[cfg(unix)]
pub fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT {pid} failed");
}
