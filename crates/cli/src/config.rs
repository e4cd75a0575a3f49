//! Command-line arguments and the training configuration they make.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::Device;
use clap::Args;
use mnist_data::Dataset;
use mnist_model::{BackendKind, DeviceSpec, ModelKind, Network};
use mnist_optim::{LrSchedule, OptimizerKind, RunSchedule, ScheduleKind};
use serde::{Deserialize, Serialize};

/// Where to compute.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// The backend [default: the fastest CPU backend compiled in].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// cpu, cuda:N or mps (cuda and mps need --backend tch).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// A backend, resolved and checked.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The backend.
    pub backend: BackendKind,
    /// The device on it.
    pub spec: DeviceSpec,
    /// The Burn device (without autodiff).
    pub device: Device,
}

impl RuntimeArgs {
    /// Resolve the flags into a device, or say why not.
    pub fn resolve(&self) -> Result<Runtime> {
        match self.backend {
            Some(backend) => Runtime::new(backend, self.device, "--backend"),
            None => {
                let backend = BackendKind::default_cpu().context(
                    "this binary has no backend compiled in; rebuild with --features flex",
                )?;
                Runtime::new(backend, self.device, "default")
            }
        }
    }
}

impl Runtime {
    /// The device `spec` on `backend`, or why not; `chosen_by` says in the
    /// diagnostics what picked the backend.
    pub fn new(backend: BackendKind, spec: DeviceSpec, chosen_by: &str) -> Result<Runtime> {
        let device = backend.device(spec)?;
        tracing::info!(%backend, device = %spec, chosen_by, "backend");
        Ok(Runtime {
            backend,
            spec,
            device,
        })
    }
}

/// Which data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// The dataset [default: mnist; for eval, the one the weights record].
    #[arg(long, value_enum)]
    pub dataset: Option<Dataset>,
    /// Directory holding the dataset's .gz files [default: $MNIST_DATA_DIR, else data/DATASET/].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use only the first N training images (quick runs and tests).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images (quick runs and tests).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Hold out N training images, never trained on, as a validation split
    /// for every choice (best epoch, ensemble members, TTA); the test set is
    /// then only reported. For eval: score that split instead of the test set.
    #[arg(long, value_name = "N")]
    pub val: Option<usize>,
    /// Which images --val holds out; the same for every --seed, so an
    /// ensemble's members all leave out the same ones.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub val_seed: u64,
}

/// A validation split held out of the training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Images held out.
    pub images: usize,
    /// The seed that chose them.
    pub seed: u64,
}

impl Validation {
    /// Split `train` into what trains and what validates, or say why not.
    pub fn split(
        self,
        train: &mnist_data::Split,
    ) -> Result<(mnist_data::Split, mnist_data::Split)> {
        if self.images >= train.len() {
            bail!(
                "--val {} holds out every one of the {} training images; give fewer",
                self.images,
                train.len()
            );
        }
        Ok(train.hold_out(self.images, self.seed))
    }
}

impl DataArgs {
    /// Refuse limits that leave nothing to train on or to score.
    pub fn validate_limits(&self) -> Result<()> {
        for (flag, limit) in [
            ("--train-limit", self.train_limit),
            ("--test-limit", self.test_limit),
            ("--val", self.val),
        ] {
            if limit == Some(0) {
                bail!("{flag} 0 leaves no images; give at least 1, or leave it out for all");
            }
        }
        Ok(())
    }

    /// The validation split the flags ask for.
    pub fn validation(&self) -> Option<Validation> {
        self.val.map(|images| Validation {
            images,
            seed: self.val_seed,
        })
    }

    /// The directory to read, by flag, environment, then workspace default.
    pub fn dir(&self, dataset: Dataset) -> PathBuf {
        let env = std::env::var_os("MNIST_DATA_DIR").map(PathBuf::from);
        mnist_data::resolve_data_dir(
            self.data_dir.as_deref(),
            env.as_deref(),
            &workspace_root(),
            dataset,
        )
    }
}

