//! The convolution kernels: im2col, then one GEMM; the seed CNN's
//! `relu(max_pool_2×2(conv2d(x)))` with the bias, pooling and ReLU applied
//! while each image's GEMM output is in cache, and the plain convolution of
//! any square kernel, stride and padding (seed-plus, HVC, the Kaggle-style
//! CNN), where images with small output planes share one GEMM; each with
//! its backward pass (two GEMMs: weight and input gradients).
//!
//! im2col unrolls an image one of five ways (`Unrolling`): the whole
//! plane shifted for stride-1 "same" layers, one copy per output row for
//! wide stride-1 rows, shifted phase planes for strided layers whose
//! phases fit the output's grid (module `phases`), crops of the plane for
//! narrow unpadded stride-1 layers (module `crops`), and an index gather
//! for the rest.

use rayon::prelude::*;

use super::crops;
use super::fill::filled;
use super::gemm::{Matrix, gemm_f32};
use super::phases;
use super::pool::{BLOCKED, Route, pool_relu_image, route_to_maxima};
use super::spare::Spare;
use super::sum::lane_sum;
use super::winograd;

/// The shape of one convolution layer: a square kernel, the same stride and
/// zero padding on both axes, no dilation or groups. The fused layer adds
/// 2×2 pooling with stride 2 over the convolution's (even-sized) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between output pixels, on both axes.
    pub stride: usize,
    /// Zeros added on every side of the input.
    pub padding: usize,
}

impl ConvShape {
    /// A stride-1 convolution with "same" padding (`kernel / 2`): for an
    /// odd kernel the output plane is the input's.
    pub fn same(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        [height, width]: [usize; 2],
        kernel: usize,
    ) -> Self {
        Self {
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel,
            stride: 1,
            padding: kernel / 2,
        }
    }

    /// Whether the convolution kernels cover this shape: the kernel fits
    /// the padded input and nothing is empty.
    pub fn conv_is_supported(&self) -> bool {
        self.kernel > 0
            && self.stride > 0
            && self.kernel <= self.height + 2 * self.padding
            && self.kernel <= self.width + 2 * self.padding
            && self.height > 0
            && self.width > 0
            && self.in_channels > 0
            && self.out_channels > 0
    }

    /// Whether the fused conv → pool → relu covers this shape: a supported
    /// convolution whose output plane has even sides.
    pub fn is_supported(&self) -> bool {
        self.conv_is_supported()
            && self.out_height().is_multiple_of(2)
            && self.out_width().is_multiple_of(2)
    }

    /// Output height of the convolution.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output width of the convolution.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Stride 1 and padding `kernel / 2` with an odd kernel: each unrolled
    /// row is the input plane shifted, copied in one piece.
    fn keeps_plane(&self) -> bool {
        self.stride == 1 && self.kernel % 2 == 1 && self.padding == self.kernel / 2
    }

    /// Pixels per input plane.
    pub(super) fn in_plane(&self) -> usize {
        self.height * self.width
    }

    /// Pixels per output plane of the convolution.
    pub(super) fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Pixels per pooled plane.
    pub(super) fn pooled_plane(&self) -> usize {
        (self.out_height() / 2) * (self.out_width() / 2)
    }

    /// Length of one unrolled receptive field: `in_channels × kernel²`,
    /// ordered as the weight's `[in, kh, kw]`.
    pub(super) fn patch(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.in_plane()
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
        self.batch * self.out_channels * self.out_plane()
    }

