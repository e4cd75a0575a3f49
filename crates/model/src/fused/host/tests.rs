//! The host kernels against their definitions: naive loops for the
//! forward passes, central differences for the backward passes, and the
//! pooling's tie and ReLU rules.

use super::conv::*;
use super::pool::*;
use super::winograd;

/// Every multiply-add of the convolution, straight from its definition:
/// `visit(input index, weight index, output index)` for each output pixel,
/// input channel and kernel offset that reads inside the image, in that
/// order (output pixels outermost).
fn for_each_tap(shape: &ConvShape, mut visit: impl FnMut(usize, usize, usize)) {
    let (h, wd, k) = (shape.height, shape.width, shape.kernel);
    let (s, pad) = (shape.stride, shape.padding);
    let (oh, ow) = (shape.out_height(), shape.out_width());
    for n in 0..shape.batch {
        for o in 0..shape.out_channels {
            for y in 0..oh {
                for xx in 0..ow {
                    let oi = ((n * shape.out_channels + o) * oh + y) * ow + xx;
                    for c in 0..shape.in_channels {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (Some(iy), Some(ix)) = (
                                    (y * s + ky).checked_sub(pad),
                                    (xx * s + kx).checked_sub(pad),
                                ) else {
                                    continue;
                                };
                                if iy < h && ix < wd {
                                    let xi = ((n * shape.in_channels + c) * h + iy) * wd + ix;
                                    let wi = ((o * shape.in_channels + c) * k + ky) * k + kx;
                                    visit(xi, wi, oi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Straightforward loops: the definition the kernels must match.
fn naive_conv(shape: &ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let plane = shape.out_height() * shape.out_width();
    let mut out: Vec<f64> = (0..shape.conv_output_len())
        .map(|i| f64::from(b[i / plane % shape.out_channels]))
        .collect();
    for_each_tap(shape, |xi, wi, oi| out[oi] += f64::from(x[xi] * w[wi]));
    out.into_iter().map(|v| v as f32).collect()
}

/// `∂L/∂w[o, c, ky, kx] = Σ ∂L/∂out[n, o, y, x] · x[n, c, y·s + ky − p,
/// x·s + kx − p]`, straight from the definition.
fn naive_weight_grad(shape: &ConvShape, x: &[f32], output_grad: &[f32]) -> Vec<f32> {
    let mut grad = vec![0.0f64; shape.weight_len()];
    for_each_tap(shape, |xi, wi, oi| {
        grad[wi] += f64::from(x[xi] * output_grad[oi]);
    });
    grad.into_iter().map(|v| v as f32).collect()
}

/// `∂L/∂x[n, c, iy, ix] = Σ ∂L/∂out[n, o, y, x] · w[o, c, ky, kx]` over the
/// outputs that read that pixel.
fn naive_input_grad(shape: &ConvShape, w: &[f32], output_grad: &[f32]) -> Vec<f32> {
    let mut grad = vec![0.0f64; shape.input_len()];
    for_each_tap(shape, |xi, wi, oi| {
        grad[xi] += f64::from(output_grad[oi] * w[wi]);
    });
    grad.into_iter().map(|v| v as f32).collect()
}

pub(super) fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Central differences of `loss` with respect to each element of `v`.
fn central_differences(v: &[f32], eps: f32, loss: impl Fn(&[f32]) -> f64) -> Vec<f32> {
    (0..v.len())
        .map(|i| {
            let mut plus = v.to_vec();
            let mut minus = v.to_vec();
            plus[i] += eps;
            minus[i] -= eps;
            ((loss(&plus) - loss(&minus)) / (2.0 * eps as f64)) as f32
        })
        .collect()
}

fn shape() -> ConvShape {
    ConvShape::same(3, 2, 4, [6, 8], 5)
}

/// Convolutions the general path takes: the Kaggle-style CNN's (3×3
/// unpadded, 5×5 stride 2, 4×4 to a single pixel), HVC's, odd sizes with
/// stride 2, padding wider than half the kernel, offsets that read only
/// padding, one "same" shape for the shifted path, an unpadded one with
/// rows 8 to 15 wide for the crops and wide rows for the row-by-row copy.
fn general_shapes() -> Vec<ConvShape> {
    let shape = |cin, cout, [h, w]: [usize; 2], kernel, stride, padding| ConvShape {
        batch: 2,
        in_channels: cin,
        out_channels: cout,
        height: h,
        width: w,
        kernel,
        stride,
        padding,
    };
    vec![
        shape(2, 3, [8, 8], 3, 1, 0),
        shape(3, 2, [9, 8], 5, 2, 2),
        shape(2, 3, [4, 4], 4, 1, 0),
        shape(1, 2, [7, 5], 3, 2, 0),
        shape(2, 2, [5, 6], 3, 3, 1),
        shape(1, 2, [3, 4], 3, 1, 3),
        shape(2, 2, [2, 3], 5, 2, 3),
        shape(2, 3, [6, 5], 5, 1, 2),
        // Unpadded, output rows 8 to 15 wide: through crops of the plane.
        shape(2, 3, [12, 11], 3, 1, 0),
        // Output rows of 16 and more are copied row by row, not gathered.
        shape(2, 2, [5, 20], 3, 1, 0),
        shape(1, 2, [4, 19], 3, 1, 2),
    ]
}

#[test]
fn forward_matches_naive_convolution_pooling_and_relu() {
    let s = shape();
    let x = pseudo_random(s.input_len(), 1);
    let w = pseudo_random(s.weight_len(), 2);
    let b = pseudo_random(s.out_channels, 3);
    let (out, routes) = conv_pool_relu_forward(&s, &x, &w, &b);
    let expected = naive_conv(&s, &x, &w, &b);
    // Pool and rectify the naive result by hand.
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            for py in 0..s.height / 2 {
                for px in 0..s.width / 2 {
                    let at = |y: usize, x: usize| {
                        expected[((n * s.out_channels + o) * s.height + y) * s.width + x]
                    };
                    let m = at(2 * py, 2 * px)
                        .max(at(2 * py, 2 * px + 1))
                        .max(at(2 * py + 1, 2 * px))
                        .max(at(2 * py + 1, 2 * px + 1))
                        .max(0.0);
                    let got =
                        out[((n * s.out_channels + o) * s.height / 2 + py) * s.width / 2 + px];
                    assert!((got - m).abs() < 1e-5, "pooled value {got} vs {m}");
                }
            }
        }
    }
    assert!(out.contains(&0.0) && out.iter().any(|&v| v > 0.0));
    // Every zero output is blocked; every positive one routed.
    for (o, r) in out.iter().zip(&routes) {
        assert_eq!(*o > 0.0, *r != BLOCKED);
    }
}

/// Loss L = Σ output · r for a fixed random r; its gradient is checked
/// against central differences of the naive forward pass.
#[test]
fn backward_matches_finite_differences() {
    let s = ConvShape::same(2, 2, 3, [4, 6], 3);
    let x = pseudo_random(s.input_len(), 4);
    let w = pseudo_random(s.weight_len(), 5);
    let b = pseudo_random(s.out_channels, 6);
    let r = pseudo_random(s.output_len(), 7);
    let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
        let (out, _) = conv_pool_relu_forward(&s, x, w, b);
        out.iter().zip(&r).map(|(o, r)| (o * r) as f64).sum()
    };
    let (_, routes) = conv_pool_relu_forward(&s, &x, &w, &b);
    let grads = conv_pool_relu_backward(&s, &x, &w, &routes, &r, true);
    let eps = 1e-2f32;
    // Finite differences are exact for this piecewise-linear loss
    // unless a step crosses a kink, which these values keep rare.
    let agree = |analytic: &[f32], numeric: &[f32]| {
        let bad = analytic
            .iter()
            .zip(numeric)
            .filter(|(a, n)| (*a - *n).abs() > 1e-2)
            .count();
        bad * 20 <= analytic.len()
    };
    let numeric_x = central_differences(&x, eps, |x| loss(x, &w, &b));
    let numeric_w = central_differences(&w, eps, |w| loss(&x, w, &b));
    let numeric_b = central_differences(&b, eps, |b| loss(&x, &w, b));
    assert!(agree(grads.input.as_ref().unwrap(), &numeric_x));
    assert!(agree(&grads.weight, &numeric_w));
    assert!(agree(&grads.bias, &numeric_b));
    assert!(grads.weight.iter().any(|&g| g != 0.0));

    let without = conv_pool_relu_backward(&s, &x, &w, &routes, &r, false);
    assert!(without.input.is_none());
    assert_eq!(without.weight, grads.weight);
}

#[test]
fn plain_convolution_matches_naive_loops_on_odd_planes() {
    let s = ConvShape::same(3, 2, 4, [5, 7], 5);
    assert!(!s.is_supported() && s.conv_is_supported());
    let x = pseudo_random(s.input_len(), 11);
    let w = pseudo_random(s.weight_len(), 12);
    let b = pseudo_random(s.out_channels, 13);
    let got = conv2d_forward(&s, &x, &w, &b);
    let expected = naive_conv(&s, &x, &w, &b);
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-5, "{g} vs {e}");
    }
}

/// The convolution is linear, so for L = Σ conv(x) · r the gradients
/// are exact: dL/db[o] = Σ r[o], and central differences of the naive
/// loops agree with the analytic input and weight gradients.
#[test]
fn plain_convolution_backward_matches_finite_differences() {
    let s = ConvShape::same(2, 3, 2, [3, 5], 3);
    let x = pseudo_random(s.input_len(), 14);
    let w = pseudo_random(s.weight_len(), 15);
    let b = pseudo_random(s.out_channels, 16);
    let r = pseudo_random(s.conv_output_len(), 17);
    let loss = |x: &[f32], w: &[f32]| -> f64 {
        let out = naive_conv(&s, x, w, &b);
        out.iter().zip(&r).map(|(o, r)| (o * r) as f64).sum()
    };
    let grads = conv2d_backward(&s, &x, &w, &r, true);
    let eps = 1e-2f32;
    let check = |analytic: &[f32], numeric: Vec<f32>| {
        for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
            assert!((a - n).abs() < 1e-3, "element {i}: {a} vs {n}");
        }
    };
    check(
        grads.input.as_ref().unwrap(),
        central_differences(&x, eps, |x| loss(x, &w)),
    );
    check(&grads.weight, central_differences(&w, eps, |w| loss(&x, w)));
    let plane = s.out_height() * s.out_width();
    for o in 0..s.out_channels {
        let expected: f32 = (0..s.batch)
            .flat_map(|n| &r[(n * s.out_channels + o) * plane..][..plane])
            .sum();
        assert!((grads.bias[o] - expected).abs() < 1e-4);
    }
    let without = conv2d_backward(&s, &x, &w, &r, false);
    assert!(without.input.is_none());
    assert_eq!(without.weight, grads.weight);
}

#[test]
fn general_convolution_matches_naive_loops() {
    for (i, s) in general_shapes().into_iter().enumerate() {
        assert!(s.conv_is_supported(), "{s:?}");
        let x = pseudo_random(s.input_len(), 20 + i as u32);
        let w = pseudo_random(s.weight_len(), 40 + i as u32);
        let b = pseudo_random(s.out_channels, 60 + i as u32);
        let got = conv2d_forward(&s, &x, &w, &b);
        let expected = naive_conv(&s, &x, &w, &b);
        assert_eq!(got.len(), expected.len(), "{s:?}");
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-5, "{s:?}: {g} vs {e}");
        }
    }
}

