//! Winograd's minimal filtering F(2×2, 3×3) for 3×3 stride-1 convolutions
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016): each 2×2 block of outputs comes from a 4×4 input tile with 16
//! multiplications per input–output channel pair instead of 36.
//!
//! The tiles are transformed (`V = Bᵀ d B`), the weights once per call
//! (`U = G g Gᵀ`); then for each of the 16 points one GEMM multiplies
//! `U[point]` (out × in) by `V[point]` (in × tiles), and the products are
//! transformed back (`Y = Aᵀ M A`). The GEMMs carry the arithmetic; the
//! transforms (module `tile_planes`) run over a whole plane of tiles at
//! once so that they vectorise.
//!
//! The weight gradient uses the same points the other way round (the
//! transposed algorithm, F(3×3, 2×2)): transformed input tiles times
//! transformed 2×2 blocks of the output's gradient, one GEMM per point
//! summing over every tile, then `Gᵀ · G` back to 3×3.
//!
//! The input gradient is a 3×3 convolution too (the weight turned half a
//! turn, channels swapped, padding `2 − p`), so it reuses the forward pass.
//!
//! Each only where it pays ([`applies`], [`applies_to_input_grad`],
//! [`applies_to_weight_grad`]): fewer multiplications, but the forward
//! pass's sixteen GEMMs are only as deep as the layer has input channels,
//! where im2col makes one nine times deeper, and the transforms are pure
//! memory traffic (docs/performance.md has the timings behind the
//! thresholds).

use rayon::prelude::*;

use super::conv::{ConvShape, images_per_job};
use super::fill::filled;
use super::gemm::{Matrix, gemm_f32};
use super::spare::Spare;
use super::tile_planes::{Planes, Points};

/// Points of the transformed tile (4 × 4).
const POINTS: usize = 16;

/// Tiles one round of GEMMs should cover: images with few tiles share
/// them, so that each GEMM stays wide, but no more, so that more of a
/// round's tiles and products are still in cache when the transforms and
/// the GEMMs read them back.
const GEMM_TILES: usize = 256;

/// Input channels below which the 16 GEMMs are too shallow to beat
/// im2col's one (a 1-channel input makes them rank-one updates).
const MIN_IN_CHANNELS: usize = 16;

/// Output sides below which a plane has too few tiles for the transforms
/// to pay (the Kaggle-style CNN's 10×10 and 8×8 layers are faster
/// through im2col, HVC's 12×12 one through this kernel).
const MIN_OUT_SIDE: usize = 12;

/// Output channels below which the input gradient is faster through
/// im2col (its Winograd form has more tiles than the forward pass).
const MIN_GRAD_CHANNELS: usize = 32;

/// Input channels below which the weight gradient is faster through
/// im2col: its sixteen products per tile are only `out × in`, where
/// im2col's one is `9·in × out` and reads the unrolled images in place.
const MIN_WEIGHT_GRAD_CHANNELS: usize = 32;

/// Whether the forward pass of `shape` goes through F(2×2, 3×3): a 3×3
/// kernel at stride 1, with enough input channels and output pixels for it
/// to beat im2col (the thresholds come from timing both on the models'
/// layers).
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.conv_is_supported()
        && shape.kernel == 3
        && shape.stride == 1
        && shape.in_channels >= MIN_IN_CHANNELS
        && shape.out_height() >= MIN_OUT_SIDE
        && shape.out_width() >= MIN_OUT_SIDE
}

/// Whether the input gradient of `shape` goes through F(2×2, 3×3): the
/// gradient is the 3×3 convolution of the output's gradient (as many
/// channels as the layer has outputs) padded by `2 − padding`, so this
/// needs a padding of at most 2 and enough output channels.
pub(super) fn applies_to_input_grad(shape: &ConvShape) -> bool {
    applies(shape) && shape.padding <= 2 && shape.out_channels >= MIN_GRAD_CHANNELS
}

