//! Criterion micro-benchmarks of the seed CNN's hot operations at the
//! notebook's batch size (600), on every compiled CPU backend:
//!
//! - the whole forward pass, and forward + backward;
//! - conv2 (16→32, 5×5 on 14×14), forward and forward + backward, as Burn's
//!   layer and as `mnist_model::fused::conv` (seed-plus's convolutions);
//! - the first max-pool (16 × 28×28), forward and forward + backward;
//! - conv2 → pool → relu as the fused operation the model uses
//!   (`mnist_model::fused`) against the three separate operations;
//! - batch norm in training, forward + backward, as Burn's layer and as
//!   `mnist_model::fused::batch_norm`, at seed-plus's first (128 × 16 ×
//!   28×28) and HVC's third (120 × 64 × 22×22) layer and HVC's last class
//!   capsules (120 × 10 × 160);
//! - batch norm → pool → ReLU, forward + backward, at seed-plus's first
//!   layer (128 × 16 × 28×28), as one operation
//!   (`mnist_model::fused::batch_norm_pool_relu`) and as `fused::batch_norm`
//!   then `fused::pool_relu`;
//! - seed-plus's forward + backward at its batch size (128), as the model
//!   runs it and with Burn's batch norm, max-pool and ReLU in place of
//!   `fused::batch_norm_pool_relu`.
//!
//! The whole-network group also times the unfused network (the same layers
//! called one operation at a time), so the fusion's gain is read off one run.
//!
//! `cargo bench -p mnist-model --features flex --bench ops` (add
//! `-- conv2` to run one group). Whole training steps against PyTorch are
//! `cargo xtask bench`'s job; these numbers locate where a step's time goes.

use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mnist_model::backend::BackendKind;
use mnist_model::fused::{batch_norm, batch_norm_pool_relu, conv, conv_pool_relu, pool_relu};
use mnist_model::{SeedCnn, SeedCnnConfig, SeedPlusCnn, SeedPlusCnnConfig};

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
        let layer = Conv2dConfig::new([16, 32], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&device);
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| sync(layer.forward(input.clone())))
        });
        group.bench_function(BenchmarkId::new("fused_conv_forward", name), |b| {
            b.iter(|| sync(conv(input.clone(), &layer)))
        });
        let train_device = device.clone().autodiff();
        let layer = Conv2dConfig::new([16, 32], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&train_device);
        let input = Tensor::<4>::random([BATCH, 16, 14, 14], Distribution::Default, &train_device)
            .require_grad();
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(layer.forward(input.clone()).sum().backward()))
        });
        group.bench_function(BenchmarkId::new("fused_conv_forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(conv(input.clone(), &layer).sum().backward()))
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
            b.iter(|| {
                std::hint::black_box(conv_pool_relu(input.clone(), &conv, &pool).sum().backward())
            })
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

fn batch_norms(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_norm");
    group.sample_size(10);
    for (name, device) in devices() {
        let device = device.autodiff();
        let inputs: [(&str, Vec<usize>); 3] = [
            ("seed_plus_bn1", vec![128, 16, 28, 28]),
            ("hvc_conv3", vec![120, 64, 22, 22]),
            ("hvc_capsules", vec![120, 10, 160]),
        ];
        for (layer, dims) in inputs {
            let bn = BatchNormConfig::new(dims[1]).init(&device);
            let flat: usize = dims.iter().product();
            let input = Tensor::<1>::random([flat], Distribution::Default, &device);
            let input: Tensor<4> = match dims[..] {
                [b, c, h, w] => input.reshape([b, c, h, w]),
                [b, c, d] => input.reshape([b, c, d, 1]),
                _ => unreachable!(),
            }
            .require_grad();
            let id = |how: &str| BenchmarkId::new(format!("{layer}_{how}"), name);
            group.bench_function(id("burn"), |b| {
                b.iter(|| std::hint::black_box(bn.forward(input.clone()).sum().backward()))
            });
            group.bench_function(id("fused"), |b| {
                b.iter(|| std::hint::black_box(batch_norm(input.clone(), &bn).sum().backward()))
            });
        }
    }
    group.finish();
}

fn batch_norm_pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_norm_pool_relu");
    group.sample_size(20);
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    for (name, device) in devices() {
        let device = device.autodiff();
        let bn = BatchNormConfig::new(16).init(&device);
        let input =
            Tensor::<4>::random([128, 16, 28, 28], Distribution::Default, &device).require_grad();
        // A random weighting, as in `seed_plus` below: a plain sum's
        // gradient would be the same for every window.
        let weights = Tensor::<4>::random([128, 16, 14, 14], Distribution::Default, &device);
        let objective = |y: Tensor<4>| (y * weights.clone()).sum();
        group.bench_function(BenchmarkId::new("one_layer", name), |b| {
            b.iter(|| {
                let y = batch_norm_pool_relu(input.clone(), &bn, &pool);
                std::hint::black_box(objective(y).backward())
            })
        });
        group.bench_function(BenchmarkId::new("batch_norm_then_pool_relu", name), |b| {
            b.iter(|| {
                let y = pool_relu(batch_norm(input.clone(), &bn), &pool);
                std::hint::black_box(objective(y).backward())
            })
        });
    }
    group.finish();
}

/// seed-plus's forward pass with Burn's own batch norm, pooling and ReLU.
fn seed_plus_with_burns_layers(model: &SeedPlusCnn, images: Tensor<4>) -> Tensor<2> {
    let x = model.bn1.forward(conv(images, &model.conv1));
    let x = model.relu.forward(model.pool.forward(x));
    let x = model.bn2.forward(conv(x, &model.conv2));
    let x = model.relu.forward(model.pool.forward(x));
    let x = model.relu.forward(model.fc1.forward(x.flatten::<2>(1, 3)));
    model.fc2.forward(model.dropout.forward(x))
}

fn seed_plus(c: &mut Criterion) {
    let mut group = c.benchmark_group("seed_plus");
    group.sample_size(20);
    for (name, device) in devices() {
        let device = device.autodiff();
        let model = SeedPlusCnnConfig::new().init(0, &device);
        let images = Tensor::<4>::random([128, 1, 28, 28], Distribution::Default, &device);
        // A fixed random weighting of the logits: a plain sum would send
        // batch norm an all-equal gradient, whose input gradient is zero.
        let weights = Tensor::<2>::random([128, 10], Distribution::Default, &device);
        let objective = |logits: Tensor<2>| (logits * weights.clone()).sum();
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| std::hint::black_box(objective(model.forward(images.clone())).backward()))
        });
        group.bench_function(
            BenchmarkId::new("forward_backward_burn_layers", name),
            |b| {
                b.iter(|| {
                    let logits = seed_plus_with_burns_layers(&model, images.clone());
                    std::hint::black_box(objective(logits).backward())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    seed_plus,
    whole_network,
    conv2,
    max_pool,
    conv2_pool_relu,
    batch_norms,
    batch_norm_pool
);
criterion_main!(benches);
