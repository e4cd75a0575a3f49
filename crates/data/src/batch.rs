//! Mini-batches: seeded per-epoch shuffling and `ToTensor` + `Normalize`
//! preprocessing, as PyTorch's `DataLoader` does it.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::augment::Augment;
use crate::dataset::Split;

/// `ToTensor()` then `Normalize(mean, std)`: `(x / 255 − mean) / std` in f32,
/// done once per grey level so batching is a table look-up.
#[derive(Debug, Clone)]
pub struct Normalizer {
    table: [f32; 256],
    mean: f32,
    std: f32,
}

impl Normalizer {
    /// The normaliser for the given mean and standard deviation.
    pub fn new(mean: f32, std: f32) -> Self {
        // Same f32 operations, in the same order, as torchvision.
        Self {
            table: std::array::from_fn(|v| (v as f32 / 255.0 - mean) / std),
            mean,
            std,
        }
    }

    /// The normalised value of a fractional grey level (augmented images).
    pub fn apply_level(&self, level: f32) -> f32 {
        (level / 255.0 - self.mean) / self.std
    }

    /// The normalised value of one grey level.
    pub fn apply(&self, pixel: u8) -> f32 {
        self.table[usize::from(pixel)]
    }

    /// Append the normalised pixels of `pixels` to `out`.
    pub fn extend(&self, pixels: &[u8], out: &mut Vec<f32>) {
        out.extend(pixels.iter().map(|&p| self.table[usize::from(p)]));
    }
}

/// The order in which epoch `epoch` visits `len` items.
///
/// Derived from `(seed, epoch)` alone, so a run resumed at epoch `e` sees
/// exactly the batches an uninterrupted run would: the only RNG state a
/// checkpoint needs is the seed and the epoch number.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let stream = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream));
    order
}

/// One batch on the host: normalised pixels `[n, 1, rows, cols]` and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Normalised pixels, image after image.
    pub pixels: Vec<f32>,
    /// Labels as class indices.
    pub labels: Vec<i64>,
    /// Images in the batch.
    pub len: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
}

/// Iterates over a split in batches of `batch_size`, in the given order.
/// The last batch keeps the remainder, as `DataLoader(drop_last=False)` does.
#[derive(Debug)]
pub struct Batches<'a> {
    split: &'a Split,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    normalizer: Normalizer,
    augmentation: Option<EpochAugmentation>,
}

/// Augmentation of one epoch's images, seeded by the run.
#[derive(Debug, Clone, Copy)]
struct EpochAugmentation {
    augmentation: Augment,
    seed: u64,
    epoch: usize,
}

impl<'a> Batches<'a> {
    /// Batches in a given order (e.g. [`epoch_order`] for training).
    ///
    /// # Panics
    /// If `batch_size` is 0; callers validate user input before this.
    pub fn new(
        split: &'a Split,
        order: Vec<usize>,
        batch_size: usize,
        normalizer: Normalizer,
    ) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        Self {
            split,
            order,
            batch_size,
            next: 0,
            normalizer,
            augmentation: None,
        }
    }

    /// Augment every image, with draws decided by `(seed, epoch, image index)`.
    pub fn augmented(mut self, augmentation: impl Into<Augment>, seed: u64, epoch: usize) -> Self {
        let augmentation = augmentation.into();
        if !augmentation.is_identity() {
            self.augmentation = Some(EpochAugmentation {
                augmentation,
                seed,
                epoch,
            });
        }
        self
    }

    /// Batches in file order (evaluation).
    pub fn sequential(split: &'a Split, batch_size: usize, normalizer: Normalizer) -> Self {
        Self::new(split, (0..split.len()).collect(), batch_size, normalizer)
    }

    /// Run `consume` on these batches while a background thread prepares
    /// them up to `depth` ahead.
    ///
    /// Augmenting a batch costs the host about 1.5 ms (`cargo bench -p
    /// mnist-data`); prepared ahead, that work overlaps the device's step
    /// instead of adding to it. The batches and their order are exactly the
    /// sequential iterator's. If `consume` returns early the preparation
    /// stops; a panic while preparing is re-raised here, never taken for the
    /// end of the epoch.
    pub fn prefetch<R>(self, depth: usize, consume: impl FnOnce(Prefetched) -> R) -> R {
        std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(depth);
            scope.spawn(move || {
                for batch in self {
                    // The consumer finished early: nothing more to prepare.
                    if sender.send(batch).is_err() {
                        break;
                    }
                }
            });
            consume(Prefetched { receiver })
        })
    }

    /// Number of batches in a full pass.
    pub fn count(len: usize, batch_size: usize) -> usize {
        len.div_ceil(batch_size)
    }
}