/// Load every weights file (checking each before any data is read) and the
/// dataset they are to be used with (see [`dataset_for_weights`]).
pub fn load_models(
    weights: &[PathBuf],
    dataset: Option<Dataset>,
    device: &Device,
) -> Result<(Vec<Network>, Dataset)> {
    let loaded = weights
        .iter()
        .map(|path| Network::load_recorded(path, device))
        .collect::<Result<Vec<_>, _>>()?;
    let recorded: Vec<_> = weights
        .iter()
        .zip(&loaded)
        .map(|(path, l)| (path.as_path(), l.dataset))
        .collect();
    let dataset = dataset_for_weights(dataset, &recorded)?;
    Ok((loaded.into_iter().map(|l| l.network).collect(), dataset))
}

/// The dataset to evaluate or classify with `weights`: what they record
/// (all the same for an ensemble), which `--dataset` may repeat but not
/// contradict; `--dataset`, then MNIST, for files that record none.
pub fn dataset_for_weights(
    flag: Option<Dataset>,
    weights: &[(&Path, Option<Dataset>)],
) -> Result<Dataset> {
    let mut recorded = weights.iter().filter_map(|(path, d)| d.map(|d| (*path, d)));
    let Some((first_path, first)) = recorded.next() else {
        return Ok(flag.unwrap_or_default());
    };
    if let Some((path, other)) = recorded.find(|(_, d)| *d != first) {
        bail!(
            "{} was trained on {first} but {} on {other}; an ensemble's members must share a dataset",
            first_path.display(),
            path.display()
        );
    }
    match flag {
        Some(asked) if asked != first => bail!(
            "{} was trained on {first}, but --dataset {asked} was asked for; its answers would \
             be names of the wrong classes. Leave out --dataset (it defaults to the weights' own)",
            first_path.display()
        ),
        _ => Ok(first),
    }
}

/// The workspace root when run from a checkout, else the current directory.
pub fn workspace_root() -> PathBuf {
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match built_in.canonicalize() {
        Ok(root) if root.join("Cargo.toml").is_file() => root,
        _ => PathBuf::from("."),
    }
}

/// A run's full training configuration, as stored in its checkpoints.
/// The default is the notebook's run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HyperParams {
    /// Network.
    pub model: ModelKind,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Base (for one-cycle: peak) learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Weight decay (decoupled for radam and adamw, L2 for adam).
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: ScheduleKind,
    /// Decay per epoch of the exponential schedule.
    pub gamma: f64,
    /// Epochs of linear warm-up (cosine schedule).
    pub warmup_epochs: f64,
    /// Label smoothing of the cross-entropy loss (0: none).
    pub label_smoothing: f64,
    /// Decay of the weights' moving average (0: no averaging).
    pub ema_decay: f64,
    /// Dropout probability of every dropout layer (`None`: the model's own).
    pub dropout: Option<f64>,
    /// Augmentation of training images.
    pub augment: AugmentParams,
    /// Seed of the initial weights, shuffling, augmentation and dropout.
    pub seed: u64,
}

/// Augmentation settings, as stored; see [`mnist_data::Augmentation`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct AugmentParams {
    /// ± degrees of rotation.
    pub rotate: f32,
    /// ± pixels of shift.
    pub translate: f32,
    /// ± fraction of scale.
    pub scale: f32,
    /// Up to this fraction narrower.
    pub squeeze: f32,
    /// Probability of erasing a rectangle.
    pub erase: f32,
    /// Probability of mirroring left to right.
    pub flip: f32,
    /// Whose draws: the ranges above, or the HVC paper's own pipeline.
    pub policy: AugmentPolicy,
}

/// How training images are augmented (`--augment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentPolicy {
    /// Uniform draws from --rotate, --translate, --scale, --squeeze, --erase, --flip.
    #[default]
    Ranges,
    /// The HVC paper authors' pipeline: rotation ~N(0, 10°) on half the
    /// images, shifts within the digit's margins, a 1–7 px width squeeze and
    /// one 4×4 erased patch (docs/models.md); takes no range flags.
    HvcPaper,
}

impl AugmentParams {
    /// The data crate's augmentation.
    pub fn augmentation(&self) -> mnist_data::Augment {
        match self.policy {
            AugmentPolicy::Ranges => self.ranges().into(),
            AugmentPolicy::HvcPaper => mnist_data::Augment::HvcPaper,
        }
    }

