//! The tests the agent decides with: a rate with its interval, a one-sided two-sample test of
//! "worse than", and Benjamini–Hochberg across the many slices of a library.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// Outcome scores in [0, 1] (a bool feedback is 0 or 1) of one group: a slice in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    pub n: u64,
    /// Σ score.
    pub sum: f64,
    /// Σ score².
    pub sum_sq: f64,
}

impl Rate {
    pub fn add(&mut self, score: f64) {
        let s = score.clamp(0.0, 1.0);
        self.n += 1;
        self.sum += s;
        self.sum_sq += s * s;
    }

    /// The mean score (`None` for an empty group).
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// The mean and variance with one pseudo-observation at 0 and one at 1 (Agresti–Caffo for
    /// pass/fail scores): never a zero variance, and better coverage on small groups.
    fn adjusted(&self) -> (f64, f64, f64) {
        let n = self.n as f64 + 2.0;
        let mean = (self.sum + 1.0) / n;
        let var = ((self.sum_sq + 1.0) / n - mean * mean).max(1e-12);
        (mean, var, n)
    }

    /// A 95% interval of the mean (normal approximation on the adjusted mean).
    pub fn interval(&self) -> (f64, f64) {
        let (mean, var, n) = self.adjusted();
        let half = 1.959_964 * (var / n).sqrt();
        ((mean - half).max(0.0), (mean + half).min(1.0))
    }

    /// The group without `other` (the rest of a prompt's traffic without one slice).
    pub fn minus(&self, other: &Rate) -> Rate {
        Rate {
            n: self.n.saturating_sub(other.n),
            sum: (self.sum - other.sum).max(0.0),
            sum_sq: (self.sum_sq - other.sum_sq).max(0.0),
        }
    }
}

/// One-sided p-value that `a`'s mean is lower than `b`'s (Welch's z on the adjusted means):
/// small when `a` is worse.
pub fn p_worse(a: &Rate, b: &Rate) -> f64 {
    let (ma, va, na) = a.adjusted();
    let (mb, vb, nb) = b.adjusted();
    let z = (ma - mb) / (va / na + vb / nb).sqrt();
    standard_normal().cdf(z)
}

fn standard_normal() -> Normal {
    // Mean 0, standard deviation 1: always valid.
    Normal::standard()
}

/// Benjamini–Hochberg at false-discovery rate `q`: which hypotheses are rejected, and each
/// p-value's adjusted value (the smallest `q` at which it would be rejected). Under the global
/// null (nothing is worse anywhere) the chance of any finding in a pass is at most `q`.
pub fn benjamini_hochberg(p: &[f64], q: f64) -> (Vec<bool>, Vec<f64>) {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![1.0; m];
    let mut running = 1.0_f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        adjusted[i] = running.min(1.0);
    }
    let rejected = adjusted.iter().map(|&a| a <= q).collect();
    (rejected, adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(scores: &[f64]) -> Rate {
        let mut r = Rate::default();
        scores.iter().for_each(|&s| r.add(s));
        r
    }

    #[test]
    fn a_clearly_worse_group_has_a_small_p_and_an_equal_one_does_not() {
        let good = rate(
            &[1.0; 80]
                .iter()
                .chain(&[0.0; 20])
                .copied()
                .collect::<Vec<_>>(),
        );
        let bad = rate(
            &[1.0; 40]
                .iter()
                .chain(&[0.0; 60])
                .copied()
                .collect::<Vec<_>>(),
        );
        assert!(p_worse(&bad, &good) < 1e-6);
        assert!(p_worse(&good, &bad) > 0.999);
        let p = p_worse(&good, &good);
        assert!((p - 0.5).abs() < 1e-9, "{p}");
        // All passes against all passes: no zero-variance division.
        let all = rate(&[1.0; 30]);
        assert!((p_worse(&all, &all) - 0.5).abs() < 1e-9);
        let (lo, hi) = good.interval();
        assert!(lo < 0.8 && 0.8 < hi && hi - lo < 0.2, "{lo} {hi}");
    }

    #[test]
    fn benjamini_hochberg_matches_a_worked_example() {
        // m = 5, q = 0.05: thresholds 0.01, 0.02, 0.03, 0.04, 0.05.
        let p = [0.001, 0.013, 0.04, 0.2, 0.03];
        let (rejected, adjusted) = benjamini_hochberg(&p, 0.05);
        assert_eq!(rejected, [true, true, true, false, true]);
        let want = [0.005, 0.0325, 0.05, 0.2, 0.05];
        for (a, w) in adjusted.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(benjamini_hochberg(&[], 0.05), (vec![], vec![]));
    }
}