/// Winograd's F(2×2, 3×3), forward and both gradients, called directly,
/// whatever the rule for when a layer takes it: every padding up to one that leaves whole tiles
/// reading zeros, odd and even planes (a tile hanging over the edge), one
/// input channel, a plane too big to share a GEMM with another image, and
/// a batch of small planes in groups with a short last one.
#[test]
fn winograd_matches_naive_loops() {
    let cases = [
        (2, 3, 2, [8, 8], 0),
        (3, 2, 3, [7, 9], 1),
        (2, 1, 2, [5, 6], 2),
        (1, 2, 2, [3, 4], 3),
        (1, 2, 3, [50, 50], 0),
        (37, 4, 3, [6, 6], 0),
    ];
    for (i, (batch, cin, cout, [h, w], padding)) in cases.into_iter().enumerate() {
        let s = ConvShape {
            batch,
            in_channels: cin,
            out_channels: cout,
            height: h,
            width: w,
            kernel: 3,
            stride: 1,
            padding,
        };
        let x = pseudo_random(s.input_len(), 200 + i as u32);
        let wt = pseudo_random(s.weight_len(), 220 + i as u32);
        let b = pseudo_random(s.out_channels, 240 + i as u32);
        let got = winograd::forward(&s, &x, &wt, &b);
        let expected = naive_conv(&s, &x, &wt, &b);
        assert_eq!(got.len(), expected.len(), "{s:?}");
        for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() < 1e-5, "{s:?} [{j}]: {g} vs {e}");
        }
        let r = pseudo_random(s.conv_output_len(), 280 + i as u32);
        if padding <= 2 {
            let got = winograd::input_grad(&s, &wt, &r);
            for (j, (g, e)) in got.iter().zip(naive_input_grad(&s, &wt, &r)).enumerate() {
                assert!((g - e).abs() < 1e-5, "{s:?} input [{j}]: {g} vs {e}");
            }
        }
        let got = winograd::weight_grad(&s, &x, &r);
        let expected = naive_weight_grad(&s, &x, &r);
        assert_eq!(got.len(), expected.len(), "{s:?}");
        // Sums over up to 2,500 products: a relative bound.
        let scale = expected.iter().fold(1.0f32, |m, e| m.max(e.abs()));
        for (j, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (g - e).abs() < 1e-5 * scale,
                "{s:?} weight [{j}]: {g} vs {e}"
            );
        }
    }
}

