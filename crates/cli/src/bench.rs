//! `mnist bench`: a recipe's training step on each compiled backend —
//! milliseconds per step (the notebook's by default: seed CNN, batch 600,
//! RAdam), the projected time of an epoch and of the recipe's whole run,
//! inference throughput and peak memory; with `--python`, the same workload
//! in PyTorch (`bench/torch_bench.py`) and each backend's time as a ratio.
//!
//! A step is what `mnist train` does per batch: forward, loss (with the
//! recipe's label smoothing), backward, the recipe's optimizer, its weight
//! average if it keeps one, and reading the loss. Inputs are seeded random
//! images: the cost of a step does not depend on the pixel values, and no
//! data files are needed.
//!
//! Then each convolution layer of the model alone (as the model runs it,
//! with whatever it fuses in), forward and forward + backward, in GFLOP/s
//! beside a large matrix product on the same backend: how far each layer is
//! from the floor the machine's GEMM sets. The machine itself (CPU, threads,
//! vector extensions) is printed first: ratios travel between machines,
//! milliseconds do not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use mnist_model::{BackendKind, DeviceSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{HyperParams, Recipe, workspace_root};
use crate::machine::Machine;
use crate::output::outln;
use crate::step;

/// `mnist bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Backends to measure [default: every compiled one].
    #[arg(long, value_enum)]
    backend: Vec<BackendKind>,
    /// cpu, or cuda:N / mps (with the tch backend).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// The recipe whose model, batch size, optimizer, label smoothing and
    /// weight average a step runs.
    #[arg(long, value_enum, default_value_t = Recipe::Notebook)]
    recipe: Recipe,
    /// Fewer steps: a rough number in seconds.
    #[arg(long)]
    quick: bool,
    /// Images per step [default: the recipe's].
    #[arg(long)]
    batch_size: Option<usize>,
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
    /// With --python: time each backend's step and PyTorch's this many
    /// times, alternating, and report every round's ratio and their
    /// median. On a shared machine a spell of load moves a whole round.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
}

/// One round of `--rounds`: each backend's step and PyTorch's, in ms.
#[derive(Debug, Serialize)]
struct Round {
    backends: Vec<f64>,
    pytorch: f64,
}

/// What one training step runs: the recipe's settings, `--batch-size`
/// applied, checked as `mnist train` checks them.
fn workload(recipe: Recipe, batch_size: Option<usize>) -> Result<HyperParams> {
    let mut hyper = recipe.hyper_params();
    if let Some(batch_size) = batch_size {
        hyper.batch_size = batch_size;
    }
    hyper.validate()?;
    Ok(hyper)
}

/// Steps in an epoch of MNIST's 60,000 training images.
fn steps_per_epoch(hyper: &HyperParams) -> usize {
    TRAIN_IMAGES.div_ceil(hyper.batch_size)
}

