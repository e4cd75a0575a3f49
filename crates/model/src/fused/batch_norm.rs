//! Batch norm in training mode as one backend operation with its own
//! backward pass ([`batch_norm`]), for the batch norms of seed-plus and HVC
//! (HVC has twelve); followed by a ReLU ([`batch_norm_relu`], the
//! Kaggle-style CNN's blocks), or by 2×2 max-pooling and a ReLU
//! ([`batch_norm_pool_relu`], seed-plus's feature layers).
//!
//! Burn's `BatchNorm` already records one autodiff node, but every backend
//! runs its generic body: the statistics are gathered by transposing the
//! whole activation (a copy, twice forward and twice backward) and each
//! elementwise step is its own pass over memory, or its own kernel launch on
//! a GPU. Here:
//!
//! - **flex** reads the statistics in place and writes each result in one
//!   pass ([`host::batch_norm`](super::host::batch_norm));
//! - **tch** on a GPU runs libtorch's own `native_batch_norm` forward, and a
//!   backward pass of a few whole-tensor reductions with no transposes; on
//!   the CPU, where that measured slower, Burn's generic body;
//! - **ndarray** runs Burn's generic body.
//!
//! The running statistics are updated exactly as Burn's `BatchNorm` does, so
//! models, checkpoints and evaluation are unchanged.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::pool::MaxPool2d;
use burn::tensor::Tensor;

use super::{PoolSaved, composed_pool_backward, composed_pool_relu, is_pool_2x2, pool_relu};

/// Batch norm with the batch's statistics as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    LibTorch: cfg(feature = "tch"),
    Autodiff,
)]
pub trait BatchNormOps: Backend {
    /// `(x − mean) / √(variance + ε) · γ + β` over `x`'s dimension 1, with
    /// each channel's mean and biased variance taken over the batch; returns
    /// the output, the means and the variances. The default is Burn's
    /// generic batch norm.
    fn batch_norm_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_forward::<Self>(x, gamma, beta, epsilon)
    }

    /// [`batch_norm_batch_stats`](BatchNormOps::batch_norm_batch_stats)
    /// followed by a ReLU. The default composes the two.
    fn batch_norm_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (output, mean, variance) = Self::batch_norm_batch_stats(x, gamma, beta, epsilon);
        (Self::relu(output), mean, variance)
    }

    /// [`batch_norm_batch_stats`](BatchNormOps::batch_norm_batch_stats)
    /// followed by 2×2 max-pooling with stride 2 and a ReLU, for `[batch,
    /// channels, h, w]` with `h` and `w` even. The default composes the
    /// backend's own operations.
    fn batch_norm_pool_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (output, mean, variance) = Self::batch_norm_batch_stats(x, gamma, beta, epsilon);
        (composed_pool_relu::<Self>(output), mean, variance)
    }
}

/// The backward pass a backend supplies for [`BatchNormOps`]; the default is
/// Burn's generic one.
pub trait BatchNormKernels: BatchNormOps {
    /// Gradients for input, γ and β.
    fn batch_norm_batch_stats_backward(
        saved: NormSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        composed_backward::<Self>(saved, output_grad)
    }

    /// Gradients for input, γ and β of batch norm followed by a ReLU, given
    /// what batch norm saves, the (rectified) output and its gradient. The
    /// default passes the gradient through the ReLU, then batch norm.
    fn batch_norm_relu_batch_stats_backward(
        saved: NormSaved<Self>,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        let norm_grad = Self::relu_backward(output, output_grad);
        Self::batch_norm_batch_stats_backward(saved, norm_grad)
    }

