//! im2col and col2im for strided convolutions through phase planes.
//!
//! With stride `s`, output pixel `(oy, ox)` and kernel offset `(ky, kx)`
//! read input pixel `(s·oy + ky − pad, s·ox + kx − pad)`. Writing
//! `ky − pad = s·qy + ry` (`0 ≤ ry < s`), that is pixel `(oy + qy, ox +
//! qx)` of the *phase plane* `(ry, rx)`: the input's rows `ry, ry + s, …`
//! and columns `rx, rx + s, …`. Laid out on the output's grid, each phase
//! plane is read shifted by a constant, as a stride-1 "same" convolution
//! reads its input, so every unrolled row is one long copy and a few
//! zeroed columns, where an index gather would move one value at a time.
//!
//! The unrolled values are the gather's exactly, and col2im adds each
//! pixel's gradients in the same order, so the results are bit-identical.

use std::ops::Range;

use super::conv::{ConvShape, Placement};

/// Whether every input pixel lands on the output's grid in its phase
/// plane: `stride · out_side ≥ side` on both axes (true of "same"-padded
/// strided layers, such as the Kaggle-style CNN's 5×5 stride-2 ones).
pub(super) fn fit(shape: &ConvShape) -> bool {
    shape.stride > 1
        && shape.stride * shape.out_height() >= shape.height
        && shape.stride * shape.out_width() >= shape.width
}

/// Where kernel offset `ky` (or `kx`) reads: its phase `r` and the shift
/// `q` of the output grid, with `ky − pad = s·q + r`.
fn phase_and_shift(shape: &ConvShape, k: usize) -> (usize, isize) {
    let at = k as isize - shape.padding as isize;
    let s = shape.stride as isize;
    (at.rem_euclid(s) as usize, at.div_euclid(s))
}

/// One kernel offset's reads in its phase plane, flattened over the output
/// grids of a group of images laid side by side: output pixel `p` reads
/// `p + shift` for `p` in `span`. In each image, the output rows in
/// `wrapped_rows` (as pixel ranges) and the columns in `wrapped_columns`
/// read outside that image's grid and must be zero.
struct Read {
    phase: usize,
    shift: isize,
    span: Range<usize>,
    wrapped_rows: Range<usize>,
    wrapped_columns: Range<usize>,
}

impl Read {
    fn new(shape: &ConvShape, ky: usize, kx: usize, images: usize) -> Self {
        let (oh, ow) = (shape.out_height() as isize, shape.out_width() as isize);
        let (ry, qy) = phase_and_shift(shape, ky);
        let (rx, qx) = phase_and_shift(shape, kx);
        let shift = qy * ow + qx;
        let len = (images * shape.out_plane()) as isize;
        let start = (-shift).clamp(0, len);
        let end = (len - shift).clamp(start, len);
        // Rows or columns o with o + q outside 0..side: a run at the start
        // (q < 0) or at the end (q > 0).
        let outside = |q: isize, side: isize| {
            if q < 0 {
                0..(-q).min(side) as usize
            } else {
                (side - q).max(0) as usize..side as usize
            }
        };
        let rows = outside(qy, oh);
        Self {
            phase: ry * shape.stride + rx,
            shift,
            span: start as usize..end as usize,
            wrapped_rows: rows.start * ow as usize..rows.end * ow as usize,
            wrapped_columns: outside(qx, ow),
        }
    }

    /// The phase-plane values this read copies: `from[span + shift]`
    /// (empty when the offset reads only padding).
    fn source(&self) -> Range<usize> {
        if self.span.is_empty() {
            return 0..0;
        }
        let from = (self.span.start as isize + self.shift) as usize;
        from..from + self.span.len()
    }

    /// Zeroes, in each image's part of `row`, what read outside its grid
    /// (a neighbouring row's or image's pixels).
    fn zero_wrapped(&self, row: &mut [f32], out_plane: usize, ow: usize) {
        for image in row.chunks_exact_mut(out_plane) {
            image[self.wrapped_rows.clone()].fill(0.0);
            for column in self.wrapped_columns.clone() {
                for value in image[column..].iter_mut().step_by(ow) {
                    *value = 0.0;
                }
            }
        }
    }
}

/// Writes one input channel's phase planes, on the output's grid, into
/// `phases` at `[phase, image, oy, ox]` for image `image` of a group of
/// `images`. Cells past the input's edge are never written: `phases`
/// arrives zeroed and they stay zero for every channel.
fn split(shape: &ConvShape, channel: &[f32], phases: &mut [f32], image: usize, images: usize) {
    let s = shape.stride;
    for (iy, row) in channel.chunks_exact(shape.width).enumerate() {
        for rx in 0..s {
            let cells = &mut phases[cells(shape, iy, rx, image, images)];
            for (cell, &value) in cells.iter_mut().zip(row.iter().skip(rx).step_by(s)) {
                *cell = value;
            }
        }
    }
}

