//! Host (CPU) kernels for `relu(max_pool_2×2(conv2d(x)))`, for a plain
//! "same" convolution and for `relu(max_pool_2×2(x))` alone, with their
//! gradients.
//!
//! Plain `f32` slices in NCHW order, so these are tested against naive loops
//! without any backend. The convolution is an im2col per image followed by
//! one GEMM (the `gemm` crate, the same one Burn's flex backend uses), with
//! rayon spreading images over the cores; the bias, the pooling and the ReLU
//! are applied in the same pass that reads the GEMM's output.
//!
//! Why this beats the unfused path: Burn computes the weight and input
//! gradients of a convolution through generic transposed convolutions
//! (about three quarters of flex's training step), and its max-pool
//! forward and backward go through general strided code. Here the backward
//! pass is two GEMMs per image on data that is already in cache.

use rayon::prelude::*;

/// The shape of one fused layer: stride 1, "same" padding (`kernel / 2`),
/// odd square kernel, 2×2 pooling with stride 2 over an even-sized plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPoolShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Input (and convolution output) height.
    pub height: usize,
    /// Input (and convolution output) width.
    pub width: usize,
    /// Side of the square kernel.
    pub kernel: usize,
}

impl ConvPoolShape {
    /// Whether the fused kernels cover this shape.
    pub fn is_supported(&self) -> bool {
        self.kernel % 2 == 1
            && self.height.is_multiple_of(2)
            && self.width.is_multiple_of(2)
            && self.height > 0
            && self.width > 0
            && self.in_channels > 0
            && self.out_channels > 0
    }

    /// Whether the plain convolution kernels cover this shape (any plane
    /// size: no pooling follows).
    pub fn conv_is_supported(&self) -> bool {
        self.kernel % 2 == 1
            && self.height > 0
            && self.width > 0
            && self.in_channels > 0
            && self.out_channels > 0
    }

    fn pad(&self) -> usize {
        self.kernel / 2
    }

    /// Pixels per plane.
    fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Pixels per pooled plane.
    fn pooled_plane(&self) -> usize {
        (self.height / 2) * (self.width / 2)
    }

    /// Length of one unrolled receptive field: `in_channels × kernel²`,
    /// ordered as the weight's `[in, kh, kw]`.
    fn patch(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.plane()
    }

    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch()
    }

    /// Elements of the pooled output.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.pooled_plane()
    }

    /// Elements of the convolution's output (before any pooling).
    pub fn conv_output_len(&self) -> usize {
        self.batch * self.out_channels * self.plane()
    }
}

/// Gradients of the fused layer.
#[derive(Debug, Clone)]
pub struct ConvPoolGrads {
    /// With respect to the input, when asked for.
    pub input: Option<Vec<f32>>,
    /// With respect to the weight, `[out, in, k, k]`.
    pub weight: Vec<f32>,
    /// With respect to the bias, `[out]`.
    pub bias: Vec<f32>,
}

/// What the backward pass needs to know about each pooling window, one
/// byte per pooled output: the offset (0–3, row-major) of the window's first
/// maximum, or [`BLOCKED`] where the ReLU output is zero.
pub type Route = u8;

/// The [`Route`] of a window whose output the ReLU zeroed: no gradient.
pub const BLOCKED: Route = u8::MAX;

/// The forward pass: the pooled, rectified output and each window's
/// [`Route`]. The convolution output itself never leaves the cache: each
/// image is convolved into a per-thread scratch buffer and pooled from
/// there.
pub fn forward(
    shape: &ConvPoolShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, Vec<Route>) {
    check_lengths(shape, input, weight, bias);
    let per_image_out = shape.out_channels * shape.pooled_plane();
    let per_image_in = shape.in_channels * shape.plane();
    let mut output = vec![0.0f32; shape.output_len()];
    let mut routes = vec![BLOCKED; shape.output_len()];
    let images = images_per_job(shape.batch);
    output
        .par_chunks_mut(per_image_out * images)
        .zip(routes.par_chunks_mut(per_image_out * images))
        .zip(input.par_chunks(per_image_in * images))
        .for_each(|((outputs, routes), inputs)| {
            let mut scratch = Scratch::new(shape);
            for ((output, routes), image) in outputs
                .chunks_mut(per_image_out)
                .zip(routes.chunks_mut(per_image_out))
                .zip(inputs.chunks(per_image_in))
            {
                im2col(shape, image, &mut scratch.columns);
                convolve(shape, weight, &scratch.columns, &mut scratch.conv);
                pool_relu(shape, &scratch.conv, bias, output, routes);
            }
        });
    (output, routes)
}

