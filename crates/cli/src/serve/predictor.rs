//! One inference thread for the drawing page. Requests that arrive while a
//! forward pass runs wait in a queue and go through the next pass together,
//! as one batch: under load the server runs few large passes instead of many
//! single-image ones, and an answer never waits for more than one pass.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use burn::tensor::{Device, Tensor, TensorData};
use mnist_data::digit::SIDE;
use mnist_data::{Dataset, Normalizer};
use mnist_model::Network;
use tokio::sync::oneshot;

use crate::evaluate::member_probabilities;

/// The class probabilities for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The ensemble's: the mean of the members' (a single model's own).
    pub probabilities: Vec<f32>,
    /// Each member's own, in the order of the weights.
    pub members: Vec<Vec<f32>>,
}

/// The inference thread has stopped (a forward pass panicked).
#[derive(Debug, thiserror::Error)]
#[error("the model stopped answering; restart `mnist serve` (its log says why)")]
pub struct PredictorGone;

struct Job {
    digit: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// A handle on the inference thread; cheap to share between requests.
pub struct Predictor {
    jobs: mpsc::Sender<Job>,
}

impl Predictor {
    /// Start the thread with `models` (an ensemble when several) on
    /// `device`, normalising as `dataset` was, at most `max_batch` images a
    /// pass.
    pub fn start(models: Vec<Network>, device: Device, dataset: Dataset, max_batch: usize) -> Self {
        let (jobs, queue) = mpsc::channel();
        let normalizer = Normalizer::new(dataset.mean(), dataset.std());
        std::thread::Builder::new()
            .name("predictor".into())
            .spawn(move || answer_jobs(&queue, &models, &device, &normalizer, max_batch.max(1)))
            .expect("the OS can start a thread");
        Self { jobs }
    }

    /// Classify one prepared 28×28 image (grey levels, light on dark).
    pub async fn predict(&self, digit: Vec<u8>) -> Result<Answer, PredictorGone> {
        debug_assert_eq!(digit.len(), SIDE * SIDE);
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { digit, reply })
            .map_err(|_| PredictorGone)?;
        answer.await.map_err(|_| PredictorGone)
    }
}

/// Take every job waiting (up to `max_batch`), answer them in one pass,
/// repeat until the server drops its handle.
fn answer_jobs(
    queue: &mpsc::Receiver<Job>,
    models: &[Network],
    device: &Device,
    normalizer: &Normalizer,
    max_batch: usize,
) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let digits: Vec<&[u8]> = jobs.iter().map(|j| j.digit.as_slice()).collect();
        let answers = std::panic::catch_unwind(AssertUnwindSafe(|| {
            classify(models, device, normalizer, &digits)
        }));
        match answers {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    // The client may have gone; nobody else wants the answer.
                    let _ = job.reply.send(answer);
                }
            }
            Err(_) => {
                tracing::error!(
                    images = digits.len(),
                    "a forward pass panicked; the predictor stops"
                );
                return;
            }
        }
    }
}

/// One forward pass per member over all `digits`, through the same
/// normalisation and ensemble mean as `mnist predict`.
pub fn classify(
    models: &[Network],
    device: &Device,
    normalizer: &Normalizer,
    digits: &[&[u8]],
) -> Vec<Answer> {
    let mut pixels = Vec::with_capacity(digits.len() * SIDE * SIDE);
    for digit in digits {
        normalizer.extend(digit, &mut pixels);
    }
    let images = Tensor::<4>::from_data(
        TensorData::new(pixels, [digits.len(), 1, SIDE, SIDE]),
        device,
    );
    let (mean, members) = member_probabilities(models, images);
    let rows = |t: Tensor<2>| -> Vec<Vec<f32>> {
        let values: Vec<f32> = t
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("probabilities convert to f32");
        let classes = values.len() / digits.len();
        values.chunks_exact(classes).map(<[f32]>::to_vec).collect()
    };
    let mean = rows(mean);
    let members: Vec<Vec<Vec<f32>>> = members.into_iter().map(rows).collect();
    mean.into_iter()
        .enumerate()
        .map(|(i, probabilities)| Answer {
            probabilities,
            members: members.iter().map(|m| m[i].clone()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mnist_model::{BackendKind, DeviceSpec, ModelKind};

    fn digit(seed: u8) -> Vec<u8> {
        (0..SIDE * SIDE)
            .map(|i| ((i * 7 + usize::from(seed) * 31) % 256) as u8)
            .collect()
    }

    fn device() -> Device {
        BackendKind::default_cpu()
            .unwrap()
            .device(DeviceSpec::Cpu)
            .unwrap()
    }

    #[test]
    fn a_batch_answers_each_image_as_it_would_alone() {
        let device = device();
        let models = vec![
            ModelKind::Seed.init(1, &device),
            ModelKind::Seed.init(2, &device),
        ];
        let normalizer = Normalizer::new(Dataset::Mnist.mean(), Dataset::Mnist.std());
        let digits: Vec<Vec<u8>> = (0..5).map(digit).collect();
        let refs: Vec<&[u8]> = digits.iter().map(Vec::as_slice).collect();
        let together = classify(&models, &device, &normalizer, &refs);
        assert_eq!(together.len(), 5);
        for (d, answer) in refs.iter().zip(&together) {
            let alone = &classify(&models, &device, &normalizer, &[d])[0];
            assert_eq!(answer.members.len(), 2);
            for (a, b) in answer.probabilities.iter().zip(&alone.probabilities) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            let mean: Vec<f32> = (0..10)
                .map(|c| (answer.members[0][c] + answer.members[1][c]) / 2.0)
                .collect();
            for (a, b) in answer.probabilities.iter().zip(&mean) {
                assert!((a - b).abs() < 1e-6, "the ensemble is the members' mean");
            }
        }
        assert_ne!(together[0].probabilities, together[1].probabilities);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_get_their_own_answers() {
        let device = device();
        let model = ModelKind::Seed.init(3, &device);
        let normalizer = Normalizer::new(Dataset::Mnist.mean(), Dataset::Mnist.std());
        let digits: Vec<Vec<u8>> = (0..40).map(digit).collect();
        let expected: Vec<Answer> = digits
            .iter()
            .map(|d| classify(std::slice::from_ref(&model), &device, &normalizer, &[d])[0].clone())
            .collect();
        let predictor =
            std::sync::Arc::new(Predictor::start(vec![model], device, Dataset::Mnist, 8));
        let tasks: Vec<_> = digits
            .into_iter()
            .map(|d| {
                let p = predictor.clone();
                tokio::spawn(async move { p.predict(d).await.unwrap() })
            })
            .collect();
        for (task, want) in tasks.into_iter().zip(expected) {
            let got = task.await.unwrap();
            for (a, b) in got.probabilities.iter().zip(&want.probabilities) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
