//! `generate`: a prompt from a task description, in one pass of the meta layer.
//!
//! 1. **Analyse** (one meta call, temperature 0): requirements, likely failure modes, output
//!    format, edge cases. Kept as the prompt's rationale.
//! 2. **Write** N candidates (N samples of one meta-prompt at the meta temperature; on the
//!    embedded model they share its prefix in the KV cache). Each instruction is screened for
//!    junk ([`crate::junk`], against the task, its seed prompt, the examples the meta model was
//!    shown and those it will be scored on), assembled with the task's frame (example layout,
//!    demonstrations from the train split), rendered once, and checked by the
//!    protected-constraint guardrail. Junk is rejected with its reason, unevaluated.
//! 3. **Evaluate** the accepted candidates (and the task's seed prompt, for reference) on the
//!    dev split when there is data, and keep the best. Without data the first accepted candidate
//!    is kept as written, unscored (`Generated::scored` is false): it has no evidence.
//!
//! N + 1 meta calls in all (plus judge calls when the meta model is instruction-tuned and the
//! task has constraints).

use std::collections::{BTreeMap, HashSet};

use metaprompt_eval::{Example, PromptFile, Summary};
use serde::Serialize;
use serde_json::{Value, json};

use crate::brief::{Brief, Frame, model_context};
use crate::candidate::{
    self, Candidate, Checks, Costs, Evaluation, Layers, Shorter, Status, run_on,
};
use crate::guard::Guard;
use crate::junk::{Junk, Screen};
use crate::meta::{MetaError, MetaPrompts};
use crate::{Event, Observer};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    pub brief: Brief,
    /// Labelled examples shown to the meta model (`Brief::show`).
    pub shown: Vec<Value>,
    pub frame: Frame,
    /// Protected constraints.
    pub constraints: Vec<String>,
    pub candidates: u32,
    pub meta_temperature: f32,
    pub seed: u64,
    /// Name of the resulting prompt.
    pub name: String,
    /// Evaluated beside the candidates, for reference.
    pub seed_prompt: Option<PromptFile>,
}

/// What came out.
#[derive(Debug, Serialize)]
pub struct Generated {
    pub task: Brief,
    pub meta_model: String,
    pub execution_model: String,
    pub analysis: String,
    pub candidates: Vec<Candidate>,
    /// The index of the chosen candidate in `candidates`: the best scored one, or without data
    /// (`scored` false) the first that passed the checks, unscored.
    pub chosen: Option<usize>,
    /// Whether the candidates were scored on data. Without data (no task, or `--no-eval`) the
    /// kept candidate is not the best of anything: it is kept as written and has no evidence.
    pub scored: bool,
    /// The top scorer the chosen candidate was preferred to, as shorter and not significantly
    /// worse; `None` when the chosen one is the top scorer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shorter: Option<Shorter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_score: Option<Summary>,
    /// The chosen candidate against the seed prompt (paired, same examples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_seed: Option<metaprompt_eval::evaluator::Comparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    pub costs: Costs,
}

impl Generated {
    /// The chosen prompt, with its rationale.
    pub fn prompt(&self) -> Option<PromptFile> {
        let c = &self.candidates[self.chosen?];
        let mut p = c.prompt.clone()?;
        let mut why = format!(
            "Written by {} (`metaprompt generate`, candidate {} of {}).\n\nAnalysis of the task:\n{}\n",
            self.meta_model,
            c.id,
            self.candidates.len(),
            self.analysis.trim()
        );
        if let Some(notes) = &c.notes {
            why.push_str(&format!("\nThe meta model's notes:\n{}\n", notes.trim()));
        }
        match (&c.score, &self.split) {
            (Some(s), Some(split)) => why.push_str(&format!(
                "\nChosen for the best {split} score among the candidates: {:.3} [{:.3}, {:.3}] on {} examples with {}.\n",
                s.score.mean, s.score.low, s.score.high, s.examples, self.execution_model
            )),
            _ if !self.scored => why.push_str(&format!(
                "\nNot scored: there was no data, so no candidate was measured; {} was kept as written (the first that passed the checks). Evaluate it on a task before relying on it.\n",
                c.id
            )),
            _ => {}
        }
        p.rationale = Some(why);
        p.description = Some(format!("Generated for: {}", self.task.description));
        p.target_model = Some(self.execution_model.clone());
        Some(p)
    }
}

