//! Getting the canonical dataset files into a data directory: downloaded
//! from the mirrors (`download` feature) or imported from a local copy,
//! verified by SHA-256 either way.
//!
//! A file is written to a temporary name beside its destination and renamed
//! only once its checksum is right, so a failure (bad checksum, cut
//! connection, full disk) never leaves a partial file, and never touches a
//! valid file that was already there.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::atomic::AtomicFile;
use crate::dataset::{DataFile, Dataset};

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Reading or writing a local file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The bytes received or found are not the canonical file.
    #[error(
        "{source_name}: SHA-256 mismatch (expected {expected}, got {actual}); \
         the file is corrupt or not the canonical one, so it was not kept"
    )]
    Checksum {
        /// Where the bytes came from (URL or path).
        source_name: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// An HTTP request failed (status, connection, cut transfer).
    #[error("{url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Every mirror failed for one file.
    #[error("could not fetch {file} from any mirror:\n  {}", attempts.join("\n  "))]
    AllMirrorsFailed {
        /// The file name.
        file: String,
        /// One line per mirror tried.
        attempts: Vec<String>,
    },
    /// `--from` lacks a file.
    #[error("{}: not found; --from needs a directory holding the four .gz files", path.display())]
    SourceMissing {
        /// The missing file.
        path: PathBuf,
    },
}

