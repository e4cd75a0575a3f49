//! Per-epoch checkpoints: weights, optimizer state, epoch and RNG state.
//!
//! Each checkpoint is a directory `checkpoints/epoch-NNNN/` holding
//! `model.safetensors`, `optimizer.bpk` (Burn's burnpack of the optimizer
//! state), `state.json` and, when the run averages its weights,
//! `ema.safetensors`. It is assembled in a hidden temporary directory and
//! renamed into place, so a crash while saving leaves the previous
//! checkpoints as they were and never a half-written one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use mnist_data::Dataset;
use mnist_data::atomic::write_atomically;
use mnist_metrics::EpochPoint;
use mnist_model::torch_io::{load_weights, weights_bytes};
use mnist_model::{BackendKind, DeviceSpec, Network};
use serde::{Deserialize, Serialize};

use crate::config::{HyperParams, Recipe, Validation};

/// Everything but the tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// The run's hyper-parameters.
    pub hyper: HyperParams,
    /// Dataset.
    pub dataset: Dataset,
    /// Backend the run trains on.
    pub backend: BackendKind,
    /// Device the run trains on.
    pub device: DeviceSpec,
    /// Training subset size, if limited.
    pub train_limit: Option<usize>,
    /// Test subset size, if limited.
    pub test_limit: Option<usize>,
    /// Where the run read its data (absolute), so `--resume` reads there
    /// again; absent in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The validation split held out of the training images, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// The `--recipe` the run started from; absent in runs from before it
    /// was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    /// Per-epoch results so far.
    pub history: Vec<EpochPoint>,
    /// Seconds of training steps so far.
    pub train_seconds: f64,
    /// Updates folded into the weights' moving average so far.
    #[serde(default)]
    pub ema_updates: usize,
    // No RNG state is stored: initial weights come from `hyper.seed`, each
    // epoch's shuffle and augmentation from `(seed, epoch)` and dropout from
    // a per-epoch device seed, so `epochs_done` is the whole of it. (Files
    // from before carry an `rng` entry, which loading ignores.)
}

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.bpk";
const STATE: &str = "state.json";
const EMA: &str = "ema.safetensors";

fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Save a checkpoint after epoch `state.epochs_done`; returns its directory.
pub fn save(
    run_dir: &Path,
    model: &Network,
    optim: &ModuleOptimizer,
    ema: Option<&Network>,
    state: &TrainState,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!("epoch-{:04}", state.epochs_done);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let optimizer = optim
        .into_bytes()
        .context("cannot serialise the optimizer state")?;
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (MODEL, weights_bytes(model)),
        (OPTIMIZER, optimizer.to_vec()),
        (STATE, serde_json::to_vec_pretty(state)?),
    ];
    if let Some(ema) = ema {
        files.push((EMA, weights_bytes(ema)));
    }
    for (file, bytes) in files {
        let path = tmp.path().join(file);
        write_atomically(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)
            .with_context(|| format!("cannot replace {}", final_dir.display()))?;
    }
    fs::rename(tmp.keep(), &final_dir)
        .with_context(|| format!("cannot create {}", final_dir.display()))?;
    tracing::info!(epoch = state.epochs_done, dir = %final_dir.display(), "checkpoint written");
    Ok(final_dir)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    if !run_dir.is_dir() {
        bail!("{}: no such run directory", run_dir.display());
    }
    for (_, path) in newest_first(run_dir) {
        if let Some(state) = complete(&path) {
            return Ok(Some((path, state)));
        }
    }
    Ok(None)
}

/// Delete all but the newest `keep` complete checkpoints (`keep == 0`
/// keeps every one). Nothing newer than the newest complete checkpoint is
/// touched, and that one always stays: a resume starts from it.
pub fn prune(run_dir: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let complete_ones: Vec<PathBuf> = newest_first(run_dir)
        .into_iter()
        .filter(|(_, path)| complete(path).is_some())
        .map(|(_, path)| path)
        .collect();
    for old in complete_ones.iter().skip(keep) {
        fs::remove_dir_all(old)
            .with_context(|| format!("cannot delete the old checkpoint {}", old.display()))?;
        tracing::debug!(dir = %old.display(), "old checkpoint deleted");
    }
    Ok(())
}

/// The run's `epoch-NNNN` directories, newest first.
fn newest_first(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = fs::read_dir(checkpoints_dir(run_dir)) else {
        return Vec::new();
    };
    let mut candidates: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_prefix("epoch-")?.parse().ok()?;
            Some((epoch, e.path()))
        })
        .collect();
    candidates.sort_unstable_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
    candidates
}