/// The plain convolution, bias added: `[batch, out_channels, height, width]`.
pub fn conv_forward(
    shape: &ConvPoolShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    check_conv_lengths(shape, input, weight, bias);
    let per_image_out = shape.out_channels * shape.plane();
    let per_image_in = shape.in_channels * shape.plane();
    let mut output = vec![0.0f32; shape.conv_output_len()];
    let images = images_per_job(shape.batch);
    output
        .par_chunks_mut(per_image_out * images)
        .zip(input.par_chunks(per_image_in * images))
        .for_each(|(outputs, inputs)| {
            let mut columns = vec![0.0; shape.plane() * shape.patch()];
            for (output, image) in outputs
                .chunks_mut(per_image_out)
                .zip(inputs.chunks(per_image_in))
            {
                im2col(shape, image, &mut columns);
                convolve(shape, weight, &columns, output);
                for (plane, b) in output.chunks_exact_mut(shape.plane()).zip(bias) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        });
    output
}

/// One image's convolution without bias: `conv[o, p] = Σ_k weight[o, k] ·
/// columns[k, p]`.
fn convolve(shape: &ConvPoolShape, weight: &[f32], columns: &[f32], conv: &mut [f32]) {
    gemm_f32(
        Matrix::row_major(conv, shape.plane()),
        (weight, shape.patch() as isize, 1),
        (columns, shape.plane() as isize, 1),
        (shape.out_channels, shape.plane(), shape.patch()),
        false,
    );
}

/// The backward pass, given the forward pass's input, weight and routes,
/// and the gradient of the pooled output.
///
/// Like PyTorch, the gradient of each pooling window goes to the first of
/// its maxima (row-major order), and ReLU passes no gradient at zero.
pub fn backward(
    shape: &ConvPoolShape,
    input: &[f32],
    weight: &[f32],
    routes: &[Route],
    output_grad: &[f32],
    want_input_grad: bool,
) -> ConvPoolGrads {
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(routes.len(), shape.output_len(), "routes length");
    assert_eq!(output_grad.len(), shape.output_len(), "output_grad length");
    let per_image_in = shape.in_channels * shape.plane();
    let per_image_out = shape.out_channels * shape.pooled_plane();
    backward_jobs(shape, want_input_grad, |acc, image, input_grad| {
        let range = |len: usize| image * len..(image + 1) * len;
        let Scratch { columns, conv } = &mut acc.scratch;
        // conv holds the convolution output's gradient.
        route_to_maxima(
            shape,
            &routes[range(per_image_out)],
            &output_grad[range(per_image_out)],
            conv,
            &mut acc.bias,
        );
        image_gradients(
            shape,
            weight,
            &input[range(per_image_in)],
            conv,
            columns,
            &mut acc.weight,
            input_grad,
        );
    })
}

/// The plain convolution's backward pass, given its input and weight and
/// the gradient of its output.
pub fn conv_backward(
    shape: &ConvPoolShape,
    input: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    want_input_grad: bool,
) -> ConvPoolGrads {
    assert!(
        shape.conv_is_supported(),
        "unsupported conv shape {shape:?}"
    );
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(
        output_grad.len(),
        shape.conv_output_len(),
        "output_grad length"
    );
    let per_image_in = shape.in_channels * shape.plane();
    let per_image_out = shape.out_channels * shape.plane();
    backward_jobs(shape, want_input_grad, |acc, image, input_grad| {
        let range = |len: usize| image * len..(image + 1) * len;
        let conv_grad = &output_grad[range(per_image_out)];
        for (bias, plane) in acc
            .bias
            .iter_mut()
            .zip(conv_grad.chunks_exact(shape.plane()))
        {
            *bias += plane.iter().sum::<f32>();
        }
        image_gradients(
            shape,
            weight,
            &input[range(per_image_in)],
            conv_grad,
            &mut acc.scratch.columns,
            &mut acc.weight,
            input_grad,
        );
    })
}

/// Runs `per_image` over the batch in rayon jobs and sums their gradients.
///
/// Each job owns a run of images' input gradients (disjoint writes) and
/// sums weight and bias gradients into its own accumulators, added up once
/// at the end.
fn backward_jobs<F>(shape: &ConvPoolShape, want_input_grad: bool, per_image: F) -> ConvPoolGrads
where
    F: Fn(&mut Accumulators, usize, Option<&mut [f32]>) + Sync,
{
    let per_image_in = shape.in_channels * shape.plane();
    let mut input_grad = want_input_grad.then(|| vec![0.0f32; shape.input_len()]);
    let images = images_per_job(shape.batch);
    // One entry per job: its images' input gradients, when wanted.
    let job_grads: Vec<Option<&mut [f32]>> = match input_grad.as_mut() {
        Some(grads) => grads.chunks_mut(per_image_in * images).map(Some).collect(),
        None => (0..shape.batch.div_ceil(images)).map(|_| None).collect(),
    };
    let jobs: Vec<Accumulators> = job_grads
        .into_par_iter()
        .enumerate()
        .map(|(job, grads)| {
            let mut acc = Accumulators::new(shape);
            let mut grads = grads.map(|g| g.chunks_mut(per_image_in));
            for image in job * images..((job + 1) * images).min(shape.batch) {
                per_image(&mut acc, image, grads.as_mut().and_then(Iterator::next));
            }
            acc
        })
        .collect();
    // Summed in job order, not as rayon's jobs finish: the same inputs give
    // bit-identical gradients on every run (resume depends on it).
    let totals = jobs
        .into_iter()
        .reduce(Accumulators::merge)
        .unwrap_or_else(|| Accumulators::new(shape));
    ConvPoolGrads {
        input: input_grad,
        weight: totals.weight,
        bias: totals.bias,
    }
}

/// One image's share of the weight gradient, added to `weight_grad`, and
/// its input gradient when asked for, from the gradient of its convolution
/// output. `columns` is scratch.
fn image_gradients(
    shape: &ConvPoolShape,
    weight: &[f32],
    image: &[f32],
    conv_grad: &[f32],
    columns: &mut [f32],
    weight_grad: &mut [f32],
    input_grad: Option<&mut [f32]>,
) {
    im2col(shape, image, columns);
    // weight_grad[o, k] += Σ_p conv_grad[o, p] · columns[k, p]
    gemm_f32(
        Matrix::row_major(weight_grad, shape.patch()),
        (conv_grad, shape.plane() as isize, 1),
        (columns, 1, shape.plane() as isize),
        (shape.out_channels, shape.patch(), shape.plane()),
        true,
    );
    if let Some(input_grad) = input_grad {
        // columns_grad[k, p] = Σ_o weight[o, k] · conv_grad[o, p]
        gemm_f32(
            Matrix::row_major(columns, shape.plane()),
            (weight, 1, shape.patch() as isize),
            (conv_grad, shape.plane() as isize, 1),
            (shape.patch(), shape.plane(), shape.out_channels),
            false,
        );
        col2im(shape, columns, input_grad);
    }
}

/// Images per rayon job: two jobs per thread, so that one slow job does
/// not leave a core idle, while each job's buffers are set up only once.
fn images_per_job(batch: usize) -> usize {
    batch.div_ceil(2 * rayon::current_num_threads()).max(1)
}

/// A job's per-image buffers, reused across its images: the unrolled
/// image, and the convolution output (forward) or its gradient (backward).
struct Scratch {
    columns: Vec<f32>,
    conv: Vec<f32>,
}

impl Scratch {
    fn new(shape: &ConvPoolShape) -> Self {
        Self {
            columns: vec![0.0; shape.plane() * shape.patch()],
            conv: vec![0.0; shape.out_channels * shape.plane()],
        }
    }
}

/// One backward job's scratch space and partial sums.
struct Accumulators {
    scratch: Scratch,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Accumulators {
    fn new(shape: &ConvPoolShape) -> Self {
        Self {
            scratch: Scratch::new(shape),
            weight: vec![0.0; shape.weight_len()],
            bias: vec![0.0; shape.out_channels],
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.weight.iter_mut().zip(&other.weight) {
            *a += b;
        }
        for (a, b) in self.bias.iter_mut().zip(&other.bias) {
            *a += b;
        }
        self
    }
}

fn check_lengths(shape: &ConvPoolShape, input: &[f32], weight: &[f32], bias: &[f32]) {
    assert!(shape.is_supported(), "unsupported fused shape {shape:?}");
    check_conv_lengths(shape, input, weight, bias);
}

fn check_conv_lengths(shape: &ConvPoolShape, input: &[f32], weight: &[f32], bias: &[f32]) {
    assert!(
        shape.conv_is_supported(),
        "unsupported conv shape {shape:?}"
    );
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(bias.len(), shape.out_channels, "bias length");
}

/// The columns `ox` of an output row whose input column `ox + kx - pad`
/// lies inside a row of width `w`.
fn valid_columns(w: usize, kx: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx).min(w);
    let hi = (w + pad).saturating_sub(kx).min(w).max(lo);
    (lo, hi)
}

/// For one kernel offset `(ky, kx)`: row `k` of the unrolled image reads
/// pixel `p + shift` for output pixel `p`, and the range of `p` for which
/// `p + shift` is inside the plane.
fn shifted_span(shape: &ConvPoolShape, ky: usize, kx: usize) -> (isize, usize, usize) {
    let pad = shape.pad() as isize;
    let w = shape.width as isize;
    let plane = shape.plane() as isize;
    let shift = (ky as isize - pad) * w + (kx as isize - pad);
    let start = (-shift).clamp(0, plane);
    let end = (plane - shift).clamp(start, plane);
    (shift, start as usize, end as usize)
}

/// Unrolls one image into `columns[k, p]`: row `k` (an input channel and
/// kernel offset, in the weight's `[in, kh, kw]` order) holds, for every
/// output pixel `p`, the input value that offset reads; zero over the
/// border.
///
/// Within a channel, an offset reads the plane shifted by a constant, so
/// each row is one long copy; the values that wrapped around a row edge
/// are then zeroed (at most `pad` per image row).
fn im2col(shape: &ConvPoolShape, image: &[f32], columns: &mut [f32]) {
    let (w, k, pad) = (shape.width, shape.kernel, shape.pad());
    let plane = shape.plane();
    for c in 0..shape.in_channels {
        let channel = &image[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[((c * k + ky) * k + kx) * plane..][..plane];
                let (shift, start, end) = shifted_span(shape, ky, kx);
                row[..start].fill(0.0);
                row[end..].fill(0.0);
                let from = (start as isize + shift) as usize;
                row[start..end].copy_from_slice(&channel[from..from + (end - start)]);
                zero_wrapped_columns(row, w, kx, pad);
            }
        }
    }
}

/// Zeroes, in every image row of `row`, the output columns whose input
/// column falls outside the image (they hold a neighbouring row's pixels).
fn zero_wrapped_columns(row: &mut [f32], w: usize, kx: usize, pad: usize) {
    let (lo, hi) = valid_columns(w, kx, pad);
    if lo == 0 && hi == w {
        return;
    }
    // Column by column: a per-row `fill` of one or two values would be a
    // `memset` call each (the most expensive part of im2col when it was).
    for column in (0..lo).chain(hi..w) {
        for value in row[column..].iter_mut().step_by(w) {
            *value = 0.0;
        }
    }
}

/// The adjoint of [`im2col`]: adds each unrolled value's gradient back onto
/// the pixel it was read from. Uses `columns` as scratch.
fn col2im(shape: &ConvPoolShape, columns: &mut [f32], image_grad: &mut [f32]) {
    let (w, k, pad) = (shape.width, shape.kernel, shape.pad());
    let plane = shape.plane();
    for c in 0..shape.in_channels {
        let channel = &mut image_grad[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[((c * k + ky) * k + kx) * plane..][..plane];
                zero_wrapped_columns(row, w, kx, pad);
                let (shift, start, end) = shifted_span(shape, ky, kx);
                let from = (start as isize + shift) as usize;
                for (d, s) in channel[from..from + (end - start)]
                    .iter_mut()
                    .zip(&row[start..end])
                {
                    *d += s;
                }
            }
        }
    }
}

