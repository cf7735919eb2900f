//! `translate`: move a prompt from one model to another and prove parity on data.
//!
//! The layout is converted mechanically ([`Frame::of`]: a chat prompt's user message becomes a
//! text template with an answer cue, demonstrations are kept, and the reverse), and the meta
//! layer rewrites the instruction for the target's conventions (base completion model vs
//! instruction-tuned chat model, provider habits). Variant `v0` is the mechanical conversion
//! alone; `v1…vN` are rewrites. Every variant passes the guardrail. The source prompt is scored
//! on the source model, each variant on the target model, on the same examples; the best
//! variant is compared with the source by the paired bootstrap (difference with its interval).

use std::sync::Arc;

use metaprompt_eval::evaluator::Comparison;
use metaprompt_eval::{PromptFile, Summary};
use metaprompt_llm::{PromptFormat, Provider};
use serde::Serialize;
use serde_json::{Value, json};

use crate::brief::{Brief, Frame, model_context};
use crate::candidate::{self, Candidate, Checks, Costs, Evaluation, Layers, run_on};
use crate::guard::Guard;
use crate::meta::{MetaError, MetaPrompts};
use crate::{Event, Observer};

#[derive(Debug, Clone)]
pub struct TranslateSpec {
    pub brief: Brief,
    pub shown: Vec<Value>,
    pub constraints: Vec<String>,
    pub source: PromptFile,
    /// Rewrites to sample (besides the mechanical conversion).
    pub variants: u32,
    pub meta_temperature: f32,
    pub seed: u64,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct Translated {
    pub source_model: String,
    pub target_model: String,
    pub meta_model: String,
    pub split: String,
    pub source_score: Summary,
    pub candidates: Vec<Candidate>,
    pub chosen: Option<usize>,
    /// The chosen variant on the target (B) against the source on the source model (A).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parity: Option<Comparison>,
    pub costs: Costs,
}

impl Translated {
    /// The chosen variant, with its rationale.
    pub fn prompt(&self) -> Option<PromptFile> {
        let c = &self.candidates[self.chosen?];
        let mut p = c.prompt.clone()?;
        let how = if c.id == "v0" {
            "the layout converted, the instruction unchanged".to_string()
        } else {
            format!("the instruction rewritten by {}", self.meta_model)
        };
        let mut why = format!(
            "Translated from {} for {} (`metaprompt translate`, variant {}: {how}).\n",
            self.source_model, self.target_model, c.id
        );
        if let (Some(s), Some(p)) = (&c.score, &self.parity) {
            why.push_str(&format!(
                "\n{} score on the target: {:.3} [{:.3}, {:.3}]; the source on {}: {:.3} [{:.3}, {:.3}]; \
                 difference {:+.3} [{:+.3}, {:+.3}], paired bootstrap p = {:.4} ({} examples).\n",
                self.split,
                s.score.mean,
                s.score.low,
                s.score.high,
                self.source_model,
                self.source_score.score.mean,
                self.source_score.score.low,
                self.source_score.score.high,
                p.paired.diff,
                p.paired.low,
                p.paired.high,
                p.paired.p_value,
                p.paired.n
            ));
        }
        if let Some(notes) = &c.notes {
            why.push_str(&format!("\nThe meta model's notes:\n{}\n", notes.trim()));
        }
        p.rationale = Some(why);
        p.target_model = Some(self.target_model.clone());
        Some(p)
    }
}

/// Run `translate`: `source_model` runs the source prompt, `layers.execution` is the target.
pub async fn translate(
    meta: &MetaPrompts,
    layers: &Layers,
    source_model: &Arc<dyn Provider>,
    guard: &Guard,
    spec: &TranslateSpec,
    evaluation: &Evaluation,
    observe: Observer<'_>,
) -> Result<Translated, MetaError> {
    let target = layers.execution.info();
    let frame = Frame::of(&spec.source, &spec.brief);
    let preamble = Frame::preamble(&spec.source);
    let checks = Checks {
        meta,
        guard,
        constraints: &spec.constraints,
        probe: evaluation.examples.first(),
        output: &spec.brief.output,
        seed: spec.seed,
        format: None,
        max_prompt_tokens: None,
    };
    let mut candidates = Vec::new();
    let mechanical = converted(
        &frame,
        &spec.source,
        &spec.name,
        &preamble,
        &spec.constraints,
    );
    let v0 = checks
        .check("v0".into(), preamble.clone(), None, mechanical, &[])
        .await;
    observe(Event::Candidate(&v0));
    candidates.push(v0);
    if preamble.trim().is_empty() {
        observe(Event::Step(
            "the prompt has no instruction or system message to rewrite: layout conversion only",
        ));
    } else if spec.variants > 0 {
        let ctx = json!({
            "task": spec.brief,
            "examples": spec.shown,
            "constraints": spec.constraints,
            "source": {
                "model": source_model.info().name,
                "format": format_name(source_model.info().format),
                "text": preamble,
            },
            "target": model_context(target),
        });
        observe(Event::Step(&format!(
            "rewriting the instruction for {} ({} variant{})",
            target.name,
            spec.variants,
            if spec.variants == 1 { "" } else { "s" }
        )));
        let answers = meta
            .sample(
                &layers.meta,
                "translate",
                &ctx,
                spec.meta_temperature,
                spec.seed,
                spec.variants,
            )
            .await?;
        for (i, answer) in answers.into_iter().enumerate() {
            let id = format!("v{}", i + 1);
            let c = match answer {
                Ok(a) => {
                    checks
                        .candidate(id, &a, &frame, &spec.name, &candidates)
                        .await
                }
                Err(e) => Candidate::failed(id, e.to_string()),
            };
            observe(Event::Candidate(&c));
            candidates.push(c);
        }
    }
    let source_report = run_on(
        evaluation,
        source_model,
        &spec.source,
        &format!("source on {}", source_model.info().name),
        observe,
    )
    .await?;
    candidate::evaluate_all(evaluation, &layers.execution, &mut candidates, observe).await;
    let chosen = candidate::best(&candidates);
    let chosen_report = chosen.and_then(|i| candidates[i].report.as_ref());
    Ok(Translated {
        source_model: source_model.info().name.clone(),
        target_model: target.name.clone(),
        meta_model: layers.meta.info().name.clone(),
        split: evaluation.split.clone(),
        parity: chosen_report.map(|r| candidate::versus(&source_report, r)),
        source_score: source_report.summary,
        costs: layers.costs(chosen_report, layers.execution.as_ref()),
        chosen,
        candidates,
    })
}

/// The source prompt in the frame's layout, its instruction (and system messages) unchanged.
fn converted(
    frame: &Frame,
    source: &PromptFile,
    name: &str,
    preamble: &str,
    constraints: &[String],
) -> PromptFile {
    let mut p = frame.prompt(name, preamble, constraints);
    if preamble.trim().is_empty() {
        p.instruction = None;
    }
    p.description.clone_from(&source.description);
    p
}

fn format_name(f: PromptFormat) -> &'static str {
    match f {
        PromptFormat::Chat => "chat",
        PromptFormat::Text => "text",
    }
}