/// `conv2d_backward`'s weight and input gradients of `s` agree with the
/// naive loops' within 1e-3.
fn assert_backward_matches_naive(s: &ConvShape, x: &[f32], w: &[f32], r: &[f32], what: &str) {
    let grads = conv2d_backward(s, x, w, r, true);
    for (g, e) in grads.weight.iter().zip(naive_weight_grad(s, x, r)) {
        assert!((g - e).abs() < 1e-3, "{what} weight: {g} vs {e}");
    }
    let input = grads.input.expect("the input gradient was asked for");
    for (g, e) in input.iter().zip(naive_input_grad(s, w, r)) {
        assert!((g - e).abs() < 1e-3, "{what} input: {g} vs {e}");
    }
}

/// The plain convolution hands wide 3×3 stride-1 layers' forward pass to
/// Winograd, their weight gradient too when they have many input channels
/// and their input gradient when they have many output channels; it keeps
/// the rest on im2col. Every mix gives the naive loops' answer.
#[test]
fn wide_three_by_three_layers_take_winograd() {
    let s = ConvShape {
        batch: 3,
        in_channels: 16,
        out_channels: 5,
        height: 14,
        width: 13,
        kernel: 3,
        stride: 1,
        padding: 1,
    };
    assert!(winograd::applies(&s));
    let x = pseudo_random(s.input_len(), 260);
    let w = pseudo_random(s.weight_len(), 261);
    let b = pseudo_random(s.out_channels, 262);
    let got = conv2d_forward(&s, &x, &w, &b);
    for (g, e) in got.iter().zip(naive_conv(&s, &x, &w, &b)) {
        assert!((g - e).abs() < 1e-4, "{g} vs {e}");
    }
    let r = pseudo_random(s.conv_output_len(), 263);
    let grads = conv2d_backward(&s, &x, &w, &r, true);
    for (g, e) in grads.weight.iter().zip(naive_weight_grad(&s, &x, &r)) {
        assert!((g - e).abs() < 1e-3, "weight: {g} vs {e}");
    }
    // With 16 input and 5 output channels both gradients stay on im2col.
    assert!(!winograd::applies_to_weight_grad(&s));
    assert!(!winograd::applies_to_input_grad(&s));
    for (g, e) in grads
        .input
        .unwrap()
        .iter()
        .zip(naive_input_grad(&s, &w, &r))
    {
        assert!((g - e).abs() < 1e-4, "input: {g} vs {e}");
    }
    let deep = ConvShape {
        batch: 1,
        out_channels: 64,
        ..s
    };
    // 64 output channels: the input gradient through Winograd, the
    // weight gradient (16 inputs) through im2col.
    assert!(winograd::applies_to_input_grad(&deep));
    assert!(!winograd::applies_to_weight_grad(&deep));
    let w = pseudo_random(deep.weight_len(), 264);
    let r = pseudo_random(deep.conv_output_len(), 265);
    let x = &x[..deep.input_len()];
    assert_backward_matches_naive(&deep, x, &w, &r, "deep");
    // 64 input channels: the weight gradient through Winograd, the input
    // gradient (5 outputs) through im2col.
    let wide = ConvShape {
        batch: 1,
        in_channels: 64,
        ..s
    };
    assert!(winograd::applies_to_weight_grad(&wide));
    assert!(!winograd::applies_to_input_grad(&wide));
    let x = pseudo_random(wide.input_len(), 266);
    let w = pseudo_random(wide.weight_len(), 267);
    let r = pseudo_random(wide.conv_output_len(), 268);
    assert_backward_matches_naive(&wide, &x, &w, &r, "wide");
    // The Kaggle-style CNN's first layer (one input channel) and its
    // 10×10 layer stay on im2col, as do 5×5 and strided kernels.
    let first = ConvShape {
        in_channels: 1,
        height: 28,
        width: 28,
        padding: 0,
        ..s
    };
    let small = ConvShape {
        in_channels: 32,
        height: 12,
        width: 12,
        padding: 0,
        ..s
    };
    let five = ConvShape {
        kernel: 5,
        padding: 2,
        ..s
    };
    let strided = ConvShape { stride: 2, ..s };
    for other in [first, small, five, strided] {
        assert!(!winograd::applies(&other), "{other:?}");
    }
}

