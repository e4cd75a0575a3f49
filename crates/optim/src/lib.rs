//! Optimisation for mnist-rs, in Burn's own optimizer style:
//!
//! - [`RAdam`]: rectified Adam with PyTorch's exact semantics, including
//!   `decoupled_weight_decay=True` (parameters shrink by `1 − lr·wd` before
//!   the moment update), as a per-parameter Burn [`Optimizer`] whose state
//!   is a [`RecordState`] that checkpoints save;
//! - [`RunSchedule`]: PyTorch's `ExponentialLR` stepped once per epoch, as
//!   the notebook does (Burn's schedulers step per iteration), and
//!   one-cycle, cosine with warm-up and constant rates;
//! - [`OptimizerKind`]: RAdam, Adam or AdamW chosen at run time;
//! - [`WeightEma`]: an exponential moving average of the weights.
//!
//! [`Optimizer`]: burn::optim::Optimizer

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod choice;
mod ema;
mod radam;
mod schedule;

pub use choice::{OptimizerKind, UnknownOptimizer};
pub use ema::WeightEma;
pub use radam::{RAdam, RAdamConfig, RAdamState};
pub use schedule::{LrSchedule, RunSchedule, ScheduleKind};

// `#[derive(RecordState)]` names these through `crate::`.
#[doc(hidden)]
pub use burn::optim::{RecordState, StateSink, StateSource, join_index, join_path};
