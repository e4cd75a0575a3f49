//! The runs under `--runs`, as the page lists them. A run id is one plain
//! folder name inside the runs directory; anything else — `..`, a path, an
//! absolute path, a symlink that leads outside — is refused before the file
//! system is read. Runs being written (a live run, a half-written file) are
//! read as far as they can be, never trusted to be whole.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::{self, TrainState};
use crate::progress::{self, Progress, RunState};

/// A run whose `progress.json` has not changed for this long while it says
/// "training" was stopped without saying so (killed, or the machine slept).
const STALE: Duration = Duration::from_secs(120);

/// The longest run id accepted.
const MAX_ID: usize = 200;

/// Why a run id leads nowhere.
#[derive(Debug, thiserror::Error)]
pub enum RunIdProblem {
    /// Not a plain folder name.
    #[error(
        "{0:?} is not a run id: ids are folder names inside the runs directory (letters, digits, '-', '_', '.')"
    )]
    Invalid(String),
    /// No such run.
    #[error("no run {0:?} in the runs directory")]
    NotFound(String),
    /// A symlink (or similar) that resolves outside the runs directory.
    #[error("run {0:?} leads outside the runs directory and is not served")]
    Outside(String),
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Trained (or evaluated) and reported: `metrics.json` is there.
    Finished,
    /// Training now.
    Training,
    /// Stopped before its last epoch (`--time-limit`, Ctrl-C, a crash);
    /// `mnist train --resume` continues it.
    Stopped,
}

/// One row of the runs table.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The folder name.
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// The network, or an ensemble's members.
    pub model: Option<String>,
    /// The `--recipe` it started from (recorded since `mnist serve` exists).
    pub recipe: Option<String>,
    /// The dataset.
    pub dataset: Option<String>,
    /// Epochs done.
    pub epochs: Option<u64>,
    /// Epochs planned.
    pub epochs_planned: Option<u64>,
    /// Final test accuracy in [0, 1] (finished runs).
    pub test_accuracy: Option<f64>,
    /// Seconds of training.
    pub train_seconds: Option<f64>,
    /// When it finished, or was last written (RFC 3339).
    pub date: Option<String>,
    /// `mnist eval` (no training), rather than `mnist train`.
    pub evaluation: bool,
}

/// Everything about one run that the run's page shows.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// The row of the table.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// `metrics.json`, as written (absent while training).
    pub metrics: Option<Value>,
    /// Where a live run is.
    pub progress: Option<Progress>,
    /// The hyper-parameters (from `metrics.json`, else the last checkpoint).
    pub hyper_parameters: Option<Value>,
    /// What could not be read, for the page to say.
    pub problems: Vec<String>,
}

/// The runs directory.
pub struct RunsDir {
    root: PathBuf,
}

impl RunsDir {
    /// `root` need not exist yet: runs may appear while serving.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// The folder of run `id`, checked to be inside the runs directory.
    pub fn resolve(&self, id: &str) -> Result<PathBuf, RunIdProblem> {
        let plain = !id.is_empty()
            && id.len() <= MAX_ID
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(RunIdProblem::Invalid(id.to_string()));
        }
        let not_found = || RunIdProblem::NotFound(id.to_string());
        let root = self.root.canonicalize().map_err(|_| not_found())?;
        let dir = self.root.join(id).canonicalize().map_err(|_| not_found())?;
        if dir.parent() != Some(root.as_path()) {
            return Err(RunIdProblem::Outside(id.to_string()));
        }
        if !dir.is_dir() {
            return Err(not_found());
        }
        Ok(dir)
    }

    /// Every run, newest first. Folders that are not runs are left out.
    pub fn list(&self) -> Vec<RunSummary> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut runs: Vec<RunSummary> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let id = entry.file_name().into_string().ok()?;
                let dir = self.resolve(&id).ok()?;
                Some(read_run(&id, &dir).summary)
            })
            .collect();
        runs.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| b.id.cmp(&a.id)));
        runs
    }

    /// One run, in full.
    pub fn detail(&self, id: &str) -> Result<RunDetail, RunIdProblem> {
        Ok(read_run(id, &self.resolve(id)?))
    }

    /// The weights of the newest finished training run, if any.
    pub fn newest_finished_weights(&self) -> Option<PathBuf> {
        self.list()
            .into_iter()
            .filter(|run| run.status == Status::Finished && !run.evaluation)
            .filter_map(|run| self.resolve(&run.id).ok())
            .map(|dir| dir.join("model.safetensors"))
            .find(|weights| weights.is_file())
    }
}

