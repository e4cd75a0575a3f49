//! Evaluation: predictions over a split, as confusion matrices; one model,
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
    let mut matrix = ConfusionMatrix::new(NUM_CLASSES);
    for batch in Batches::sequential(split, batch_size, normalizer.clone()) {
        let truth = truth(&batch.labels);
        let batch = batch.to_device(device);
        matrix.extend(&truth, &classes(model.forward(batch.images)));
    }
    matrix
}

/// An ensemble's outcomes and each member's own.
pub struct EnsembleOutcome {
    /// Classified by the mean of the members' probabilities.
    pub ensemble: ConfusionMatrix,
    /// Classified by each member alone, in the members' order.
    pub members: Vec<ConfusionMatrix>,
}

/// Classify every image by the mean of the models' probabilities, and by
/// each model alone, in one pass: every model sees every batch once.
pub fn ensemble_confusion(
    models: &[Network],
    split: &Split,
    batch_size: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> EnsembleOutcome {
    let mut outcome = EnsembleOutcome {
        ensemble: ConfusionMatrix::new(NUM_CLASSES),
        members: vec![ConfusionMatrix::new(NUM_CLASSES); models.len()],
    };
    for batch in Batches::sequential(split, batch_size, normalizer.clone()) {
        let truth = truth(&batch.labels);
        let batch = batch.to_device(device);
        let logits: Vec<Tensor<2>> = models
            .iter()
            .map(|model| model.forward(batch.images.clone()))
            .collect();
        for (matrix, scores) in outcome.members.iter_mut().zip(&logits) {
            matrix.extend(&truth, &classes(scores.clone()));
        }
        if models.len() > 1 {
            let probabilities = logits.into_iter().map(|l| softmax(l, 1)).collect();
            outcome
                .ensemble
                .extend(&truth, &classes(mean(probabilities)));
        }
    }
    // One model is its own ensemble.
    if let [single] = outcome.members.as_slice() {
        outcome.ensemble = single.clone();
    }
    outcome
}

/// The mean of the models' class probabilities `[batch, classes]`.
pub fn mean_probabilities(models: &[Network], images: Tensor<4>) -> Tensor<2> {
    member_probabilities(models, images).0
}

/// The mean of the models' class probabilities `[batch, classes]`, and
/// each model's own.
pub fn member_probabilities(models: &[Network], images: Tensor<4>) -> (Tensor<2>, Vec<Tensor<2>>) {
    let members: Vec<Tensor<2>> = models
        .iter()
        .map(|model| softmax(model.forward(images.clone()), 1))
        .collect();
    (mean(members.clone()), members)
}

fn mean(probabilities: Vec<Tensor<2>>) -> Tensor<2> {
    let count = probabilities.len() as f64;
    probabilities
        .into_iter()
        .reduce(|sum, p| sum + p)
        .expect("an ensemble has at least one model")
        .div_scalar(count)
}

fn truth(labels: &[i64]) -> Vec<usize> {
    labels.iter().map(|&l| l as usize).collect()
}

/// The highest-scoring class of each row.
fn classes(scores: Tensor<2>) -> Vec<usize> {
    scores
        .argmax(1)
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("argmax indices convert to i64")
        .into_iter()
        .map(|p| p as usize)
        .collect()
}
