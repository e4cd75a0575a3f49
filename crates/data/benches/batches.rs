//! Criterion benchmark of host-side batch preparation: shuffling order,
//! augmentation and normalisation of one mini-batch, as `mnist train`
//! builds them between steps.
//!
//! Measures what the training loop pays on the host per step before the
//! device sees the batch: with the `hvc` recipe (batch 120) using its
//! ranges and using `--augment hvc-paper`, with the `seed-plus` recipe
//! (batch 128), and without augmentation (the notebook, batch 600).
//! Synthetic digits stand in for MNIST, so no data files are needed: the
//! cost depends on the image size, not its content.
//!
//! `cargo bench -p mnist-data --bench batches`

use criterion::{Criterion, criterion_group, criterion_main};
use mnist_data::{Augment, Augmentation, Batches, Normalizer, Split, epoch_order};

const IMAGES: usize = 2_400;

/// `IMAGES` 28×28 images with a bright bar in a varying place.
fn synthetic_split() -> Split {
    let mut pixels = vec![0u8; IMAGES * 784];
    for (i, image) in pixels.chunks_exact_mut(784).enumerate() {
        let row = 6 + i % 16;
        image[row * 28 + 4..row * 28 + 24].fill(255);
    }
    Split {
        pixels,
        labels: (0..IMAGES).map(|i| (i % 10) as u8).collect(),
        rows: 28,
        cols: 28,
    }
}

fn batches(c: &mut Criterion) {
    let split = synthetic_split();
    let normalizer = Normalizer::new(0.1307, 0.3081);
    let hvc = Augmentation {
        rotation_degrees: 15.0,
        translate_pixels: 2.0,
        width_squeeze: 0.2,
        erase_probability: 0.5,
        ..Augmentation::none()
    };
    let seed_plus = Augmentation {
        rotation_degrees: 12.0,
        translate_pixels: 2.5,
        scale: 0.1,
        ..Augmentation::none()
    };
    let cases = [
        ("hvc/batch120", Augment::from(hvc), 120),
        ("hvc-paper/batch120", Augment::HvcPaper, 120),
        ("seed-plus/batch128", seed_plus.into(), 128),
        ("notebook/batch600", Augmentation::none().into(), 600),
    ];
    let mut group = c.benchmark_group("prepare_batch");
    for (name, augmentation, batch_size) in cases {
        let mut epoch = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                epoch += 1;
                let order = epoch_order(split.len(), 0, epoch);
                Batches::new(&split, order, batch_size, normalizer.clone())
                    .augmented(augmentation, 0, epoch)
                    .next()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, batches);
criterion_main!(benches);
