//! `cargo xtask`: the project's task runner, a thin driver.
//!
//! - `download`: fetch (or `--from DIR`, import) the dataset, verified;
//! - `train`, `eval`, `summary`, and any other `mnist` subcommand: build the
//!   `mnist` binary in release with the backend the arguments ask for, then
//!   run it with the arguments unchanged (`train` first downloads the data
//!   when it is missing);
//!   (`cargo xtask bench [--recipe R]` times a training step on each compiled
//!   backend, beside PyTorch with `--python`; see `docs/performance.md`);
//! - `loadtest`: load on `mnist serve` from 127.0.0.1, through the
//!   `serve_load` bench of mnist-cli (docs/serve.md).

// Tests may unwrap: a panic there is a failing test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mnist_data::Dataset;
use mnist_data::fetch::{self, Outcome, Progress};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mnist-rs task runner")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Fetch a dataset's four files, verified by SHA-256.
    Download(DownloadArgs),
    /// Load `mnist serve` from this machine: latency of one prediction,
    /// throughput under concurrent clients, peak memory (`--help` for flags).
    #[command(disable_help_flag = true)]
    Loadtest {
        /// Flags for the load generator, `crates/cli/benches/serve_load.rs`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Anything else is an `mnist` subcommand: train, eval, summary, ...
    #[command(external_subcommand)]
    Mnist(Vec<OsString>),
}

