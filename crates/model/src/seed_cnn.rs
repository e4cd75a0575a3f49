//! The seed notebook's CNN (171,158 parameters), layer for layer:
//!
//! | layer | shape                       | output        |
//! |-------|-----------------------------|---------------|
//! | conv1 | 1→16, 5×5, stride 1, pad 2  | 16 × 28 × 28  |
//! | pool  | max 2×2, stride 2           | 16 × 14 × 14  |
//! | relu  |                             |               |
//! | conv2 | 16→32, 5×5, stride 1, pad 2 | 32 × 14 × 14  |
//! | pool  | max 2×2, stride 2           | 32 × 7 × 7    |
//! | relu  |                             |               |
//! | fc1   | 1568→100, relu              | 100           |
//! | fc2   | 100→10                      | 10 logits     |

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::fused::conv_pool_relu;
use crate::init::{torch_bound, uniform};
use crate::torch_io::with_stable_ids;

/// Configuration of [`SeedCnn`]; the defaults are the notebook's.
#[derive(Config, Debug)]
pub struct SeedCnnConfig {
    /// Input channels (1 for greyscale).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = 28)]
    pub image_size: usize,
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Channels of conv1.
    #[config(default = 16)]
    pub conv1_channels: usize,
    /// Channels of conv2.
    #[config(default = 32)]
    pub conv2_channels: usize,
    /// Width of the hidden fully connected layer.
    #[config(default = 100)]
    pub hidden: usize,
}

/// The notebook's CNN.
#[derive(Module, Debug)]
pub struct SeedCnn {
    /// 5×5 convolution, padding 2.
    pub conv1: Conv2d,
    /// 5×5 convolution, padding 2.
    pub conv2: Conv2d,
    /// Hidden fully connected layer.
    pub fc1: Linear,
    /// Classifier.
    pub fc2: Linear,
    /// 2×2 max-pooling, stride 2.
    pub pool: MaxPool2d,
    /// ReLU.
    pub relu: Relu,
}

const KERNEL: usize = 5;

impl SeedCnnConfig {
    /// Features entering fc1: conv2's channels × (size / 4)².
    pub fn flat_features(&self) -> usize {
        let side = self.image_size / 4;
        self.conv2_channels * side * side
    }

    /// A network with PyTorch's default initialisation drawn from `seed`,
    /// with parameter ids derived from their keys (see [`with_stable_ids`]).
    pub fn init(&self, seed: u64, device: &Device) -> SeedCnn {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let model = SeedCnn {
            conv1: self.conv(self.in_channels, self.conv1_channels, &mut rng, device),
            conv2: self.conv(self.conv1_channels, self.conv2_channels, &mut rng, device),
            fc1: self.linear(self.flat_features(), self.hidden, &mut rng, device),
            fc2: self.linear(self.hidden, self.num_classes, &mut rng, device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
        };
        with_stable_ids(model)
    }

    /// A 5×5 convolution with padding 2, initialised as PyTorch does.
    pub(crate) fn conv(
        &self,
        cin: usize,
        cout: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Conv2d {
        let mut layer = Conv2dConfig::new([cin, cout], [KERNEL, KERNEL])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(device);
        let bound = torch_bound(cin * KERNEL * KERNEL);
        layer.weight = uniform([cout, cin, KERNEL, KERNEL], bound, rng, device);
        layer.bias = Some(uniform([cout], bound, rng, device));
        layer
    }

    /// A linear layer initialised as PyTorch does.
    pub(crate) fn linear(
        &self,
        din: usize,
        dout: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Linear {
        let mut layer = LinearConfig::new(din, dout).init(device);
        let bound = torch_bound(din);
        // Burn stores linear weights as [in, out] (PyTorch: [out, in]).
        layer.weight = uniform([din, dout], bound, rng, device);
        layer.bias = Some(uniform([dout], bound, rng, device));
        layer
    }
}

impl SeedCnn {
    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        // conv → pool → relu, one fused operation per layer (same values and
        // gradients as the three separate operations; see `fused`).
        let x = conv_pool_relu(images, &self.conv1, &self.pool);
        let x = conv_pool_relu(x, &self.conv2, &self.pool);
        // [b, c, h, w] → [b, c·h·w], the order of PyTorch's `view(-1, 1568)`.
        let x = x.flatten::<2>(1, 3);
        let x = self.relu.forward(self.fc1.forward(x));
        self.fc2.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;

    #[test]
    fn has_the_notebooks_parameter_count() {
        for (_, device) in test_devices() {
            let model = SeedCnnConfig::new().init(0, &device);
            assert_eq!(model.num_params(), 171_158);
        }
    }

    #[test]
    fn maps_a_batch_to_ten_logits() {
        for (_, device) in test_devices() {
            let model = SeedCnnConfig::new().init(0, &device);
            let logits = model.forward(Tensor::zeros([3, 1, 28, 28], &device));
            assert_eq!(logits.dims(), [3, 10]);
        }
    }

    #[test]
    fn the_seed_decides_the_weights() {
        let (_, device) = test_devices().remove(0);
        let weights = |seed| -> Vec<f32> {
            let m = SeedCnnConfig::new().init(seed, &device);
            m.fc2
                .weight
                .val()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap()
        };
        assert_eq!(weights(1), weights(1));
        assert_ne!(weights(1), weights(2));
    }
}
