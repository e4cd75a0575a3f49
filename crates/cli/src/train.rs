//! `mnist train`: the notebook's training run by default, any model and
//! recipe by flags; with checkpoints, resume, progress and a full report.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mnist_data::{Batches, DataSplits, Normalizer, Split, epoch_order};
use mnist_metrics::{ConfusionMatrix, EpochPoint};
use mnist_model::Network;
use mnist_model::summary::TorchSummary;

use crate::checkpoint::{self, TrainState};
use crate::config::{DataArgs, Runtime, RuntimeArgs, TrainFlags, Validation};
use crate::evaluate::confusion;
use crate::interrupt;
use crate::output::outln;
use crate::progress::{Progress, ProgressFile, RunState};
use crate::report::{
    Metrics, RunInfo, ScoredOn, ValidationReport, now_rfc3339, print_report, write_files,
};
use crate::run_dir;
use crate::step::{self, TrainingStep};

/// `mnist train` arguments.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    train: TrainFlags,
    /// Run directory for checkpoints, weights and reports [default: runs/TIMESTAMP/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its last complete checkpoint, with its
    /// own settings and data directory (other flags are ignored, and named
    /// when given, except --epochs to extend it and --data-dir to read the
    /// data elsewhere).
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Keep the last N epochs' checkpoints and delete older ones (0 keeps
    /// every one); the newest, which a resume needs, is never deleted.
    #[arg(long, value_name = "N", default_value_t = 3)]
    keep_checkpoints: usize,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 600)]
    eval_batch_size: usize,
    /// Stop after the last epoch that fits in MINUTES of training (timed from
    /// the first step, evaluations included); the report covers the epochs
    /// done and `--resume RUN_DIR` continues the run later.
    #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
    time_limit: Option<f64>,
}

/// Where a run starts from.
struct Start {
    runtime: Runtime,
    state: TrainState,
    checkpoint: Option<PathBuf>,
    run_dir: RunDir,
}

/// The run directory: an existing run's, or one to create once the data loaded.
enum RunDir {
    Existing(PathBuf),
    New(Option<PathBuf>),
}

/// Flags a resumed run uses; every other flag given beside `--resume` is
/// ignored, and said to be.
const USED_ON_RESUME: [&str; 9] = [
    "resume",
    "epochs",
    "data_dir",
    "eval_batch_size",
    "time_limit",
    "keep_checkpoints",
    "verbose",
    "quiet",
    "log_format",
];

/// `given` are the flags on the command line (clap ids), to say which a
/// resume ignores.
pub fn run(args: TrainArgs, given: &[String]) -> Result<()> {
    if args.eval_batch_size == 0 {
        bail!("--eval-batch-size must be at least 1");
    }
    let time_limit = args.time_limit.map(minutes).transpose()?;
    let start = match &args.resume {
        Some(dir) => {
            warn_ignored(given);
            resume_point(dir, &args)?
        }
        None => fresh_start(&args)?,
    };
    let mut state = start.state;
    state.hyper.validate()?;
    let runtime = start.runtime;

    let dataset = state.dataset;
    let data_dir = match (&args.data.data_dir, &state.data_dir) {
        // A resumed run reads where it read before, unless told otherwise.
        (None, Some(recorded)) => recorded.clone(),
        _ => args.data.dir(dataset),
    };
    let loaded = Instant::now();
    let mut data = mnist_data::load(dataset, &data_dir)?;
    state.data_dir = Some(std::path::absolute(&data_dir).unwrap_or(data_dir.clone()));
    // Held out of all the training images first, so --train-limit never
    // changes which images validate.
    let val = match state.validation {
        Some(validation) => {
            let (rest, held) = validation.split(&data.train)?;
            data.train = rest;
            Some(held)
        }
        None => None,
    };
    if let Some(n) = state.train_limit {
        data.train = data.train.head(n);
    }
    if let Some(n) = state.test_limit {
        data.test = data.test.head(n);
    }
    if state.hyper.batch_size > data.train.len() {
        tracing::warn!(
            "--batch-size {} is larger than the {} training images: each epoch is one step of {}",
            state.hyper.batch_size,
            data.train.len(),
            data.train.len()
        );
    }
    let held_out = match (&val, state.validation) {
        (Some(val), Some(v)) => {
            format!(", {} held out for validation (seed {})", val.len(), v.seed)
        }
        _ => String::new(),
    };
    outln!(
        "Loaded {} ({} training{held_out}, {} test images) from {} in {:.2} s",
        dataset,
        data.train.len(),
        data.test.len(),
        data_dir.display(),
        loaded.elapsed().as_secs_f64()
    );

    let run_dir = match start.run_dir {
        RunDir::Existing(dir) => dir,
        RunDir::New(out) => run_dir::create(out.as_deref())?,
    };
    interrupt::running(&run_dir, state.hyper.epochs);
    let device = runtime.device.clone().autodiff();
    let (mut model, mut step) = step::set_up(&state.hyper, &device, state.ema_updates);
    if let Some(path) = &start.checkpoint {
        (model, step.optim) = checkpoint::restore(path, model, step.optim)?;
        if let Some(ema) = &mut step.ema {
            ema.set_average(checkpoint::restore_ema(path, model.valid())?);
        }
        outln!(
            "Resuming from {} (epoch {} done)",
            path.display(),
            state.epochs_done
        );
    }
    outln!(
        "Model {} ({} parameters): {}",
        model.kind(),
        mnist_model::parameter_count(&model),
        state.hyper.describe()
    );
    outln!(
        "Training on {} ({}), run directory {}",
        runtime.backend,
        runtime.spec,
        run_dir.display()
    );

    let trainer = Trainer {
        data: &data,
        val: val.as_ref(),
        runtime: &runtime,
        normalizer: Normalizer::new(dataset.mean(), dataset.std()),
        eval_batch_size: args.eval_batch_size,
        run_dir: &run_dir,
        time_limit,
        keep_checkpoints: args.keep_checkpoints,
    };
    let (model, last) = trainer.train(model, step, &mut state)?;
    trainer.finish(&model, last, &state)
}

