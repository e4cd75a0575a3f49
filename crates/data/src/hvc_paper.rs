//! The augmentation the HVC paper's authors trained MNIST with ("No Routing
//! Needed Between Capsules", Byerly, Kalganova, Dear, arXiv 2001.09136), as
//! their public input pipeline draws it, in its order:
//!
//! 1. **rotate** half the images by an angle ~ N(0, 10°) clipped to ±30°;
//! 2. **shift** by whole pixels, at most the digit's own margin on each axis
//!    (the digit never leaves the image), amount |N(0, ⅓)| of that margin;
//! 3. **squeeze** the width by 1–7 pixels (7·|N(0, ⅓)| + 1, floored) with an
//!    antialiased Lanczos-3 resize, placed half the squeeze (or one more)
//!    from the left;
//! 4. **erase** one 4×4 patch, always, anywhere from row/column 4 to 22.
//!
//! Draws come from the same per-image RNG as [`crate::Augmentation`], so a
//! resumed run sees the same images. Rotation uses this crate's bilinear
//! sampler about the image centre; the authors used OpenCV's `warpAffine`
//! about (14, 14), half a pixel away.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::augment::rotate;

/// The authors' spread of every normal draw: a third of the range.
const SIGMA: f32 = 0.33;
/// Largest rotation, degrees (three standard deviations).
const MAX_ROTATION_DEGREES: f32 = 30.0;
/// Side of the erased square, pixels.
const PATCH: usize = 4;

/// The HVC authors' training augmentation; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HvcPaperAugmentation;

impl HvcPaperAugmentation {
    /// Write the augmented grey levels of `image` (`rows × cols`, 0–255) to
    /// `out` as values in 0–255 (fractional where resampled).
    pub fn apply(
        &self,
        image: &[u8],
        rows: usize,
        cols: usize,
        rng: &mut impl Rng,
        out: &mut [f32],
    ) {
        debug_assert_eq!(image.len(), rows * cols);
        debug_assert_eq!(out.len(), rows * cols);
        let normal = Normal::new(0.0f32, SIGMA).expect("a positive spread");
        let angle = normal.sample(rng).clamp(-0.9999, 0.9999) * MAX_ROTATION_DEGREES;
        if normal.sample(rng) <= 0.0 {
            rotate(image, rows, cols, angle.to_radians(), out);
        } else {
            for (level, &pixel) in out.iter_mut().zip(image) {
                *level = f32::from(pixel);
            }
        }
        let mut scratch = vec![0.0; rows * cols];
        shift_within_margins(out, rows, cols, &normal, rng, &mut scratch);
        let amount = half_normal(&normal, rng);
        let offset_draw = half_normal(&normal, rng);
        let narrower = ((amount * (cols / 4) as f32) + 1.0).floor() as usize;
        let offset = narrower / 2 + (offset_draw * 2.0).floor() as usize;
        squeeze_width(out, rows, cols, narrower, offset, &mut scratch);
        erase_patch(out, rows, cols, rng);
    }
}

/// |N(0, σ)| capped just below 1: the authors' draw of "how much of the range".
fn half_normal(normal: &Normal<f32>, rng: &mut impl Rng) -> f32 {
    normal.sample(rng).abs().min(0.9999)
}

/// Shift by whole pixels so the digit stays inside: on each axis a random
/// direction and |N(0, ⅓)| of that side's empty margin (the authors'
/// `floor`s, so a left or upward shift can reach the whole margin).
fn shift_within_margins(
    levels: &mut [f32],
    rows: usize,
    cols: usize,
    normal: &Normal<f32>,
    rng: &mut impl Rng,
    scratch: &mut [f32],
) {
    let direction_y = rng.random::<bool>();
    let direction_x = rng.random::<bool>();
    let amount_x = half_normal(normal, rng);
    let amount_y = half_normal(normal, rng);
    let column_ink = |x: usize| (0..rows).map(|y| levels[y * cols + x]).sum::<f32>() > 0.0;
    let row_ink = |y: usize| levels[y * cols..(y + 1) * cols].iter().sum::<f32>() > 0.0;
    let (Some(left), Some(right), Some(top), Some(bottom)) = (
        (0..cols).position(column_ink),
        (0..cols).rev().position(column_ink),
        (0..rows).position(row_ink),
        (0..rows).rev().position(row_ink),
    ) else {
        return; // A blank image has no margins to respect.
    };
    let draw = |forward: bool, amount: f32, before: usize, after: usize| -> isize {
        if forward {
            (amount * (after + 1) as f32).floor() as isize
        } else {
            (-amount * before as f32).floor() as isize
        }
    };
    let dx = draw(direction_x, amount_x, left, right);
    let dy = draw(direction_y, amount_y, top, bottom);
    if dx == 0 && dy == 0 {
        return;
    }
    scratch.fill(0.0);
    for y in 0..rows {
        let Some(target_y) = y.checked_add_signed(dy).filter(|&t| t < rows) else {
            continue;
        };
        for x in 0..cols {
            if let Some(target_x) = x.checked_add_signed(dx).filter(|&t| t < cols) {
                scratch[target_y * cols + target_x] = levels[y * cols + x];
            }
        }
    }
    levels.copy_from_slice(scratch);
}

