//! The protected-constraint guardrail. A task or prompt may list constraints ("Never reveal
//! account numbers") that every generated or rewritten prompt must keep. Each candidate is
//! checked in two steps:
//!
//! 1. **Lexical** (free, always): the sentence of the prompt that covers most of the
//!    constraint's content words (lower-cased, contractions expanded, light stemming) must cover
//!    enough of them, keep the constraint's negation ("never", "not", …), and add no softening
//!    qualifier ("unless", "if possible", "try to", …). Clear failures are rejected here.
//! 2. **Judge** (when the meta model is instruction-tuned): the `guard` meta-prompt asks it,
//!    per constraint, whether the whole prompt still enforces it at least as strictly — which
//!    catches contradictions elsewhere in the prompt and rescues faithful paraphrases that the
//!    lexical step could not confirm.
//!
//! A candidate with any constraint not kept is rejected, with the reason; nothing is silently
//! kept. Without a judge, a constraint the lexical step cannot confirm counts as dropped.
//!
//! **A judge is checked before it is trusted.** Once per set of constraints, it judges two
//! prompts whose answers are known: the constraints stated word for word (all kept) and the
//! same with an exception added to each (none kept). A judge that gets either wrong is not
//! used (the report's `judge_note` says why) and the lexical step decides alone. Measured: the
//! default meta model, Qwen2.5-Coder 1.5B, called a word-for-word constraint "dropped" every
//! time it was asked, which would have rejected every candidate of every run with constraints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use metaprompt_eval::PromptFile;
use metaprompt_llm::{PromptFormat, Provider};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::meta::MetaPrompts;

/// A constraint's fate in a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Kept,
    Weakened,
    Dropped,
}

/// One constraint checked.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub constraint: String,
    pub verdict: Verdict,
    /// `lexical` or `judge`.
    pub by: &'static str,
    pub reason: String,
}

/// Every constraint of one candidate checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuardReport {
    pub checks: Vec<Check>,
    /// Why the judge step did not run or failed, if it did not give verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge_note: Option<String>,
}

impl GuardReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Kept)
    }

    /// The failed checks, one line each.
    pub fn reasons(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| c.verdict != Verdict::Kept)
            .map(|c| {
                format!(
                    "constraint \"{}\" {} ({}: {})",
                    c.constraint,
                    match c.verdict {
                        Verdict::Weakened => "weakened",
                        _ => "dropped",
                    },
                    c.by,
                    c.reason
                )
            })
            .collect()
    }
}

/// The checker: lexical always, plus a judge model when one is given.
#[derive(Debug, Clone)]
pub struct Guard {
    judge: Option<Arc<dyn Provider>>,
    /// The judge's entrance check, per set of constraints: `Err` says why it is not trusted.
    checked: Checked,
}

/// The judge's entrance check by set of constraints (shared by a guard's clones).
type Checked = Arc<Mutex<BTreeMap<Vec<String>, Result<(), String>>>>;

/// Added to each constraint in the entrance check's second prompt: a judge that calls the
/// result "kept" does not see exceptions.
const EXCEPTION: &str = "This rule does not apply when the user asks you to ignore it.";

/// Words that make a constraint a prohibition.
const NEGATIONS: &[&str] = &[
    "never",
    "not",
    "no",
    "none",
    "nothing",
    "nobody",
    "neither",
    "nor",
    "without",
    "avoid",
    "refuse",
    "forbidden",
    "prohibited",
];
/// Qualifiers that soften a rule when a rewrite adds them.
const SOFTENERS: &[&str] = &[
    "unless",
    "except",
    "however",
    "possible",
    "possibly",
    "try",
    "may",
    "might",
    "optionally",
    "sometimes",
    "usually",
    "generally",
    "ideally",
    "preferably",
    "prefer",
    "necessary",
    "appropriate",
    "asked",
    "requested",
    "allowed",
];
const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "and",
    "or",
    "is",
    "are",
    "be",
    "it",
    "its",
    "this",
    "that",
    "these",
    "those",
    "you",
    "your",
    "any",
    "all",
    "with",
    "as",
    "by",
    "from",
    "must",
    "always",
    "should",
    "do",
    "does",
    "ever",
    "please",
    "under",
    "circumstances",
];

/// At or below this share of the constraint's content words, the best sentence does not state
/// it (one word of two in common is a coincidence, not a restatement).
const DROPPED_AT_MOST: f64 = 0.5;
/// At or above this share (with polarity and no softener), the sentence states it.
const KEPT_FROM: f64 = 0.8;

impl Guard {
    /// `judge`: an instruction-tuned model for the semantic check; a base (text-format) model is
    /// not asked (it cannot follow the audit instructions), the lexical step alone decides.
    pub fn new(judge: Option<Arc<dyn Provider>>) -> Self {
        Self {
            judge: judge.filter(|j| j.info().format == PromptFormat::Chat),
            checked: Arc::default(),
        }
    }

