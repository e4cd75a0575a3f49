//! A CNN laid out like the strongest single models of Kaggle's MNIST
//! competition (Chris Deotte, "How to choose CNN Architecture MNIST", 2018:
//! 32C3-32C3-32C5S2-64C3-64C3-64C5S2-128C4 with batch norm and dropout 0.4),
//! with every convolution followed by batch norm and ReLU. Strided 5×5
//! convolutions take the place of pooling, and a 4×4 convolution reads the
//! last 4×4 map whole (325,994 parameters, about 15 million multiply-adds
//! per image, five times seed-plus's).
//!
//! | layer    | operation                                  | output        |
//! |----------|--------------------------------------------|---------------|
//! | convs.0  | 3×3 conv 1→32, BN, ReLU                    | 32 × 26 × 26  |
//! | convs.1  | 3×3 conv 32→32, BN, ReLU                   | 32 × 24 × 24  |
//! | convs.2  | 5×5 conv 32→32, stride 2, pad 2, BN, ReLU  | 32 × 12 × 12  |
//! | dropout  | p = 0.4                                    |               |
//! | convs.3  | 3×3 conv 32→64, BN, ReLU                   | 64 × 10 × 10  |
//! | convs.4  | 3×3 conv 64→64, BN, ReLU                   | 64 × 8 × 8    |
//! | convs.5  | 5×5 conv 64→64, stride 2, pad 2, BN, ReLU  | 64 × 4 × 4    |
//! | dropout  | p = 0.4                                    |               |
//! | convs.6  | 4×4 conv 64→128, BN, ReLU                  | 128 × 1 × 1   |
//! | dropout  | p = 0.4                                    |               |
//! | fc       | 128→10                                     | 10 logits     |

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::block::{BlockShape, ConvBlock};
use crate::fused;
use crate::init::{torch_bound, uniform};
use crate::torch_io::with_stable_ids;

/// One convolution of the stack: kernel, stride, padding, and its output
/// channels as a multiple of [`KaggleCnnConfig::width`].
struct Layer {
    kernel: usize,
    stride: usize,
    padding: usize,
    widths: usize,
    /// Dropout after this layer.
    drop: bool,
}

const fn layer(kernel: usize, stride: usize, padding: usize, widths: usize, drop: bool) -> Layer {
    Layer {
        kernel,
        stride,
        padding,
        widths,
        drop,
    }
}

/// The table above, for 28 × 28 images; the last layer's kernel is
/// whatever side is left (4).
const LAYERS: [Layer; 7] = [
    layer(3, 1, 0, 1, false),
    layer(3, 1, 0, 1, false),
    layer(5, 2, 2, 1, true),
    layer(3, 1, 0, 2, false),
    layer(3, 1, 0, 2, false),
    layer(5, 2, 2, 2, true),
    layer(0, 1, 0, 4, true),
];

/// Configuration of [`KaggleCnn`]; the defaults are the table's.
#[derive(Config, Debug)]
pub struct KaggleCnnConfig {
    /// Channels of the first three convolutions; the next three have twice
    /// as many, the last four times.
    #[config(default = 32)]
    pub width: usize,
    /// Dropout probability after each stage.
    #[config(default = 0.4)]
    pub dropout: f64,
    /// Input channels.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

/// The Kaggle-style CNN.
#[derive(Module, Debug)]
pub struct KaggleCnn {
    /// The seven conv → BN → ReLU blocks.
    pub convs: Vec<ConvBlock>,
    /// Classifier over the last block's channels.
    pub fc: Linear,
    /// Dropout after each stage.
    pub dropout: Dropout,
}

/// Input side the layer table is laid out for.
pub const IMAGE_SIDE: usize = 28;

impl KaggleCnnConfig {
    /// The blocks' shapes for 28 × 28 images.
    pub fn block_shapes(&self) -> Vec<BlockShape> {
        let mut side = IMAGE_SIDE;
        let mut cin = self.in_channels;
        LAYERS
            .iter()
            .map(|layer| {
                let shape = BlockShape {
                    in_channels: cin,
                    out_channels: layer.widths * self.width,
                    kernel: if layer.kernel == 0 {
                        side
                    } else {
                        layer.kernel
                    },
                    stride: layer.stride,
                    padding: layer.padding,
                };
                side = shape.output_side(side);
                cin = shape.out_channels;
                shape
            })
            .collect()
    }

    /// A network with PyTorch's default initialisation drawn from `seed`.
    pub fn init(&self, seed: u64, device: &Device) -> KaggleCnn {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let convs: Vec<ConvBlock> = self
            .block_shapes()
            .into_iter()
            .map(|shape| ConvBlock::new(shape, &mut rng, device))
            .collect();
        let features = 4 * self.width;
        let bound = torch_bound(features);
        let mut fc = LinearConfig::new(features, self.num_classes).init(device);
        // Burn stores [in, out]; PyTorch draws [out, in] — the same
        // distribution, so the layout of the draws does not matter here.
        fc.weight = uniform([features, self.num_classes], bound, &mut rng, device);
        fc.bias = Some(uniform([self.num_classes], bound, &mut rng, device));
        let model = KaggleCnn {
            convs,
            fc,
            dropout: DropoutConfig::new(self.dropout).init(),
        };
        with_stable_ids(model)
    }
}

impl KaggleCnn {
    /// Logits `[batch, classes]` for images `[batch, channels, 28, 28]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for (block, layer) in self.convs.iter().zip(&LAYERS) {
            x = block.forward(x);
            if layer.drop {
                x = fused::dropout(x, &self.dropout);
            }
        }
        self.fc.forward(x.flatten::<2>(1, 3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;

    #[test]
    fn has_the_tables_shape() {
        let (_, device) = test_devices().remove(0);
        let model = KaggleCnnConfig::new().init(0, &device);
        // Convolutions 288 + 9,216 + 25,600 + 18,432 + 36,864 + 102,400 +
        // 131,072, their batch norms 2·(3·32 + 3·64 + 128), fc 1,290.
        assert_eq!(crate::parameter_count(&model), 325_994);
        let sides: Vec<usize> = KaggleCnnConfig::new()
            .block_shapes()
            .iter()
            .scan(IMAGE_SIDE, |side, shape| {
                *side = shape.output_side(*side);
                Some(*side)
            })
            .collect();
        assert_eq!(sides, [26, 24, 12, 10, 8, 4, 1]);
    }

    #[test]
    fn maps_images_to_scores_and_is_deterministic_in_inference() {
        let (_, device) = test_devices().remove(0);
        let model = KaggleCnnConfig::new().with_width(4).init(1, &device);
        let images = Tensor::<4>::ones([3, 1, 28, 28], &device);
        let logits = model.forward(images.clone());
        assert_eq!(logits.dims(), [3, 10]);
        let again = model.forward(images);
        assert_eq!(
            logits.into_data().try_into_vec_as::<f32>().unwrap(),
            again.into_data().try_into_vec_as::<f32>().unwrap()
        );
    }
}