    /// Multiply-adds of the convolution's forward pass over the batch.
    pub fn multiply_adds(&self) -> usize {
        self.batch * self.out_channels * self.out_plane() * self.patch()
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

/// The forward pass: the pooled, rectified output and each window's
/// [`Route`]. The convolution output itself never leaves the cache: each
/// image is convolved into a per-thread scratch buffer and pooled from
/// there.
pub fn conv_pool_relu_forward(
    shape: &ConvShape,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, Vec<Route>) {
    check_lengths(shape, input, weight, bias);
    let per_image_out = shape.out_channels * shape.pooled_plane();
    let per_image_in = shape.in_channels * shape.in_plane();
    let mut output = filled(0.0f32, shape.output_len());
    let mut routes = filled(BLOCKED, shape.output_len());
    let images = images_per_job(shape.batch);
    let unrolling = Unrolling::for_shape(shape);
    output
        .par_chunks_mut(per_image_out * images)
        .zip(routes.par_chunks_mut(per_image_out * images))
        .zip(input.par_chunks(per_image_in * images))
        .for_each(|((outputs, routes), inputs)| {
            let mut scratch = Scratch::new(shape, 1);
            let unrolling = &unrolling;
            for ((output, routes), image) in outputs
                .chunks_mut(per_image_out)
                .zip(routes.chunks_mut(per_image_out))
                .zip(inputs.chunks(per_image_in))
            {
                let place = Placement::alone(shape);
                im2col(shape, unrolling, image, &mut scratch.columns, place);
                convolve(
                    shape,
                    weight,
                    &scratch.columns,
                    &mut scratch.conv,
                    shape.out_plane(),
                );
                pool_relu_image(shape, &scratch.conv, bias, output, routes);
            }
        });
    (output, routes)
}

/// The plain convolution, bias added: `[batch, out_channels, out_height,
/// out_width]`. Wide 3×3 stride-1 layers go through Winograd's F(2×2,
/// 3×3) (`winograd::applies`); the others through im2col, where images
/// with small output planes share one GEMM, up to 512 output pixels' worth.
pub fn conv2d_forward(shape: &ConvShape, input: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    check_conv_lengths(shape, input, weight, bias);
    if winograd::applies(shape) {
        return winograd::forward(shape, input, weight, bias);
    }
    let out_plane = shape.out_plane();
    let per_image_out = shape.out_channels * out_plane;
    let per_image_in = shape.in_channels * shape.in_plane();
    let mut output = filled(0.0f32, shape.conv_output_len());
    let (images, group) = (images_per_job(shape.batch), images_per_gemm(shape));
    let unrolling = &Unrolling::for_shape(shape);
    // A layer without a bias (one followed by batch norm) is passed zeros:
    // adding them would be a whole pass over the output for nothing.
    let has_bias = bias.iter().any(|&b| b != 0.0);
    output
        .par_chunks_mut(per_image_out * images)
        .zip(input.par_chunks(per_image_in * images))
        .for_each(|(outputs, inputs)| {
            let mut scratch = Scratch::new(shape, group);
            for (outputs, inputs) in outputs
                .chunks_mut(per_image_out * group)
                .zip(inputs.chunks(per_image_in * group))
            {
                let width = inputs.len() / per_image_in * out_plane;
                im2col_group(shape, unrolling, inputs, &mut scratch.columns, width);
                if width == out_plane {
                    convolve(shape, weight, &scratch.columns, outputs, width);
                } else {
                    // [out, image, pixel] from the GEMM to [image, out, pixel].
                    convolve(shape, weight, &scratch.columns, &mut scratch.conv, width);
                    for (i, output) in outputs.chunks_mut(per_image_out).enumerate() {
                        for (o, plane) in output.chunks_exact_mut(out_plane).enumerate() {
                            plane.copy_from_slice(
                                &scratch.conv[o * width + i * out_plane..][..out_plane],
                            );
                        }
                    }
                }
                if has_bias {
                    for output in outputs.chunks_mut(per_image_out) {
                        for (plane, b) in output.chunks_exact_mut(out_plane).zip(bias) {
                            plane.iter_mut().for_each(|v| *v += b);
                        }
                    }
                }
            }
        });
    output
}

/// A group's convolution without bias: `conv[o, p] = Σ_k weight[o, k] ·
/// columns[k, p]` over `width` columns.
fn convolve(shape: &ConvShape, weight: &[f32], columns: &[f32], conv: &mut [f32], width: usize) {
    gemm_f32(
        Matrix::row_major(conv, width),
        (weight, shape.patch() as isize, 1),
        (columns, width as isize, 1),
        (shape.out_channels, width, shape.patch()),
        false,
    );
}

/// The backward pass, given the forward pass's input, weight and routes,
/// and the gradient of the pooled output.
///
/// Like PyTorch, the gradient of each pooling window goes to the first of
/// its maxima (row-major order), and ReLU passes no gradient at zero.
pub fn conv_pool_relu_backward(
    shape: &ConvShape,
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
    let per_image_in = shape.in_channels * shape.in_plane();
    let per_image_out = shape.out_channels * shape.pooled_plane();
    let unrolling = Unrolling::for_shape(shape);
    backward_jobs(shape, want_input_grad, 1, |acc, image, _, input_grad| {
        let range = |len: usize| image * len..(image + 1) * len;
        let Scratch { columns, conv } = &mut acc.scratch;
        // conv holds the convolution output's gradient.
        route_to_maxima(
            shape,
            &routes[range(per_image_out)],
            &output_grad[range(per_image_out)],
            conv,
            &mut acc.sums.bias,
        );
        group_gradients(
            shape,
            &unrolling,
            weight,
            &input[range(per_image_in)],
            conv,
            columns,
            Some(&mut acc.sums.weight_t),
            input_grad,
        );
    })
}

/// The plain convolution's backward pass, given its input and weight and
/// the gradient of its output. Wide 3×3 stride-1 layers take their weight
/// gradient when they have many input channels, and their input gradient
/// when they have many output channels, from Winograd's F(2×2, 3×3)
/// (module `winograd`).
pub fn conv2d_backward(
    shape: &ConvShape,
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
    let weight_by_winograd = winograd::applies_to_weight_grad(shape);
    let input_by_winograd = want_input_grad && winograd::applies_to_input_grad(shape);
    let input_by_im2col = want_input_grad && !input_by_winograd;
    if weight_by_winograd && !input_by_im2col {
        // Nothing is left for im2col: no jobs, no scratch, no copies.
        return ConvPoolGrads {
            input: input_by_winograd.then(|| winograd::input_grad(shape, weight, output_grad)),
            weight: winograd::weight_grad(shape, input, output_grad),
            bias: bias_grad(shape, output_grad),
        };
    }
    let out_plane = shape.out_plane();
    let per_image_in = shape.in_channels * shape.in_plane();
    let per_image_out = shape.out_channels * out_plane;
    let group = images_per_gemm(shape);
    let unrolling = Unrolling::for_shape(shape);
    let mut grads = backward_jobs(
        shape,
        input_by_im2col,
        group,
        |acc, first, count, input_grad| {
            let width = count * out_plane;
            let grads = &output_grad[first * per_image_out..][..count * per_image_out];
            let Scratch { columns, conv } = &mut acc.scratch;
            // The GEMMs want the output's gradient as [out, image, pixel].
            let conv_grad: &[f32] = if count == 1 {
                grads
            } else {
                for (i, image) in grads.chunks_exact(per_image_out).enumerate() {
                    for (o, plane) in image.chunks_exact(out_plane).enumerate() {
                        conv[o * width + i * out_plane..][..out_plane].copy_from_slice(plane);
                    }
                }
                &conv[..shape.out_channels * width]
            };
            for (bias, row) in acc.sums.bias.iter_mut().zip(conv_grad.chunks_exact(width)) {
                *bias += lane_sum(row, |v| v) as f32;
            }
            group_gradients(
                shape,
                &unrolling,
                weight,
                &input[first * per_image_in..][..count * per_image_in],
                conv_grad,
                columns,
                (!weight_by_winograd).then_some(&mut acc.sums.weight_t[..]),
                input_grad,
            );
        },
    );
    if weight_by_winograd {
        grads.weight = winograd::weight_grad(shape, input, output_grad);
    }
    if input_by_winograd {
        grads.input = Some(winograd::input_grad(shape, weight, output_grad));
    }
    grads
}

/// The bias gradient: each output channel's gradient summed over the batch.
fn bias_grad(shape: &ConvShape, output_grad: &[f32]) -> Vec<f32> {
    let plane = shape.out_plane();
    let mut bias = vec![0.0f32; shape.out_channels];
    for image in output_grad.chunks_exact(shape.out_channels * plane) {
        for (b, channel) in bias.iter_mut().zip(image.chunks_exact(plane)) {
            *b += lane_sum(channel, |v| v) as f32;
        }
    }
    bias
}

/// Runs `per_group(accumulators, first image, images, their input
/// gradients)` over the batch, `group` images at a time, in rayon jobs and
/// sums their gradients.
///
/// Each job owns a run of images' input gradients (disjoint writes) and
/// sums weight and bias gradients into its own accumulators, added up once
/// at the end.
fn backward_jobs<F>(
    shape: &ConvShape,
    want_input_grad: bool,
    group: usize,
    per_group: F,
) -> ConvPoolGrads
where
    F: Fn(&mut Accumulators, usize, usize, Option<&mut [f32]>) + Sync,
{
    let per_image_in = shape.in_channels * shape.in_plane();
    let mut input_grad = want_input_grad.then(|| filled(0.0f32, shape.input_len()));
    let images = images_per_job(shape.batch);
    // One entry per job: its images' input gradients, when wanted.
    let job_grads: Vec<Option<&mut [f32]>> = match input_grad.as_mut() {
        Some(grads) => grads.chunks_mut(per_image_in * images).map(Some).collect(),
        None => (0..shape.batch.div_ceil(images)).map(|_| None).collect(),
    };
    let jobs: Vec<Sums> = job_grads
        .into_par_iter()
        .enumerate()
        .map(|(job, grads)| {
            let mut acc = Accumulators::new(shape, group);
            let mut grads = grads.map(|g| g.chunks_mut(per_image_in * group));
            let end = ((job + 1) * images).min(shape.batch);
            for first in (job * images..end).step_by(group) {
                let count = group.min(end - first);
                per_group(
                    &mut acc,
                    first,
                    count,
                    grads.as_mut().and_then(Iterator::next),
                );
            }
            acc.into_sums()
        })
        .collect();
    // Summed in job order, not as rayon's jobs finish: the same inputs give
    // bit-identical gradients on every run (resume depends on it).
    let totals = jobs
        .into_iter()
        .reduce(Sums::merge)
        .unwrap_or_else(|| Sums::zeros(shape));
    ConvPoolGrads {
        input: input_grad,
        weight: transpose(&totals.weight_t, shape.out_channels),
        bias: totals.bias,
    }
}

/// A row-major matrix with `columns` columns, transposed.
fn transpose(matrix: &[f32], columns: usize) -> Vec<f32> {
    let rows = matrix.len() / columns;
    (0..columns)
        .flat_map(|c| (0..rows).map(move |r| matrix[r * columns + c]))
        .collect()
}

/// A group of images' share of the weight gradient, added to
/// `weight_grad_t` (laid out `[patch, out]`), and their input gradients,
/// each when asked for, from the gradient of their convolution output laid
/// out `[out, image, pixel]`. `columns` is scratch.
#[allow(clippy::too_many_arguments)]
fn group_gradients(
    shape: &ConvShape,
    unrolling: &Unrolling,
    weight: &[f32],
    images: &[f32],
    conv_grad: &[f32],
    columns: &mut [f32],
    weight_grad_t: Option<&mut [f32]>,
    input_grad: Option<&mut [f32]>,
) {
    let per_image_in = shape.in_channels * shape.in_plane();
    let width = images.len() / per_image_in * shape.out_plane();
    if let Some(weight_grad_t) = weight_grad_t {
        im2col_group(shape, unrolling, images, columns, width);
        // weight_grad_t[k, o] += Σ_p columns[k, p] · conv_grad[o, p]: the
        // gradient transposed, so that gemm reads the unrolled images in
        // place (their rows are contiguous) and packs only the small
        // output gradient; [o, k] would have it copy all of `columns`.
        gemm_f32(
            Matrix::row_major(weight_grad_t, shape.out_channels),
            (columns, width as isize, 1),
            (conv_grad, 1, width as isize),
            (shape.patch(), shape.out_channels, width),
            true,
        );
    }
    if let Some(input_grad) = input_grad {
        // columns_grad[k, p] = Σ_o weight[o, k] · conv_grad[o, p]
        gemm_f32(
            Matrix::row_major(columns, width),
            (weight, 1, shape.patch() as isize),
            (conv_grad, width as isize, 1),
            (shape.patch(), width, shape.out_channels),
            false,
        );
        col2im_group(shape, unrolling, columns, input_grad, width);
    }
}

/// Output pixels one GEMM of the plain convolution should cover: images
/// whose planes are smaller share a GEMM (a 4×4 map alone makes a product
/// 16 columns wide, a 1×1 map a matrix–vector product).
const GEMM_COLUMNS: usize = 512;

/// Images per GEMM in the plain convolution (see [`GEMM_COLUMNS`]).
fn images_per_gemm(shape: &ConvShape) -> usize {
    (GEMM_COLUMNS / shape.out_plane()).clamp(1, images_per_job(shape.batch))
}

/// Where one image's unrolled columns sit in a buffer shared by a group of
/// images: its row `k` starts at `k · row_stride + offset`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    row_stride: usize,
    offset: usize,
}

impl Placement {
    /// The image alone in the buffer.
    fn alone(shape: &ConvShape) -> Self {
        Self {
            row_stride: shape.out_plane(),
            offset: 0,
        }
    }

