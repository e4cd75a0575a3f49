//! Layers with their own backward passes, through Burn's backend-extension
//! API: `relu(max_pool_2×2(conv2d(x)))` as one fused operation, the seed
//! CNN's two feature layers ([`conv_pool_relu`]); a plain convolution of any
//! square kernel, stride and padding ([`conv()`], the convolutions of
//! seed-plus, HVC and the Kaggle-style CNN, where batch norm follows the
//! convolution) and `relu(max_pool_2×2(x))` ([`pool_relu`]); and batch norm
//! in training, alone, followed by a ReLU, or followed by pooling and a
//! ReLU ([`batch_norm()`], [`batch_norm_relu`], [`batch_norm_pool_relu`],
//! in its own module), and dropout's mask
//! ([`dropout()`], in its own module).
//!
//! The models call them with a tensor and never name a backend. Burn routes
//! each call by the tensor's device:
//!
//! - **flex** runs the host kernels in `host`: im2col + GEMM per image, with
//!   bias, pooling and ReLU fused into the pass over the GEMM's output while
//!   it is in cache, one byte per pooling window kept for the backward pass,
//!   and a backward pass of two GEMMs per image (measured against Burn's
//!   separate operations in docs/performance.md);
//! - **ndarray** and **tch** run the same mathematics composed from their own
//!   operations (their convolutions are already their fastest path);
//! - under **autodiff**, one graph node holds the whole layer, and its
//!   backward pass calls the backend's fused gradient.
//!
//! Each function falls back to Burn's own layers for what its kernels do
//! not cover (the fused layer: anything but a stride-1 "same" convolution
//! with a bias and 2×2 pooling over an even plane; the plain convolution:
//! dilation, groups, rectangular kernels or uneven padding), so they are
//! always correct to call.
//!
//! The plain convolution gains on flex for the same reason as the fused
//! layer: Burn differentiates a convolution through generic transposed
//! convolutions, while here the backward pass is two GEMMs per image.
//!
//! This module is the one place in the crate that names backend types: the
//! extension API needs an implementation per backend.

// ndarray and tch are deprecated upstream but still served here.
#![allow(deprecated)]

pub mod batch_norm;
pub mod dropout;
#[cfg(feature = "flex")]
pub mod host;

pub use batch_norm::{batch_norm, batch_norm_pool_relu, batch_norm_relu};
pub use dropout::dropout;

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::backend::{Dispatch, ops::ConvOptions};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::tensor::{IntDType, Tensor, activation};

/// Pooling window and stride of the fused layer.
const POOL: [usize; 2] = [2, 2];

/// The fused layer as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait ConvPoolOps: Backend {
    /// `relu(max_pool2d(conv2d(x, weight, bias), 2, stride 2))` with stride 1
    /// and padding `kernel / 2`. The default composes the backend's own
    /// operations.
    fn conv_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_parts::<Self>(x, weight, bias).1
    }

    /// `conv2d(x, weight, bias)` for a square kernel with the same
    /// `stride` and zero `padding` on both axes. The default is the
    /// backend's own convolution.
    fn conv_layer(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        composed_conv::<Self>(x, weight, bias, &ConvSpec { stride, padding })
    }

    /// `relu(max_pool2d(x, 2, stride 2))` over an even-sized plane. The
    /// default composes the backend's own operations.
    fn pool_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_pool_relu::<Self>(x)
    }
}

/// The pieces a backend supplies so that [`Autodiff`] can differentiate
/// [`ConvPoolOps::conv_pool_relu`] as one node. The defaults compose the
/// backend's own operations.
pub trait ConvPoolKernels: Backend {
    /// What the backward pass needs about the pooling windows (see
    /// [`Saved::windows`]) and the layer's output.
    fn conv_pool_relu_parts(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_parts::<Self>(x, weight, bias)
    }

    /// Gradients for input (when `want_x`), weight and bias, given the
    /// forward pass's tensors and the output's gradient.
    fn conv_pool_relu_backward(
        saved: Saved<Self>,
        output_grad: FloatTensor<Self>,
        want_x: bool,
    ) -> LayerGrads<Self> {
        composed_backward::<Self>(saved, output_grad, want_x)
    }