/// The kernels' own standard for all three Winograd paths: central
/// differences of the naive loops agree with the weight and input
/// gradients (the loss Σ conv(x) · r is linear, so they are exact up to
/// rounding), checked on a spread of elements. The layer's 16 input
/// channels leave its weight gradient to im2col in `conv2d_backward`, so
/// Winograd's is also called directly.
#[test]
fn winograd_gradients_match_central_differences() {
    let s = ConvShape {
        batch: 2,
        in_channels: 16,
        out_channels: 64,
        height: 15,
        width: 14,
        kernel: 3,
        stride: 1,
        padding: 0,
    };
    assert!(winograd::applies(&s) && winograd::applies_to_input_grad(&s));
    let x = pseudo_random(s.input_len(), 300);
    let w = pseudo_random(s.weight_len(), 301);
    let b = vec![0.0; s.out_channels];
    let r = pseudo_random(s.conv_output_len(), 302);
    let loss = |x: &[f32], w: &[f32]| -> f64 {
        let out = naive_conv(&s, x, w, &b);
        out.iter().zip(&r).map(|(o, r)| f64::from(o * r)).sum()
    };
    let grads = conv2d_backward(&s, &x, &w, &r, true);
    let eps = 1e-2f32;
    let difference = |v: &[f32], i: usize, at: &dyn Fn(&[f32]) -> f64| -> f32 {
        let (mut plus, mut minus) = (v.to_vec(), v.to_vec());
        plus[i] += eps;
        minus[i] -= eps;
        ((at(&plus) - at(&minus)) / (2.0 * f64::from(eps))) as f32
    };
    let winograd_weight = winograd::weight_grad(&s, &x, &r);
    for i in (0..s.weight_len()).step_by(97) {
        let numeric = difference(&w, i, &|w| loss(&x, w));
        for (analytic, path) in [
            (grads.weight[i], "im2col"),
            (winograd_weight[i], "winograd"),
        ] {
            assert!(
                (analytic - numeric).abs() < 2e-3,
                "{path} weight[{i}]: {analytic} vs {numeric}"
            );
        }
    }
    let input = grads.input.as_ref().unwrap();
    for i in (0..s.input_len()).step_by(61) {
        let numeric = difference(&x, i, &|x| loss(x, &w));
        assert!(
            (input[i] - numeric).abs() < 2e-3,
            "input[{i}]: {} vs {numeric}",
            input[i]
        );
    }
}

