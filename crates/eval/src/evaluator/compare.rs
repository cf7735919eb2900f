//! Two prompts' reports on the same examples, compared by the paired tests.

use serde::Serialize;

use crate::stats::{self};

use super::*;

/// B against A on the same examples: the paired tests run on the examples scored for both.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: Summary,
    pub b: Summary,
    pub paired: stats::Paired,
    pub mcnemar: stats::McNemar,
    /// Examples scored for both prompts: what the paired tests ran on.
    pub pairs: usize,
    /// Examples left out because they were unscored for either prompt (or are not the same
    /// example in both reports).
    pub unpaired: usize,
}

/// B against A, example by example (the reports are of the same examples, in order); an
/// example unscored for either prompt is left out of both sides.
pub fn compare(a: &Report, b: &Report, seed: u64) -> Comparison {
    let (mut sa, mut sb, mut pa, mut pb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (x, y) in a.results.iter().zip(&b.results) {
        if x.id != y.id {
            continue;
        }
        if let (Some(s), Some(t), Some(p), Some(q)) = (x.score, y.score, x.passed, y.passed) {
            sa.push(s);
            sb.push(t);
            pa.push(p);
            pb.push(q);
        }
    }
    let pairs = sa.len();
    Comparison {
        a: a.summary.clone(),
        b: b.summary.clone(),
        paired: stats::paired_bootstrap(&sa, &sb, seed),
        mcnemar: stats::mcnemar(&pa, &pb),
        pairs,
        unpaired: a.results.len().max(b.results.len()) - pairs,
    }
}
