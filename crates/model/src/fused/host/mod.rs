//! Host (CPU) kernels for flex: `relu(max_pool_2×2(conv2d(x)))`, a plain
//! convolution of any square kernel, stride and padding,
//! `relu(max_pool_2×2(x))` alone, batch norm (with or without a ReLU
//! after it) in training, and batch norm → pooling → ReLU, with their
//! gradients.
//!
//! Plain `f32` slices in NCHW order, so these are tested against naive loops
//! without any backend. The convolution is an im2col of one image (or of a
//! few, when their output planes are small) followed by one GEMM (the
//! `gemm` crate, the same one Burn's flex backend uses), with rayon
//! spreading images over the cores; the bias, the pooling and the ReLU are
//! applied in the same pass that reads the GEMM's output.
//!
//! Why this beats the unfused path: Burn computes the weight and input
//! gradients of a convolution through generic transposed convolutions
//! (about three quarters of flex's training step), and its max-pool
//! forward and backward go through general strided code. Here the backward
//! pass is two GEMMs per image on data that is already in cache.
//!
//! One file per job:
//! - [`conv`]: the convolution layers (the seed CNN's conv → pool → relu,
//!   and the plain convolution of seed-plus, HVC and the Kaggle-style CNN),
//!   im2col, col2im and their backward passes;
//! - `phases`: im2col and col2im of strided layers through phase planes;
//! - `crops`: im2col and col2im of narrow unpadded layers through crops of
//!   the plane;
//! - [`pool`]: 2×2 max-pooling with ReLU and its routes;
//! - [`batch_norm`]: batch norm with the batch's own statistics;
//! - [`norm_pool`]: batch norm → pooling → ReLU as one layer (seed-plus);
//! - [`dropout`]: dropout's mask, drawn in parallel from a seed;
//! - `sum`: sums of many values in vector lanes;
//! - `fill`: whole-tensor buffers filled by all threads;
//! - `gemm`: the one `unsafe` call into the `gemm` crate.

pub mod batch_norm;
pub mod conv;
mod crops;
pub mod dropout;
mod fill;
mod gemm;
pub mod norm_pool;
mod phases;
pub mod pool;
mod spare;
mod sum;
#[cfg(test)]
mod tests;
mod tile_planes;
mod winograd;

pub use batch_norm::{
    NormForward, NormGrads, NormShape, batch_norm_backward, batch_norm_forward,
    batch_norm_relu_backward, batch_norm_relu_forward,
};
pub use conv::{
    ConvPoolGrads, ConvShape, conv_pool_relu_backward, conv_pool_relu_forward, conv2d_backward,
    conv2d_forward,
};
pub use dropout::dropout_mask;
pub use norm_pool::{NormPoolForward, batch_norm_pool_relu_backward, batch_norm_pool_relu_forward};
pub use pool::{BLOCKED, Route, pool_relu_backward, pool_relu_forward};