    /// What the backward pass of [`ConvPoolOps::pool_relu`] needs about the
    /// pooling windows (see [`PoolSaved::windows`]), and the output.
    fn pool_relu_parts(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        (x.clone(), composed_pool_relu::<Self>(x))
    }

    /// The input gradient of [`ConvPoolOps::pool_relu`].
    fn pool_relu_backward(
        saved: PoolSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_pool_backward::<Self>(saved.windows, saved.output, output_grad)
    }

    /// Gradients of [`ConvPoolOps::conv_layer`] for input (when `want_x`),
    /// weight and bias, given its inputs and the output's gradient.
    fn conv_layer_backward(
        saved: ConvSaved<Self>,
        output_grad: FloatTensor<Self>,
        want_x: bool,
    ) -> LayerGrads<Self> {
        composed_conv_backward::<Self>(saved, output_grad, want_x)
    }
}

/// A layer's gradients: for its input (when asked for), weight and bias.
pub type LayerGrads<B> = (Option<FloatTensor<B>>, FloatTensor<B>, FloatTensor<B>);

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone)]
pub struct Saved<B: Backend> {
    /// The layer's input.
    pub x: FloatTensor<B>,
    /// The convolution weight.
    pub weight: FloatTensor<B>,
    /// The convolution bias.
    pub bias: FloatTensor<B>,
    /// The pooling windows, in a form of the backend's choosing: the
    /// composed default keeps the convolution output (bias added, before
    /// pooling); flex keeps one byte per window saying where its maximum
    /// was (a `u8` tensor, 30× smaller than conv1's output).
    pub windows: FloatTensor<B>,
    /// The layer's output.
    pub output: FloatTensor<B>,
}

/// What [`ConvPoolOps::conv_layer`] keeps for its backward pass: its
/// inputs and geometry.
#[derive(Debug, Clone)]
pub struct ConvSaved<B: Backend> {
    /// The layer's input.
    pub x: FloatTensor<B>,
    /// The convolution weight.
    pub weight: FloatTensor<B>,
    /// The convolution bias.
    pub bias: FloatTensor<B>,
    /// Stride and padding.
    pub spec: ConvSpec,
}

/// The geometry of a [`ConvPoolOps::conv_layer`] besides its kernel: the
/// same stride and zero padding on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Step between output pixels.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
}

impl ConvSpec {
    /// Stride 1 and padding `kernel / 2`: the seed CNN's fused layer.
    fn same(weight: &impl TensorMetadata) -> Self {
        Self {
            stride: 1,
            padding: weight.shape()[2] / 2,
        }
    }

    fn options(&self) -> ConvOptions<2> {
        let (s, p) = (self.stride, self.padding);
        ConvOptions::new([s, s], [p, p], [1, 1], 1)
    }
}

/// What [`ConvPoolOps::pool_relu`] keeps for its backward pass.
#[derive(Debug, Clone)]
pub struct PoolSaved<B: Backend> {
    /// The pooling windows, as in [`Saved::windows`]: the input itself for
    /// the composed default, route bytes on flex.
    pub windows: FloatTensor<B>,
    /// The output.
    pub output: FloatTensor<B>,
}

/// `relu(max_pool_2×2(x))` for `pool`, a 2×2 max-pooling with stride 2, as
/// one operation with its own backward pass where the plane is even-sized;
/// any other pooling runs Burn's layers.
pub fn pool_relu(x: Tensor<4>, pool: &MaxPool2d) -> Tensor<4> {
    let [_, _, height, width] = x.dims();
    if is_pool_2x2(pool) && height.is_multiple_of(2) && width.is_multiple_of(2) {
        Tensor::from_dispatch(Dispatch::pool_relu(x.into_dispatch()))
    } else {
        activation::relu(pool.forward(x))
    }
}

/// `relu(pool(conv(x)))` for a convolution layer of the seed CNN's kind and
/// its 2×2 max-pooling, as one fused operation where the layers allow it
/// (see the module documentation), else as the three operations.
pub fn conv_pool_relu(x: Tensor<4>, conv: &Conv2d, pool: &MaxPool2d) -> Tensor<4> {
    let [_, _, height, width] = x.dims();
    let fusable = is_same_conv(conv)
        && is_pool_2x2(pool)
        && height.is_multiple_of(2)
        && width.is_multiple_of(2);
    match (&conv.bias, fusable) {
        (Some(bias), true) => Tensor::from_dispatch(Dispatch::conv_pool_relu(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
            bias.val().into_dispatch(),
        )),
        _ => activation::relu(pool.forward(conv.forward(x))),
    }
}