/// The same workload for `bench/torch_bench.py` (model and optimizer by
/// the names both sides use).
fn torch_flags(hyper: &HyperParams) -> Vec<String> {
    [
        ("--model", hyper.model.to_string()),
        ("--batch-size", hyper.batch_size.to_string()),
        ("--lr", hyper.lr.to_string()),
        ("--optimizer", hyper.optimizer.to_string()),
        ("--weight-decay", hyper.weight_decay.to_string()),
        ("--label-smoothing", hyper.label_smoothing.to_string()),
        ("--ema", hyper.ema_decay.to_string()),
        ("--epochs", hyper.epochs.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// MNIST's training images: what an epoch is.
const TRAIN_IMAGES: usize = 60_000;

/// One backend's numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchResult {
    backend: String,
    model: String,
    batch_size: usize,
    steps: usize,
    ms_per_step: f64,
    /// One epoch of 60,000 images at this step time.
    epoch_s: f64,
    /// The recipe's epochs at this step time, evaluation not counted.
    projected_run_s: f64,
    train_images_per_s: f64,
    inference_images_per_s: f64,
    /// A large matrix product on this backend: the floor the layers are
    /// measured against (absent for PyTorch).
    #[serde(default)]
    gemm_gflops: Option<f64>,
    /// Each convolution layer timed on its own (absent for PyTorch).
    #[serde(default)]
    layers: Vec<LayerTiming>,
}

/// One convolution layer, run on its own at the step's batch size.
#[derive(Debug, Serialize, Deserialize)]
pub struct LayerTiming {
    name: String,
    geometry: String,
    /// `channels×height×width` of one image's input.
    input: String,
    /// Million multiply-adds of the convolution per image.
    mmac_per_image: f64,
    forward_ms: f64,
    forward_gflops: f64,
    /// Forward and backward pass.
    train_ms: f64,
    train_gflops: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let workload = workload(args.recipe, args.batch_size)?;
    let spec = args.device;
    let backends: Vec<BackendKind> = if args.backend.is_empty() {
        // Off the CPU, only the backends that can drive the device.
        BackendKind::compiled()
            .into_iter()
            .filter(|b| spec == DeviceSpec::Cpu || *b == BackendKind::Tch)
            .collect()
    } else {
        args.backend.clone()
    };
    if args.rounds > 1 && args.python.is_none() {
        bail!(
            "--rounds {} compares against PyTorch: give --python too",
            args.rounds
        );
    }
    let (warmup, steps, eval_batches) = if args.quick { (1, 3, 2) } else { (3, 20, 10) };
    let mut results = Vec::new();
    if backends.is_empty() {
        bail!("no compiled backend runs on {spec}; rebuild with --features tch");
    }
    for &backend in &backends {
        let device = backend.device(spec)?;
        if !args.json {
            eprintln!(
                "measuring {backend} on {spec} ({steps} {} steps of {} images)...",
                workload.model, workload.batch_size
            );
        }
        results.push(measure(
            backend,
            &device,
            &workload,
            [warmup, steps, eval_batches],
        )?);
    }
    let peak_rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    let machine = Machine::detect();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let torch_run = |eval_batches: usize| {
        let mut flags = torch_flags(&workload);
        for (flag, value) in [
            ("--warmup", warmup),
            ("--steps", steps),
            ("--eval-batches", eval_batches),
            ("--threads", threads),
        ] {
            flags.extend([flag.to_string(), value.to_string()]);
        }
        flags.extend(["--device".to_string(), torch_device(spec)]);
        flags
    };
    let pytorch = match &args.python {
        Some(python) => {
            if !args.json {
                eprintln!("measuring PyTorch with {}...", python.display());
            }
            Some(measure_pytorch(python, &torch_run(eval_batches))?)
        }
        None => None,
    };
    // Round 1 is the measurement above; the others time the steps only.
    let mut rounds = Vec::new();
    if let (Some(python), Some(first)) = (&args.python, &pytorch) {
        if args.rounds > 1 {
            rounds.push(Round {
                backends: results.iter().map(|r| r.ms_per_step).collect(),
                pytorch: first.ms_per_step,
            });
        }
        for round in 2..=args.rounds {
            if !args.json {
                eprintln!("round {round} of {}...", args.rounds);
            }
            let steps_ms = backends
                .iter()
                .map(|backend| {
                    let device = backend.device(spec)?.autodiff();
                    Ok(time_steps(&workload, &device, [warmup, steps]).1)
                })
                .collect::<Result<Vec<f64>>>()?;
            let pytorch = measure_pytorch(python, &torch_run(1))?.ms_per_step;
            rounds.push(Round {
                backends: steps_ms,
                pytorch,
            });
        }
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "machine": machine,
                "results": results,
                "pytorch": pytorch,
                "rounds": rounds,
                "peak_rss_mb": peak_rss_mb
            }))?
        );
        return Ok(());
    }
    outln!(
        "{} on {spec}, batch {}, {} ({} epochs projected)",
        workload.model,
        workload.batch_size,
        workload.optimizer,
        workload.epochs
    );
    outln!("machine: {}", machine.describe());
    outln!(
        "{:20} {:>10} {:>14} {:>14} {:>12} {:>16} {:>14}",
        "backend",
        "ms/step",
        "epoch (proj.)",
        "run (proj.)",
        "train img/s",
        "inference img/s",
        "time vs torch"
    );
    for r in results.iter().chain(&pytorch) {
        let ratio = pytorch.as_ref().map_or(String::from("-"), |t| {
            format!("{:.2}x", r.ms_per_step / t.ms_per_step)
        });
        outln!(
            "{:20} {:>10.1} {:>12.1} s {:>12} {:>12.0} {:>16.0} {:>14}",
            r.backend,
            r.ms_per_step,
            r.epoch_s,
            duration(r.projected_run_s),
            r.train_images_per_s,
            r.inference_images_per_s,
            ratio
        );
    }
    print_rounds(&results, &rounds);
    for r in &results {
        print_layers(r);
    }
    if let Some(mb) = peak_rss_mb {
        outln!("peak RSS of this process: {mb:.0} MB");
    }
    Ok(())
}

