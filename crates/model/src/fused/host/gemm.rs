//! The one call into the `gemm` crate (the GEMM Burn's flex backend uses),
//! behind bounds checks: the workspace's only `unsafe` block.

/// A row-major destination matrix and its row stride.
pub(super) struct Matrix<'a> {
    data: &'a mut [f32],
    row_stride: usize,
}

impl<'a> Matrix<'a> {
    pub(super) fn row_major(data: &'a mut [f32], row_stride: usize) -> Self {
        Self { data, row_stride }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, single-threaded (the callers
/// parallelise over images). `lhs` and `rhs` are `(data, row stride,
/// column stride)`.
pub(super) fn gemm_f32(
    dst: Matrix<'_>,
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    let extent = |rows: usize, cols: usize, rs: isize, cs: isize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    // The bounds the unsafe call relies on, checked on every call: they cost
    // nothing next to the multiplication.
    assert!(lhs.1 >= 0 && lhs.2 >= 0 && rhs.1 >= 0 && rhs.2 >= 0);
    assert!(extent(m, k, lhs.1, lhs.2) <= lhs.0.len(), "gemm lhs bounds");
    assert!(extent(k, n, rhs.1, rhs.2) <= rhs.0.len(), "gemm rhs bounds");
    assert!(
        n <= dst.row_stride && extent(m, n, dst.row_stride as isize, 1) <= dst.data.len(),
        "gemm dst bounds"
    );
    #[allow(unsafe_code)]
    // SAFETY: the asserts above keep every element gemm reads (lhs, rhs) or
    // writes (dst) inside its slice; `dst` is borrowed mutably, so it
    // aliases neither input; the call is single-threaded.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
