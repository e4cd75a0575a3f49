//! A run's answer for every test image it was scored on, so that a click on
//! a confusion-matrix cell can show the images behind the count. The run's
//! weights are evaluated again on its test split, in the same batches as
//! training evaluated them, on first use, and kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor};
use mnist_data::{Batches, Dataset, Normalizer, Split};
use serde_json::Value;

use crate::checkpoint;
use crate::config::{load_models, workspace_root};
use crate::evaluate::mean_probabilities;

/// Images per evaluation batch: `mnist train` and `mnist eval`'s default.
const EVAL_BATCH: usize = 600;

/// Why a run's test answers cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeProblem {
    /// Still training, or an evaluation of weights that are gone.
    #[error(
        "this run has no weights to look at yet (it is still training, or was stopped before its report)"
    )]
    NoWeights,
    /// `metrics.json` lacks what is needed.
    #[error("metrics.json of this run does not say {0}")]
    Metrics(&'static str),
    /// The weights or the data could not be loaded.
    #[error("{0:#}")]
    Load(anyhow::Error),
}

/// Every test image's label and the run's answer.
pub struct RunOutcomes {
    /// The images, in test-set order.
    pub split: Split,
    /// The class each image was given.
    pub predicted: Vec<usize>,
    /// Class probabilities, 10 per image.
    pub probabilities: Vec<f32>,
    /// Classes per image.
    pub classes: usize,
}

impl RunOutcomes {
    /// Indices of the images of class `truth` classified as `predicted`.
    pub fn pair(&self, truth: usize, predicted: usize) -> Vec<usize> {
        (0..self.split.len())
            .filter(|&i| {
                usize::from(self.split.labels[i]) == truth && self.predicted[i] == predicted
            })
            .collect()
    }

    /// The class probabilities of image `index`.
    pub fn probabilities_of(&self, index: usize) -> &[f32] {
        &self.probabilities[index * self.classes..(index + 1) * self.classes]
    }
}

/// Outcomes per run folder, computed once.
pub struct OutcomeCache {
    device: Device,
    data_dir: Option<PathBuf>,
    runs: Mutex<HashMap<PathBuf, Arc<RunOutcomes>>>,
}

impl OutcomeCache {
    /// Evaluating on `device`; test images from `data_dir` when given.
    pub fn new(device: Device, data_dir: Option<PathBuf>) -> Self {
        Self {
            device,
            data_dir,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// The outcomes of the run in `dir`; blocking: the first call per run
    /// reads its `metrics.json` and evaluates its test split, later ones
    /// (every thumbnail of a cell) only look it up.
    pub fn for_run(&self, dir: &Path) -> Result<Arc<RunOutcomes>, OutcomeProblem> {
        if let Some(known) = self.lock().get(dir) {
            return Ok(known.clone());
        }
        // Missing or still being written: the run has no report yet.
        let metrics: Value = std::fs::read(dir.join("metrics.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(OutcomeProblem::NoWeights)?;
        let outcomes = Arc::new(self.evaluate(dir, &metrics)?);
        self.lock().insert(dir.to_path_buf(), outcomes.clone());
        Ok(outcomes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<RunOutcomes>>> {
        // A panic elsewhere cannot leave the map half-updated: take it anyway.
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn evaluate(&self, dir: &Path, metrics: &Value) -> Result<RunOutcomes, OutcomeProblem> {
        let weights = run_weights(dir, metrics)?;
        let dataset: Dataset = metrics
            .get("dataset")
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok())
            .ok_or(OutcomeProblem::Metrics("which dataset it used"))?;
        let count = metrics
            .get("test_images")
            .and_then(Value::as_u64)
            .ok_or(OutcomeProblem::Metrics("how many test images it scored"))?
            as usize;
        let (models, _) =
            load_models(&weights, Some(dataset), &self.device).map_err(OutcomeProblem::Load)?;
        let data_dir = self.data_dir_for(dir, dataset);
        let split = mnist_data::load_test(dataset, &data_dir)
            .map_err(|e| OutcomeProblem::Load(e.into()))?
            .head(count);
        let normalizer = Normalizer::new(dataset.mean(), dataset.std());
        let mut probabilities = Vec::with_capacity(split.len() * dataset.class_names().len());
        for batch in Batches::sequential(&split, EVAL_BATCH, normalizer) {
            let images = batch.to_device(&self.device).images;
            let p: Tensor<2> = mean_probabilities(&models, images);
            let values: Vec<f32> = p
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| OutcomeProblem::Load(anyhow::anyhow!("{e:?}")))?;
            probabilities.extend(values);
        }
        let classes = dataset.class_names().len();
        let predicted = probabilities
            .chunks_exact(classes)
            .map(super::argmax)
            .collect();
        Ok(RunOutcomes {
            split,
            predicted,
            probabilities,
            classes,
        })
    }

    /// `--data-dir`, else where the run read its data, else the usual places.
    fn data_dir_for(&self, run: &Path, dataset: Dataset) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let recorded = checkpoint::latest(run)
            .ok()
            .flatten()
            .and_then(|(_, state)| state.data_dir)
            .filter(|d| d.is_dir());
        if let Some(dir) = recorded {
            return dir;
        }
        let env = std::env::var_os("MNIST_DATA_DIR").map(PathBuf::from);
        mnist_data::resolve_data_dir(None, env.as_deref(), &workspace_root(), dataset)
    }
}

/// The run's own weights, or the files an evaluation run scored.
fn run_weights(dir: &Path, metrics: &Value) -> Result<Vec<PathBuf>, OutcomeProblem> {
    let own = dir.join("model.safetensors");
    if own.is_file() {
        return Ok(vec![own]);
    }
    let listed: Vec<PathBuf> = metrics
        .get("weights")
        .and_then(Value::as_array)
        .map(|files| {
            files
                .iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() || !listed.iter().all(|p| p.is_file()) {
        return Err(OutcomeProblem::NoWeights);
    }
    Ok(listed)
}

/// A test image as a PNG (28×28 grey).
pub fn image_png(split: &Split, index: usize) -> Option<Vec<u8>> {
    let (rows, cols) = (split.rows as u32, split.cols as u32);
    let pixels = split.image(index).to_vec();
    let picture = image::GrayImage::from_raw(cols, rows, pixels)?;
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(png)
}
