//! PyTorch's default initialisation for `Conv2d` and `Linear`.
//!
//! Weights: `kaiming_uniform_(a = √5)`, i.e. U(−b, b) with b = 1/√fan_in;
//! biases: U(−1/√fan_in, 1/√fan_in). The values come from a ChaCha RNG on
//! the host, so a seed means the same initial weights on every backend and
//! machine (Burn's device RNGs differ between backends).

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A parameter of `shape` drawn from U(−bound, bound).
pub fn uniform<const D: usize>(
    shape: [usize; D],
    bound: f32,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// PyTorch's bound for a layer with `fan_in` inputs per output.
pub fn torch_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn values_stay_inside_the_bound_and_fill_it() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let p = uniform([100, 50], 0.1, &mut rng, &device);
        let v: Vec<f32> = p.val().into_data().try_into_vec_as::<f32>().unwrap();
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(lo >= -0.1 && hi < 0.1);
        assert!(lo < -0.099 && hi > 0.099, "uniform over the whole range");
        assert_eq!(torch_bound(25), 0.2);
    }
}
