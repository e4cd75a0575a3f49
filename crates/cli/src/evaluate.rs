//! Evaluation: predictions over a split, as a confusion matrix; one model
//! or an ensemble averaging its members' probabilities.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use mnist_data::{Batches, NUM_CLASSES, Normalizer, Split};
use mnist_metrics::ConfusionMatrix;
use mnist_model::Network;

/// Classify every image of `split` with `model` (expected without autodiff)
/// and count the outcomes.
pub fn confusion(
    model: &Network,
    split: &Split,
    batch_size: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> ConfusionMatrix {
    ensemble_confusion(
        std::slice::from_ref(model),
        split,
        batch_size,
        normalizer,
        device,
    )
}

/// The mean of the models' class probabilities `[batch, classes]`.
pub fn mean_probabilities(models: &[Network], images: Tensor<4>) -> Tensor<2> {
    let count = models.len() as f64;
    models
        .iter()
        .map(|model| softmax(model.forward(images.clone()), 1))
        .reduce(|sum, p| sum + p)
        .expect("an ensemble has at least one model")
        .div_scalar(count)
}

/// Classify every image by the mean of the models' probabilities (one
/// model: its own argmax) and count the outcomes.
pub fn ensemble_confusion(
    models: &[Network],
    split: &Split,
    batch_size: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> ConfusionMatrix {
    let mut matrix = ConfusionMatrix::new(NUM_CLASSES);
    for batch in Batches::sequential(split, batch_size, normalizer.clone()) {
        let truth: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        let batch = batch.to_device(device);
        let scores = match models {
            [single] => single.forward(batch.images),
            _ => mean_probabilities(models, batch.images),
        };
        let predicted: Vec<usize> = scores
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