    /// [`BatchNormOps::batch_norm_pool_relu_batch_stats`] with what its
    /// backward pass needs about the pooling windows (see
    /// [`PoolSaved::windows`]): returns the windows, the output, the means
    /// and the variances. The default keeps batch norm's whole output as
    /// the windows.
    fn batch_norm_pool_relu_batch_stats_parts(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> NormPoolOutputs<Self> {
        composed_pool_parts::<Self>(x, gamma, beta, epsilon)
    }

    /// Gradients for input, γ and β of batch norm → pooling → ReLU, given
    /// what batch norm saves, the pooling's windows and output, and the
    /// output's gradient. The default passes the gradient back through
    /// the pooling, then batch norm.
    fn batch_norm_pool_relu_batch_stats_backward(
        saved: NormSaved<Self>,
        pool: PoolSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        composed_pool_norm_backward::<Self>(saved, pool, output_grad)
    }
}

/// The backend's batch norm, then pooling and ReLU composed from its own
/// operations, keeping batch norm's output as the windows.
pub(super) fn composed_pool_parts<B: BatchNormOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> NormPoolOutputs<B> {
    let (normalized, mean, variance) = B::batch_norm_batch_stats(x, gamma, beta, epsilon);
    let output = composed_pool_relu::<B>(normalized.clone());
    (normalized, output, mean, variance)
}

/// The gradient back through the composed pooling and ReLU, then the
/// backend's batch norm.
pub(super) fn composed_pool_norm_backward<B: BatchNormKernels>(
    saved: NormSaved<B>,
    pool: PoolSaved<B>,
    output_grad: FloatTensor<B>,
) -> NormGrads<B> {
    let norm_grad = composed_pool_backward::<B>(pool.windows, pool.output, output_grad);
    B::batch_norm_batch_stats_backward(saved, norm_grad)
}

/// The pooling windows (see [`PoolSaved::windows`]), output, batch means
/// and batch variances of batch norm → pooling → ReLU.
pub type NormPoolOutputs<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

/// Burn's generic batch norm with batch statistics.
pub(super) fn composed_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let result = B::batch_norm_train(x, gamma, beta, epsilon);
    (result.output, result.mean, result.variance)
}

/// Burn's generic batch-norm backward pass.
pub(super) fn composed_backward<B: Backend>(
    saved: NormSaved<B>,
    output_grad: FloatTensor<B>,
) -> NormGrads<B> {
    let NormSaved {
        x,
        gamma,
        mean,
        variance,
        epsilon,
        ..
    } = saved;
    let grads = B::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
    (grads.x_grad, grads.gamma_grad, grads.beta_grad)
}

/// Gradients for input, γ and β.
pub type NormGrads<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone)]
pub struct NormSaved<B: Backend> {
    /// The input.
    pub x: FloatTensor<B>,
    /// The scale γ.
    pub gamma: FloatTensor<B>,
    /// The shift β: with γ and the statistics, it says where a ReLU after
    /// batch norm was closed, without reading the output back.
    pub beta: FloatTensor<B>,
    /// The batch means.
    pub mean: FloatTensor<B>,
    /// The batch's biased variances.
    pub variance: FloatTensor<B>,
    /// ε.
    pub epsilon: f64,
}

/// `bn.forward(x)`: in training (on an autodiff device, the layer not
/// frozen) through [`BatchNormOps`], with the running statistics updated as
/// Burn's `BatchNorm` updates them; otherwise Burn's own inference path.
pub fn batch_norm<const D: usize>(x: Tensor<D>, bn: &BatchNorm) -> Tensor<D> {
    if !in_training(&x, bn) {
        return bn.forward(x);
    }
    in_training_step(x, bn, Dispatch::batch_norm_batch_stats)
}

/// `relu(bn.forward(x))`, as one operation with its own backward pass in
/// training (see [`batch_norm()`]); otherwise Burn's own layers.
pub fn batch_norm_relu<const D: usize>(x: Tensor<D>, bn: &BatchNorm) -> Tensor<D> {
    if !in_training(&x, bn) {
        return burn::tensor::activation::relu(bn.forward(x));
    }
    in_training_step(x, bn, Dispatch::batch_norm_relu_batch_stats)
}

