//! Monitor and detect, over the inference and feedback log: each served prompt's outcome rate,
//! as a whole and per slice (every tag key = value the application sent), in the current window
//! beside the window before it; a slice is *found* when it is worse than its own baseline or
//! than the rest of the prompt's traffic, by a one-sided test, with Benjamini–Hochberg across
//! every hypothesis of the pass (all prompts, all slices, both comparisons) at `fdr`, a minimum
//! sample on each side, and a minimum drop that matters.
//!
//! The stated false-alarm level: on stationary traffic (nothing changed anywhere) the chance
//! that a pass reports any finding is at most `fdr` (BH under the global null); the tests
//! check it over many simulated passes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use metaprompt_registry::service::{Feedback, Inference};
use serde::{Deserialize, Serialize};

use crate::stats::{Rate, benjamini_hochberg, p_worse};

/// One scored inference: its prompt, the version that served it, when, its slices, its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub prompt: String,
    pub seq: u32,
    pub at: DateTime<Utc>,
    pub tags: BTreeMap<String, String>,
    pub score: f64,
}

impl Outcome {
    /// The outcome of an inference from its feedback: the mean of the numeric scores (a bool
    /// was stored as 0 or 1); `None` when nothing scored it.
    pub fn from_records(inference: &Inference, feedback: &[Feedback]) -> Option<Self> {
        let scores: Vec<f64> = feedback.iter().filter_map(|f| f.score).collect();
        if scores.is_empty() {
            return None;
        }
        Some(Self {
            prompt: inference.prompt.clone(),
            seq: inference.seq,
            at: inference.created_at,
            tags: inference.tags.clone(),
            score: scores.iter().sum::<f64>() / scores.len() as f64,
        })
    }
}

/// A part of a prompt's traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Slice {
    /// All of it.
    All,
    /// The inferences tagged `key = value`.
    Tag { key: String, value: String },
}

impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slice::All => f.write_str("all traffic"),
            Slice::Tag { key, value } => write!(f, "{key}={value}"),
        }
    }
}

/// How the monitor decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    /// The current window; the baseline is the window of the same length before it.
    pub window: Duration,
    /// Fewer scored outcomes than this on either side: no test.
    pub min_n: u64,
    /// The false-discovery rate across every hypothesis of a pass.
    pub fdr: f64,
    /// A finding must also be at least this much worse (in mean score).
    pub min_drop: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            window: Duration::hours(1),
            min_n: 30,
            fdr: 0.05,
            min_drop: 0.05,
        }
    }
}

/// One slice of one prompt: its rate now, in the window before, and the rest of the prompt's
/// traffic now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceReport {
    pub prompt: String,
    pub slice: Slice,
    pub current: Rate,
    pub baseline: Rate,
    /// The prompt's other traffic in the current window (empty for [`Slice::All`]).
    pub rest: Rate,
}

/// What a slice was found worse than.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Against {
    /// The same slice in the window before.
    Baseline,
    /// The rest of the prompt's traffic now.
    Rest,
}

/// A slice significantly worse than its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub prompt: String,
    pub slice: Slice,
    pub against: Against,
    pub n: u64,
    pub mean: f64,
    pub reference_n: u64,
    pub reference_mean: f64,
    /// The one-sided p-value, and after Benjamini–Hochberg across the pass.
    pub p: f64,
    pub q: f64,
}

/// Every prompt's slices over the two windows ending at `now`.
pub fn report(outcomes: &[Outcome], now: DateTime<Utc>, policy: &Policy) -> Vec<SliceReport> {
    let start = now - policy.window;
    let before = start - policy.window;
    let mut slices: BTreeMap<(String, Slice), (Rate, Rate)> = BTreeMap::new();
    for o in outcomes {
        let current = (start..now).contains(&o.at);
        if !current && !(before..start).contains(&o.at) {
            continue;
        }
        let keys = std::iter::once(Slice::All).chain(o.tags.iter().map(|(k, v)| Slice::Tag {
            key: k.clone(),
            value: v.clone(),
        }));
        for slice in keys {
            let (c, b) = slices.entry((o.prompt.clone(), slice)).or_default();
            if current { c } else { b }.add(o.score);
        }
    }
    let totals: BTreeMap<String, Rate> = slices
        .iter()
        .filter(|((_, s), _)| *s == Slice::All)
        .map(|((p, _), (c, _))| (p.clone(), *c))
        .collect();
    slices
        .into_iter()
        .map(|((prompt, slice), (current, baseline))| {
            let rest = match slice {
                Slice::All => Rate::default(),
                Slice::Tag { .. } => totals
                    .get(&prompt)
                    .map_or_else(Rate::default, |t| t.minus(&current)),
            };
            SliceReport {
                prompt,
                slice,
                current,
                baseline,
                rest,
            }
        })
        .collect()
}

