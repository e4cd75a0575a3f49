//! Learning-rate schedules: the notebook's per-epoch `ExponentialLR`, and
//! one-cycle, cosine with warm-up and constant rates for the other recipes.

/// Which schedule a run uses (`--schedule`); [`LrSchedule`] adds its
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ScheduleKind {
    /// `ExponentialLR` stepped once per epoch (the notebook's).
    #[serde(rename = "exponential")]
    #[cfg_attr(feature = "clap", value(name = "exponential"))]
    Exponential,
    /// PyTorch's `OneCycleLR`, stepped per batch.
    #[serde(rename = "one-cycle")]
    #[cfg_attr(feature = "clap", value(name = "one-cycle"))]
    OneCycle,
    /// Cosine decay to 0 after a linear warm-up.
    #[serde(rename = "cosine")]
    #[cfg_attr(feature = "clap", value(name = "cosine"))]
    Cosine,
    /// The same rate throughout.
    #[serde(rename = "constant")]
    #[cfg_attr(feature = "clap", value(name = "constant"))]
    Constant,
}

impl ScheduleKind {
    /// Every schedule.
    pub const ALL: [ScheduleKind; 4] = [
        ScheduleKind::Exponential,
        ScheduleKind::OneCycle,
        ScheduleKind::Cosine,
        ScheduleKind::Constant,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Exponential => "exponential",
            ScheduleKind::OneCycle => "one-cycle",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Constant => "constant",
        }
    }
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How the learning rate moves over a run, step by step.
///
/// Every variant is a pure function of the step, so resuming needs only
/// the step count (epoch × steps per epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// `ExponentialLR` stepped per epoch (the notebook's).
    Exponential {
        /// Decay per epoch.
        gamma: f64,
    },
    /// PyTorch's `OneCycleLR` (cosine annealing, stepped per batch): from
    /// `max/25` up to `max` over the first 30% of steps, then down to
    /// `max/25/10⁴`.
    OneCycle,
    /// Cosine decay from the rate to 0 over the run, after a linear warm-up.
    Cosine {
        /// Steps of linear warm-up from 0.
        warmup_steps: usize,
    },
}

/// The schedule of one run: base rate, shape and length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSchedule {
    /// The base (or, for one-cycle, peak) learning rate.
    pub lr: f64,
    /// The shape.
    pub schedule: LrSchedule,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
}

/// `OneCycleLR` defaults.
const ONE_CYCLE_PCT_START: f64 = 0.3;
const ONE_CYCLE_DIV_FACTOR: f64 = 25.0;
const ONE_CYCLE_FINAL_DIV_FACTOR: f64 = 1e4;

impl RunSchedule {
    /// The rate of step `step_in_epoch` (0-based) of epoch `epoch` (0-based).
    pub fn lr(&self, epoch: usize, step_in_epoch: usize) -> f64 {
        let step = epoch * self.steps_per_epoch + step_in_epoch;
        let total = (self.steps_per_epoch * self.epochs).max(1);
        match self.schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Exponential { gamma } => exponential(self.lr, gamma, epoch),
            LrSchedule::OneCycle => one_cycle(self.lr, step, total),
            LrSchedule::Cosine { warmup_steps } => {
                if step < warmup_steps {
                    self.lr * (step + 1) as f64 / warmup_steps as f64
                } else {
                    let span = total.saturating_sub(warmup_steps).max(1);
                    let progress = (step - warmup_steps) as f64 / span as f64;
                    self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// PyTorch's `ExponentialLR` stepped once per epoch: epoch `epoch` trains at
/// `lr · gamma^epoch`, with `gamma` multiplied in once per epoch as PyTorch
/// does, so the rates agree with PyTorch's to the last bit.
fn exponential(lr: f64, gamma: f64, epoch: usize) -> f64 {
    (0..epoch).fold(lr, |lr, _| lr * gamma)
}

/// `OneCycleLR(max_lr, total_steps)` at step `step`, as PyTorch computes it
/// (`three_phase=False`, cosine annealing).
fn one_cycle(max_lr: f64, step: usize, total: usize) -> f64 {
    let initial = max_lr / ONE_CYCLE_DIV_FACTOR;
    let min = initial / ONE_CYCLE_FINAL_DIV_FACTOR;
    let warm_end = ONE_CYCLE_PCT_START * total as f64 - 1.0;
    let last = total as f64 - 1.0;
    let step = step as f64;
    let cos_anneal = |start: f64, end: f64, pct: f64| {
        end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
    };
    if step <= warm_end {
        cos_anneal(initial, max_lr, step / warm_end)
    } else {
        cos_anneal(max_lr, min, (step - warm_end) / (last - warm_end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(schedule: LrSchedule) -> RunSchedule {
        RunSchedule {
            lr: 0.01,
            schedule,
            steps_per_epoch: 10,
            epochs: 10,
        }
    }

    #[test]
    fn exponential_decays_once_per_epoch_like_pytorch() {
        let s = run(LrSchedule::Exponential { gamma: 0.9 });
        assert_eq!(s.lr(0, 9), 0.01);
        // PyTorch's chained form gives 0.01 * 0.9 = 0.009000000000000001.
        assert_eq!(s.lr(1, 0), 0.01 * 0.9);
        assert_eq!(s.lr(2, 5), 0.01 * 0.9 * 0.9);
    }

    #[test]
    fn schedule_names_are_the_same_everywhere() {
        for kind in ScheduleKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<ScheduleKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn one_cycle_matches_pytorch() {
        // torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=100):
        // step 0: 0.0004, step 29 (end of warm-up): 0.01, step 99: 4e-08,
        // step 50: 0.008627...
        let s = run(LrSchedule::OneCycle);
        assert!((s.lr(0, 0) - 0.0004).abs() < 1e-15);
        assert!((s.lr(2, 9) - 0.01).abs() < 1e-15);
        assert!((s.lr(9, 9) - 4e-8).abs() < 1e-15);
        let mid = s.lr(5, 0);
        let expected =
            4e-8 + (0.01 - 4e-8) / 2.0 * ((std::f64::consts::PI * 21.0 / 70.0).cos() + 1.0);
        assert!((mid - expected).abs() < 1e-15, "{mid}");
        // Rises, then falls.
        assert!(s.lr(1, 0) > s.lr(0, 0) && s.lr(6, 0) > s.lr(8, 0));
    }

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = run(LrSchedule::Cosine { warmup_steps: 10 });
        assert!((s.lr(0, 0) - 0.001).abs() < 1e-15);
        assert!((s.lr(0, 9) - 0.01).abs() < 1e-15);
        assert!((s.lr(1, 0) - 0.01).abs() < 1e-15);
        assert!(s.lr(9, 9) < 1e-5);
        assert_eq!(run(LrSchedule::Constant).lr(7, 3), 0.01);
    }
}
