//! The networks of mnist-rs and everything that is about a network rather
//! than about training it:
//!
//! - [`seed_cnn`]: the notebook's CNN, layer for layer;
//! - [`init`]: PyTorch's default initialisation, from a seeded host RNG so
//!   the same seed gives the same weights on every backend;
//! - [`torch_io`]: weights as safetensors with PyTorch's key names and
//!   layouts, so `state_dict`s travel both ways;
//! - [`summary`]: the model printed as PyTorch prints it;
//! - [`backend`]: choosing a compiled-in backend and device at run time.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backend;
pub mod init;
pub mod seed_cnn;
pub mod summary;
pub mod torch_io;

pub use backend::{BackendError, BackendKind, DeviceSpec};
pub use seed_cnn::{SeedCnn, SeedCnnConfig};
pub use torch_io::{WeightsError, load_weights, save_weights};

/// Number of trainable scalars in a module.
pub fn parameter_count<M: burn::module::Module>(module: &M) -> usize {
    module.num_params()
}