/// The state of a checkpoint directory that holds everything a resume
/// reads, else `None`.
fn complete(path: &Path) -> Option<TrainState> {
    let state = fs::read(path.join(STATE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<TrainState>(&bytes).ok())?;
    (path.join(MODEL).is_file() && path.join(OPTIMIZER).is_file()).then_some(state)
}

/// Restore weights and optimizer state from a checkpoint directory.
pub fn restore(
    path: &Path,
    model: Network,
    optim: ModuleOptimizer,
) -> Result<(Network, ModuleOptimizer)> {
    let model = load_weights(model, &path.join(MODEL))?;
    let optim = optim.load(path.join(OPTIMIZER)).with_context(|| {
        format!(
            "{}: cannot read the optimizer state",
            path.join(OPTIMIZER).display()
        )
    })?;
    Ok((model, optim))
}

/// Restore the weights' moving average into `average` (a copy of the model).
pub fn restore_ema(path: &Path, average: Network) -> Result<Network> {
    let file = path.join(EMA);
    if !file.is_file() {
        bail!(
            "{}: the run averages its weights but this checkpoint has no {EMA}",
            path.display()
        );
    }
    Ok(load_weights(average, &file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epochs_done: usize) -> TrainState {
        TrainState {
            epochs_done,
            hyper: HyperParams::default(),
            dataset: Dataset::Mnist,
            backend: BackendKind::Flex,
            device: DeviceSpec::Cpu,
            train_limit: None,
            test_limit: None,
            data_dir: None,
            validation: None,
            recipe: Some(Recipe::Notebook),
            history: Vec::new(),
            train_seconds: 0.0,
            ema_updates: 0,
        }
    }

    /// A `state.json` as the string-typed releases wrote it (with the
    /// `rng` entry they kept): it still loads, to the same run.
    #[test]
    fn a_state_file_from_before_the_typed_settings_still_loads() {
        let old = include_str!("../tests/fixtures/state-before-enums.json");
        let state: TrainState = serde_json::from_str(old).unwrap();
        assert_eq!(state.epochs_done, 3);
        assert_eq!(state.dataset, Dataset::FashionMnist);
        assert_eq!(state.backend, BackendKind::NdArray);
        assert_eq!(state.device, DeviceSpec::Cuda(1));
        assert_eq!(state.hyper.model, mnist_model::ModelKind::SeedPlus);
        assert_eq!(state.hyper.optimizer, mnist_optim::OptimizerKind::AdamW);
        assert_eq!(state.hyper.schedule, mnist_optim::ScheduleKind::OneCycle);
        assert_eq!(state.hyper.augment.rotate, 12.0);
        assert_eq!(state.history.len(), 3);
        assert_eq!(state.recipe, None, "old runs record no recipe");
        assert_eq!(state.validation, None, "nor a validation split");
        // Written back, it reads the same, without the unused `rng`.
        let again = serde_json::to_string(&state).unwrap();
        assert!(!again.contains("rng"), "{again}");
        assert_eq!(serde_json::from_str::<TrainState>(&again).unwrap(), state);
    }

    fn fake_checkpoint(dir: &Path, name: &str, files: &[&str], epochs_done: usize) {
        let path = dir.join("checkpoints").join(name);
        fs::create_dir_all(&path).unwrap();
        for file in files {
            let bytes = if *file == STATE {
                serde_json::to_vec(&state(epochs_done)).unwrap()
            } else {
                b"x".to_vec()
            };
            fs::write(path.join(file), bytes).unwrap();
        }
    }

    /// A crash while saving leaves a hidden temporary directory, or (were a
    /// rename interrupted some other way) an incomplete one: both are passed
    /// over for the newest complete checkpoint.
    #[test]
    fn latest_skips_incomplete_checkpoints() {
        let run = tempfile::tempdir().unwrap();
        fake_checkpoint(run.path(), "epoch-0001", &[MODEL, OPTIMIZER, STATE], 1);
        fake_checkpoint(run.path(), "epoch-0002", &[MODEL, OPTIMIZER, STATE], 2);
        fake_checkpoint(run.path(), ".epoch-0003-Ab12", &[MODEL], 3);
        fake_checkpoint(run.path(), "epoch-0003", &[MODEL, OPTIMIZER], 3);
        let (path, found) = latest(run.path()).unwrap().unwrap();
        assert_eq!(path.file_name().unwrap(), "epoch-0002");
        assert_eq!(found, state(2));
    }

    #[test]
    fn pruning_keeps_the_newest_complete_checkpoints_only() {
        let run = tempfile::tempdir().unwrap();
        for epoch in 1..=5 {
            let name = format!("epoch-{epoch:04}");
            fake_checkpoint(run.path(), &name, &[MODEL, OPTIMIZER, STATE], epoch);
        }
        // An incomplete newer one neither counts nor goes.
        fake_checkpoint(run.path(), "epoch-0006", &[MODEL], 6);
        prune(run.path(), 2).unwrap();
        let mut left: Vec<String> = fs::read_dir(run.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["epoch-0004", "epoch-0005", "epoch-0006"]);
        assert_eq!(latest(run.path()).unwrap().unwrap().1, state(5));
        // 0 keeps everything.
        prune(run.path(), 0).unwrap();
        assert_eq!(
            fs::read_dir(run.path().join("checkpoints"))
                .unwrap()
                .count(),
            3
        );
        // 1 still keeps the one a resume needs.
        prune(run.path(), 1).unwrap();
        assert!(run.path().join("checkpoints/epoch-0005").is_dir());
        assert!(!run.path().join("checkpoints/epoch-0004").exists());
    }

    #[test]
    fn a_corrupt_state_file_is_passed_over() {
        let run = tempfile::tempdir().unwrap();
        fake_checkpoint(run.path(), "epoch-0001", &[MODEL, OPTIMIZER, STATE], 1);
        fake_checkpoint(run.path(), "epoch-0002", &[MODEL, OPTIMIZER], 2);
        fs::write(
            run.path().join("checkpoints/epoch-0002").join(STATE),
            b"{ truncated",
        )
        .unwrap();
        let (path, _) = latest(run.path()).unwrap().unwrap();
        assert_eq!(path.file_name().unwrap(), "epoch-0001");
    }
}