#[derive(clap::Args)]
struct DownloadArgs {
    /// The dataset.
    #[arg(long, value_enum, default_value_t = Dataset::Mnist)]
    dataset: Dataset,
    /// Where to put the files [default: $MNIST_DATA_DIR, else data/DATASET/].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A mirror to try before the canonical ones (repeatable).
    #[arg(long)]
    mirror: Vec<String>,
    /// Import from a local directory holding the .gz files instead (offline).
    #[arg(long)]
    from: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.task {
        Task::Download(args) => {
            let dataset = args.dataset;
            let dir = data_dir(args.data_dir.as_deref(), dataset);
            download(dataset, &dir, &args.mirror, args.from.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Mnist(args) => run_mnist(args),
        Task::Loadtest { args } => {
            let status = cargo()
                .current_dir(workspace_root())
                .args([
                    "bench",
                    "--package",
                    "mnist-cli",
                    "--bench",
                    "serve_load",
                    "--",
                ])
                .args(args)
                .status()
                .context("cannot run cargo bench")?;
            Ok(ExitCode::from(
                status.code().map_or(1, |c| c.clamp(0, 255) as u8),
            ))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn data_dir(flag: Option<&Path>, dataset: Dataset) -> PathBuf {
    let env = std::env::var_os("MNIST_DATA_DIR").map(PathBuf::from);
    mnist_data::resolve_data_dir(flag, env.as_deref(), &workspace_root(), dataset)
}

/// A progress bar per file.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, name: &str, total: Option<u64>) {
        self.0.reset();
        self.0.set_length(total.unwrap_or(0));
        self.0.set_message(name.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish();
    }
}

fn download(dataset: Dataset, dir: &Path, mirrors: &[String], from: Option<&Path>) -> Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let progress = Bar(bar);
    let outcomes = match from {
        Some(from) => fetch::import_dataset(dataset, from, dir, &progress)?,
        None => {
            let mut all: Vec<String> = mirrors.to_vec();
            all.extend(dataset.mirrors().iter().map(|m| m.to_string()));
            fetch::download_dataset(dataset, dir, &all, &progress)?
        }
    };
    progress.0.finish_and_clear();
    for (file, outcome) in outcomes {
        match outcome {
            Outcome::AlreadyValid => println!("{:28} already present, checksum ok", file.name),
            Outcome::Written(src) => println!("{:28} verified, from {src}", file.name),
        }
    }
    println!("{dataset} is ready in {}", dir.display());
    Ok(())
}

/// The value of `--name VALUE` or `--name=VALUE` among pass-through arguments.
fn flag_value(args: &[OsString], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let with_eq = format!("--{name}=");
    let mut iter = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == long {
            return iter.next().map(|v| v.into_owned());
        }
        if let Some(v) = arg.strip_prefix(&with_eq) {
            return Some(v.to_string());
        }
    }
    None
}

fn run_mnist(args: Vec<OsString>) -> Result<ExitCode> {
    let subcommand = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest = &args[1..];
    let backend = flag_value(rest, "backend");
    let binary = build_cli(backend.as_deref())?;
    if subcommand == "train" && flag_value(rest, "resume").is_none() {
        let dataset: Dataset = flag_value(rest, "dataset")
            .as_deref()
            .unwrap_or("mnist")
            .parse()?;
        let dir = data_dir(
            flag_value(rest, "data-dir").map(PathBuf::from).as_deref(),
            dataset,
        );
        let missing = dataset.files().iter().any(|f| !dir.join(f.name).is_file());
        if missing {
            println!(
                "{dataset} data not found in {}; downloading it first",
                dir.display()
            );
            download(dataset, &dir, &[], None)?;
        }
    }
    let status = Command::new(&binary)
        .args(&args)
        .status()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    Ok(ExitCode::from(
        status.code().map_or(1, |c| c.clamp(0, 255) as u8),
    ))
}

/// Build the `mnist` binary in release with the backend's feature; return
/// its path. Cargo's own progress is shown: the first build compiles Burn
/// and takes minutes, and a silent terminal looks like a hang.
fn build_cli(backend: Option<&str>) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let binary = target
        .join("release")
        .join(format!("mnist{}", std::env::consts::EXE_SUFFIX));
    let (mut cmd, features) = build_command(backend)?;
    if !binary.is_file() {
        eprintln!(
            "xtask: building the mnist binary (release; backends {features}). The first build \
             compiles Burn and takes several minutes; later ones take seconds."
        );
    }
    let status = cmd.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the mnist binary failed (cargo's messages are above)");
    }
    Ok(binary)
}

/// A `cargo` command that sees the environment a user's own `cargo` would.
///
/// `cargo xtask` runs this program through `cargo run`, which sets the
/// package's `CARGO_PKG_*`, `CARGO_MANIFEST_*` and similar variables for
/// it. Build scripts that watch them (ring's watches `CARGO_MANIFEST_DIR`
/// and `CARGO_PKG_NAME`) then look changed between this cargo and the
/// user's next one, and cargo rebuilds them and everything above them:
/// ring, rustls, ureq and every workspace crate, once for `cargo xtask
/// train` and again for `cargo test` (docs/performance.md).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_run(&name.to_string_lossy()) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Whether `cargo run` sets the variable `name` for the program it runs
/// (and a cargo started directly would not have it).
fn set_by_cargo_run(name: &str) -> bool {
    const PREFIXES: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || matches!(name, "CARGO_PRIMARY_PACKAGE" | "OUT_DIR")
}

/// `cargo build` for the `mnist` binary with `backend`'s feature, and the
/// backends it will hold. Release, as the tests are built, and not
/// `--quiet`, so cargo shows its progress.
fn build_command(backend: Option<&str>) -> Result<(Command, &'static str)> {
    let mut cmd = cargo();
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "--package", "mnist-cli"]);
    let features = match backend {
        None | Some("flex") | Some("ndarray") => "flex, ndarray",
        Some("tch") => {
            cmd.args(["--features", "tch"]);
            "flex, ndarray, tch"
        }
        Some(other) => bail!("unknown backend `{other}`; choose one of: ndarray, flex, tch"),
    };
    Ok((cmd, features))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_flag_values_in_both_spellings() {
        let args = os(&[
            "--epochs",
            "3",
            "--backend=tch",
            "--dataset",
            "fashion-mnist",
        ]);
        assert_eq!(flag_value(&args, "backend").as_deref(), Some("tch"));
        assert_eq!(
            flag_value(&args, "dataset").as_deref(),
            Some("fashion-mnist")
        );
        assert_eq!(flag_value(&args, "data-dir"), None);
    }

    #[test]
    fn the_binary_is_built_in_release_with_cargos_progress_shown() {
        for backend in [None, Some("tch")] {
            let (cmd, _) = build_command(backend).unwrap();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
            assert!(args.iter().any(|a| a == "--release"), "{args:?}");
            assert!(
                !args.iter().any(|a| a == "--quiet" || a == "-q"),
                "{args:?}"
            );
        }
        assert!(build_command(Some("wgpu")).is_err());
    }

    #[test]
    fn loadtest_passes_its_flags_to_the_load_generator_unchanged() {
        let cli = Cli::try_parse_from(["xtask", "loadtest", "--clients", "8", "--help"]).unwrap();
        let Task::Loadtest { args } = cli.task else {
            panic!("not the loadtest task");
        };
        assert_eq!(args, os(&["--clients", "8", "--help"]));
    }

    #[test]
    fn cargo_started_by_xtask_does_not_inherit_what_cargo_run_set() {
        // This test binary, like xtask, runs under cargo, which set these.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let cmd = cargo();
        let removed: Vec<String> = cmd
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        for name in ["CARGO_PKG_NAME", "CARGO_MANIFEST_DIR"] {
            assert!(
                removed.iter().any(|r| r == name),
                "{name} not removed: {removed:?}"
            );
        }
        for kept in ["CARGO_TARGET_DIR", "CARGO_HOME", "CARGO", "PATH"] {
            assert!(!set_by_cargo_run(kept), "{kept}");
        }
        assert!(set_by_cargo_run("CARGO_PKG_VERSION_MAJOR") && set_by_cargo_run("OUT_DIR"));
    }

    #[test]
    fn unknown_dataset_is_a_clear_error() {
        let err = Cli::try_parse_from(["xtask", "download", "--dataset", "cifar"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cifar") && err.contains("fashion-mnist"),
            "{err}"
        );
    }
}
