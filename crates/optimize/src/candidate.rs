//! Candidates: prompts the meta layer proposed, what became of them (accepted, rejected by the
//! guardrail, failed, duplicate) and their scores; the per-layer accounting every run reports.
//!
//! The instruction is read out of a meta answer by [`instruction_from`] (the `<prompt>` content,
//! cleaned of its wrapping by [`crate::clean`]). Two candidates are duplicates when the
//! execution model would see them alike, their instructions compared up to case, spacing and
//! punctuation ([`instruction_key`]); a duplicate is not evaluated again.

use std::borrow::Cow;
use std::sync::Arc;

use metaprompt_eval::evaluator::{self, Comparison, own_tokens};
use metaprompt_eval::stats::Paired;
use metaprompt_eval::{EvalOptions, Example, PromptFile, Report, Scorer, Summary};
use metaprompt_llm::{CallLog, LayerUsage, Meter, Metered, PromptFormat, Provider, Usage};
use serde::{Deserialize, Serialize};

use crate::brief::Frame;
use crate::guard::{Guard, GuardReport};
use crate::meta::MetaPrompts;
use crate::{Event, Observer};
use metaprompt_eval::prompt::PromptError;

pub use metaprompt_eval::stats::BOOTSTRAP_SEED;

/// What became of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "why", rename_all = "lowercase")]
pub enum Status {
    /// Passed every check; evaluated when there is data.
    Accepted,
    /// Failed the guardrail or does not render; the reasons, one per failure.
    Rejected(Vec<String>),
    /// The meta call failed or its answer held no prompt.
    Failed(String),
    /// The same prompt as an earlier candidate (its id); not evaluated twice.
    Duplicate(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `c1`, `c2`, … (generate) or `v0`, `v1`, … (translate).
    pub id: String,
    /// The meta model's answer as read (or the error).
    pub answer: String,
    /// Text of the answer outside the prompt (a chat meta model's own notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptFile>,
    #[serde(flatten)]
    pub status: Status,
    pub guard: GuardReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Summary>,
    #[serde(skip)]
    pub report: Option<Report>,
}

impl Candidate {
    pub fn failed(id: String, error: String) -> Self {
        Self {
            id,
            answer: String::new(),
            notes: None,
            prompt: None,
            status: Status::Failed(error),
            guard: GuardReport::default(),
            score: None,
            report: None,
        }
    }

    pub fn accepted(&self) -> bool {
        self.status == Status::Accepted
    }
}

/// The instruction in a meta answer: between `<prompt>` tags (chat form) or the whole
/// continuation (text form), cleaned of its wrapping (a lead-in clause, emphasis, a tag pair,
/// quotes: [`crate::clean`]), starting with a capital.
pub fn instruction_from(answer: &str) -> (String, Option<String>) {
    let prompt = crate::meta::prompt_from_answer(answer);
    let notes = answer
        .find("<prompt>")
        .map(|i| answer[..i].trim().to_string())
        .filter(|n| !n.is_empty());
    let t = crate::clean::clean(&prompt);
    let mut chars = t.chars();
    let text: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    (without_repeated_sentences(&text), notes)
}

/// A sentence said twice (a base model restating a constraint that the template also writes
/// in) is kept once.
fn without_repeated_sentences(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut start = 0;
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in bytes.iter().enumerate() {
        let end_of_sentence =
            matches!(c, '.' | '!' | '?') && bytes.get(k + 1).is_none_or(|(_, n)| n.is_whitespace());
        if end_of_sentence || k + 1 == bytes.len() {
            let end = i + c.len_utf8();
            let sentence = &text[start..end];
            let key = sentence
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase();
            if !key.is_empty() && !seen.contains(&key) {
                out.push_str(sentence);
                seen.push(key);
            }
            start = end;
        }
    }
    out.trim().to_string()
}

/// What a candidate prompt is checked with before it may be evaluated.
#[derive(Debug)]
pub struct Checks<'a> {
    pub meta: &'a MetaPrompts,
    pub guard: &'a Guard,
    pub constraints: &'a [String],
    /// An example to render the prompt with (catches template syntax the meta model wrote).
    pub probe: Option<&'a Example>,
    pub output: &'a str,
    pub seed: u64,
    /// The execution model's prompt form: two prompts it would see identically (rendered for
    /// the probe) are duplicates, whatever else their files hold. `None`: compare the files.
    pub format: Option<PromptFormat>,
    /// The most tokens a prompt may spend on itself ([`own_tokens`], `--max-prompt-tokens`):
    /// a longer candidate is rejected before it costs a call.
    pub max_prompt_tokens: Option<u64>,
}

