//! The models a user can pick with `--model`, behind one type.
//!
//! [`Network`] is an enum [`Module`], so training, checkpoints and
//! evaluation handle every model through the same code; its keys are the
//! chosen model's own (the variant is not part of the key). Saved weights
//! record which model they belong to, and files without that record
//! (PyTorch exports) are recognised by their keys.

use std::fmt;
use std::path::Path;

use burn::module::Module;
use burn::nn::DropoutConfig;
use burn::tensor::{Device, Tensor};

use mnist_data::{Dataset, UnknownDataset};

use crate::hvc::{Hvc, HvcConfig};
use crate::kaggle_cnn::{KaggleCnn, KaggleCnnConfig};
use crate::seed_plus::{SeedPlusCnn, SeedPlusCnnConfig};
use crate::summary::TorchSummary;
use crate::torch_io::{self, WeightsError, WeightsFile};
use crate::{SeedCnn, SeedCnnConfig};

/// Safetensors metadata key naming the model of a weights file.
pub const MODEL_METADATA_KEY: &str = "mnist_rs.model";
/// Safetensors metadata key naming the dataset the weights were trained on.
pub const DATASET_METADATA_KEY: &str = "mnist_rs.dataset";
/// Safetensors metadata key holding the input normalisation, `mean,std`.
pub const NORMALIZATION_METADATA_KEY: &str = "mnist_rs.normalization";

/// A network read from a weights file, with what the file says of its
/// training.
#[derive(Debug)]
pub struct LoadedWeights {
    /// The network.
    pub network: Network,
    /// The dataset it was trained on; `None` for files that do not say
    /// (PyTorch exports, files from before it was recorded).
    pub dataset: Option<Dataset>,
}

/// Which network. Its name ([`ModelKind::name`]) is the same on the command
/// line, in run files and in weights files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ModelKind {
    /// The notebook's CNN.
    #[serde(rename = "seed")]
    #[cfg_attr(feature = "clap", value(name = "seed"))]
    Seed,
    /// The notebook's CNN with batch norm and dropout.
    #[serde(rename = "seed-plus")]
    #[cfg_attr(feature = "clap", value(name = "seed-plus"))]
    SeedPlus,
    /// Homogeneous vector capsules (Byerly et al. 2020).
    #[serde(rename = "hvc")]
    #[cfg_attr(feature = "clap", value(name = "hvc"))]
    Hvc,
    /// Seven conv → batch norm → ReLU blocks, laid out like Kaggle's
    /// strongest single MNIST models.
    #[serde(rename = "kaggle")]
    #[cfg_attr(feature = "clap", value(name = "kaggle"))]
    Kaggle,
}

/// A name that is no model's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model `{0}`; choose one of seed, seed-plus, hvc, kaggle")]
pub struct UnknownModel(pub String);

impl std::str::FromStr for ModelKind {
    type Err = UnknownModel;

    fn from_str(name: &str) -> Result<Self, UnknownModel> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| UnknownModel(name.to_string()))
    }
}