    /// The range flags' values.
    fn ranges(&self) -> mnist_data::Augmentation {
        mnist_data::Augmentation {
            rotation_degrees: self.rotate,
            translate_pixels: self.translate,
            scale: self.scale,
            width_squeeze: self.squeeze,
            erase_probability: self.erase,
            flip_probability: self.flip,
        }
    }

    /// Say which setting is out of range or does not fit the policy.
    fn validate(&self) -> Result<()> {
        let ranges = self.ranges();
        match self.policy {
            AugmentPolicy::Ranges => ranges.validate().map_err(|e| {
                anyhow::anyhow!(
                    "{e} (see --rotate, --translate, --scale, --squeeze, --erase, --flip)"
                )
            }),
            AugmentPolicy::HvcPaper if !ranges.is_identity() => bail!(
                "--augment hvc-paper draws its own rotation, shift, squeeze and erasing; \
                 leave out --rotate, --translate, --scale, --squeeze, --erase and --flip"
            ),
            AugmentPolicy::HvcPaper => Ok(()),
        }
    }

    /// How the report names it: the ranges, or the policy.
    pub fn describe(&self) -> Option<String> {
        match self.policy {
            AugmentPolicy::HvcPaper => Some("hvc-paper".into()),
            AugmentPolicy::Ranges if self.ranges().is_identity() => None,
            AugmentPolicy::Ranges => {
                // Named only when used, so reports of runs without it read
                // as they always have.
                let flip = if self.flip > 0.0 {
                    format!(", flip={}", self.flip)
                } else {
                    String::new()
                };
                Some(format!(
                    "(rotate=±{}°, translate=±{}px, scale=±{}, squeeze={}, erase={}{flip})",
                    self.rotate, self.translate, self.scale, self.squeeze, self.erase
                ))
            }
        }
    }
}

/// The notebook's values.
impl Default for HyperParams {
    fn default() -> Self {
        Recipe::Notebook.hyper_params()
    }
}

/// Named sets of defaults for `--recipe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// The notebook: seed CNN, RAdam 0.0015, ExponentialLR 0.9, batch 600, 5 epochs.
    #[default]
    Notebook,
    /// seed-plus with augmentation, AdamW, one-cycle, label smoothing, 15 epochs.
    SeedPlus,
    /// The HVC paper's: Adam 1e-3 ×0.98 per epoch, batch 120, weight EMA 0.999,
    /// augmentation with erasing, 300 epochs (a GPU run).
    Hvc,
    /// The Kaggle-style CNN with seed-plus's training: AdamW, one-cycle,
    /// label smoothing, augmentation, 20 epochs.
    Kaggle,
}

impl Recipe {
    /// The recipe's full configuration.
    pub fn hyper_params(self) -> HyperParams {
        let notebook = HyperParams {
            model: ModelKind::Seed,
            epochs: 5,
            batch_size: 600,
            lr: 0.0015,
            optimizer: OptimizerKind::RAdam,
            weight_decay: 1e-4,
            schedule: ScheduleKind::Exponential,
            gamma: 0.9,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            ema_decay: 0.0,
            dropout: None,
            augment: AugmentParams::default(),
            seed: 0,
        };
        match self {
            Recipe::Notebook => notebook,
            Recipe::SeedPlus => HyperParams {
                model: ModelKind::SeedPlus,
                epochs: 15,
                batch_size: 128,
                lr: 0.003,
                optimizer: OptimizerKind::AdamW,
                weight_decay: 0.01,
                schedule: ScheduleKind::OneCycle,
                label_smoothing: 0.05,
                augment: AugmentParams {
                    rotate: 12.0,
                    translate: 2.5,
                    scale: 0.1,
                    squeeze: 0.0,
                    erase: 0.0,
                    flip: 0.0,
                    policy: AugmentPolicy::Ranges,
                },
                ..notebook
            },
            Recipe::Kaggle => HyperParams {
                model: ModelKind::Kaggle,
                // Five times seed-plus's arithmetic per image, so fewer
                // epochs than its long runs; the length docs/results.md
                // measures against 10.
                epochs: 20,
                ..Recipe::SeedPlus.hyper_params()
            },
            Recipe::Hvc => HyperParams {
                model: ModelKind::Hvc,
                epochs: 300,
                batch_size: 120,
                lr: 0.001,
                optimizer: OptimizerKind::Adam,
                weight_decay: 0.0,
                schedule: ScheduleKind::Exponential,
                gamma: 0.98,
                ema_decay: 0.999,
                augment: AugmentParams {
                    rotate: 15.0,
                    translate: 2.0,
                    scale: 0.0,
                    squeeze: 0.2,
                    erase: 0.5,
                    flip: 0.0,
                    policy: AugmentPolicy::Ranges,
                },
                ..notebook
            },
        }
    }
}