/// The findings of one pass over `reports`.
pub fn detect(reports: &[SliceReport], policy: &Policy) -> Vec<Finding> {
    let mut tests: Vec<(&SliceReport, Against, &crate::stats::Rate, f64)> = Vec::new();
    for r in reports {
        if r.current.n < policy.min_n {
            continue;
        }
        if r.baseline.n >= policy.min_n {
            tests.push((
                r,
                Against::Baseline,
                &r.baseline,
                p_worse(&r.current, &r.baseline),
            ));
        }
        if r.slice != Slice::All && r.rest.n >= policy.min_n {
            tests.push((r, Against::Rest, &r.rest, p_worse(&r.current, &r.rest)));
        }
    }
    let p: Vec<f64> = tests.iter().map(|t| t.3).collect();
    let (rejected, adjusted) = benjamini_hochberg(&p, policy.fdr);
    tests
        .iter()
        .zip(rejected.iter().zip(adjusted))
        .filter(|(_, (rejected, _))| **rejected)
        .filter_map(|((r, against, reference, p), (_, q))| {
            let mean = r.current.mean()?;
            let reference_mean = reference.mean()?;
            (reference_mean - mean >= policy.min_drop).then(|| Finding {
                prompt: r.prompt.clone(),
                slice: r.slice.clone(),
                against: *against,
                n: r.current.n,
                mean,
                reference_n: reference.n,
                reference_mean,
                p: *p,
                q,
            })
        })
        .collect()
}

/// A slice the monitor could not test this pass, and exactly what it lacks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shortfall {
    pub prompt: String,
    pub slice: Slice,
    /// Scored outcomes in the current window, the window before, and the rest of the traffic.
    pub n: u64,
    pub baseline_n: u64,
    pub rest_n: u64,
    /// `min_n`: what each side of a test needs.
    pub needs: u64,
    /// In words: `topic=billing: 12 scored outcomes, needs 30`.
    pub why: String,
}