impl Checks<'_> {
    /// Whether the execution model sees `a` and `b` alike: rendered for the probe in its form
    /// when both render, else the same instruction, templates and demos. Instructions that
    /// differ only in case, spacing or punctuation ([`instruction_key`]) are taken as one: a
    /// meta model proposes `Classify the review.` and `classify the review` in one round, and
    /// evaluating both would buy nothing.
    fn same(&self, a: &PromptFile, b: &PromptFile) -> bool {
        let b = match (&a.instruction, &b.instruction) {
            (Some(x), Some(y)) if x != y && instruction_key(x) == instruction_key(y) => {
                Cow::Owned(PromptFile {
                    instruction: a.instruction.clone(),
                    ..b.clone()
                })
            }
            _ => Cow::Borrowed(b),
        };
        if let (Some(format), Some(probe)) = (self.format, self.probe) {
            let mut vars = probe.vars.clone();
            vars.remove(self.output);
            let seen = |p: &PromptFile| {
                // A selector's prompt, by its longest form (the same pool and k look alike).
                let picks = p.selector.as_ref().map(|s| (s.clone(), p.pool.clone()));
                p.longest()
                    .render(&vars, format, Some(self.output))
                    .ok()
                    .map(|r| (r, picks))
            };
            if let (Some(x), Some(y)) = (seen(a), seen(&b)) {
                return x == y;
            }
        }
        same_prompt(a, &b)
    }

    /// A candidate from a meta answer: read, assembled with `frame`, rendered, guarded, and
    /// compared with the earlier candidates.
    pub async fn candidate(
        &self,
        id: String,
        answer: &str,
        frame: &Frame,
        name: &str,
        earlier: &[Candidate],
    ) -> Candidate {
        let (instruction, notes) = instruction_from(answer);
        if instruction.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return Candidate {
                answer: answer.to_string(),
                ..Candidate::failed(id, "the meta model wrote no usable prompt".into())
            };
        }
        let prompt = frame.prompt(name, &instruction, self.constraints);
        self.check(id, answer.to_string(), notes, prompt, earlier)
            .await
    }

    /// Check an assembled prompt.
    pub async fn check(
        &self,
        id: String,
        answer: String,
        notes: Option<String>,
        prompt: PromptFile,
        earlier: &[Candidate],
    ) -> Candidate {
        let mut c = Candidate {
            id,
            answer,
            notes,
            prompt: None,
            status: Status::Accepted,
            guard: GuardReport::default(),
            score: None,
            report: None,
        };
        if let Err(e) = self.renders(&prompt) {
            c.status = Status::Rejected(vec![format!("the prompt does not render: {e}")]);
            c.prompt = Some(prompt);
            return c;
        }
        // A prompt that cannot be kept (a null field in a demonstration) is refused now, not
        // after the run has spent its budget on it.
        if let Err(e) = prompt.to_toml() {
            c.status = Status::Rejected(vec![e.to_string()]);
            c.prompt = Some(prompt);
            return c;
        }
        if let Some(cap) = self.max_prompt_tokens {
            let format = self.format.unwrap_or(PromptFormat::Text);
            if let Some(n) = own_tokens(&prompt, format, self.output).filter(|&n| n > cap) {
                c.status = Status::Rejected(vec![format!(
                    "the prompt spends about {n} tokens on itself, over the cap of {cap} \
                     (--max-prompt-tokens)"
                )]);
                c.prompt = Some(prompt);
                return c;
            }
        }
        let same = |o: &Candidate| {
            o.accepted() && o.prompt.as_ref().is_some_and(|p| self.same(p, &prompt))
        };
        if let Some(twin) = earlier.iter().find(|o| same(o)) {
            c.status = Status::Duplicate(twin.id.clone());
            c.guard = twin.guard.clone();
            c.prompt = Some(prompt);
            return c;
        }
        c.guard = self
            .guard
            .check(self.meta, &prompt, self.constraints, self.seed)
            .await;
        if !c.guard.passed() {
            c.status = Status::Rejected(c.guard.reasons());
        }
        c.prompt = Some(prompt);
        c
    }

    fn renders(&self, prompt: &PromptFile) -> Result<(), String> {
        prompt.validate()?;
        if let Some(e) = self.probe {
            let mut vars = e.vars.clone();
            vars.remove(self.output);
            for format in [PromptFormat::Text, PromptFormat::Chat] {
                prompt
                    .longest()
                    .render(&vars, format, Some(self.output))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

fn same_prompt(a: &PromptFile, b: &PromptFile) -> bool {
    let key = |s: &Option<String>| instruction_key(s.as_deref().unwrap_or_default());
    key(&a.instruction) == key(&b.instruction)
        && a.template == b.template
        && a.messages == b.messages
        && a.demos == b.demos
}

/// What [`instruction_key`] reads as a space.
const PROSE_PUNCTUATION: &[char] = &[
    '.', ',', ';', ':', '!', '?', '\'', '"', '(', ')', '-', '‘', '’', '“', '”', '–', '—', '…',
];

/// An instruction as duplicates are found: lower case, the punctuation of prose (`.,;:!?'"()`,
/// dashes, curly quotes, the final period among them) read as spaces, whitespace collapsed.
/// Symbols that mean something to the execution model (`####`, `<`, `{{ }}`, `*`) are kept.
pub fn instruction_key(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || PROSE_PUNCTUATION.contains(&c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Examples, metrics and options a run scores prompts with.
#[derive(Debug)]
pub struct Evaluation {
    pub scorer: Scorer,
    pub examples: Vec<Example>,
    pub options: EvalOptions,
    /// The split's name, for reports.
    pub split: String,
}

impl Evaluation {
    pub async fn run(
        &self,
        prompt: &PromptFile,
        model: &Arc<dyn Provider>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Report, metaprompt_eval::prompt::PromptError> {
        evaluator::evaluate(
            prompt,
            model,
            &self.scorer,
            &self.examples,
            &self.options,
            progress,
        )
        .await
    }
}

/// The meta layer and the execution layer, each counted on its own meter.
#[derive(Debug, Clone)]
pub struct Layers {
    pub meta: Arc<dyn Provider>,
    pub execution: Arc<dyn Provider>,
    meta_meter: Meter,
    execution_meter: Meter,
}

impl Layers {
    pub fn new(meta: Arc<dyn Provider>, execution: Arc<dyn Provider>) -> Self {
        Self::with_meters(meta, execution, Meter::new(), Meter::new())
    }

    /// Layers whose every call is also appended to `log` (a run directory's `calls.jsonl`).
    pub fn logged(meta: Arc<dyn Provider>, execution: Arc<dyn Provider>, log: CallLog) -> Self {
        let meta_meter = Meter::logged(log.clone(), "meta");
        let execution_meter = Meter::logged(log, "execution");
        Self::with_meters(meta, execution, meta_meter, execution_meter)
    }

    fn with_meters(
        meta: Arc<dyn Provider>,
        execution: Arc<dyn Provider>,
        meta_meter: Meter,
        execution_meter: Meter,
    ) -> Self {
        Self {
            meta: Metered::wrap(meta, meta_meter.clone()),
            execution: Metered::wrap(execution, execution_meter.clone()),
            meta_meter,
            execution_meter,
        }
    }

    /// Another model of the execution layer (translate's source model), on the same meter.
    pub fn also_execution(&self, model: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Metered::wrap(model, self.execution_meter.clone())
    }

    /// Another model of the meta layer (a separate judge), on the same meter.
    pub fn also_meta(&self, model: Arc<dyn Provider>) -> Arc<dyn Provider> {
        Metered::wrap(model, self.meta_meter.clone())
    }

    pub fn costs(&self, chosen: Option<&Report>, model: &dyn Provider) -> Costs {
        Costs {
            meta: self.meta_meter.snapshot(),
            execution: self.execution_meter.snapshot(),
            per_execution: chosen.map(|r| PerExecution::of(r, model)),
        }
    }
}

/// What a run cost, per layer, and what the result will cost per use.
#[derive(Debug, Clone, Serialize)]
pub struct Costs {
    pub meta: LayerUsage,
    pub execution: LayerUsage,
    /// The chosen prompt's mean cost per execution (live price, not cache hits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_execution: Option<PerExecution>,
}

impl Costs {
    /// Dollars per execution when the meta layer's (one-off) cost is spread over `executions`.
    pub fn amortized(&self, executions: u64) -> Option<f64> {
        let per = self.per_execution.as_ref()?.cost_usd?;
        let meta = self.meta.cost_usd?;
        Some(per + meta / executions.max(1) as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PerExecution {
    pub input_tokens: f64,
    pub output_tokens: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl PerExecution {
    fn of(report: &Report, model: &dyn Provider) -> Self {
        let n = report.results.len().max(1) as f64;
        let input = report.results.iter().map(|r| r.input_tokens).sum::<u64>();
        let output = report.results.iter().map(|r| r.output_tokens).sum::<u64>();
        let cost = model.info().pricing.map(|p| {
            p.cost(&Usage {
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: None,
            }) / n
        });
        Self {
            input_tokens: input as f64 / n,
            output_tokens: output as f64 / n,
            cost_usd: cost,
        }
    }
}

/// Evaluate every accepted candidate on `model`; duplicates share their twin's score. A prompt
/// that fails to render on some example is rejected.
pub async fn evaluate_all(
    ev: &Evaluation,
    model: &Arc<dyn Provider>,
    candidates: &mut [Candidate],
    observe: Observer<'_>,
) {
    for c in candidates.iter_mut().filter(|c| c.accepted()) {
        let Some(prompt) = &c.prompt else { continue };
        match run_on(ev, model, prompt, &c.id, observe).await {
            Ok(report) => {
                c.score = Some(report.summary.clone());
                c.report = Some(report);
            }
            Err(e) => c.status = Status::Rejected(vec![format!("the prompt does not render: {e}")]),
        }
    }
    for k in 0..candidates.len() {
        if let Status::Duplicate(twin) = &candidates[k].status {
            let score = candidates
                .iter()
                .find(|o| &o.id == twin)
                .and_then(|o| o.score.clone());
            candidates[k].score = score;
        }
    }
}

/// Evaluate one prompt on `model`, reporting progress. Fails only when the prompt does not
/// render for some example.
pub async fn run_on(
    ev: &Evaluation,
    model: &Arc<dyn Provider>,
    prompt: &PromptFile,
    label: &str,
    observe: Observer<'_>,
) -> Result<Report, PromptError> {
    let progress = |done, total| {
        observe(Event::Evaluating { label, done, total });
    };
    let report = ev.run(prompt, model, &progress).await?;
    observe(Event::Evaluated {
        label,
        summary: &report.summary,
    });
    Ok(report)
}

/// The best evaluated candidate (highest mean; the earlier one on ties).
pub fn best(candidates: &[Candidate]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        if let (true, Some(s)) = (c.accepted(), &c.score)
            && best.is_none_or(|(_, b)| s.score.mean > b)
        {
            best = Some((i, s.score.mean));
        }
    }
    best.map(|(i, _)| i)
}

/// A shorter prompt preferred to the top scorer on dev ([`shortest_tie`]): it is not
/// significantly worse than the top (paired, on the same examples) and spends at most nine
/// tenths of the top's own tokens; in an optimization it also beats the seed as the top does. Small executors do worse on long prompts, and
/// every execution pays a prompt's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shorter {
    /// The top scorer.
    pub over: String,
    pub over_tokens: u64,
    pub tokens: u64,
    /// The preferred prompt minus the top scorer (paired).
    pub diff: Paired,
}

impl Shorter {
    /// `preferred to c2, which is not significantly better (…) and spends ~80 tokens on itself
    /// against ~52`.
    pub fn describe(&self) -> String {
        format!(
            "preferred to {}, which is not significantly better ({:+.3} [{:+.3}, {:+.3}], p = {:.4}) and spends ~{} tokens on itself against ~{}",
            self.over,
            -self.diff.diff,
            -self.diff.high,
            -self.diff.low,
            self.diff.p_value,
            self.over_tokens,
            self.tokens
        )
    }
}

/// "Shorter wins a tie": of `rivals` (index, own tokens, paired score minus the top's), the one
/// with the fewest tokens that spends at most nine tenths of the top's `top_tokens` and is not
/// significantly worse than the top (p < 0.05 with the interval below zero); the earlier on
/// equal tokens.
pub fn shortest_tie(
    top: &str,
    top_tokens: u64,
    rivals: impl Iterator<Item = (usize, u64, Paired)>,
) -> Option<(usize, Shorter)> {
    rivals
        .filter(|&(_, t, _)| t * 10 <= top_tokens * 9)
        .filter(|(_, _, diff)| !(diff.p_value < 0.05 && diff.high < 0.0))
        .min_by_key(|&(i, t, _)| (t, i))
        .map(|(i, tokens, diff)| {
            let s = Shorter {
                over: top.to_string(),
                over_tokens: top_tokens,
                tokens,
                diff,
            };
            (i, s)
        })
}

/// The best evaluated candidate, preferring a shorter one that scores alike
/// ([`shortest_tie`], candidates' own tokens in `format`), and why when it does.
pub fn best_or_shorter(
    candidates: &[Candidate],
    format: PromptFormat,
    output: &str,
) -> (Option<usize>, Option<Shorter>) {
    let Some(top) = best(candidates) else {
        return (None, None);
    };
    let tokens = |c: &Candidate| own_tokens(c.prompt.as_ref()?, format, output);
    let (Some(top_tokens), Some(top_report)) = (tokens(&candidates[top]), &candidates[top].report)
    else {
        return (Some(top), None);
    };
    let rivals = candidates.iter().enumerate().filter_map(|(i, c)| {
        let report = c.report.as_ref().filter(|_| i != top && c.accepted())?;
        let vs = versus(top_report, report);
        (vs.unpaired == 0).then_some((i, tokens(c)?, vs.paired))
    });
    match shortest_tie(&candidates[top].id, top_tokens, rivals) {
        Some((i, s)) => (Some(i), Some(s)),
        None => (Some(top), None),
    }
}

/// B against A on the same examples (the paired bootstrap and McNemar of `compare`).
pub fn versus(a: &Report, b: &Report) -> Comparison {
    evaluator::compare(a, b, BOOTSTRAP_SEED)
}

#[cfg(test)]
mod tests;
