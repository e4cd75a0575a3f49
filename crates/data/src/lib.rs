//! MNIST-style data for mnist-rs.
//!
//! - [`atomic`]: writing a file so that it is whole or untouched, used by
//!   every crate that writes one;
//! - [`idx`]: the IDX file format, parsed with every header claim checked
//!   against the bytes really present;
//! - [`dataset`]: MNIST and Fashion-MNIST — files, checksums, class names,
//!   normalisation constants — and loading them from a directory;
//! - [`augment`]: seeded random affine transforms and erasing for training;
//! - [`hvc_paper`]: the HVC paper's own training augmentation;
//! - [`tta`]: the fixed views of test-time augmentation;
//! - [`batch`]: per-epoch seeded shuffling, normalisation and mini-batches
//!   (as Burn tensors with the `burn` feature);
//! - [`digit`]: a user's own digit picture prepared as MNIST prepared its
//!   digits (`digit` feature);
//! - [`fetch`]: fetching or importing the canonical files, verified by
//!   SHA-256 and written atomically (`download` feature).
//!
//! This crate knows nothing of models, optimisers or the command line.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod atomic;
pub mod augment;
pub mod batch;
pub mod dataset;
#[cfg(feature = "digit")]
pub mod digit;
mod error;
pub mod fetch;
pub mod hvc_paper;
pub mod idx;
pub mod tta;

pub use augment::{Augment, Augmentation, OutOfRange};
#[cfg(feature = "burn")]
pub use batch::Batch;
pub use batch::{Batches, HostBatch, Normalizer, Prefetched, epoch_order};
pub use dataset::{
    DataSplits, Dataset, NUM_CLASSES, Split, UnknownDataset, find_data_dir, load, load_test,
    resolve_data_dir,
};
pub use error::DataError;
pub use hvc_paper::HvcPaperAugmentation;
