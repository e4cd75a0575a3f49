//! The fused layer, the plain convolution, pooling + ReLU, batch norm and
//! dropout's mask on flex: the [`host`](super::host)
//! kernels on the tensors' own memory. Anything but `f32` takes the
//! composed default.

use super::batch_norm::{
    self, BatchNormKernels, BatchNormOps, NormGrads, NormPoolOutputs, NormSaved,
};
use super::dropout::DropoutOps;
use super::host::{self, ConvShape, NormShape};
use super::{
    ConvPoolKernels, ConvPoolOps, ConvSaved, ConvSpec, LayerGrads, PoolSaved, Saved,
    composed_backward, composed_conv, composed_conv_backward, composed_parts,
    composed_pool_backward, composed_pool_relu,
};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata};
use burn::tensor::{DType, Distribution, Shape, TensorData};

impl ConvPoolOps for Flex {
    fn conv_pool_relu(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv_pool_relu_parts(x, weight, bias).1
    }

    fn pool_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::pool_relu_parts(x).1
    }

    fn conv_layer(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let spec = ConvSpec { stride, padding };
        let Some(shape) = conv_shape(&x, &weight, &spec) else {
            return composed_conv::<Self>(x, weight, bias, &spec);
        };
        let (x, weight, bias) = (dense(x), dense(weight), dense(bias));
        let output = host::conv2d_forward(&shape, f32s(&x), f32s(&weight), f32s(&bias));
        tensor(output, conv_output_shape(&shape))
    }
}

impl ConvPoolKernels for Flex {
    fn pool_relu_parts(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if x.dtype() != DType::F32 {
            return (x.clone(), composed_pool_relu::<Self>(x));
        }
        let [batch, channels, height, width] = x.shape().dims();
        let x = dense(x);
        let (output, routes) = host::pool_relu_forward(height, width, f32s(&x));
        let shape = Shape::new([batch, channels, height / 2, width / 2]);
        (
            FlexTensor::from_data(TensorData::new(routes, shape.clone())),
            tensor(output, shape),
        )
    }

    fn pool_relu_backward(
        saved: PoolSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if saved.windows.dtype() != DType::U8 {
            return composed_pool_backward::<Self>(saved.windows, saved.output, output_grad);
        }
        let [batch, channels, height, width] = saved.windows.shape().dims();
        let (height, width) = (height * 2, width * 2);
        let output_grad = dense(output_grad);
        let routes = saved
            .windows
            .as_slice::<u8>()
            .expect("routes are written contiguous by pool_relu_parts");
        let grad = host::pool_relu_backward(height, width, routes, f32s(&output_grad));
        tensor(grad, Shape::new([batch, channels, height, width]))
    }

    fn conv_pool_relu_parts(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let Some(shape) = host_shape(&x, &weight) else {
            return composed_parts::<Self>(x, weight, bias);
        };
        let (x, weight, bias) = (dense(x), dense(weight), dense(bias));
        let (output, routes) =
            host::conv_pool_relu_forward(&shape, f32s(&x), f32s(&weight), f32s(&bias));
        (
            FlexTensor::from_data(TensorData::new(routes, output_shape(&shape))),
            tensor(output, output_shape(&shape)),
        )
    }

    fn conv_pool_relu_backward(
        saved: Saved<Self>,
        output_grad: FloatTensor<Self>,
        want_x: bool,
    ) -> LayerGrads<Self> {
        // Windows saved as anything but route bytes came from the composed
        // forward pass: differentiate them the same way.
        let (Some(shape), DType::U8) = (host_shape(&saved.x, &saved.weight), saved.windows.dtype())
        else {
            return composed_backward::<Self>(saved, output_grad, want_x);
        };
        let (x_shape, weight_shape) = (saved.x.shape(), saved.weight.shape());
        let (x, weight, output_grad) = (dense(saved.x), dense(saved.weight), dense(output_grad));
        let routes = saved
            .windows
            .as_slice::<u8>()
            .expect("routes are written contiguous by conv_pool_relu_parts");
        let grads = host::conv_pool_relu_backward(
            &shape,
            f32s(&x),
            f32s(&weight),
            routes,
            f32s(&output_grad),
            want_x,
        );
        grad_tensors(grads, x_shape, weight_shape)
    }

