//! Training-time augmentation on the host: a random affine transform
//! (rotation, translation, scale, width squeeze, mirror image) and random
//! erasing.
//!
//! Every image's transform is drawn from `(seed, epoch, image index)` alone,
//! so an epoch's augmented batches are the same in a resumed run as in an
//! uninterrupted one, and cost nothing to checkpoint. Pixels are resampled
//! bilinearly with black (0) outside the image, as torchvision's
//! `RandomAffine` does with `fill=0`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::Split;
use crate::hvc_paper::HvcPaperAugmentation;

/// How strongly to augment; [`Augmentation::none`] leaves images untouched.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augmentation {
    /// Rotation drawn from ±`rotation_degrees`.
    pub rotation_degrees: f32,
    /// Shift drawn from ±`translate_pixels` on each axis.
    pub translate_pixels: f32,
    /// Scale drawn from 1 ± `scale`.
    pub scale: f32,
    /// Extra horizontal factor drawn from 1 − [0, `width_squeeze`] (narrower digits).
    pub width_squeeze: f32,
    /// Probability of blacking out one random rectangle (2–15% of the image,
    /// aspect 0.3–3.3), as `RandomErasing`.
    pub erase_probability: f32,
    /// Probability of mirroring the image left to right, as
    /// `RandomHorizontalFlip`: right for clothing, wrong for digits.
    pub flip_probability: f32,
}

/// An augmentation setting outside the range it can take.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("augmentation {setting} must be in [{low}, {high}], got {value}")]
pub struct OutOfRange {
    /// Which setting, in words ("rotation", "scale", ...).
    pub setting: &'static str,
    /// Its smallest allowed value.
    pub low: f32,
    /// Its largest allowed value.
    pub high: f32,
    /// The value given.
    pub value: f32,
}

impl Augmentation {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether every image passes through unchanged.
    pub fn is_identity(&self) -> bool {
        self.rotation_degrees == 0.0
            && self.translate_pixels == 0.0
            && self.scale == 0.0
            && self.width_squeeze == 0.0
            && self.erase_probability == 0.0
            && self.flip_probability == 0.0
    }

    /// Say which value is out of range, if any.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        let checks = [
            ("rotation", self.rotation_degrees, 0.0, 180.0),
            ("translation", self.translate_pixels, 0.0, 14.0),
            ("scale", self.scale, 0.0, 0.9),
            ("width squeeze", self.width_squeeze, 0.0, 0.9),
            ("erase probability", self.erase_probability, 0.0, 1.0),
            ("flip probability", self.flip_probability, 0.0, 1.0),
        ];
        for (name, value, low, high) in checks {
            if !(value >= low && value <= high) {
                return Err(OutOfRange {
                    setting: name,
                    low,
                    high,
                    value,
                });
            }
        }
        Ok(())
    }

    /// The RNG for image `index` in epoch `epoch` of a run seeded `seed`.
    pub fn rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA5A5_5A5A_DEAD_BEEF);
        rng.set_stream(((epoch as u64) << 32) | index as u64);
        rng
    }

    /// Write the augmented grey levels of `image` (`rows × cols`, 0–255) to
    /// `out` as values in 0–255 (fractional where interpolated).
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
        let transform = self.draw_affine(rng);
        transform.resample(image, rows, cols, out);
        if self.erase_probability > 0.0 && rng.random::<f32>() < self.erase_probability {
            erase(out, rows, cols, rng);
        }
    }

    fn draw_affine(&self, rng: &mut impl Rng) -> Affine {
        let symmetric = |rng: &mut dyn rand::RngCore, range: f32| {
            if range > 0.0 {
                rng.random_range(-range..=range)
            } else {
                0.0
            }
        };
        let angle = symmetric(rng, self.rotation_degrees).to_radians();
        let scale = 1.0 + symmetric(rng, self.scale);
        let squeeze = 1.0 - symmetric(rng, self.width_squeeze).abs();
        let shift = [
            symmetric(rng, self.translate_pixels),
            symmetric(rng, self.translate_pixels),
        ];
        // Drawn only when asked for, so that runs without it keep their
        // draws (and their results) unchanged.
        let mirror = if self.flip_probability > 0.0 && rng.random::<f32>() < self.flip_probability {
            -1.0
        } else {
            1.0
        };
        Affine {
            angle,
            scale_x: mirror * scale * squeeze,
            scale_y: scale,
            shift,
        }
    }
}

/// What happens to each training image: draws from configurable ranges, or
/// the HVC paper's own augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    /// Uniform draws from the given ranges (`Augmentation::none()`: nothing).
    Ranges(Augmentation),
    /// The HVC authors' pipeline; see [`crate::hvc_paper`].
    HvcPaper,
}

