//! Dropout in training with its mask drawn as one backend operation
//! ([`dropout`]), for the Kaggle-style CNN (three dropouts over 5,760 values
//! per image) and seed-plus.
//!
//! Burn's `Dropout` draws its Bernoulli mask one value at a time through a
//! generic sampler on one thread, then multiplies by the mask and by
//! `1 / keep` in two passes (and two more backward). Here:
//!
//! - **flex** draws a seed from the backend's own (seeded) random-number
//!   generator and fills the mask, already scaled by `1 / keep`, in
//!   parallel chunks of a counter-seeded ChaCha8 stream — the same mask for
//!   the same seed whatever the number of threads;
//! - **ndarray** and **tch** draw Burn's Bernoulli mask on their own device.
//!
//! Either way the output is `x · mask` with the mask a constant to autodiff:
//! one multiplication forward, one backward.

use burn::backend::autodiff::{Autodiff, checkpoint::strategy::CheckpointStrategy};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, TensorMetadata, backend_extension};
use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor};

/// The mask of dropout in training, as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait DropoutOps: Backend {
    /// A tensor shaped and placed like `like` holding `1 / keep` with
    /// probability `keep` and 0 otherwise, drawn from the backend's random
    /// number generator. The default is Burn's Bernoulli draw.
    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        composed_mask::<Self>(like, keep)
    }
}

/// Burn's Bernoulli mask, scaled.
pub(super) fn composed_mask<B: Backend>(like: FloatTensor<B>, keep: f64) -> FloatTensor<B> {
    let device = like.device();
    let mask = B::float_random(
        like.shape(),
        Distribution::Bernoulli(keep),
        &device,
        like.dtype().into(),
    );
    B::float_mul_scalar(mask, (1.0 / keep).into())
}

impl<B: DropoutOps, C: CheckpointStrategy> DropoutOps for Autodiff<B, C> {
    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        // A constant: no gradient flows into the mask.
        FloatTensor::<Self>::new(B::dropout_mask(like.into_primitive(), keep))
    }
}

#[cfg(feature = "ndarray")]
impl DropoutOps for burn::backend::NdArray {}

#[cfg(feature = "tch")]
impl DropoutOps for burn::backend::LibTorch {}

/// `dropout.forward(x)`: in training (on an autodiff device, the layer not
/// frozen, a probability above zero) `x` times a mask from
/// [`DropoutOps::dropout_mask`]; otherwise `x` unchanged, as Burn's
/// `Dropout` does.
pub fn dropout<const D: usize>(x: Tensor<D>, dropout: &Dropout) -> Tensor<D> {
    if !x.device().is_autodiff() || !dropout.training.is_enabled() || dropout.prob == 0.0 {
        return x;
    }
    let keep = 1.0 - dropout.prob;
    let mask = Tensor::from_dispatch(Dispatch::dropout_mask(x.clone().into_dispatch(), keep));
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;
    use burn::nn::DropoutConfig;
    use burn::tensor::TensorData;

    const PROB: f64 = 0.4;

    fn input(device: &burn::tensor::Device) -> Tensor<4> {
        // No zeros, so a zero in the output can only be the mask's.
        let values: Vec<f32> = (0..2 * 8 * 12 * 12)
            .map(|i| 1.0 + (i % 17) as f32)
            .collect();
        Tensor::from_data(TensorData::new(values, [2, 8, 12, 12]), device)
    }

    #[test]
    fn keeps_about_one_minus_p_scaled_and_passes_the_gradient_through_the_mask() {
        for (backend, device) in test_devices() {
            let device = device.autodiff();
            let layer = DropoutConfig::new(PROB).init();
            let x = input(&device).require_grad();
            let output = dropout(x.clone(), &layer);
            let grads = output.clone().sum().backward();
            let x_grad: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let out: Vec<f32> = output.into_data().to_vec().unwrap();
            let x: Vec<f32> = x.into_data().to_vec().unwrap();
            let scale = (1.0 / (1.0 - PROB)) as f32;
            let mut kept = 0;
            for ((&o, &v), &g) in out.iter().zip(&x).zip(&x_grad) {
                if o == 0.0 {
                    assert_eq!(g, 0.0, "{backend}: a dropped value passes no gradient");
                } else {
                    kept += 1;
                    assert!(
                        (o - v * scale).abs() <= 1e-5 * o.abs(),
                        "{backend}: {o} vs {v}"
                    );
                    assert!((g - scale).abs() <= 1e-6, "{backend}: gradient {g}");
                }
            }
            // 2,304 draws at 0.6: σ ≈ 23.5 values; allow five.
            let expected = (1.0 - PROB) * out.len() as f64;
            assert!(
                (kept as f64 - expected).abs() < 5.0 * (expected * PROB).sqrt(),
                "{backend}: kept {kept} of {}",
                out.len()
            );
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_mask_and_another_seed_another() {
        for (backend, device) in test_devices() {
            let device = device.autodiff();
            let layer = DropoutConfig::new(PROB).init();
            let draw = |seed: u64| -> Vec<f32> {
                device.seed(seed);
                dropout(input(&device), &layer)
                    .into_data()
                    .to_vec()
                    .unwrap()
            };
            // The backends' generators are global to the process, and tests
            // running beside this one draw from them between a seed and its
            // draws; a true mismatch shows on every try, a disturbed one on
            // few.
            let same_twice = (0..5).any(|_| draw(7) == draw(7));
            assert!(same_twice, "{backend}: seed 7 drew different masks");
            assert_ne!(draw(7), draw(8), "{backend}");
        }
    }

    #[test]
    fn outside_training_it_is_the_identity() {
        for (backend, device) in test_devices() {
            let layer = DropoutConfig::new(PROB).init();
            // Not an autodiff device: evaluation.
            let x = input(&device);
            let out = dropout(x.clone(), &layer);
            assert_eq!(out.into_data(), x.into_data(), "{backend}");
            // Probability zero.
            let x = input(&device.autodiff());
            let out = dropout(x.clone(), &DropoutConfig::new(0.0).init());
            assert_eq!(out.into_data(), x.into_data(), "{backend}");
        }
    }
}