/// Bias, 2×2 max-pooling with stride 2 and ReLU for one image's
/// convolution output, recording each window's [`Route`].
fn pool_relu(
    shape: &ConvPoolShape,
    conv: &[f32],
    bias: &[f32],
    output: &mut [f32],
    routes: &mut [Route],
) {
    let pooled = shape.pooled_plane();
    for (o, plane) in conv.chunks_exact(shape.plane()).enumerate() {
        let out = &mut output[o * pooled..][..pooled];
        let route = &mut routes[o * pooled..][..pooled];
        pool_relu_plane(shape.height, shape.width, plane, bias[o], out, route);
    }
}

/// `relu(max_pool_2×2(plane + bias))` for one `h × w` plane, recording each
/// window's [`Route`].
fn pool_relu_plane(
    h: usize,
    w: usize,
    plane: &[f32],
    bias: f32,
    out: &mut [f32],
    route: &mut [Route],
) {
    for py in 0..h / 2 {
        let top = &plane[2 * py * w..][..w];
        let bottom = &plane[(2 * py + 1) * w..][..w];
        for px in 0..w / 2 {
            let (a, b) = (top[2 * px], top[2 * px + 1]);
            let (c, d) = (bottom[2 * px], bottom[2 * px + 1]);
            // The first maximum in row-major order, without branches
            // (random data makes them unpredictable): ties keep the
            // earlier element at every step.
            let (upper, upper_at) = if b > a { (b, 1) } else { (a, 0) };
            let (lower, lower_at) = if d > c { (d, 3) } else { (c, 2) };
            let (max, at) = if lower > upper {
                (lower, lower_at)
            } else {
                (upper, upper_at)
            };
            let value = max + bias;
            let q = py * (w / 2) + px;
            let open = value > 0.0;
            out[q] = if open { value } else { 0.0 };
            route[q] = if open { at } else { BLOCKED };
        }
    }
}

