//! Which candidates the agent checks, and how: best on dev first, each on every slice (better on
//! its own, worse on none), and the agent's own guardrail on protected constraints.

use std::collections::BTreeSet;

use metaprompt_eval::PromptFile;

use crate::case::{Case, SliceCheck, slice_key};
use crate::monitor::Slice;

use super::*;

/// How many of a search's candidates the agent checks on the held-out set, best on dev first,
/// before it records the attempt as refused.
pub const MAX_CHECKED: usize = 4;

/// The search's candidates that scored above the seed (`pool[0]`, the incumbent) on dev, best
/// first, at most `n`, without the incumbent or repeats: the run's kept prompt first where it
/// kept one.
pub(super) fn ranked(
    kept: Option<(&str, &PromptFile)>,
    pool: &[metaprompt_optimize::run::Entry],
    incumbent: &PromptFile,
    n: usize,
) -> Vec<(String, PromptFile)> {
    let hash = metaprompt_registry::content::hash;
    let mut seen = BTreeSet::from([hash(incumbent)]);
    let mut out = Vec::new();
    let mut push = |id: &str, p: &PromptFile, out: &mut Vec<(String, PromptFile)>| {
        if out.len() < n && seen.insert(hash(p)) {
            out.push((id.to_string(), p.clone()));
        }
    };
    if let Some((id, p)) = kept {
        push(id, p, &mut out);
    }
    let bar = pool.first().and_then(|seed| seed.mean()).unwrap_or(0.0);
    let mut rest: Vec<(&str, f64, &PromptFile)> = pool
        .iter()
        .skip(1)
        .filter(|e| kept.is_none_or(|(id, _)| id != e.id))
        .filter_map(|e| e.mean().map(|m| (e.id.as_str(), m, &e.prompt)))
        .filter(|(_, m, _)| *m > bar)
        .collect();
    // Stable: among equal means, the earlier proposal first.
    rest.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (id, _, p) in rest {
        push(id, p, &mut out);
    }
    out
}

/// Two prompts' held-out scores compared slice by slice: the case's slice first, then each
/// tag value on the check set, `all` last.
pub(super) fn compare(
    work: &Work,
    case: &Case,
    a: &metaprompt_eval::Report,
    b: &metaprompt_eval::Report,
) -> Vec<SliceCheck> {
    let mut slices = vec![case.slice.clone()];
    for i in &work.check {
        for (k, v) in &i.tags {
            let s = Slice::Tag {
                key: k.clone(),
                value: v.clone(),
            };
            if !slices.contains(&s) {
                slices.push(s);
            }
        }
    }
    if case.slice != Slice::All {
        slices.push(Slice::All);
    }
    let mut checks = Vec::new();
    for s in slices {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (k, item) in work.check.iter().enumerate() {
            if !item.in_slice(&s) {
                continue;
            }
            if let (Some(p), Some(q)) = (
                a.results.get(k).and_then(|r| r.score),
                b.results.get(k).and_then(|r| r.score),
            ) {
                x.push(p);
                y.push(q);
            }
        }
        if x.is_empty() {
            continue;
        }
        let paired = metaprompt_eval::stats::paired_bootstrap(&x, &y, 7);
        checks.push(SliceCheck {
            slice: slice_key(&s),
            n: x.len(),
            before: metaprompt_eval::stats::mean(&x),
            after: metaprompt_eval::stats::mean(&y),
            diff: paired.diff,
            low: paired.low,
            high: paired.high,
            p: paired.p_value,
        });
    }
    checks
}

/// The gate a proposal passes before it is filed: significantly better on the case's slice
/// (the first check), and no slice of at least 5 examples significantly worse.
pub(super) fn passes(checks: &[SliceCheck]) -> Result<(), String> {
    let Some(target) = checks.first() else {
        return Err("nothing on the held-out check could be scored".into());
    };
    if !(target.diff > 0.0 && target.p < 0.05) {
        return Err(format!(
            "{} did not improve significantly on the held-out check: {:.3} → {:.3} (n {}, p = {:.3})",
            target.slice, target.before, target.after, target.n, target.p
        ));
    }
    if let Some(worse) = checks[1..]
        .iter()
        .find(|c| c.diff < 0.0 && c.p < 0.05 && c.n >= 5)
    {
        return Err(format!(
            "{} got significantly worse: {:.3} → {:.3} (n {}, p = {:.3})",
            worse.slice, worse.before, worse.after, worse.n, worse.p
        ));
    }
    Ok(())
}