/// `conv.forward(x)` through [`ConvPoolOps::conv_layer`] and its own
/// backward pass, for a square kernel with the same stride and symmetric
/// padding on both axes (a layer without bias gets a zero one); any other
/// layer (dilated, grouped, rectangular, uneven padding) runs Burn's own.
pub fn conv(x: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let Some(spec) = conv_spec(conv) else {
        return conv.forward(x);
    };
    let bias = match &conv.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([conv.weight.dims()[0]], &x.device()),
    };
    Tensor::from_dispatch(Dispatch::conv_layer(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.into_dispatch(),
        spec.stride,
        spec.padding,
    ))
}

/// The layer's stride and padding, when [`conv`] covers it.
pub(crate) fn conv_spec(conv: &Conv2d) -> Option<ConvSpec> {
    let [_, _, kh, kw] = conv.weight.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && left == bottom && bottom == right =>
        {
            top
        }
        _ => return None,
    };
    let [sy, sx] = conv.stride;
    (kh == kw && sy == sx && conv.dilation == [1, 1] && conv.groups == 1).then_some(ConvSpec {
        stride: sy,
        padding,
    })
}

/// Stride 1, no dilation or groups, an odd square kernel and padding
/// `kernel / 2` on every side: the output plane is the input's.
fn is_same_conv(conv: &Conv2d) -> bool {
    let [_, _, kh, kw] = conv.weight.dims();
    let same_padding = matches!(
        conv.padding,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == kh / 2 && bottom == kh / 2 && left == kw / 2 && right == kw / 2
    );
    kh == kw
        && kh % 2 == 1
        && same_padding
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
}

/// 2×2 max-pooling with stride 2 and no padding or dilation: what the
/// fused kernels pool with.
fn is_pool_2x2(pool: &MaxPool2d) -> bool {
    pool.kernel_size == POOL
        && pool.stride == POOL
        && pool.dilation == [1, 1]
        && matches!(pool.padding, PaddingConfig2d::Valid)
}

fn composed_conv<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    spec: &ConvSpec,
) -> FloatTensor<B> {
    B::conv2d(x, weight, Some(bias), spec.options())
}

fn composed_parts<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let spec = ConvSpec::same(&weight);
    let conv = composed_conv::<B>(x, weight, bias, &spec);
    (conv.clone(), composed_pool_relu::<B>(conv))
}

fn composed_pool_relu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::relu(B::max_pool2d(x, POOL, POOL, [0, 0], [1, 1], false))
}

/// The gradient of `relu(max_pool_2×2(x))` with respect to `x`.
fn composed_pool_backward<B: Backend>(
    x: FloatTensor<B>,
    output: FloatTensor<B>,
    output_grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let pooled_grad = B::relu_backward(output, output_grad);
    let indices =
        B::max_pool2d_with_indices(x.clone(), POOL, POOL, [0, 0], [1, 1], false, IntDType::I64)
            .indices;
    B::max_pool2d_with_indices_backward(x, POOL, POOL, [0, 0], [1, 1], false, pooled_grad, indices)
        .x_grad
}

fn composed_backward<B: Backend>(
    saved: Saved<B>,
    output_grad: FloatTensor<B>,
    want_x: bool,
) -> LayerGrads<B> {
    let Saved {
        x,
        weight,
        bias,
        windows: conv,
        output,
    } = saved;
    let conv_grad = composed_pool_backward::<B>(conv, output, output_grad);
    let spec = ConvSpec::same(&weight);
    composed_conv_backward::<B>(
        ConvSaved {
            x,
            weight,
            bias,
            spec,
        },
        conv_grad,
        want_x,
    )
}

