//! Host (CPU) kernels for batch norm with the batch's own statistics, and
//! its gradients, on plain `f32` slices laid out `[batch, channels, rest…]`.
//!
//! Burn's generic batch norm gathers each channel's values by transposing
//! the whole activation (`swap_dims(0, 1)` then a copy) once for the mean,
//! once for the variance and twice more in the backward pass, and makes a
//! pass over memory per elementwise operation in between. Here the
//! statistics are read in place, a channel's `batch` runs of `plane`
//! values at a time, and each output is written in one pass.
//!
//! Each run (one image's plane of one channel) is summed in `f32` vector
//! lanes, and the runs' sums are added in `f64`: a channel of HVC's first
//! layer holds 120 × 676 values, too many for one `f32` running sum.

use rayon::prelude::*;

use super::fill::filled;
use super::sum::{LANES, lane_sum};

/// The layout of a batch-norm input: `[batch, channels, plane…]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    /// Leading dimension.
    pub batch: usize,
    /// The normalised dimension.
    pub channels: usize,
    /// Product of the dimensions after the channels (1 for `[batch, channels]`).
    pub plane: usize,
}

impl NormShape {
    /// Values per channel: what each mean is taken over.
    pub fn per_channel(&self) -> usize {
        self.batch * self.plane
    }

    /// Elements of the input.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `batch` runs of `plane` values that make up channel `c`.
    fn runs<'a>(&self, values: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let (plane, stride) = (self.plane, self.channels * self.plane);
        (0..self.batch).map(move |b| &values[b * stride + c * plane..][..plane])
    }
}

/// The normalised output, and each channel's mean and biased variance
/// (what a running average of the statistics is fed).
pub struct NormForward {
    /// `(x − mean) / √(variance + ε) · γ + β`.
    pub output: Vec<f32>,
    /// Per channel.
    pub mean: Vec<f32>,
    /// Per channel, divided by the count (not count − 1).
    pub variance: Vec<f32>,
}

/// Gradients of batch norm.
pub struct NormGrads {
    /// With respect to the input.
    pub input: Vec<f32>,
    /// With respect to γ.
    pub gamma: Vec<f32>,
    /// With respect to β.
    pub beta: Vec<f32>,
}

