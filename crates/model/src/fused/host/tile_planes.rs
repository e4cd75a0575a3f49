//! Winograd F(2×2, 3×3)'s tile transforms, a whole plane of tiles at a
//! time (module `winograd` runs the GEMMs between them).
//!
//! A tile row holds only as many tiles as the output has column pairs (12
//! on a 24-wide plane), too few for vector loops to pay for their set-up.
//! So each plane is first split into *quarter planes* by the parity of its
//! rows and columns: quarter `(ry, rx)` holds, at `i · columns + j`, the
//! value at row `2i + ry`, column `2j + rx`. A tile's rows `2ty … 2ty + 3`
//! are then quarter rows `ty` and `ty + 1`, and its columns `2tx … 2tx + 3`
//! quarter columns `tx` and `tx + 1`: every step of a transform is one
//! element-wise loop over all `rows · columns` tiles of the plane, reading
//! the quarters shifted by a row (`columns`) or by one value.
//!
//! The input's tiles overlap by two columns, so the last tile of each row
//! also reads column `columns` of its quarters, kept apart as a *side*
//! column; a shift by one value reads the next row's first tile there
//! instead, and the shifted copy is patched with the side.
//!
//! Each value goes through the same additions in the same order as the
//! textbook row-by-row transform, so the results are bit-identical to it.

use pulp::{Arch, Simd, WithSimd};

/// A plane's tile grid and the buffers its transforms work in.
pub(super) struct Planes {
    rows: usize,
    columns: usize,
    /// One padded row of the plane.
    row: Vec<f32>,
    /// Quarter planes `[2 · ry + rx]`, `(rows + 1) · columns` values (the
    /// output transform keeps its tiles' left and right outputs here).
    quarters: [Vec<f32>; 4],
    /// The quarters' column `columns`, `rows + 1` values.
    sides: [Vec<f32>; 4],
    /// A transform's first pass, `[2 · a + rx]`: row `a` of the tile
    /// combined down the quarters of column parity `rx` (the output
    /// transform's `Aᵀ M`: its top row's four columns, then its bottom's).
    down: [Vec<f32>; 8],
    /// The same for the side columns.
    down_sides: [Vec<f32>; 8],
    /// A `down` pair shifted by one tile, the side patched in.
    next: [Vec<f32>; 2],
}

/// A tile transform's sixteen rows of points, `[row][column]` of the
/// 4 × 4 tile, one value per tile.
pub(super) type Points<'a> = [[&'a mut [f32]; 4]; 4];

impl Planes {
    pub(super) fn new(rows: usize, columns: usize) -> Self {
        let tiles = rows * columns;
        Self {
            rows,
            columns,
            row: vec![0.0; 2 * columns + 2],
            quarters: std::array::from_fn(|_| vec![0.0; tiles + columns]),
            sides: std::array::from_fn(|_| vec![0.0; rows + 1]),
            down: std::array::from_fn(|_| vec![0.0; tiles]),
            down_sides: std::array::from_fn(|_| vec![0.0; rows]),
            next: std::array::from_fn(|_| vec![0.0; tiles]),
        }
    }

    fn tiles(&self) -> usize {
        self.rows * self.columns
    }

    /// `V = Bᵀ d B` for every 4 × 4 tile `d` of `plane` (`height ×
    /// width`, read from row and column `−padding` on, zero outside), into
    /// `points`. `Bᵀ` is `[[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0],
    /// [0, 1, 0, −1]]`.
    pub(super) fn input_tiles(
        &mut self,
        plane: &[f32],
        [height, width, padding]: [usize; 3],
        points: Points,
    ) {
        Arch::new().dispatch(InputTiles {
            planes: self,
            plane,
            size: [height, width, padding],
            points,
        });
    }

    /// `A ∂Y Aᵀ` for every 2 × 2 block `∂Y` of `plane` (`height × width`,
    /// zero past an odd edge), into `points`. `A` is `[[1, 0], [1, 1], [1,
    /// −1], [0, −1]]`.
    pub(super) fn grad_tiles(
        &mut self,
        plane: &[f32],
        [height, width]: [usize; 2],
        points: Points,
    ) {
        Arch::new().dispatch(GradTiles {
            planes: self,
            plane,
            size: [height, width],
            points,
        });
    }

    /// `Y = Aᵀ M A` plus `bias` for every tile's products `M` (`m`, point by
    /// point), written into `plane` (`height × width`; outputs past an odd
    /// edge are dropped). `Aᵀ` is `[[1, 1, 1, 0], [0, 1, −1, −1]]`.
    pub(super) fn output_plane(
        &mut self,
        m: [&[f32]; 16],
        bias: f32,
        plane: &mut [f32],
        [height, width]: [usize; 2],
    ) {
        Arch::new().dispatch(OutputPlane {
            planes: self,
            m,
            bias,
            plane,
            size: [height, width],
        });
    }