/// Run `generate`. `evaluation`: score the candidates (and the seed) on data and pick the best;
/// without it the first accepted candidate is chosen.
pub async fn generate(
    meta: &MetaPrompts,
    layers: &Layers,
    guard: &Guard,
    spec: &GenerateSpec,
    evaluation: Option<&Evaluation>,
    observe: Observer<'_>,
) -> Result<Generated, MetaError> {
    let mut ctx = json!({
        "task": spec.brief,
        "examples": spec.shown,
        "constraints": spec.constraints,
        "target": model_context(layers.execution.info()),
    });
    observe(Event::Step("analysing the task"));
    let analysis = meta
        .call(&layers.meta, "analyze", &ctx, 0.0, spec.seed)
        .await?;
    observe(Event::Analysis(&analysis));
    ctx["analysis"] = Value::String(analysis.clone());
    observe(Event::Step(&format!(
        "writing {} candidate prompt{}",
        spec.candidates,
        if spec.candidates == 1 { "" } else { "s" }
    )));
    let answers = meta
        .sample(
            &layers.meta,
            "generate",
            &ctx,
            spec.meta_temperature,
            spec.seed,
            spec.candidates,
        )
        .await?;
    let checks = Checks {
        meta,
        guard,
        constraints: &spec.constraints,
        probe: evaluation.and_then(|e| e.examples.first()),
        output: &spec.brief.output,
        seed: spec.seed,
        format: None,
        max_prompt_tokens: None,
    };
    let screen = screen(spec, evaluation).with_shown(&meta.shown_instructions());
    let mut candidates: Vec<Candidate> = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let id = format!("c{}", i + 1);
        let c = match answer {
            Ok(a) => match rejected_as_junk(&screen, spec, id.clone(), &a) {
                Some(rejected) => rejected,
                None => {
                    checks
                        .candidate(id, &a, &spec.frame, &spec.name, &candidates)
                        .await
                }
            },
            Err(e) => Candidate::failed(id, e.to_string()),
        };
        observe(Event::Candidate(&c));
        candidates.push(c);
    }
    let mut seed_report = None;
    if let Some(ev) = evaluation {
        candidate::evaluate_all(ev, &layers.execution, &mut candidates, observe).await;
        if let Some(seed) = &spec.seed_prompt {
            seed_report = Some(run_on(ev, &layers.execution, seed, "seed", observe).await?);
        }
    }
    let (chosen, shorter) = if evaluation.is_some() {
        let format = layers.execution.info().format;
        candidate::best_or_shorter(&candidates, format, &spec.brief.output)
    } else {
        (candidates.iter().position(Candidate::accepted), None)
    };
    let chosen_report = chosen.and_then(|i| candidates[i].report.as_ref());
    let versus_seed = match (&seed_report, chosen_report) {
        (Some(s), Some(c)) => Some(candidate::versus(s, c)),
        _ => None,
    };
    Ok(Generated {
        task: spec.brief.clone(),
        meta_model: layers.meta.info().name.clone(),
        execution_model: layers.execution.info().name.clone(),
        analysis,
        costs: layers.costs(chosen_report, layers.execution.as_ref()),
        chosen,
        seed_score: seed_report.map(|r| r.summary),
        versus_seed,
        split: evaluation.map(|e| e.split.clone()),
        scored: evaluation.is_some(),
        shorter,
        candidates,
    })
}

/// The junk screen of a `generate` run: the task and its seed prompt, and for copies the
/// examples the meta model was shown (first: those it copies), the demonstrations, and the
/// examples the candidates are scored on.
fn screen(spec: &GenerateSpec, evaluation: Option<&Evaluation>) -> Screen {
    let brief = &spec.brief;
    let from_vars = |vars: &BTreeMap<String, Value>| Example {
        id: String::new(),
        vars: vars.clone(),
        expected: None,
    };
    let framed: Vec<Example> = spec
        .frame
        .demos
        .iter()
        .chain(&spec.frame.pool)
        .map(from_vars)
        .collect();
    // A shown example is a line (`brief.show`): read back as one input and its output, unless
    // it is one of the demonstrations already.
    let input = |shown: &Value| shown["input"].as_str().unwrap_or_default().to_string();
    let in_frame: HashSet<String> = framed.iter().map(|e| input(&brief.show(e))).collect();
    let field = match brief.inputs.as_slice() {
        [one] => one.clone(),
        _ => "input".to_string(),
    };
    let shown: Vec<Example> = spec
        .shown
        .iter()
        .filter(|s| !in_frame.contains(&input(s)))
        .map(|s| Example {
            id: String::new(),
            vars: BTreeMap::from([(field.clone(), s["input"].clone())]),
            expected: Some(s["output"].clone()),
        })
        .collect();
    let scored = evaluation.map_or(&[][..], |e| &e.examples);
    let examples: Vec<&Example> = shown.iter().chain(&framed).chain(scored).collect();
    let seed = spec.seed_prompt.clone().unwrap_or_default();
    Screen::new(brief, &seed, &examples)
}

