//! The optimizers a run can pick (`--optimizer`), all with PyTorch's
//! defaults for betas (0.9, 0.999) and epsilon (1e-8).

use std::fmt;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};

use crate::RAdamConfig;

/// Which optimizer. Its name ([`OptimizerKind::name`]) is the same on the
/// command line and in run files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OptimizerKind {
    /// RAdam with decoupled weight decay (the notebook's).
    #[serde(rename = "radam")]
    #[cfg_attr(feature = "clap", value(name = "radam"))]
    RAdam,
    /// Adam with weight decay as an L2 penalty in the gradient (`torch.optim.Adam`).
    #[serde(rename = "adam")]
    #[cfg_attr(feature = "clap", value(name = "adam"))]
    Adam,
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    #[serde(rename = "adamw")]
    #[cfg_attr(feature = "clap", value(name = "adamw"))]
    AdamW,
}

/// A name that is no optimizer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown optimizer `{0}`; choose radam, adam or adamw")]
pub struct UnknownOptimizer(pub String);

impl std::str::FromStr for OptimizerKind {
    type Err = UnknownOptimizer;

    fn from_str(name: &str) -> Result<Self, UnknownOptimizer> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| UnknownOptimizer(name.to_string()))
    }
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
            assert_eq!(kind.name().parse::<OptimizerKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", kind.name()),
                "files use the same name"
            );
            assert_eq!(serde_json::from_str::<OptimizerKind>(&json).unwrap(), kind);
        }
        let err = "sgd".parse::<OptimizerKind>().unwrap_err().to_string();
        assert!(err.contains("adamw"), "{err}");
    }
}