/// Batch norm over each channel's values in the batch.
///
/// # Panics
/// If the slices' lengths do not match `shape`.
pub fn batch_norm_forward(
    shape: &NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> NormForward {
    normalize(shape, x, gamma, beta, epsilon, |v| v)
}

/// [`batch_norm_forward`] followed by a ReLU, applied as each output is
/// written.
///
/// # Panics
/// If the slices' lengths do not match `shape`.
pub fn batch_norm_relu_forward(
    shape: &NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> NormForward {
    normalize(shape, x, gamma, beta, epsilon, |v| v.max(0.0))
}

fn normalize(
    shape: &NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    activation: impl Fn(f32) -> f32 + Sync,
) -> NormForward {
    check_lengths(shape, x, gamma);
    let (mean, variance) = statistics(shape, x);
    let (scale, shift) = scale_and_shift(gamma, beta, &mean, &variance, epsilon);
    let mut output = filled(0.0f32, shape.len());
    for_each_run(shape, &mut output, |c, out, offset| {
        let input = &x[offset..][..out.len()];
        // Read once, not per value: indexed inside the loop, the vectors'
        // buffers were loaded again for every value and the loop stayed
        // scalar.
        let (s, t) = (scale[c], shift[c]);
        for (o, &v) in out.iter_mut().zip(input) {
            *o = activation(v * s + t);
        }
    });
    NormForward {
        output,
        mean,
        variance,
    }
}

/// Each channel's mean and biased variance over the batch: the variance
/// from a second pass around the mean, which stays exact for values far
/// from zero.
pub(super) fn statistics(shape: &NormShape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let count = shape.per_channel() as f64;
    (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let mean = shape
                .runs(x, c)
                .map(|run| lane_sum(run, |v| v))
                .sum::<f64>()
                / count;
            let m = mean as f32;
            let squares: f64 = shape
                .runs(x, c)
                .map(|run| lane_sum(run, |v| (v - m) * (v - m)))
                .sum();
            (m, (squares / count) as f32)
        })
        .unzip()
}

/// Per channel, the `scale` and `shift` with which batch norm's output is
/// `x · scale + shift`.
pub(super) fn scale_and_shift(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>) {
    let channels = gamma.len();
    assert_eq!(beta.len(), channels, "beta has one value per channel");
    assert_eq!(mean.len(), channels, "one mean per channel");
    assert_eq!(variance.len(), channels, "one variance per channel");
    (0..channels)
        .map(|c| {
            let scale = f64::from(gamma[c]) / (f64::from(variance[c]) + epsilon).sqrt();
            let shift = f64::from(beta[c]) - f64::from(mean[c]) * scale;
            (scale as f32, shift as f32)
        })
        .unzip()
}

/// Gradients of [`batch_norm_forward`] given its input, γ, the statistics it
/// returned and the output's gradient:
///
/// - `∂β = Σ g`, `∂γ = Σ g · x̂` over each channel, with `x̂ = (x − mean) / σ`;
/// - `∂x = γ / σ · (g − ∂β / n − x̂ · ∂γ / n)`.
///
/// # Panics
/// If the slices' lengths do not match `shape`.
pub fn batch_norm_backward(
    shape: &NormShape,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    output_grad: &[f32],
) -> NormGrads {
    let stats = Statistics {
        gamma,
        mean,
        variance,
        epsilon,
    };
    // Every gradient passes.
    backward(shape, x, &stats, output_grad, None::<NoGate>)
}

/// The gradients of [`batch_norm_relu_forward`], given what
/// [`batch_norm_backward`] takes and β: the gradient stops where the ReLU
/// was closed, then passes through batch norm.
///
/// Where the ReLU was closed is worked out again from each input value,
/// `x · scale + shift > 0` with the forward pass's own scale and shift,
/// rather than read from the forward pass's output: the same gates, with
/// one stream fewer to read in each of the two passes.
///
/// # Panics
/// If the slices' lengths do not match `shape`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_relu_backward(
    shape: &NormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    variance: &[f32],
    epsilon: f64,
    output_grad: &[f32],
) -> NormGrads {
    let stats = Statistics {
        gamma,
        mean,
        variance,
        epsilon,
    };
    let (scale, shift) = scale_and_shift(gamma, beta, mean, variance, epsilon);
    // The mask is applied run by run as the gradient is read (into a
    // plane-sized buffer for the sums, inline in the final pass) rather
    // than written out as a whole masked copy first.
    let gate = |c: usize| {
        let (s, t) = (scale[c], shift[c]);
        move |v: f32| v * s + t > 0.0
    };
    backward(shape, x, &stats, output_grad, Some(gate))
}

/// What the forward pass used and returned, per channel.
pub(super) struct Statistics<'a> {
    /// γ.
    pub gamma: &'a [f32],
    /// The batch means.
    pub mean: &'a [f32],
    /// The batch's biased variances.
    pub variance: &'a [f32],
    /// ε.
    pub epsilon: f64,
}

/// The type of [`backward`]'s absent gate.
type NoGate = fn(usize) -> fn(f32) -> bool;

/// Batch norm's backward pass for the gradient `g · [open(x)]`, element by
/// element, where `gate(c)` gives channel `c`'s `open` (the ReLU's mask:
/// where it let the value through), or for the plain gradient without a
/// gate.
fn backward<Gate, Open>(
    shape: &NormShape,
    x: &[f32],
    stats: &Statistics,
    output_grad: &[f32],
    gate: Option<Gate>,
) -> NormGrads
where
    Gate: Fn(usize) -> Open + Sync,
    Open: Fn(f32) -> bool,
{
    let Statistics {
        gamma,
        mean,
        variance,
        ..
    } = *stats;
    check_lengths(shape, x, gamma);
    assert_eq!(output_grad.len(), x.len(), "one gradient per input value");
    assert_eq!(mean.len(), shape.channels, "one mean per channel");
    assert_eq!(variance.len(), shape.channels, "one variance per channel");
    let sums: Vec<(f64, f64)> = (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let (m, open) = (mean[c], gate.as_ref().map(|gate| gate(c)));
            // A gated run's gradient is masked into this buffer first and
            // then summed: the two loops vectorise apart, not together (see
            // `masked`).
            let mut gated = Vec::with_capacity(shape.plane);
            shape.runs(x, c).zip(shape.runs(output_grad, c)).fold(
                (0.0, 0.0),
                |(g, gx), (run, grads)| {
                    let grads = match &open {
                        Some(open) => {
                            gated.clear();
                            gated.extend(grads.iter().zip(run).map(|(&g, &v)| masked(g, open(v))));
                            &gated
                        }
                        None => grads,
                    };
                    let (run_g, run_gx) = lane_sums(grads, run, m);
                    (g + run_g, gx + run_gx)
                },
            )
        })
        .collect();
    let ChannelGrads {
        gamma: gamma_grad,
        beta: beta_grad,
        coefficients,
    } = channel_grads(stats, shape.per_channel(), &sums);
    let mut input_grad = filled(0.0f32, shape.len());
    for_each_run(shape, &mut input_grad, |c, out, offset| {
        let [a, b, constant] = coefficients[c];
        let grads = &output_grad[offset..][..out.len()];
        let input = &x[offset..][..out.len()];
        match gate.as_ref().map(|gate| gate(c)) {
            Some(open) => {
                for ((o, &g), &v) in out.iter_mut().zip(grads).zip(input) {
                    *o = a * masked(g, open(v)) + b * v + constant;
                }
            }
            None => {
                for ((o, &g), &v) in out.iter_mut().zip(grads).zip(input) {
                    *o = a * g + b * v + constant;
                }
            }
        }
    });
    NormGrads {
        input: input_grad,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}