/// Every round's ratio to PyTorch for each backend, and their median.
fn print_rounds(results: &[BenchResult], rounds: &[Round]) {
    if rounds.is_empty() {
        return;
    }
    outln!("\nrounds, alternated (step ms, ratio to PyTorch):");
    for (i, round) in rounds.iter().enumerate() {
        let backends: Vec<String> = results
            .iter()
            .zip(&round.backends)
            .map(|(r, ms)| format!("{} {ms:.1} ({:.2}x)", r.backend, ms / round.pytorch))
            .collect();
        outln!(
            "{:>3}: {}; pytorch {:.1}",
            i + 1,
            backends.join(", "),
            round.pytorch
        );
    }
    for (b, result) in results.iter().enumerate() {
        let mut ratios: Vec<f64> = rounds.iter().map(|r| r.backends[b] / r.pytorch).collect();
        outln!(
            "{}: median {:.2}x over {} rounds, {:.2}x to {:.2}x",
            result.backend,
            median(&mut ratios),
            rounds.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}

/// The median of `values`, which it sorts (the mean of the middle two for
/// an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// One backend's layers against its GEMM peak.
fn print_layers(result: &BenchResult) {
    let Some(peak) = result.gemm_gflops else {
        return;
    };
    outln!(
        "\n{}: each convolution alone, batch {}; a {GEMM_SIDE}³ matrix product runs at {peak:.0} GFLOP/s",
        result.backend,
        result.batch_size
    );
    outln!(
        "{:10} {:>12} {:>10} {:>9} {:>9} {:>9} {:>7} {:>12} {:>9} {:>7}",
        "layer",
        "kernel",
        "input",
        "MMAC/img",
        "fwd ms",
        "GFLOP/s",
        "of peak",
        "fwd+bwd ms",
        "GFLOP/s",
        "of peak"
    );
    for l in &result.layers {
        outln!(
            "{:10} {:>12} {:>10} {:>9.2} {:>9.2} {:>9.0} {:>6.0}% {:>12.2} {:>9.0} {:>6.0}%",
            l.name,
            l.geometry,
            l.input,
            l.mmac_per_image,
            l.forward_ms,
            l.forward_gflops,
            100.0 * l.forward_gflops / peak,
            l.train_ms,
            l.train_gflops,
            100.0 * l.train_gflops / peak
        );
    }
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
    workload: &HyperParams,
    [warmup, steps, eval_batches]: [usize; 3],
) -> Result<BenchResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = workload.batch_size;
    let train_device = device.clone().autodiff();
    let (model, ms_per_step) = time_steps(workload, &train_device, [warmup, steps]);
    let layers = time_layers(&model, batch, &train_device, &mut rng, steps.min(10));
    let gemm_gflops = Some(gemm_gflops(device));

    let inference = model.valid();
    let (images, _) = random_batch(&mut rng, batch, device);
    let _ = inference.forward(images.clone()).argmax(1).into_data();
    let started = Instant::now();
    for _ in 0..eval_batches {
        let _ = inference.forward(images.clone()).argmax(1).into_data();
    }
    let inference_images_per_s = (eval_batches * batch) as f64 / started.elapsed().as_secs_f64();

    let epoch_s = ms_per_step * steps_per_epoch(workload) as f64 / 1e3;
    Ok(BenchResult {
        backend: backend.to_string(),
        model: workload.model.to_string(),
        batch_size: batch,
        steps,
        ms_per_step,
        epoch_s,
        projected_run_s: epoch_s * workload.epochs as f64,
        train_images_per_s: batch as f64 * 1e3 / ms_per_step,
        inference_images_per_s,
        gemm_gflops,
        layers,
    })
}

/// A fresh model's training steps on `train_device` (an autodiff device):
/// `warmup` untimed, then `steps` timed. Returns the trained model and the
/// mean ms per timed step.
fn time_steps(
    workload: &HyperParams,
    train_device: &Device,
    [warmup, steps]: [usize; 2],
) -> (mnist_model::Network, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut model, mut training) = step::set_up(workload, train_device, 0);
    let (images, targets) = random_batch(&mut rng, workload.batch_size, train_device);
    let mut started = Instant::now();
    for index in 0..warmup + steps {
        if index == warmup {
            started = Instant::now();
        }
        let loss;
        (model, loss) = training.step(model, images.clone(), targets.clone(), workload.lr);
        // Reading the loss waits for the device, as the training loop does
        // after queueing the whole step.
        let _ = loss.into_scalar::<f32>();
    }
    (model, started.elapsed().as_secs_f64() * 1e3 / steps as f64)
}

/// Each convolution layer of `model` on its own: `runs` forward passes,
/// then `runs` forward + backward passes, over `batch` random inputs.
fn time_layers(
    model: &mnist_model::Network,
    batch: usize,
    device: &Device,
    rng: &mut ChaCha8Rng,
    runs: usize,
) -> Vec<LayerTiming> {
    let runs = runs.max(1);
    model
        .conv_layers()
        .iter()
        .map(|layer| {
            let [c, h, w] = layer.input;
            let pixels: Vec<f32> = (0..batch * c * h * w)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut input =
                Tensor::<4>::from_data(TensorData::new(pixels, [batch, c, h, w]), device);
            if layer.wants_input_grad {
                input = input.require_grad();
            }
            let forward_ms = best_ms(runs, || {
                let _ = layer.forward(input.clone()).sum().into_scalar::<f32>();
            });
            let train_ms = best_ms(runs, || {
                let grads = layer.forward(input.clone()).sum().backward();
                std::hint::black_box(grads);
            });
            let forward_flops = layer.forward_flops(batch);
            LayerTiming {
                name: layer.name.clone(),
                geometry: layer.geometry.clone(),
                input: format!("{c}×{h}×{w}"),
                mmac_per_image: layer.multiply_adds as f64 / 1e6,
                forward_ms,
                forward_gflops: forward_flops / forward_ms / 1e6,
                train_ms,
                train_gflops: (forward_flops + layer.backward_flops(batch)) / train_ms / 1e6,
            }
        })
        .collect()
}

