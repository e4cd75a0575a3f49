//! `progress.json` in a run directory: where a training run is now (epoch,
//! step, loss, the epochs so far), rewritten atomically as it trains, so
//! that `mnist serve` can show a run live. Losing it loses nothing: the
//! checkpoints and `metrics.json` are the run's record.

use std::path::Path;
use std::time::{Duration, Instant};

use mnist_data::atomic::write_atomically;
use mnist_metrics::EpochPoint;
use serde::{Deserialize, Serialize};

/// The file's name in a run directory.
pub const FILE: &str = "progress.json";

/// How often, at most, a step rewrites the file.
const EVERY: Duration = Duration::from_secs(1);

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Steps are running.
    Training,
    /// Every epoch is done and the report is written.
    Finished,
    /// Stopped early: `--time-limit`, or the loss diverged.
    Stopped,
}

/// The contents of `progress.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Where the run is.
    pub state: RunState,
    /// The epoch running (1-based), or the last one done.
    pub epoch: usize,
    /// Epochs the run will train.
    pub epochs: usize,
    /// Steps done in this epoch.
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// The last step's loss.
    pub loss: Option<f64>,
    /// Every finished epoch's loss and accuracy.
    pub history: Vec<EpochPoint>,
    /// When this was written (local time, RFC 3339).
    pub updated: String,
}

/// Rewrites `progress.json` during training, at most once a second.
pub struct ProgressFile<'a> {
    dir: &'a Path,
    last: Option<Instant>,
}

impl<'a> ProgressFile<'a> {
    /// For the run in `dir`.
    pub fn new(dir: &'a Path) -> Self {
        Self { dir, last: None }
    }

    /// Record `progress` if a second has passed since the last write.
    pub fn step(&mut self, progress: impl FnOnce() -> Progress) {
        if self.last.is_none_or(|last| last.elapsed() >= EVERY) {
            self.write(&progress());
        }
    }

    /// Record `progress` now (an epoch's end, the run's end).
    pub fn write(&mut self, progress: &Progress) {
        self.last = Some(Instant::now());
        let path = self.dir.join(FILE);
        let written = serde_json::to_vec_pretty(progress)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomically(&path, &json));
        // Training goes on without it: only the live view would miss it.
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the progress file");
        }
    }
}

/// Read a run's `progress.json`; `None` when it is missing or unreadable
/// (a run from before the file existed, or one being written elsewhere).
pub fn read(dir: &Path) -> Option<Progress> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(step: usize) -> Progress {
        Progress {
            state: RunState::Training,
            epoch: 1,
            epochs: 5,
            step,
            steps: 100,
            loss: Some(0.5),
            history: Vec::new(),
            updated: "2026-11-30T12:00:00+00:00".into(),
        }
    }

    #[test]
    fn steps_write_at_most_once_a_second_and_epochs_always() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ProgressFile::new(dir.path());
        file.step(|| progress(1));
        assert_eq!(read(dir.path()).unwrap().step, 1);
        file.step(|| progress(2));
        assert_eq!(read(dir.path()).unwrap().step, 1, "too soon to rewrite");
        file.write(&progress(3));
        assert_eq!(read(dir.path()).unwrap(), progress(3));
    }

    #[test]
    fn a_half_written_or_missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_none());
        std::fs::write(dir.path().join(FILE), b"{\"state\": \"trai").unwrap();
        assert!(read(dir.path()).is_none());
    }
}