/// Resize every row to `cols − narrower` columns (antialiased Lanczos-3, as
/// TensorFlow's `resize(..., LANCZOS3, antialias=True)`), placed from column
/// `offset` on a black row, cut at `cols`.
fn squeeze_width(
    levels: &mut [f32],
    rows: usize,
    cols: usize,
    narrower: usize,
    offset: usize,
    scratch: &mut [f32],
) {
    let width = cols.saturating_sub(narrower).max(1);
    let taps = lanczos_taps(cols, width);
    scratch.fill(0.0);
    for y in 0..rows {
        let row = &levels[y * cols..(y + 1) * cols];
        for (j, (first, weights)) in taps.iter().enumerate() {
            let x = offset + j;
            if x >= cols {
                break;
            }
            scratch[y * cols + x] = weights.iter().zip(&row[*first..]).map(|(w, v)| w * v).sum();
        }
    }
    levels.copy_from_slice(scratch);
}

/// For each of `to` output pixels, the first input pixel it reads and the
/// weights of the inputs from there on: a Lanczos-3 kernel widened by the
/// scale when shrinking (antialiasing), cut at the row's ends and
/// renormalised, as TensorFlow's `scale_and_translate` computes them.
fn lanczos_taps(from: usize, to: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = to as f32 / from as f32;
    let kernel_scale = scale.min(1.0);
    let radius = 3.0 / kernel_scale;
    (0..to)
        .map(|j| {
            let centre = (j as f32 + 0.5) / scale;
            let first = (centre - radius).floor().max(0.0) as usize;
            let last = ((centre + radius).ceil() as usize).min(from);
            let mut weights: Vec<f32> = (first..last)
                .map(|i| lanczos3((i as f32 + 0.5 - centre) * kernel_scale))
                .collect();
            let total: f32 = weights.iter().sum();
            if total.abs() > f32::MIN_POSITIVE {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (first, weights)
        })
        .collect()
}

/// sinc(x)·sinc(x/3) on (−3, 3), else 0.
fn lanczos3(x: f32) -> f32 {
    if x.abs() >= 3.0 {
        return 0.0;
    }
    if x.abs() < 1e-6 {
        return 1.0;
    }
    let pi_x = std::f32::consts::PI * x;
    3.0 * pi_x.sin() * (pi_x / 3.0).sin() / (pi_x * pi_x)
}

/// Black out one 4×4 square whose corner is drawn uniformly from rows and
/// columns 4 to `size − 6` (4–22 on MNIST), as the authors do.
fn erase_patch(levels: &mut [f32], rows: usize, cols: usize, rng: &mut impl Rng) {
    let corner = |rng: &mut dyn rand::RngCore, size: usize| {
        let places = size.saturating_sub(2 * PATCH + 1).max(1);
        (4 + rng.random_range(0..places)).min(size.saturating_sub(PATCH))
    };
    let top = corner(rng, rows);
    let left = corner(rng, cols);
    for row in levels.chunks_exact_mut(cols).skip(top).take(PATCH) {
        let end = (left + PATCH).min(cols);
        row[left..end].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Augmentation;

    /// A 28×28 image with a bright 6-wide, 10-tall block at rows 9..19, cols 11..17.
    fn block() -> Vec<u8> {
        let mut image = vec![0u8; 784];
        for y in 9..19 {
            image[y * 28 + 11..y * 28 + 17].fill(200);
        }
        image
    }

    fn levels(image: &[u8]) -> Vec<f32> {
        image.iter().map(|&p| f32::from(p)).collect()
    }

    fn bounding_box(levels: &[f32]) -> Option<(usize, usize, usize, usize)> {
        let ink: Vec<usize> = (0..784).filter(|&i| levels[i] > 0.5).collect();
        Some((
            ink.iter().map(|i| i / 28).min()?,
            ink.iter().map(|i| i / 28).max()?,
            ink.iter().map(|i| i % 28).min()?,
            ink.iter().map(|i| i % 28).max()?,
        ))
    }

    #[test]
    fn shifts_keep_the_digit_whole_and_reach_both_ways() {
        let normal = Normal::new(0.0, SIGMA).unwrap();
        let original = levels(&block());
        let mass: f32 = original.iter().sum();
        let mut moved = [false; 4]; // up, down, left, right
        let mut scratch = vec![0.0; 784];
        for index in 0..2000 {
            let mut rng = Augmentation::rng(0, 0, index);
            let mut shifted = original.clone();
            shift_within_margins(&mut shifted, 28, 28, &normal, &mut rng, &mut scratch);
            // Whole-pixel moves inside the margins lose nothing.
            assert_eq!(shifted.iter().sum::<f32>(), mass, "draw {index}");
            let (top, bottom, left, right) = bounding_box(&shifted).unwrap();
            assert_eq!((bottom - top, right - left), (9, 5), "draw {index}");
            moved[0] |= top < 9;
            moved[1] |= top > 9;
            moved[2] |= left < 11;
            moved[3] |= left > 11;
        }
        assert_eq!(moved, [true; 4]);
        // A digit touching the left edge can only go right.
        let mut edge = vec![0.0; 784];
        edge[14 * 28] = 255.0;
        for index in 0..200 {
            let mut shifted = edge.clone();
            let mut rng = Augmentation::rng(1, 0, index);
            shift_within_margins(&mut shifted, 28, 28, &normal, &mut rng, &mut scratch);
            assert_eq!(shifted.iter().sum::<f32>(), 255.0);
        }
    }

    #[test]
    fn squeezing_a_white_image_narrows_every_row_by_the_amount() {
        let mut scratch = vec![0.0; 784];
        for (narrower, offset) in [(1, 0), (1, 1), (4, 3), (7, 4)] {
            let mut white = vec![255.0; 784];
            squeeze_width(&mut white, 28, 28, narrower, offset, &mut scratch);
            for row in white.chunks_exact(28) {
                for (x, &v) in row.iter().enumerate() {
                    let inside = x >= offset && x < offset + 28 - narrower;
                    let expected = if inside { 255.0 } else { 0.0 };
                    // Renormalised weights keep a constant row constant.
                    assert!((v - expected).abs() < 1e-3, "w {narrower}, x {x}: {v}");
                }
            }
        }
    }

    #[test]
    fn lanczos_keeps_sizes_and_shrinks_smoothly() {
        // Same size: the kernel samples at integers, i.e. the identity.
        let ramp: Vec<f32> = (0..28).map(|x| x as f32 * 3.0).collect();
        for (j, (first, weights)) in lanczos_taps(28, 28).iter().enumerate() {
            let v: f32 = weights
                .iter()
                .zip(&ramp[*first..])
                .map(|(w, v)| w * v)
                .sum();
            assert!((v - ramp[j]).abs() < 1e-3, "{j}: {v}");
        }
        // Shrinking a ramp gives a ramp at the shrunk pixels' centres, away
        // from the ends where the cut kernel leans inward.
        let taps = lanczos_taps(28, 21);
        for (j, (first, weights)) in taps.iter().enumerate().skip(3).take(15) {
            let v: f32 = weights
                .iter()
                .zip(&ramp[*first..])
                .map(|(w, v)| w * v)
                .sum();
            let centre = (j as f32 + 0.5) * 28.0 / 21.0 - 0.5;
            assert!(
                (v - 3.0 * centre).abs() < 0.05,
                "{j}: {v} vs {}",
                3.0 * centre
            );
        }
    }

    #[test]
    fn one_four_by_four_patch_is_erased_inside_the_border() {
        let mut corners = std::collections::HashSet::new();
        for index in 0..3000 {
            let mut white = vec![255.0; 784];
            erase_patch(&mut white, 28, 28, &mut Augmentation::rng(2, 0, index));
            let black: Vec<usize> = (0..784).filter(|&i| white[i] == 0.0).collect();
            assert_eq!(black.len(), 16);
            let (top, left) = (black[0] / 28, black[0] % 28);
            assert!((4..=22).contains(&top) && (4..=22).contains(&left));
            assert_eq!(black[15], (top + 3) * 28 + left + 3);
            corners.insert((top, left));
        }
        // 19 × 19 places, all of them reached.
        assert_eq!(corners.len(), 361);
    }

    #[test]
    fn the_whole_pipeline_is_seeded_and_rotates_about_half() {
        let image = block();
        let run = |seed: u64, index: usize| {
            let mut out = vec![0.0; 784];
            let mut rng = Augmentation::rng(seed, 3, index);
            HvcPaperAugmentation.apply(&image, 28, 28, &mut rng, &mut out);
            out
        };
        assert_eq!(run(5, 7), run(5, 7));
        assert_ne!(run(5, 7), run(6, 7));
        // Unrotated images keep the block's straight edges: every inked
        // pixel that is not erased is 200 or a squeezed edge value, and rows
        // agree. Rotated ones do not; count how many rows disagree.
        let rotated = (0..400)
            .filter(|&i| {
                let out = run(9, i);
                let rows: Vec<&[f32]> = out.chunks_exact(28).collect();
                let (top, bottom, _, _) = bounding_box(&out).unwrap();
                // The middle rows of an unrotated block are identical unless
                // the patch hit them; compare two far apart and a third.
                let a = rows[top + 1];
                !(a == rows[bottom - 1] || a == rows[(top + bottom) / 2])
            })
            .count();
        assert!((140..=260).contains(&rotated), "{rotated} of 400 rotated");
    }
}