/// A candidate rejected for the junk its answer holds, or `None` when the answer passes the
/// screen. An answer with no instruction at all is left to [`Checks::candidate`], which fails
/// it (the meta call gave nothing, rather than something to reject).
fn rejected_as_junk(
    screen: &Screen,
    spec: &GenerateSpec,
    id: String,
    answer: &str,
) -> Option<Candidate> {
    let (instruction, notes) = candidate::instruction_from(answer);
    let junk = screen.check(&instruction).filter(|&j| j != Junk::Empty)?;
    Some(Candidate {
        answer: answer.to_string(),
        notes,
        prompt: Some(
            spec.frame
                .prompt(&spec.name, &instruction, &spec.constraints),
        ),
        status: Status::Rejected(vec![junk.describe().to_string()]),
        ..Candidate::failed(id, String::new())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metaprompt_eval::metric::MetricConfig;
    use metaprompt_eval::{EvalOptions, Scorer};
    use metaprompt_llm::testing::ScriptedProvider;
    use metaprompt_llm::{ModelInfo, Prompt, PromptFormat, ProviderKind};

    use super::*;

    fn base_model(name: &str) -> ScriptedProvider {
        let mut info = ModelInfo::new(ProviderKind::Local, name);
        info.format = PromptFormat::Text;
        info.pricing = Some(metaprompt_llm::Pricing::FREE);
        ScriptedProvider::new(name).with_info(info)
    }

    fn example(text: &str, label: &str) -> Example {
        Example {
            id: text.into(),
            vars: [
                ("sentence".to_string(), json!(text)),
                ("label".to_string(), json!(label)),
            ]
            .into(),
            expected: Some(json!(label)),
        }
    }

    fn spec(constraints: Vec<String>) -> GenerateSpec {
        let brief = Brief {
            name: "s".into(),
            description: "Classify the sentiment of a review.".into(),
            inputs: vec!["sentence".into()],
            output: "label".into(),
            labels: vec!["negative".into(), "positive".into()],
        };
        let demos = [example("great", "positive"), example("awful", "negative")];
        GenerateSpec {
            shown: demos.iter().map(|d| brief.show(d)).collect(),
            frame: Frame::fresh(&brief).with_demos(&brief, &demos),
            brief,
            constraints,
            candidates: 3,
            meta_temperature: 0.8,
            seed: 7,
            name: "gen".into(),
            seed_prompt: None,
        }
    }

    fn evaluation() -> Evaluation {
        let metric: MetricConfig =
            toml::from_str("type = \"choice\"\nlabels = [\"negative\", \"positive\"]").unwrap();
        Evaluation {
            scorer: Scorer::new(&[metric], None).unwrap(),
            examples: vec![example("nice", "positive"), example("bad", "negative")],
            options: EvalOptions {
                temperature: 0.0,
                max_tokens: 4,
                stop: vec![],
                output: "label".into(),
                seed: 1,
                answer_after: None,
            },
            split: "dev".into(),
        }
    }

    /// An execution model that answers "positive" when the last review is "nice", else
    /// "negative": right on every example of [`evaluation`].
    fn labeller() -> ScriptedProvider {
        base_model("exec").respond_with(|r| {
            let Prompt::Text(t) = &r.prompt else { panic!() };
            Ok(if t.trim_end().ends_with("nice\nLabel:") {
                "positive"
            } else {
                "negative"
            }
            .into())
        })
    }

    #[tokio::test]
    async fn of_two_candidates_that_score_alike_the_shorter_is_chosen() {
        let meta = Arc::new(
            base_model("meta")
                .reply("Reviews can be sarcastic.")
                .reply(
                    " read the whole review slowly and carefully, weigh the tone of every \
                     sentence the reviewer wrote about the film, and then label the review as \
                     positive or negative.",
                )
                .reply(" label the review as positive or negative.")
                .reply(""),
        );
        let exec = Arc::new(labeller());
        let layers = Layers::new(meta, exec);
        let g = generate(
            &MetaPrompts::builtin(),
            &layers,
            &Guard::new(None),
            &spec(vec![]),
            Some(&evaluation()),
            &|_| {},
        )
        .await
        .unwrap();
        // Both score 1.0; the first is the top scorer, the second is kept for its length.
        assert_eq!(g.candidates[0].score.as_ref().unwrap().score.mean, 1.0);
        assert_eq!(g.candidates[1].score.as_ref().unwrap().score.mean, 1.0);
        assert_eq!(g.chosen, Some(1));
        let s = g.shorter.as_ref().unwrap();
        assert_eq!(s.over, "c1");
        assert!(s.tokens * 10 <= s.over_tokens * 9, "{s:?}");
        assert!(
            s.describe().starts_with("preferred to c1"),
            "{}",
            s.describe()
        );
    }

    #[tokio::test]
    async fn a_base_meta_model_gets_completion_meta_prompts_and_the_constraints_are_written_in() {
        let meta = Arc::new(
            base_model("meta")
                .reply("Reviews can be sarcastic.")
                .reply(" label the review as positive or negative.")
                .reply(" label the review as positive or negative.")
                .reply(""),
        );
        let exec = Arc::new(labeller());
        let layers = Layers::new(meta.clone(), exec.clone());
        let rule = "Never quote the review.".to_string();
        let g = generate(
            &MetaPrompts::builtin(),
            &layers,
            &Guard::new(None),
            &spec(vec![rule.clone()]),
            Some(&evaluation()),
            &|_| {},
        )
        .await
        .unwrap();
        // Analysis, then three samples of one completion-style meta-prompt.
        let calls = meta.calls();
        assert_eq!(calls.len(), 4);
        let Prompt::Text(analyze) = &calls[0].prompt else {
            panic!("a base model gets text meta-prompts")
        };
        assert!(analyze.ends_with("Notes:"));
        assert_eq!(calls[0].temperature, 0.0);
        let Prompt::Text(write) = &calls[1].prompt else {
            panic!()
        };
        assert!(
            write.ends_with("Notes: Reviews can be sarcastic.\nInstruction:"),
            "{write}"
        );
        assert_eq!(
            calls[1..].iter().map(|c| c.sample).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(
            calls[1..]
                .iter()
                .all(|c| c.temperature == 0.8 && c.seed == Some(7))
        );
        // c1 accepted (the constraint written in after the model's text), c2 the same prompt,
        // c3 empty.
        assert_eq!(g.candidates[0].status, Status::Accepted);
        assert_eq!(
            g.candidates[0]
                .prompt
                .as_ref()
                .unwrap()
                .instruction
                .as_deref(),
            Some("Label the review as positive or negative. Never quote the review.")
        );
        assert_eq!(g.candidates[1].status, Status::Duplicate("c1".into()));
        assert!(matches!(g.candidates[2].status, Status::Failed(_)));
        assert_eq!(g.chosen, Some(0));
        assert_eq!(g.candidates[0].score.as_ref().unwrap().score.mean, 1.0);
        assert_eq!(g.candidates[1].score.as_ref().unwrap().score.mean, 1.0);
        // Only one evaluation ran (the duplicate was not evaluated again).
        assert_eq!(exec.calls().len(), 2);
        assert_eq!(g.costs.meta.calls, 4);
        assert_eq!(g.costs.execution.calls, 2);
        let p = g.prompt().unwrap();
        assert!(p.rationale.unwrap().contains("Reviews can be sarcastic."));
        assert_eq!(p.constraints, [rule]);
    }

    #[tokio::test]
    async fn without_data_the_first_accepted_candidate_is_kept_unscored_and_says_so() {
        let meta = Arc::new(
            base_model("meta")
                .reply("notes")
                .reply("")
                .reply(" label the review as positive or negative.")
                .reply(" say positive or negative."),
        );
        let exec = Arc::new(base_model("exec"));
        let layers = Layers::new(meta, exec.clone());
        let g = generate(
            &MetaPrompts::builtin(),
            &layers,
            &Guard::new(None),
            &spec(vec![]),
            None,
            &|_| {},
        )
        .await
        .unwrap();
        assert!(!g.scored);
        assert_eq!(g.split, None);
        assert_eq!(g.chosen, Some(1), "the first that passed the checks");
        assert!(g.candidates.iter().all(|c| c.score.is_none()));
        assert!(exec.calls().is_empty(), "nothing was executed");
        let why = g.prompt().unwrap().rationale.unwrap();
        assert!(
            why.contains("Not scored: there was no data") && why.contains("c2 was kept as written"),
            "{why}"
        );
        assert!(!why.contains("Chosen for the best"), "{why}");
    }

    #[tokio::test]
    async fn junk_candidates_are_rejected_with_the_reason_and_a_good_one_is_kept() {
        let meta = Arc::new(
            base_model("meta")
                .reply("notes")
                .reply("<reverse>")
                // A shown example, its period dropped: a near copy.
                .reply("the plot is a dull mess of clichés and tired jokes")
                .reply("Here's the new instruction: **Say positive or negative.**")
                .reply(" label the review as positive or negative."),
        );
        let exec = Arc::new(base_model("exec").respond_with(|_| Ok("positive".into())));
        let layers = Layers::new(meta, exec);
        let mut spec = spec(vec![]);
        spec.candidates = 4;
        let demos = [
            example(
                "the plot is a dull mess of clichés and tired jokes.",
                "negative",
            ),
            example("a gorgeous, witty, seductive movie.", "positive"),
        ];
        spec.shown = demos.iter().map(|d| spec.brief.show(d)).collect();
        spec.frame = Frame::fresh(&spec.brief).with_demos(&spec.brief, &demos[1..]);
        let g = generate(
            &MetaPrompts::builtin(),
            &layers,
            &Guard::new(None),
            &spec,
            Some(&evaluation()),
            &|_| {},
        )
        .await
        .unwrap();
        let statuses: Vec<&Status> = g.candidates.iter().map(|c| &c.status).collect();
        assert_eq!(
            statuses[..2],
            [
                &Status::Rejected(vec![Junk::Markup.describe().into()]),
                &Status::Rejected(vec![Junk::CopiesExample.describe().into()]),
            ]
        );
        assert_eq!(statuses[2..], [&Status::Accepted, &Status::Accepted]);
        let instruction = |i: usize| g.candidates[i].prompt.as_ref().unwrap().instruction.clone();
        assert_eq!(instruction(0).as_deref(), Some("<reverse>"));
        assert_eq!(instruction(2).as_deref(), Some("Say positive or negative."));
        assert!(
            g.candidates[..2].iter().all(|c| c.score.is_none()),
            "junk is not evaluated"
        );
        assert!(g.chosen.is_some_and(|i| i >= 2));
    }

    #[tokio::test]
    async fn a_candidate_that_drops_a_protected_constraint_is_rejected_not_kept() {
        // A user's text-form template without the suffix: the model's words alone must carry
        // the constraint, and here they do not.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("generate.toml"),
            "description = \"no suffix\"\n[text]\nprompt = \"Task: {{ task.description }}\\nInstruction:\"\nstop = [\"\\n\"]\n",
        )
        .unwrap();
        let meta_prompts = MetaPrompts::load(Some(dir.path())).unwrap();
        let meta = Arc::new(
            base_model("meta")
                .reply("notes")
                .reply("Label the review. Never quote the review.")
                .reply("Label the review.")
                .reply("Label the review. You may quote the review."),
        );
        let exec = Arc::new(base_model("exec").respond_with(|_| Ok("positive".into())));
        let layers = Layers::new(meta, exec);
        let g = generate(
            &meta_prompts,
            &layers,
            &Guard::new(None),
            &spec(vec!["Never quote the review.".into()]),
            Some(&evaluation()),
            &|_| {},
        )
        .await
        .unwrap();
        let statuses: Vec<&Status> = g.candidates.iter().map(|c| &c.status).collect();
        assert_eq!(statuses[0], &Status::Accepted);
        let Status::Rejected(why) = statuses[1] else {
            panic!("{statuses:?}")
        };
        assert!(why[0].contains("Never quote the review.") && why[0].contains("dropped"));
        let Status::Rejected(why) = statuses[2] else {
            panic!("{statuses:?}")
        };
        assert!(why[0].contains("weakened"), "{why:?}");
        assert_eq!(g.chosen, Some(0), "only the candidate that kept it can win");
        assert!(
            g.candidates[1].score.is_none(),
            "rejected ones are not evaluated"
        );
    }
}