    /// Fills the quarters and their side columns from `plane`'s rows
    /// `−padding … 2 · quarter_rows − padding` and columns from `−padding`
    /// on, zero outside the plane.
    #[inline(always)]
    fn split(&mut self, plane: &[f32], [height, width, padding]: [usize; 3], quarter_rows: usize) {
        let cols = self.columns;
        for y in 0..2 * quarter_rows {
            self.row.fill(0.0);
            if let Some(iy) = y.checked_sub(padding).filter(|&iy| iy < height) {
                let len = width.min(self.row.len() - padding);
                self.row[padding..][..len].copy_from_slice(&plane[iy * width..][..len]);
            }
            let (i, ry) = (y / 2, y % 2);
            let [q0, q1, q2, q3] = &mut self.quarters;
            let (even, odd) = if ry == 0 { (q0, q1) } else { (q2, q3) };
            let (even, odd) = (&mut even[i * cols..][..cols], &mut odd[i * cols..][..cols]);
            let row = &self.row[..2 * cols];
            for j in 0..cols {
                even[j] = row[2 * j];
                odd[j] = row[2 * j + 1];
            }
            self.sides[2 * ry][i] = self.row[2 * cols];
            self.sides[2 * ry + 1][i] = self.row[2 * cols + 1];
        }
    }
}

struct InputTiles<'a> {
    planes: &'a mut Planes,
    plane: &'a [f32],
    size: [usize; 3],
    points: Points<'a>,
}

impl WithSimd for InputTiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            planes,
            plane,
            size,
            points,
        } = self;
        let (rows, cols, n) = (planes.rows, planes.columns, planes.tiles());
        planes.split(plane, size, rows + 1);
        let Planes {
            quarters,
            sides,
            down,
            down_sides,
            next,
            ..
        } = planes;
        // Down the tile: rows 2ty … 2ty + 3 are quarter rows ty, ty + 1.
        for rx in 0..2 {
            let [d0, d1, d2, d3] = pick(down, rx);
            let (top, bottom) = (&quarters[rx], &quarters[2 + rx]);
            apply_bt(
                [&top[..n], &bottom[..n], &top[cols..], &bottom[cols..]],
                [d0, d1, d2, d3],
            );
            let [s0, s1, s2, s3] = pick(down_sides, rx);
            let (top, bottom) = (&sides[rx], &sides[2 + rx]);
            apply_bt(
                [&top[..rows], &bottom[..rows], &top[1..], &bottom[1..]],
                [s0, s1, s2, s3],
            );
        }
        // Across it: tile tx's columns 2tx … 2tx + 3 are quarter columns
        // tx, tx + 1, the last tile's second one the side.
        for (a, points) in points.into_iter().enumerate() {
            let (even, odd) = (down[2 * a].as_slice(), down[2 * a + 1].as_slice());
            let [next_even, next_odd] = next.each_mut();
            shift_in_sides(next_even, even, &down_sides[2 * a], cols);
            shift_in_sides(next_odd, odd, &down_sides[2 * a + 1], cols);
            apply_bt([even, odd, next_even, next_odd], points);
        }
    }
}

struct GradTiles<'a> {
    planes: &'a mut Planes,
    plane: &'a [f32],
    size: [usize; 2],
    points: Points<'a>,
}

impl WithSimd for GradTiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            planes,
            plane,
            size: [height, width],
            points,
        } = self;
        let (rows, n) = (planes.rows, planes.tiles());
        planes.split(plane, [height, width, 0], rows);
        let Planes { quarters, down, .. } = planes;
        // Down the block, then across it.
        for rx in 0..2 {
            apply_a([&quarters[rx][..n], &quarters[2 + rx][..n]], pick(down, rx));
        }
        for (a, points) in points.into_iter().enumerate() {
            apply_a([&down[2 * a][..n], &down[2 * a + 1][..n]], points);
        }
    }
}

struct OutputPlane<'a> {
    planes: &'a mut Planes,
    m: [&'a [f32]; 16],
    bias: f32,
    plane: &'a mut [f32],
    size: [usize; 2],
}