    fn conv_layer_backward(
        saved: ConvSaved<Self>,
        output_grad: FloatTensor<Self>,
        want_x: bool,
    ) -> LayerGrads<Self> {
        let shape = conv_shape(&saved.x, &saved.weight, &saved.spec);
        let (Some(shape), DType::F32) = (shape, output_grad.dtype()) else {
            return composed_conv_backward::<Self>(saved, output_grad, want_x);
        };
        let (x_shape, weight_shape) = (saved.x.shape(), saved.weight.shape());
        let (x, weight, output_grad) = (dense(saved.x), dense(saved.weight), dense(output_grad));
        let grads =
            host::conv2d_backward(&shape, f32s(&x), f32s(&weight), f32s(&output_grad), want_x);
        grad_tensors(grads, x_shape, weight_shape)
    }
}

/// The host kernels' gradients as tensors of the input's and weight's shapes.
fn grad_tensors(
    grads: host::ConvPoolGrads,
    x_shape: Shape,
    weight_shape: Shape,
) -> LayerGrads<Flex> {
    let bias_shape = Shape::new([grads.bias.len()]);
    (
        grads.input.map(|g| tensor(g, x_shape)),
        tensor(grads.weight, weight_shape),
        tensor(grads.bias, bias_shape),
    )
}

/// The convolution's shape, when both tensors are `f32` and the host
/// kernels cover it.
fn conv_shape(x: &FlexTensor, weight: &FlexTensor, spec: &ConvSpec) -> Option<ConvShape> {
    let shape = tensor_shape(x, weight, spec)?;
    shape.conv_is_supported().then_some(shape)
}

/// The fused layer's shape ("same" convolution, then 2×2 pooling), when
/// both tensors are `f32` and the layer fits.
fn host_shape(x: &FlexTensor, weight: &FlexTensor) -> Option<ConvShape> {
    let shape = tensor_shape(x, weight, &ConvSpec::same(weight))?;
    shape.is_supported().then_some(shape)
}

/// Both tensors' dimensions as one layer's shape, when they are `f32` and
/// agree (square kernel, matching channels).
fn tensor_shape(x: &FlexTensor, weight: &FlexTensor, spec: &ConvSpec) -> Option<ConvShape> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    let [batch, in_channels, height, width] = x.shape().dims();
    let [out_channels, weight_in, kh, kw] = weight.shape().dims();
    let shape = ConvShape {
        batch,
        in_channels,
        out_channels,
        height,
        width,
        kernel: kh,
        stride: spec.stride,
        padding: spec.padding,
    };
    (weight_in == in_channels && kh == kw).then_some(shape)
}

fn conv_output_shape(shape: &ConvShape) -> Shape {
    Shape::new([
        shape.batch,
        shape.out_channels,
        shape.out_height(),
        shape.out_width(),
    ])
}

fn output_shape(shape: &ConvShape) -> Shape {
    Shape::new([
        shape.batch,
        shape.out_channels,
        shape.out_height() / 2,
        shape.out_width() / 2,
    ])
}

/// The tensor in row-major order with no offset (a copy only when it is a
/// strided view).
fn dense(tensor: FlexTensor) -> FlexTensor {
    if tensor.as_slice::<f32>().is_some() {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("dense() returned a contiguous f32 tensor")
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl BatchNormOps for Flex {
    fn batch_norm_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if norm_shape(&x, &gamma).is_none() {
            return batch_norm::composed_forward::<Self>(x, gamma, beta, epsilon);
        }
        norm_forward(x, gamma, beta, epsilon, host::batch_norm_forward)
    }

    fn batch_norm_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if norm_shape(&x, &gamma).is_none() {
            let (output, mean, variance) =
                batch_norm::composed_forward::<Self>(x, gamma, beta, epsilon);
            return (relu::<Self>(output), mean, variance);
        }
        norm_forward(x, gamma, beta, epsilon, host::batch_norm_relu_forward)
    }

    fn batch_norm_pool_relu_batch_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (_, output, mean, variance) =
            Self::batch_norm_pool_relu_batch_stats_parts(x, gamma, beta, epsilon);
        (output, mean, variance)
    }
}

