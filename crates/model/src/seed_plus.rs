//! The notebook's CNN with the notebook's own suggested additions: batch
//! norm after each convolution and dropout before the classifier
//! (172,406 parameters, of which 96 are batch-norm scales and shifts).
//!
//! | layer | shape                       | output        |
//! |-------|-----------------------------|---------------|
//! | conv1 | 1→16, 5×5, stride 1, pad 2  | 16 × 28 × 28  |
//! | bn1   | batch norm over 16 channels |               |
//! | pool  | max 2×2, stride 2           | 16 × 14 × 14  |
//! | relu  |                             |               |
//! | conv2 | 16→32, 5×5, stride 1, pad 2 | 32 × 14 × 14  |
//! | bn2   | batch norm over 32 channels |               |
//! | pool  | max 2×2, stride 2           | 32 × 7 × 7    |
//! | relu  |                             |               |
//! | fc1   | 1568→100, relu              | 100           |
//! | drop  | dropout p = 0.3             |               |
//! | fc2   | 100→10                      | 10 logits     |
//!
//! Keys match PyTorch's for the same fields (`bn1.weight`, `bn1.running_mean`…).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, Relu};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::SeedCnnConfig;
use crate::fused::{batch_norm_pool_relu, conv, dropout};
use crate::torch_io::with_stable_ids;

/// Configuration of [`SeedPlusCnn`].
#[derive(Config, Debug)]
pub struct SeedPlusCnnConfig {
    /// The convolutional and linear layers, as the notebook's CNN.
    #[config(default = "SeedCnnConfig::new()")]
    pub base: SeedCnnConfig,
    /// Dropout probability before the classifier.
    #[config(default = 0.3)]
    pub dropout: f64,
}

/// The notebook's CNN plus batch norm and dropout.
#[derive(Module, Debug)]
pub struct SeedPlusCnn {
    /// 5×5 convolution, padding 2.
    pub conv1: Conv2d,
    /// Batch norm after conv1.
    pub bn1: BatchNorm,
    /// 5×5 convolution, padding 2.
    pub conv2: Conv2d,
    /// Batch norm after conv2.
    pub bn2: BatchNorm,
    /// Hidden fully connected layer.
    pub fc1: Linear,
    /// Classifier.
    pub fc2: Linear,
    /// 2×2 max-pooling, stride 2.
    pub pool: MaxPool2d,
    /// ReLU.
    pub relu: Relu,
    /// Dropout before the classifier.
    pub dropout: Dropout,
}

impl SeedPlusCnnConfig {
    /// A network with PyTorch's default initialisation drawn from `seed`
    /// (the same draws as the seed CNN's for the shared layers).
    pub fn init(&self, seed: u64, device: &Device) -> SeedPlusCnn {
        let base = &self.base;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let conv1 = base.conv(base.in_channels, base.conv1_channels, &mut rng, device);
        let conv2 = base.conv(base.conv1_channels, base.conv2_channels, &mut rng, device);
        let fc1 = base.linear(base.flat_features(), base.hidden, &mut rng, device);
        let fc2 = base.linear(base.hidden, base.num_classes, &mut rng, device);
        let model = SeedPlusCnn {
            conv1,
            bn1: BatchNormConfig::new(base.conv1_channels).init(device),
            conv2,
            bn2: BatchNormConfig::new(base.conv2_channels).init(device),
            fc1,
            fc2,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
        };
        with_stable_ids(model)
    }
}

impl SeedPlusCnn {
    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        // Batch norm sits between convolution and pooling, so the seed CNN's
        // fused layer does not apply: the convolutions get their own
        // backward pass (`fused::conv`), and batch norm, pooling and ReLU
        // run as one layer (`fused::batch_norm_pool_relu`).
        let x = batch_norm_pool_relu(conv(images, &self.conv1), &self.bn1, &self.pool);
        let x = batch_norm_pool_relu(conv(x, &self.conv2), &self.bn2, &self.pool);
        let x = x.flatten::<2>(1, 3);
        let x = self.relu.forward(self.fc1.forward(x));
        self.fc2.forward(dropout(x, &self.dropout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;

    #[test]
    fn adds_only_the_batch_norm_parameters() {
        let (_, device) = test_devices().remove(0);
        let model = SeedPlusCnnConfig::new().init(0, &device);
        // 171,158 + 2·16 + 2·32 learned; running statistics are state, not parameters.
        assert_eq!(crate::parameter_count(&model), 171_158 + 96);
    }

    #[test]
    fn training_and_inference_differ_only_by_dropout_and_batch_statistics() {
        let (_, device) = test_devices().remove(0);
        let model = SeedPlusCnnConfig::new().init(0, &device);
        let images = Tensor::<4>::ones([4, 1, 28, 28], &device);
        let logits = model.forward(images.clone());
        assert_eq!(logits.dims(), [4, 10]);
        // Without autodiff, batch norm uses its running statistics and
        // dropout is off: the output is deterministic.
        let again = model.forward(images);
        assert_eq!(
            logits.into_data().try_into_vec_as::<f32>().unwrap(),
            again.into_data().try_into_vec_as::<f32>().unwrap()
        );
    }
}