/// The adjoint of [`split`]: adds each phase cell's gradient onto its
/// input pixel.
fn merge(shape: &ConvShape, phases: &[f32], channel: &mut [f32], image: usize, images: usize) {
    let s = shape.stride;
    for (iy, row) in channel.chunks_exact_mut(shape.width).enumerate() {
        for rx in 0..s {
            let cells = &phases[cells(shape, iy, rx, image, images)];
            for (pixel, cell) in row.iter_mut().skip(rx).step_by(s).zip(cells) {
                *pixel += cell;
            }
        }
    }
}

/// The grid row of phase `(iy mod s, rx)` that input row `iy`'s columns
/// `rx, rx + s, …` land on, for image `image` of a group of `images`.
fn cells(shape: &ConvShape, iy: usize, rx: usize, image: usize, images: usize) -> Range<usize> {
    let (s, ow) = (shape.stride, shape.out_width());
    let phase = (iy % s) * s + rx;
    let start = (phase * images + image) * shape.out_plane() + iy / s * ow;
    start..start + ow
}

/// A group's phase planes, `[phase, image, oy, ox]`, and every kernel
/// offset's read, in the weight's `[kh, kw]` order.
struct Group {
    images: usize,
    phases: Vec<f32>,
    reads: Vec<Read>,
}

impl Group {
    fn new(shape: &ConvShape, images: usize) -> Self {
        let k = shape.kernel;
        Self {
            images,
            phases: vec![0.0; shape.stride * shape.stride * images * shape.out_plane()],
            reads: (0..k * k)
                .map(|kk| Read::new(shape, kk / k, kk % k, images))
                .collect(),
        }
    }

    /// The part of `phases` holding one phase plane of every image.
    fn plane(&self, shape: &ConvShape, phase: usize) -> Range<usize> {
        let len = self.images * shape.out_plane();
        phase * len..(phase + 1) * len
    }
}

/// im2col of a group of images sharing one GEMM (requires [`fit`]): row `k`
/// of `columns` at `place` (the first image's placement) gets, for every
/// output pixel of every image, the value kernel row `k` reads.
pub(super) fn im2col(shape: &ConvShape, images: &[f32], columns: &mut [f32], place: Placement) {
    let (plane, out_plane, ow) = (shape.in_plane(), shape.out_plane(), shape.out_width());
    let per_image = shape.in_channels * plane;
    let mut group = Group::new(shape, images.len() / per_image);
    let width = group.images * out_plane;
    for c in 0..shape.in_channels {
        for (i, image) in images.chunks_exact(per_image).enumerate() {
            split(
                shape,
                &image[c * plane..][..plane],
                &mut group.phases,
                i,
                group.images,
            );
        }
        for (kk, read) in group.reads.iter().enumerate() {
            let row = &mut columns[place.row(c * group.reads.len() + kk, width)];
            let from = &group.phases[group.plane(shape, read.phase)];
            row[..read.span.start].fill(0.0);
            row[read.span.end..].fill(0.0);
            row[read.span.clone()].copy_from_slice(&from[read.source()]);
            read.zero_wrapped(row, out_plane, ow);
        }
    }
}

/// The adjoint of [`im2col`]: adds each unrolled value's gradient onto the
/// pixel it was read from, image by image. Uses `columns` as scratch.
pub(super) fn col2im(
    shape: &ConvShape,
    columns: &mut [f32],
    image_grads: &mut [f32],
    place: Placement,
) {
    let (plane, out_plane, ow) = (shape.in_plane(), shape.out_plane(), shape.out_width());
    let per_image = shape.in_channels * plane;
    let mut group = Group::new(shape, image_grads.len() / per_image);
    let width = group.images * out_plane;
    for c in 0..shape.in_channels {
        group.phases.fill(0.0);
        for (kk, read) in group.reads.iter().enumerate() {
            let row = &mut columns[place.row(c * group.reads.len() + kk, width)];
            read.zero_wrapped(row, out_plane, ow);
            let range = group.plane(shape, read.phase);
            let to = &mut group.phases[range];
            for (cell, value) in to[read.source()].iter_mut().zip(&row[read.span.clone()]) {
                *cell += value;
            }
        }
        for (i, image_grad) in image_grads.chunks_exact_mut(per_image).enumerate() {
            let channel = &mut image_grad[c * plane..][..plane];
            merge(shape, &group.phases, channel, i, group.images);
        }
    }
}
