//! Models printed as PyTorch prints them (`print(model)`), so the report
//! reads like the notebook's.

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};

use crate::{Hvc, KaggleCnn, SeedCnn, SeedPlusCnn};

/// A PyTorch-style description of a model.
pub trait TorchSummary {
    /// The multi-line `print(model)` text.
    fn torch_summary(&self) -> String;
}

fn padding(padding: &PaddingConfig2d) -> String {
    match padding {
        PaddingConfig2d::Explicit(top, left, _, _) => format!("({top}, {left})"),
        PaddingConfig2d::Valid => "(0, 0)".to_string(),
        PaddingConfig2d::Same => "same".to_string(),
    }
}

/// `Conv2d(1, 16, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))`.
pub fn conv2d(layer: &Conv2d) -> String {
    let [out, cin_per_group, _, _] = layer.weight.lazy_shape().dims::<4>();
    let [kh, kw] = layer.kernel_size;
    let [sh, sw] = layer.stride;
    format!(
        "Conv2d({}, {out}, kernel_size=({kh}, {kw}), stride=({sh}, {sw}), padding={})",
        cin_per_group * layer.groups,
        padding(&layer.padding)
    )
}

/// `Linear(in_features=1568, out_features=100, bias=True)`.
pub fn linear(layer: &Linear) -> String {
    // Burn stores [in, out].
    let [din, dout] = layer.weight.lazy_shape().dims::<2>();
    let bias = if layer.bias.is_some() {
        "True"
    } else {
        "False"
    };
    format!("Linear(in_features={din}, out_features={dout}, bias={bias})")
}

/// `MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)`.
pub fn max_pool2d(layer: &MaxPool2d) -> String {
    let square = |v: [usize; 2]| {
        if v[0] == v[1] {
            v[0].to_string()
        } else {
            format!("({}, {})", v[0], v[1])
        }
    };
    let pad = match &layer.padding {
        PaddingConfig2d::Explicit(top, _, _, _) => *top,
        _ => 0,
    };
    format!(
        "MaxPool2d(kernel_size={}, stride={}, padding={pad}, dilation={}, ceil_mode={})",
        square(layer.kernel_size),
        square(layer.stride),
        square(layer.dilation),
        if layer.ceil_mode { "True" } else { "False" }
    )
}

/// `BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)`.
pub fn batch_norm(layer: &BatchNorm, rank: usize) -> String {
    let [features] = layer.gamma.lazy_shape().dims::<1>();
    format!(
        "BatchNorm{rank}d({features}, eps={:e}, momentum={}, affine=True, track_running_stats=True)",
        layer.epsilon, layer.momentum
    )
    .replace("e-5", "e-05")
}

/// `Dropout(p=0.3, inplace=False)`.
pub fn dropout(layer: &Dropout) -> String {
    format!("Dropout(p={}, inplace=False)", layer.prob)
}

impl TorchSummary for SeedPlusCnn {
    fn torch_summary(&self) -> String {
        format!(
            "SeedPlusCNN(\n  (conv1): {}\n  (bn1): {}\n  (conv2): {}\n  (bn2): {}\n  (fc1): {}\n  (fc2): {}\n  \
             (pool): {}\n  (relu): ReLU()\n  (dropout): {}\n)",
            conv2d(&self.conv1),
            batch_norm(&self.bn1, 2),
            conv2d(&self.conv2),
            batch_norm(&self.bn2, 2),
            linear(&self.fc1),
            linear(&self.fc2),
            max_pool2d(&self.pool),
            dropout(&self.dropout),
        )
    }
}

impl TorchSummary for Hvc {
    fn torch_summary(&self) -> String {
        let mut text = String::from("HVC(\n  (convs): ModuleList(\n");
        for (i, block) in self.convs.iter().enumerate() {
            text += &format!("    ({i}): {}\n", block.torch_summary());
        }
        text += "  )\n  (branches): ModuleList(\n";
        for (i, branch) in self.branches.iter().enumerate() {
            let [classes, positions, dims] = branch.weight.lazy_shape().dims::<3>();
            text += &format!(
                "    ({i}): HomogeneousVectorCapsules(after conv {}, {positions} capsules of {dims} → {classes} classes, {})\n",
                self.taps[i] + 1,
                batch_norm(&branch.bn, 1)
            );
        }
        text + "  )\n)"
    }
}

impl TorchSummary for KaggleCnn {
    fn torch_summary(&self) -> String {
        let mut text = String::from("KaggleCNN(\n  (convs): ModuleList(\n");
        for (i, block) in self.convs.iter().enumerate() {
            text += &format!("    ({i}): {}\n", block.torch_summary());
        }
        format!(
            "{text}  )\n  (dropout): {}\n  (fc): {}\n)",
            dropout(&self.dropout),
            linear(&self.fc)
        )
    }
}

impl TorchSummary for SeedCnn {
    fn torch_summary(&self) -> String {
        format!(
            "CNN(\n  (conv1): {}\n  (conv2): {}\n  (fc1): {}\n  (fc2): {}\n  (pool): {}\n  (relu): ReLU()\n)",
            conv2d(&self.conv1),
            conv2d(&self.conv2),
            linear(&self.fc1),
            linear(&self.fc2),
            max_pool2d(&self.pool),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedCnnConfig;
    use crate::backend::test_devices;

    #[test]
    fn seed_cnn_prints_like_the_notebook() {
        let (_, device) = test_devices().remove(0);
        let text = SeedCnnConfig::new().init(0, &device).torch_summary();
        let expected = "CNN(
  (conv1): Conv2d(1, 16, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (conv2): Conv2d(16, 32, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2))
  (fc1): Linear(in_features=1568, out_features=100, bias=True)
  (fc2): Linear(in_features=100, out_features=10, bias=True)
  (pool): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
  (relu): ReLU()
)";
        assert_eq!(text, expected);
    }
}
