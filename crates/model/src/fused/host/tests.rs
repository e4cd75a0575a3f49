//! The host kernels against their definitions: naive loops for the
//! forward passes, central differences for the backward passes, and the
//! pooling's tie and ReLU rules.

use super::conv::*;
use super::pool::*;

/// Straightforward loops: the definition the kernels must match.
fn naive_conv(shape: &ConvPoolShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (h, wd, k, pad) = (
        shape.height,
        shape.width,
        shape.kernel,
        shape.pad() as isize,
    );
    let mut out = vec![0.0; shape.batch * shape.out_channels * shape.plane()];
    for n in 0..shape.batch {
        for o in 0..shape.out_channels {
            for y in 0..h {
                for xx in 0..wd {
                    let mut acc = b[o] as f64;
                    for c in 0..shape.in_channels {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = y as isize + ky as isize - pad;
                                let ix = xx as isize + kx as isize - pad;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((n * shape.in_channels + c) * h + iy as usize) * wd
                                    + ix as usize;
                                let wi = ((o * shape.in_channels + c) * k + ky) * k + kx;
                                acc += (x[xi] * w[wi]) as f64;
                            }
                        }
                    }
                    out[((n * shape.out_channels + o) * h + y) * wd + xx] = acc as f32;
                }
            }
        }
    }
    out
}

fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
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

fn shape() -> ConvPoolShape {
    ConvPoolShape {
        batch: 3,
        in_channels: 2,
        out_channels: 4,
        height: 6,
        width: 8,
        kernel: 5,
    }
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
    let s = ConvPoolShape {
        batch: 2,
        in_channels: 2,
        out_channels: 3,
        height: 4,
        width: 6,
        kernel: 3,
    };
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
    let s = ConvPoolShape {
        batch: 3,
        in_channels: 2,
        out_channels: 4,
        height: 5,
        width: 7,
        kernel: 5,
    };
    assert!(!s.is_supported() && s.conv_is_supported());
    let x = pseudo_random(s.input_len(), 11);
    let w = pseudo_random(s.weight_len(), 12);
    let b = pseudo_random(s.out_channels, 13);
    let got = conv_same_forward(&s, &x, &w, &b);
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
    let s = ConvPoolShape {
        batch: 2,
        in_channels: 3,
        out_channels: 2,
        height: 3,
        width: 5,
        kernel: 3,
    };
    let x = pseudo_random(s.input_len(), 14);
    let w = pseudo_random(s.weight_len(), 15);
    let b = pseudo_random(s.out_channels, 16);
    let r = pseudo_random(s.conv_output_len(), 17);
    let loss = |x: &[f32], w: &[f32]| -> f64 {
        let out = naive_conv(&s, x, w, &b);
        out.iter().zip(&r).map(|(o, r)| (o * r) as f64).sum()
    };
    let grads = conv_same_backward(&s, &x, &w, &r, true);
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
    let plane = s.height * s.width;
    for o in 0..s.out_channels {
        let expected: f32 = (0..s.batch)
            .flat_map(|n| &r[(n * s.out_channels + o) * plane..][..plane])
            .sum();
        assert!((grads.bias[o] - expected).abs() < 1e-4);
    }
    let without = conv_same_backward(&s, &x, &w, &r, false);
    assert!(without.input.is_none());
    assert_eq!(without.weight, grads.weight);
}

#[test]
fn ties_send_the_gradient_to_the_first_maximum() {
    let s = ConvPoolShape {
        batch: 1,
        in_channels: 1,
        out_channels: 1,
        height: 2,
        width: 2,
        kernel: 1,
    };
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
    let s = ConvPoolShape {
        batch: 1,
        in_channels: 1,
        out_channels: 1,
        height: 2,
        width: 2,
        kernel: 1,
    };
    let x = [-1.0, -2.0, -3.0, -4.0];
    let (out, routes) = conv_pool_relu_forward(&s, &x, &[1.0], &[0.0]);
    assert_eq!(out, vec![0.0]);
    assert_eq!(routes, vec![BLOCKED]);
    let grads = conv_pool_relu_backward(&s, &x, &[1.0], &routes, &[5.0], true);
    assert_eq!(grads.input.unwrap(), vec![0.0; 4]);
    assert_eq!(grads.weight, vec![0.0]);
}