impl WithSimd for OutputPlane<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            planes,
            m,
            bias,
            plane,
            size: [height, width],
        } = self;
        let (cols, n) = (planes.columns, planes.tiles());
        // Aᵀ M, column k of the tile: rows 0 + 1 + 2 and 1 − 2 − 3.
        let (top, bottom) = planes.down.split_at_mut(4);
        for k in 0..4 {
            sum3(&mut top[k][..n], m[k], m[4 + k], m[8 + k], 1.0);
            sum3(&mut bottom[k][..n], m[4 + k], m[8 + k], m[12 + k], -1.0);
        }
        // (Aᵀ M) A: each tile's two columns of outputs, top and bottom row.
        let [left_top, right_top, left_bottom, right_bottom] = &mut planes.quarters;
        apply_a_t(top, bias, [&mut left_top[..n], &mut right_top[..n]]);
        apply_a_t(
            bottom,
            bias,
            [&mut left_bottom[..n], &mut right_bottom[..n]],
        );
        for (ty, rows) in plane.chunks_mut(2 * width).enumerate() {
            let (upper, lower) = rows.split_at_mut(width.min(rows.len()));
            interleave(
                upper,
                tile_row(left_top, ty, cols),
                tile_row(right_top, ty, cols),
            );
            if height > 2 * ty + 1 {
                interleave(
                    lower,
                    tile_row(left_bottom, ty, cols),
                    tile_row(right_bottom, ty, cols),
                );
            }
        }
    }
}

/// The four buffers `[2 · a + rx]` of column parity `rx`.
#[inline(always)]
fn pick(buffers: &mut [Vec<f32>; 8], rx: usize) -> [&mut [f32]; 4] {
    let [b0, b1, b2, b3, b4, b5, b6, b7] = buffers.each_mut();
    let [a0, a1, a2, a3] = if rx == 0 {
        [b0, b2, b4, b6]
    } else {
        [b1, b3, b5, b7]
    };
    [a0, a1, a2, a3].map(Vec::as_mut_slice)
}

/// `next[t] = values[t + 1]`, except that the last tile of each row of
/// `columns` reads that row's side value.
#[inline(always)]
fn shift_in_sides(next: &mut [f32], values: &[f32], sides: &[f32], columns: usize) {
    let n = next.len();
    next[..n - 1].copy_from_slice(&values[1..n]);
    for (row, &side) in next.chunks_exact_mut(columns).zip(sides) {
        row[columns - 1] = side;
    }
}

/// `out[j] = f(a[j], b[j])`, in a loop the compiler vectorises.
#[inline(always)]
fn lanes(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

/// `Bᵀ` applied to four rows, element by element: `(r0 − r2, r1 + r2,
/// r2 − r1, r1 − r3)`.
#[inline(always)]
fn apply_bt([r0, r1, r2, r3]: [&[f32]; 4], [d0, d1, d2, d3]: [&mut [f32]; 4]) {
    lanes(d0, r0, r2, |a, b| a - b);
    lanes(d1, r1, r2, |a, b| a + b);
    lanes(d2, r2, r1, |a, b| a - b);
    lanes(d3, r1, r3, |a, b| a - b);
}

/// `A` applied to two rows `u`, `v`, element by element: `(u, u + v,
/// u − v, −v)`.
#[inline(always)]
fn apply_a([u, v]: [&[f32]; 2], [d0, d1, d2, d3]: [&mut [f32]; 4]) {
    lanes(d0, u, v, |u, _| u);
    lanes(d1, u, v, |u, v| u + v);
    lanes(d2, u, v, |u, v| u - v);
    lanes(d3, u, v, |_, v| -v);
}

/// `out = a + b + c` with `sign = 1`, or `a − b − c` with `sign = −1`.
#[inline(always)]
fn sum3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], sign: f32) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = a + sign * (b + c);
    }
}

/// `(Aᵀ M) A` plus `bias` across four per-tile sums `s0 … s3` (one row of
/// `Aᵀ M`): the tile's left output `s0 + s1 + s2` and right one
/// `s1 − s2 − s3`.
#[inline(always)]
fn apply_a_t(sums: &[Vec<f32>], bias: f32, [left, right]: [&mut [f32]; 2]) {
    let [s0, s1, s2, s3] = [0, 1, 2, 3].map(|k| &sums[k][..left.len()]);
    let sums = s0.iter().zip(s1).zip(s2).zip(s3);
    for ((l, r), (((&a, &b), &c), &d)) in left.iter_mut().zip(right.iter_mut()).zip(sums) {
        *l = a + b + c + bias;
        *r = b - c - d + bias;
    }
}

/// Tile row `ty` of a per-tile buffer with rows of `columns` tiles.
#[inline(always)]
fn tile_row(values: &[f32], ty: usize, columns: usize) -> &[f32] {
    &values[ty * columns..][..columns]
}