/// The slices of `reports` that no test could look at (too few scored outcomes now, or on
/// both references), with their counts.
pub fn shortfalls(reports: &[SliceReport], policy: &Policy) -> Vec<Shortfall> {
    let min = policy.min_n;
    reports
        .iter()
        .filter_map(|r| {
            let all = r.slice == Slice::All;
            let why = if r.current.n < min {
                format!(
                    "{}: {} scored outcomes in the current window, needs {min}",
                    r.slice, r.current.n
                )
            } else if r.baseline.n < min && (all || r.rest.n < min) {
                if all {
                    format!(
                        "{}: {} scored outcomes now, but {} in the window before, needs {min}",
                        r.slice, r.current.n, r.baseline.n
                    )
                } else {
                    format!(
                        "{}: {} scored outcomes now, but {} in the window before and {} in the \
                         rest of the traffic, needs {min} on one of them",
                        r.slice, r.current.n, r.baseline.n, r.rest.n
                    )
                }
            } else {
                return None;
            };
            Some(Shortfall {
                prompt: r.prompt.clone(),
                slice: r.slice.clone(),
                n: r.current.n,
                baseline_n: r.baseline.n,
                rest_n: r.rest.n,
                needs: min,
                why,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const TOPICS: usize = 20;

    /// A window's worth of traffic per topic (`per_topic` outcomes each, in both windows), pass
    /// or fail with the topic's rate; `now` is the end of the current window.
    fn traffic(
        rng: &mut StdRng,
        now: DateTime<Utc>,
        per_topic: usize,
        rate: impl Fn(usize, bool) -> f64,
    ) -> Vec<Outcome> {
        let mut out = Vec::new();
        for current in [false, true] {
            for t in 0..TOPICS {
                for k in 0..per_topic {
                    let offset = Duration::seconds((k * 3600 / per_topic) as i64);
                    let at = if current {
                        now - Duration::hours(1) + offset
                    } else {
                        now - Duration::hours(2) + offset
                    };
                    let pass = rng.random_bool(rate(t, current));
                    out.push(Outcome {
                        prompt: "support".into(),
                        seq: 1,
                        at,
                        tags: BTreeMap::from([("topic".into(), format!("t{t}"))]),
                        score: if pass { 1.0 } else { 0.0 },
                    });
                }
            }
        }
        out
    }

    #[test]
    fn stationary_traffic_raises_a_false_alarm_in_at_most_fdr_of_passes() {
        let policy = Policy::default();
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(7);
        let passes = 400;
        let mut alarmed = 0;
        for _ in 0..passes {
            let outcomes = traffic(&mut rng, now, 50, |_, _| 0.8);
            let findings = detect(&report(&outcomes, now, &policy), &policy);
            alarmed += usize::from(!findings.is_empty());
        }
        let rate = alarmed as f64 / passes as f64;
        eprintln!("{alarmed} of {passes} stationary passes alarmed");
        // 41 hypotheses per pass (the whole prompt and 20 topics against their baseline, 20
        // topics against the rest); BH bounds the chance of any finding by `fdr`.
        let se = (policy.fdr * (1.0 - policy.fdr) / passes as f64).sqrt();
        assert!(
            rate <= policy.fdr + 3.0 * se,
            "{alarmed} of {passes} passes alarmed"
        );
    }

    #[test]
    fn a_slice_that_got_worse_is_found_against_its_baseline_and_the_rest() {
        let policy = Policy::default();
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(11);
        // Topic 3 drops from 0.8 to 0.4 in the current window.
        let outcomes = traffic(
            &mut rng,
            now,
            60,
            |t, current| {
                if t == 3 && current { 0.4 } else { 0.8 }
            },
        );
        let findings = detect(&report(&outcomes, now, &policy), &policy);
        let billing = Slice::Tag {
            key: "topic".into(),
            value: "t3".into(),
        };
        let against: Vec<Against> = findings
            .iter()
            .filter(|f| f.slice == billing)
            .map(|f| f.against)
            .collect();
        assert!(against.contains(&Against::Baseline), "{findings:#?}");
        assert!(against.contains(&Against::Rest), "{findings:#?}");
        assert!(
            findings
                .iter()
                .all(|f| f.slice == billing || f.slice == Slice::All),
            "only the slice that changed (and the whole, which it drags down): {findings:#?}"
        );
        let f = findings.iter().find(|f| f.slice == billing).unwrap();
        assert!(
            f.mean < 0.55 && f.reference_mean > 0.7 && f.q <= policy.fdr,
            "{f:?}"
        );
    }

    #[test]
    fn small_slices_are_not_tested() {
        let policy = Policy::default();
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(3);
        let outcomes = traffic(
            &mut rng,
            now,
            5,
            |_, current| if current { 0.0 } else { 1.0 },
        );
        let reports = report(&outcomes, now, &policy);
        assert!(
            reports
                .iter()
                .any(|r| r.slice != Slice::All && r.current.n == 5)
        );
        let findings = detect(&reports, &policy);
        assert!(
            findings.iter().all(|f| f.slice == Slice::All),
            "slices of 5 are below min_n: {findings:#?}"
        );
        // Each is named with its count and what it needs.
        let short = shortfalls(&reports, &policy);
        let t3 = short
            .iter()
            .find(|s| s.slice.to_string() == "topic=t3")
            .unwrap();
        assert_eq!(
            t3.why,
            "topic=t3: 5 scored outcomes in the current window, needs 30"
        );
        assert_eq!((t3.n, t3.baseline_n, t3.needs), (5, 5, 30));
        // The whole prompt has 100 now and 100 before: tested, not short.
        assert!(short.iter().all(|s| s.slice != Slice::All), "{short:#?}");
    }
}