/// `relu(pool.forward(bn.forward(x)))`, as one operation with its own
/// backward pass in training where `pool` is a 2×2 max-pooling with stride
/// 2 and the plane is even-sized; otherwise [`batch_norm()`] then
/// [`pool_relu`].
pub fn batch_norm_pool_relu(x: Tensor<4>, bn: &BatchNorm, pool: &MaxPool2d) -> Tensor<4> {
    let [_, _, height, width] = x.dims();
    let poolable = is_pool_2x2(pool) && height.is_multiple_of(2) && width.is_multiple_of(2);
    if !poolable || !in_training(&x, bn) {
        return pool_relu(batch_norm(x, bn), pool);
    }
    in_training_step(x, bn, Dispatch::batch_norm_pool_relu_batch_stats)
}

/// One of [`BatchNormOps`]' operations with the batch's statistics: input,
/// γ, β and ε to output, means and variances.
type TrainingOp = fn(
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    FloatTensor<Dispatch>,
    f64,
) -> NormOutputs<Dispatch>;

/// `op` on `x` with `bn`'s γ, β and ε, the batch's statistics blended into
/// `bn`'s running ones as Burn's `BatchNorm` does.
fn in_training_step<const D: usize>(x: Tensor<D>, bn: &BatchNorm, op: TrainingOp) -> Tensor<D> {
    let device = x.device();
    let (output, mean, variance) = op(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, variance) = (Tensor::from_dispatch(mean), Tensor::from_dispatch(variance));
    update_running_statistics(bn, mean, variance, &device);
    Tensor::from_dispatch(output)
}

/// Whether `bn` normalises `x` with the batch's statistics: on an autodiff
/// device, the layer not frozen.
fn in_training<const D: usize>(x: &Tensor<D>, bn: &BatchNorm) -> bool {
    x.device().is_autodiff() && bn.training.is_enabled()
}