impl Augment {
    /// Whether every image passes through unchanged.
    pub fn is_identity(&self) -> bool {
        match self {
            Augment::Ranges(ranges) => ranges.is_identity(),
            Augment::HvcPaper => false,
        }
    }

    /// Image `index` of `split` as epoch `epoch` of a run seeded `seed`
    /// augments it: grey levels in 0–255, exactly what training sees before
    /// normalisation.
    pub fn image_levels(&self, split: &Split, index: usize, seed: u64, epoch: usize) -> Vec<f32> {
        let mut levels = vec![0.0; split.rows * split.cols];
        self.apply_to(split, index, seed, epoch, &mut levels);
        levels
    }

    /// [`Augment::image_levels`] into a buffer of `rows × cols`.
    pub(crate) fn apply_to(
        &self,
        split: &Split,
        index: usize,
        seed: u64,
        epoch: usize,
        levels: &mut [f32],
    ) {
        let mut rng = Augmentation::rng(seed, epoch, index);
        let (image, rows, cols) = (split.image(index), split.rows, split.cols);
        match self {
            Augment::Ranges(ranges) => ranges.apply(image, rows, cols, &mut rng, levels),
            Augment::HvcPaper => HvcPaperAugmentation.apply(image, rows, cols, &mut rng, levels),
        }
    }
}

impl From<Augmentation> for Augment {
    fn from(ranges: Augmentation) -> Self {
        Augment::Ranges(ranges)
    }
}

/// Rotate `image` by `angle` radians about its centre into `out` (bilinear,
/// black outside).
pub(crate) fn rotate(image: &[u8], rows: usize, cols: usize, angle: f32, out: &mut [f32]) {
    Affine {
        angle,
        scale_x: 1.0,
        scale_y: 1.0,
        shift: [0.0, 0.0],
    }
    .resample(image, rows, cols, out);
}

/// Mirror `image` left to right when `flip`, rotate it by `angle` radians
/// about its centre, then shift it by `shift` pixels (x, y), into `out`
/// (bilinear, black outside).
pub(crate) fn rotate_and_shift(
    image: &[u8],
    rows: usize,
    cols: usize,
    angle: f32,
    shift: [f32; 2],
    flip: bool,
    out: &mut [f32],
) {
    Affine {
        angle,
        // A negative horizontal scale mirrors about the centre column.
        scale_x: if flip { -1.0 } else { 1.0 },
        scale_y: 1.0,
        shift,
    }
    .resample(image, rows, cols, out);
}

/// Rotate by `angle`, scale, then shift, about the image centre.
struct Affine {
    angle: f32,
    scale_x: f32,
    scale_y: f32,
    shift: [f32; 2],
}

impl Affine {
    /// Fill `out` by inverse mapping: each output pixel reads the source at
    /// the point the forward transform sends onto it.
    fn resample(&self, image: &[u8], rows: usize, cols: usize, out: &mut [f32]) {
        let (sin, cos) = self.angle.sin_cos();
        let cy = (rows as f32 - 1.0) / 2.0;
        let cx = (cols as f32 - 1.0) / 2.0;
        for y in 0..rows {
            for x in 0..cols {
                // Undo the shift, then the rotation, then the scale.
                let dx = x as f32 - cx - self.shift[0];
                let dy = y as f32 - cy - self.shift[1];
                let rx = cos * dx + sin * dy;
                let ry = -sin * dx + cos * dy;
                let sx = rx / self.scale_x + cx;
                let sy = ry / self.scale_y + cy;
                out[y * cols + x] = bilinear(image, rows, cols, sx, sy);
            }
        }
    }
}

