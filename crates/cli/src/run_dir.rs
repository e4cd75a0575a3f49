//! Run directories: claimed atomically, checked writable before any work,
//! and never reused over an earlier run's files.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::checkpoint;

/// How many suffixed names (`-2`, `-3`, ...) a default run directory tries
/// when runs start in the same second.
const SAME_SECOND_TRIES: usize = 1000;

/// Create the run directory: `out`, or a new `runs/<timestamp>/`.
///
/// A default directory is claimed with one `mkdir`, which fails if the name
/// exists, so two runs started in the same second never share one: the
/// second takes `<timestamp>-2`, and so on.
pub fn create(out: Option<&Path>) -> Result<PathBuf> {
    let dir = match out {
        Some(dir) => {
            check_new(dir)?;
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the run directory {}", dir.display()))?;
            dir.to_path_buf()
        }
        None => claim_new(&Path::new("runs").join(timestamp()))?,
    };
    check_writable(&dir)?;
    tracing::info!(dir = %dir.display(), "run directory created");
    Ok(dir)
}

/// The local time to the second, as default run directories are named.
fn timestamp() -> String {
    chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()
}

/// Create `base`, or the first free `base-N`, with a `mkdir` that fails
/// when the name is taken: whoever creates it owns it.
pub fn claim_new(base: &Path) -> Result<PathBuf> {
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    for n in 1..=SAME_SECOND_TRIES {
        let dir = match n {
            1 => base.to_path_buf(),
            n => PathBuf::from(format!("{}-{n}", base.display())),
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the run directory {}", dir.display()));
            }
        }
    }
    bail!(
        "{} and {SAME_SECOND_TRIES} numbered variants already exist; pass --out",
        base.display()
    )
}

/// Check, without creating anything, that `dir` could be created and
/// written: its nearest existing ancestor must be a writable directory.
pub fn check_creatable(dir: &Path) -> Result<()> {
    check_new(dir)?;
    let existing = dir
        .ancestors()
        .find(|a| a.as_os_str().is_empty() || a.exists())
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        bail!(
            "cannot create the run directory {}: {} is not a directory",
            dir.display(),
            existing.display()
        );
    }
    check_writable(existing)
        .with_context(|| format!("cannot create the run directory {}", dir.display()))
}

/// Refuse a directory that already holds a run: nothing a user has is
/// overwritten. The advice depends on what is there, so that following it
/// always leads somewhere: a run with a checkpoint can be resumed; a
/// finished run whose checkpoints are gone can only be left alone.
pub fn check_new(dir: &Path) -> Result<()> {
    let resumable = dir.is_dir() && checkpoint::latest(dir)?.is_some();
    if resumable {
        bail!(
            "{} already holds a run; continue it with `mnist train --resume {}`, or choose another --out",
            dir.display(),
            dir.display()
        );
    }
    if dir.join("model.safetensors").exists() {
        bail!(
            "{} already holds a finished run (its model.safetensors) and no checkpoint to resume \
             from; choose another --out, or move that run away first",
            dir.display()
        );
    }
    Ok(())
}

/// Fail early, with the directory's name, if nothing can be written there.
pub fn check_writable(dir: &Path) -> Result<()> {
    tempfile::Builder::new()
        .prefix(".write-test-")
        .tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("cannot write into {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_reuse_a_run() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("model.safetensors"), b"x").unwrap();
        let err = create(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("choose another --out"), "{err}");
        assert!(!err.contains("--resume"), "no checkpoint, no resume: {err}");
    }

    #[test]
    fn creates_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        let run = create(Some(&dir.path().join("a/b"))).unwrap();
        assert!(run.is_dir());
    }

    #[test]
    fn a_taken_name_gets_the_next_free_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("runs/20260101-120000");
        let first = claim_new(&base).unwrap();
        let second = claim_new(&base).unwrap();
        fs::create_dir(dir.path().join("runs/20260101-120000-3")).unwrap();
        let fourth = claim_new(&base).unwrap();
        assert_eq!(first, base);
        assert_eq!(second, dir.path().join("runs/20260101-120000-2"));
        assert_eq!(fourth, dir.path().join("runs/20260101-120000-4"));
    }

    #[test]
    fn an_empty_or_unfinished_directory_may_be_used() {
        let dir = tempfile::tempdir().unwrap();
        // A run killed before its first checkpoint leaves at most hidden
        // temporary entries under checkpoints/.
        fs::create_dir_all(dir.path().join("checkpoints/.epoch-0001-x")).unwrap();
        check_new(dir.path()).unwrap();
    }
}