/// Read what a run folder holds, tolerating missing and half-written files.
fn read_run(id: &str, dir: &Path) -> RunDetail {
    let mut problems = Vec::new();
    let metrics_path = dir.join("metrics.json");
    let metrics: Option<Value> = match std::fs::read(&metrics_path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                problems.push(format!("metrics.json cannot be read yet: {e}"));
                None
            }
        },
        Err(_) => None,
    };
    let progress = progress::read(dir);
    // The last checkpoint describes a run that has not finished.
    let state: Option<TrainState> = match metrics {
        Some(_) => None,
        None => checkpoint::latest(dir)
            .ok()
            .flatten()
            .map(|(_, state)| state),
    };
    let status = status(metrics.is_some(), progress.as_ref(), dir);
    let field = |name: &str| metrics.as_ref().and_then(|m| m.get(name));
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
    let hyper_parameters = field("hyper_parameters")
        .filter(|h| !h.is_null())
        .cloned()
        .or_else(|| {
            state
                .as_ref()
                .and_then(|s| serde_json::to_value(&s.hyper).ok())
        });
    let planned = hyper_parameters
        .as_ref()
        .and_then(|h| h.get("epochs"))
        .and_then(Value::as_u64)
        .or(progress.as_ref().map(|p| p.epochs as u64));
    let summary = RunSummary {
        id: id.to_string(),
        status,
        model: text(field("model")).or_else(|| state.as_ref().map(|s| s.hyper.model.to_string())),
        recipe: text(field("recipe")).or_else(|| {
            state
                .as_ref()
                .and_then(|s| s.recipe)
                .and_then(|r| serde_json::to_value(r).ok())
                .and_then(|v| v.as_str().map(str::to_string))
        }),
        dataset: text(field("dataset")).or_else(|| state.as_ref().map(|s| s.dataset.to_string())),
        epochs: field("epochs")
            .and_then(Value::as_u64)
            .or_else(|| state.as_ref().map(|s| s.epochs_done as u64))
            .or(progress.as_ref().map(|p| p.history.len() as u64)),
        epochs_planned: planned,
        test_accuracy: field("test_accuracy").and_then(Value::as_f64),
        train_seconds: field("train_seconds")
            .and_then(Value::as_f64)
            .or(state.as_ref().map(|s| s.train_seconds)),
        date: text(field("finished"))
            .or_else(|| progress.as_ref().map(|p| p.updated.clone()))
            .or_else(|| modified(&metrics_path).or_else(|| modified(dir))),
        evaluation: field("hyper_parameters").is_some_and(Value::is_null),
    };
    RunDetail {
        summary,
        metrics,
        progress,
        hyper_parameters,
        problems,
    }
}

