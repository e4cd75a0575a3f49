//! `cargo xtask loadtest` (`cargo bench -p mnist-cli --bench serve_load --
//! ARGS`): load on `mnist serve`'s prediction route from this machine only. It starts the server on 127.0.0.1 with a free port,
//! asks it one request at a time (the latency of one prediction), then from
//! many clients at once (throughput), bounded both in requests and in time,
//! and reads the server's peak memory. Bodies are MNIST test images, as PNG
//! (what the page sends) or as JSON grids.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mnist_data::Dataset;

/// What a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyKind {
    /// A 28×28 PNG, prepared by the server as `mnist predict` prepares files.
    Png,
    /// `{"pixels": 28 rows of 28}`, taken as it is.
    Json,
}

/// `cargo xtask loadtest` arguments.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask loadtest",
    about = "Load mnist serve from 127.0.0.1"
)]
pub struct LoadArgs {
    /// Weights to serve [default: the newest finished run under runs/].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Concurrent clients for the throughput phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Requests in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests one at a time, for the latency of one prediction.
    #[arg(long, default_value_t = 1_000)]
    sequential: usize,
    /// Stop each phase after this many seconds, whatever is left.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Request bodies.
    #[arg(long, value_enum, default_value_t = BodyKind::Png)]
    body: BodyKind,
    /// Where the MNIST files are [default: $MNIST_DATA_DIR, else data/mnist/].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> std::process::ExitCode {
    let args = LoadArgs::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let data_dir = match &args.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => mnist_data::find_data_dir(Dataset::Mnist, &root),
    };
    let result = data_dir
        .map_err(anyhow::Error::from)
        .and_then(|dir| run(&args, Path::new(env!("CARGO_BIN_EXE_mnist")), &dir));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One phase's measurements.
struct Phase {
    sent: usize,
    failed: usize,
    wall: Duration,
    client_ms: Vec<f64>,
    server_ms: Vec<f64>,
}

/// Run the load test with the `mnist` binary at `binary`.
fn run(args: &LoadArgs, binary: &Path, data_dir: &Path) -> Result<()> {
    let bodies = bodies(data_dir, args.body)?;
    let mut serve = Command::new(binary);
    serve.args(["serve", "--addr", "127.0.0.1:0"]);
    if let Some(weights) = &args.weights {
        serve.arg("--weights").arg(weights);
    }
    let mut server = Server::start(serve)?;
    let url = format!("{}/api/predict", server.url);
    let limit = Duration::from_secs(args.max_seconds);
    println!(
        "mnist serve at {} (pid {}); bodies: {} MNIST test images as {:?}",
        server.url,
        server.child.id(),
        bodies.len(),
        args.body
    );
    let one = load(&url, &bodies, args.body, 1, args.sequential, limit);
    report("one client, one request at a time", &one);
    let many = load(&url, &bodies, args.body, args.clients, args.requests, limit);
    report(&format!("{} clients at once", args.clients), &many);
    match peak_memory_kib(server.child.id()) {
        Some(kib) => println!("server peak memory (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak memory: not available on this OS"),
    }
    server.stop();
    if one.failed + many.failed > 0 {
        bail!("{} requests failed", one.failed + many.failed);
    }
    Ok(())
}

/// PNG or JSON bodies of the first 256 test images.
fn bodies(data_dir: &Path, kind: BodyKind) -> Result<Vec<Vec<u8>>> {
    let test = mnist_data::load_test(Dataset::Mnist, data_dir)?;
    (0..test.len().min(256))
        .map(|i| {
            let pixels = test.image(i);
            Ok(match kind {
                BodyKind::Png => {
                    let picture = image::GrayImage::from_raw(28, 28, pixels.to_vec())
                        .context("a test image is 28×28")?;
                    let mut png = Vec::new();
                    picture
                        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
                    png
                }
                BodyKind::Json => {
                    let rows: Vec<&[u8]> = pixels.chunks(28).collect();
                    serde_json::to_vec(&serde_json::json!({ "pixels": rows }))?
                }
            })
        })
        .collect()
}

/// Send `requests` requests from `clients` threads (or until `limit`).
fn load(
    url: &str,
    bodies: &[Vec<u8>],
    kind: BodyKind,
    clients: usize,
    requests: usize,
    limit: Duration,
) -> Phase {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let content_type = match kind {
        BodyKind::Png => "image/png",
        BodyKind::Json => "application/json",
    };
    let results: Vec<(usize, Vec<f64>, Vec<f64>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let next = next.clone();
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    let (mut failed, mut client, mut server) = (0, Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests || started.elapsed() > limit {
                            break;
                        }
                        let sent = Instant::now();
                        let response = agent
                            .post(url)
                            .header("content-type", content_type)
                            .send(&bodies[i % bodies.len()][..]);
                        match response {
                            Ok(mut r) if r.status() == 200 => {
                                let timing = server_timing(r.headers().get("server-timing"));
                                let _ = r.body_mut().read_to_vec();
                                client.push(sent.elapsed().as_secs_f64() * 1e3);
                                server.extend(timing);
                            }
                            _ => failed += 1,
                        }
                    }
                    (failed, client, server)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let wall = started.elapsed();
    let mut phase = Phase {
        sent: 0,
        failed: 0,
        wall,
        client_ms: Vec::new(),
        server_ms: Vec::new(),
    };
    for (failed, client, server) in results {
        phase.failed += failed;
        phase.sent += failed + client.len();
        phase.client_ms.extend(client);
        phase.server_ms.extend(server);
    }
    phase
}

/// The `dur` of a `server-timing: predict;dur=X` header, in ms.
fn server_timing(header: Option<&ureq::http::HeaderValue>) -> Option<f64> {
    header?
        .to_str()
        .ok()?
        .split(';')
        .find_map(|part| part.trim().strip_prefix("dur=")?.parse().ok())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn report(name: &str, phase: &Phase) {
    let mut client = phase.client_ms.clone();
    let mut server = phase.server_ms.clone();
    println!(
        "{name}: {} requests ({} failed) in {:.2} s = {:.0} predictions/s; \
         server-side median {:.2} ms, p99 {:.2} ms; round trip median {:.2} ms, p99 {:.2} ms",
        phase.sent,
        phase.failed,
        phase.wall.as_secs_f64(),
        client.len() as f64 / phase.wall.as_secs_f64(),
        percentile(&mut server, 0.5),
        percentile(&mut server, 0.99),
        percentile(&mut client, 0.5),
        percentile(&mut client, 0.99),
    );
}

/// The peak resident memory of process `pid`, from /proc (Linux).
fn peak_memory_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The server process, stopped with Ctrl-C (or killed) when done.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(mut command: Command) -> Result<Server> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start mnist serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                bail!("mnist serve stopped before listening (its error is above)");
            };
            if line.starts_with("No weights") {
                let _ = child.kill();
                bail!("no model to load: train one (cargo xtask train) or pass --weights FILE");
            }
            if let Some(rest) = line.strip_prefix("Serving on ") {
                break rest
                    .trim_end_matches(|c: char| c != '/')
                    .trim_end_matches('/')
                    .to_string();
            }
        };
        if !url.starts_with("http://127.0.0.1:") {
            let _ = child.kill();
            bail!("the server is not on 127.0.0.1 ({url}); the load test only runs locally");
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, url })
    }

    fn stop(&mut self) {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        #[cfg(not(unix))]
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