/// Scatters one image's pooled-output gradient onto the convolution
/// output along the routes, and adds what it routes per channel to
/// `bias_grad` (the bias gradient is the sum of the convolution's).
fn route_to_maxima(
    shape: &ConvPoolShape,
    routes: &[Route],
    output_grad: &[f32],
    conv_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let pooled = shape.pooled_plane();
    for o in 0..shape.out_channels {
        bias_grad[o] += route_plane(
            shape.height,
            shape.width,
            &routes[o * pooled..][..pooled],
            &output_grad[o * pooled..][..pooled],
            &mut conv_grad[o * shape.plane()..][..shape.plane()],
        );
    }
}

/// Scatters one pooled plane's gradient onto its `h × w` input plane along
/// the routes; returns the sum of what it routed.
fn route_plane(
    h: usize,
    w: usize,
    routes: &[Route],
    output_grad: &[f32],
    grad_plane: &mut [f32],
) -> f32 {
    let mut sum = 0.0;
    for py in 0..h / 2 {
        let (top, bottom) = grad_plane[2 * py * w..][..2 * w].split_at_mut(w);
        let routes = &routes[py * (w / 2)..][..w / 2];
        let grads = &output_grad[py * (w / 2)..][..w / 2];
        // Every window writes all four of its cells (the windows tile
        // the plane), so the buffer needs no clearing first.
        for (px, (&route, &grad)) in routes.iter().zip(grads).enumerate() {
            let grad = if route == BLOCKED { 0.0 } else { grad };
            let cell = |at: Route| if route == at { grad } else { 0.0 };
            top[2 * px] = cell(0);
            top[2 * px + 1] = cell(1);
            bottom[2 * px] = cell(2);
            bottom[2 * px + 1] = cell(3);
            sum += grad;
        }
    }
    sum
}

