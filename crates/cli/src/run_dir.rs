//! Run directories: created up front, checked writable before any work,
//! and never reused over an earlier run's files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Create the run directory: `out`, or `runs/<timestamp>/`.
pub fn create(out: Option<&Path>) -> Result<PathBuf> {
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => {
            PathBuf::from("runs").join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string())
        }
    };
    check_new(&dir)?;
    fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the run directory {}", dir.display()))?;
    check_writable(&dir)?;
    tracing::info!(dir = %dir.display(), "run directory created");
    Ok(dir)
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

/// Refuse a directory that already holds a run: nothing a user has is overwritten.
pub fn check_new(dir: &Path) -> Result<()> {
    if dir.join("model.safetensors").exists() || dir.join("checkpoints").exists() {
        bail!(
            "{} already holds a run; continue it with --resume {} or choose another --out",
            dir.display(),
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
        assert!(err.contains("--resume"), "{err}");
    }

    #[test]
    fn creates_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        let run = create(Some(&dir.path().join("a/b"))).unwrap();
        assert!(run.is_dir());
    }
}
