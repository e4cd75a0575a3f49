//! `mnist`: train, evaluate and inspect MNIST-style CNNs.
//!
//! This crate wires the others together: `data` for batches, `model` for
//! the network, `optim` for RAdam and the schedule, `metrics` for the
//! report. The backend is chosen at run time among those compiled in.

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bench;
mod checkpoint;
mod config;
mod eval;
mod evaluate;
mod report;
mod run_dir;
mod train;

use std::process::ExitCode;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mnist_model::summary::TorchSummary;
use mnist_model::{BackendKind, SeedCnnConfig};

#[derive(Parser)]
#[command(
    name = "mnist",
    version,
    about = "Train and evaluate CNNs on MNIST-style data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the notebook's CNN (defaults reproduce the notebook's run).
    Train(train::TrainArgs),
    /// Evaluate weights on the test set and write the report.
    Eval(eval::EvalArgs),
    /// Print the model's architecture and parameter count.
    Summary,
    /// List the backends compiled into this binary.
    Backends,
    /// Time training steps and inference on each compiled backend.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `--resume` may extend a run with `--epochs`, but only when it is given.
    if let Command::Train(args) = &mut cli.command {
        args.epochs_given = matches
            .subcommand_matches("train")
            .and_then(|m| m.value_source("epochs"))
            .is_some_and(|source| source == ValueSource::CommandLine);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Summary => {
            let backend = BackendKind::default_cpu()
                .ok_or_else(|| anyhow::anyhow!("no backend compiled in"))?;
            let model =
                SeedCnnConfig::new().init(0, &backend.device(mnist_model::DeviceSpec::Cpu)?);
            println!("{}", model.torch_summary());
            println!("Total parameters: {}", mnist_model::parameter_count(&model));
            Ok(())
        }
        Command::Backends => {
            for backend in BackendKind::ALL {
                let status = if backend.is_compiled() {
                    "compiled in"
                } else {
                    "not compiled in"
                };
                println!("{:8} {status}", backend.name());
            }
            Ok(())
        }
    }
}