/// Whether the weight gradient of `shape` goes through F(3×3, 2×2): a
/// layer the forward pass covers, with enough input channels.
pub(super) fn applies_to_weight_grad(shape: &ConvShape) -> bool {
    applies(shape) && shape.in_channels >= MIN_WEIGHT_GRAD_CHANNELS
}

/// The convolution, bias added: `[batch, out_channels, out_height,
/// out_width]`, as [`super::conv::conv2d_forward`] computes it. Any
/// padding and plane size are correct here; [`applies`] only says where
/// it is faster.
///
/// # Panics
/// If `shape` is not a supported 3×3 stride-1 convolution or a slice's
/// length does not match.
pub(super) fn forward(shape: &ConvShape, input: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    assert!(
        shape.conv_is_supported() && shape.kernel == 3 && shape.stride == 1,
        "Winograd F(2×2, 3×3) does not cover {shape:?}"
    );
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    assert_eq!(bias.len(), shape.out_channels, "bias length");
    let tiling = Tiling::new(shape);
    let filters = transform_weights(weight, shape.out_channels, shape.in_channels);
    let per_image_in = shape.input_len() / shape.batch;
    let per_image_out = shape.conv_output_len() / shape.batch;
    let images = images_per_job(shape.batch);
    let group = tiling.images_per_group(images);
    let mut output = filled(0.0f32, shape.conv_output_len());
    output
        .par_chunks_mut(per_image_out * images)
        .zip(input.par_chunks(per_image_in * images))
        .for_each(|(outputs, inputs)| {
            let mut scratch = Scratch::new(shape, &tiling, group);
            for (outputs, inputs) in outputs
                .chunks_mut(per_image_out * group)
                .zip(inputs.chunks(per_image_in * group))
            {
                for (i, image) in inputs.chunks(per_image_in).enumerate() {
                    transform_input(shape, &tiling, image, &mut scratch, i * tiling.per_image());
                }
                let tiles = inputs.len() / per_image_in * tiling.per_image();
                multiply(shape, &filters, &mut scratch, tiles);
                for (i, image) in outputs.chunks_mut(per_image_out).enumerate() {
                    let first = i * tiling.per_image();
                    transform_output(shape, &tiling, &mut scratch, first, bias, image);
                }
            }
        });
    output
}

/// The input gradient `[batch, in, height, width]` from the output's
/// gradient: the convolution of that gradient with the weight turned half
/// a turn and its channels swapped, padded by `2 − padding`.
///
/// Correct for any such layer; [`applies_to_input_grad`] only says where
/// it is faster.
///
/// # Panics
/// If `shape` is not a supported 3×3 stride-1 convolution with padding at
/// most 2, or a slice's length does not match.
pub(super) fn input_grad(shape: &ConvShape, weight: &[f32], output_grad: &[f32]) -> Vec<f32> {
    assert!(
        shape.conv_is_supported() && shape.kernel == 3 && shape.stride == 1 && shape.padding <= 2,
        "Winograd's input gradient does not cover {shape:?}"
    );
    assert_eq!(weight.len(), shape.weight_len(), "weight length");
    let transposed = ConvShape {
        batch: shape.batch,
        in_channels: shape.out_channels,
        out_channels: shape.in_channels,
        height: shape.out_height(),
        width: shape.out_width(),
        kernel: 3,
        stride: 1,
        padding: 2 - shape.padding,
    };
    let turned = turned_weight(weight, shape.out_channels, shape.in_channels);
    forward(
        &transposed,
        output_grad,
        &turned,
        &vec![0.0; shape.in_channels],
    )
}

/// `[out, in, 3, 3]` to `[in, out, 3, 3]`, each kernel turned half a turn.
fn turned_weight(weight: &[f32], out_channels: usize, in_channels: usize) -> Vec<f32> {
    let mut turned = vec![0.0f32; weight.len()];
    for (pair, kernel) in weight.chunks_exact(9).enumerate() {
        let (o, c) = (pair / in_channels, pair % in_channels);
        let to = &mut turned[(c * out_channels + o) * 9..][..9];
        for (t, k) in to.iter_mut().zip(kernel.iter().rev()) {
            *t = *k;
        }
    }
    turned
}