/// Blends the batch's statistics into the running ones, as Burn's
/// `BatchNorm` does.
fn update_running_statistics(
    bn: &BatchNorm,
    mean: Tensor<1>,
    variance: Tensor<1>,
    device: &burn::tensor::Device,
) {
    let blend = |running: Tensor<1>, batch: Tensor<1>| {
        running
            .to_device(device)
            .mul_scalar(1.0 - bn.momentum)
            .add(batch.detach().mul_scalar(bn.momentum))
            .detach()
    };
    bn.running_mean
        .update(blend(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(blend(bn.running_var.value_sync(), variance));
}

#[cfg(feature = "ndarray")]
mod ndarray_impl {
    use super::{BatchNormKernels, BatchNormOps};
    use burn::backend::NdArray;

    impl BatchNormOps for NdArray {}
    impl BatchNormKernels for NdArray {}
}

#[cfg(feature = "tch")]
mod tch_impl {
    //! On a GPU, libtorch's own batch norm forward (one kernel) and a
    //! backward pass of whole-tensor reductions over every dimension but the
    //! channels (no transposes), instead of the generic path's two dozen
    //! launches. On the CPU the generic path stays: there it measured faster
    //! in HVC's training step (docs/performance.md).

    use super::{
        BatchNormKernels, BatchNormOps, NormGrads, NormSaved, composed_backward, composed_forward,
    };
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::backend::tensor::FloatTensor;

    impl BatchNormOps for LibTorch {
        fn batch_norm_batch_stats(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            if x.tensor.device() == tch::Device::Cpu {
                return composed_forward::<Self>(x, gamma, beta, epsilon);
            }
            native_forward(&x, &gamma, &beta, epsilon)
        }
    }

    impl BatchNormKernels for LibTorch {
        fn batch_norm_batch_stats_backward(
            saved: NormSaved<Self>,
            output_grad: FloatTensor<Self>,
        ) -> NormGrads<Self> {
            if saved.x.tensor.device() == tch::Device::Cpu {
                return composed_backward::<Self>(saved, output_grad);
            }
            native_backward(&saved, &output_grad)
        }
    }

    pub(super) fn native_forward(
        x: &TchTensor,
        gamma: &TchTensor,
        beta: &TchTensor,
        epsilon: f64,
    ) -> (TchTensor, TchTensor, TchTensor) {
        let (output, mean, inv_std) = x.tensor.native_batch_norm(
            Some(&gamma.tensor),
            Some(&beta.tensor),
            None,
            None,
            true,
            0.0,
            epsilon,
        );
        // libtorch returns 1 / √(variance + ε); the running average wants
        // the biased variance itself.
        let variance = inv_std.pow_tensor_scalar(-2.0) - epsilon;
        (
            TchTensor::new(output),
            TchTensor::new(mean),
            TchTensor::new(variance),
        )
    }

    pub(super) fn native_backward(
        saved: &NormSaved<LibTorch>,
        output_grad: &TchTensor,
    ) -> NormGrads<LibTorch> {
        let (x, g) = (&saved.x.tensor, &output_grad.tensor);
        let rank = x.dim();
        let reduced: Vec<i64> = (0..rank as i64).filter(|&d| d != 1).collect();
        let count = (x.numel() / x.size()[1] as usize) as f64;
        // Per-channel values broadcast as [1, C, 1, …].
        let mut per_channel = vec![1i64; rank];
        per_channel[1] = -1;
        let channel = |t: &tch::Tensor| t.reshape(&per_channel);
        let inv_std = channel(&(&saved.variance.tensor + saved.epsilon).rsqrt());
        let normalized = (x - channel(&saved.mean.tensor)) * &inv_std;
        let kind = x.kind();
        let beta_grad = g.sum_dim_intlist(reduced.as_slice(), false, kind);
        let gamma_grad = (g * &normalized).sum_dim_intlist(reduced.as_slice(), false, kind);
        let x_grad = channel(&saved.gamma.tensor)
            * inv_std
            * (g - channel(&beta_grad) / count - normalized * channel(&gamma_grad) / count);
        (
            TchTensor::new(x_grad),
            TchTensor::new(gamma_grad),
            TchTensor::new(beta_grad),
        )
    }

    #[cfg(test)]
    mod tests {
        //! The GPU path's mathematics, checked on the CPU against the
        //! generic path (the same libtorch operations run on CUDA).

        use super::*;
        use burn::backend::TensorMetadata;
        use burn::tensor::{TensorData, Tolerance};

        fn random(shape: &[i64], seed: i64) -> TchTensor {
            tch::manual_seed(seed);
            TchTensor::new(tch::Tensor::randn(
                shape,
                (tch::Kind::Float, tch::Device::Cpu),
            ))
        }

        fn data(t: TchTensor) -> TensorData {
            let shape = t.shape();
            let values: Vec<f32> = Vec::try_from(t.tensor.flatten(0, -1)).unwrap();
            TensorData::new(values, shape)
        }

        #[test]
        fn native_batch_norm_matches_the_generic_path() {
            for shape in [vec![6i64, 5, 7, 9], vec![8, 10, 12]] {
                let channels = shape[1];
                let (x, g) = (random(&shape, 1), random(&shape, 2));
                let (gamma, beta) = (random(&[channels], 3), random(&[channels], 4));
                let ours = native_forward(&x, &gamma, &beta, 1e-5);
                let generic =
                    composed_forward::<LibTorch>(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                let saved = |mean: &TchTensor, variance: &TchTensor| NormSaved::<LibTorch> {
                    x: x.clone(),
                    gamma: gamma.clone(),
                    beta: beta.clone(),
                    mean: mean.clone(),
                    variance: variance.clone(),
                    epsilon: 1e-5,
                };
                let ours_grads = native_backward(&saved(&ours.1, &ours.2), &g);
                let generic_grads =
                    composed_backward::<LibTorch>(saved(&generic.1, &generic.2), g.clone());
                let pairs = [
                    (ours.0, generic.0),
                    (ours.1, generic.1),
                    (ours.2, generic.2),
                    (ours_grads.0, generic_grads.0),
                    (ours_grads.1, generic_grads.1),
                    (ours_grads.2, generic_grads.2),
                ];
                for (ours, generic) in pairs {
                    data(ours).assert_approx_eq::<f32>(&data(generic), Tolerance::absolute(1e-4));
                }
            }
        }
    }
}

/// What follows batch norm inside one [`BatchNormBackward`] node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Nothing: plain batch norm.
    Nothing,
    /// A ReLU.
    Relu,
    /// 2×2 max-pooling with stride 2, then a ReLU.
    PoolRelu,
}

/// What the node keeps, besides batch norm's own state, for what follows
/// batch norm.
#[derive(Debug, Clone)]
enum ThenSaved<B: Backend> {
    /// Plain batch norm keeps nothing more.
    Nothing,
    /// The rectified output: its zeros are where the ReLU stopped the
    /// gradient (the next layer holds the same tensor, so keeping it costs
    /// no memory).
    Relu(FloatTensor<B>),
    /// The pooling's windows and output.
    PoolRelu(PoolSaved<B>),
}

/// Batch norm, alone or followed by a ReLU or by pooling and a ReLU, as
/// one autodiff node.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: BatchNormKernels> Backward<B, 3> for BatchNormBackward {
    type State = (NormSaved<B>, ThenSaved<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [x, gamma, beta] = ops.parents.map(|node| node.map(|node| node.id));
        let output_grad = grads.consume::<B>(&ops.node);
        let (x_grad, gamma_grad, beta_grad) = match ops.state {
            (saved, ThenSaved::Nothing) => B::batch_norm_batch_stats_backward(saved, output_grad),
            (saved, ThenSaved::Relu(output)) => {
                B::batch_norm_relu_batch_stats_backward(saved, output, output_grad)
            }
            (saved, ThenSaved::PoolRelu(pool)) => {
                B::batch_norm_pool_relu_batch_stats_backward(saved, pool, output_grad)
            }
        };
        for (id, grad) in [(x, x_grad), (gamma, gamma_grad), (beta, beta_grad)] {
            if let Some(id) = id {
                grads.register::<B>(id, grad);
            }
        }
    }
}

impl<B: BatchNormKernels, C: CheckpointStrategy> BatchNormOps for Autodiff<B, C> {
    fn batch_norm_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tracked::<B, C>(x, gamma, beta, epsilon, Then::Nothing)
    }

    fn batch_norm_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tracked::<B, C>(x, gamma, beta, epsilon, Then::Relu)
    }

    fn batch_norm_pool_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        tracked::<B, C>(x, gamma, beta, epsilon, Then::PoolRelu)
    }
}