/// As for the "same" convolution: the loss is linear in input and weight,
/// so central differences of the naive loops are exact up to rounding.
#[test]
fn general_convolution_backward_matches_finite_differences() {
    for (i, s) in general_shapes().into_iter().enumerate() {
        let x = pseudo_random(s.input_len(), 80 + i as u32);
        let w = pseudo_random(s.weight_len(), 100 + i as u32);
        let b = pseudo_random(s.out_channels, 120 + i as u32);
        let r = pseudo_random(s.conv_output_len(), 140 + i as u32);
        let loss = |x: &[f32], w: &[f32]| -> f64 {
            let out = naive_conv(&s, x, w, &b);
            out.iter().zip(&r).map(|(o, r)| (o * r) as f64).sum()
        };
        let grads = conv2d_backward(&s, &x, &w, &r, true);
        let check = |what: &str, analytic: &[f32], numeric: Vec<f32>| {
            for (j, (a, n)) in analytic.iter().zip(numeric).enumerate() {
                assert!((a - n).abs() < 1e-3, "{s:?} {what}[{j}]: {a} vs {n}");
            }
        };
        let input_grad = grads.input.as_ref().unwrap();
        check(
            "input",
            input_grad,
            central_differences(&x, 1e-2, |x| loss(x, &w)),
        );
        check(
            "weight",
            &grads.weight,
            central_differences(&w, 1e-2, |w| loss(&x, w)),
        );
        assert!(input_grad.iter().any(|&g| g != 0.0), "{s:?}");
        let plane = s.out_height() * s.out_width();
        for o in 0..s.out_channels {
            let expected: f32 = (0..s.batch)
                .flat_map(|n| &r[(n * s.out_channels + o) * plane..][..plane])
                .sum();
            assert!((grads.bias[o] - expected).abs() < 1e-4, "{s:?}");
        }
    }
}