/// Planes handed to one rayon job by the whole-tensor pooling kernels:
/// enough work to outweigh scheduling (a 28×28 plane is under a microsecond).
const PLANES_PER_JOB: usize = 64;

/// `relu(max_pool_2×2(x))` over every `h × w` plane of `input` (any number
/// of planes, `h` and `w` even), with each window's [`Route`]: batch norm's
/// output in seed-plus, where no convolution can be fused in.
///
/// # Panics
/// If `h` or `w` is odd or `input` is not whole planes.
pub fn pool_relu_planes(h: usize, w: usize, input: &[f32]) -> (Vec<f32>, Vec<Route>) {
    check_planes(h, w, input.len());
    let (plane, pooled) = (h * w, h * w / 4);
    let planes = input.len() / plane;
    let mut output = vec![0.0f32; planes * pooled];
    let mut routes = vec![BLOCKED; planes * pooled];
    output
        .par_chunks_mut(pooled * PLANES_PER_JOB)
        .zip(routes.par_chunks_mut(pooled * PLANES_PER_JOB))
        .zip(input.par_chunks(plane * PLANES_PER_JOB))
        .for_each(|((out, route), input)| {
            for ((out, route), plane) in out
                .chunks_mut(pooled)
                .zip(route.chunks_mut(pooled))
                .zip(input.chunks(plane))
            {
                pool_relu_plane(h, w, plane, 0.0, out, route);
            }
        });
    (output, routes)
}