fn composed_conv_backward<B: Backend>(
    saved: ConvSaved<B>,
    conv_grad: FloatTensor<B>,
    want_x: bool,
) -> LayerGrads<B> {
    let ConvSaved {
        x,
        weight,
        bias,
        spec,
    } = saved;
    let options = spec.options();
    let x_grad = want_x.then(|| {
        B::conv2d_x_backward(
            x.clone(),
            weight.clone(),
            conv_grad.clone(),
            options.clone(),
        )
    });
    let weight_grad = B::conv2d_weight_backward(x.clone(), weight, conv_grad.clone(), options);
    let bias_grad = B::conv2d_bias_backward(x, bias, conv_grad);
    (x_grad, weight_grad, bias_grad)
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use super::{ConvPoolKernels, ConvPoolOps};
    use burn::backend::NdArray;

    impl ConvPoolOps for NdArray {}
    impl ConvPoolKernels for NdArray {}
}

#[cfg(feature = "tch")]
mod tch_impl {
    use super::{ConvPoolKernels, ConvPoolOps};
    use burn::backend::LibTorch;

    impl ConvPoolOps for LibTorch {}
    impl ConvPoolKernels for LibTorch {}
}

#[cfg(feature = "flex")]
mod flex_impl;

/// The fused layer as one autodiff node.
#[derive(Debug)]
struct ConvPoolReluBackward;

impl<B: ConvPoolKernels> Backward<B, 3> for ConvPoolReluBackward {
    type State = Saved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        let output_grad = grads.consume::<B>(&ops.node);
        let layer_grads = B::conv_pool_relu_backward(ops.state, output_grad, parents[0].is_some());
        register_grads::<B>(grads, parents, layer_grads);
    }
}

/// Hands a layer's gradients to the parents that track them.
fn register_grads<B: Backend>(
    grads: &mut Gradients,
    [x, weight, bias]: [Option<NodeId>; 3],
    (x_grad, weight_grad, bias_grad): LayerGrads<B>,
) {
    if let (Some(id), Some(grad)) = (x, x_grad) {
        grads.register::<B>(id, grad);
    }
    if let Some(id) = weight {
        grads.register::<B>(id, weight_grad);
    }
    if let Some(id) = bias {
        grads.register::<B>(id, bias_grad);
    }
}

/// The plain convolution as one autodiff node.
#[derive(Debug)]
struct ConvLayerBackward;

impl<B: ConvPoolKernels> Backward<B, 3> for ConvLayerBackward {
    type State = ConvSaved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let parents = ops.parents.map(|node| node.map(|node| node.id));
        let output_grad = grads.consume::<B>(&ops.node);
        let layer_grads = B::conv_layer_backward(ops.state, output_grad, parents[0].is_some());
        register_grads::<B>(grads, parents, layer_grads);
    }
}

/// The pooling and ReLU as one autodiff node.
#[derive(Debug)]
struct PoolReluBackward;

impl<B: ConvPoolKernels> Backward<B, 1> for PoolReluBackward {
    type State = PoolSaved<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, B::pool_relu_backward(ops.state, output_grad));
        }
    }
}

impl<B: ConvPoolOps + ConvPoolKernels, C: CheckpointStrategy> ConvPoolOps for Autodiff<B, C> {
    fn pool_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let guards = [x.node()];
        let x = x.into_primitive();
        match PoolReluBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (windows, output) = B::pool_relu_parts(x);
                let saved = PoolSaved {
                    windows,
                    output: output.clone(),
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pool_relu(x)),
        }
    }

    fn conv_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        match ConvPoolReluBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (windows, output) =
                    B::conv_pool_relu_parts(x.clone(), weight.clone(), bias.clone());
                let saved = Saved {
                    x,
                    weight,
                    bias,
                    windows,
                    output: output.clone(),
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_pool_relu(x, weight, bias)),
        }
    }

    fn conv_layer(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let guards = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        match ConvLayerBackward
            .prepare::<C>(guards)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let output =
                    B::conv_layer(x.clone(), weight.clone(), bias.clone(), stride, padding);
                let spec = ConvSpec { stride, padding };
                prep.finish(
                    ConvSaved {
                        x,
                        weight,
                        bias,
                        spec,
                    },
                    output,
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv_layer(x, weight, bias, stride, padding))
            }
        }
    }
}

#[cfg(test)]
mod tests;
