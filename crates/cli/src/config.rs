//! Command-line arguments and the training configuration they make.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use mnist_data::Dataset;
use mnist_model::{BackendKind, DeviceSpec};
use serde::{Deserialize, Serialize};

/// Where to compute.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// ndarray, flex or tch [default: the fastest CPU backend compiled in].
    #[arg(long)]
    pub backend: Option<String>,
    /// cpu, cuda:N or mps (cuda and mps need --backend tch).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A backend, resolved and checked.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The backend.
    pub backend: BackendKind,
    /// The device on it.
    pub spec: DeviceSpec,
    /// The Burn device (without autodiff).
    pub device: Device,
}

impl RuntimeArgs {
    /// Resolve the flags into a device, or say why not.
    pub fn resolve(&self) -> Result<Runtime> {
        let backend = match &self.backend {
            Some(name) => BackendKind::from_name(name)?,
            None => BackendKind::default_cpu()
                .context("this binary has no backend compiled in; rebuild with --features flex")?,
        };
        let spec: DeviceSpec = self.device.parse()?;
        let device = backend.device(spec)?;
        Ok(Runtime {
            backend,
            spec,
            device,
        })
    }
}

/// Which data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// mnist or fashion-mnist.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Directory holding the dataset's .gz files [default: $MNIST_DATA_DIR, else data/<dataset>/].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images (quick runs and tests).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images (quick runs and tests).
    #[arg(long)]
    pub test_limit: Option<usize>,
}

impl DataArgs {
    /// The dataset named by `--dataset`.
    pub fn dataset(&self) -> Result<Dataset> {
        Dataset::from_name(&self.dataset).with_context(|| {
            format!(
                "unknown dataset `{}`; use mnist or fashion-mnist",
                self.dataset
            )
        })
    }

    /// The directory to read, by flag, environment, then workspace default.
    pub fn dir(&self, dataset: Dataset) -> PathBuf {
        let env = std::env::var_os("MNIST_DATA_DIR").map(PathBuf::from);
        mnist_data::resolve_data_dir(
            self.data_dir.as_deref(),
            env.as_deref(),
            &workspace_root(),
            dataset,
        )
    }
}

/// The workspace root when run from a checkout, else the current directory.
pub fn workspace_root() -> PathBuf {
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match built_in.canonicalize() {
        Ok(root) if root.join("Cargo.toml").is_file() => root,
        _ => PathBuf::from("."),
    }
}

/// The notebook's hyper-parameters, each with the notebook's value as default.
#[derive(Args, Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HyperParams {
    /// Passes over the training set.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Images per training step.
    #[arg(long, default_value_t = 600)]
    pub batch_size: usize,
    /// Initial learning rate of RAdam.
    #[arg(long, default_value_t = 0.0015, allow_negative_numbers = true)]
    pub lr: f64,
    /// Decoupled weight decay of RAdam.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub weight_decay: f64,
    /// Learning-rate decay per epoch (ExponentialLR).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The notebook's values (the same as the flags' defaults).
impl Default for HyperParams {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 600,
            lr: 0.0015,
            weight_decay: 1e-4,
            gamma: 0.9,
            seed: 0,
        }
    }
}

impl HyperParams {
    /// Reject values that cannot train, before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "--weight-decay must be zero or positive, got {}",
                self.weight_decay
            );
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            bail!("--gamma must be in (0, 1], got {}", self.gamma);
        }
        Ok(())
    }

    /// One line for reports, in the notebook's vocabulary.
    pub fn describe(&self) -> String {
        format!(
            "num_epochs={}, batch_size={}, learning_rate={}, optimizer=RAdam(betas=(0.9, 0.999), eps=1e-08, \
             weight_decay={}, decoupled_weight_decay=True), scheduler=ExponentialLR(gamma={}, per epoch), seed={}",
            self.epochs, self.batch_size, self.lr, self.weight_decay, self.gamma, self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            hyper: HyperParams,
        }
        assert_eq!(Flags::parse_from(["mnist"]).hyper, HyperParams::default());
    }

    #[test]
    fn the_notebooks_values_are_valid() {
        HyperParams::default().validate().unwrap();
    }

    /// Spoils one field of the notebook's values.
    type Spoil = fn(&mut HyperParams);

    #[test]
    fn bad_values_are_named() {
        let cases: [(Spoil, &str); 7] = [
            (|h| h.epochs = 0, "--epochs"),
            (|h| h.batch_size = 0, "--batch-size"),
            (|h| h.lr = -1.0, "--lr"),
            (|h| h.lr = f64::NAN, "--lr"),
            (|h| h.gamma = 1.5, "--gamma"),
            (|h| h.gamma = 0.0, "--gamma"),
            (|h| h.weight_decay = f64::INFINITY, "--weight-decay"),
        ];
        for (break_it, flag) in cases {
            let mut h = HyperParams::default();
            break_it(&mut h);
            let err = h.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }
}
