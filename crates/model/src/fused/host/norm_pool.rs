//! Batch norm (the batch's statistics) → 2×2 max-pooling → ReLU as one
//! forward kernel and one backward kernel, on `[batch, channels, h, w]`
//! slices: seed-plus's two feature layers, where batch norm sits between
//! the convolution and the pooling.
//!
//! Run one after the other, batch norm writes its whole normalised output
//! and pooling reads it back; in the backward pass pooling writes a
//! whole-size gradient that is three-quarters zeros, and batch norm reads
//! it twice. Here the forward pass normalises each window's four values as
//! it pools them, and the backward pass spreads each plane's gradient along
//! its routes into a buffer that stays in cache, for batch norm's sums and
//! then for its input gradient: neither whole-size intermediate is ever
//! written.

use rayon::prelude::*;

use super::batch_norm::{self, ChannelGrads, NormGrads, NormShape, Statistics};
use super::fill::filled;
use super::pool::{self, BLOCKED, PLANES_PER_JOB, Route};

/// The pooled output, its routes and the batch's statistics.
pub struct NormPoolForward {
    /// `relu(max_pool_2×2(batch_norm(x)))`, `[batch, channels, h / 2, w / 2]`.
    pub output: Vec<f32>,
    /// Each window's [`Route`], as [`pool_relu_forward`](super::pool_relu_forward)
    /// records them for batch norm's output.
    pub routes: Vec<Route>,
    /// Per channel.
    pub mean: Vec<f32>,
    /// Per channel, divided by the count (not count − 1).
    pub variance: Vec<f32>,
}

/// `relu(max_pool_2×2(batch_norm(x)))` for `x` of dimensions `[batch,
/// channels, h, w]` (`h` and `w` even): the same output, routes and
/// statistics as [`batch_norm_forward`](super::batch_norm_forward) followed
/// by [`pool_relu_forward`](super::pool_relu_forward), value for value.
///
/// # Panics
/// If the plane is odd-sized or the slices' lengths do not match `dims`.
pub fn batch_norm_pool_relu_forward(
    dims: [usize; 4],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> NormPoolForward {
    let shape = checked_shape(dims, x, gamma);
    let [_, channels, h, w] = dims;
    let (mean, variance) = batch_norm::statistics(&shape, x);
    let (scale, shift) = batch_norm::scale_and_shift(gamma, beta, &mean, &variance, epsilon);
    let (plane, pooled) = (h * w, h * w / 4);
    let mut output = filled(0.0f32, x.len() / 4);
    let mut routes = filled(BLOCKED, x.len() / 4);
    output
        .par_chunks_mut(pooled * PLANES_PER_JOB)
        .zip(routes.par_chunks_mut(pooled * PLANES_PER_JOB))
        .zip(x.par_chunks(plane * PLANES_PER_JOB))
        .enumerate()
        .for_each(|(job, ((out, route), input))| {
            let planes = out
                .chunks_mut(pooled)
                .zip(route.chunks_mut(pooled))
                .zip(input.chunks(plane));
            for (i, ((out, route), plane)) in planes.enumerate() {
                let c = (job * PLANES_PER_JOB + i) % channels;
                let (s, t) = (scale[c], shift[c]);
                pool::pool_relu_plane(h, w, plane, |v| v * s + t, 0.0, out, route);
            }
        });
    NormPoolForward {
        output,
        routes,
        mean,
        variance,
    }
}

/// The gradients of [`batch_norm_pool_relu_forward`] for input, γ and β,
/// given its input, γ, the statistics and routes it returned, and the
/// pooled output's gradient.
///
/// # Panics
/// If the plane is odd-sized or the slices' lengths do not match `dims`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_pool_relu_backward(
    dims: [usize; 4],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    routes: &[Route],
    output_grad: &[f32],
) -> NormGrads {
    let shape = checked_shape(dims, x, gamma);
    let [batch, channels, h, w] = dims;
    assert_eq!(routes.len() * 4, x.len(), "one route per pooling window");
    assert_eq!(routes.len(), output_grad.len(), "one route per gradient");
    assert_eq!(mean.len(), channels, "one mean per channel");
    assert_eq!(variance.len(), channels, "one variance per channel");
    let (plane, pooled) = (h * w, h * w / 4);
    // Each plane's routed gradient is spread into a plane-sized scratch
    // buffer (in cache) and then read exactly as batch norm's own backward
    // pass reads its gradient, so the results are those of pooling's
    // backward pass followed by batch norm's, bit for bit.
    let sums: Vec<(f64, f64)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut routed = vec![0.0f32; plane];
            (0..batch).fold((0.0, 0.0), |(g, gx), b| {
                let p = b * channels + c;
                let routes = &routes[p * pooled..][..pooled];
                pool::route_plane(
                    h,
                    w,
                    routes,
                    &output_grad[p * pooled..][..pooled],
                    &mut routed,
                );
                let x = &x[p * plane..][..plane];
                let (run_g, run_gx) = batch_norm::lane_sums(&routed, x, mean[c]);
                (g + run_g, gx + run_gx)
            })
        })
        .collect();
    let stats = Statistics {
        gamma,
        mean,
        variance,
        epsilon,
    };
    let ChannelGrads {
        gamma: gamma_grad,
        beta: beta_grad,
        coefficients,
    } = batch_norm::channel_grads(&stats, shape.per_channel(), &sums);
    let mut input_grad = filled(0.0f32, x.len());
    input_grad
        .par_chunks_mut(plane * PLANES_PER_JOB)
        .zip(x.par_chunks(plane * PLANES_PER_JOB))
        .zip(routes.par_chunks(pooled * PLANES_PER_JOB))
        .zip(output_grad.par_chunks(pooled * PLANES_PER_JOB))
        .enumerate()
        .for_each(|(job, (((grad, x), routes), output_grad))| {
            let mut routed = vec![0.0f32; plane];
            let planes = grad
                .chunks_mut(plane)
                .zip(x.chunks(plane))
                .zip(routes.chunks(pooled).zip(output_grad.chunks(pooled)));
            for (i, ((grad, x), (routes, output_grad))) in planes.enumerate() {
                let [a, b, constant] = coefficients[(job * PLANES_PER_JOB + i) % channels];
                pool::route_plane(h, w, routes, output_grad, &mut routed);
                for ((o, &g), &v) in grad.iter_mut().zip(&routed).zip(x) {
                    *o = a * g + b * v + constant;
                }
            }
        });
    NormGrads {
        input: input_grad,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}

