//! The statistics every decision in metaprompt rests on: a mean with a bootstrap confidence
//! interval, and paired tests between two prompts scored on the same examples (paired bootstrap
//! for any metric, exact McNemar for pass/fail). All resampling is seeded, so a report reproduces.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Resamples used by the bootstrap.
pub const RESAMPLES: usize = 2000;

/// A mean with its 95% percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub n: usize,
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The `q` quantile (0..=1) of sorted values, by linear interpolation.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The means of `RESAMPLES` bootstrap resamples of `xs` (non-empty), sorted.
fn resampled_means(xs: &[f64], seed: u64) -> Vec<f64> {
    let n = xs.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| xs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    means
}

/// Seed of the bootstrap resampling in every report (evaluations, comparisons, optimization
/// verdicts): fixed, so a report reproduces. The one definition; the engine and the optimizer
/// re-export it.
pub const BOOTSTRAP_SEED: u64 = 0x5EED;

/// Mean and 95% bootstrap interval of `xs`.
pub fn bootstrap(xs: &[f64], seed: u64) -> Estimate {
    let n = xs.len();
    if n == 0 {
        return Estimate {
            mean: 0.0,
            low: 0.0,
            high: 0.0,
            n,
        };
    }
    let means = resampled_means(xs, seed);
    Estimate {
        mean: mean(xs),
        low: quantile(&means, 0.025),
        high: quantile(&means, 0.975),
        n,
    }
}

/// B minus A on the same examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Mean of `b - a`.
    pub diff: f64,
    pub low: f64,
    pub high: f64,
    /// Two-sided p-value of "no difference" (bootstrap).
    pub p_value: f64,
    pub n: usize,
}

/// Paired bootstrap of the mean difference `b - a` (same examples, same order).
pub fn paired_bootstrap(a: &[f64], b: &[f64], seed: u64) -> Paired {
    assert_eq!(a.len(), b.len(), "paired samples must have the same length");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let n = d.len();
    if n == 0 {
        return Paired {
            diff: 0.0,
            low: 0.0,
            high: 0.0,
            p_value: 1.0,
            n,
        };
    }
    let observed = mean(&d);
    let diffs = resampled_means(&d, seed);
    // Two-sided: how often the resampled difference falls on the other side of zero.
    let at_or_below = diffs.iter().filter(|&&x| x <= 0.0).count() as f64;
    let at_or_above = diffs.iter().filter(|&&x| x >= 0.0).count() as f64;
    let tail = at_or_below.min(at_or_above);
    let p_value = if d.iter().all(|&x| x == 0.0) {
        1.0
    } else {
        ((2.0 * tail + 1.0) / (RESAMPLES as f64 + 1.0)).min(1.0)
    };
    Paired {
        diff: observed,
        low: quantile(&diffs, 0.025),
        high: quantile(&diffs, 0.975),
        p_value,
        n,
    }
}

/// McNemar's test on paired pass/fail outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct McNemar {
    /// A passed, B failed.
    pub only_a: usize,
    /// A failed, B passed.
    pub only_b: usize,
    /// Exact two-sided p-value (binomial on the discordant pairs).
    pub p_value: f64,
}

pub fn mcnemar(a_pass: &[bool], b_pass: &[bool]) -> McNemar {
    assert_eq!(
        a_pass.len(),
        b_pass.len(),
        "paired samples must have the same length"
    );
    let only_a = a_pass
        .iter()
        .zip(b_pass)
        .filter(|(a, b)| **a && !**b)
        .count();
    let only_b = a_pass
        .iter()
        .zip(b_pass)
        .filter(|(a, b)| !**a && **b)
        .count();
    let n = only_a + only_b;
    let k = only_a.min(only_b);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space.
    let ln_choose = |n: usize, k: usize| ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
    let tail: f64 = (0..=k)
        .map(|i| (ln_choose(n, i) - n as f64 * std::f64::consts::LN_2).exp())
        .sum();
    McNemar {
        only_a,
        only_b,
        p_value: if n == 0 { 1.0 } else { (2.0 * tail).min(1.0) },
    }
}

fn ln_factorial(n: usize) -> f64 {
    (2..=n).map(|i| (i as f64).ln()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_known_answer() {
        // 1 vs 9 discordant pairs: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024.
        let a: Vec<bool> = [vec![true; 1], vec![false; 9], vec![true; 5]].concat();
        let b: Vec<bool> = [vec![false; 1], vec![true; 9], vec![true; 5]].concat();
        let m = mcnemar(&a, &b);
        assert_eq!((m.only_a, m.only_b), (1, 9));
        assert!((m.p_value - 22.0 / 1024.0).abs() < 1e-12, "{}", m.p_value);
        assert_eq!(mcnemar(&a, &a).p_value, 1.0);
        // 5 vs 5: no evidence at all.
        let m = mcnemar(
            &[
                true, true, true, true, true, false, false, false, false, false,
            ],
            &[
                false, false, false, false, false, true, true, true, true, true,
            ],
        );
        assert!((m.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_known_cases() {
        let e = bootstrap(&[0.5; 40], 1);
        assert_eq!((e.mean, e.low, e.high), (0.5, 0.5, 0.5));
        // 0/1 scores with mean 0.7 over 100: the interval is about ±0.09 (normal approx.).
        let xs: Vec<f64> = (0..100).map(|i| if i < 70 { 1.0 } else { 0.0 }).collect();
        let e = bootstrap(&xs, 7);
        assert!((e.mean - 0.7).abs() < 1e-12);
        assert!(e.low > 0.58 && e.low < 0.64, "{e:?}");
        assert!(e.high > 0.76 && e.high < 0.82, "{e:?}");
        assert_eq!(bootstrap(&xs, 7), e, "seeded: reproducible");
    }

    #[test]
    fn paired_bootstrap_detects_a_real_difference_and_not_a_null_one() {
        let a: Vec<f64> = (0..200)
            .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        let b: Vec<f64> = (0..200)
            .map(|i| if i % 10 == 9 { 0.0 } else { 1.0 })
            .collect();
        let p = paired_bootstrap(&a, &b, 3);
        assert!((p.diff - 0.4).abs() < 1e-12);
        assert!(p.low > 0.3 && p.high < 0.5 && p.p_value < 0.001, "{p:?}");
        let same = paired_bootstrap(&a, &a, 3);
        assert_eq!((same.diff, same.p_value), (0.0, 1.0));
        // Differences that cancel out: no significance.
        let c: Vec<f64> = a.iter().map(|x| 1.0 - x).collect();
        assert!(paired_bootstrap(&a, &c, 3).p_value > 0.5);
    }
}