/// The weight gradient `[out, in, 3, 3]` from the layer's input and its
/// output's gradient, through the same 16 points: the forward pass is
/// bilinear in weight and input, so differentiating it point by point
/// gives `∂g = Gᵀ [Σ_tiles (A ∂Y Aᵀ) ⊙ (Bᵀ d B)] G`, summed over every 2×2
/// block `∂Y` of the output's gradient and its 4×4 input tile `d`. Per
/// point, the sum over tiles is one GEMM as deep as the group has tiles.
///
/// Each rayon job sums its images into its own 16 matrices; the jobs are
/// added in order, so the same inputs give the same bits on every run.
///
/// # Panics
/// If `shape` is not a supported 3×3 stride-1 convolution or a slice's
/// length does not match.
pub(super) fn weight_grad(shape: &ConvShape, input: &[f32], output_grad: &[f32]) -> Vec<f32> {
    assert!(
        shape.conv_is_supported() && shape.kernel == 3 && shape.stride == 1,
        "Winograd F(2×2, 3×3) does not cover {shape:?}"
    );
    assert_eq!(input.len(), shape.input_len(), "input length");
    assert_eq!(
        output_grad.len(),
        shape.conv_output_len(),
        "output_grad length"
    );
    let tiling = Tiling::new(shape);
    let per_image_in = shape.input_len() / shape.batch;
    let per_image_out = shape.conv_output_len() / shape.batch;
    let images = images_per_job(shape.batch);
    let group = tiling.images_per_group(images);
    let pairs = shape.out_channels * shape.in_channels;
    let sums: Vec<Vec<f32>> = input
        .par_chunks(per_image_in * images)
        .zip(output_grad.par_chunks(per_image_out * images))
        .map(|(inputs, grads)| {
            let mut scratch = Scratch::new(shape, &tiling, group);
            let mut sums = vec![0.0f32; POINTS * pairs];
            for (inputs, grads) in inputs
                .chunks(per_image_in * group)
                .zip(grads.chunks(per_image_out * group))
            {
                for (i, (image, grad)) in inputs
                    .chunks(per_image_in)
                    .zip(grads.chunks(per_image_out))
                    .enumerate()
                {
                    let first = i * tiling.per_image();
                    transform_input(shape, &tiling, image, &mut scratch, first);
                    transform_grad(shape, &tiling, grad, &mut scratch, first);
                }
                let tiles = inputs.len() / per_image_in * tiling.per_image();
                accumulate_products(shape, &scratch, tiles, &mut sums);
            }
            sums
        })
        .collect();
    let total = sums
        .into_iter()
        .reduce(|mut total, job| {
            total.iter_mut().zip(&job).for_each(|(t, j)| *t += j);
            total
        })
        .unwrap_or_else(|| vec![0.0; POINTS * pairs]);
    untransform_weights(&total, pairs)
}

/// Writes `A ∂Y Aᵀ` for every 2×2 block of one image's output gradient
/// into `scratch.products` (`[point, out_channel, tile]`, this image's
/// tiles from column `first`), zero past an odd plane's edge.
fn transform_grad(
    shape: &ConvShape,
    tiling: &Tiling,
    grad: &[f32],
    scratch: &mut Scratch,
    first: usize,
) {
    let size = [shape.out_height(), shape.out_width()];
    let Scratch {
        width,
        products,
        planes,
        ..
    } = scratch;
    for (o, plane) in grad.chunks_exact(size[0] * size[1]).enumerate() {
        let points = point_rows(
            products,
            shape.out_channels,
            *width,
            o,
            first,
            tiling.per_image(),
        );
        planes.grad_tiles(plane, size, points);
    }
}

