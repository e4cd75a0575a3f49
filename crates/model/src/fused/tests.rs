//! The fused layer against Burn's own conv2d → max_pool2d → relu, and the
//! plain convolution against Burn's conv2d, on every compiled-in backend,
//! forward and backward.

use super::*;
use crate::backend::test_devices;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, TensorData, Tolerance};

fn layer(cin: usize, cout: usize, kernel: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(
            kernel / 2,
            kernel / 2,
            kernel / 2,
            kernel / 2,
        ))
        .init(device)
}

fn reference(x: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    activation::relu(pool_2x2_layer().forward(conv.forward(x)))
}

/// Output, input gradient, weight gradient and bias gradient.
type Pass = (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<1>);

/// The [`Pass`] of `Σ layer(x, conv) · r` for a fixed random `r`.
fn run(
    x: &Tensor<4>,
    conv: &Conv2d,
    r: &Tensor<4>,
    layer: impl Fn(Tensor<4>, &Conv2d) -> Tensor<4>,
) -> Pass {
    let x = x.clone().require_grad();
    let out = layer(x.clone(), conv);
    let grads = (out.clone() * r.clone()).sum().backward();
    let bias = conv.bias.as_ref().expect("layer has a bias");
    (
        out.detach(),
        x.grad(&grads).expect("input gradient"),
        conv.weight.grad(&grads).expect("weight gradient"),
        bias.grad(&grads).expect("bias gradient"),
    )
}

/// Ours and Burn's results of [`run`] agree: output and input gradient
/// within 2e-4, weight and bias gradients within `param_tolerance`; and the
/// gradients are not trivially zero.
fn assert_agree(ours: Pass, plain: Pass, param_tolerance: f32, what: &str) {
    let close = |a: TensorData, b: TensorData, tolerance: f32| {
        a.assert_approx_eq::<f32>(&b, Tolerance::absolute(tolerance));
    };
    close(ours.0.to_data(), plain.0.to_data(), 2e-4);
    close(ours.1.to_data(), plain.1.to_data(), 2e-4);
    close(ours.2.to_data(), plain.2.to_data(), param_tolerance);
    close(ours.3.to_data(), plain.3.to_data(), param_tolerance);
    assert!(ours.2.abs().sum().into_scalar::<f32>() > 0.0, "{what}");
    assert!(ours.1.abs().sum().into_scalar::<f32>() > 0.0, "{what}");
}

#[test]
fn fused_layer_matches_burns_ops_forward_and_backward() {
    for (backend, device) in test_devices() {
        let device = device.autodiff();
        for (cin, cout, side, kernel) in
            [(1, 16, 28, 5), (16, 32, 14, 5), (3, 4, 6, 3), (2, 3, 4, 5)]
        {
            let conv = layer(cin, cout, kernel, &device);
            let x = Tensor::<4>::random([5, cin, side, side], Distribution::Default, &device);
            let r = Tensor::<4>::random(
                [5, cout, side / 2, side / 2],
                Distribution::Default,
                &device,
            );
            let pool = pool_2x2_layer();
            let fused = run(&x, &conv, &r, |x, conv| conv_pool_relu(x, conv, &pool));
            let plain = run(&x, &conv, &r, reference);
            let what = format!("{} cin={cin} cout={cout} side={side}", backend.name());
            assert_agree(fused, plain, 2e-3, &what);
        }
    }
}

#[test]
fn untracked_input_gets_no_gradient_but_the_weights_do() {
    for (_, device) in test_devices() {
        let device = device.autodiff();
        let conv = layer(1, 4, 5, &device);
        let x = Tensor::<4>::random([2, 1, 8, 8], Distribution::Default, &device);
        let grads = conv_pool_relu(x.clone(), &conv, &pool_2x2_layer())
            .sum()
            .backward();
        assert!(x.grad(&grads).is_none());
        assert!(conv.weight.grad(&grads).is_some());
    }
}

#[test]
fn layers_the_fusion_does_not_cover_fall_back_to_the_plain_ops() {
    for (_, device) in test_devices() {
        // No padding: not "same", so the composed path runs.
        let conv = Conv2dConfig::new([1, 2], [3, 3]).init(&device);
        let x = Tensor::<4>::random([2, 1, 10, 10], Distribution::Default, &device);
        let out = conv_pool_relu(x.clone(), &conv, &pool_2x2_layer());
        assert_eq!(out.dims(), [2, 2, 4, 4]);
        out.to_data()
            .assert_approx_eq::<f32>(&reference(x.clone(), &conv).to_data(), Tolerance::default());
        // A pooling the kernels do not cover (3×3) is the layer's own.
        let conv = layer(1, 2, 5, &device);
        let pool = burn::nn::pool::MaxPool2dConfig::new([3, 3])
            .with_strides([3, 3])
            .init();
        let out = conv_pool_relu(x.clone(), &conv, &pool);
        let expected = activation::relu(pool.forward(conv.forward(x)));
        assert_eq!(out.dims(), [2, 2, 3, 3]);
        out.to_data()
            .assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
    }
}

/// A convolution with a bias, square kernel, and the same stride and
/// padding on both axes.
fn strided_layer(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device)
}

