//! `mnist eval`: evaluate saved or PyTorch-exported weights on the test set.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use clap::Args;
use mnist_data::Normalizer;
use mnist_model::summary::TorchSummary;
use mnist_model::{SeedCnnConfig, load_weights};

use crate::config::{DataArgs, RuntimeArgs};
use crate::evaluate::confusion;
use crate::report::{Metrics, RunInfo, print_report, write_files};
use crate::run_dir;

/// `mnist eval` arguments.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Weights to evaluate: a safetensors file from `mnist train` or PyTorch.
    #[arg(long)]
    weights: PathBuf,
    /// Print metrics.json to stdout instead of the human report.
    #[arg(long)]
    json: bool,
    /// Directory for the report files [default: runs/<timestamp>/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 600)]
    batch_size: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let runtime = args.runtime.resolve()?;
    let dataset = args.data.dataset()?;
    // Check the weights before loading any data.
    let model = load_weights(SeedCnnConfig::new().init(0, &runtime.device), &args.weights)?;
    if let Some(out) = &args.out {
        run_dir::check_creatable(out)?;
    }
    let mut data = mnist_data::load(dataset, &args.data.dir(dataset))?;
    let out = run_dir::create(args.out.as_deref())?;
    if let Some(n) = args.data.test_limit {
        data.test = data.test.head(n);
    }
    let normalizer = Normalizer::new(dataset.mean(), dataset.std());
    let started = Instant::now();
    let matrix = confusion(
        &model,
        &data.test,
        args.batch_size,
        &normalizer,
        &runtime.device,
    );
    let names = dataset.class_names();
    let metrics = Metrics::new(
        &matrix,
        RunInfo {
            train_images: 0,
            epochs: 0,
            train_seconds: 0.0,
            eval_seconds: started.elapsed().as_secs_f64(),
            backend: runtime.backend.to_string(),
            device: runtime.spec.to_string(),
            dataset: dataset.to_string(),
            model: "seed".to_string(),
            parameters: model.num_params(),
            hyper_parameters: None,
            weights: Some(args.weights.clone()),
            history: Vec::new(),
            class_names: names.iter().map(|s| s.to_string()).collect(),
        },
    );
    let written = write_files(&out, &metrics, &matrix, &names)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics)?);
    } else {
        print_report(&model.torch_summary(), &metrics, &matrix, &names);
        for path in written {
            println!("Wrote {}", path.display());
        }
    }
    Ok(())
}
