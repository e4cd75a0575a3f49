//! The pooling kernels: 2×2 max-pooling with stride 2 followed by ReLU,
//! recording one [`Route`] byte per window for the backward pass. The
//! per-image pieces serve the fused convolution layer
//! ([`conv_pool_relu_forward`](super::conv::conv_pool_relu_forward)); the
//! whole-tensor ones serve seed-plus's pool → relu after batch norm.

use rayon::prelude::*;

use super::conv::ConvShape;
use super::fill::filled;

/// What the backward pass needs to know about each pooling window, one
/// byte per pooled output: the offset (0–3, row-major) of the window's first
/// maximum, or [`BLOCKED`] where the ReLU output is zero.
pub type Route = u8;

/// The [`Route`] of a window whose output the ReLU zeroed: no gradient.
pub const BLOCKED: Route = u8::MAX;

/// Bias, 2×2 max-pooling with stride 2 and ReLU for one image's
/// convolution output, recording each window's [`Route`].
pub(super) fn pool_relu_image(
    shape: &ConvShape,
    conv: &[f32],
    bias: &[f32],
    output: &mut [f32],
    routes: &mut [Route],
) {
    let pooled = shape.pooled_plane();
    for (o, plane) in conv.chunks_exact(shape.out_plane()).enumerate() {
        let out = &mut output[o * pooled..][..pooled];
        let route = &mut routes[o * pooled..][..pooled];
        pool_relu_plane(
            shape.out_height(),
            shape.out_width(),
            plane,
            |v| v,
            bias[o],
            out,
            route,
        );
    }
}

/// `relu(max_pool_2×2(map_input(plane)) + bias)` for one `h × w` plane,
/// recording each window's [`Route`]: `map_input` is applied to every input
/// before the maximum is taken (the identity after a convolution, batch
/// norm's `x · scale + shift` after batch norm), `bias` to each maximum.
///
/// Written without branches or indexing (iterators over row pairs and
/// value pairs) so that the compiler vectorises it: after a ReLU about
/// half the windows are closed, which no branch predictor guesses.
#[inline(always)]
pub(super) fn pool_relu_plane(
    h: usize,
    w: usize,
    plane: &[f32],
    map_input: impl Fn(f32) -> f32,
    bias: f32,
    out: &mut [f32],
    route: &mut [Route],
) {
    let rows = plane[..h * w].chunks_exact(2 * w);
    let out_rows = out.chunks_exact_mut(w / 2);
    for ((rows, out), route) in rows.zip(out_rows).zip(route.chunks_exact_mut(w / 2)) {
        let (top, bottom) = rows.split_at(w);
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for ((out, route), (top, bottom)) in out.iter_mut().zip(route.iter_mut()).zip(windows) {
            let (value, at) = first_maximum([top[0], top[1], bottom[0], bottom[1]].map(&map_input));
            let value = value + bias;
            let open = value > 0.0;
            *out = if open { value } else { 0.0 };
            // 0 when open, all ones (BLOCKED) when closed; `at` is 0–3.
            *route = at | Route::from(!open).wrapping_neg();
        }
    }
}

/// The largest of a window's four values, in row-major order, and its
/// offset: ties keep the earlier value at every step, as PyTorch does.
#[inline(always)]
fn first_maximum([a, b, c, d]: [f32; 4]) -> (f32, Route) {
    let (upper, upper_at) = if b > a { (b, 1) } else { (a, 0) };
    let (lower, lower_at) = if d > c { (d, 3) } else { (c, 2) };
    if lower > upper {
        (lower, lower_at)
    } else {
        (upper, upper_at)
    }
}

/// Scatters one image's pooled-output gradient onto the convolution
/// output along the routes, and adds what it routes per channel to
/// `bias_grad` (the bias gradient is the sum of the convolution's).
pub(super) fn route_to_maxima(
    shape: &ConvShape,
    routes: &[Route],
    output_grad: &[f32],
    conv_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let pooled = shape.pooled_plane();
    for o in 0..shape.out_channels {
        bias_grad[o] += route_plane(
            shape.out_height(),
            shape.out_width(),
            &routes[o * pooled..][..pooled],
            &output_grad[o * pooled..][..pooled],
            &mut conv_grad[o * shape.out_plane()..][..shape.out_plane()],
        );
    }
}

