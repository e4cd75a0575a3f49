//! Helpers shared by the CLI's integration tests.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The real MNIST files: `MNIST_DATA_DIR`, else the shared copy beside the
/// checkout. Missing data fails the test (under CI too): never a skip.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("MNIST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist")
        });
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file()
            || dir.join("mnist/train-images-idx3-ubyte.gz").is_file(),
        "MNIST not found in {}; set MNIST_DATA_DIR (see README)",
        dir.display()
    );
    dir
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
