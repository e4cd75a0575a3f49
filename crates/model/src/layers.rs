//! A model's convolution layers one at a time, each as the model runs it
//! (the seed CNN's conv → pool → relu, seed-plus's plain convolution, the
//! conv → batch norm → ReLU blocks of HVC and the Kaggle-style CNN), with
//! its shapes and multiply-adds, so `mnist bench` can time each on its own
//! and say how far it is from the machine's GEMM peak.

use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::Network;
use crate::fused::{conv, conv_pool_relu, conv_spec};

/// One convolution layer of a model, ready to run on its own.
pub struct LayerProbe<'a> {
    /// The layer's key prefix in the weights (`conv1`, `convs.3`).
    pub name: String,
    /// `5×5 s1 p2`: kernel, stride, padding.
    pub geometry: String,
    /// `[channels, height, width]` of one image's input.
    pub input: [usize; 3],
    /// `[channels, height, width]` of one image's output.
    pub output: [usize; 3],
    /// Multiply-adds of the convolution for one image.
    pub multiply_adds: usize,
    /// Whether the model needs this layer's input gradient (every layer
    /// but the first): its backward pass is then two GEMMs, else one.
    pub wants_input_grad: bool,
    run: Box<dyn Fn(Tensor<4>) -> Tensor<4> + 'a>,
}

impl LayerProbe<'_> {
    /// The layer's forward pass as the model runs it.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        (self.run)(x)
    }

    /// Floating-point operations of one forward pass over `batch` images
    /// (a multiply-add is two).
    pub fn forward_flops(&self, batch: usize) -> f64 {
        2.0 * (self.multiply_adds * batch) as f64
    }

    /// Floating-point operations of the backward pass over `batch` images:
    /// the weight gradient, and the input gradient when wanted.
    pub fn backward_flops(&self, batch: usize) -> f64 {
        let gemms = if self.wants_input_grad { 2.0 } else { 1.0 };
        gemms * self.forward_flops(batch)
    }
}

/// Kernel side, stride and padding of one of the models' convolutions,
/// all of which [`conv`] covers.
fn geometry(layer: &Conv2d) -> (usize, usize, usize) {
    let spec = conv_spec(layer).expect("the models' convolutions are square and evenly padded");
    (layer.weight.dims()[2], spec.stride, spec.padding)
}

/// A probe for `layer` on `input`, its output side divided by `pool`
/// (2 where the layer pools, else 1).
fn probe<'a>(
    name: String,
    layer: &Conv2d,
    input: [usize; 3],
    pool: usize,
    run: Box<dyn Fn(Tensor<4>) -> Tensor<4> + 'a>,
) -> LayerProbe<'a> {
    let (kernel, stride, padding) = geometry(layer);
    let [cin, h, w] = input;
    let cout = layer.weight.dims()[0];
    let (oh, ow) = (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    );
    LayerProbe {
        name,
        geometry: format!("{kernel}×{kernel} s{stride} p{padding}"),
        input,
        output: [cout, oh / pool, ow / pool],
        multiply_adds: cout * oh * ow * cin * kernel * kernel,
        wants_input_grad: false,
        run,
    }
}

impl Network {
    /// The convolution layers, in order, for `[channels, 28, 28]` inputs.
    pub fn conv_layers(&self) -> Vec<LayerProbe<'_>> {
        let mut layers = match self {
            Network::Seed(m) => {
                let first = probe(
                    "conv1".into(),
                    &m.conv1,
                    [m.conv1.weight.dims()[1], 28, 28],
                    2,
                    Box::new(|x| conv_pool_relu(x, &m.conv1, &m.pool)),
                );
                let input = first.output;
                let second = probe(
                    "conv2".into(),
                    &m.conv2,
                    input,
                    2,
                    Box::new(|x| conv_pool_relu(x, &m.conv2, &m.pool)),
                );
                vec![first, second]
            }
            Network::SeedPlus(m) => {
                let first = probe(
                    "conv1".into(),
                    &m.conv1,
                    [m.conv1.weight.dims()[1], 28, 28],
                    1,
                    Box::new(|x| conv(x, &m.conv1)),
                );
                let [c, h, w] = first.output;
                let second = probe(
                    "conv2".into(),
                    &m.conv2,
                    [c, h / 2, w / 2],
                    1,
                    Box::new(|x| conv(x, &m.conv2)),
                );
                vec![first, second]
            }
            Network::Hvc(m) => blocks(&m.convs),
            Network::Kaggle(m) => blocks(&m.convs),
        };
        for layer in layers.iter_mut().skip(1) {
            layer.wants_input_grad = true;
        }
        layers
    }
}

/// conv → batch norm → ReLU blocks applied one after the other.
fn blocks(convs: &[crate::block::ConvBlock]) -> Vec<LayerProbe<'_>> {
    let mut input = [convs[0].conv.weight.dims()[1], 28, 28];
    convs
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let layer = probe(
                format!("convs.{i}"),
                &block.conv,
                input,
                1,
                Box::new(|x| block.forward(x)),
            );
            input = layer.output;
            layer
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelKind;
    use crate::backend::test_devices;

    #[test]
    fn every_models_layers_chain_and_run_at_their_stated_shapes() {
        let (_, device) = test_devices().remove(0);
        for kind in ModelKind::ALL {
            let model = kind.init(0, &device);
            let layers = model.conv_layers();
            assert!(!layers[0].wants_input_grad && layers[1].wants_input_grad);
            for layer in &layers {
                let [c, h, w] = layer.input;
                let out = layer.forward(Tensor::ones([2, c, h, w], &device));
                let [oc, oh, ow] = layer.output;
                assert_eq!(out.dims(), [2, oc, oh, ow], "{kind} {}", layer.name);
            }
        }
        // The Kaggle-style CNN's multiply-adds, as its documentation says.
        let kaggle = ModelKind::Kaggle.init(0, &device);
        let total: usize = kaggle.conv_layers().iter().map(|l| l.multiply_adds).sum();
        assert_eq!(total, 15_161_472);
        let seed = ModelKind::Seed.init(0, &device);
        let layers = seed.conv_layers();
        assert_eq!(layers[1].input, [16, 14, 14]);
        assert_eq!(layers[1].multiply_adds, 32 * 14 * 14 * 16 * 25);
        assert_eq!(layers[1].geometry, "5×5 s1 p2");
    }
}
