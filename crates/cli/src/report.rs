//! What a finished training or evaluation leaves behind: the notebook's
//! printout and the run directory's files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mnist_data::atomic::write_atomically;
use mnist_metrics::plot::{confusion_matrix_png, curves_png};
use mnist_metrics::{ConfusionMatrix, EpochPoint};
use serde::Serialize;

use mnist_data::Dataset;
use mnist_model::{BackendKind, DeviceSpec};

use crate::config::{HyperParams, Recipe};
use crate::output::outln;

/// What was run: everything in `metrics.json` except the scores.
#[derive(Debug, Serialize)]
pub struct RunInfo {
    /// Training images per epoch (0 for a bare evaluation).
    pub train_images: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Seconds spent in training steps (not counting evaluation).
    pub train_seconds: f64,
    /// Seconds spent evaluating the final model on the test set.
    pub eval_seconds: f64,
    /// Backend.
    pub backend: BackendKind,
    /// Device.
    pub device: DeviceSpec,
    /// Dataset.
    pub dataset: Dataset,
    /// Model name, or the members of an ensemble.
    pub model: String,
    /// Trainable parameters.
    pub parameters: usize,
    /// The `--recipe` a training run started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    /// When the run finished (local time, RFC 3339).
    pub finished: String,
    /// The split the scores are of.
    pub scored_on: ScoredOn,
    /// Whether the scores average test-time views (`--tta`).
    pub tta: bool,
    /// The validation split a training run held out (`--val`) and what it
    /// chose; null when the run kept none.
    pub validation: Option<ValidationReport>,
    /// Hyper-parameters (absent for a bare evaluation).
    pub hyper_parameters: Option<HyperParams>,
    /// Weights evaluated (for `mnist eval`; several for an ensemble).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<PathBuf>,
    /// Each ensemble member's own accuracy, in `weights` order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_accuracies: Vec<f64>,
    /// Per-epoch training loss and test accuracy.
    pub history: Vec<EpochPoint>,
    /// Class names, index = label.
    pub class_names: Vec<String>,
}

/// The split a report scores. `test_accuracy`, `correct`, `test_images` and
/// the confusion matrix are of this split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoredOn {
    /// The test set (every training run, and `mnist eval`).
    Test,
    /// A validation split held out of the training images (`mnist eval --val`).
    Validation,
}

impl ScoredOn {
    fn images(self) -> &'static str {
        match self {
            ScoredOn::Test => "test images",
            ScoredOn::Validation => "validation images (held out of the training set)",
        }
    }
}

/// What a training run's validation split chose.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    /// Training images held out.
    pub images: usize,
    /// The `--val-seed` that chose them.
    pub seed: u64,
    /// Validation accuracy after the last epoch.
    pub final_accuracy: f64,
    /// The epoch with the best validation accuracy (the first, on ties).
    pub best_epoch: usize,
    /// Its validation accuracy.
    pub best_accuracy: f64,
    /// Its test accuracy (reported, never used to choose).
    pub test_accuracy_at_best: f64,
    /// Its weights, in the run directory.
    pub best_weights: String,
}

/// Everything `metrics.json` holds.
#[derive(Debug, Serialize)]
pub struct Metrics {
    /// Test accuracy in [0, 1].
    pub test_accuracy: f64,
    /// Test images classified correctly.
    pub correct: u64,
    /// Test images.
    pub test_images: u64,
    /// What was run.
    #[serde(flatten)]
    pub run: RunInfo,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Per-class precision, recall, F1 and support.
    pub per_class: Vec<mnist_metrics::ClassScores>,
    /// Unweighted mean F1.
    pub macro_f1: f64,
    /// mnist-rs version.
    pub version: &'static str,
}

impl Metrics {
    /// The scores of `matrix` for the run `run`.
    pub fn new(matrix: &ConfusionMatrix, run: RunInfo) -> Self {
        Self {
            test_accuracy: matrix.accuracy(),
            correct: matrix.correct(),
            test_images: matrix.total(),
            run,
            confusion_matrix: matrix.counts().to_vec(),
            per_class: matrix.per_class(),
            macro_f1: matrix.macro_f1(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// Now, as `metrics.json` records when a run finished.
pub fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Print the evaluation as the notebook did, plus the matrix and per-class scores.
pub fn print_report(summary: &str, metrics: &Metrics, matrix: &ConfusionMatrix, names: &[&str]) {
    outln!("\nModel architecture:\n{summary}");
    outln!("Total parameters: {}", metrics.run.parameters);
    outln!(
        "\nAccuracy of the network on the {} {}{}: {:.2}% ({}/{})",
        metrics.test_images,
        metrics.run.scored_on.images(),
        if metrics.run.tta {
            ", with test-time augmentation"
        } else {
            ""
        },
        100.0 * metrics.test_accuracy,
        metrics.correct,
        metrics.test_images
    );
    if let Some(h) = &metrics.run.hyper_parameters {
        outln!("Hyper-parameters: {}", h.describe());
    }
    outln!("Backend: {} ({})", metrics.run.backend, metrics.run.device);
    outln!("\nConfusion matrix:\n{}", matrix.render_text(names));
    outln!("{}", matrix.render_report(names));
}

/// Write `metrics.json`, `confusion_matrix.png` and (when there is a
/// history) `curves.png` into `dir`, each atomically. Returns the paths.
pub fn write_files(
    dir: &Path,
    metrics: &Metrics,
    matrix: &ConfusionMatrix,
    names: &[&str],
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        write_atomically(&path, bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let json = serde_json::to_vec_pretty(metrics).context("cannot serialise metrics")?;
    write("metrics.json", &json)?;
    let title = format!(
        "{} test set, {} model — accuracy {:.2}%",
        metrics.run.dataset,
        metrics.run.model,
        100.0 * metrics.test_accuracy
    );
    write(
        "confusion_matrix.png",
        &confusion_matrix_png(matrix, names, &title)?,
    )?;
    if !metrics.run.history.is_empty() {
        let title = format!(
            "{} on {} ({})",
            metrics.run.model, metrics.run.dataset, metrics.run.backend
        );
        write("curves.png", &curves_png(&metrics.run.history, &title)?)?;
    }
    Ok(written)
}
