//! The networks of mnist-rs and everything that is about a network rather
//! than about training it:
//!
//! - [`seed_cnn`]: the notebook's CNN, layer for layer;
//! - [`seed_plus`]: the seed CNN with batch norm and dropout;
//! - [`hvc`]: the Homogeneous Vector Capsule network (Byerly et al. 2020);
//! - [`kaggle_cnn`]: a CNN laid out like the strongest single models of
//!   Kaggle's MNIST competition, built for accuracy per FLOP on a CPU;
//! - [`block`]: convolution → batch norm → ReLU, HVC's and the Kaggle-style
//!   CNN's building block;
//! - [`network`]: the model picked at run time (`--model`), behind one type;
//! - [`layers`]: a model's convolution layers one at a time, for timing;
//! - [`init`]: PyTorch's default initialisation, from a seeded host RNG so
//!   the same seed gives the same weights on every backend;
//! - [`torch_io`]: weights as safetensors with PyTorch's key names and
//!   layouts, so `state_dict`s travel both ways;
//! - [`summary`]: the model printed as PyTorch prints it;
//! - [`fused`]: convolutions, conv → max-pool → relu, batch norm (+ ReLU)
//!   as operations with their own backward passes, with fast host kernels
//!   on flex (Burn's backend-extension API);
//! - [`backend`]: choosing a compiled-in backend and device at run time.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod block;
pub mod fused;
pub mod hvc;
pub mod init;
pub mod kaggle_cnn;
pub mod layers;
pub mod network;
pub mod seed_cnn;
pub mod seed_plus;
pub mod summary;
pub mod torch_io;

pub use backend::{BackendError, BackendKind, DeviceSpec};
pub use hvc::{Hvc, HvcConfig, HvcConfigError};
pub use kaggle_cnn::{KaggleCnn, KaggleCnnConfig};
pub use network::{LoadedWeights, ModelKind, Network, UnknownModel};
pub use seed_cnn::{SeedCnn, SeedCnnConfig};
pub use seed_plus::{SeedPlusCnn, SeedPlusCnnConfig};
pub use torch_io::{WeightsError, load_weights, save_weights};

/// Number of learned scalars in a module, as PyTorch counts parameters:
/// batch norm's running statistics are state, not parameters.
pub fn parameter_count<M: burn::module::Module>(module: &M) -> usize {
    torch_io::state_dict(module)
        .iter()
        .filter(|(key, _)| !key.ends_with(".running_mean") && !key.ends_with(".running_var"))
        .map(|(_, tensor)| tensor.data.len())
        .sum()
}