/// Say which of the `given` flags a resume ignores.
fn warn_ignored(given: &[String]) {
    let ignored: Vec<String> = given
        .iter()
        .filter(|id| !USED_ON_RESUME.contains(&id.as_str()))
        .map(|id| format!("--{}", id.replace('_', "-")))
        .collect();
    if !ignored.is_empty() {
        tracing::warn!(
            "--resume continues the run with its own settings; ignoring {}",
            ignored.join(", ")
        );
    }
}

fn fresh_start(args: &TrainArgs) -> Result<Start> {
    let hyper = args.train.resolve();
    hyper.validate()?;
    args.data.validate_limits()?;
    let runtime = args.runtime.resolve()?;
    let dataset = args.data.dataset.unwrap_or_default();
    if let Some(out) = &args.out {
        run_dir::check_creatable(out)?;
    }
    Ok(Start {
        state: TrainState {
            epochs_done: 0,
            hyper,
            dataset,
            backend: runtime.backend,
            device: runtime.spec,
            train_limit: args.data.train_limit,
            test_limit: args.data.test_limit,
            data_dir: None,
            validation: args.data.validation(),
            recipe: Some(args.train.recipe),
            history: Vec::new(),
            train_seconds: 0.0,
            ema_updates: 0,
        },
        checkpoint: None,
        run_dir: RunDir::New(args.out.clone()),
        runtime,
    })
}

fn resume_point(dir: &Path, args: &TrainArgs) -> Result<Start> {
    run_dir::check_writable(dir)?;
    let Some((path, mut state)) = checkpoint::latest(dir)? else {
        if dir.join("model.safetensors").exists() {
            bail!(
                "{}: this run finished and its checkpoints were removed, so it cannot be continued \
                 or extended; train a new run (another --out) instead",
                dir.display()
            );
        }
        bail!(
            "{}: no complete checkpoint to resume from (the run stopped before its first epoch \
             ended); start it again with `mnist train --out {}` and its other flags",
            dir.display(),
            dir.display()
        );
    };
    // An explicit --epochs may extend a run; every other setting is the run's own.
    if let Some(epochs) = args.train.epochs {
        if epochs < state.epochs_done {
            bail!(
                "{}: --epochs {} is fewer than the {} epochs already done",
                dir.display(),
                epochs,
                state.epochs_done
            );
        }
        state.hyper.epochs = epochs;
    }
    if state.epochs_done >= state.hyper.epochs {
        bail!(
            "{}: the run already finished its {} epochs; extend it with \
             `mnist train --resume {} --epochs {}`",
            dir.display(),
            state.hyper.epochs,
            dir.display(),
            state.hyper.epochs + 1
        );
    }
    Ok(Start {
        runtime: Runtime::new(state.backend, state.device, "the run's state")?,
        state,
        checkpoint: Some(path),
        run_dir: RunDir::Existing(dir.to_path_buf()),
    })
}

struct Trainer<'a> {
    data: &'a DataSplits,
    /// The validation split, when the run holds one out.
    val: Option<&'a Split>,
    runtime: &'a Runtime,
    normalizer: Normalizer,
    eval_batch_size: usize,
    run_dir: &'a Path,
    time_limit: Option<Duration>,
    keep_checkpoints: usize,
}

