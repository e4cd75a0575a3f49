use burn::config::Config;
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

use crate::RecordState;

/// Configuration of [`RAdam`]; the defaults are PyTorch's, with the
/// notebook's weight decay.
#[derive(Config, Debug)]
pub struct RAdamConfig {
    /// Decay rate of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Decay rate of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Added to the root of the second moment, for numerical stability.
    #[config(default = 1e-8)]
    pub epsilon: f64,
    /// Weight decay factor.
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// `true`: AdamW-style decay, parameters scaled by `1 − lr·wd` before the
    /// update (PyTorch's `decoupled_weight_decay=True`); `false`: L2 penalty
    /// added to the gradient.
    #[config(default = true)]
    pub decoupled_weight_decay: bool,
}

/// Rectified Adam (Liu et al. 2019, "On the Variance of the Adaptive Learning
/// Rate and Beyond"), step for step as `torch.optim.RAdam`.
///
/// While the variance of the adaptive rate is intractable (ρ_t ≤ 5, the
/// first few steps) it takes plain bias-corrected momentum steps; after that,
/// rectified Adam steps.
#[derive(Clone, Debug)]
pub struct RAdam {
    config: Coefficients,
}

#[derive(Clone, Copy, Debug)]
struct Coefficients {
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    weight_decay: f64,
    decoupled: bool,
}

/// Per-parameter state of [`RAdam`].
#[derive(RecordState, Clone, derive_new::new)]
pub struct RAdamState<const D: usize> {
    /// Steps taken so far.
    pub time: usize,
    /// First moment (`exp_avg`).
    pub moment_1: Tensor<D>,
    /// Second moment (`exp_avg_sq`).
    pub moment_2: Tensor<D>,
}

impl RAdamConfig {
    /// The bare per-parameter optimizer.
    pub fn build(&self) -> RAdam {
        RAdam {
            config: Coefficients {
                beta_1: self.beta_1,
                beta_2: self.beta_2,
                epsilon: self.epsilon,
                weight_decay: self.weight_decay,
                decoupled: self.decoupled_weight_decay,
            },
        }
    }

    /// An optimizer for a whole module.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.build())
    }
}

/// The scalar part of step `t`: how the moments turn into an update.
#[derive(Debug, PartialEq)]
enum Update {
    /// Bias-corrected momentum only: `p −= lr · m / bc1`.
    Momentum { scale: f64 },
    /// Rectified Adam: `p −= scale · m / (√v + eps)`.
    Rectified { scale: f64 },
}

impl Coefficients {
    fn update(&self, lr: f64, time: usize) -> Update {
        let t = time as i32;
        let bias_correction_1 = 1.0 - self.beta_1.powi(t);
        let bias_correction_2 = 1.0 - self.beta_2.powi(t);
        let rho_inf = 2.0 / (1.0 - self.beta_2) - 1.0;
        let rho_t = rho_inf - 2.0 * time as f64 * self.beta_2.powi(t) / bias_correction_2;
        if rho_t > 5.0 {
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                .sqrt();
            Update::Rectified {
                scale: lr * rect * bias_correction_2.sqrt() / bias_correction_1,
            }
        } else {
            Update::Momentum {
                scale: lr / bias_correction_1,
            }
        }
    }
}

impl Optimizer for RAdam {
    type State<const D: usize> = RAdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        mut grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let c = &self.config;
        let mut param = tensor;
        if c.weight_decay != 0.0 {
            if c.decoupled {
                param = param.mul_scalar(1.0 - lr * c.weight_decay);
            } else {
                grad = grad.add(param.clone().mul_scalar(c.weight_decay));
            }
        }
        let (time, moment_1, moment_2) = match state {
            Some(s) => (
                s.time + 1,
                s.moment_1
                    .mul_scalar(c.beta_1)
                    .add(grad.clone().mul_scalar(1.0 - c.beta_1)),
                s.moment_2
                    .mul_scalar(c.beta_2)
                    .add(grad.square().mul_scalar(1.0 - c.beta_2)),
            ),
            None => (
                1,
                grad.clone().mul_scalar(1.0 - c.beta_1),
                grad.square().mul_scalar(1.0 - c.beta_2),
            ),
        };
        let delta = match c.update(lr, time) {
            Update::Momentum { scale } => moment_1.clone().mul_scalar(scale),
            Update::Rectified { scale } => moment_1
                .clone()
                .div(moment_2.clone().sqrt().add_scalar(c.epsilon))
                .mul_scalar(scale),
        };
        (
            param.sub(delta),
            Some(RAdamState::new(time, moment_1, moment_2)),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.moment_1 = state.moment_1.to_device(device);
        state.moment_2 = state.moment_2.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coefficients() -> Coefficients {
        let RAdam { config } = RAdamConfig::new().build();
        config
    }

    #[test]
    fn first_steps_are_momentum_only() {
        // ρ_t ≤ 5 for t ≤ 5 with β₂ = 0.999 (ρ_5 ≈ 4.99, ρ_6 ≈ 5.99).
        let c = coefficients();
        for t in 1..=5 {
            assert!(matches!(c.update(0.1, t), Update::Momentum { .. }), "t={t}");
        }
        assert!(matches!(c.update(0.1, 6), Update::Rectified { .. }));
    }

    #[test]
    fn momentum_scale_undoes_the_first_moment_bias() {
        // m_1 = (1 − β₁) g, so lr / (1 − β₁) · m_1 = lr · g.
        assert_eq!(
            coefficients().update(0.1, 1),
            Update::Momentum {
                scale: 0.1 / (1.0 - 0.9)
            }
        );
    }

    #[test]
    fn rectification_tends_to_one() {
        // For large t, rect → 1 and both bias corrections → 1: scale → lr.
        let Update::Rectified { scale } = coefficients().update(0.1, 1_000_000) else {
            panic!("rectified");
        };
        assert!((scale - 0.1).abs() < 1e-6, "{scale}");
    }
}
