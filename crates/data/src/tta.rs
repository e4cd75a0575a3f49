//! Test-time augmentation: each image is also seen shifted by one pixel
//! each way and turned a few degrees each way (and, for datasets whose
//! classes survive a mirror, each of those mirrored), and a model's answer
//! is the mean of its class probabilities over these views. The views are
//! fixed, so an evaluation with TTA is as repeatable as one without.

use crate::augment::rotate_and_shift;
use crate::{Dataset, Split};

/// One way of seeing an image: mirrored left to right if `flip`, turned by
/// `degrees`, then shifted by `shift` pixels (x, y).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Rotation about the centre, in degrees.
    pub degrees: f32,
    /// Shift after the rotation, in pixels (x right, y down).
    pub shift: [f32; 2],
    /// Mirror left to right first.
    pub flip: bool,
}

/// The views TTA averages over for digits; the image as it is comes first.
pub const VIEWS: [View; 7] = [
    View {
        degrees: 0.0,
        shift: [0.0, 0.0],
        flip: false,
    },
    View {
        degrees: 0.0,
        shift: [1.0, 0.0],
        flip: false,
    },
    View {
        degrees: 0.0,
        shift: [-1.0, 0.0],
        flip: false,
    },
    View {
        degrees: 0.0,
        shift: [0.0, 1.0],
        flip: false,
    },
    View {
        degrees: 0.0,
        shift: [0.0, -1.0],
        flip: false,
    },
    View {
        degrees: 6.0,
        shift: [0.0, 0.0],
        flip: false,
    },
    View {
        degrees: -6.0,
        shift: [0.0, 0.0],
        flip: false,
    },
];

/// The views TTA averages over for `dataset`: [`VIEWS`], and where a
/// mirror keeps the class ([`Dataset::flip_keeps_class`]) each of them
/// mirrored as well.
pub fn views(dataset: Dataset) -> Vec<View> {
    let mirrored = VIEWS.iter().map(|view| View {
        flip: true,
        ..*view
    });
    if dataset.flip_keeps_class() {
        VIEWS.iter().copied().chain(mirrored).collect()
    } else {
        VIEWS.to_vec()
    }
}

impl View {
    /// `image` (`rows × cols` grey levels) seen this way, levels rounded.
    pub fn apply(&self, image: &[u8], rows: usize, cols: usize) -> Vec<u8> {
        let mut out = vec![0.0; rows * cols];
        rotate_and_shift(
            image,
            rows,
            cols,
            self.degrees.to_radians(),
            self.shift,
            self.flip,
            &mut out,
        );
        out.iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect()
    }

    /// Every image of `split` seen this way, with the same labels.
    pub fn apply_to(&self, split: &Split) -> Split {
        let size = split.rows * split.cols;
        let mut pixels = Vec::with_capacity(split.pixels.len());
        for i in 0..split.len() {
            pixels.extend(self.apply(split.image(i), split.rows, split.cols));
        }
        debug_assert_eq!(pixels.len(), split.len() * size);
        Split {
            pixels,
            labels: split.labels.clone(),
            rows: split.rows,
            cols: split.cols,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(rows: usize, cols: usize, at: (usize, usize)) -> Vec<u8> {
        let mut image = vec![0u8; rows * cols];
        image[at.1 * cols + at.0] = 200;
        image
    }

    #[test]
    fn the_first_view_is_the_image_itself() {
        let image: Vec<u8> = (0..28 * 28).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(VIEWS[0].apply(&image, 28, 28), image);
    }

    #[test]
    fn shifts_move_the_image_by_whole_pixels() {
        let image = dot(28, 28, (10, 12));
        for (view, to) in [(1, (11, 12)), (2, (9, 12)), (3, (10, 13)), (4, (10, 11))] {
            assert_eq!(
                VIEWS[view].apply(&image, 28, 28),
                dot(28, 28, to),
                "view {view}"
            );
        }
    }

    #[test]
    fn turns_keep_the_centre_and_move_the_edges() {
        let mut image = vec![0u8; 28 * 28];
        for x in 0..28 {
            image[13 * 28 + x] = 255; // a horizontal bar through the centre
        }
        let turned = VIEWS[5].apply(&image, 28, 28);
        assert!(
            turned[13 * 28 + 13] > 200 || turned[14 * 28 + 13] > 200,
            "the centre stays"
        );
        assert_ne!(turned, image);
        assert_ne!(VIEWS[6].apply(&image, 28, 28), turned, "the other way");
    }

    #[test]
    fn clothing_is_also_seen_mirrored_and_digits_never() {
        assert_eq!(views(Dataset::Mnist), VIEWS.to_vec());
        let clothing = views(Dataset::FashionMnist);
        assert_eq!(clothing.len(), 2 * VIEWS.len());
        assert_eq!(clothing[..VIEWS.len()], VIEWS);
        let image = dot(28, 28, (10, 12));
        // The mirror of the image itself, and of its shift one pixel right.
        assert_eq!(
            clothing[VIEWS.len()].apply(&image, 28, 28),
            dot(28, 28, (17, 12))
        );
        assert_eq!(
            clothing[VIEWS.len() + 1].apply(&image, 28, 28),
            dot(28, 28, (18, 12))
        );
    }

    #[test]
    fn a_split_keeps_its_labels_and_size() {
        let split = Split {
            pixels: [dot(28, 28, (3, 3)), dot(28, 28, (20, 5))].concat(),
            labels: vec![4, 9],
            rows: 28,
            cols: 28,
        };
        let shifted = VIEWS[1].apply_to(&split);
        assert_eq!(shifted.labels, split.labels);
        assert_eq!(shifted.image(1), dot(28, 28, (21, 5)).as_slice());
    }
}
