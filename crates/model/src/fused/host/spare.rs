//! Scratch buffers kept by each thread from one kernel call to the next.
//!
//! A convolution's rayon jobs each need an unrolled-image or tile buffer
//! of a few MB. Allocated afresh, such a buffer comes from the operating
//! system on every call (page faults, and the kernel zeroing every page)
//! and is then zeroed again by `vec!`; a training step makes dozens. Kept
//! here, it is allocated once per thread and reused.
//!
//! A [`Spare`] buffer arrives holding whatever its last user left: only for
//! buffers whose users write every value before reading it (the scratch
//! buffers of the host kernels already do, as each job reuses its own
//! buffers across its groups of images).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps at most; more are freed.
const KEPT: usize = 4;

thread_local! {
    static KEPT_BUFFERS: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `len` values, stale contents included, at the start of a buffer that
/// goes back to its thread's spares when dropped.
pub(super) struct Spare {
    buffer: Vec<f32>,
    len: usize,
}

impl Spare {
    /// The first `len` values of the thread's largest spare buffer. The
    /// buffer only ever grows (the new part zeroed), so a later, longer
    /// request within what it already holds writes nothing.
    pub(super) fn take(len: usize) -> Self {
        let mut buffer = KEPT_BUFFERS
            .with_borrow_mut(|kept| {
                let largest = (0..kept.len()).max_by_key(|&i| kept[i].len())?;
                Some(kept.swap_remove(largest))
            })
            .unwrap_or_default();
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        Self { buffer, len }
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        // During thread teardown the thread-local may be gone; the buffer
        // is then simply freed.
        let _ = KEPT_BUFFERS.try_with(|kept| {
            let mut kept = kept.borrow_mut();
            kept.push(buffer);
            if kept.len() > KEPT {
                let smallest = (0..kept.len())
                    .min_by_key(|&i| kept[i].len())
                    .expect("more than KEPT buffers");
                kept.swap_remove(smallest);
            }
        });
    }
}

impl Deref for Spare {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buffer[..self.len]
    }
}

impl DerefMut for Spare {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buffer[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_by_the_next_take() {
        let mut first = Spare::take(1000);
        first[999] = 7.0;
        let address = first.as_ptr();
        drop(first);
        let second = Spare::take(1000);
        assert_eq!(second.as_ptr(), address, "same allocation");
        assert_eq!(second[999], 7.0, "stale contents are kept");
        assert_eq!(second.len(), 1000);
    }

    #[test]
    fn growing_zeroes_the_new_part_and_shorter_requests_keep_the_rest() {
        let mut first = Spare::take(10);
        first.fill(3.0);
        drop(first);
        let mut grown = Spare::take(20);
        assert_eq!(grown.len(), 20);
        assert_eq!(grown[..10], [3.0; 10]);
        assert!(grown[10..].iter().all(|&v| v == 0.0));
        grown.fill(1.0);
        drop(grown);
        let mut shorter = Spare::take(5);
        assert_eq!(*shorter, [1.0; 5]);
        shorter.fill(2.0);
        drop(shorter);
        // The values past the shorter request were kept, not zeroed.
        let again = Spare::take(20);
        assert_eq!(again[..5], [2.0; 5]);
        assert_eq!(again[5..], [1.0; 15]);
    }

    #[test]
    fn a_thread_keeps_at_most_kept_buffers() {
        let buffers: Vec<Spare> = (1..=KEPT + 3).map(|n| Spare::take(100 * n)).collect();
        drop(buffers);
        let kept = KEPT_BUFFERS.with_borrow(|kept| {
            let mut sizes: Vec<usize> = kept.iter().map(Vec::len).collect();
            sizes.sort_unstable();
            sizes
        });
        assert_eq!(kept.len(), KEPT);
        // The largest ones stay.
        assert!(kept[0] >= 100 * 4, "{kept:?}");
    }
}
