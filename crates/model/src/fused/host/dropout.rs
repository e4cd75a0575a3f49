//! Dropout's mask on the host: `1 / keep` with probability `keep`, else 0,
//! filled in parallel from a seed.
//!
//! Each chunk of 16,384 values has its own ChaCha8 stream (the seed, and
//! the chunk's index as the stream number), so the mask depends on the seed
//! alone, not on how rayon spreads the chunks over threads.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::fill::filled;

/// Values per independent stream (and per rayon job).
const CHUNK: usize = 1 << 14;

/// `len` values, each `1 / keep` with probability `keep` and 0 otherwise.
///
/// # Panics
/// If `keep` is not in `(0, 1]`.
pub fn dropout_mask(len: usize, keep: f64, seed: u64) -> Vec<f32> {
    assert!(
        keep > 0.0 && keep <= 1.0,
        "keep probability {keep} not in (0, 1]"
    );
    // A draw `u` of 32 random bits keeps the value when `u < threshold`;
    // with `keep` = 1 every draw does.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = filled(0.0f32, len);
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, values)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(chunk as u64);
            for value in values {
                if u64::from(rng.random::<u32>()) < threshold {
                    *value = scale;
                }
            }
        });
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_asked_share_scaled() {
        for keep in [0.6, 0.9, 0.25] {
            let n = 200_000;
            let mask = dropout_mask(n, keep, 3);
            let scale = (1.0 / keep) as f32;
            assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
            let kept = mask.iter().filter(|&&v| v != 0.0).count() as f64;
            let sd = (n as f64 * keep * (1.0 - keep)).sqrt();
            assert!(
                (kept - keep * n as f64).abs() < 5.0 * sd,
                "keep {keep}: {kept} of {n}"
            );
        }
        assert!(dropout_mask(1000, 1.0, 0).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn the_seed_alone_decides_the_mask() {
        // Longer than one chunk, with a short last one.
        let n = 3 * CHUNK + 123;
        let a = dropout_mask(n, 0.6, 11);
        assert_eq!(a, dropout_mask(n, 0.6, 11));
        assert_ne!(a, dropout_mask(n, 0.6, 12));
        // Chunks are independent streams, not copies of one another.
        assert_ne!(a[..CHUNK], a[CHUNK..2 * CHUNK]);
        // A prefix is the same mask: the draws depend on position, not length.
        assert_eq!(a[..CHUNK + 5], dropout_mask(CHUNK + 5, 0.6, 11)[..]);
    }

    #[test]
    #[should_panic(expected = "not in (0, 1]")]
    fn a_keep_of_zero_is_refused() {
        dropout_mask(10, 0.0, 0);
    }
}
