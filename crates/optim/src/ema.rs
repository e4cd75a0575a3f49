//! Exponential moving average of a model's weights (Polyak averaging), as
//! timm's `ModelEmaV2`: after every step, `average ← d·average + (1 − d)·weights`,
//! for parameters and batch-norm statistics alike.
//!
//! The decay warms up as `min(d, (1 + n) / (10 + n))` after `n` updates, so
//! the average is not dominated by the random initial weights in short runs.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// The running average of a model, kept without autodiff.
#[derive(Debug, Clone)]
pub struct WeightEma<M> {
    average: M,
    decay: f64,
    updates: usize,
}

impl<M: Module> WeightEma<M> {
    /// Start averaging from `model`'s current weights; `updates` is how many
    /// steps the average has already seen (0 for a new run).
    pub fn new(model: &M, decay: f64, updates: usize) -> Self {
        Self {
            average: model.valid(),
            decay,
            updates,
        }
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// Fold in `model`'s current weights. Parameters are matched by id, which
    /// `valid()` keeps; the average never joins the autodiff graph.
    pub fn update(&mut self, model: &M) {
        let weights = model.valid();
        let mut current = Collect::default();
        weights.visit(&mut current);
        let decay = self.current_decay();
        let average = std::mem::replace(&mut self.average, weights);
        self.average = average.map(&mut Blend {
            current: current.0,
            decay,
        });
        self.updates += 1;
    }

    /// The averaged model.
    pub fn average(&self) -> &M {
        &self.average
    }

    /// Replace the average (a resumed run's saved one).
    pub fn set_average(&mut self, average: M) {
        self.average = average;
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> usize {
        self.updates
    }
}

/// Every float tensor of a module, flattened, by id.
#[derive(Default)]
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(param.id, param.val().flatten(0, D - 1));
    }
}

struct Blend {
    current: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|average| {
            let shape = average.shape();
            average.mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    #[derive(Module, Debug)]
    struct Tiny {
        layer: Linear,
    }

    fn tiny_with(value: f32, device: &Device) -> Tiny {
        let mut layer = LinearConfig::new(2, 1).init(device);
        layer.weight = layer
            .weight
            .map(|w| Tensor::from_data(TensorData::new(vec![value; 2], [2, 1]), &w.device()));
        Tiny { layer }
    }

    fn weight(m: &Tiny) -> Vec<f32> {
        m.layer
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap()
    }

    #[test]
    fn averages_with_a_warming_up_decay() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let model = tiny_with(0.0, &device);
        let mut ema = WeightEma::new(&model, 0.5, 0);
        // First update: decay min(0.5, 1/10) = 0.1 → 0.1·0 + 0.9·1.
        assert!((ema.current_decay() - 0.1).abs() < 1e-12);
        // The same parameter (mapping keeps its id), moved to 1.
        let mut moved = model.clone();
        moved.layer.weight = moved.layer.weight.map(|w| w.ones_like());
        ema.update(&moved);
        assert!(
            weight(ema.average())
                .iter()
                .all(|&w| (w - 0.9).abs() < 1e-6)
        );
        // Much later the configured decay applies: 0.5·0.9 + 0.5·1.
        let mut later = WeightEma::new(&model, 0.5, 1000);
        later.set_average(ema.average().clone());
        later.update(&moved);
        assert!(
            weight(later.average())
                .iter()
                .all(|&w| (w - 0.95).abs() < 1e-6)
        );
        assert_eq!(later.updates(), 1001);
    }
}