/// The test-set evaluation after an epoch, with its duration in seconds.
struct Evaluation {
    matrix: ConfusionMatrix,
    seconds: f64,
}

impl Trainer<'_> {
    /// Train the remaining epochs; return the model to keep (the weights'
    /// moving average when the run keeps one) and its evaluation after the
    /// last epoch (the final report reuses it).
    fn train(
        &self,
        mut model: Network,
        mut step: TrainingStep,
        state: &mut TrainState,
    ) -> Result<(Network, Evaluation)> {
        let mut last = None;
        let hyper = state.hyper.clone();
        let train = &self.data.train;
        let steps = Batches::count(train.len(), hyper.batch_size);
        let schedule = hyper.run_schedule(steps);
        let device = self.runtime.device.clone().autodiff();
        let augmentation = hyper.augment.augmentation();
        // The notebook prints four times an epoch.
        let log_every = (steps / 4).max(1);
        let first_epoch = state.epochs_done;
        let session = Instant::now();
        let mut progress = ProgressFile::new(self.run_dir);
        let at = |state: &TrainState, run: RunState, epoch: usize, step: usize, loss| Progress {
            state: run,
            epoch,
            epochs: hyper.epochs,
            step,
            steps,
            loss,
            history: state.history.clone(),
            updated: now_rfc3339(),
        };

        for epoch in first_epoch..hyper.epochs {
            // Dropout draws from the device RNG: seed it per epoch so a
            // resumed run draws what an uninterrupted one would.
            device.seed(
                hyper
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(epoch as u64),
            );
            let bar = progress_bar(steps as u64, epoch + 1, hyper.epochs);
            let started = Instant::now();
            let mut loss_sum = 0.0;
            let order = epoch_order(train.len(), hyper.seed, epoch);
            let batches = Batches::new(train, order, hyper.batch_size, self.normalizer.clone())
                .augmented(augmentation, hyper.seed, epoch);
            // Two batches ahead keep the device fed while the host augments.
            model = batches.prefetch(2, |batches| -> Result<Network> {
                let mut model = model;
                let mut waiting = Instant::now();
                for (index, batch) in batches.enumerate() {
                    let lr = schedule.lr(epoch, index);
                    let batch = batch.to_device(&device);
                    step.times.data_wait += waiting.elapsed();
                    let loss;
                    (model, loss) = step.step(model, batch.images, batch.targets, lr);
                    // Read the loss only once the whole step is queued: on an
                    // asynchronous device (CUDA) the read waits for the device,
                    // and reading before `backward` kept the host from queueing
                    // the rest of the step while the forward pass ran. A
                    // diverged step is still caught at once; its update is
                    // never saved (checkpoints are whole epochs).
                    let loss_value = f64::from(loss.into_scalar::<f32>());
                    if !loss_value.is_finite() {
                        progress.write(&at(state, RunState::Stopped, epoch + 1, index + 1, None));
                        bail!(self.diverged(epoch, index, loss_value, lr, state));
                    }
                    progress.step(|| {
                        at(
                            state,
                            RunState::Training,
                            epoch + 1,
                            index + 1,
                            Some(loss_value),
                        )
                    });
                    loss_sum += loss_value;
                    bar.inc(1);
                    if (index + 1) % log_every == 0 {
                        bar.suspend(|| {
                            outln!(
                                "Epoch [{}/{}], Step [{}/{}], Loss: {:.6}",
                                epoch + 1,
                                hyper.epochs,
                                index + 1,
                                steps,
                                loss_value
                            )
                        });
                    }
                    waiting = Instant::now();
                }
                Ok(model)
            })?;
            step.times.take().log(epoch + 1, steps);
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            state.train_seconds += seconds;

            let eval_started = Instant::now();
            let kept = step.kept(&model);
            let matrix = confusion(
                &kept,
                &self.data.test,
                self.eval_batch_size,
                &self.normalizer,
                &self.runtime.device,
            );
            let val_accuracy = self.val.map(|val| {
                confusion(
                    &kept,
                    val,
                    self.eval_batch_size,
                    &self.normalizer,
                    &self.runtime.device,
                )
                .accuracy()
            });
            let eval_seconds = eval_started.elapsed().as_secs_f64();
            let point = EpochPoint {
                epoch: epoch + 1,
                train_loss: loss_sum / steps as f64,
                test_accuracy: matrix.accuracy(),
                val_accuracy,
            };
            if let Some(accuracy) = val_accuracy {
                self.keep_if_best(&kept, accuracy, &state.history)?;
            }
            outln!(
                "Epoch {}/{} done: mean train loss {:.4}, {}test accuracy {:.2}%{}, {:.0} images/s ({:.1} s, lr {:.6}, eval {:.1} s)",
                epoch + 1,
                hyper.epochs,
                point.train_loss,
                val_accuracy.map_or(String::new(), |a| format!(
                    "validation accuracy {:.2}%, ",
                    100.0 * a
                )),
                100.0 * point.test_accuracy,
                if step.ema.is_some() {
                    " (weight average)"
                } else {
                    ""
                },
                train.len() as f64 / seconds,
                seconds,
                schedule.lr(epoch, steps.saturating_sub(1)),
                eval_seconds
            );
            last = Some((
                kept,
                Evaluation {
                    matrix,
                    seconds: eval_seconds,
                },
            ));
            state.history.push(point);
            state.epochs_done = epoch + 1;
            state.ema_updates = step.ema.as_ref().map_or(0, |e| e.updates());
            checkpoint::save(
                self.run_dir,
                &model,
                &step.optim,
                step.ema.as_ref().map(|e| e.average()),
                state,
            )?;
            checkpoint::prune(self.run_dir, self.keep_checkpoints)?;
            progress.write(&at(
                state,
                RunState::Training,
                epoch + 1,
                steps,
                Some(point.train_loss),
            ));
            let epochs_run = epoch + 1 - first_epoch;
            if let Some(limit) = self.time_limit
                && epoch + 1 < hyper.epochs
                && !another_epoch_fits(session.elapsed(), epochs_run, limit)
            {
                outln!(
                    "Stopping after epoch {} of {}: another epoch would pass --time-limit {} min. \
                     Continue with: mnist train --resume {}",
                    epoch + 1,
                    hyper.epochs,
                    limit.as_secs_f64() / 60.0,
                    self.run_dir.display()
                );
                break;
            }
        }
        // Fresh runs have epochs >= 1 and finished runs are refused on resume.
        last.context("no epoch was left to train")
    }

    /// Save `kept` as the best weights on the validation split when
    /// `accuracy` beats every earlier epoch's (the first best is kept on ties).
    fn keep_if_best(&self, kept: &Network, accuracy: f64, earlier: &[EpochPoint]) -> Result<()> {
        let best_before = earlier
            .iter()
            .filter_map(|p| p.val_accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        if accuracy > best_before {
            kept.save_trained_on(&self.run_dir.join(BEST_VAL_WEIGHTS), self.data.dataset)?;
        }
        Ok(())
    }

    /// The message for a loss that is NaN or infinite.
    fn diverged(
        &self,
        epoch: usize,
        step: usize,
        loss: f64,
        lr: f64,
        state: &TrainState,
    ) -> String {
        let kept = match state.epochs_done {
            0 => "no checkpoint was written yet".to_string(),
            n => format!(
                "the last good checkpoint, after epoch {n}, is kept in {}",
                self.run_dir.join("checkpoints").display()
            ),
        };
        format!(
            "training diverged: the loss is {loss} at epoch {}, step {}; the learning rate ({lr}) is probably too \
             high, try --lr {}; {kept}",
            epoch + 1,
            step + 1,
            state.hyper.lr / 10.0
        )
    }

    /// Print the notebook's report for the final model and write the files.
    fn finish(&self, inference: &Network, last: Evaluation, state: &TrainState) -> Result<()> {
        let Evaluation {
            matrix,
            seconds: eval_seconds,
        } = last;
        let names = self.data.dataset.class_names();
        let metrics = Metrics::new(
            &matrix,
            RunInfo {
                train_images: self.data.train.len(),
                epochs: state.epochs_done,
                train_seconds: state.train_seconds,
                eval_seconds,
                backend: self.runtime.backend,
                device: self.runtime.spec,
                dataset: self.data.dataset,
                model: inference.kind().to_string(),
                parameters: mnist_model::parameter_count(inference),
                recipe: state.recipe,
                finished: now_rfc3339(),
                scored_on: ScoredOn::Test,
                tta: false,
                validation: validation_report(state.validation, &state.history),
                hyper_parameters: Some(state.hyper.clone()),
                weights: Vec::new(),
                member_accuracies: Vec::new(),
                history: state.history.clone(),
                class_names: names.iter().map(|s| s.to_string()).collect(),
            },
        );
        outln!(
            "\nTrained {} epochs in {:.1} s ({:.0} images/s); evaluated {} images in {:.2} s ({:.0} images/s)",
            state.epochs_done,
            state.train_seconds,
            (self.data.train.len() * state.epochs_done) as f64 / state.train_seconds.max(1e-9),
            matrix.total(),
            eval_seconds,
            matrix.total() as f64 / eval_seconds.max(1e-9)
        );
        print_report(&inference.torch_summary(), &metrics, &matrix, &names);
        if let Some(v) = &metrics.run.validation {
            outln!(
                "Validation ({} training images held out, seed {}): {:.2}% after the last epoch; \
                 best {:.2}% after epoch {} (test {:.2}% there), weights in {}",
                v.images,
                v.seed,
                100.0 * v.final_accuracy,
                100.0 * v.best_accuracy,
                v.best_epoch,
                100.0 * v.test_accuracy_at_best,
                self.run_dir.join(&v.best_weights).display()
            );
        }
        let weights = self.run_dir.join("model.safetensors");
        inference.save_trained_on(&weights, self.data.dataset)?;
        let mut written = vec![weights];
        written.extend(write_files(self.run_dir, &metrics, &matrix, &names)?);
        for path in written {
            outln!("Wrote {}", path.display());
        }
        // A run cut short by --time-limit is reported, and resumable.
        let run = if state.epochs_done < state.hyper.epochs {
            RunState::Stopped
        } else {
            RunState::Finished
        };
        ProgressFile::new(self.run_dir).write(&Progress {
            state: run,
            epoch: state.epochs_done,
            epochs: state.hyper.epochs,
            step: 0,
            steps: 0,
            loss: state.history.last().map(|p| p.train_loss),
            history: state.history.clone(),
            updated: now_rfc3339(),
        });
        Ok(())
    }
}