    /// Image `i` of a group whose rows are `width` columns wide.
    fn in_group(shape: &ConvShape, i: usize, width: usize) -> Self {
        Self {
            row_stride: width,
            offset: i * shape.out_plane(),
        }
    }

    /// The part of `columns` holding row `k` of this image.
    pub(super) fn row(self, k: usize, len: usize) -> std::ops::Range<usize> {
        let start = k * self.row_stride + self.offset;
        start..start + len
    }
}

/// Images per rayon job: two jobs per thread, so that one slow job does
/// not leave a core idle, while each job's buffers are set up only once.
pub(super) fn images_per_job(batch: usize) -> usize {
    batch.div_ceil(2 * rayon::current_num_threads()).max(1)
}

/// A job's buffers, reused across its groups of images: the unrolled
/// images, and the convolution output (forward) or its gradient
/// (backward), for `group` images.
struct Scratch {
    columns: Spare,
    conv: Spare,
}

impl Scratch {
    fn new(shape: &ConvShape, group: usize) -> Self {
        let width = group * shape.out_plane();
        Self {
            columns: Spare::take(width * shape.patch()),
            conv: Spare::take(shape.out_channels * width),
        }
    }
}

/// One backward job's scratch space and partial sums.
struct Accumulators {
    scratch: Scratch,
    sums: Sums,
}

impl Accumulators {
    fn new(shape: &ConvShape, group: usize) -> Self {
        Self {
            scratch: Scratch::new(shape, group),
            sums: Sums::zeros(shape),
        }
    }

