//! Whole-tensor buffers, filled by all of rayon's threads.
//!
//! `vec![0.0; n]` is cleared by the calling thread alone (the allocator
//! hands back reused memory and zeroes it) while the other cores wait for
//! the parallel pass that follows. A layer's activations are several MB,
//! so that serial fill was a measurable share of a training step.

use rayon::iter::{ParallelExtend, repeat_n};

/// `n` copies of `value`, written in parallel.
pub(super) fn filled<T: Copy + Send + Sync>(value: T, n: usize) -> Vec<T> {
    let mut buffer = Vec::with_capacity(n);
    buffer.par_extend(repeat_n(value, n));
    buffer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_n_copies() {
        for n in [0, 1, 7, 100_003] {
            let buffer = filled(2.5f32, n);
            assert_eq!(buffer.len(), n);
            assert!(buffer.iter().all(|&v| v == 2.5));
        }
        assert_eq!(filled(u8::MAX, 3), [255, 255, 255]);
    }
}