/// Batch norm's output, batch means and batch variances.
type NormOutputs<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// Batch norm and what follows it (`then`) on the inner backend, without
/// keeping anything for a backward pass.
fn untracked_forward<B: BatchNormOps>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    then: Then,
) -> NormOutputs<B> {
    match then {
        Then::Nothing => B::batch_norm_batch_stats(x, gamma, beta, epsilon),
        Then::Relu => B::batch_norm_relu_batch_stats(x, gamma, beta, epsilon),
        Then::PoolRelu => B::batch_norm_pool_relu_batch_stats(x, gamma, beta, epsilon),
    }
}

/// Batch norm and what follows it (`then`) on the inner backend, with what
/// the backward pass needs about the part after batch norm.
fn tracked_forward<B: BatchNormKernels>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    then: Then,
) -> (NormOutputs<B>, ThenSaved<B>) {
    match then {
        Then::Nothing => (
            B::batch_norm_batch_stats(x, gamma, beta, epsilon),
            ThenSaved::Nothing,
        ),
        Then::Relu => {
            let (output, mean, variance) = B::batch_norm_relu_batch_stats(x, gamma, beta, epsilon);
            let saved = ThenSaved::Relu(output.clone());
            ((output, mean, variance), saved)
        }
        Then::PoolRelu => {
            let (windows, output, mean, variance) =
                B::batch_norm_pool_relu_batch_stats_parts(x, gamma, beta, epsilon);
            let saved = ThenSaved::PoolRelu(PoolSaved {
                windows,
                output: output.clone(),
            });
            ((output, mean, variance), saved)
        }
    }
}

