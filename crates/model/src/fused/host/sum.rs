//! Sums of many `f32` values in vector lanes. A plain `iter().sum()` adds
//! one value at a time, each addition waiting for the one before it; eight
//! independent partial sums let the compiler keep them in one vector
//! register, and are more accurate too.

/// Lanes of the partial sums: eight independent `f32` accumulators that the
/// compiler keeps in one vector register.
pub(super) const LANES: usize = 8;

/// `Σ f(v)` over one run, in `f32` lanes (a run is at most a few planes, a
/// few thousand values), returned as `f64` for sums over many runs.
pub(super) fn lane_sum(run: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; LANES];
    let chunks = run.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    f64::from(tail) + lanes.iter().map(|&l| f64::from(l)).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_value_once_with_its_function_applied() {
        // Lengths below, at and past a whole number of lanes.
        for len in [0, 3, 8, 21, 800] {
            let run: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let expected: f64 = run.iter().map(|&v| f64::from(v * v)).sum();
            let ours = lane_sum(&run, |v| v * v);
            assert!(
                (ours - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{len}: {ours} vs {expected}"
            );
        }
    }
}
