//! Evaluation: predictions over a split, as a confusion matrix.

use burn::tensor::Device;
use mnist_data::{Batches, NUM_CLASSES, Normalizer, Split};
use mnist_metrics::ConfusionMatrix;
use mnist_model::SeedCnn;

/// Classify every image of `split` with `model` (expected without autodiff)
/// and count the outcomes.
pub fn confusion(
    model: &SeedCnn,
    split: &Split,
    batch_size: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> ConfusionMatrix {
    let mut matrix = ConfusionMatrix::new(NUM_CLASSES);
    for batch in Batches::sequential(split, batch_size, normalizer.clone()) {
        let truth: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        let batch = batch.to_device(device);
        let predicted: Vec<usize> = model
            .forward(batch.images)
            .argmax(1)
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("argmax indices convert to i64")
            .into_iter()
            .map(|p| p as usize)
            .collect();
        matrix.extend(&truth, &predicted);
    }
    matrix
}