/// Batch norm and what follows it (`then`) on the inner backend, recorded
/// as one [`BatchNormBackward`] node when anything is tracked.
fn tracked<B: BatchNormKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
    then: Then,
) -> NormOutputs<Autodiff<B, C>> {
    let guards = [x.node(), gamma.node(), beta.node()];
    let (x, gamma, beta) = (
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    );
    let (output, mean, variance) = match BatchNormBackward
        .prepare::<C>(guards)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let ((output, mean, variance), after) =
                tracked_forward::<B>(x.clone(), gamma.clone(), beta.clone(), epsilon, then);
            let saved = NormSaved {
                x,
                gamma,
                beta,
                mean: mean.clone(),
                variance: variance.clone(),
                epsilon,
            };
            (prep.finish((saved, after), output), mean, variance)
        }
        OpsKind::UnTracked(prep) => {
            let (output, mean, variance) = untracked_forward::<B>(x, gamma, beta, epsilon, then);
            (prep.finish(output), mean, variance)
        }
    };
    // The statistics feed running averages only: constants to autodiff.
    (
        output,
        FloatTensor::<Autodiff<B, C>>::new(mean),
        FloatTensor::<Autodiff<B, C>>::new(variance),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_devices;
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::{Device, Distribution, TensorData, Tolerance};

    /// A batch norm with γ and β away from their initial 1 and 0.
    fn layer(channels: usize, device: &Device) -> BatchNorm {
        let mut bn = BatchNormConfig::new(channels).init(device);
        let ramp = |start: f32, step: f32| {
            let values: Vec<f32> = (0..channels).map(|c| start + step * c as f32).collect();
            Param::from_tensor(Tensor::from_data(
                TensorData::new(values, [channels]),
                device,
            ))
        };
        bn.gamma = ramp(0.5, 0.25);
        bn.beta = ramp(-0.3, 0.1);
        bn
    }

    /// Output, input, γ and β gradients of `Σ norm(x) · r`, then the running
    /// mean and variance after the step.
    fn run<const D: usize>(
        x: &Tensor<D>,
        r: &Tensor<D>,
        norm: &impl Fn(Tensor<D>, &BatchNorm) -> Tensor<D>,
    ) -> [TensorData; 6] {
        let bn = layer(x.dims()[1], &x.device());
        let x = x.clone().require_grad();
        let out = norm(x.clone(), &bn);
        let grads = (out.clone() * r.clone()).sum().backward();
        [
            out.into_data(),
            x.grad(&grads).expect("input gradient").into_data(),
            bn.gamma.grad(&grads).expect("γ gradient").into_data(),
            bn.beta.grad(&grads).expect("β gradient").into_data(),
            bn.running_mean.value_sync().into_data(),
            bn.running_var.value_sync().into_data(),
        ]
    }

    fn assert_matches_burn<const D: usize>(dims: [usize; D]) {
        assert_agrees(dims, dims, batch_norm, |x, bn| bn.forward(x));
    }

    /// `ours` and `burn` agree on output, gradients and running statistics
    /// on every backend, and none of them is all zeros.
    fn assert_agrees<const D: usize>(
        dims: [usize; D],
        out_dims: [usize; D],
        ours: impl Fn(Tensor<D>, &BatchNorm) -> Tensor<D>,
        burn: impl Fn(Tensor<D>, &BatchNorm) -> Tensor<D>,
    ) {
        for (backend, device) in test_devices() {
            let device = device.autodiff();
            let x = Tensor::<D>::random(dims, Distribution::Normal(0.7, 2.0), &device);
            let r = Tensor::<D>::random(out_dims, Distribution::Uniform(-1.0, 1.0), &device);
            let ours = run(&x, &r, &ours);
            let burn = run(&x, &r, &burn);
            let names = [
                "output",
                "input grad",
                "γ grad",
                "β grad",
                "running mean",
                "running var",
            ];
            for ((ours, burn), name) in ours.into_iter().zip(burn).zip(names) {
                assert!(
                    ours.clone().iter::<f32>().any(|v| v.abs() > 1e-3),
                    "{backend}: {name} is all zeros"
                );
                ours.assert_approx_eq::<f32>(&burn, Tolerance::absolute(5e-4));
            }
        }
    }

    #[test]
    fn matches_burns_batch_norm_on_feature_maps() {
        assert_matches_burn([6, 5, 7, 9]);
    }

    #[test]
    fn matches_burns_batch_norm_on_capsules() {
        // HVC's class capsules: [batch, classes, capsule dims].
        assert_matches_burn([8, 10, 12]);
    }

    #[test]
    fn with_relu_matches_burns_batch_norm_then_relu() {
        let relu_after =
            |x: Tensor<4>, bn: &BatchNorm| burn::tensor::activation::relu(bn.forward(x));
        assert_agrees([6, 5, 7, 9], [6, 5, 7, 9], batch_norm_relu, relu_after);
        // About half the outputs are zero: the mask is exercised.
        let (_, device) = test_devices().remove(0);
        let device = device.autodiff();
        let x = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let out = batch_norm_relu(x, &layer(3, &device));
        let zeros = out.equal_elem(0.0).int().sum().into_scalar::<i64>();
        assert!((50..250).contains(&zeros), "{zeros} of 300 zero");
    }

    #[test]
    fn with_pooling_matches_burns_batch_norm_then_pooling_and_relu() {
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let burns = |x: Tensor<4>, bn: &BatchNorm| {
            burn::tensor::activation::relu(pool.forward(bn.forward(x)))
        };
        let ours = |x: Tensor<4>, bn: &BatchNorm| batch_norm_pool_relu(x, bn, &pool);
        assert_agrees([6, 5, 8, 10], [6, 5, 4, 5], ours, burns);
        // An odd plane takes batch norm, then Burn's pooling.
        assert_agrees([3, 4, 7, 7], [3, 4, 3, 3], ours, burns);
    }

    #[test]
    fn with_pooling_in_inference_uses_the_running_statistics() {
        let (_, device) = test_devices().remove(0);
        let bn = layer(3, &device);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &device);
        let expected = burn::tensor::activation::relu(pool.forward(bn.forward(x.clone())));
        batch_norm_pool_relu(x, &bn, &pool)
            .into_data()
            .assert_eq(&expected.into_data(), true);
    }

    #[test]
    fn with_relu_in_inference_uses_the_running_statistics() {
        let (_, device) = test_devices().remove(0);
        let bn = layer(3, &device);
        let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &device);
        let expected = burn::tensor::activation::relu(bn.forward(x.clone()));
        batch_norm_relu(x, &bn)
            .into_data()
            .assert_eq(&expected.into_data(), true);
    }

    #[test]
    fn inference_uses_the_running_statistics() {
        let (_, device) = test_devices().remove(0);
        let bn = layer(3, &device);
        let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &device);
        let ours = batch_norm(x.clone(), &bn).into_data();
        ours.assert_eq(&bn.forward(x).into_data(), true);
        // Nothing was learned from the batch.
        bn.running_mean
            .value_sync()
            .into_data()
            .assert_eq(&TensorData::new(vec![0.0f32; 3], [3]), true);
    }
}
