//! im2col and col2im for narrow unpadded stride-1 layers through cropped
//! copies of the plane.
//!
//! Output pixel `(oy, ox)` and kernel offset `(ky, kx)` read input pixel
//! `(oy + ky, ox + kx)`. For each kernel column `kx`, the plane cropped to
//! columns `kx … kx + out_width` (the *crop*, `height × out_width`) holds
//! every value that column reads, laid out as the output's rows; kernel row
//! `ky` then reads `out_height` whole rows of it from row `ky` on, so every
//! unrolled row is one long copy, where a row-by-row copy would make
//! `out_height` short ones and an index gather would move one value at a
//! time.

use super::conv::{ConvShape, Placement};

/// Output rows narrower than this stay with the index gather: a 1×1
/// output (the Kaggle-style CNN's last layer) makes every copy one value,
/// and the crops only cost. The narrowest rows timed faster through crops
/// were 8 wide (docs/performance.md).
const MIN_OUT_WIDTH: usize = 8;

/// Whether `shape` goes through the crops: stride 1, no padding, output
/// rows at least [`MIN_OUT_WIDTH`] wide.
pub(super) fn fit(shape: &ConvShape) -> bool {
    shape.stride == 1 && shape.padding == 0 && shape.out_width() >= MIN_OUT_WIDTH
}

/// One channel's crops, `[kx, iy, ox]`.
fn crop(shape: &ConvShape, channel: &[f32], crops: &mut [f32]) {
    let (w, ow) = (shape.width, shape.out_width());
    for (kx, crop) in crops.chunks_exact_mut(shape.height * ow).enumerate() {
        for (out, row) in crop.chunks_exact_mut(ow).zip(channel.chunks_exact(w)) {
            out.copy_from_slice(&row[kx..kx + ow]);
        }
    }
}

/// The adjoint of [`crop`]: adds each crop's gradient onto its pixels.
fn uncrop(shape: &ConvShape, crops: &[f32], channel: &mut [f32]) {
    let (w, ow) = (shape.width, shape.out_width());
    for (kx, crop) in crops.chunks_exact(shape.height * ow).enumerate() {
        for (cells, row) in crop.chunks_exact(ow).zip(channel.chunks_exact_mut(w)) {
            for (pixel, cell) in row[kx..kx + ow].iter_mut().zip(cells) {
                *pixel += cell;
            }
        }
    }
}

/// Where kernel offset `(ky, kx)` reads in the crops: `out_height` rows
/// from row `ky` of crop `kx`.
fn source(shape: &ConvShape, ky: usize, kx: usize) -> std::ops::Range<usize> {
    let ow = shape.out_width();
    let start = (kx * shape.height + ky) * ow;
    start..start + shape.out_plane()
}

/// im2col of one image (requires [`fit`]): row `k` of `columns` at
/// `place` gets, for every output pixel, the value kernel row `k` reads.
pub(super) fn im2col(shape: &ConvShape, image: &[f32], columns: &mut [f32], place: Placement) {
    let (k, plane, out_plane) = (shape.kernel, shape.in_plane(), shape.out_plane());
    let mut crops = vec![0.0; k * shape.height * shape.out_width()];
    for (c, channel) in image.chunks_exact(plane).enumerate() {
        crop(shape, channel, &mut crops);
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut columns[place.row((c * k + ky) * k + kx, out_plane)];
                row.copy_from_slice(&crops[source(shape, ky, kx)]);
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each unrolled value's gradient onto the
/// pixel it was read from.
pub(super) fn col2im(shape: &ConvShape, columns: &[f32], image_grad: &mut [f32], place: Placement) {
    let (k, plane, out_plane) = (shape.kernel, shape.in_plane(), shape.out_plane());
    let mut crops = vec![0.0; k * shape.height * shape.out_width()];
    for (c, channel) in image_grad.chunks_exact_mut(plane).enumerate() {
        crops.fill(0.0);
        for ky in 0..k {
            for kx in 0..k {
                let row = &columns[place.row((c * k + ky) * k + kx, out_plane)];
                for (cell, value) in crops[source(shape, ky, kx)].iter_mut().zip(row) {
                    *cell += value;
                }
            }
        }
        uncrop(shape, &crops, channel);
    }
}
