//! `mnist serve`: a local web app. Draw a digit and watch the model's
//! answer change as you draw; browse the training runs under `--runs`, their
//! curves, hyper-parameters and confusion matrices, down to the test images
//! behind each cell. The page (plain HTML, CSS and JavaScript) is embedded
//! in the binary and uses the JSON API documented in docs/serve.md.
//!
//! - [`predictor`]: one inference thread that batches concurrent requests;
//! - [`request`]: turning a request body into the 28×28 image the model sees;
//! - [`runs`]: finding runs on disk, with ids that cannot leave `--runs`;
//! - [`outcomes`]: a run's per-image test answers, for the confusion cells;
//! - [`api`]: the routes.

mod api;
mod outcomes;
mod predictor;
mod request;
mod runs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use mnist_data::Dataset;

use crate::config::{RuntimeArgs, load_models};
use crate::output::outln;

pub use api::router;
pub use predictor::Predictor;

/// `mnist serve` arguments.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Weights for the drawing page; repeat the flag for an ensemble
    /// [default: the newest finished run under --runs].
    #[arg(long, short = 'w')]
    weights: Vec<PathBuf>,
    /// Directory of training runs to browse.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Address to listen on; only this machine can connect unless you name
    /// another interface (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Directory holding the test images of the runs' datasets [default:
    /// where each run read its data, else $MNIST_DATA_DIR, else data/DATASET/].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Most drawings classified in one forward pass when requests arrive
    /// together.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_batch: u16,
}

/// The model the drawing page classifies with, and where it came from.
pub struct Loaded {
    /// The inference thread.
    pub predictor: Predictor,
    /// The weights files, one per ensemble member.
    pub weights: Vec<PathBuf>,
    /// The dataset whose classes and normalisation they use.
    pub dataset: Dataset,
}

/// Everything the routes share.
pub struct AppState {
    /// The drawing page's model, if there is one.
    pub model: Option<Loaded>,
    /// The runs directory.
    pub runs: runs::RunsDir,
    /// Per-run test answers, computed on first use.
    pub outcomes: outcomes::OutcomeCache,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let runtime = args.runtime.resolve()?;
    let runs = runs::RunsDir::new(&args.runs);
    let weights = if args.weights.is_empty() {
        runs.newest_finished_weights().into_iter().collect()
    } else {
        args.weights.clone()
    };
    let model = if weights.is_empty() {
        outln!(
            "No weights: the drawing page will say how to train a model (no finished run in {}).",
            args.runs.display()
        );
        None
    } else {
        let (models, dataset) = load_models(&weights, None, &runtime.device)?;
        for path in &weights {
            outln!("Classifying drawings with {}", path.display());
        }
        Some(Loaded {
            predictor: Predictor::start(
                models,
                runtime.device.clone(),
                dataset,
                usize::from(args.max_batch),
            ),
            weights,
            dataset,
        })
    };
    let state = Arc::new(AppState {
        model,
        runs,
        outcomes: outcomes::OutcomeCache::new(runtime.device.clone(), args.data_dir.clone()),
    });
    serve(state, args.addr)
}

/// The index of the largest value (the first, on ties): a class from its
/// probabilities.
fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

/// Listen on `addr` until Ctrl-C, then finish the requests in flight.
fn serve(state: Arc<AppState>, addr: SocketAddr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} (is another server using it? pick another with --addr)"
            )
        })?;
        let bound = listener.local_addr()?;
        if !bound.ip().is_loopback() {
            eprintln!(
                "warning: listening on {bound}, reachable from other machines; \
                 the server has no authentication. Use --addr 127.0.0.1:PORT to keep it local"
            );
        }
        outln!("Serving on http://{bound}/ (Ctrl-C to stop)");
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                // If the handler cannot be installed, serve until killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
            .await
            .context("the server stopped")?;
        outln!("Stopped.");
        Ok(())
    })
}
