//! `mnist eval`: evaluate saved or PyTorch-exported weights on the test set;
//! several weights files are evaluated as an ensemble that averages the
//! models' class probabilities.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use mnist_data::Normalizer;
use mnist_model::summary::TorchSummary;

use crate::config::{DataArgs, RuntimeArgs, load_models};
use crate::evaluate::{ensemble_confusion, ensemble_confusion_tta};
use crate::output::outln;
use crate::report::{Metrics, RunInfo, ScoredOn, print_report, write_files};
use crate::run_dir;

/// `mnist eval` arguments.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Weights to evaluate: safetensors files from `mnist train` or PyTorch;
    /// with several, their ensemble (mean probabilities) is evaluated.
    #[arg(long, num_args = 1.., required = true)]
    weights: Vec<PathBuf>,
    /// Print metrics.json to stdout instead of the human report.
    #[arg(long)]
    json: bool,
    /// Directory for the report files [default: runs/TIMESTAMP/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 600)]
    batch_size: usize,
    /// Test-time augmentation: average each model's probabilities over the
    /// image shifted one pixel each way and turned ±6° (7 views, 7× the
    /// time); for clothing each view mirrored too (14 views).
    #[arg(long)]
    tta: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let runtime = args.runtime.resolve()?;
    args.data.validate_limits()?;
    // Check the weights before loading any data; each file names its model
    // and, when trained here, its dataset.
    let (models, dataset) = load_models(&args.weights, args.data.dataset, &runtime.device)?;
    if let Some(out) = &args.out {
        run_dir::check_creatable(out)?;
    }
    // The test split alone, unless --val asks for the held-out part of the
    // training images (as `mnist train --val` held it out).
    let (mut test, scored_on) = match args.data.validation() {
        None => (
            mnist_data::load_test(dataset, &args.data.dir(dataset))?,
            ScoredOn::Test,
        ),
        Some(validation) => {
            let train = mnist_data::load(dataset, &args.data.dir(dataset))?.train;
            (validation.split(&train)?.1, ScoredOn::Validation)
        }
    };
    let out = run_dir::create(args.out.as_deref())?;
    if let Some(n) = args.data.test_limit {
        test = test.head(n);
    }
    let normalizer = Normalizer::new(dataset.mean(), dataset.std());
    let started = Instant::now();
    let outcome = if args.tta {
        let views = mnist_data::tta::views(dataset);
        ensemble_confusion_tta(
            &models,
            &test,
            &views,
            args.batch_size,
            &normalizer,
            &runtime.device,
        )
    } else {
        ensemble_confusion(
            &models,
            &test,
            args.batch_size,
            &normalizer,
            &runtime.device,
        )
    };
    let eval_seconds = started.elapsed().as_secs_f64();
    let matrix = outcome.ensemble;
    let member_accuracies: Vec<f64> = match outcome.members.len() {
        1 => Vec::new(),
        _ => outcome.members.iter().map(|m| m.accuracy()).collect(),
    };
    let mut kinds: Vec<String> = Vec::new();
    for kind in models.iter().map(|m| m.kind().to_string()) {
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let model_name = match models.len() {
        1 => kinds.join(""),
        n => format!("ensemble of {n} ({})", kinds.join(", ")),
    };
    let names = dataset.class_names();
    let metrics = Metrics::new(
        &matrix,
        RunInfo {
            train_images: 0,
            epochs: 0,
            train_seconds: 0.0,
            eval_seconds,
            backend: runtime.backend,
            device: runtime.spec,
            dataset,
            model: model_name,
            parameters: models.iter().map(mnist_model::parameter_count).sum(),
            recipe: None,
            finished: crate::report::now_rfc3339(),
            scored_on,
            tta: args.tta,
            validation: None,
            hyper_parameters: None,
            weights: args.weights.clone(),
            member_accuracies: member_accuracies.clone(),
            history: Vec::new(),
            class_names: names.iter().map(|s| s.to_string()).collect(),
        },
    );
    let written = write_files(&out, &metrics, &matrix, &names)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&metrics)?);
    } else {
        let summary = models
            .iter()
            .map(|m| m.torch_summary())
            .collect::<Vec<_>>()
            .join("\n");
        print_report(&summary, &metrics, &matrix, &names);
        for (path, accuracy) in args.weights.iter().zip(&member_accuracies) {
            outln!("  member {}: {:.2}%", path.display(), 100.0 * accuracy);
        }
        for path in written {
            outln!("Wrote {}", path.display());
        }
    }
    Ok(())
}