/// `host::batch_norm_forward` or `host::batch_norm_relu_forward`.
type NormKernel = fn(&NormShape, &[f32], &[f32], &[f32], f64) -> host::NormForward;

/// A host batch-norm forward kernel on flex tensors whose layout
/// [`norm_shape`] accepts.
fn norm_forward(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
    kernel: NormKernel,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = norm_shape(&x, &gamma).expect("checked by the caller");
    let x_shape = x.shape();
    let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
    let result = kernel(&shape, f32s(&x), f32s(&gamma), f32s(&beta), epsilon);
    let channels = Shape::new([shape.channels]);
    (
        tensor(result.output, x_shape),
        tensor(result.mean, channels.clone()),
        tensor(result.variance, channels),
    )
}

impl BatchNormKernels for Flex {
    fn batch_norm_batch_stats_backward(
        saved: NormSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        let (Some(shape), DType::F32) = (norm_shape(&saved.x, &saved.gamma), output_grad.dtype())
        else {
            return batch_norm::composed_backward::<Self>(saved, output_grad);
        };
        let x_shape = saved.x.shape();
        let [x, gamma, mean, variance, output_grad] = [
            saved.x,
            saved.gamma,
            saved.mean,
            saved.variance,
            output_grad,
        ]
        .map(dense);
        let grads = host::batch_norm_backward(
            &shape,
            f32s(&x),
            f32s(&gamma),
            f32s(&mean),
            f32s(&variance),
            saved.epsilon,
            f32s(&output_grad),
        );
        norm_grad_tensors(grads, x_shape, shape.channels)
    }

    fn batch_norm_relu_batch_stats_backward(
        saved: NormSaved<Self>,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        let (Some(shape), DType::F32, DType::F32) = (
            norm_shape(&saved.x, &saved.gamma),
            saved.beta.dtype(),
            output_grad.dtype(),
        ) else {
            let norm_grad = relu_backward::<Self>(output, output_grad);
            return batch_norm::composed_backward::<Self>(saved, norm_grad);
        };
        // The host kernel works out where the ReLU was closed from the
        // input and β; the output is not read.
        let x_shape = saved.x.shape();
        let [x, gamma, beta, mean, variance, output_grad] = [
            saved.x,
            saved.gamma,
            saved.beta,
            saved.mean,
            saved.variance,
            output_grad,
        ]
        .map(dense);
        let grads = host::batch_norm_relu_backward(
            &shape,
            f32s(&x),
            f32s(&gamma),
            f32s(&beta),
            f32s(&mean),
            f32s(&variance),
            saved.epsilon,
            f32s(&output_grad),
        );
        norm_grad_tensors(grads, x_shape, shape.channels)
    }

