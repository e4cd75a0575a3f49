//! One training step — forward, loss, backward, optimizer, weight average —
//! and its set-up, as `mnist train` runs it and `mnist bench` times it, with
//! the time each phase takes.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use mnist_model::Network;
use mnist_optim::WeightEma;

use crate::config::HyperParams;

/// What a step needs besides the model: the recipe's loss, optimizer and
/// weight average, and the phase times so far.
pub struct TrainingStep {
    /// Cross-entropy with the recipe's label smoothing.
    loss_fn: CrossEntropyLoss,
    /// The recipe's optimizer and its per-parameter state.
    pub optim: ModuleOptimizer,
    /// The weights' moving average, when the recipe keeps one.
    pub ema: Option<WeightEma<Network>>,
    /// Time spent in each phase since the last [`PhaseTimes::take`].
    pub times: PhaseTimes,
}

/// A fresh model on `device` (an autodiff device) and everything that trains
/// it, as `hyper` describes. `ema_updates` is how many steps a resumed
/// average has already seen (0 for a new run).
pub fn set_up(hyper: &HyperParams, device: &Device, ema_updates: usize) -> (Network, TrainingStep) {
    let model = hyper.model.init(hyper.seed, device);
    let model = match hyper.dropout {
        // `HyperParams::validate` has refused --dropout for models without it.
        Some(prob) => model
            .with_dropout(prob)
            .expect("--dropout is validated against the model"),
        None => model,
    };
    let ema = (hyper.ema_decay > 0.0).then(|| WeightEma::new(&model, hyper.ema_decay, ema_updates));
    let step = TrainingStep {
        loss_fn: hyper.loss(device),
        optim: hyper.optimizer.init(hyper.weight_decay),
        ema,
        times: PhaseTimes::default(),
    };
    (model, step)
}

impl TrainingStep {
    /// Train `model` on one batch at learning rate `lr`; return the updated
    /// model and the batch's loss, not yet read. Reading it waits for an
    /// asynchronous device (CUDA), so the caller reads it only once the
    /// whole step is queued.
    pub fn step(
        &mut self,
        model: Network,
        images: Tensor<4>,
        targets: Tensor<1, Int>,
        lr: f64,
    ) -> (Network, Tensor<1>) {
        let started = Instant::now();
        let loss = self.loss_fn.forward(model.forward(images), targets);
        let forward_done = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let backward_done = Instant::now();
        let model = self.optim.step(lr, model, grads);
        if let Some(ema) = &mut self.ema {
            ema.update(&model);
        }
        self.times.forward += forward_done - started;
        self.times.backward += backward_done - forward_done;
        self.times.optimizer += backward_done.elapsed();
        (model, loss)
    }

    /// The weights to evaluate and keep: the moving average when the run
    /// keeps one, else the model's own.
    pub fn kept(&self, model: &Network) -> Network {
        match &self.ema {
            Some(ema) => ema.average().clone(),
            None => model.valid(),
        }
    }
}

/// Where a stretch of training spent its time. On an asynchronous device
/// (CUDA) the phases only measure how long queueing took.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimes {
    /// Waiting for the next batch and moving it to the device.
    pub data_wait: Duration,
    /// Forward pass and loss.
    pub forward: Duration,
    /// Backward pass and gathering the gradients.
    pub backward: Duration,
    /// Optimizer step and weight average.
    pub optimizer: Duration,
}

impl PhaseTimes {
    /// The times so far, leaving zeros for the next stretch.
    pub fn take(&mut self) -> PhaseTimes {
        std::mem::take(self)
    }

    /// Report them as a debug event for `epoch` (1-based).
    pub fn log(&self, epoch: usize, steps: usize) {
        tracing::debug!(
            epoch,
            steps,
            data_wait_s = self.data_wait.as_secs_f64(),
            forward_s = self.forward.as_secs_f64(),
            backward_s = self.backward.as_secs_f64(),
            optimizer_s = self.optimizer.as_secs_f64(),
            "epoch phase times"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_returns_the_sums_and_starts_again_from_zero() {
        let mut times = PhaseTimes {
            data_wait: Duration::from_millis(5),
            forward: Duration::from_millis(7),
            ..PhaseTimes::default()
        };
        let taken = times.take();
        assert_eq!(taken.forward, Duration::from_millis(7));
        assert_eq!(taken.data_wait, Duration::from_millis(5));
        assert_eq!(times, PhaseTimes::default());
    }
}