/// `mnist train`'s training flags: a recipe, and any of its values overridden.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainFlags {
    /// Defaults for everything below: notebook, seed-plus, hvc or kaggle.
    #[arg(long, value_enum, default_value_t = Recipe::Notebook)]
    pub recipe: Recipe,
    /// Network [default: the recipe's; notebook: seed].
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Passes over the training set [notebook: 5].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per training step [notebook: 600].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base learning rate; the peak for one-cycle [notebook: 0.0015].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Optimizer [notebook: radam].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Weight decay, decoupled for radam and adamw [notebook: 1e-4].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule [notebook: exponential].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Learning-rate decay per epoch of the exponential schedule [notebook: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// Epochs of linear warm-up for the cosine schedule [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub warmup_epochs: Option<f64>,
    /// Label smoothing of the loss, 0 to 1 [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub label_smoothing: Option<f64>,
    /// Moving average of the weights, e.g. 0.999; evaluated and saved instead
    /// of the raw weights [notebook: 0, off].
    #[arg(long, allow_negative_numbers = true)]
    pub ema: Option<f64>,
    /// Dropout probability of the model's dropout layers, 0 to 1 (seed-plus
    /// and kaggle only) [default: the model's own: seed-plus 0.3, kaggle 0.4].
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    /// Augmentation: ± degrees of random rotation [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub rotate: Option<f32>,
    /// Augmentation: ± pixels of random shift [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub translate: Option<f32>,
    /// Augmentation: ± fraction of random scale, e.g. 0.1 [notebook: 0].
    #[arg(long = "scale", allow_negative_numbers = true)]
    pub scale: Option<f32>,
    /// Augmentation: up to this fraction narrower, e.g. 0.2 [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub squeeze: Option<f32>,
    /// Augmentation: probability of erasing a random rectangle [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub erase: Option<f32>,
    /// Augmentation: probability of mirroring left to right, for clothing,
    /// not digits [notebook: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub flip: Option<f32>,
    /// Augmentation policy: `ranges` draws from the six flags above;
    /// `hvc-paper` is the HVC authors' own pipeline and replaces them
    /// [default: ranges].
    #[arg(long, value_enum)]
    pub augment: Option<AugmentPolicy>,
    /// Seed of weights, shuffling, augmentation and dropout, 0 to
    /// 18446744073709551615 [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<u64>,
}

/// A `--seed`: a whole number from 0 to `u64::MAX`, said so when not.
fn parse_seed(value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| {
        format!(
            "`{value}` is not a seed: use a whole number from 0 to {}",
            u64::MAX
        )
    })
}

