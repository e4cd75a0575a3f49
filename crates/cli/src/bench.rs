//! `mnist bench`: the notebook's workload on each compiled backend —
//! milliseconds per training step (batch 600, RAdam), the projected time of
//! the 5-epoch run, inference throughput and peak memory.
//!
//! Inputs are seeded random images: the cost of a step does not depend on
//! the pixel values, and no data files are needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use mnist_model::{BackendKind, DeviceSpec, SeedCnnConfig};
use mnist_optim::RAdamConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::workspace_root;

/// `mnist bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Backends to measure [default: every compiled one].
    #[arg(long)]
    backend: Vec<String>,
    /// Fewer steps: a rough number in seconds.
    #[arg(long)]
    quick: bool,
    /// Images per step (the notebook's 600).
    #[arg(long, default_value_t = 600)]
    batch_size: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Also run bench/torch_bench.py with this Python (with torch installed)
    /// and report each backend's time as a ratio to PyTorch's.
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Threads PyTorch may use [default: the CPUs available, as rayon uses].
    #[arg(long)]
    threads: Option<usize>,
}

/// One backend's numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchResult {
    backend: String,
    batch_size: usize,
    steps: usize,
    ms_per_step: f64,
    /// 100 steps an epoch (60,000 / 600), 5 epochs.
    projected_5_epochs_s: f64,
    train_images_per_s: f64,
    inference_images_per_s: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let backends = if args.backend.is_empty() {
        BackendKind::compiled()
    } else {
        args.backend
            .iter()
            .map(|b| BackendKind::from_name(b))
            .collect::<Result<_, _>>()?
    };
    let (warmup, steps, eval_batches) = if args.quick { (1, 3, 2) } else { (3, 20, 10) };
    let mut results = Vec::new();
    for backend in backends {
        let device = backend.device(DeviceSpec::Cpu)?;
        if !args.json {
            eprintln!(
                "measuring {backend} ({steps} steps of {} images)...",
                args.batch_size
            );
        }
        results.push(measure(
            backend,
            &device,
            args.batch_size,
            warmup,
            steps,
            eval_batches,
        ));
    }
    let peak_rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    let pytorch = match &args.python {
        Some(python) => {
            if !args.json {
                eprintln!("measuring PyTorch with {}...", python.display());
            }
            let threads = args
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let workload = [args.batch_size, warmup, steps, eval_batches, threads];
            Some(measure_pytorch(python, workload)?)
        }
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "results": results, "pytorch": pytorch, "peak_rss_mb": peak_rss_mb })
            )?
        );
        return Ok(());
    }
    println!(
        "{:20} {:>10} {:>18} {:>12} {:>16} {:>14}",
        "backend", "ms/step", "5 epochs (proj.)", "train img/s", "inference img/s", "time vs torch"
    );
    for r in results.iter().chain(&pytorch) {
        let ratio = pytorch.as_ref().map_or(String::from("-"), |t| {
            format!("{:.2}x", r.ms_per_step / t.ms_per_step)
        });
        println!(
            "{:20} {:>10.1} {:>16.1} s {:>12.0} {:>16.0} {:>14}",
            r.backend,
            r.ms_per_step,
            r.projected_5_epochs_s,
            r.train_images_per_s,
            r.inference_images_per_s,
            ratio
        );
    }
    if let Some(mb) = peak_rss_mb {
        println!("peak RSS of this process: {mb:.0} MB");
    }
    Ok(())
}

fn random_batch(rng: &mut ChaCha8Rng, n: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let pixels: Vec<f32> = (0..n * 784).map(|_| rng.random_range(-0.42..2.8)).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.random_range(0..10)).collect();
    (
        Tensor::from_data(TensorData::new(pixels, [n, 1, 28, 28]), device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

fn measure(
    backend: BackendKind,
    device: &Device,
    batch: usize,
    warmup: usize,
    steps: usize,
    eval_batches: usize,
) -> BenchResult {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let train_device = device.clone().autodiff();
    let mut model = SeedCnnConfig::new().init(0, &train_device);
    let mut optim = RAdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let (images, targets) = random_batch(&mut rng, batch, &train_device);
    let mut started = Instant::now();
    for step in 0..warmup + steps {
        if step == warmup {
            started = Instant::now();
        }
        let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
        // Reading the loss synchronises, as the training loop does.
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let ms_per_step = started.elapsed().as_secs_f64() * 1e3 / steps as f64;

    let inference = model.valid();
    let (images, _) = random_batch(&mut rng, batch, device);
    let _ = inference.forward(images.clone()).argmax(1).into_data();
    let started = Instant::now();
    for _ in 0..eval_batches {
        let _ = inference.forward(images.clone()).argmax(1).into_data();
    }
    let inference_images_per_s = (eval_batches * batch) as f64 / started.elapsed().as_secs_f64();

    BenchResult {
        backend: backend.to_string(),
        batch_size: batch,
        steps,
        ms_per_step,
        projected_5_epochs_s: ms_per_step * 500.0 / 1e3,
        train_images_per_s: batch as f64 * 1e3 / ms_per_step,
        inference_images_per_s,
    }
}

/// Run `bench/torch_bench.py` on the same workload
/// (`[batch, warmup, steps, eval_batches, threads]`) and read its JSON.
fn measure_pytorch(python: &Path, workload: [usize; 5]) -> Result<BenchResult> {
    let script = workspace_root().join("bench/torch_bench.py");
    if !script.is_file() {
        bail!(
            "{}: not found; --python needs the repository's bench/ directory",
            script.display()
        );
    }
    let flags = [
        "--batch-size",
        "--warmup",
        "--steps",
        "--eval-batches",
        "--threads",
    ];
    let mut cmd = Command::new(python);
    cmd.arg(&script);
    for (flag, value) in flags.iter().zip(workload) {
        cmd.arg(flag).arg(value.to_string());
    }
    let output = cmd
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} {} failed (is torch installed for it?):\n{}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{}: unexpected output: {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Peak resident memory of this process (Linux: `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