#[test]
fn plain_convolution_matches_burns_forward_and_backward() {
    for (backend, device) in test_devices() {
        let device = device.autodiff();
        // seed-plus's two layers, an odd plane, a 1×1 kernel, HVC's 3×3
        // unpadded layer, a 3×3 layer wide and deep enough for Winograd on
        // flex (forward, weight and input gradients), and
        // the Kaggle-style CNN's strided 5×5 and its 4×4 down to one pixel.
        for (cin, cout, side, kernel, stride, padding) in [
            (1, 16, 28, 5, 1, 2),
            (16, 32, 14, 5, 1, 2),
            (3, 4, 7, 3, 1, 1),
            (2, 3, 5, 1, 1, 0),
            (8, 12, 12, 3, 1, 0),
            (16, 64, 14, 3, 1, 1),
            (6, 8, 12, 5, 2, 2),
            (4, 6, 4, 4, 1, 0),
            (3, 5, 9, 3, 2, 0),
        ] {
            let conv = strided_layer(cin, cout, kernel, stride, padding, &device);
            let x = Tensor::<4>::random([4, cin, side, side], Distribution::Default, &device);
            let out_side = (side + 2 * padding - kernel) / stride + 1;
            let r = Tensor::<4>::random(
                [4, cout, out_side, out_side],
                Distribution::Default,
                &device,
            );
            let ours = run(&x, &conv, &r, super::conv);
            let plain = run(&x, &conv, &r, |x, conv| conv.forward(x));
            let what = format!(
                "{} cin={cin} cout={cout} side={side} k={kernel} s={stride} p={padding}",
                backend.name()
            );
            assert_agree(ours, plain, 5e-3, &what);
        }
    }
}

#[test]
fn a_convolution_without_bias_matches_burns() {
    for (backend, device) in test_devices() {
        let device = device.autodiff();
        let conv = Conv2dConfig::new([3, 4], [3, 3])
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random([3, 3, 10, 10], Distribution::Default, &device).require_grad();
        let r = Tensor::<4>::random([3, 4, 8, 8], Distribution::Default, &device);
        let pass = |layer: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let out = layer(x.clone());
            let grads = (out.clone() * r.clone()).sum().backward();
            (
                out.detach().into_data(),
                x.grad(&grads).expect("input gradient").into_data(),
                conv.weight
                    .grad(&grads)
                    .expect("weight gradient")
                    .into_data(),
            )
        };
        let ours = pass(&|x| super::conv(x, &conv));
        let plain = pass(&|x| conv.forward(x));
        let tolerance = Tolerance::absolute(5e-3);
        ours.0.assert_approx_eq::<f32>(&plain.0, tolerance);
        ours.1.assert_approx_eq::<f32>(&plain.1, tolerance);
        ours.2.assert_approx_eq::<f32>(&plain.2, tolerance);
        assert_eq!(ours.0.num_elements(), 3 * 4 * 8 * 8, "{}", backend.name());
    }
}

#[test]
fn convolutions_the_kernels_do_not_cover_run_burns_own() {
    for (_, device) in test_devices() {
        let x = Tensor::<4>::random([2, 2, 9, 9], Distribution::Default, &device);
        let layers = [
            Conv2dConfig::new([2, 2], [3, 3]).with_dilation([2, 2]),
            Conv2dConfig::new([2, 2], [3, 3]).with_groups(2),
            Conv2dConfig::new([2, 2], [3, 5]),
            Conv2dConfig::new([2, 2], [3, 3]).with_stride([1, 2]),
            Conv2dConfig::new([2, 2], [3, 3]).with_padding(PaddingConfig2d::Explicit(0, 1, 0, 1)),
        ];
        for config in layers {
            let conv = config.init(&device);
            let out = super::conv(x.clone(), &conv);
            let expected = conv.forward(x.clone());
            assert_eq!(out.dims(), expected.dims(), "{config:?}");
            out.to_data()
                .assert_approx_eq::<f32>(&expected.to_data(), Tolerance::default());
        }
    }
}

fn pool_2x2_layer() -> MaxPool2d {
    burn::nn::pool::MaxPool2dConfig::new(POOL)
        .with_strides(POOL)
        .init()
}

#[test]
fn pooling_with_relu_matches_burns_forward_and_backward() {
    let pool = pool_2x2_layer();
    for (backend, device) in test_devices() {
        let device = device.autodiff();
        // seed-plus's two planes, and more planes than one job holds.
        for (channels, side) in [(16, 28), (32, 14), (70, 4)] {
            // Centred on zero, so the ReLU closes about half the windows.
            let x = Tensor::<4>::random(
                [3, channels, side, side],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
            .require_grad();
            let r = Tensor::<4>::random(
                [3, channels, side / 2, side / 2],
                Distribution::Default,
                &device,
            );
            let pass = |out: Tensor<4>| {
                let grads = (out.clone() * r.clone()).sum().backward();
                (
                    out.into_data(),
                    x.grad(&grads).expect("input gradient").into_data(),
                )
            };
            let (ours, ours_grad) = pass(pool_relu(x.clone(), &pool));
            let (plain, plain_grad) = pass(activation::relu(pool.forward(x.clone())));
            let what = format!("{} channels={channels} side={side}", backend.name());
            ours.assert_eq(&plain, true);
            ours_grad.assert_approx_eq::<f32>(&plain_grad, Tolerance::absolute(1e-6));
            let routed = ours_grad.iter::<f32>().filter(|g| *g != 0.0).count();
            // One gradient per open window: about a quarter of the input.
            assert!(
                routed > x.dims().iter().product::<usize>() / 8,
                "{what}: {routed}"
            );
        }
    }
}

#[test]
fn other_poolings_run_burns_own() {
    let pool = burn::nn::pool::MaxPool2dConfig::new([3, 3]).init();
    for (_, device) in test_devices() {
        let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Default, &device);
        let out = pool_relu(x.clone(), &pool);
        assert_eq!(out.dims(), [2, 3, 3, 3]);
        out.into_data()
            .assert_eq(&activation::relu(pool.forward(x)).into_data(), true);
    }
}

#[test]
fn the_seed_cnns_own_pool_takes_the_fused_path() {
    let (_, device) = test_devices().remove(0);
    let model = crate::SeedCnnConfig::new().init(0, &device);
    assert!(is_pool_2x2(&model.pool));
}