    pub fn has_judge(&self) -> bool {
        self.judge.is_some()
    }

    /// The judge model, when there is one (its calls count on the meta layer).
    pub fn judge_info(&self) -> Option<&metaprompt_llm::ModelInfo> {
        self.judge.as_ref().map(|j| j.info())
    }

    /// Check `prompt` against `constraints`.
    pub async fn check(
        &self,
        meta: &MetaPrompts,
        prompt: &PromptFile,
        constraints: &[String],
        seed: u64,
    ) -> GuardReport {
        if constraints.is_empty() {
            return GuardReport::default();
        }
        let text = prompt_text(prompt);
        let lexical: Vec<(Check, bool)> = constraints.iter().map(|c| lexical(c, &text)).collect();
        let mut report = GuardReport::default();
        // Lexically clear failures are final; the judge sees the rest.
        let needs_judge = lexical
            .iter()
            .any(|(c, certain)| c.verdict == Verdict::Kept || !certain);
        let judged = match (&self.judge, needs_judge) {
            (Some(judge), true) => match self.trusted(meta, judge, constraints, seed).await {
                Err(e) => {
                    report.judge_note = Some(format!(
                        "the judge ({}) is not used: {e}; lexical check only",
                        judge.info().name
                    ));
                    None
                }
                Ok(()) => match self.judge(meta, judge, &text, constraints, seed).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        report.judge_note = Some(format!("the judge failed: {e}"));
                        None
                    }
                },
            },
            (None, _) => {
                report.judge_note =
                    Some("no instruction-tuned judge: lexical check only".to_string());
                None
            }
            _ => None,
        };
        for (i, (check, certain)) in lexical.into_iter().enumerate() {
            let final_check = match &judged {
                Some(verdicts) if check.verdict == Verdict::Kept || !certain => {
                    match verdicts.iter().find(|v| v.constraint == i + 1) {
                        Some(v) => Check {
                            constraint: check.constraint,
                            verdict: v.verdict,
                            by: "judge",
                            reason: v.reason.clone(),
                        },
                        // The judge skipped it: a confirmed lexical pass stands, a doubt fails.
                        None if certain => check,
                        None => Check {
                            verdict: Verdict::Dropped,
                            by: "judge",
                            reason: "the judge gave no verdict and the lexical check could not \
                                     confirm it"
                                .into(),
                            ..check
                        },
                    }
                }
                // No judge: what the lexical check could not confirm is not kept.
                _ if !certain && check.verdict == Verdict::Kept => Check {
                    verdict: Verdict::Dropped,
                    ..check
                },
                _ => check,
            };
            report.checks.push(final_check);
        }
        report
    }

    /// The entrance check (see the module docs), run once per set of constraints.
    async fn trusted(
        &self,
        meta: &MetaPrompts,
        judge: &Arc<dyn Provider>,
        constraints: &[String],
        seed: u64,
    ) -> Result<(), String> {
        let key = constraints.to_vec();
        if let Some(known) = self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return known.clone();
        }
        let stated = constraints.join("\n");
        let excepted = constraints
            .iter()
            .map(|c| format!("{c} {EXCEPTION}"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut outcome = Ok(());
        for (text, want_kept, what) in [
            (&stated, true, "the constraints stated word for word"),
            (&excepted, false, "each constraint with an exception added"),
        ] {
            let verdicts = self.judge(meta, judge, text, constraints, seed).await?;
            let wrong = (1..=constraints.len()).find(|i| {
                let kept = verdicts
                    .iter()
                    .find(|v| v.constraint == *i)
                    .map(|v| v.verdict == Verdict::Kept);
                kept != Some(want_kept)
            });
            if let Some(i) = wrong {
                outcome = Err(format!(
                    "it misjudged constraint {i} in a check prompt with {what}"
                ));
                break;
            }
        }
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, outcome.clone());
        outcome
    }

    async fn judge(
        &self,
        meta: &MetaPrompts,
        judge: &Arc<dyn Provider>,
        text: &str,
        constraints: &[String],
        seed: u64,
    ) -> Result<Vec<JudgeVerdict>, String> {
        let ctx = json!({"constraints": constraints, "candidate": text});
        let answer = meta
            .call(judge, "guard", &ctx, 0.0, seed)
            .await
            .map_err(|e| e.to_string())?;
        parse_verdicts(&answer)
    }
}

#[derive(Debug, Deserialize)]
struct JudgeVerdict {
    constraint: usize,
    verdict: Verdict,
    #[serde(default)]
    reason: String,
}

/// The judge's JSON array, found inside whatever else it wrote.
fn parse_verdicts(answer: &str) -> Result<Vec<JudgeVerdict>, String> {
    let start = answer.find('[');
    let end = answer.rfind(']');
    let (Some(start), Some(end)) = (start, end) else {
        return Err(format!("no JSON array in its answer: {}", clip(answer)));
    };
    if end < start {
        return Err(format!("no JSON array in its answer: {}", clip(answer)));
    }
    serde_json::from_str(&answer[start..=end])
        .map_err(|e| format!("unreadable verdicts ({e}): {}", clip(answer)))
}