/// Scatters one pooled plane's gradient onto its `h × w` input plane along
/// the routes; returns the sum of what it routed. Branch-free and without
/// indexing, like [`pool_relu_plane`]. Always inlined: where the sum is not
/// used (batch norm → pooling's backward pass) its chain of additions, one
/// per window, is then dropped.
#[inline(always)]
pub(super) fn route_plane(
    h: usize,
    w: usize,
    routes: &[Route],
    output_grad: &[f32],
    grad_plane: &mut [f32],
) -> f32 {
    let mut sum = 0.0;
    let grad_rows = grad_plane[..h * w].chunks_exact_mut(2 * w);
    let route_rows = routes
        .chunks_exact(w / 2)
        .zip(output_grad.chunks_exact(w / 2));
    for (rows, (routes, grads)) in grad_rows.zip(route_rows) {
        let (top, bottom) = rows.split_at_mut(w);
        let windows = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
        // Every window writes all four of its cells (the windows tile
        // the plane), so the buffer needs no clearing first.
        for ((top, bottom), (&route, &grad)) in windows.zip(routes.iter().zip(grads)) {
            let grad = if route == BLOCKED { 0.0 } else { grad };
            let cell = |at: Route| if route == at { grad } else { 0.0 };
            top[0] = cell(0);
            top[1] = cell(1);
            bottom[0] = cell(2);
            bottom[1] = cell(3);
            sum += grad;
        }
    }
    sum
}

/// Planes handed to one rayon job by the whole-tensor pooling kernels:
/// enough work to outweigh scheduling (a 28×28 plane is under a microsecond).
pub(super) const PLANES_PER_JOB: usize = 64;

/// `relu(max_pool_2×2(x))` over every `h × w` plane of `input` (any number
/// of planes, `h` and `w` even), with each window's [`Route`]: batch norm's
/// output in seed-plus, where no convolution can be fused in.
///
/// # Panics
/// If `h` or `w` is odd or `input` is not whole planes.
pub fn pool_relu_forward(h: usize, w: usize, input: &[f32]) -> (Vec<f32>, Vec<Route>) {
    check_planes(h, w, input.len());
    let (plane, pooled) = (h * w, h * w / 4);
    let planes = input.len() / plane;
    let mut output = filled(0.0f32, planes * pooled);
    let mut routes = filled(BLOCKED, planes * pooled);
    output
        .par_chunks_mut(pooled * PLANES_PER_JOB)
        .zip(routes.par_chunks_mut(pooled * PLANES_PER_JOB))
        .zip(input.par_chunks(plane * PLANES_PER_JOB))
        .for_each(|((out, route), input)| {
            for ((out, route), plane) in out
                .chunks_mut(pooled)
                .zip(route.chunks_mut(pooled))
                .zip(input.chunks(plane))
            {
                pool_relu_plane(h, w, plane, |v| v, 0.0, out, route);
            }
        });
    (output, routes)
}

/// The input gradient of [`pool_relu_forward`] from its routes and its
/// output's gradient.
///
/// # Panics
/// If the lengths do not describe whole `h × w` planes.
pub fn pool_relu_backward(h: usize, w: usize, routes: &[Route], output_grad: &[f32]) -> Vec<f32> {
    check_planes(h, w, routes.len() * 4);
    assert_eq!(routes.len(), output_grad.len(), "one route per gradient");
    let (plane, pooled) = (h * w, h * w / 4);
    let mut input_grad = filled(0.0f32, routes.len() * 4);
    input_grad
        .par_chunks_mut(plane * PLANES_PER_JOB)
        .zip(routes.par_chunks(pooled * PLANES_PER_JOB))
        .zip(output_grad.par_chunks(pooled * PLANES_PER_JOB))
        .for_each(|((grad, routes), output_grad)| {
            for ((grad, routes), output_grad) in grad
                .chunks_mut(plane)
                .zip(routes.chunks(pooled))
                .zip(output_grad.chunks(pooled))
            {
                route_plane(h, w, routes, output_grad, grad);
            }
        });
    input_grad
}

/// Checks that `len` values are whole `h × w` planes that 2×2 windows tile.
pub(super) fn check_planes(h: usize, w: usize, len: usize) {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2) && h > 0 && w > 0,
        "2×2 pooling needs an even-sized plane, got {h}×{w}"
    );
    assert!(
        len.is_multiple_of(h * w),
        "{len} values are not whole {h}×{w} planes"
    );
}