fn status(has_metrics: bool, progress: Option<&Progress>, dir: &Path) -> Status {
    match progress.map(|p| p.state) {
        Some(RunState::Training) => {
            let age = std::fs::metadata(dir.join(progress::FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if age > STALE {
                Status::Stopped
            } else {
                Status::Training
            }
        }
        Some(RunState::Stopped) => Status::Stopped,
        Some(RunState::Finished) | None if has_metrics => Status::Finished,
        _ => Status::Stopped,
    }
}

/// A file's modification time as RFC 3339, local time.
fn modified(path: &Path) -> Option<String> {
    let time = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    let local: chrono::DateTime<chrono::Local> = time.into();
    Some(local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_with(ids: &[&str]) -> (tempfile::TempDir, RunsDir) {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("runs");
        for id in ids {
            std::fs::create_dir_all(root.join(id)).unwrap();
        }
        let runs = RunsDir::new(&root);
        (temp, runs)
    }

    #[test]
    fn plain_folder_names_resolve() {
        let (_temp, runs) = runs_with(&["20261130-120000", "seed_1.b"]);
        assert!(runs.resolve("20261130-120000").is_ok());
        assert!(runs.resolve("seed_1.b").is_ok());
        assert!(matches!(
            runs.resolve("missing"),
            Err(RunIdProblem::NotFound(_))
        ));
    }

    #[test]
    fn ids_that_would_leave_the_runs_directory_are_refused() {
        let (temp, runs) = runs_with(&["a"]);
        std::fs::write(temp.path().join("secret.json"), b"{}").unwrap();
        for id in [
            "..",
            ".",
            "../secret.json",
            "a/../..",
            "/etc",
            "/etc/passwd",
            "a/b",
            "..\\x",
            "%2e%2e",
            "",
            ".hidden",
            "a\0b",
        ] {
            assert!(
                matches!(runs.resolve(id), Err(RunIdProblem::Invalid(_))),
                "{id:?}"
            );
        }
        assert!(runs.resolve(&"x".repeat(MAX_ID + 1)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_that_lead_outside_are_refused_and_inside_ones_followed() {
        let (temp, runs) = runs_with(&["real"]);
        let outside = temp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("metrics.json"), b"{}").unwrap();
        let root = temp.path().join("runs");
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        assert!(matches!(
            runs.resolve("escape"),
            Err(RunIdProblem::Outside(_))
        ));
        assert!(runs.resolve("alias").is_ok());
        let listed: Vec<String> = runs.list().into_iter().map(|r| r.id).collect();
        assert!(!listed.contains(&"escape".to_string()), "{listed:?}");
    }

    #[test]
    fn half_written_and_live_runs_are_read_as_far_as_they_go() {
        let (temp, runs) = runs_with(&["done", "broken", "live", "empty"]);
        let root = temp.path().join("runs");
        std::fs::write(
            root.join("done/metrics.json"),
            br#"{"test_accuracy": 0.99, "epochs": 5, "model": "seed", "dataset": "mnist",
                "finished": "2026-11-30T10:00:00+00:00", "hyper_parameters": {"epochs": 5}}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("broken/metrics.json"),
            br#"{"test_accuracy": 0.9"#,
        )
        .unwrap();
        let live = Progress {
            state: RunState::Training,
            epoch: 2,
            epochs: 5,
            step: 30,
            steps: 100,
            loss: Some(0.2),
            history: Vec::new(),
            updated: "2026-11-30T11:00:00+00:00".into(),
        };
        std::fs::write(
            root.join("live/progress.json"),
            serde_json::to_vec(&live).unwrap(),
        )
        .unwrap();

        let listed = runs.list();
        let by_id = |id: &str| listed.iter().find(|r| r.id == id).unwrap().clone();
        assert_eq!(by_id("done").status, Status::Finished);
        assert_eq!(by_id("done").test_accuracy, Some(0.99));
        assert_eq!(by_id("done").epochs_planned, Some(5));
        assert_eq!(by_id("live").status, Status::Training);
        assert_eq!(by_id("live").epochs_planned, Some(5));
        assert_eq!(by_id("broken").status, Status::Stopped);
        assert_eq!(by_id("empty").status, Status::Stopped);
        let broken = runs.detail("broken").unwrap();
        assert!(
            broken.problems[0].contains("metrics.json"),
            "{:?}",
            broken.problems
        );
        assert_eq!(runs.newest_finished_weights(), None, "no run has weights");
        std::fs::write(root.join("done/model.safetensors"), b"").unwrap();
        assert_eq!(
            runs.newest_finished_weights(),
            Some(root.join("done/model.safetensors").canonicalize().unwrap())
        );
    }
}