/// The weights of the epoch with the best validation accuracy.
const BEST_VAL_WEIGHTS: &str = "best-val.safetensors";

/// What the validation split chose, for `metrics.json` and the report.
fn validation_report(
    validation: Option<Validation>,
    history: &[EpochPoint],
) -> Option<ValidationReport> {
    let validation = validation?;
    let scored: Vec<(&EpochPoint, f64)> = history
        .iter()
        .filter_map(|p| p.val_accuracy.map(|a| (p, a)))
        .collect();
    let &(_, final_accuracy) = scored.last()?;
    // The first epoch of the best accuracy.
    let mut best = scored[0];
    for &(point, accuracy) in &scored {
        if accuracy > best.1 {
            best = (point, accuracy);
        }
    }
    let (best, best_accuracy) = best;
    Some(ValidationReport {
        images: validation.images,
        seed: validation.seed,
        final_accuracy,
        best_epoch: best.epoch,
        best_accuracy,
        test_accuracy_at_best: best.test_accuracy,
        best_weights: BEST_VAL_WEIGHTS.into(),
    })
}

/// `--time-limit` in minutes as a duration; refuses what no clock can mean,
/// and 0, which leaves no time for the epoch a run always trains.
fn minutes(value: f64) -> Result<Duration> {
    if !value.is_finite() || value <= 0.0 {
        bail!("--time-limit must be a positive number of minutes (got {value})");
    }
    Duration::try_from_secs_f64(value * 60.0)
        .with_context(|| format!("--time-limit {value} is too large"))
}

