use burn::config::Config;

/// PyTorch's `ExponentialLR`, stepped once per epoch: epoch `e` trains at
/// `lr · gamma^e`.
///
/// The rate is recomputed from the epoch number, so a resumed run needs no
/// scheduler state beyond the epoch. It multiplies `gamma` in once per epoch,
/// as PyTorch does, so the rates agree with PyTorch's to the last bit.
#[derive(Config, Debug, PartialEq)]
pub struct EpochExponentialLr {
    /// The rate of the first epoch.
    #[config(default = 0.0015)]
    pub initial_lr: f64,
    /// Decay factor per epoch, in (0, 1].
    #[config(default = 0.9)]
    pub gamma: f64,
}

impl EpochExponentialLr {
    /// The learning rate of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize) -> f64 {
        (0..epoch).fold(self.initial_lr, |lr, _| lr * self.gamma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_once_per_epoch_like_pytorch() {
        let s = EpochExponentialLr::new()
            .with_initial_lr(0.1)
            .with_gamma(0.9);
        assert_eq!(s.lr(0), 0.1);
        // PyTorch's chained form gives 0.1 * 0.9 = 0.09000000000000001.
        assert_eq!(s.lr(1), 0.09000000000000001);
        assert_eq!(s.lr(2), 0.09000000000000001 * 0.9);
    }

    #[test]
    fn defaults_are_the_notebooks() {
        let s = EpochExponentialLr::new();
        assert_eq!((s.initial_lr, s.gamma), (0.0015, 0.9));
    }
}
