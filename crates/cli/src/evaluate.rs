//! Evaluation: predictions over a split, as confusion matrices; one model,
//! or an ensemble averaging its members' probabilities.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use mnist_data::tta::View;
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

impl EnsembleOutcome {
    /// Empty matrices for an ensemble of `members`.
    fn new(members: usize) -> Self {
        Self {
            ensemble: ConfusionMatrix::new(NUM_CLASSES),
            members: vec![ConfusionMatrix::new(NUM_CLASSES); members],
        }
    }
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
    let mut outcome = EnsembleOutcome::new(models.len());
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

/// As [`ensemble_confusion`], but each model's answer for an image is the
/// mean of its class probabilities over the image's test-time `views`
/// ([`mnist_data::tta::views`] of the dataset); the ensemble's is the mean
/// of those.
pub fn ensemble_confusion_tta(
    models: &[Network],
    split: &Split,
    views: &[View],
    batch_size: usize,
    normalizer: &Normalizer,
    device: &Device,
) -> EnsembleOutcome {
    let views: Vec<Split> = views.iter().map(|view| view.apply_to(split)).collect();
    let mut batches: Vec<_> = views
        .iter()
        .map(|view| Batches::sequential(view, batch_size, normalizer.clone()))
        .collect();
    let mut outcome = EnsembleOutcome::new(models.len());
    // The views' batches hold the same images in the same order.
    while let Some(step) = batches
        .iter_mut()
        .map(Iterator::next)
        .collect::<Option<Vec<_>>>()
    {
        let truth = truth(&step[0].labels);
        let images: Vec<Tensor<4>> = step
            .into_iter()
            .map(|b| b.to_device(device).images)
            .collect();
        let members: Vec<Tensor<2>> = models
            .iter()
            .map(|model| {
                mean(
                    images
                        .iter()
                        .map(|x| softmax(model.forward(x.clone()), 1))
                        .collect(),
                )
            })
            .collect();
        for (matrix, probabilities) in outcome.members.iter_mut().zip(&members) {
            matrix.extend(&truth, &classes(probabilities.clone()));
        }
        outcome.ensemble.extend(&truth, &classes(mean(members)));
    }
    outcome
}

/// The mean of the models' class probabilities over the test-time `views`
/// of `digits` (28×28 grey levels each), `[digits, classes]`.
pub fn tta_probabilities(
    models: &[Network],
    digits: &[Vec<u8>],
    views: &[View],
    normalizer: &Normalizer,
    device: &Device,
) -> Tensor<2> {
    let side = mnist_data::digit::SIDE;
    let per_view = views
        .iter()
        .map(|view| {
            let mut pixels = Vec::with_capacity(digits.len() * side * side);
            for digit in digits {
                normalizer.extend(&view.apply(digit, side, side), &mut pixels);
            }
            let images = Tensor::<4>::from_data(
                burn::tensor::TensorData::new(pixels, [digits.len(), 1, side, side]),
                device,
            );
            mean_probabilities(models, images)
        })
        .collect();
    mean(per_view)
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

#[cfg(test)]
mod tests {
    use super::*;
    use mnist_model::{BackendKind, DeviceSpec, ModelKind};

    fn device() -> Device {
        BackendKind::default_cpu()
            .unwrap()
            .device(DeviceSpec::Cpu)
            .unwrap()
    }

    /// Digit-like images: a random blob each, so views differ.
    fn split(n: usize) -> Split {
        let mut pixels = vec![0u8; n * 784];
        for i in 0..n {
            for k in 0..60 {
                let (x, y) = (6 + (i * 7 + k * 13) % 16, 6 + (i * 5 + k * 3) % 16);
                pixels[i * 784 + y * 28 + x] = 255;
            }
        }
        Split {
            pixels,
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 28,
            cols: 28,
        }
    }

    /// Each image's mean probabilities over the views, computed image by
    /// image and view by view.
    fn by_hand(
        models: &[Network],
        split: &Split,
        views: &[View],
        device: &Device,
    ) -> Vec<[f32; 10]> {
        let normalizer = Normalizer::new(0.1307, 0.3081);
        (0..split.len())
            .map(|i| {
                let mut sum = [0f32; 10];
                for view in views {
                    let mut pixels = Vec::new();
                    normalizer.extend(&view.apply(split.image(i), 28, 28), &mut pixels);
                    let x = Tensor::<4>::from_data(
                        burn::tensor::TensorData::new(pixels, [1, 1, 28, 28]),
                        device,
                    );
                    let p: Vec<f32> = mean_probabilities(models, x)
                        .into_data()
                        .try_into_vec_as()
                        .unwrap();
                    for (s, v) in sum.iter_mut().zip(p) {
                        *s += v / views.len() as f32;
                    }
                }
                sum
            })
            .collect()
    }

    fn argmax(p: &[f32]) -> usize {
        (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
    }

    #[test]
    fn tta_averages_every_view_of_every_image() {
        for dataset in mnist_data::Dataset::ALL {
            averages_every_view(&mnist_data::tta::views(dataset));
        }
    }

    fn averages_every_view(views: &[View]) {
        let device = device();
        let models = vec![
            ModelKind::Seed.init(5, &device),
            ModelKind::Seed.init(6, &device),
        ];
        let split = split(40);
        let normalizer = Normalizer::new(0.1307, 0.3081);
        let expected = by_hand(&models, &split, views, &device);

        let digits: Vec<Vec<u8>> = (0..split.len()).map(|i| split.image(i).to_vec()).collect();
        let got: Vec<f32> = tta_probabilities(&models, &digits, views, &normalizer, &device)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        for (row, want) in got.chunks_exact(10).zip(&expected) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        let plain: Vec<f32> = mean_probabilities(
            &models,
            Tensor::<4>::from_data(
                burn::tensor::TensorData::new(
                    split
                        .pixels
                        .iter()
                        .map(|&p| normalizer.apply(p))
                        .collect::<Vec<_>>(),
                    [split.len(), 1, 28, 28],
                ),
                &device,
            ),
        )
        .into_data()
        .try_into_vec_as()
        .unwrap();
        let moved = plain
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(moved > 1e-4, "the views change the probabilities ({moved})");

        let mut matrix = ConfusionMatrix::new(NUM_CLASSES);
        let labels: Vec<usize> = split.labels.iter().map(|&l| usize::from(l)).collect();
        matrix.extend(
            &labels,
            &expected.iter().map(|p| argmax(p)).collect::<Vec<_>>(),
        );
        let outcome = ensemble_confusion_tta(&models, &split, views, 16, &normalizer, &device);
        assert_eq!(outcome.ensemble.counts(), matrix.counts());
    }
}