    fn batch_norm_pool_relu_batch_stats_parts(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> NormPoolOutputs<Self> {
        let Some(dims @ [batch, channels, h, w]) = pool_norm_dims(&x, &gamma) else {
            return batch_norm::composed_pool_parts::<Self>(x, gamma, beta, epsilon);
        };
        let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
        let result =
            host::batch_norm_pool_relu_forward(dims, f32s(&x), f32s(&gamma), f32s(&beta), epsilon);
        let pooled = Shape::new([batch, channels, h / 2, w / 2]);
        let per_channel = Shape::new([channels]);
        (
            FlexTensor::from_data(TensorData::new(result.routes, pooled.clone())),
            tensor(result.output, pooled),
            tensor(result.mean, per_channel.clone()),
            tensor(result.variance, per_channel),
        )
    }

    fn batch_norm_pool_relu_batch_stats_backward(
        saved: NormSaved<Self>,
        pool: PoolSaved<Self>,
        output_grad: FloatTensor<Self>,
    ) -> NormGrads<Self> {
        // Windows saved as anything but route bytes came from the composed
        // forward pass: differentiate them the same way.
        let dims = pool_norm_dims(&saved.x, &saved.gamma);
        let (Some(dims), DType::U8, DType::F32) = (dims, pool.windows.dtype(), output_grad.dtype())
        else {
            return batch_norm::composed_pool_norm_backward::<Self>(saved, pool, output_grad);
        };
        let x_shape = saved.x.shape();
        let [x, gamma, mean, variance, output_grad] = [
            saved.x,
            saved.gamma,
            saved.mean,
            saved.variance,
            output_grad,
        ]
        .map(dense);
        let routes = pool
            .windows
            .as_slice::<u8>()
            .expect("routes are written contiguous by batch_norm_pool_relu_batch_stats_parts");
        let grads = host::batch_norm_pool_relu_backward(
            dims,
            f32s(&x),
            f32s(&gamma),
            f32s(&mean),
            f32s(&variance),
            saved.epsilon,
            routes,
            f32s(&output_grad),
        );
        norm_grad_tensors(grads, x_shape, dims[1])
    }
}

/// `[batch, channels, h, w]` of a batch norm → pooling input, when it and γ
/// are `f32` and the plane can be pooled 2×2.
fn pool_norm_dims(x: &FlexTensor, gamma: &FlexTensor) -> Option<[usize; 4]> {
    let dims: [usize; 4] = x.shape().to_vec().try_into().ok()?;
    let [_, _, h, w] = dims;
    let poolable = h > 0 && w > 0 && h.is_multiple_of(2) && w.is_multiple_of(2);
    (norm_shape(x, gamma).is_some() && poolable).then_some(dims)
}

/// The backend's own ReLU (a supertrait's method, reached through a bound).
fn relu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::relu(x)
}

fn relu_backward<B: Backend>(output: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    B::relu_backward(output, grad)
}

fn norm_grad_tensors(grads: host::NormGrads, x_shape: Shape, channels: usize) -> NormGrads<Flex> {
    let channels = Shape::new([channels]);
    (
        tensor(grads.input, x_shape),
        tensor(grads.gamma, channels.clone()),
        tensor(grads.beta, channels),
    )
}

/// A batch-norm input's layout, when it and γ are `f32` and at least
/// `[batch, channels]`.
fn norm_shape(x: &FlexTensor, gamma: &FlexTensor) -> Option<NormShape> {
    let dims = x.shape().to_vec();
    if x.dtype() != DType::F32 || gamma.dtype() != DType::F32 || dims.len() < 2 {
        return None;
    }
    Some(NormShape {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2..].iter().product(),
    })
}

impl DropoutOps for Flex {
    fn dropout_mask(like: FloatTensor<Self>, keep: f64) -> FloatTensor<Self> {
        if like.dtype() != DType::F32 {
            return super::dropout::composed_mask::<Self>(like, keep);
        }
        let shape = like.shape();
        let mask = host::dropout_mask(shape.num_elements(), keep, seed_from_backend());
        tensor(mask, shape)
    }
}

/// 64 bits for the host's mask generator, drawn from flex's own seeded
/// generator, so that `device.seed(…)` decides the masks as it decides
/// Burn's.
fn seed_from_backend() -> u64 {
    let draws = <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_random(
        Shape::new([4]),
        Distribution::Uniform(0.0, 65_536.0),
        &Default::default(),
        burn::tensor::FloatDType::F32,
    );
    f32s(&dense(draws))
        .iter()
        .fold(0u64, |seed, &draw| (seed << 16) | u64::from(draw as u16))
}