/// The image at a fractional position, black outside.
///
/// Integer indexing with one bounds test for the common case (all four
/// neighbours inside): the same arithmetic on the same values as reading
/// each neighbour through a bounds check, about twice as fast.
fn bilinear(image: &[u8], rows: usize, cols: usize, x: f32, y: f32) -> f32 {
    // All four neighbours outside (or a non-finite position): black.
    if !(x >= -1.0 && y >= -1.0 && x < cols as f32 && y < rows as f32) {
        return 0.0;
    }
    // `floor` by truncation: `f32::floor` is a libm call on baseline x86-64
    // and took a quarter of the time; in this range both are exact.
    let floor = |v: f32| {
        let t = v as isize;
        if t as f32 > v { t - 1 } else { t }
    };
    let (xi, yi) = (floor(x), floor(y));
    let (fx, fy) = (x - xi as f32, y - yi as f32);
    let (w, h) = (cols as isize, rows as isize);
    let [p00, p10, p01, p11] = if xi >= 0 && yi >= 0 && xi + 1 < w && yi + 1 < h {
        let at = yi as usize * cols + xi as usize;
        [
            image[at],
            image[at + 1],
            image[at + cols],
            image[at + cols + 1],
        ]
        .map(f32::from)
    } else {
        let pixel = |x: isize, y: isize| -> f32 {
            if x < 0 || y < 0 || x >= w || y >= h {
                0.0
            } else {
                f32::from(image[y as usize * cols + x as usize])
            }
        };
        [
            pixel(xi, yi),
            pixel(xi + 1, yi),
            pixel(xi, yi + 1),
            pixel(xi + 1, yi + 1),
        ]
    };
    let top = p00 * (1.0 - fx) + p10 * fx;
    let bottom = p01 * (1.0 - fx) + p11 * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Black out one rectangle of 2–15% of the image with aspect 0.3–3.3.
fn erase(out: &mut [f32], rows: usize, cols: usize, rng: &mut impl Rng) {
    let area = (rows * cols) as f32 * rng.random_range(0.02..0.15);
    let aspect = rng.random_range(0.3f32.ln()..3.3f32.ln()).exp();
    let h = ((area * aspect).sqrt().round() as usize).clamp(1, rows);
    let w = ((area / aspect).sqrt().round() as usize).clamp(1, cols);
    let top = rng.random_range(0..=rows - h);
    let left = rng.random_range(0..=cols - w);
    for row in out.chunks_exact_mut(cols).skip(top).take(h) {
        row[left..left + w].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 28×28 image with one bright 4×4 square at rows/cols 12..16.
    fn square() -> Vec<u8> {
        let mut image = vec![0u8; 28 * 28];
        for y in 12..16 {
            for x in 12..16 {
                image[y * 28 + x] = 255;
            }
        }
        image
    }

    fn augmented(aug: &Augmentation, image: &[u8], seed: u64) -> Vec<f32> {
        let mut out = vec![0.0; 28 * 28];
        aug.apply(image, 28, 28, &mut Augmentation::rng(seed, 0, 0), &mut out);
        out
    }

    #[test]
    fn no_augmentation_is_the_identity() {
        let image: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        let out = augmented(&Augmentation::none(), &image, 3);
        let expected: Vec<f32> = image.iter().map(|&p| f32::from(p)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_pure_shift_moves_the_digit() {
        let aug = Augmentation {
            translate_pixels: 3.0,
            ..Augmentation::none()
        };
        let out = augmented(&aug, &square(), 1);
        let mass: f32 = out.iter().sum();
        // Interpolation keeps the mass while the square stays inside the image.
        assert!((mass - 16.0 * 255.0).abs() < 1.0, "{mass}");
        let centre_x: f32 = out
            .iter()
            .enumerate()
            .map(|(i, v)| (i % 28) as f32 * v)
            .sum::<f32>()
            / mass;
        assert!((centre_x - 13.5).abs() <= 3.0 + 1e-3, "{centre_x}");
    }

    #[test]
    fn the_same_seed_epoch_and_index_give_the_same_image() {
        let aug = Augmentation {
            rotation_degrees: 12.0,
            translate_pixels: 2.5,
            scale: 0.1,
            width_squeeze: 0.2,
            erase_probability: 0.5,
            flip_probability: 0.5,
        };
        let a = augmented(&aug, &square(), 7);
        assert_eq!(a, augmented(&aug, &square(), 7));
        let draws: Vec<Vec<f32>> = (0..4).map(|s| augmented(&aug, &square(), s)).collect();
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn rotating_half_a_turn_flips_the_image() {
        let mut image = vec![0u8; 28 * 28];
        image[2 * 28 + 5] = 200;
        let aug = Augmentation {
            rotation_degrees: 180.0,
            ..Augmentation::none()
        };
        // Draws until the angle is ±180° is impractical; apply the transform directly.
        let mut out = vec![0.0; 784];
        Affine {
            angle: std::f32::consts::PI,
            scale_x: 1.0,
            scale_y: 1.0,
            shift: [0.0, 0.0],
        }
        .resample(&image, 28, 28, &mut out);
        assert!((out[25 * 28 + 22] - 200.0).abs() < 1e-2);
        aug.validate().unwrap();
    }

    #[test]
    fn erasing_blacks_out_part_of_a_white_image() {
        let aug = Augmentation {
            erase_probability: 1.0,
            ..Augmentation::none()
        };
        let out = augmented(&aug, &[255u8; 784], 5);
        let black = out.iter().filter(|&&v| v == 0.0).count();
        assert!((1..=(784 * 15 / 100 + 28)).contains(&black), "{black}");
    }

    /// Bilinear interpolation as defined: each neighbour read through its
    /// own bounds check.
    fn reference_bilinear(image: &[u8], rows: usize, cols: usize, x: f32, y: f32) -> f32 {
        let x0 = x.floor();
        let y0 = y.floor();
        let (fx, fy) = (x - x0, y - y0);
        let pixel = |xi: f32, yi: f32| -> f32 {
            if xi < 0.0 || yi < 0.0 || xi >= cols as f32 || yi >= rows as f32 {
                0.0
            } else {
                f32::from(image[yi as usize * cols + xi as usize])
            }
        };
        let top = pixel(x0, y0) * (1.0 - fx) + pixel(x0 + 1.0, y0) * fx;
        let bottom = pixel(x0, y0 + 1.0) * (1.0 - fx) + pixel(x0 + 1.0, y0 + 1.0) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    #[test]
    fn fast_bilinear_matches_the_definition_bit_for_bit() {
        // A non-square image, so swapped rows and columns would show.
        let (rows, cols) = (7, 11);
        let image: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 256) as u8).collect();
        let mut rng = Augmentation::rng(1, 0, 0);
        // Positions inside, on the edges, just outside and far outside.
        for _ in 0..20_000 {
            let x = rng.random_range(-3.0f32..14.0);
            let y = rng.random_range(-3.0f32..10.0);
            let (fast, slow) = (
                bilinear(&image, rows, cols, x, y),
                reference_bilinear(&image, rows, cols, x, y),
            );
            assert_eq!(fast.to_bits(), slow.to_bits(), "at ({x}, {y})");
        }
        for (x, y) in [(-1.0, -1.0), (10.0, 6.0), (10.5, 6.5), (-0.5, 3.0)] {
            let (fast, slow) = (
                bilinear(&image, rows, cols, x, y),
                reference_bilinear(&image, rows, cols, x, y),
            );
            assert_eq!(fast.to_bits(), slow.to_bits(), "at ({x}, {y})");
        }
        // Where the definition would give NaN, the image reads black.
        assert_eq!(bilinear(&image, rows, cols, f32::NAN, 1.0), 0.0);
    }

    #[test]
    fn flipping_always_mirrors_the_image_left_to_right() {
        let image: Vec<u8> = (0..784).map(|i| (i * 7 % 256) as u8).collect();
        let aug = Augmentation {
            flip_probability: 1.0,
            ..Augmentation::none()
        };
        let out = augmented(&aug, &image, 4);
        for y in 0..28 {
            for x in 0..28 {
                let mirrored = f32::from(image[y * 28 + 27 - x]);
                assert!((out[y * 28 + x] - mirrored).abs() < 1e-3, "at ({x}, {y})");
            }
        }
    }

    #[test]
    fn flipping_half_the_time_mirrors_about_half_the_images() {
        let image = {
            let mut image = vec![0u8; 784];
            image[10 * 28 + 3] = 255;
            image
        };
        let aug = Augmentation {
            flip_probability: 0.5,
            ..Augmentation::none()
        };
        let flipped = (0..400)
            .filter(|&index| {
                let mut out = vec![0.0; 784];
                aug.apply(
                    &image,
                    28,
                    28,
                    &mut Augmentation::rng(1, 0, index),
                    &mut out,
                );
                out[10 * 28 + 24] > 254.0
            })
            .count();
        assert!((160..=240).contains(&flipped), "{flipped} of 400 flipped");
    }

    #[test]
    fn a_zero_flip_probability_draws_nothing_and_changes_nothing() {
        // Runs from before flipping existed must keep their exact draws.
        let ranges = Augmentation {
            rotation_degrees: 12.0,
            translate_pixels: 2.5,
            scale: 0.1,
            ..Augmentation::none()
        };
        let mut rng = Augmentation::rng(9, 2, 5);
        let mut out = vec![0.0; 784];
        ranges.apply(&square(), 28, 28, &mut rng, &mut out);
        let mut expected_rng = Augmentation::rng(9, 2, 5);
        for _ in 0..4 {
            expected_rng.random::<f32>();
        }
        assert_eq!(rng.random::<u64>(), expected_rng.random::<u64>());
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let aug = Augmentation {
            scale: 2.0,
            ..Augmentation::none()
        };
        assert_eq!(aug.validate().unwrap_err().setting, "scale");
        let nan = Augmentation {
            rotation_degrees: f32::NAN,
            ..Augmentation::none()
        };
        let err = nan.validate().unwrap_err();
        assert_eq!(err.setting, "rotation");
        assert!(err.to_string().contains("must be in [0, 180]"), "{err}");
    }
}
