//! `cargo xtask download --from`, end to end: a full import, and a write
//! that fails part-way (a file-size limit standing in for a full disk).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// The real MNIST files, as every test finds them (`MNIST_DATA_DIR`, else
/// `data/mnist/` in the workspace); missing data fails with the way to get it.
fn mnist_files() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    mnist_data::find_data_dir(mnist_data::Dataset::Mnist, &root).unwrap_or_else(|e| panic!("{e}"))
}

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env_remove("MNIST_DATA_DIR");
    cmd
}

/// `cargo xtask download --from <shared MNIST> --data-dir <dir>`.
fn import_into(dir: &std::path::Path) -> std::process::Output {
    xtask()
        .args(["download", "--from"])
        .arg(mnist_files())
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn import_fills_the_directory_and_a_second_run_skips() {
    let dir = tempfile::tempdir().unwrap();
    let out = import_into(dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(mnist_files().join(name)).unwrap()
        );
    }
    let again = import_into(dir.path());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("already present, checksum ok")
            .count(),
        4
    );
}

#[cfg(unix)]
#[test]
fn a_failing_write_is_reported_and_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    // A valid file already there must survive.
    let labels = "t10k-labels-idx1-ubyte.gz";
    std::fs::copy(mnist_files().join(labels), dir.path().join(labels)).unwrap();
    // With SIGXFSZ ignored, writing past `ulimit -f` (KiB blocks in sh on
    // Linux) fails with EFBIG, as a full disk fails with ENOSPC.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 256; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["download", "--from"])
        .arg(mnist_files())
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("MNIST_DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the import must fail");
    assert!(
        stderr.contains("train-images-idx3-ubyte.gz") && stderr.contains("too large"),
        "{stderr}"
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![labels.to_string()],
        "only the file that was already there"
    );
    assert_eq!(
        std::fs::read(dir.path().join(labels)).unwrap(),
        std::fs::read(mnist_files().join(labels)).unwrap()
    );
}