/// The agent's own guardrail, after the optimizer's: a proposal must keep every protected
/// constraint of the incumbent word for word (whitespace aside), in its constraints, its
/// instruction or its templates. Stricter than the optimizer's check (which accepts a faithful
/// paraphrase): what the agent files unattended keeps the exact sentences a person wrote.
pub fn guardrail(constraints: &[String], proposal: &PromptFile) -> Result<(), String> {
    match constraints.iter().find(|c| !keeps_constraint(proposal, c)) {
        Some(lost) => Err(format!(
            "the candidate drops the protected constraint \"{lost}\""
        )),
        None => Ok(()),
    }
}

/// Whether `prompt` still states `constraint` (in its instruction, templates or constraints).
pub fn keeps_constraint(prompt: &PromptFile, constraint: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let c = norm(constraint);
    prompt.constraints.iter().any(|x| norm(x) == c)
        || [prompt.instruction.as_deref(), prompt.template.as_deref()]
            .into_iter()
            .flatten()
            .chain(prompt.messages.iter().map(|m| m.content.as_str()))
            .any(|t| norm(t).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_checked_best_on_dev_first_without_the_incumbent_or_repeats() {
        use metaprompt_optimize::run::Entry;
        let seed = PromptFile::from_template("news", "{{ q }}");
        let with = |i: &str| {
            let mut p = seed.clone();
            p.instruction = Some(i.into());
            p
        };
        let entry = |id: &str, p: &PromptFile, scores: &[f64]| {
            let mut e = Entry::new(id.into(), p.clone(), vec![], "test", 1);
            e.scores = scores.iter().copied().enumerate().collect();
            e
        };
        let pool = vec![
            entry("p0", &seed, &[1.0, 0.0]),
            entry("p1", &with("a"), &[1.0, 1.0]),
            entry("p2", &with("b"), &[0.0, 0.0]),
            entry("p3", &with("c"), &[1.0, 0.5]),
            entry("p4", &with("a"), &[1.0, 1.0]),
            entry("p5", &seed, &[1.0, 1.0]),
            entry("p6", &with("d"), &[1.0, 0.5]),
        ];
        let ids = |kept, n| -> Vec<String> {
            ranked(kept, &pool, &seed, n)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        // Below the seed (p2), a twin (p4) and the incumbent itself (p5) are left out; ties keep
        // the order of proposal.
        assert_eq!(ids(None, 9), ["p1", "p3", "p6"]);
        assert_eq!(ids(None, 2), ["p1", "p3"]);
        // The run's kept prompt leads, and is not checked twice.
        let c = with("c");
        assert_eq!(ids(Some(("p3", &c)), 9), ["p3", "p1", "p6"]);
        assert!(ranked(None, &pool[..1], &seed, 9).is_empty());
    }

    #[test]
    fn a_proposal_passes_only_better_on_its_slice_and_worse_on_none() {
        let check = |slice: &str, n, diff: f64, p| SliceCheck {
            slice: slice.into(),
            n,
            before: 0.5,
            after: 0.5 + diff,
            diff,
            low: diff - 0.1,
            high: diff + 0.1,
            p,
        };
        let good = check("topic=business", 30, 0.4, 0.001);
        assert!(passes(&[good.clone(), check("topic=sports", 20, -0.05, 0.4)]).is_ok());
        // Worse on too few examples to count.
        assert!(passes(&[good.clone(), check("topic=world", 4, -0.5, 0.01)]).is_ok());
        let e = passes(&[good.clone(), check("topic=technology", 14, -0.36, 0.005)]).unwrap_err();
        assert!(
            e.contains("topic=technology got significantly worse"),
            "{e}"
        );
        let e = passes(&[check("topic=business", 30, 0.1, 0.2)]).unwrap_err();
        assert!(e.contains("did not improve significantly"), "{e}");
        assert!(passes(&[]).is_err());
    }

    #[test]
    fn the_guardrail_refuses_a_proposal_without_a_protected_constraint() {
        let keep = "Never reveal the customer's account number.".to_string();
        let mut p = PromptFile::from_template("support", "Question: {{ q }}\nAnswer:");
        p.instruction = Some(format!("Answer the question.  {}", keep.replace(' ', "\n")));
        assert!(guardrail(std::slice::from_ref(&keep), &p).is_ok());
        p.instruction = Some("Answer the question.".into());
        let e = guardrail(std::slice::from_ref(&keep), &p).unwrap_err();
        assert!(e.contains("account number"), "{e}");
        p.constraints = vec![keep.clone()];
        assert!(guardrail(&[keep], &p).is_ok());
        assert!(guardrail(&[], &p).is_ok());
    }
}
