//! Criterion micro-benchmarks of the seed CNN's hot operations at the
//! notebook's batch size (600), on every compiled CPU backend:
//!
//! - the whole forward pass, and forward + backward;
//! - conv2 (16→32, 5×5 on 14×14), forward and forward + backward, as Burn's
//!   layer and as `mnist_model::fused::conv_same` (seed-plus's convolutions);
//! - the first max-pool (16 × 28×28), forward and forward + backward;
//! - conv2 → pool → relu as the fused operation the model uses
//!   (`mnist_model::fused`) against the three separate operations.
//!
//! The whole-network group also times the unfused network (the same layers
//! called one operation at a time), so the fusion's gain is read off one run.
//!
//! `cargo bench -p mnist-model --features flex --bench ops` (add
//! `-- conv2` to run one group). Whole training steps against PyTorch are
//! `cargo xtask bench`'s job; these numbers locate where a step's time goes.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mnist_model::backend::BackendKind;
use mnist_model::fused::{conv_pool_relu, conv_same};
use mnist_model::{SeedCnn, SeedCnnConfig};

const BATCH: usize = 600;

fn devices() -> Vec<(&'static str, Device)> {
    BackendKind::compiled()
        .into_iter()
        // ndarray takes seconds per step: too slow to sample usefully.
        .filter(|b| *b != BackendKind::NdArray || BackendKind::compiled().len() == 1)
        .filter_map(|b| Some((b.name(), b.device(mnist_model::DeviceSpec::Cpu).ok()?)))
        .collect()
}

/// Read a value back so lazy backends finish the work inside the timing.
fn sync<const D: usize>(t: Tensor<D>) {
    let _ = t.sum().into_scalar::<f32>();
}

/// The seed CNN with conv → pool → relu as three operations, as before the
/// fusion.
fn unfused_forward(model: &SeedCnn, images: Tensor<4>) -> Tensor<2> {
    let x = model
        .relu
        .forward(model.pool.forward(model.conv1.forward(images)));
    let x = model
        .relu
        .forward(model.pool.forward(model.conv2.forward(x)));
    let x = model.relu.forward(model.fc1.forward(x.flatten::<2>(1, 3)));
    model.fc2.forward(x)
}

fn whole_network(c: &mut Criterion) {
    let mut group = c.benchmark_group("seed_cnn");
    group.sample_size(10);
    for (name, device) in devices() {
        let model = SeedCnnConfig::new().init(0, &device);
        let images = Tensor::<4>::random([BATCH, 1, 28, 28], Distribution::Default, &device);
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| sync(model.forward(images.clone())))
        });
        let train_device = device.clone().autodiff();
        let model = SeedCnnConfig::new().init(0, &train_device);
        let images = Tensor::<4>::random([BATCH, 1, 28, 28], Distribution::Default, &train_device);
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| {
                let grads = model.forward(images.clone()).sum().backward();
                std::hint::black_box(grads);
            })
        });
        group.bench_function(BenchmarkId::new("forward_backward_unfused", name), |b| {
            b.iter(|| {
                let grads = unfused_forward(&model, images.clone()).sum().backward();
                std::hint::black_box(grads);
            })
        });
    }
    group.finish();
}

fn conv2(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2");
    group.sample_size(10);
    for (name, device) in devices() {
        let input = Tensor::<4>::random([BATCH, 16, 14, 14], Distribution::Default, &device);
        let conv = Conv2dConfig::new([16, 32], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&device);
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| sync(conv.forward(input.clone())))
        });
        group.bench_function(BenchmarkId::new("conv_same_forward", name), |b| {
            b.iter(|| sync(conv_same(input.clone(), &conv)))
        });
        let train_device = device.clone().autodiff();
        let conv = Conv2dConfig::new([16, 32], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&train_device);
        let input = Tensor::<4>::random([BATCH, 16, 14, 14], Distribution::Default, &train_device)
            .require_grad();
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(conv.forward(input.clone()).sum().backward()))
        });
        group.bench_function(BenchmarkId::new("conv_same_forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(conv_same(input.clone(), &conv).sum().backward()))
        });
    }
    group.finish();
}

fn max_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("max_pool1");
    group.sample_size(10);
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    for (name, device) in devices() {
        let input = Tensor::<4>::random([BATCH, 16, 28, 28], Distribution::Default, &device);
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| sync(pool.forward(input.clone())))
        });
        let train_device = device.clone().autodiff();
        let input = Tensor::<4>::random([BATCH, 16, 28, 28], Distribution::Default, &train_device)
            .require_grad();
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(pool.forward(input.clone()).sum().backward()))
        });
    }
    group.finish();
}

fn conv2_pool_relu(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2_pool_relu");
    group.sample_size(10);
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    for (name, device) in devices() {
        let device = device.autodiff();
        let conv = Conv2dConfig::new([16, 32], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&device);
        let input =
            Tensor::<4>::random([BATCH, 16, 14, 14], Distribution::Default, &device).require_grad();
        group.bench_function(BenchmarkId::new("fused_forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(conv_pool_relu(input.clone(), &conv).sum().backward()))
        });
        group.bench_function(BenchmarkId::new("separate_forward_backward", name), |b| {
            b.iter(|| {
                let y = burn::tensor::activation::relu(pool.forward(conv.forward(input.clone())));
                std::hint::black_box(y.sum().backward())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, whole_network, conv2, max_pool, conv2_pool_relu);
criterion_main!(benches);
