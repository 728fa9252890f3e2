//! Summaries of repeated measurements.

use std::time::Duration;

/// Median and 99th percentile of a set of durations, in microseconds.
pub(crate) fn percentiles_us(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |fraction: f64| {
        let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
        samples[index].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

/// One printed figure over repeated runs: `name: median unit (min .. max over N runs)`.
pub(crate) fn report(name: &str, unit: &str, mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    let median = runs[runs.len() / 2];
    println!(
        "{name}: {median:.2} {unit} (min {:.2}, max {:.2} over {} runs)",
        runs[0],
        runs[runs.len() - 1],
        runs.len()
    );
    median
}