impl ModelKind {
    /// Every model, in the order `--help` lists them.
    pub const ALL: [ModelKind; 4] = [
        ModelKind::Seed,
        ModelKind::SeedPlus,
        ModelKind::Hvc,
        ModelKind::Kaggle,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Seed => "seed",
            ModelKind::SeedPlus => "seed-plus",
            ModelKind::Hvc => "hvc",
            ModelKind::Kaggle => "kaggle",
        }
    }

    /// Whether the model has dropout layers, which
    /// [`Network::with_dropout`] can set.
    pub fn has_dropout(self) -> bool {
        matches!(self, ModelKind::SeedPlus | ModelKind::Kaggle)
    }

    /// A freshly initialised network, its weights drawn from `seed`.
    pub fn init(self, seed: u64, device: &Device) -> Network {
        match self {
            ModelKind::Seed => Network::Seed(SeedCnnConfig::new().init(seed, device)),
            ModelKind::SeedPlus => Network::SeedPlus(SeedPlusCnnConfig::new().init(seed, device)),
            ModelKind::Hvc => Network::Hvc(HvcConfig::new().init(seed, device)),
            ModelKind::Kaggle => Network::Kaggle(KaggleCnnConfig::new().init(seed, device)),
        }
    }

    /// The model a weights file holds: its metadata if written by mnist-rs,
    /// else recognised by its keys (a PyTorch export of the seed CNN has none).
    pub fn of_weights(path: &Path) -> Result<Self, WeightsError> {
        Self::of_file(&torch_io::read_weights_file(path)?, path)
    }

    fn of_file(file: &WeightsFile, path: &Path) -> Result<Self, WeightsError> {
        if let Some(name) = file.metadata.get(MODEL_METADATA_KEY) {
            return name
                .parse()
                .map_err(|e: UnknownModel| WeightsError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
        }
        let has = |prefix: &str| file.tensors.keys().any(|k| k.starts_with(prefix));
        Ok(if has("branches.") {
            ModelKind::Hvc
        } else if has("convs.") {
            ModelKind::Kaggle
        } else if has("bn1.") {
            ModelKind::SeedPlus
        } else {
            ModelKind::Seed
        })
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the models.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Network {
    /// The notebook's CNN.
    Seed(SeedCnn),
    /// The notebook's CNN with batch norm and dropout.
    SeedPlus(SeedPlusCnn),
    /// Homogeneous vector capsules.
    Hvc(Hvc),
    /// The Kaggle-style CNN.
    Kaggle(KaggleCnn),
}

impl Network {
    /// Which model this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            Network::Seed(_) => ModelKind::Seed,
            Network::SeedPlus(_) => ModelKind::SeedPlus,
            Network::Hvc(_) => ModelKind::Hvc,
            Network::Kaggle(_) => ModelKind::Kaggle,
        }
    }

    /// This network with every dropout layer's probability set to `prob`,
    /// or `None` for a network that has none (seed, hvc).
    pub fn with_dropout(self, prob: f64) -> Option<Network> {
        let layer = DropoutConfig::new(prob).init();
        match self {
            Network::SeedPlus(m) => Some(Network::SeedPlus(SeedPlusCnn {
                dropout: layer,
                ..m
            })),
            Network::Kaggle(m) => Some(Network::Kaggle(KaggleCnn {
                dropout: layer,
                ..m
            })),
            Network::Seed(_) | Network::Hvc(_) => None,
        }
    }

    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Seed(m) => m.forward(images),
            Network::SeedPlus(m) => m.forward(images),
            Network::Hvc(m) => m.forward(images),
            Network::Kaggle(m) => m.forward(images),
        }
    }

    /// Load the network `path` holds, checking that it is the right model.
    pub fn load(path: &Path, device: &Device) -> Result<Self, WeightsError> {
        Self::load_recorded(path, device).map(|loaded| loaded.network)
    }

    /// Load the network `path` holds with the dataset it records.
    pub fn load_recorded(path: &Path, device: &Device) -> Result<LoadedWeights, WeightsError> {
        let file = torch_io::read_weights_file(path)?;
        let kind = ModelKind::of_file(&file, path)?;
        let dataset = match file.metadata.get(DATASET_METADATA_KEY) {
            Some(name) => {
                Some(
                    name.parse()
                        .map_err(|e: UnknownDataset| WeightsError::Corrupt {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
                        })?,
                )
            }
            None => None,
        };
        tracing::info!(path = %path.display(), model = %kind, ?dataset, "loading weights");
        let network =
            torch_io::load_state_dict(kind.init(0, device), file.tensors).map_err(|problems| {
                WeightsError::Mismatch {
                    path: path.to_path_buf(),
                    problems,
                }
            })?;
        Ok(LoadedWeights { network, dataset })
    }

    /// Save the weights with PyTorch keys, recording the model's name.
    pub fn save(&self, path: &Path) -> Result<(), WeightsError> {
        torch_io::save_weights_with(self, &[(MODEL_METADATA_KEY, self.kind().name())], path)
    }

    /// Save the weights, recording the model's name and the dataset (and so
    /// the normalisation) they were trained on.
    pub fn save_trained_on(&self, path: &Path, dataset: Dataset) -> Result<(), WeightsError> {
        let normalization = format!("{},{}", dataset.mean(), dataset.std());
        torch_io::save_weights_with(
            self,
            &[
                (MODEL_METADATA_KEY, self.kind().name()),
                (DATASET_METADATA_KEY, dataset.name()),
                (NORMALIZATION_METADATA_KEY, &normalization),
            ],
            path,
        )
    }
}

