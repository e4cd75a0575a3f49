//! `mnist`: train, evaluate and inspect MNIST-style CNNs.
//!
//! This crate wires the others together: `data` for batches, `model` for
//! the network, `optim` for RAdam and the schedule, `metrics` for the
//! report. The backend is chosen at run time among those compiled in.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod augment;
mod bench;
mod checkpoint;
mod config;
mod eval;
mod evaluate;
mod interrupt;
mod logging;
mod machine;
mod output;
mod predict;
mod progress;
mod report;
mod run_dir;
#[cfg(feature = "serve")]
mod serve;
mod step;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use mnist_model::summary::TorchSummary;
use mnist_model::{BackendKind, ModelKind};

use crate::output::outln;

#[derive(Parser)]
#[command(
    name = "mnist",
    version,
    about = "Train and evaluate CNNs on MNIST-style data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Subcommand)]
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Train a model (defaults reproduce the notebook's run; see --recipe).
    Train(train::TrainArgs),
    /// Evaluate weights, or an ensemble of several, on the test set.
    Eval(eval::EvalArgs),
    /// Classify your own digit pictures (PNG, JPEG) with trained weights.
    Predict(predict::PredictArgs),
    /// Draw training images beside their augmented versions (PNG), for the
    /// same flags as `train`.
    Augment(augment::AugmentArgs),
    /// Print a model's architecture and parameter count.
    Summary {
        /// The network.
        #[arg(long, value_enum, default_value_t = ModelKind::Seed)]
        model: ModelKind,
    },
    /// List the backends compiled into this binary.
    Backends,
    /// Time a recipe's training step and inference on each compiled backend.
    Bench(bench::BenchArgs),
    /// A local web app: draw digits for the model, browse runs (docs/serve.md).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
}

/// See the `mimalloc` entry in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory mapped for reuse. By default mimalloc hands memory
/// unused for 10 ms back to the kernel; an HVC step frees hundreds of MB of
/// activations and allocates them again a second later, so the kernel zeroed
/// fresh pages every step. The gain and the memory it costs are measured in
/// docs/performance.md ("Batch norm, pooling and the allocator").
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: called first thing in `main`, before any other thread exists
    // (the option setter is not thread safe); -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.log.install();
    let given = given_flags(&command, &matches);
    match run(cli, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The subcommand's flags given on the command line (clap ids of its
/// arguments, not of the groups clap makes for flattened structs), as
/// opposed to those left at their defaults.
fn given_flags(command: &clap::Command, matches: &ArgMatches) -> Vec<String> {
    let Some((name, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let Some(subcommand) = command.find_subcommand(name) else {
        return Vec::new();
    };
    subcommand
        .get_arguments()
        .map(|arg| arg.get_id().as_str())
        .filter(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

fn run(cli: Cli, given: &[String]) -> Result<()> {
    match cli.command {
        Command::Train(args) => {
            interrupt::install();
            train::run(args, given)
        }
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Augment(args) => augment::run(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(args),
        Command::Summary { model: kind } => {
            let backend = BackendKind::default_cpu()
                .ok_or_else(|| anyhow::anyhow!("no backend compiled in"))?;
            let model = kind.init(0, &backend.device(mnist_model::DeviceSpec::Cpu)?);
            outln!("{}", model.torch_summary());
            outln!("Total parameters: {}", mnist_model::parameter_count(&model));
            Ok(())
        }
        Command::Backends => {
            for backend in BackendKind::ALL {
                let status = if backend.is_compiled() {
                    "compiled in"
                } else {
                    "not compiled in"
                };
                outln!("{:8} {status}", backend.name());
            }
            Ok(())
        }
    }
}