    /// The partial sums, the scratch space dropped here: on the job's own
    /// thread, whose spares it returns to (see `spare`).
    fn into_sums(self) -> Sums {
        self.sums
    }
}

/// Partial sums of the weight and bias gradients.
struct Sums {
    /// The weight gradient transposed, `[patch, out]` (see
    /// [`group_gradients`]).
    weight_t: Vec<f32>,
    bias: Vec<f32>,
}

impl Sums {
    fn zeros(shape: &ConvShape) -> Self {
        Self {
            weight_t: vec![0.0; shape.weight_len()],
            bias: vec![0.0; shape.out_channels],
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in self.weight_t.iter_mut().zip(&other.weight_t) {
            *a += b;
        }
        for (a, b) in self.bias.iter_mut().zip(&other.bias) {
            *a += b;
        }
        self
    }
}

fn check_lengths(shape: &ConvShape, input: &[f32], weight: &[f32], bias: &[f32]) {
    assert!(shape.is_supported(), "unsupported fused shape {shape:?}");
    check_conv_lengths(shape, input, weight, bias);
}

fn check_conv_lengths(shape: &ConvShape, input: &[f32], weight: &[f32], bias: &[f32]) {
    assert!(
        shape.conv_is_supported(),
        "unsupported conv shape {shape:?}"
    );
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(bias.len(), shape.out_channels, "bias length");
}

/// The columns `ox` of an output row whose input column `ox + kx - pad`
/// lies inside a row of width `w` (stride 1, output as wide as the input).
fn valid_columns(w: usize, kx: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx).min(w);
    let hi = (w + pad).saturating_sub(kx).min(w).max(lo);
    (lo, hi)
}

/// For one kernel offset `(ky, kx)`: row `k` of the unrolled image reads
/// pixel `p + shift` for output pixel `p`, and the range of `p` for which
/// `p + shift` is inside the plane (stride 1, "same" padding).
fn shifted_span(shape: &ConvShape, ky: usize, kx: usize) -> (isize, usize, usize) {
    let pad = shape.padding as isize;
    let w = shape.width as isize;
    let plane = shape.in_plane() as isize;
    let shift = (ky as isize - pad) * w + (kx as isize - pad);
    let start = (-shift).clamp(0, plane);
    let end = (plane - shift).clamp(start, plane);
    (shift, start as usize, end as usize)
}

/// Where one kernel offset `(ky, kx)` reads for each output pixel: the
/// output columns `ox` whose input column `ox·stride + kx − pad` is inside
/// the image, and for output row `oy` the input row, if inside.
#[derive(Debug, Clone, Copy)]
struct Offset {
    ky: usize,
    kx: usize,
    /// First and one-past-last output column that reads inside the image.
    columns: (usize, usize),
}

impl Offset {
    fn new(shape: &ConvShape, ky: usize, kx: usize) -> Self {
        let (s, pad) = (shape.stride, shape.padding);
        // ox·s + kx ≥ pad  and  ox·s + kx < width + pad.
        let hi = (shape.width + pad)
            .saturating_sub(kx)
            .div_ceil(s)
            .min(shape.out_width());
        let lo = pad.saturating_sub(kx).div_ceil(s).min(hi);
        Self {
            ky,
            kx,
            columns: (lo, hi),
        }
    }

