//! The optimizers a run can pick (`--optimizer`), all with PyTorch's
//! defaults for betas (0.9, 0.999) and epsilon (1e-8).

use std::fmt;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};

use crate::RAdamConfig;

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// RAdam with decoupled weight decay (the notebook's).
    RAdam,
    /// Adam with weight decay as an L2 penalty in the gradient (`torch.optim.Adam`).
    Adam,
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    AdamW,
}

impl OptimizerKind {
    /// Every optimizer.
    pub const ALL: [OptimizerKind; 3] = [
        OptimizerKind::RAdam,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::RAdam => "radam",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// The optimizer called `name`, or an error listing the choices.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| format!("unknown optimizer `{name}`; choose radam, adam or adamw"))
    }

    /// The optimizer for a whole module, with the given weight decay.
    pub fn init(self, weight_decay: f64) -> ModuleOptimizer {
        const EPSILON: f32 = 1e-8;
        match self {
            OptimizerKind::RAdam => RAdamConfig::new().with_weight_decay(weight_decay).init(),
            OptimizerKind::Adam => AdamConfig::new()
                .with_epsilon(EPSILON)
                .with_weight_decay((weight_decay > 0.0).then_some(WeightDecayConfig {
                    penalty: weight_decay as f32,
                }))
                .init(),
            OptimizerKind::AdamW => AdamWConfig::new()
                .with_epsilon(EPSILON)
                .with_weight_decay(weight_decay as f32)
                .init(),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in OptimizerKind::ALL {
            assert_eq!(OptimizerKind::from_name(kind.name()).unwrap(), kind);
        }
        assert!(
            OptimizerKind::from_name("sgd")
                .unwrap_err()
                .contains("adamw")
        );
    }
}