/// `sums[point] += Ŷ[point] · V[point]ᵀ` for the 16 points: out × in,
/// summed over the group's `tiles`.
fn accumulate_products(shape: &ConvShape, scratch: &Scratch, tiles: usize, sums: &mut [f32]) {
    let (outs, ins, width) = (shape.out_channels, shape.in_channels, scratch.width);
    for (point, sum) in sums.chunks_exact_mut(outs * ins).enumerate() {
        gemm_f32(
            Matrix::row_major(sum, ins),
            (
                &scratch.products[point * outs * width..][..outs * width],
                width as isize,
                1,
            ),
            (
                &scratch.tiles[point * ins * width..][..ins * width],
                1,
                width as isize,
            ),
            (outs, ins, tiles),
            true,
        );
    }
}

/// `Gᵀ S G` for each out–in pair's 16 sums `S` (`[point, pair]`): the
/// `[out, in, 3, 3]` weight gradient. `Gᵀ` is `[[1, ½, ½, 0], [0, ½, −½,
/// 0], [0, ½, ½, 1]]`.
fn untransform_weights(sums: &[f32], pairs: usize) -> Vec<f32> {
    let reduce = |s: [f32; 4]| -> [f32; 3] {
        [
            s[0] + 0.5 * (s[1] + s[2]),
            0.5 * (s[1] - s[2]),
            0.5 * (s[1] + s[2]) + s[3],
        ]
    };
    let mut weight = vec![0.0f32; 9 * pairs];
    for (pair, kernel) in weight.chunks_exact_mut(9).enumerate() {
        let point = |i: usize, j: usize| sums[(4 * i + j) * pairs + pair];
        // Gᵀ S: down each of the four columns.
        let columns: [[f32; 3]; 4] =
            std::array::from_fn(|j| reduce(std::array::from_fn(|i| point(i, j))));
        // (Gᵀ S) G: across each of the three rows.
        for (r, row) in kernel.chunks_exact_mut(3).enumerate() {
            row.copy_from_slice(&reduce(std::array::from_fn(|j| columns[j][r])));
        }
    }
    weight
}

/// Tiles of 2×2 outputs over one output plane; the last row or column of
/// tiles hangs over an odd plane's edge (those outputs are not written).
struct Tiling {
    rows: usize,
    columns: usize,
}

impl Tiling {
    fn new(shape: &ConvShape) -> Self {
        Self {
            rows: shape.out_height().div_ceil(2),
            columns: shape.out_width().div_ceil(2),
        }
    }

    fn per_image(&self) -> usize {
        self.rows * self.columns
    }

    /// Images whose tiles share one round of GEMMs, at most a job's.
    fn images_per_group(&self, images_per_job: usize) -> usize {
        (GEMM_TILES / self.per_image()).clamp(1, images_per_job)
    }
}

/// A job's buffers, reused across its groups of images.
struct Scratch {
    /// Tiles of a whole group: the row length of `tiles` and `products`.
    width: usize,
    /// `V`, laid out `[point, in_channel, tile]`.
    tiles: Spare,
    /// `M = U · V` in the forward pass, `A ∂Y Aᵀ` in the weight
    /// gradient's, laid out `[point, out_channel, tile]`.
    products: Spare,
    /// One plane's tile transforms.
    planes: Planes,
}

impl Scratch {
    fn new(shape: &ConvShape, tiling: &Tiling, group: usize) -> Self {
        let tiles = group * tiling.per_image();
        Self {
            width: tiles,
            tiles: Spare::take(POINTS * shape.in_channels * tiles),
            products: Spare::take(POINTS * shape.out_channels * tiles),
            planes: Planes::new(tiling.rows, tiling.columns),
        }
    }
}