impl Iterator for Batches<'_> {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let indices = &self.order[self.next..end];
        self.next = end;
        let image_size = self.split.rows * self.split.cols;
        let mut pixels = Vec::with_capacity(indices.len() * image_size);
        match &self.augmentation {
            None => {
                for &i in indices {
                    self.normalizer.extend(self.split.image(i), &mut pixels);
                }
            }
            Some(aug) => {
                let mut levels = vec![0.0; image_size];
                for &i in indices {
                    aug.augmentation
                        .apply_to(self.split, i, aug.seed, aug.epoch, &mut levels);
                    pixels.extend(levels.iter().map(|&v| self.normalizer.apply_level(v)));
                }
            }
        }
        Some(HostBatch {
            pixels,
            labels: indices
                .iter()
                .map(|&i| i64::from(self.split.labels[i]))
                .collect(),
            len: indices.len(),
            rows: self.split.rows,
            cols: self.split.cols,
        })
    }
}

/// Batches prepared on a background thread: see [`Batches::prefetch`].
#[derive(Debug)]
pub struct Prefetched {
    receiver: std::sync::mpsc::Receiver<HostBatch>,
}

impl Iterator for Prefetched {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        self.receiver.recv().ok()
    }
}

#[cfg(feature = "burn")]
mod tensors {
    use burn::tensor::{Device, Int, Tensor, TensorData};

    use super::HostBatch;

    /// A batch as tensors: images `[n, 1, rows, cols]`, targets `[n]`.
    #[derive(Debug, Clone)]
    pub struct Batch {
        /// Normalised images.
        pub images: Tensor<4>,
        /// Class indices.
        pub targets: Tensor<1, Int>,
    }

    impl HostBatch {
        /// Move the batch onto `device`.
        pub fn to_device(self, device: &Device) -> Batch {
            let shape = [self.len, 1, self.rows, self.cols];
            Batch {
                images: Tensor::from_data(TensorData::new(self.pixels, shape), device),
                targets: Tensor::from_data(TensorData::new(self.labels, [self.len]), device),
            }
        }
    }
}