/// Images with small planes share one GEMM: a batch big enough to form
/// groups (with a short last group) gives, image for image, what each image
/// alone gives, forward and backward.
#[test]
fn grouped_images_match_images_alone() {
    for (kernel, stride, padding, side) in [(3, 1, 0, 6), (5, 2, 2, 8), (4, 1, 0, 4)] {
        let s = ConvShape {
            batch: 37,
            in_channels: 3,
            out_channels: 4,
            height: side,
            width: side,
            kernel,
            stride,
            padding,
        };
        let one = ConvShape { batch: 1, ..s };
        let x = pseudo_random(s.input_len(), 170);
        let w = pseudo_random(s.weight_len(), 171);
        let b = pseudo_random(s.out_channels, 172);
        let r = pseudo_random(s.conv_output_len(), 173);
        let out = conv2d_forward(&s, &x, &w, &b);
        let grads = conv2d_backward(&s, &x, &w, &r, true);
        let (per_in, per_out) = (one.input_len(), one.conv_output_len());
        let mut weight = vec![0.0f32; s.weight_len()];
        for n in 0..s.batch {
            let xi = &x[n * per_in..][..per_in];
            let ri = &r[n * per_out..][..per_out];
            let alone = conv2d_forward(&one, xi, &w, &b);
            for (g, e) in out[n * per_out..][..per_out].iter().zip(&alone) {
                assert!((g - e).abs() < 1e-5, "{s:?} image {n}: {g} vs {e}");
            }
            let alone = conv2d_backward(&one, xi, &w, ri, true);
            let input = &grads.input.as_ref().unwrap()[n * per_in..][..per_in];
            for (g, e) in input.iter().zip(alone.input.as_ref().unwrap()) {
                assert!(
                    (g - e).abs() < 1e-5,
                    "{s:?} image {n} input grad: {g} vs {e}"
                );
            }
            weight
                .iter_mut()
                .zip(&alone.weight)
                .for_each(|(t, v)| *t += v);
        }
        for (g, e) in grads.weight.iter().zip(&weight) {
            assert!((g - e).abs() < 1e-3, "{s:?} weight grad: {g} vs {e}");
        }
    }
}

