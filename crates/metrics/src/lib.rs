//! Classification metrics for mnist-rs and their pictures.
//!
//! - [`ConfusionMatrix`]: counts, accuracy, per-class precision, recall and
//!   F1, and a plain-text rendering for the terminal;
//! - [`plot`]: the confusion matrix as scikit-learn's
//!   `ConfusionMatrixDisplay` draws it, per-epoch loss and accuracy
//!   curves, and sheets of images, as PNG.
//!
//! Works on plain label slices: it knows nothing of Burn or autodiff.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod confusion;
pub mod plot;

pub use confusion::{ClassScores, ConfusionMatrix};
pub use plot::{EpochPoint, PlotError};
