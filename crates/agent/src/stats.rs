//! The tests the agent decides with: a rate with its interval, a one-sided two-sample test of
//! "worse than", and Benjamini–Hochberg across the many slices of a library.

use serde::{Deserialize, Serialize};
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

/// The canary's difference `b − a` in mean score with an **always-valid** interval: a
/// confidence sequence from the normal-mixture sequential probability ratio test (Robbins;
/// Johari et al., "Always valid inference", 2017), mixing over effects with standard deviation
/// `tau`. Checking it after every outcome, for as long as a canary runs, the chance that it
/// ever excludes the true difference is at most `alpha`, which is what lets the agent decide
/// the moment the evidence is there instead of at a fixed sample size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sequential {
    pub diff: f64,
    pub low: f64,
    pub high: f64,
}

pub fn sequential(a: &Rate, b: &Rate, alpha: f64, tau: f64) -> Sequential {
    let (ma, va, na) = a.adjusted();
    let (mb, vb, nb) = b.adjusted();
    let v = va / na + vb / nb;
    let t2 = tau * tau;
    let half = ((v * (v + t2) / t2) * (2.0 * (1.0 / alpha).ln() + ((v + t2) / v).ln())).sqrt();
    let diff = mb - ma;
    Sequential {
        diff,
        low: diff - half,
        high: diff + half,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequential_interval_holds_under_continuous_monitoring() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        // Two equal streams of pass/fail at 0.8, looked at after every pair of outcomes up to
        // 2,000: the share of streams whose interval ever excludes 0 stays under alpha (a
        // fixed-sample 95% interval, peeked at this often, would exceed it several times).
        let mut rng = StdRng::seed_from_u64(5);
        let (streams, alpha) = (300, 0.05);
        let mut ever = 0;
        let mut naive = 0;
        for _ in 0..streams {
            let (mut a, mut b) = (Rate::default(), Rate::default());
            let (mut wrong, mut wrong_naive) = (false, false);
            for i in 0..2000 {
                a.add(f64::from(u8::from(rng.random_bool(0.8))));
                b.add(f64::from(u8::from(rng.random_bool(0.8))));
                if i < 10 {
                    continue;
                }
                let s = sequential(&a, &b, alpha, 0.1);
                wrong |= s.low > 0.0 || s.high < 0.0;
                let p = p_worse(&b, &a);
                wrong_naive |= !(0.025..=0.975).contains(&p);
            }
            ever += usize::from(wrong);
            naive += usize::from(wrong_naive);
        }
        let rate = ever as f64 / streams as f64;
        eprintln!("sequential: {ever} of {streams} streams ever wrong; peeking z-test: {naive}");
        assert!(rate <= alpha, "{ever} of {streams}");
        assert!(naive > ever, "the naive test peeked at should do worse");
        // And a real difference is found: 0.8 against 0.5 after 300 each.
        let (mut a, mut b) = (Rate::default(), Rate::default());
        for _ in 0..300 {
            a.add(f64::from(u8::from(rng.random_bool(0.8))));
            b.add(f64::from(u8::from(rng.random_bool(0.5))));
        }
        let s = sequential(&a, &b, alpha, 0.1);
        assert!(s.high < 0.0 && s.diff < -0.2, "{s:?}");
    }

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