/// The fused layer over a strided, unpadded convolution (an even output
/// from an odd input) against the naive convolution pooled by hand.
#[test]
fn fused_layer_pools_any_even_convolution_output() {
    let s = ConvShape {
        stride: 2,
        padding: 0,
        ..ConvShape::same(2, 2, 3, [9, 9], 3)
    };
    assert!(s.is_supported() && s.out_height() == 4);
    let x = pseudo_random(s.input_len(), 160);
    let w = pseudo_random(s.weight_len(), 161);
    let b = pseudo_random(s.out_channels, 162);
    let (out, _) = conv_pool_relu_forward(&s, &x, &w, &b);
    let conv = naive_conv(&s, &x, &w, &b);
    let side = s.out_height();
    for (q, got) in out.iter().enumerate() {
        let (plane, p) = (q / 4, q % 4);
        let (py, px) = (p / 2, p % 2);
        let at = |y: usize, x: usize| conv[plane * side * side + y * side + x];
        let expected = at(2 * py, 2 * px)
            .max(at(2 * py, 2 * px + 1))
            .max(at(2 * py + 1, 2 * px))
            .max(at(2 * py + 1, 2 * px + 1))
            .max(0.0);
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum() {
    let s = ConvShape::same(1, 1, 1, [2, 2], 1);
    // A 1×1 kernel of weight 1 and bias 0 makes conv == input.
    let x = [3.0, 3.0, 1.0, 3.0];
    let (out, routes) = conv_pool_relu_forward(&s, &x, &[1.0], &[0.0]);
    assert_eq!(out, vec![3.0]);
    assert_eq!(routes, vec![0]);
    let grads = conv_pool_relu_backward(&s, &x, &[1.0], &routes, &[2.0], true);
    assert_eq!(grads.input.unwrap(), vec![2.0, 0.0, 0.0, 0.0]);
    assert_eq!(grads.bias, vec![2.0]);
}

#[test]
fn relu_blocks_the_gradient_of_negative_windows() {
    let s = ConvShape::same(1, 1, 1, [2, 2], 1);
    let x = [-1.0, -2.0, -3.0, -4.0];
    let (out, routes) = conv_pool_relu_forward(&s, &x, &[1.0], &[0.0]);
    assert_eq!(out, vec![0.0]);
    assert_eq!(routes, vec![BLOCKED]);
    let grads = conv_pool_relu_backward(&s, &x, &[1.0], &routes, &[5.0], true);
    assert_eq!(grads.input.unwrap(), vec![0.0; 4]);
    assert_eq!(grads.weight, vec![0.0]);
}
