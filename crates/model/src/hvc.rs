//! The Homogeneous Vector Capsule network of Byerly, Kalganova and Dear,
//! "No Routing Needed Between Capsules" (arXiv 2001.09136), as we read the
//! paper (1,514,268 parameters):
//!
//! | layer           | operation                              | output        |
//! |-----------------|----------------------------------------|---------------|
//! | convs.0         | 3×3 conv 1→32, no padding, BN, ReLU    | 32 × 26 × 26  |
//! | convs.1         | 3×3 conv 32→48, BN, ReLU               | 48 × 24 × 24  |
//! | convs.2         | 3×3 conv 48→64, BN, ReLU               | 64 × 22 × 22  |
//! | branches.0      | 484 capsules of 64 → 10 class capsules | 10 × 64       |
//! | convs.3 – 5     | 80, 96, 112 channels                   | 112 × 16 × 16 |
//! | branches.1      | 256 capsules of 112 → 10               | 10 × 112      |
//! | convs.6 – 8     | 128, 144, 160 channels                 | 160 × 10 × 10 |
//! | branches.2      | 100 capsules of 160 → 10               | 10 × 160      |
//! | logits          | sum of the three branches' scores      | 10            |
//!
//! A branch reads each spatial position of its feature map as a capsule, a
//! vector over the channels. Class capsule `j` is `Σᵢ Wⱼᵢ ⊙ uᵢ`: every input
//! capsule weighted element-wise by its own learned vector and summed, with
//! no routing. The class capsules are batch-normalised and each class's
//! score is the sum of its capsule's components.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::block::BlockShape;
pub use crate::block::ConvBlock;
use crate::fused::batch_norm;
use crate::init::{torch_bound, uniform};
use crate::torch_io::with_stable_ids;

/// Configuration of [`Hvc`]; the defaults are the paper's MNIST model.
#[derive(Config, Debug)]
pub struct HvcConfig {
    /// Output channels of the nine 3×3 convolutions.
    #[config(default = "vec![32, 48, 64, 80, 96, 112, 128, 144, 160]")]
    pub channels: Vec<usize>,
    /// After which convolutions (1-based) a capsule branch is taken.
    #[config(default = "vec![3, 6, 9]")]
    pub branch_after: Vec<usize>,
    /// Input channels.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = 28)]
    pub image_size: usize,
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

/// Capsules from one feature map to class scores.
#[derive(Module, Debug)]
pub struct CapsuleBranch {
    /// Element-wise weights `[classes, positions, capsule dims]`.
    pub weight: Param<Tensor<3>>,
    /// Batch norm over the class capsules.
    pub bn: BatchNorm,
}

/// The HVC network.
#[derive(Module, Debug)]
pub struct Hvc {
    /// The convolution stack.
    pub convs: Vec<ConvBlock>,
    /// One capsule branch per tap.
    pub branches: Vec<CapsuleBranch>,
    /// After which convolutions (0-based) each branch taps the stack.
    pub taps: Vec<usize>,
}

const KERNEL: usize = 3;

/// An [`HvcConfig`] that describes no network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HvcConfigError {
    /// No convolutions, or no capsule branch.
    #[error("an HVC network needs convolutions and at least one branch")]
    Empty,
    /// Branches out of order or after a convolution that is not there.
    #[error(
        "branches must follow convolutions 1..={convolutions} in increasing order, got {branch_after:?}"
    )]
    Branches {
        /// Convolutions in the stack.
        convolutions: usize,
        /// The branch positions given.
        branch_after: Vec<usize>,
    },
    /// The unpadded convolutions would shrink the image to nothing.
    #[error("{convolutions} unpadded 3×3 convolutions need images larger than {image_size} pixels")]
    ImageTooSmall {
        /// Convolutions in the stack.
        convolutions: usize,
        /// The image side given.
        image_size: usize,
    },
}

impl HvcConfig {
    /// Say what is wrong with the configuration, if anything.
    pub fn check(&self) -> Result<(), HvcConfigError> {
        if self.channels.is_empty() || self.branch_after.is_empty() {
            return Err(HvcConfigError::Empty);
        }
        let mut last = 0;
        for &after in &self.branch_after {
            if after <= last || after > self.channels.len() {
                return Err(HvcConfigError::Branches {
                    convolutions: self.channels.len(),
                    branch_after: self.branch_after.clone(),
                });
            }
            last = after;
        }
        if self.image_size <= (KERNEL - 1) * self.channels.len() {
            return Err(HvcConfigError::ImageTooSmall {
                convolutions: self.channels.len(),
                image_size: self.image_size,
            });
        }
        Ok(())
    }