/// Batch norm's per-channel gradients, from each channel's sums of the
/// output gradient.
pub(super) struct ChannelGrads {
    /// `∂γ = Σ g · x̂`.
    pub gamma: Vec<f32>,
    /// `∂β = Σ g`.
    pub beta: Vec<f32>,
    /// `[a, b, c]` with `∂x = a · g + b · x + c` for each value of the
    /// channel.
    pub coefficients: Vec<[f32; 3]>,
}

/// [`ChannelGrads`] from each channel's `(Σ g, Σ g · (x − mean))` over its
/// `count` values.
pub(super) fn channel_grads(stats: &Statistics, count: usize, sums: &[(f64, f64)]) -> ChannelGrads {
    let count = count as f64;
    let mut grads = ChannelGrads {
        gamma: Vec::with_capacity(sums.len()),
        beta: Vec::with_capacity(sums.len()),
        coefficients: Vec::with_capacity(sums.len()),
    };
    for (c, &(beta_grad, centred_dot)) in sums.iter().enumerate() {
        let inv_std = 1.0 / (f64::from(stats.variance[c]) + stats.epsilon).sqrt();
        let gamma_grad = centred_dot * inv_std;
        // ∂x = γ / σ · (g − ∂β / n − x̂ · ∂γ / n), expanded with
        // x̂ = (x − mean) · σ⁻¹.
        let a = f64::from(stats.gamma[c]) * inv_std;
        let b = -a * inv_std * gamma_grad / count;
        let constant = -a * (beta_grad / count) - b * f64::from(stats.mean[c]);
        grads.gamma.push(gamma_grad as f32);
        grads.beta.push(beta_grad as f32);
        grads
            .coefficients
            .push([a as f32, b as f32, constant as f32]);
    }
    grads
}

/// `(Σ g, Σ g · (v − m))` over one run, in `f32` lanes.
pub(super) fn lane_sums(grads: &[f32], run: &[f32], m: f32) -> (f64, f64) {
    let (mut sums, mut dots) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (g_chunks, v_chunks) = (grads.chunks_exact(LANES), run.chunks_exact(LANES));
    let (mut tail_sum, mut tail_dot) = (0.0f32, 0.0f32);
    for (&g, &v) in g_chunks.remainder().iter().zip(v_chunks.remainder()) {
        tail_sum += g;
        tail_dot += g * (v - m);
    }
    for (g, v) in g_chunks.zip(v_chunks) {
        for i in 0..LANES {
            sums[i] += g[i];
            dots[i] += g[i] * (v[i] - m);
        }
    }
    let total = |tail: f32, lanes: [f32; LANES]| {
        f64::from(tail) + lanes.iter().map(|&l| f64::from(l)).sum::<f64>()
    };
    (total(tail_sum, sums), total(tail_dot, dots))
}

/// `g` where `open`, else 0, through a bit mask. In a loop over whole
/// values this vectorises as a comparison and an AND; inside the eight
/// lanes of [`lane_sums`] LLVM instead tested each lane's comparison with
/// a branch of its own, and after a ReLU about half the values are closed,
/// in no order a branch predictor could follow.
#[inline(always)]
fn masked(g: f32, open: bool) -> f32 {
    f32::from_bits(g.to_bits() & u32::from(open).wrapping_neg())
}