/// `dims` as batch norm's layout, after checking that the planes can be
/// pooled and that `x` and γ fit.
fn checked_shape(dims: [usize; 4], x: &[f32], gamma: &[f32]) -> NormShape {
    let [batch, channels, h, w] = dims;
    pool::check_planes(h, w, x.len());
    let shape = NormShape {
        batch,
        channels,
        plane: h * w,
    };
    batch_norm::check_lengths(&shape, x, gamma);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::host::{
        batch_norm_backward, batch_norm_forward, pool_relu_backward, pool_relu_forward,
    };
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..3.0)).collect()
    }

    /// seed-plus's conv2 output at a small batch, a square plane, and a
    /// plane with more jobs than channels divide evenly.
    const DIMS: [[usize; 4]; 3] = [[4, 32, 14, 14], [3, 5, 4, 6], [70, 3, 2, 2]];

    /// A random input of dimensions `dims`, as batch norm's layout, with γ
    /// and β.
    struct Layer {
        shape: NormShape,
        x: Vec<f32>,
        gamma: Vec<f32>,
        beta: Vec<f32>,
    }

    fn layer([batch, channels, h, w]: [usize; 4], rng: &mut ChaCha8Rng) -> Layer {
        let shape = NormShape {
            batch,
            channels,
            plane: h * w,
        };
        Layer {
            shape,
            x: random(shape.len(), rng),
            // Some γ negative: the maximum of such a channel's normalised
            // window is then the input's minimum.
            gamma: random(channels, rng),
            beta: random(channels, rng),
        }
    }

    #[test]
    fn forward_is_batch_norm_then_pooling_value_for_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut open, mut windows) = (0, 0);
        for dims @ [_, _, h, w] in DIMS {
            let Layer {
                shape,
                x,
                gamma,
                beta,
            } = layer(dims, &mut rng);
            let fused = batch_norm_pool_relu_forward(dims, &x, &gamma, &beta, 1e-5);
            let norm = batch_norm_forward(&shape, &x, &gamma, &beta, 1e-5);
            let (output, routes) = pool_relu_forward(h, w, &norm.output);
            assert_eq!(fused.output, output, "{dims:?}");
            assert_eq!(fused.routes, routes, "{dims:?}");
            assert_eq!(fused.mean, norm.mean, "{dims:?}");
            assert_eq!(fused.variance, norm.variance, "{dims:?}");
            open += fused.routes.iter().filter(|&&r| r != BLOCKED).count();
            windows += fused.routes.len();
        }
        // The ReLU closed some windows and let others through.
        assert!(open > 0 && open < windows, "{open} of {windows} open");
    }

    #[test]
    fn backward_is_pooling_then_batch_norm_value_for_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for dims @ [_, _, h, w] in DIMS {
            let Layer {
                shape,
                x,
                gamma,
                beta,
            } = layer(dims, &mut rng);
            let output_grad = random(shape.len() / 4, &mut rng);
            let fused = batch_norm_pool_relu_forward(dims, &x, &gamma, &beta, 1e-5);
            let (mean, variance) = (&fused.mean, &fused.variance);
            let grads = batch_norm_pool_relu_backward(
                dims,
                &x,
                &gamma,
                mean,
                variance,
                1e-5,
                &fused.routes,
                &output_grad,
            );
            let pooled_grad = pool_relu_backward(h, w, &fused.routes, &output_grad);
            let expected =
                batch_norm_backward(&shape, &x, &gamma, mean, variance, 1e-5, &pooled_grad);
            let pairs = [
                (&grads.input, &expected.input, "input"),
                (&grads.gamma, &expected.gamma, "γ"),
                (&grads.beta, &expected.beta, "β"),
            ];
            for (ours, theirs, what) in pairs {
                assert_eq!(ours.len(), theirs.len(), "{what}");
                assert!(ours.iter().any(|&v| v.abs() > 1e-3), "{what} is all zeros");
                for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
                    let tolerance = 1e-4 * (1.0 + b.abs());
                    assert!(
                        (a - b).abs() <= tolerance,
                        "{dims:?} {what}[{i}]: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "2×2 pooling needs an even-sized plane")]
    fn odd_planes_are_refused() {
        batch_norm_pool_relu_forward([1, 1, 3, 4], &[0.0; 12], &[1.0], &[0.0], 1e-5);
    }
}