impl TorchSummary for Network {
    fn torch_summary(&self) -> String {
        match self {
            Network::Seed(m) => m.torch_summary(),
            Network::SeedPlus(m) => m.torch_summary(),
            Network::Hvc(m) => m.torch_summary(),
            Network::Kaggle(m) => m.torch_summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for kind in ModelKind::ALL {
            assert_eq!(kind.name().parse::<ModelKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", kind.name()),
                "files use the same name"
            );
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
        }
        let err = "resnet".parse::<ModelKind>().unwrap_err().to_string();
        assert!(err.contains("seed, seed-plus, hvc, kaggle"), "{err}");
    }

    #[test]
    fn dropout_is_set_on_the_models_that_have_it() {
        let (_, device) = test_devices().remove(0);
        for kind in ModelKind::ALL {
            let changed = kind.init(0, &device).with_dropout(0.15);
            assert_eq!(changed.is_some(), kind.has_dropout(), "{kind}");
            if let Some(network) = changed {
                let summary = network.torch_summary();
                assert!(summary.contains("Dropout(p=0.15"), "{kind}: {summary}");
                assert!(!summary.contains("Dropout(p=0.4") && !summary.contains("Dropout(p=0.3"));
            }
        }
    }

    #[test]
    fn keys_are_the_models_own() {
        let (_, device) = test_devices().remove(0);
        let keys: Vec<String> = torch_io::state_dict(&ModelKind::SeedPlus.init(0, &device))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(&keys[..2], ["conv1.weight", "conv1.bias"]);
        for key in [
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
        }
    }

    #[test]
    fn saved_weights_name_their_model_and_load_back() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        for kind in [ModelKind::Seed, ModelKind::SeedPlus, ModelKind::Kaggle] {
            let path = dir.path().join(format!("{kind}.safetensors"));
            let model = kind.init(3, &device);
            model.save(&path).unwrap();
            assert_eq!(ModelKind::of_weights(&path).unwrap(), kind);
            let loaded = Network::load(&path, &device).unwrap();
            assert_eq!(loaded.kind(), kind);
            assert_eq!(torch_io::state_dict(&loaded), torch_io::state_dict(&model));
        }
    }

    #[test]
    fn weights_record_their_dataset() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fashion.safetensors");
        ModelKind::Seed
            .init(0, &device)
            .save_trained_on(&path, Dataset::FashionMnist)
            .unwrap();
        let loaded = Network::load_recorded(&path, &device).unwrap();
        assert_eq!(loaded.dataset, Some(Dataset::FashionMnist));
        let metadata = torch_io::read_weights_file(&path).unwrap().metadata;
        assert_eq!(metadata[NORMALIZATION_METADATA_KEY], "0.286,0.353");
        // Without the record (a PyTorch export), nothing is claimed.
        let plain = dir.path().join("plain.safetensors");
        ModelKind::Seed.init(0, &device).save(&plain).unwrap();
        assert_eq!(
            Network::load_recorded(&plain, &device).unwrap().dataset,
            None
        );
    }

    #[test]
    fn files_without_metadata_are_recognised_by_their_keys() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.safetensors");
        // save_weights writes no model name, as a PyTorch export would.
        for kind in ModelKind::ALL {
            torch_io::save_weights(&kind.init(0, &device), &path).unwrap();
            assert_eq!(ModelKind::of_weights(&path).unwrap(), kind);
        }
    }
}
