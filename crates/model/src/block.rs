//! Convolution → batch norm → ReLU, the building block of HVC and the
//! Kaggle-style CNN. The convolution has no bias (batch norm's β takes its
//! place) and runs through [`fused::conv`](crate::fused::conv); batch norm
//! and ReLU through [`fused::batch_norm_relu`](crate::fused::batch_norm_relu),
//! each with its own backward pass on flex.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::fused::{batch_norm_relu, conv};
use crate::init::{torch_bound, uniform};
use crate::summary;

/// The geometry of one [`ConvBlock`]'s convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Stride on both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl BlockShape {
    /// Output side of the convolution for an input of side `side`.
    pub fn output_side(&self, side: usize) -> usize {
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// Convolution without bias, batch norm, ReLU.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The convolution.
    pub conv: Conv2d,
    /// Its batch norm.
    pub bn: BatchNorm,
}

impl ConvBlock {
    /// A block with PyTorch's default initialisation of the convolution's
    /// weight, drawn from `rng`, and batch norm's γ = 1, β = 0.
    pub fn new(shape: BlockShape, rng: &mut ChaCha8Rng, device: &Device) -> Self {
        let BlockShape {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
        } = shape;
        let mut conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_bias(false)
            .init(device);
        conv.weight = uniform(
            [cout, cin, kernel, kernel],
            torch_bound(cin * kernel * kernel),
            rng,
            device,
        );
        Self {
            conv,
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    /// `relu(bn(conv(x)))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        batch_norm_relu(conv(x, &self.conv), &self.bn)
    }

    /// `Sequential(Conv2d(…), BatchNorm2d(…), ReLU())`, as PyTorch prints it.
    pub fn torch_summary(&self) -> String {
        format!(
            "Sequential({}, {}, ReLU())",
            summary::conv2d(&self.conv),
            summary::batch_norm(&self.bn, 2)
        )
    }
}