impl TrainFlags {
    /// The recipe's configuration with every given flag applied.
    pub fn resolve(&self) -> HyperParams {
        let mut h = self.recipe.hyper_params();
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *target = v.clone();
            }
        }
        set(&mut h.model, &self.model);
        set(&mut h.epochs, &self.epochs);
        set(&mut h.batch_size, &self.batch_size);
        set(&mut h.lr, &self.lr);
        set(&mut h.optimizer, &self.optimizer);
        set(&mut h.weight_decay, &self.weight_decay);
        set(&mut h.schedule, &self.schedule);
        set(&mut h.gamma, &self.gamma);
        set(&mut h.warmup_epochs, &self.warmup_epochs);
        set(&mut h.label_smoothing, &self.label_smoothing);
        set(&mut h.ema_decay, &self.ema);
        h.dropout = self.dropout.or(h.dropout);
        match self.augment {
            None => {}
            Some(AugmentPolicy::Ranges) => h.augment.policy = AugmentPolicy::Ranges,
            // The authors' pipeline replaces the recipe's ranges; range flags
            // given beside it are then refused by `validate`.
            Some(AugmentPolicy::HvcPaper) => {
                h.augment = AugmentParams {
                    policy: AugmentPolicy::HvcPaper,
                    ..AugmentParams::default()
                }
            }
        }
        set(&mut h.augment.rotate, &self.rotate);
        set(&mut h.augment.translate, &self.translate);
        set(&mut h.augment.scale, &self.scale);
        set(&mut h.augment.squeeze, &self.squeeze);
        set(&mut h.augment.erase, &self.erase);
        set(&mut h.augment.flip, &self.flip);
        set(&mut h.seed, &self.seed);
        h
    }
}