    /// A network with PyTorch-style initialisation drawn from `seed`.
    ///
    /// # Panics
    /// If [`HvcConfig::check`] fails; callers use the defaults or check first.
    pub fn init(&self, seed: u64, device: &Device) -> Hvc {
        if let Err(problem) = self.check() {
            panic!("invalid HVC configuration: {problem}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut convs = Vec::new();
        let mut branches = Vec::new();
        let mut cin = self.in_channels;
        let mut side = self.image_size;
        for (i, &cout) in self.channels.iter().enumerate() {
            let shape = BlockShape {
                in_channels: cin,
                out_channels: cout,
                kernel: KERNEL,
                stride: 1,
                padding: 0,
            };
            convs.push(ConvBlock::new(shape, &mut rng, device));
            cin = cout;
            side -= KERNEL - 1;
            if self.branch_after.contains(&(i + 1)) {
                let positions = side * side;
                let bound = torch_bound(positions);
                branches.push(CapsuleBranch {
                    weight: uniform([self.num_classes, positions, cout], bound, &mut rng, device),
                    bn: BatchNormConfig::new(self.num_classes).init(device),
                });
            }
        }
        let model = Hvc {
            convs,
            branches,
            taps: self.branch_after.iter().map(|&a| a - 1).collect(),
        };
        with_stable_ids(model)
    }
}

impl CapsuleBranch {
    /// Class scores `[batch, classes]` from a feature map `[batch, channels, h, w]`.
    pub fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        let [batch, dims, h, w] = features.dims();
        let [classes, positions, _] = self.weight.dims();
        // Capsules per position: [dims, batch, positions].
        let capsules = features.reshape([batch, dims, h * w]).swap_dims(0, 1);
        // Σᵢ Wⱼᵢ[d] · uᵢ[d] for every dim d is a batched product over d:
        // [dims, batch, positions] × [dims, positions, classes].
        let weight = self.weight.val().permute([2, 1, 0]);
        debug_assert_eq!(positions, h * w);
        let class_capsules = capsules.matmul(weight).permute([1, 2, 0]); // [batch, classes, dims]
        debug_assert_eq!(class_capsules.dims(), [batch, classes, dims]);
        batch_norm(class_capsules, &self.bn)
            .sum_dim(2)
            .squeeze_dim(2)
    }
}

impl Hvc {
    /// Logits `[batch, classes]` for images `[batch, channels, height, width]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        let mut scores: Option<Tensor<2>> = None;
        let mut branches = self.branches.iter();
        for (i, block) in self.convs.iter().enumerate() {
            x = block.forward(x);
            if self.taps.contains(&i)
                && let Some(branch) = branches.next()
            {
                let branch_scores = branch.forward(x.clone());
                scores = Some(match scores {
                    Some(sum) => sum + branch_scores,
                    None => branch_scores,
                });
            }
        }
        scores.expect("a checked configuration has at least one branch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;

    #[test]
    fn has_the_papers_shape() {
        let (_, device) = test_devices().remove(0);
        let model = HvcConfig::new().init(0, &device);
        // Convolutions 756,000 + their batch norms 1,728 + capsule weights
        // 309,760 + 286,720 + 160,000 + capsule batch norms 60.
        assert_eq!(crate::parameter_count(&model), 1_514_268);
        assert_eq!(model.taps, vec![2, 5, 8]);
    }

    #[test]
    fn a_small_variant_maps_images_to_scores() {
        let (_, device) = test_devices().remove(0);
        let config = HvcConfig::new()
            .with_channels(vec![4, 6, 8])
            .with_branch_after(vec![1, 3]);
        let model = config.init(0, &device);
        let logits = model.forward(Tensor::ones([2, 1, 28, 28], &device));
        assert_eq!(logits.dims(), [2, 10]);
    }

    #[test]
    fn impossible_configurations_are_explained() {
        let bad = HvcConfig::new().with_branch_after(vec![6, 3]);
        let err = bad.check().unwrap_err();
        assert!(matches!(err, HvcConfigError::Branches { .. }));
        assert!(err.to_string().contains("increasing"), "{err}");
        let deep = HvcConfig::new().with_channels(vec![8; 14]);
        let err = deep.check().unwrap_err();
        assert!(matches!(err, HvcConfigError::ImageTooSmall { .. }));
        assert!(err.to_string().contains("larger"), "{err}");
        HvcConfig::new().check().unwrap();
    }
}