/// Calls `f(channel, run, offset)` for every `plane`-long run of `values`,
/// in parallel, where `offset` is the run's start in the whole tensor.
fn for_each_run(
    shape: &NormShape,
    values: &mut [f32],
    f: impl Fn(usize, &mut [f32], usize) + Sync,
) {
    let plane = shape.plane.max(1);
    // Runs can be short (HVC's capsule batch norm: 64–160 values), so hand
    // rayon whole images, not single runs.
    let image = shape.channels * plane;
    values
        .par_chunks_mut(image.max(1))
        .enumerate()
        .for_each(|(b, image_values)| {
            for (c, run) in image_values.chunks_mut(plane).enumerate() {
                f(c, run, b * image + c * plane);
            }
        });
}

/// Checks that `x` is `shape`'s size and γ has one value per channel.
pub(super) fn check_lengths(shape: &NormShape, x: &[f32], gamma: &[f32]) {
    assert_eq!(x.len(), shape.len(), "input does not match {shape:?}");
    assert_eq!(
        gamma.len(),
        shape.channels,
        "gamma has one value per channel"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..3.0)).collect()
    }

    /// Batch norm straight from its definition, index by index.
    fn naive_forward(
        s: &NormShape,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let at = |b: usize, c: usize, i: usize| (b * s.channels + c) * s.plane + i;
        let n = s.per_channel() as f64;
        let mut mean = vec![0.0; s.channels];
        let mut var = vec![0.0; s.channels];
        let mut out = vec![0.0; s.len()];
        for c in 0..s.channels {
            for b in 0..s.batch {
                for i in 0..s.plane {
                    mean[c] += f64::from(x[at(b, c, i)]) / n;
                }
            }
            for b in 0..s.batch {
                for i in 0..s.plane {
                    var[c] += (f64::from(x[at(b, c, i)]) - mean[c]).powi(2) / n;
                }
            }
            for b in 0..s.batch {
                for i in 0..s.plane {
                    let xhat = (f64::from(x[at(b, c, i)]) - mean[c]) / (var[c] + eps).sqrt();
                    out[at(b, c, i)] = xhat * f64::from(gamma[c]) + f64::from(beta[c]);
                }
            }
        }
        (out, mean, var)
    }

    fn close(ours: &[f32], expected: &[f64], tolerance: f64, what: &str) {
        assert_eq!(ours.len(), expected.len(), "{what}");
        for (i, (&a, &b)) in ours.iter().zip(expected).enumerate() {
            assert!(
                (f64::from(a) - b).abs() <= tolerance * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    const SHAPES: [NormShape; 3] = [
        NormShape {
            batch: 3,
            channels: 4,
            plane: 25,
        },
        // HVC's capsule batch norm: [batch, classes, capsule dims].
        NormShape {
            batch: 5,
            channels: 10,
            plane: 7,
        },
        // A plain [batch, features] input.
        NormShape {
            batch: 6,
            channels: 3,
            plane: 1,
        },
    ];

    #[test]
    fn forward_matches_the_definition() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for s in SHAPES {
            let x = random(s.len(), &mut rng);
            let gamma = random(s.channels, &mut rng);
            let beta = random(s.channels, &mut rng);
            let ours = batch_norm_forward(&s, &x, &gamma, &beta, 1e-5);
            let (out, mean, var) = naive_forward(&s, &x, &gamma, &beta, 1e-5);
            close(&ours.output, &out, 1e-5, "output");
            close(&ours.mean, &mean, 1e-6, "mean");
            close(&ours.variance, &var, 1e-6, "variance");
        }
    }

    #[test]
    fn the_variance_survives_values_far_from_zero() {
        // Unit-variance values around 10⁴: summing v and v² unshifted in
        // f32 would leave nothing of the variance (10⁸ against 1).
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let s = NormShape {
            batch: 16,
            channels: 3,
            plane: 100,
        };
        let x: Vec<f32> = random(s.len(), &mut rng)
            .into_iter()
            .map(|v| 1.0e4 + v)
            .collect();
        let ones = vec![1.0; s.channels];
        let zeros = vec![0.0; s.channels];
        let ours = batch_norm_forward(&s, &x, &ones, &zeros, 1e-5);
        let (out, mean, var) = naive_forward(&s, &x, &ones, &zeros, 1e-5);
        close(&ours.mean, &mean, 1e-6, "mean");
        close(&ours.variance, &var, 1e-4, "variance");
        // x · scale + shift in f32: the input's own resolution at 10⁴ (2⁻¹⁰).
        close(&ours.output, &out, 2e-3, "output");
    }

    /// `Σ batch_norm_forward(x)·r`, the scalar whose gradient `backward` gives for `g = r`.
    fn objective(s: &NormShape, x: &[f32], gamma: &[f32], beta: &[f32], r: &[f32]) -> f64 {
        let x: Vec<f32> = x.to_vec();
        let (out, _, _) = naive_forward(s, &x, gamma, beta, 1e-5);
        out.iter().zip(r).map(|(o, &r)| o * f64::from(r)).sum()
    }

    #[test]
    fn backward_matches_central_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for s in SHAPES {
            let x = random(s.len(), &mut rng);
            let gamma = random(s.channels, &mut rng);
            let beta = random(s.channels, &mut rng);
            let r = random(s.len(), &mut rng);
            let stats = batch_norm_forward(&s, &x, &gamma, &beta, 1e-5);
            let grads = batch_norm_backward(&s, &x, &gamma, &stats.mean, &stats.variance, 1e-5, &r);
            let h = 1e-2f32;
            let numeric = |values: &[f32], i: usize, f: &dyn Fn(&[f32]) -> f64| {
                let (mut up, mut down) = (values.to_vec(), values.to_vec());
                up[i] += h;
                down[i] -= h;
                (f(&up) - f(&down)) / (2.0 * f64::from(h))
            };
            let by_x: Vec<f64> = (0..x.len())
                .map(|i| numeric(&x, i, &|x| objective(&s, x, &gamma, &beta, &r)))
                .collect();
            let by_gamma: Vec<f64> = (0..s.channels)
                .map(|i| numeric(&gamma, i, &|g| objective(&s, &x, g, &beta, &r)))
                .collect();
            let by_beta: Vec<f64> = (0..s.channels)
                .map(|i| numeric(&beta, i, &|b| objective(&s, &x, &gamma, b, &r)))
                .collect();
            close(&grads.input, &by_x, 2e-3, "input gradient");
            close(&grads.gamma, &by_gamma, 2e-3, "gamma gradient");
            close(&grads.beta, &by_beta, 2e-3, "beta gradient");
        }
    }

    #[test]
    fn with_relu_rectifies_the_output_and_stops_the_gradient_there() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for s in SHAPES {
            let x = random(s.len(), &mut rng);
            let gamma = random(s.channels, &mut rng);
            let beta = random(s.channels, &mut rng);
            let r = random(s.len(), &mut rng);
            let plain = batch_norm_forward(&s, &x, &gamma, &beta, 1e-5);
            let ours = batch_norm_relu_forward(&s, &x, &gamma, &beta, 1e-5);
            let rectified: Vec<f64> = plain
                .output
                .iter()
                .map(|&v| f64::from(v.max(0.0)))
                .collect();
            close(&ours.output, &rectified, 0.0, "output");
            assert!(ours.output.contains(&0.0) && ours.output.iter().any(|&v| v > 0.0));
            // The gradient is batch norm's for r masked where the output is zero.
            let masked: Vec<f32> = r
                .iter()
                .zip(&ours.output)
                .map(|(&g, &o)| if o > 0.0 { g } else { 0.0 })
                .collect();
            let (mean, var) = (&ours.mean, &ours.variance);
            let expected = batch_norm_backward(&s, &x, &gamma, mean, var, 1e-5, &masked);
            let grads = batch_norm_relu_backward(&s, &x, &gamma, &beta, mean, var, 1e-5, &r);
            assert_eq!(grads.input, expected.input);
            assert_eq!(grads.gamma, expected.gamma);
            assert_eq!(grads.beta, expected.beta);
            assert!(
                grads
                    .input
                    .iter()
                    .zip(&r)
                    .any(|(g, r)| *g != 0.0 && *r != 0.0)
            );
        }
    }

    #[test]
    #[should_panic(expected = "gamma has one value per channel")]
    fn mismatched_parameters_are_refused() {
        let s = NormShape {
            batch: 2,
            channels: 3,
            plane: 4,
        };
        batch_norm_forward(&s, &[0.0; 24], &[1.0; 2], &[0.0; 3], 1e-5);
    }
}