/// Progress reporting, implemented by the caller (e.g. with a progress bar).
pub trait Progress {
    /// A transfer of `name` starts; `total` bytes if known.
    fn start(&self, name: &str, total: Option<u64>);
    /// `bytes` more bytes arrived.
    fn advance(&self, bytes: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was already there and valid.
    AlreadyValid,
    /// It was written, from this source (URL or path).
    Written(String),
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let io_err = |cause| FetchError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).map_err(io_err)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `path` exists and has the expected digest.
pub fn is_valid(path: &Path, sha256: &str) -> bool {
    path.is_file() && sha256_file(path).is_ok_and(|d| d == sha256)
}

/// Copy `reader` into `dest` through a temporary file, checking the digest;
/// `dest` appears only if everything succeeded.
pub fn write_verified(
    mut reader: impl Read,
    dest: &Path,
    expected_sha256: &str,
    source_name: &str,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let io_err = |path: &Path, cause| FetchError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut tmp = AtomicFile::create(dest).map_err(|e| io_err(dest, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Http {
                    url: source_name.to_string(),
                    message: format!("transfer broke off: {e}"),
                });
            }
        };
        hasher.update(&buf[..n]);
        tmp.file()
            .write_all(&buf[..n])
            .map_err(|e| io_err(dest, e))?;
        progress.advance(n as u64);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != expected_sha256 {
        // `tmp` is deleted when dropped.
        return Err(FetchError::Checksum {
            source_name: source_name.to_string(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    tmp.commit().map_err(|e| io_err(dest, e))
}

/// Copy the dataset's four files from `from` into `dir`, verified.
/// Files already in `dir` and valid are left alone.
pub fn import_dataset(
    dataset: Dataset,
    from: &Path,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<(DataFile, Outcome)>, FetchError> {
    dataset
        .files()
        .into_iter()
        .map(|file| {
            let dest = dir.join(file.name);
            if is_valid(&dest, file.sha256) {
                tracing::debug!(file = %dest.display(), "already present with the right checksum; skipped");
                return Ok((file, Outcome::AlreadyValid));
            }
            let src = from.join(file.name);
            tracing::info!(from = %src.display(), to = %dest.display(), "importing");
            let reader = File::open(&src).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => FetchError::SourceMissing { path: src.clone() },
                _ => FetchError::Io {
                    path: src.clone(),
                    cause: e,
                },
            })?;
            let total = reader.metadata().ok().map(|m| m.len());
            let name = src.display().to_string();
            progress.start(file.name, total);
            let result = write_verified(reader, &dest, file.sha256, &name, progress);
            progress.finish();
            result.map(|()| (file, Outcome::Written(name)))
        })
        .collect()
}

#[cfg(feature = "download")]
mod http {
    use std::path::Path;
    use std::time::Duration;

    use super::{FetchError, Outcome, Progress, is_valid, write_verified};
    use crate::dataset::{DataFile, Dataset};

    /// Download one file from `url` into `dest`, verified.
    pub fn download_file(
        url: &str,
        dest: &Path,
        expected_sha256: &str,
        progress: &dyn Progress,
    ) -> Result<(), FetchError> {
        let http_err = |message: String| FetchError::Http {
            url: url.to_string(),
            message,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        tracing::info!(url, to = %dest.display(), "downloading");
        let mut response = agent.get(url).call().map_err(|e| http_err(e.to_string()))?;
        let total = response.body().content_length();
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        progress.start(&name, total);
        let reader = response
            .body_mut()
            .with_config()
            .limit(crate::idx::MAX_PAYLOAD_BYTES)
            .reader();
        let result = write_verified(reader, dest, expected_sha256, url, progress);
        progress.finish();
        result
    }

    /// Download the dataset's four files into `dir`, trying `mirrors` in
    /// order for each. Files already there and valid are skipped.
    pub fn download_dataset(
        dataset: Dataset,
        dir: &Path,
        mirrors: &[String],
        progress: &dyn Progress,
    ) -> Result<Vec<(DataFile, Outcome)>, FetchError> {
        let mut outcomes = Vec::new();
        for file in dataset.files() {
            let dest = dir.join(file.name);
            if is_valid(&dest, file.sha256) {
                tracing::debug!(file = %dest.display(), "already present with the right checksum; skipped");
                outcomes.push((file, Outcome::AlreadyValid));
                continue;
            }
            let mut attempts = Vec::new();
            for mirror in mirrors {
                let url = format!("{}/{}", mirror.trim_end_matches('/'), file.name);
                match download_file(&url, &dest, file.sha256, progress) {
                    Ok(()) => {
                        tracing::info!(url, file = %dest.display(), "downloaded and verified");
                        outcomes.push((file, Outcome::Written(url)));
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(url, error = %e, "mirror failed; trying the next one");
                        attempts.push(e.to_string());
                    }
                }
            }
            if outcomes.last().map(|(f, _)| f.name) != Some(file.name) {
                return Err(FetchError::AllMirrorsFailed {
                    file: file.name.to_string(),
                    attempts,
                });
            }
        }
        Ok(outcomes)
    }
}

#[cfg(feature = "download")]
pub use http::{download_dataset, download_file};

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn verified_write_keeps_good_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.gz");
        write_verified(&b"hello"[..], &dest, &digest(b"hello"), "test", &Quiet).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
    }

    #[test]
    fn checksum_mismatch_leaves_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.gz");
        fs::write(&dest, b"previous").unwrap();
        let err = write_verified(&b"evil"[..], &dest, &digest(b"good"), "src", &Quiet).unwrap_err();
        assert!(err.to_string().contains("SHA-256 mismatch"), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"previous");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    /// A reader that fails half-way, like a connection cut mid-transfer.
    struct Cut(usize);
    impl Read for Cut {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn a_cut_transfer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f.gz");
        let err =
            write_verified(Cut(10), &dest, &digest(b""), "http://x/f.gz", &Quiet).unwrap_err();
        assert!(err.to_string().contains("broke off"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn import_refuses_a_corrupt_source_and_names_it() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for f in Dataset::Mnist.files() {
            fs::write(from.path().join(f.name), b"not mnist").unwrap();
        }
        let err = import_dataset(Dataset::Mnist, from.path(), to.path(), &Quiet).unwrap_err();
        assert!(
            err.to_string().contains("train-images-idx3-ubyte.gz"),
            "{err}"
        );
        assert_eq!(fs::read_dir(to.path()).unwrap().count(), 0);
    }

    #[test]
    fn import_from_a_directory_without_the_files_says_so() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let err = import_dataset(Dataset::Mnist, from.path(), to.path(), &Quiet).unwrap_err();
        assert!(matches!(err, FetchError::SourceMissing { .. }), "{err}");
    }
}