/// `U = G g Gᵀ` for every kernel, laid out `[point, out, in]` so that each
/// point's matrix is one row-major GEMM operand. `G` is
/// `[[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
fn transform_weights(weight: &[f32], out_channels: usize, in_channels: usize) -> Vec<f32> {
    let pairs = out_channels * in_channels;
    let mut filters = vec![0.0f32; POINTS * pairs];
    for (pair, g) in weight.chunks_exact(9).enumerate() {
        // G g: four rows of three.
        let mut gg = [[0.0f32; 3]; 4];
        for x in 0..3 {
            let (a, b, c) = (g[x], g[3 + x], g[6 + x]);
            gg[0][x] = a;
            gg[1][x] = 0.5 * (a + b + c);
            gg[2][x] = 0.5 * (a - b + c);
            gg[3][x] = c;
        }
        // (G g) Gᵀ: four rows of four.
        for (i, [a, b, c]) in gg.into_iter().enumerate() {
            let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
            for (j, value) in row.into_iter().enumerate() {
                filters[(4 * i + j) * pairs + pair] = value;
            }
        }
    }
    filters
}

/// Writes `V = Bᵀ d B` for every tile of one image into `scratch.tiles`
/// (`[point, channel, tile]`, this image's tiles from column `first`).
fn transform_input(
    shape: &ConvShape,
    tiling: &Tiling,
    image: &[f32],
    scratch: &mut Scratch,
    first: usize,
) {
    let plane = shape.height * shape.width;
    let size = [shape.height, shape.width, shape.padding];
    let Scratch {
        width,
        tiles,
        planes,
        ..
    } = scratch;
    for (c, channel) in image.chunks_exact(plane).enumerate() {
        let points = point_rows(
            tiles,
            shape.in_channels,
            *width,
            c,
            first,
            tiling.per_image(),
        );
        planes.input_tiles(channel, size, points);
    }
}

/// The 16 rows `[point, channel, start..start + len]` of a `[point,
/// channel, tile]` buffer whose rows are `tiles` wide, grouped as the
/// 4 × 4 tile's rows of points.
fn point_rows(
    buffer: &mut [f32],
    channels: usize,
    tiles: usize,
    channel: usize,
    start: usize,
    len: usize,
) -> Points<'_> {
    let mut points = buffer
        .chunks_exact_mut(channels * tiles)
        .map(|point| &mut point[channel * tiles + start..][..len]);
    std::array::from_fn(|_| std::array::from_fn(|_| points.next().expect("16 points")))
}

/// `M[point] = U[point] · V[point]` for the 16 points.
fn multiply(shape: &ConvShape, filters: &[f32], scratch: &mut Scratch, tiles: usize) {
    let (outs, ins, width) = (shape.out_channels, shape.in_channels, scratch.width);
    for point in 0..POINTS {
        gemm_f32(
            Matrix::row_major(
                &mut scratch.products[point * outs * width..][..outs * width],
                width,
            ),
            (
                &filters[point * outs * ins..][..outs * ins],
                ins as isize,
                1,
            ),
            (
                &scratch.tiles[point * ins * width..][..ins * width],
                width as isize,
                1,
            ),
            (outs, tiles, ins),
            false,
        );
    }
}

/// Writes one image's output from `M` (`scratch.products`, this image's
/// tiles from column `first`): `Y = Aᵀ M A` plus the bias.
fn transform_output(
    shape: &ConvShape,
    tiling: &Tiling,
    scratch: &mut Scratch,
    first: usize,
    bias: &[f32],
    image: &mut [f32],
) {
    let size = [shape.out_height(), shape.out_width()];
    let outs = shape.out_channels;
    let Scratch {
        width,
        products,
        planes,
        ..
    } = scratch;
    for (o, plane) in image.chunks_exact_mut(size[0] * size[1]).enumerate() {
        let m: [&[f32]; POINTS] = std::array::from_fn(|point| {
            &products[(point * outs + o) * *width + first..][..tiling.per_image()]
        });
        planes.output_plane(m, bias[o], plane, size);
    }
}