/// One output row from its tiles' left and right outputs, the last right
/// one dropped past an odd row's end.
#[inline(always)]
fn interleave(out: &mut [f32], left: &[f32], right: &[f32]) {
    let pairs = out.len() / 2;
    let (left_pairs, right_pairs) = (&left[..pairs], &right[..pairs]);
    let out_pairs = &mut out[..2 * pairs];
    for j in 0..pairs {
        out_pairs[2 * j] = left_pairs[j];
        out_pairs[2 * j + 1] = right_pairs[j];
    }
    if out.len() % 2 == 1 {
        out[2 * pairs] = left[pairs];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Sixteen per-tile buffers and the [`Points`] view of them.
    fn with_points<R>(tiles: usize, f: impl FnOnce(Points) -> R) -> (R, Vec<Vec<f32>>) {
        let mut buffers = vec![vec![f32::NAN; tiles]; 16];
        let mut rows = buffers.iter_mut().map(Vec::as_mut_slice);
        let points = std::array::from_fn(|_| std::array::from_fn(|_| rows.next().unwrap()));
        (f(points), buffers)
    }

    // Odd and even sides, each padding a 3×3 convolution can take.
    const PLANES: [([usize; 3], [usize; 2]); 4] = [
        ([8, 8, 0], [3, 3]),
        ([7, 9, 1], [4, 5]),
        ([5, 6, 2], [4, 4]),
        ([26, 26, 0], [12, 12]),
    ];

    #[test]
    fn input_tiles_are_the_textbook_transform_bit_for_bit() {
        for ([h, w, pad], [rows, cols]) in PLANES {
            let plane = values(h * w, 7);
            let at = |y: usize, x: usize| {
                let (y, x) = (y.wrapping_sub(pad), x.wrapping_sub(pad));
                if y < h && x < w {
                    plane[y * w + x]
                } else {
                    0.0
                }
            };
            let mut planes = Planes::new(rows, cols);
            let ((), got) = with_points(rows * cols, |points| {
                planes.input_tiles(&plane, [h, w, pad], points)
            });
            for (t, (ty, tx)) in (0..rows)
                .flat_map(|y| (0..cols).map(move |x| (y, x)))
                .enumerate()
            {
                let d = |i: usize, j: usize| at(2 * ty + i, 2 * tx + j);
                let bt = |r: [f32; 4]| [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]];
                // Down each column, then across each row.
                let down: [[f32; 4]; 4] =
                    std::array::from_fn(|j| bt(std::array::from_fn(|i| d(i, j))));
                for a in 0..4 {
                    let across = bt(std::array::from_fn(|j| down[j][a]));
                    for b in 0..4 {
                        assert_eq!(got[4 * a + b][t], across[b], "{h}×{w} p{pad} tile {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn grad_tiles_are_the_textbook_transform_bit_for_bit() {
        for ([_, _, _], [rows, cols]) in PLANES {
            // A plane of outputs with odd sides where the tiles allow it.
            let (h, w) = (2 * rows - rows % 2, 2 * cols - 1);
            let plane = values(h * w, 11);
            let at = |y: usize, x: usize| {
                if y < h && x < w {
                    plane[y * w + x]
                } else {
                    0.0
                }
            };
            let mut planes = Planes::new(rows, cols);
            let ((), got) = with_points(rows * cols, |points| {
                planes.grad_tiles(&plane, [h, w], points)
            });
            for (t, (ty, tx)) in (0..rows)
                .flat_map(|y| (0..cols).map(move |x| (y, x)))
                .enumerate()
            {
                let g = |i: usize, j: usize| at(2 * ty + i, 2 * tx + j);
                let a = |[u, v]: [f32; 2]| [u, u + v, u - v, -v];
                let down: [[f32; 4]; 2] = std::array::from_fn(|j| a([g(0, j), g(1, j)]));
                for i in 0..4 {
                    let across = a([down[0][i], down[1][i]]);
                    for j in 0..4 {
                        assert_eq!(got[4 * i + j][t], across[j], "{h}×{w} tile {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn output_plane_is_the_textbook_transform_bit_for_bit() {
        for ([_, _, _], [rows, cols]) in PLANES {
            for (h, w) in [(2 * rows, 2 * cols), (2 * rows - 1, 2 * cols - 1)] {
                let tiles = rows * cols;
                let m: Vec<Vec<f32>> = (0..16).map(|p| values(tiles, 100 + p)).collect();
                let bias = 0.375;
                let mut plane = vec![f32::NAN; h * w];
                let mut planes = Planes::new(rows, cols);
                let m_rows = std::array::from_fn(|p| m[p].as_slice());
                planes.output_plane(m_rows, bias, &mut plane, [h, w]);
                for (y, x) in (0..h).flat_map(|y| (0..w).map(move |x| (y, x))) {
                    let t = y / 2 * cols + x / 2;
                    let point = |i: usize, j: usize| m[4 * i + j][t];
                    // Aᵀ M down each column, then · A across the row.
                    let s: [f32; 4] = std::array::from_fn(|k| match y % 2 {
                        0 => point(0, k) + (point(1, k) + point(2, k)),
                        _ => point(1, k) - (point(2, k) + point(3, k)),
                    });
                    let expected = match x % 2 {
                        0 => s[0] + s[1] + s[2] + bias,
                        _ => s[1] - s[2] - s[3] + bias,
                    };
                    assert_eq!(plane[y * w + x], expected, "{h}×{w} at ({y}, {x})");
                }
            }
        }
    }
}