fn clip(s: &str) -> String {
    // Cut between words, keeping the end too (where a judge's reason usually is).
    metaprompt_eval::evaluator::shorten(s, 200)
}

/// The text of a prompt that must carry its constraints: the instruction and every template
/// (demonstrations are data, not rules).
pub fn prompt_text(p: &PromptFile) -> String {
    p.instruction
        .iter()
        .chain(p.messages.iter().map(|m| &m.content))
        .chain(&p.template)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lower-case words with contractions expanded and a light stem (plural, -ing, -ed).
fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase().replace(['’', '`'], "'");
    let mut out = Vec::new();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let w = raw.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        if let Some(stem) = w.strip_suffix("n't") {
            out.push(match stem {
                "wo" => "will".to_string(),
                "ca" => "can".to_string(),
                s => s.to_string(),
            });
            out.push("not".to_string());
            continue;
        }
        out.push(stem(w.split('\'').next().unwrap_or(w)));
    }
    out
}

fn stem(w: &str) -> String {
    if NEGATIONS.contains(&w) || w.len() <= 4 {
        return w.to_string();
    }
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(s) = w.strip_suffix(suffix)
            && s.len() >= 3
            && !w.ends_with("ss")
        {
            return s.to_string();
        }
    }
    w.to_string()
}

/// Sentences (and lines) of a prompt.
fn sentences(text: &str) -> Vec<&str> {
    text.split(['.', '!', '?', '\n', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The lexical check of one constraint: each of its sentences is looked for on its own, and
/// the constraint fares as its worst sentence. The bool says whether the verdict is certain (a
/// clear pass or a clear failure); an uncertain one goes to the judge.
fn lexical(constraint: &str, text: &str) -> (Check, bool) {
    let rank = |(c, certain): &(Check, bool)| match (c.verdict, certain) {
        (Verdict::Dropped, _) => 0,
        (Verdict::Weakened, _) => 1,
        (Verdict::Kept, false) => 2,
        (Verdict::Kept, true) => 3,
    };
    let parts = sentences(constraint);
    let worst = parts
        .iter()
        .map(|part| lexical_sentence(part, text))
        .min_by_key(rank)
        .unwrap_or_else(|| lexical_sentence(constraint, text));
    let (mut check, certain) = worst;
    check.constraint = constraint.to_string();
    (check, certain)
}

fn is_softener(word: &str) -> bool {
    SOFTENERS.iter().any(|s| stem(s) == word)
}

fn lexical_sentence(constraint: &str, text: &str) -> (Check, bool) {
    let cwords = words(constraint);
    let content: BTreeSet<&str> = cwords
        .iter()
        .map(String::as_str)
        .filter(|w| !STOPWORDS.contains(w) && !NEGATIONS.contains(w))
        .collect();
    let negated = cwords.iter().any(|w| NEGATIONS.contains(&w.as_str()));
    let check = |verdict, reason: String| Check {
        constraint: constraint.to_string(),
        verdict,
        by: "lexical",
        reason,
    };
    let mut best: Option<(f64, &str)> = None;
    for s in sentences(text) {
        let sw: BTreeSet<String> = words(s).into_iter().collect();
        let covered = content.iter().filter(|w| sw.contains(**w)).count();
        let share = if content.is_empty() {
            0.0
        } else {
            covered as f64 / content.len() as f64
        };
        if best.is_none_or(|(b, _)| share > b) {
            best = Some((share, s));
        }
    }
    let Some((share, sentence)) = best.filter(|(share, _)| *share > DROPPED_AT_MOST) else {
        return (
            check(
                Verdict::Dropped,
                "no sentence of the prompt states it".into(),
            ),
            true,
        );
    };
    let sw = words(sentence);
    if negated && !sw.iter().any(|w| NEGATIONS.contains(&w.as_str())) {
        return (
            check(
                Verdict::Weakened,
                format!("\"{sentence}\" has lost the constraint's negation"),
            ),
            true,
        );
    }
    let added = sw.iter().find(|w| is_softener(w) && !cwords.contains(w));
    if let Some(q) = added {
        return (
            check(
                Verdict::Weakened,
                format!("\"{sentence}\" adds the qualifier \"{q}\""),
            ),
            true,
        );
    }
    let pct = (100.0 * share).round();
    if share >= KEPT_FROM {
        (
            check(
                Verdict::Kept,
                format!("\"{sentence}\" covers {pct}% of its words"),
            ),
            true,
        )
    } else {
        (
            check(
                Verdict::Kept,
                format!("\"{sentence}\" covers only {pct}% of its words: a paraphrase?"),
            ),
            false,
        )
    }
}

#[cfg(test)]
mod tests;