#[cfg(feature = "burn")]
pub use tensors::Batch;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::Augmentation;

    fn split(n: usize) -> Split {
        Split {
            pixels: (0..n * 4).map(|i| (i % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 2,
            cols: 2,
        }
    }

    #[test]
    fn normalizer_matches_torchvision() {
        let n = Normalizer::new(0.1307, 0.3081);
        assert!((n.apply(0) - (-0.424_212_9)).abs() < 1e-6);
        assert!((n.apply(255) - 2.821_486_5).abs() < 1e-6);
    }

    #[test]
    fn last_partial_batch_is_kept() {
        let s = split(10);
        let sizes: Vec<usize> = Batches::sequential(&s, 4, Normalizer::new(0.0, 1.0))
            .map(|b| b.len)
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(Batches::count(10, 4), 3);
    }

    #[test]
    fn batches_follow_the_order_and_pair_pixels_with_labels() {
        let s = split(6);
        let order = vec![5, 0, 3, 1, 2, 4];
        let first = Batches::new(&s, order, 2, Normalizer::new(0.0, 1.0))
            .next()
            .unwrap();
        assert_eq!(first.labels, vec![5, 0]);
        assert!((first.pixels[0] - 20.0 / 255.0).abs() < 1e-7); // image 5 starts at pixel 20
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            a,
            epoch_order(1000, 7, 0),
            "same seed and epoch, same order"
        );
        assert_ne!(a, epoch_order(1000, 7, 1), "each epoch reshuffles");
        assert_ne!(a, epoch_order(1000, 8, 0), "the seed matters");
    }

    #[test]
    fn augmented_batches_change_pixels_not_labels_and_repeat_per_epoch() {
        let s = Split {
            pixels: (0..4 * 784).map(|i| ((i * 7) % 256) as u8).collect(),
            labels: vec![3, 1, 4, 1],
            rows: 28,
            cols: 28,
        };
        let aug = Augmentation {
            rotation_degrees: 10.0,
            translate_pixels: 2.0,
            ..Augmentation::none()
        };
        let norm = Normalizer::new(0.1307, 0.3081);
        let batch = |epoch| {
            Batches::sequential(&s, 4, norm.clone())
                .augmented(aug, 9, epoch)
                .next()
                .unwrap()
        };
        let plain = Batches::sequential(&s, 4, norm.clone()).next().unwrap();
        let (a, b) = (batch(0), batch(1));
        assert_eq!(a.labels, plain.labels);
        assert_ne!(a.pixels, plain.pixels);
        assert_eq!(a, batch(0), "same seed and epoch, same images");
        assert_ne!(a.pixels, b.pixels, "each epoch draws new transforms");
        // The HVC authors' pipeline goes through the same path.
        let paper = |epoch| {
            Batches::sequential(&s, 4, norm.clone())
                .augmented(Augment::HvcPaper, 9, epoch)
                .next()
                .unwrap()
        };
        assert_eq!(paper(0).labels, plain.labels);
        assert_ne!(paper(0).pixels, plain.pixels);
        assert_eq!(paper(0), paper(0));
        assert_ne!(paper(0).pixels, paper(1).pixels);
        // No augmentation at all is the plain path, bit for bit.
        let none = Batches::sequential(&s, 4, norm.clone())
            .augmented(Augmentation::none(), 9, 0)
            .next()
            .unwrap();
        assert_eq!(none, plain);
    }

    #[test]
    fn prefetched_batches_are_the_sequential_ones() {
        let s = Split {
            pixels: (0..50 * 784).map(|i| ((i * 13) % 256) as u8).collect(),
            labels: (0..50).map(|i| (i % 10) as u8).collect(),
            rows: 28,
            cols: 28,
        };
        let aug = Augmentation {
            rotation_degrees: 10.0,
            erase_probability: 0.5,
            ..Augmentation::none()
        };
        let batches = || {
            Batches::new(&s, epoch_order(50, 3, 2), 8, Normalizer::new(0.1, 0.3))
                .augmented(aug, 3, 2)
        };
        let sequential: Vec<HostBatch> = batches().collect();
        for depth in [0, 1, 4] {
            let prefetched: Vec<HostBatch> = batches().prefetch(depth, |b| b.collect());
            assert_eq!(prefetched, sequential, "depth {depth}");
        }
        assert_eq!(sequential.len(), 7);
    }

    #[test]
    fn stopping_early_ends_the_preparation() {
        let s = split(1000);
        let first_two: Vec<Vec<i64>> = Batches::sequential(&s, 10, Normalizer::new(0.0, 1.0))
            .prefetch(1, |b| b.take(2).map(|b| b.labels).collect());
        // Returning at all shows the producer stopped: the scope joins it.
        assert_eq!(first_two.len(), 2);
        assert_eq!(first_two[1][0], 0); // image 10's label
    }

    #[cfg(feature = "burn")]
    #[test]
    fn batch_becomes_tensors_of_the_right_shape() {
        #[allow(deprecated)]
        let device = burn::tensor::Device::ndarray();
        let b = Batches::sequential(&split(3), 3, Normalizer::new(0.0, 1.0))
            .next()
            .unwrap()
            .to_device(&device);
        assert_eq!(b.images.dims(), [3, 1, 2, 2]);
        let targets: Vec<i64> = b.targets.into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(targets, vec![0, 1, 2]);
    }
}
