//! Downloads against a small HTTP server on 127.0.0.1 that serves good,
//! corrupt and truncated files and server errors.

#![allow(clippy::unwrap_used)]
#![cfg(feature = "download")]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use mnist_data::Dataset;
use mnist_data::fetch::{FetchError, Outcome, Quiet, download_dataset, download_file};
use sha2::{Digest, Sha256};

/// The real MNIST files, as every test finds them (`MNIST_DATA_DIR`, else
/// `data/mnist/` in the workspace); missing data fails with the way to get it.
fn mnist_files() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    mnist_data::find_data_dir(mnist_data::Dataset::Mnist, &root).unwrap_or_else(|e| panic!("{e}"))
}

/// Serves, by path prefix: `/good/NAME` the real file, `/corrupt/NAME` the
/// file with one byte changed, `/truncated/NAME` half the file under a
/// Content-Length for all of it, anything else 500. Stops after `max` requests.
fn serve(files: PathBuf, max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            // Drain the headers.
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap_or(0) > 2 {
                header.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let body = std::fs::read(files.join(name)).ok();
            let _ = match (kind, body) {
                ("good", Some(body)) => respond(&mut stream, 200, body.len(), &body),
                ("corrupt", Some(mut body)) => {
                    body[100] ^= 0xff;
                    respond(&mut stream, 200, body.len(), &body)
                }
                ("truncated", Some(body)) => {
                    respond(&mut stream, 200, body.len(), &body[..body.len() / 2])
                }
                _ => respond(&mut stream, 500, 5, b"oops!"),
            };
        }
    });
    format!("http://{addr}")
}

fn respond(
    stream: &mut impl Write,
    status: u16,
    length: usize,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

const FILE: &str = "t10k-labels-idx1-ubyte.gz";

#[test]
fn a_good_file_is_verified_and_kept() {
    let files = mnist_files();
    let url = serve(files.clone(), 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(FILE);
    download_file(
        &format!("{url}/good/{FILE}"),
        &dest,
        &sha256(&files.join(FILE)),
        &Quiet,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(files.join(FILE)).unwrap()
    );
}

#[test]
fn corrupt_truncated_and_failing_downloads_leave_nothing() {
    let files = mnist_files();
    let expected = sha256(&files.join(FILE));
    let url = serve(files, 3);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(FILE);
    for (kind, what) in [
        ("corrupt", "SHA-256 mismatch"),
        ("truncated", ""),
        ("missing", "500"),
    ] {
        let err =
            download_file(&format!("{url}/{kind}/{FILE}"), &dest, &expected, &Quiet).unwrap_err();
        assert!(err.to_string().contains(what), "{kind}: {err}");
        assert!(
            matches!(err, FetchError::Checksum { .. } | FetchError::Http { .. }),
            "{kind}: {err:?}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{kind}: something was left behind"
        );
    }
}

#[test]
fn mirrors_are_tried_in_order_and_valid_files_skipped() {
    let files = mnist_files();
    let url = serve(files, 20);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![format!("{url}/corrupt/"), format!("{url}/good/")];
    let outcomes = download_dataset(Dataset::Mnist, dir.path(), &mirrors, &Quiet).unwrap();
    assert_eq!(outcomes.len(), 4);
    for (file, outcome) in &outcomes {
        assert_eq!(
            outcome,
            &Outcome::Written(format!("{url}/good/{}", file.name))
        );
    }
    // A second run finds every file valid and fetches nothing.
    let again = download_dataset(Dataset::Mnist, dir.path(), &[], &Quiet).unwrap();
    assert!(again.iter().all(|(_, o)| *o == Outcome::AlreadyValid));
}

#[test]
fn every_mirror_failing_names_each_attempt() {
    let files = mnist_files();
    let url = serve(files, 4);
    let dir = tempfile::tempdir().unwrap();
    let mirrors = vec![format!("{url}/missing/"), format!("{url}/truncated/")];
    let err = download_dataset(Dataset::Mnist, dir.path(), &mirrors, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("could not fetch train-images-idx3-ubyte.gz from any mirror"),
        "{err}"
    );
    assert!(
        err.contains("/missing/") && err.contains("/truncated/"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