    /// The input row output row `oy` reads, when inside the image.
    fn input_row(&self, shape: &ConvShape, oy: usize) -> Option<usize> {
        (oy * shape.stride + self.ky)
            .checked_sub(shape.padding)
            .filter(|&iy| iy < shape.height)
    }

    /// The input column of output column `lo`, the first inside (when
    /// there is one: `lo < hi`).
    fn first_input_column(&self, shape: &ConvShape) -> usize {
        self.columns.0 * shape.stride + self.kx - shape.padding
    }
}

/// Unrolls one image into `columns[k, p]`: row `k` (an input channel and
/// kernel offset, in the weight's `[in, kh, kw]` order) holds, for every
/// output pixel `p`, the input value that offset reads; zero over the
/// border.
fn im2col(
    shape: &ConvShape,
    unrolling: &Unrolling,
    image: &[f32],
    columns: &mut [f32],
    place: Placement,
) {
    match unrolling {
        Unrolling::Shifted => im2col_shifted(shape, image, columns, place),
        Unrolling::Rows => im2col_rows(shape, image, columns, place),
        Unrolling::Phases => phases::im2col(shape, image, columns, place),
        Unrolling::Crops => crops::im2col(shape, image, columns, place),
        Unrolling::Gather(map) => im2col_gather(shape, map, image, columns, place),
    }
}

/// [`im2col`] of a group of images side by side, rows `width` wide: a
/// strided layer's phase planes for the whole group at once (one copy per
/// row instead of one per image), the others image by image.
fn im2col_group(
    shape: &ConvShape,
    unrolling: &Unrolling,
    images: &[f32],
    columns: &mut [f32],
    width: usize,
) {
    let first = Placement::in_group(shape, 0, width);
    if let Unrolling::Phases = unrolling {
        return phases::im2col(shape, images, columns, first);
    }
    let per_image = shape.in_channels * shape.in_plane();
    for (i, image) in images.chunks(per_image).enumerate() {
        let place = Placement::in_group(shape, i, width);
        im2col(shape, unrolling, image, columns, place);
    }
}

/// The adjoint of [`im2col_group`]. Uses `columns` as scratch.
fn col2im_group(
    shape: &ConvShape,
    unrolling: &Unrolling,
    columns: &mut [f32],
    image_grads: &mut [f32],
    width: usize,
) {
    let first = Placement::in_group(shape, 0, width);
    if let Unrolling::Phases = unrolling {
        return phases::col2im(shape, columns, image_grads, first);
    }
    let per_image = shape.in_channels * shape.in_plane();
    for (i, image_grad) in image_grads.chunks_mut(per_image).enumerate() {
        let place = Placement::in_group(shape, i, width);
        col2im(shape, unrolling, columns, image_grad, place);
    }
}

/// How [`im2col`] reads the images of one layer shape, chosen once per
/// call of a kernel.
enum Unrolling {
    /// Stride 1, "same" padding: each row of the unrolled image is the
    /// plane shifted, one long copy.
    Shifted,
    /// Stride 1 over wide output rows: one copy per output row.
    Rows,
    /// Strided, with every phase plane on the output's grid
    /// ([`phases::fit`]): each row one shifted copy of a phase plane.
    Phases,
    /// Stride 1, unpadded, narrow output ([`crops::fit`]): each row one
    /// copy of a crop of the plane.
    Crops,
    /// Other strided or narrow output: for each kernel offset, the plane index
    /// each output pixel reads ([`PADDING`] where it reads a zero), so
    /// short rows cost no per-row set-up.
    Gather(Vec<u32>),
}

/// The [`Unrolling::Gather`] index of an output pixel that reads padding.
const PADDING: u32 = u32::MAX;

/// Output rows at least this wide are copied row by row; narrower ones,
/// and every strided convolution, are gathered through an index map.
const WIDE_ROW: usize = 16;

impl Unrolling {
    fn for_shape(shape: &ConvShape) -> Self {
        if shape.keeps_plane() {
            Unrolling::Shifted
        } else if shape.stride == 1 && shape.out_width() >= WIDE_ROW {
            Unrolling::Rows
        } else if phases::fit(shape) {
            Unrolling::Phases
        } else if crops::fit(shape) {
            Unrolling::Crops
        } else {
            Unrolling::Gather(gather_map(shape))
        }
    }
}

/// For each kernel offset `(ky, kx)` (row-major) and output pixel, the
/// index in the input plane it reads, or [`PADDING`].
fn gather_map(shape: &ConvShape) -> Vec<u32> {
    let (k, s, pad) = (shape.kernel, shape.stride, shape.padding);
    let mut map = Vec::with_capacity(k * k * shape.out_plane());
    for ky in 0..k {
        for kx in 0..k {
            for oy in 0..shape.out_height() {
                for ox in 0..shape.out_width() {
                    let iy = (oy * s + ky).checked_sub(pad).filter(|&y| y < shape.height);
                    let ix = (ox * s + kx).checked_sub(pad).filter(|&x| x < shape.width);
                    map.push(match (iy, ix) {
                        (Some(y), Some(x)) => (y * shape.width + x) as u32,
                        _ => PADDING,
                    });
                }
            }
        }
    }
    map
}

/// [`im2col`] through a gather map: `row[p] = plane[map[p]]`, zero where
/// the map says padding (an index past the plane reads nothing).
fn im2col_gather(
    shape: &ConvShape,
    map: &[u32],
    image: &[f32],
    columns: &mut [f32],
    place: Placement,
) {
    let (plane, out_plane, offsets) = (shape.in_plane(), shape.out_plane(), shape.kernel.pow(2));
    for c in 0..shape.in_channels {
        let channel = &image[c * plane..][..plane];
        for (kk, indices) in map.chunks_exact(out_plane).enumerate() {
            let row = &mut columns[place.row(c * offsets + kk, out_plane)];
            for (value, &index) in row.iter_mut().zip(indices) {
                *value = channel.get(index as usize).copied().unwrap_or(0.0);
            }
        }
    }
}

/// The adjoint of [`im2col_gather`].
fn col2im_gather(
    shape: &ConvShape,
    map: &[u32],
    columns: &[f32],
    image_grad: &mut [f32],
    place: Placement,
) {
    let (plane, out_plane, offsets) = (shape.in_plane(), shape.out_plane(), shape.kernel.pow(2));
    for c in 0..shape.in_channels {
        let channel = &mut image_grad[c * plane..][..plane];
        for (kk, indices) in map.chunks_exact(out_plane).enumerate() {
            let row = &columns[place.row(c * offsets + kk, out_plane)];
            for (value, &index) in row.iter().zip(indices) {
                if let Some(pixel) = channel.get_mut(index as usize) {
                    *pixel += value;
                }
            }
        }
    }
}

/// [`im2col`] for stride 1 and "same" padding: within a channel, an offset
/// reads the plane shifted by a constant, so each row is one long copy; the
/// values that wrapped around a row edge are then zeroed (at most `pad` per
/// image row).
fn im2col_shifted(shape: &ConvShape, image: &[f32], columns: &mut [f32], place: Placement) {
    let (w, k, pad) = (shape.width, shape.kernel, shape.padding);
    let plane = shape.in_plane();
    for c in 0..shape.in_channels {
        let channel = &image[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[place.row((c * k + ky) * k + kx, plane)];
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

/// [`im2col`] for any stride and padding, one output row at a time.
fn im2col_rows(shape: &ConvShape, image: &[f32], columns: &mut [f32], place: Placement) {
    let (w, k, s) = (shape.width, shape.kernel, shape.stride);
    let (plane, out_plane, ow) = (shape.in_plane(), shape.out_plane(), shape.out_width());
    for c in 0..shape.in_channels {
        let channel = &image[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[place.row((c * k + ky) * k + kx, out_plane)];
                let offset = Offset::new(shape, ky, kx);
                let (lo, hi) = offset.columns;
                if lo == hi {
                    // This offset reads only padding.
                    row.fill(0.0);
                    continue;
                }
                let first = offset.first_input_column(shape);
                for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
                    let Some(iy) = offset.input_row(shape, oy) else {
                        out.fill(0.0);
                        continue;
                    };
                    let input = &channel[iy * w + first..(iy + 1) * w];
                    zero_edges(out, lo, hi);
                    gather(&mut out[lo..hi], input, s);
                }
            }
        }
    }
}

/// Zeroes `out` outside `lo..hi` (nothing to do without padding, the
/// common case, so no call at all).
fn zero_edges(out: &mut [f32], lo: usize, hi: usize) {
    if lo > 0 {
        out[..lo].fill(0.0);
    }
    if hi < out.len() {
        out[hi..].fill(0.0);
    }
}

/// `out[j] = input[j · stride]`: a plain copy for stride 1.
fn gather(out: &mut [f32], input: &[f32], stride: usize) {
    if stride == 1 {
        out.copy_from_slice(&input[..out.len()]);
    } else if let Some(last) = out.len().checked_sub(1) {
        // One bounds check for the whole row, none per element.
        let input = &input[..=last * stride];
        for (j, value) in out.iter_mut().enumerate() {
            *value = input[j * stride];
        }
    }
}

/// `input[j · stride] += values[j]`, the adjoint of [`gather`].
fn scatter_add(input: &mut [f32], values: &[f32], stride: usize) {
    if stride == 1 {
        for (pixel, value) in input.iter_mut().zip(values) {
            *pixel += value;
        }
    } else if let Some(last) = values.len().checked_sub(1) {
        let input = &mut input[..=last * stride];
        for (j, value) in values.iter().enumerate() {
            input[j * stride] += value;
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
fn col2im(
    shape: &ConvShape,
    unrolling: &Unrolling,
    columns: &mut [f32],
    image_grad: &mut [f32],
    place: Placement,
) {
    match unrolling {
        Unrolling::Shifted => col2im_shifted(shape, columns, image_grad, place),
        Unrolling::Rows => col2im_rows(shape, columns, image_grad, place),
        Unrolling::Phases => phases::col2im(shape, columns, image_grad, place),
        Unrolling::Crops => crops::col2im(shape, columns, image_grad, place),
        Unrolling::Gather(map) => col2im_gather(shape, map, columns, image_grad, place),
    }
}

fn col2im_shifted(
    shape: &ConvShape,
    columns: &mut [f32],
    image_grad: &mut [f32],
    place: Placement,
) {
    let (w, k, pad) = (shape.width, shape.kernel, shape.padding);
    let plane = shape.in_plane();
    for c in 0..shape.in_channels {
        let channel = &mut image_grad[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[place.row((c * k + ky) * k + kx, plane)];
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

fn col2im_rows(shape: &ConvShape, columns: &[f32], image_grad: &mut [f32], place: Placement) {
    let (w, k, s) = (shape.width, shape.kernel, shape.stride);
    let (plane, out_plane, ow) = (shape.in_plane(), shape.out_plane(), shape.out_width());
    for c in 0..shape.in_channels {
        let channel = &mut image_grad[c * plane..][..plane];
        for ky in 0..k {
            for kx in 0..k {
                let offset = Offset::new(shape, ky, kx);
                let (lo, hi) = offset.columns;
                if lo == hi {
                    continue;
                }
                let first = offset.first_input_column(shape);
                let row = &columns[place.row((c * k + ky) * k + kx, out_plane)];
                for (oy, out) in row.chunks_exact(ow).enumerate() {
                    let Some(iy) = offset.input_row(shape, oy) else {
                        continue;
                    };
                    let input = &mut channel[iy * w + first..(iy + 1) * w];
                    scatter_add(input, &out[lo..hi], s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::pseudo_random;
    use super::*;

    /// Strided shapes whose phases fit the grid: the Kaggle-style CNN's
    /// two 5×5 stride-2 layers, odd sides, stride 3, padding wider than
    /// half the kernel and offsets that read only padding.
    fn phase_shapes() -> Vec<ConvShape> {
        let shape = |cin, [h, w]: [usize; 2], kernel, stride, padding| ConvShape {
            batch: 1,
            in_channels: cin,
            out_channels: 1,
            height: h,
            width: w,
            kernel,
            stride,
            padding,
        };
        vec![
            shape(2, [24, 24], 5, 2, 2),
            shape(3, [8, 8], 5, 2, 2),
            shape(2, [9, 8], 5, 2, 2),
            shape(2, [5, 6], 3, 3, 1),
            shape(1, [2, 3], 5, 2, 3),
            shape(2, [7, 7], 3, 2, 1),
            shape(1, [6, 6], 2, 2, 0),
        ]
    }

    /// The phase planes' im2col and col2im give exactly what the index
    /// gather gives, value for value, for one image alone and for a group
    /// of three side by side (where a flat shift crosses into the next
    /// image).
    #[test]
    fn phase_planes_unroll_exactly_as_the_gather() {
        for (n, shape) in phase_shapes().into_iter().enumerate() {
            assert!(
                matches!(Unrolling::for_shape(&shape), Unrolling::Phases),
                "{shape:?}"
            );
            let gather = Unrolling::Gather(gather_map(&shape));
            for images in [1, 3] {
                let width = images * shape.out_plane();
                let inputs = pseudo_random(images * shape.input_len(), n as u32);
                let len = shape.patch() * width;
                let unroll = |unrolling: &Unrolling| {
                    let mut columns = vec![f32::NAN; len];
                    im2col_group(&shape, unrolling, &inputs, &mut columns, width);
                    columns
                };
                let (by_phases, by_gather) = (unroll(&Unrolling::Phases), unroll(&gather));
                assert_eq!(by_phases, by_gather, "{shape:?}, {images} images");
                // The backward pass adds into zeroed gradients, so the sums
                // are bit-identical too.
                let grads = pseudo_random(len, n as u32 + 50);
                let fold = |unrolling: &Unrolling| {
                    let mut columns = grads.clone();
                    let mut image_grads = vec![0.0; inputs.len()];
                    col2im_group(&shape, unrolling, &mut columns, &mut image_grads, width);
                    image_grads.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(
                    fold(&Unrolling::Phases),
                    fold(&gather),
                    "{shape:?}, {images} images"
                );
            }
        }
    }

    /// Unpadded stride-1 layers with narrow output rows unroll through
    /// crops of the plane exactly as through the gather (the Kaggle-style
    /// CNN's 12×12 → 10×10 and 10×10 → 8×8 layers, an odd plane and a
    /// 5×5 kernel), and fold back to the same gradient up to rounding (the
    /// crops add each kernel column's share before the pixel does).
    #[test]
    fn crops_unroll_as_the_gather() {
        let shape = |cin, [h, w]: [usize; 2], kernel| ConvShape {
            batch: 1,
            in_channels: cin,
            out_channels: 1,
            height: h,
            width: w,
            kernel,
            stride: 1,
            padding: 0,
        };
        for (n, shape) in [
            shape(2, [12, 12], 3),
            shape(3, [10, 10], 3),
            shape(2, [11, 13], 5),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(
                matches!(Unrolling::for_shape(&shape), Unrolling::Crops),
                "{shape:?}"
            );
            let gather = Unrolling::Gather(gather_map(&shape));
            let width = 2 * shape.out_plane();
            let place = Placement::in_group(&shape, 1, width);
            let image = pseudo_random(shape.input_len(), n as u32);
            let len = shape.patch() * width;
            let unroll = |unrolling: &Unrolling| {
                let mut columns = vec![0.0; len];
                im2col(&shape, unrolling, &image, &mut columns, place);
                columns
            };
            assert_eq!(unroll(&Unrolling::Crops), unroll(&gather), "{shape:?}");
            let grads = pseudo_random(len, n as u32 + 50);
            let fold = |unrolling: &Unrolling| {
                let mut columns = grads.clone();
                let mut image_grad = vec![0.0; shape.input_len()];
                col2im(&shape, unrolling, &mut columns, &mut image_grad, place);
                image_grad
            };
            for (c, g) in fold(&Unrolling::Crops).iter().zip(fold(&gather)) {
                assert!(
                    (c - g).abs() <= 1e-5 * g.abs().max(1.0),
                    "{shape:?}: {c} vs {g}"
                );
            }
        }
    }

    /// Strided layers whose phases would not fit the output's grid (an
    /// unpadded stride-2 layer reads none of the last rows) keep the gather.
    #[test]
    fn strided_layers_that_drop_input_rows_keep_the_gather() {
        let shape = ConvShape {
            batch: 1,
            in_channels: 1,
            out_channels: 1,
            height: 7,
            width: 5,
            kernel: 3,
            stride: 2,
            padding: 0,
        };
        assert!(!phases::fit(&shape));
        assert!(matches!(Unrolling::for_shape(&shape), Unrolling::Gather(_)));
    }

    /// A layer whose output is a single pixel (the Kaggle-style CNN's last)
    /// keeps the gather: each crop copy would move one value.
    #[test]
    fn one_pixel_outputs_keep_the_gather() {
        let shape = ConvShape {
            batch: 1,
            in_channels: 64,
            out_channels: 128,
            height: 4,
            width: 4,
            kernel: 4,
            stride: 1,
            padding: 0,
        };
        assert!(!crops::fit(&shape));
        assert!(matches!(Unrolling::for_shape(&shape), Unrolling::Gather(_)));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // 2 rows × 3 columns → 3 rows × 2 columns.
        let matrix = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transpose(&matrix, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