impl HyperParams {
    /// Reject values that cannot train, before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "--weight-decay must be zero or positive, got {}",
                self.weight_decay
            );
        }
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            bail!("--gamma must be in (0, 1], got {}", self.gamma);
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs <= self.epochs as f64) {
            bail!(
                "--warmup-epochs must be between 0 and --epochs ({}), got {}",
                self.epochs,
                self.warmup_epochs
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            bail!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            );
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            bail!(
                "--ema must be in [0, 1) (0 turns averaging off), got {}",
                self.ema_decay
            );
        }
        if let Some(dropout) = self.dropout {
            if !(0.0..1.0).contains(&dropout) {
                bail!("--dropout must be in [0, 1), got {dropout}");
            }
            if !self.model.has_dropout() {
                bail!(
                    "--model {} has no dropout layers for --dropout to set; \
                     leave it out, or use seed-plus or kaggle",
                    self.model
                );
            }
        }
        self.augment.validate()?;
        Ok(())
    }

    /// The training loss: cross-entropy, with the label smoothing asked for.
    pub fn loss(&self, device: &Device) -> CrossEntropyLoss {
        let mut config = CrossEntropyLossConfig::new();
        if self.label_smoothing > 0.0 {
            config = config.with_smoothing(Some(self.label_smoothing as f32));
        }
        config.init(device)
    }

    /// The learning-rate schedule, for epochs of `steps_per_epoch` steps.
    pub fn run_schedule(&self, steps_per_epoch: usize) -> RunSchedule {
        let schedule = match self.schedule {
            ScheduleKind::Exponential => LrSchedule::Exponential { gamma: self.gamma },
            ScheduleKind::OneCycle => LrSchedule::OneCycle,
            ScheduleKind::Cosine => LrSchedule::Cosine {
                warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            },
            ScheduleKind::Constant => LrSchedule::Constant,
        };
        RunSchedule {
            lr: self.lr,
            schedule,
            steps_per_epoch,
            epochs: self.epochs,
        }
    }

    /// One line for reports, in PyTorch's vocabulary.
    pub fn describe(&self) -> String {
        let optimizer = match self.optimizer {
            OptimizerKind::RAdam => format!(
                "RAdam(betas=(0.9, 0.999), eps=1e-08, weight_decay={}, decoupled_weight_decay=True)",
                self.weight_decay
            ),
            OptimizerKind::AdamW => format!(
                "AdamW(betas=(0.9, 0.999), eps=1e-08, weight_decay={})",
                self.weight_decay
            ),
            OptimizerKind::Adam => format!(
                "Adam(betas=(0.9, 0.999), eps=1e-08, weight_decay={})",
                self.weight_decay
            ),
        };
        let scheduler = match self.schedule {
            ScheduleKind::Exponential => format!("ExponentialLR(gamma={}, per epoch)", self.gamma),
            ScheduleKind::OneCycle => "OneCycleLR(per batch)".to_string(),
            ScheduleKind::Cosine => format!("cosine(warmup_epochs={})", self.warmup_epochs),
            ScheduleKind::Constant => "constant".to_string(),
        };
        let mut line = format!(
            "num_epochs={}, batch_size={}, learning_rate={}, optimizer={optimizer}, scheduler={scheduler}, model={}, seed={}",
            self.epochs, self.batch_size, self.lr, self.model, self.seed
        );
        if self.label_smoothing > 0.0 {
            line += &format!(", label_smoothing={}", self.label_smoothing);
        }
        if self.ema_decay > 0.0 {
            line += &format!(", weight_ema={}", self.ema_decay);
        }
        if let Some(dropout) = self.dropout {
            line += &format!(", dropout={dropout}");
        }
        if let Some(augmentation) = self.augment.describe() {
            line += &format!(", augmentation={augmentation}");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        train: TrainFlags,
    }

    fn parse(args: &[&str]) -> HyperParams {
        use clap::Parser;
        Flags::parse_from(std::iter::once("mnist").chain(args.iter().copied()))
            .train
            .resolve()
    }

    #[test]
    fn no_flags_is_the_notebook() {
        let h = parse(&[]);
        assert_eq!(h, HyperParams::default());
        assert_eq!(
            (
                h.model,
                h.epochs,
                h.batch_size,
                h.lr,
                h.weight_decay,
                h.gamma
            ),
            (ModelKind::Seed, 5, 600, 0.0015, 1e-4, 0.9)
        );
    }

    #[test]
    fn flags_override_the_recipe() {
        let h = parse(&["--recipe", "seed-plus", "--epochs", "3", "--rotate", "5"]);
        assert_eq!(h.model, ModelKind::SeedPlus);
        assert_eq!(h.optimizer, OptimizerKind::AdamW);
        assert_eq!((h.epochs, h.augment.rotate), (3, 5.0));
        assert_eq!(h.augment.translate, 2.5, "the recipe's value stays");
        for recipe in <Recipe as clap::ValueEnum>::value_variants() {
            recipe.hyper_params().validate().unwrap();
        }
    }

    #[test]
    fn the_hvc_paper_policy_replaces_the_recipes_ranges() {
        let h = parse(&["--recipe", "hvc", "--augment", "hvc-paper"]);
        assert_eq!(h.augment.policy, AugmentPolicy::HvcPaper);
        assert_eq!(h.augment.augmentation(), mnist_data::Augment::HvcPaper);
        h.validate().unwrap();
        assert!(
            h.describe().contains("augmentation=hvc-paper"),
            "{}",
            h.describe()
        );
        // Range flags beside it are refused, not silently ignored.
        let mixed = parse(&["--recipe", "hvc", "--augment", "hvc-paper", "--rotate", "5"]);
        let err = mixed.validate().unwrap_err().to_string();
        assert!(
            err.contains("--augment hvc-paper") && err.contains("--rotate"),
            "{err}"
        );
        // `ranges` keeps the recipe's ranges.
        let ranges = parse(&["--recipe", "hvc", "--augment", "ranges"]);
        assert_eq!(ranges.augment, Recipe::Hvc.hyper_params().augment);
    }

    #[test]
    fn flipping_is_asked_for_by_name_and_checked() {
        let h = parse(&["--recipe", "kaggle", "--rotate", "0", "--flip", "0.5"]);
        assert_eq!(h.augment.flip, 0.5);
        h.validate().unwrap();
        let mnist_data::Augment::Ranges(ranges) = h.augment.augmentation() else {
            panic!("flipping is one of the ranges' settings");
        };
        assert_eq!(ranges.flip_probability, 0.5);
        assert!(h.describe().contains("flip=0.5"), "{}", h.describe());
        // Recipes without it describe their augmentation as before.
        let kaggle = Recipe::Kaggle.hyper_params();
        assert!(!kaggle.describe().contains("flip"), "{}", kaggle.describe());
        let err = parse(&["--flip", "1.5"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("flip probability") && err.contains("--flip"),
            "{err}"
        );
        let mixed = parse(&["--recipe", "hvc", "--augment", "hvc-paper", "--flip", "0.5"]);
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn dropout_is_set_by_flag_and_checked_against_the_model() {
        let h = parse(&["--recipe", "kaggle", "--dropout", "0.1"]);
        assert_eq!(h.dropout, Some(0.1));
        h.validate().unwrap();
        assert!(h.describe().contains("dropout=0.1"), "{}", h.describe());
        // Left out, the model keeps its own and the report says nothing new.
        let kaggle = Recipe::Kaggle.hyper_params();
        assert_eq!(kaggle.dropout, None);
        assert!(
            !kaggle.describe().contains("dropout"),
            "{}",
            kaggle.describe()
        );
        let out_of_range = parse(&["--recipe", "kaggle", "--dropout", "1"]);
        let err = out_of_range.validate().unwrap_err().to_string();
        assert!(err.contains("--dropout must be in [0, 1)"), "{err}");
        // The notebook's CNN has no dropout: refused, not silently ignored.
        let err = parse(&["--dropout", "0.2"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--model seed has no dropout"), "{err}");
    }

    #[test]
    fn a_state_file_from_before_the_new_settings_still_loads() {
        let old = r#"{"epochs":5,"batch_size":600,"lr":0.0015,"weight_decay":0.0001,"gamma":0.9,"seed":3}"#;
        let h: HyperParams = serde_json::from_str(old).unwrap();
        assert_eq!(
            h,
            HyperParams {
                seed: 3,
                ..HyperParams::default()
            }
        );
    }

    #[test]
    fn unknown_names_are_refused_when_parsed_with_the_choices() {
        use clap::Parser;
        for (flag, bad, a_choice) in [
            ("--model", "resnet", "seed-plus"),
            ("--optimizer", "sgd", "adamw"),
            ("--schedule", "step", "one-cycle"),
        ] {
            let err = Flags::try_parse_from(["mnist", flag, bad])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(bad) && err.contains(a_choice), "{err}");
        }
    }

    #[test]
    fn weights_decide_the_dataset_and_a_contradiction_is_refused() {
        let (a, b) = (Path::new("a.safetensors"), Path::new("b.safetensors"));
        let mnist = Some(Dataset::Mnist);
        let fashion = Some(Dataset::FashionMnist);
        assert_eq!(
            dataset_for_weights(None, &[(a, fashion)]).unwrap(),
            Dataset::FashionMnist
        );
        assert_eq!(
            dataset_for_weights(None, &[(a, None)]).unwrap(),
            Dataset::Mnist
        );
        assert_eq!(
            dataset_for_weights(fashion, &[(a, None)]).unwrap(),
            Dataset::FashionMnist
        );
        assert_eq!(
            dataset_for_weights(mnist, &[(a, mnist), (b, None)]).unwrap(),
            Dataset::Mnist
        );
        let err = dataset_for_weights(fashion, &[(a, mnist)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.safetensors was trained on mnist") && err.contains("--dataset"),
            "{err}"
        );
        let err = dataset_for_weights(None, &[(a, mnist), (b, fashion)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.safetensors on fashion-mnist"), "{err}");
    }

    #[test]
    fn negative_seeds_get_a_clear_error() {
        use clap::Parser;
        let err = Flags::try_parse_from(["mnist", "--seed", "-1"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`-1` is not a seed"), "{err}");
        assert_eq!(parse(&["--seed", "7"]).seed, 7);
    }

    #[test]
    fn the_notebooks_values_are_valid() {
        HyperParams::default().validate().unwrap();
    }

    /// Spoils one field of the notebook's values.
    type Spoil = fn(&mut HyperParams);

    #[test]
    fn bad_values_are_named() {
        let cases: [(Spoil, &str); 10] = [
            (|h| h.label_smoothing = 1.0, "--label-smoothing"),
            (|h| h.ema_decay = -0.5, "--ema"),
            (|h| h.augment.scale = 5.0, "--scale"),
            (|h| h.epochs = 0, "--epochs"),
            (|h| h.batch_size = 0, "--batch-size"),
            (|h| h.lr = -1.0, "--lr"),
            (|h| h.lr = f64::NAN, "--lr"),
            (|h| h.gamma = 1.5, "--gamma"),
            (|h| h.gamma = 0.0, "--gamma"),
            (|h| h.weight_decay = f64::INFINITY, "--weight-decay"),
        ];
        for (break_it, flag) in cases {
            let mut h = HyperParams::default();
            break_it(&mut h);
            let err = h.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }
}