/// The input gradient of [`pool_relu_planes`] from its routes and its
/// output's gradient.
///
/// # Panics
/// If the lengths do not describe whole `h × w` planes.
pub fn pool_relu_planes_backward(
    h: usize,
    w: usize,
    routes: &[Route],
    output_grad: &[f32],
) -> Vec<f32> {
    check_planes(h, w, routes.len() * 4);
    assert_eq!(routes.len(), output_grad.len(), "one route per gradient");
    let (plane, pooled) = (h * w, h * w / 4);
    let mut input_grad = vec![0.0f32; routes.len() * 4];
    input_grad
        .par_chunks_mut(plane * PLANES_PER_JOB)
        .zip(routes.par_chunks(pooled * PLANES_PER_JOB))
        .zip(output_grad.par_chunks(pooled * PLANES_PER_JOB))
        .for_each(|((grad, routes), output_grad)| {
            for ((grad, routes), output_grad) in grad
                .chunks_mut(plane)
                .zip(routes.chunks(pooled))
                .zip(output_grad.chunks(pooled))
            {
                route_plane(h, w, routes, output_grad, grad);
            }
        });
    input_grad
}

fn check_planes(h: usize, w: usize, len: usize) {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2) && h > 0 && w > 0,
        "2×2 pooling needs an even-sized plane, got {h}×{w}"
    );
    assert!(
        len.is_multiple_of(h * w),
        "{len} values are not whole {h}×{w} planes"
    );
}

/// A row-major destination matrix and its row stride.
struct Matrix<'a> {
    data: &'a mut [f32],
    row_stride: usize,
}

impl<'a> Matrix<'a> {
    fn row_major(data: &'a mut [f32], row_stride: usize) -> Self {
        Self { data, row_stride }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded (the callers
/// parallelise over images). `lhs` and `rhs` are `(data, row stride,
/// column stride)`.
fn gemm_f32(
    dst: Matrix<'_>,
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    let extent = |rows: usize, cols: usize, rs: isize, cs: isize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    // The bounds the unsafe call relies on, checked on every call: they cost
    // nothing next to the multiplication.
    assert!(lhs.1 >= 0 && lhs.2 >= 0 && rhs.1 >= 0 && rhs.2 >= 0);
    assert!(extent(m, k, lhs.1, lhs.2) <= lhs.0.len(), "gemm lhs bounds");
    assert!(extent(k, n, rhs.1, rhs.2) <= rhs.0.len(), "gemm rhs bounds");
    assert!(
        n <= dst.row_stride && extent(m, n, dst.row_stride as isize, 1) <= dst.data.len(),
        "gemm dst bounds"
    );
    #[allow(unsafe_code)]
    // SAFETY: the asserts above keep every element gemm reads (lhs, rhs) or
    // writes (dst) inside its slice; `dst` is borrowed mutably, so it
    // aliases neither input; the call is single-threaded.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (out, routes) = forward(&s, &x, &w, &b);
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
            let (out, _) = forward(&s, x, w, b);
            out.iter().zip(&r).map(|(o, r)| (o * r) as f64).sum()
        };
        let (_, routes) = forward(&s, &x, &w, &b);
        let grads = backward(&s, &x, &w, &routes, &r, true);
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

        let without = backward(&s, &x, &w, &routes, &r, false);
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
        let got = conv_forward(&s, &x, &w, &b);
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
        let grads = conv_backward(&s, &x, &w, &r, true);
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
        let without = conv_backward(&s, &x, &w, &r, false);
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
        let (out, routes) = forward(&s, &x, &[1.0], &[0.0]);
        assert_eq!(out, vec![3.0]);
        assert_eq!(routes, vec![0]);
        let grads = backward(&s, &x, &[1.0], &routes, &[2.0], true);
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
        let (out, routes) = forward(&s, &x, &[1.0], &[0.0]);
        assert_eq!(out, vec![0.0]);
        assert_eq!(routes, vec![BLOCKED]);
        let grads = backward(&s, &x, &[1.0], &routes, &[5.0], true);
        assert_eq!(grads.input.unwrap(), vec![0.0; 4]);
        assert_eq!(grads.weight, vec![0.0]);
    }
}