/// Whether one more epoch, as long as the mean of the `epochs_run` so far,
/// still ends within `limit`.
fn another_epoch_fits(elapsed: Duration, epochs_run: usize, limit: Duration) -> bool {
    let mean = elapsed / epochs_run.max(1) as u32;
    elapsed + mean <= limit
}

fn progress_bar(steps: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(steps).with_style(
        ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} [{{bar:40}}] {{pos}}/{{len}} steps {{per_sec}} eta {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_epoch_fits_only_while_the_mean_epoch_still_ends_in_time() {
        let s = Duration::from_secs;
        // Two 30 s epochs done: the next would end at 90 s.
        assert!(another_epoch_fits(s(60), 2, s(90)));
        assert!(!another_epoch_fits(s(60), 2, s(89)));
        // One slow epoch: judged by its own length.
        assert!(!another_epoch_fits(s(50), 1, s(99)));
        assert!(another_epoch_fits(s(50), 1, s(100)));
        // A zero limit stops after the first epoch.
        assert!(!another_epoch_fits(
            Duration::from_millis(1),
            1,
            Duration::ZERO
        ));
    }

    #[test]
    fn time_limits_must_be_minutes_a_clock_can_count() {
        assert_eq!(minutes(1.5).unwrap(), Duration::from_secs(90));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            let message = minutes(bad).unwrap_err().to_string();
            assert!(message.contains("--time-limit"), "{message}");
        }
    }
}