/// Side of the square matrices whose product measures the GEMM peak.
const GEMM_SIDE: usize = 1024;

/// GFLOP/s of a `GEMM_SIDE`³ matrix product on `device`, the best of a few.
fn gemm_gflops(device: &Device) -> f64 {
    let a = Tensor::<2>::random(
        [GEMM_SIDE, GEMM_SIDE],
        burn::tensor::Distribution::Default,
        device,
    );
    let b = a.clone().transpose();
    let ms = best_ms(5, || {
        let _ = a.clone().matmul(b.clone()).slice([0..1, 0..1]).into_data();
    });
    2.0 * (GEMM_SIDE as f64).powi(3) / ms / 1e6
}

/// The fastest of `runs` calls of `f` (after one warm-up call), in ms: the
/// least disturbed by other work on the machine.
fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// PyTorch's name for the device `spec` names.
fn torch_device(spec: DeviceSpec) -> String {
    match spec {
        DeviceSpec::Cpu => "cpu".into(),
        DeviceSpec::Cuda(index) => format!("cuda:{index}"),
        DeviceSpec::Mps => "mps".into(),
    }
}

/// Seconds as `12.3 s`, `4.5 min` or `2.1 h`, whichever reads best.
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

/// Run `bench/torch_bench.py` with `flags` (the same workload) and read its JSON.
fn measure_pytorch(python: &Path, flags: &[String]) -> Result<BenchResult> {
    let script = workspace_root().join("bench/torch_bench.py");
    if !script.is_file() {
        bail!(
            "{}: not found; --python needs the repository's bench/ directory",
            script.display()
        );
    }
    let output = Command::new(python)
        .arg(&script)
        .args(flags)
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

#[cfg(test)]
mod tests {
    use super::*;
    use mnist_model::ModelKind;
    use mnist_optim::OptimizerKind;

    #[test]
    fn the_hvc_workload_is_the_papers_recipe() {
        let hvc = workload(Recipe::Hvc, None).unwrap();
        assert_eq!(hvc.model, ModelKind::Hvc);
        assert_eq!((hvc.batch_size, hvc.epochs), (120, 300));
        assert_eq!(hvc.optimizer, OptimizerKind::Adam);
        assert_eq!(hvc.ema_decay, 0.999);
        assert_eq!(steps_per_epoch(&hvc), 500);
        let notebook = workload(Recipe::Notebook, Some(1000)).unwrap();
        assert_eq!(
            (notebook.batch_size, steps_per_epoch(&notebook)),
            (1000, 60)
        );
        assert!(workload(Recipe::Notebook, Some(0)).is_err());
    }

    #[test]
    fn the_pytorch_twin_accepts_every_flag_it_is_given() {
        let script = std::fs::read_to_string(workspace_root().join("bench/torch_bench.py"))
            .expect("bench/torch_bench.py is in the repository");
        for &recipe in <Recipe as clap::ValueEnum>::value_variants() {
            let flags = torch_flags(&workload(recipe, None).unwrap());
            for flag in flags.iter().step_by(2) {
                assert!(
                    script.contains(&format!("add_argument(\"{flag}\"")),
                    "torch_bench.py has no {flag}"
                );
            }
            // Its model choices are ours.
            let model = &flags[1];
            assert!(script.contains(&format!("\"{model}\":")), "{model}");
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn rounds_are_one_to_a_hundred_and_need_python() {
        use clap::Parser;
        let parse = |rounds: &str| Cli::try_parse_from(["bench", "--rounds", rounds]);
        assert!(parse("0").is_err());
        assert!(parse("101").is_err());
        let args = parse("3").unwrap().bench;
        assert_eq!(args.rounds, 3);
        let error = run(args).unwrap_err().to_string();
        assert!(error.contains("--python"), "{error}");
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [0.9, 0.6, 0.7]), 0.7);
        assert_eq!(median(&mut [0.9, 0.6, 0.7, 0.8]), 0.75);
        assert_eq!(median(&mut [1.5]), 1.5);
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(61.0), "61.0 s");
        assert_eq!(duration(900.0), "15.0 min");
        assert_eq!(duration(3.0 * 3600.0), "3.0 h");
    }
}
