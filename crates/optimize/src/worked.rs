//! Worked answers: a form of the prompt in which the execution model writes short working
//! lines before its answer, and the answer is read after a marker (`[run] answer_after`).
//!
//! A careful person's prompt for a small chat model asks for the answer alone ("Reply with the
//! number only"); on tasks that take several steps (counting, evaluating, tracking) a 1.5B model
//! then guesses. Asked to "think step by step", it writes working whose last step is one long
//! calculation and gets it wrong as often. What works is working in short steps that each carry
//! the result so far, shown in the demonstrations (BENCHMARKS.md, "Worked answers": object
//! counting 0.43 → 0.79 on test with Qwen 1.5B executing).
//!
//! [`round`] writes that form of the best prompt so far:
//!
//! 1. for each of its demonstrations (or, without any, a few training examples), the meta model
//!    writes the working that reaches the demonstration's known answer (the `worked`
//!    meta-prompt: rationalization, as in STaR);
//! 2. a working is kept only when it has working lines, its last line gives the answer after
//!    [`MARKER`] and the task's metrics give it full marks, and the line before reaches the same answer
//!    (a working whose steps sum to 14 and whose last line says 8 teaches the wrong thing);
//! 3. the candidate is the prompt with the kept demonstrations, answered with their working,
//!    one sentence added to its instruction ([`FORM`]), and its own `[run]`: no stop sequence
//!    that would cut the working, room for it (`max_tokens`), and the answer read after the
//!    marker (labels are then generated and read, not scored);
//! 4. it is scored on the search's dev examples and compared with the best there (one
//!    challenger is not raced: a first rung decides nothing between two prompts); the verdict
//!    and the held-out check decide, and its tokens per example are in the report beside its
//!    score.
//!
//! `auto` runs it once, in round 2; a prompt that already works its answers out is left alone.

use std::collections::BTreeMap;

use metaprompt_eval::settings::{RunSettings, answer_part};
use metaprompt_eval::{Example, PromptFile};
use metaprompt_llm::PromptFormat;
use serde_json::{Value, json};

use crate::brief::Frame;
use crate::run::{Ctx, Halt};

/// What precedes the answer on the last line of a worked answer.
pub const MARKER: &str = "Answer:";

/// The sentence added to the instruction of a prompt with worked answers.
pub const FORM: &str =
    "Work it out step by step as in the examples, then end with a line \"Answer: <the answer>\".";

/// Demonstrations worked at most (each is one meta call).
const MOST: usize = 4;
/// Tokens of working allowed per answer: this many times the longest kept working's, at 4
/// bytes a token (working is dense in digits, which tokenizers split one by one: "5 + 1 = 6,
/// so far 6" is 16 tokens of Qwen's for 24 bytes), and inputs longer than the demonstrations'
/// need longer working.
const ROOM: usize = 4;
/// The score a worked answer must get from the task's metrics: full marks.
const FULL: f64 = 1.0 - 1e-9;
/// Bounds of a worked prompt's `max_tokens`.
const MIN_TOKENS: u32 = 128;
const MAX_TOKENS: u32 = 1024;

/// Propose the worked-answer form of the best prompt and score it on dev. `Ok(None)` when there is
/// nothing to work (the best already works its answers out, picks demonstrations per input,
/// or no working reached its answer).
pub(crate) async fn round(ctx: &mut Ctx<'_>) -> Result<Option<usize>, Halt> {
    let best = ctx.best();
    let base = ctx.pool[best].prompt.clone();
    if base.run.as_ref().is_some_and(|r| r.answer_after.is_some()) || base.selector.is_some() {
        return Ok(None);
    }
    let output = ctx.problem.brief.output.clone();
    let brief = &ctx.problem.brief;
    let frame = Frame::of(&base, brief);
    let demos: Vec<BTreeMap<String, Value>> = if base.demos.is_empty() {
        let seed = rand::Rng::random(&mut ctx.rng);
        let k = ctx.settings.demos.clamp(2, MOST);
        let picked = crate::brief::pick_demos(brief, &ctx.problem.train, k, seed);
        frame.clone().with_demos(brief, &picked).demos
    } else {
        base.demos.iter().take(MOST).cloned().collect()
    };
    let mut worked = Vec::new();
    let mut answers = Vec::new();
    for (k, demo) in demos.iter().enumerate() {
        let example = Example {
            id: format!("demonstration {}", k + 1),
            vars: demo.clone(),
            expected: demo.get(&output).cloned(),
        };
        let shown = ctx.problem.brief.show(&example);
        let vars = json!({
            "task": ctx.problem.brief,
            "input": shown["input"],
            "answer": shown["output"],
            "marker": MARKER,
        });
        let Some(answer) = ctx.meta("worked", &vars, 1).await?.into_iter().next() else {
            continue;
        };
        answers.push(answer.clone());
        match check(ctx, &example, &answer).await {
            Ok(working) => {
                let mut d = demo.clone();
                d.insert(output.clone(), Value::String(working));
                worked.push(d);
            }
            Err(why) => ctx.step(&format!("worked answer for {} dropped: {why}", example.id)),
        }
    }
    if worked.is_empty() {
        ctx.step("no worked answer reached its demonstration's answer: the form is not tried");
        return Ok(None);
    }
    let format = ctx.layers.execution.info().format;
    let mut prompt = form(&base, worked, &ctx.problem.options, format);
    // Text form shows demonstrations through a demo template: the frame's, when the prompt
    // had none (it showed no demonstrations).
    if prompt.template.is_some() && prompt.demo_template.is_none() {
        prompt.demo_template = Some(frame.demo_template);
    }
    let parents = vec![ctx.pool[best].id.clone()];
    let Some(idx) = ctx
        .propose(prompt, parents, "worked", &answers.join("\n\n"))
        .await
    else {
        return Ok(None);
    };
    if idx == best {
        return Ok(None);
    }
    // One challenger against the incumbent: scored on all of the search's dev examples, not
    // raced (a first rung of 20 decides nothing between two prompts, and a tie there goes to
    // the incumbent); the run's `best` then compares them on the same examples.
    let all = ctx.rung(ctx.problem.dev.len());
    ctx.score(idx, &all).await?;
    Ok(Some(idx))
}

/// The working in `answer` when it reaches `example`'s answer (see the module docs), cleaned:
/// code fences, blank lines and repeated meta-prompt fields (`Question: …`) dropped, each line
/// trimmed.
async fn check(ctx: &Ctx<'_>, example: &Example, answer: &str) -> Result<String, String> {
    // The meta-prompt's own fields, when the model repeats them, are not working.
    let echo = |l: &str| {
        ["```", "Question:", "Correct answer:"]
            .iter()
            .any(|e| l.starts_with(e))
    };
    let lines: Vec<&str> = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !echo(l))
        .collect();
    let Some(at) = lines.iter().rposition(|l| l.contains(MARKER)) else {
        return Err(format!("no line gives the answer after {MARKER:?}"));
    };
    let lines = &lines[..=at];
    if lines.len() < 2 {
        return Err("no working before the answer".into());
    }
    let working = lines.join("\n");
    let given = answer_part(&working, MARKER);
    let value = ctx
        .problem
        .scorer
        .value(example, given)
        .await
        .map_err(|e| format!("its answer cannot be scored: {e}"))?;
    if value < FULL {
        return Err(format!("its answer {given:?} is not the demonstration's"));
    }
    let before = lines[lines.len() - 2].to_lowercase();
    if !before.contains(&given.to_lowercase()) {
        return Err(format!(
            "its working does not reach {given:?} (the last step: {:?})",
            lines[lines.len() - 2]
        ));
    }
    Ok(working)
}

/// `base` in the worked form: `demos` (answered with their working), [`FORM`] after its
/// instruction, and a `[run]` that leaves room for the working and reads the answer after
/// [`MARKER`].
pub fn form(
    base: &PromptFile,
    demos: Vec<BTreeMap<String, Value>>,
    options: &metaprompt_eval::evaluator::EvalOptions,
    format: PromptFormat,
) -> PromptFile {
    let longest = demos
        .iter()
        .filter_map(|d| d.get(&options.output))
        .filter_map(Value::as_str)
        .map(str::len)
        .max()
        .unwrap_or(0);
    let max_tokens = u32::try_from(longest.div_ceil(4) * ROOM)
        .unwrap_or(MAX_TOKENS)
        .clamp(MIN_TOKENS, MAX_TOKENS);
    let mut p = base.clone();
    p.demos = demos;
    p.instruction = Some(match base.instruction.as_deref().map(str::trim) {
        Some(i) if !i.is_empty() => format!("{i} {FORM}"),
        _ => FORM.to_string(),
    });
    // Working spans lines: a stop at a line break (the task's, for one-line answers) would cut
    // it; a blank line still ends an answer in text form, where the next demonstration follows.
    let stop = if format == PromptFormat::Text {
        vec!["\n\n".to_string()]
    } else {
        Vec::new()
    };
    p.run = Some(RunSettings {
        temperature: options.temperature,
        max_tokens: max_tokens.max(options.max_tokens),
        stop,
        labels: None,
        generate: false,
        answer: None,
        answer_after: Some(MARKER.to_string()),
    });
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use metaprompt_llm::testing::ScriptedProvider;
    use metaprompt_llm::{ModelInfo, ProviderKind};

    use super::*;
    use crate::run::testkit::{self, Kit};

    /// Writes a working that reaches "negative", and for "positive" one whose steps reach
    /// "negative" but whose last line says "positive" (it must be dropped).
    fn meta() -> ScriptedProvider {
        let mut info = ModelInfo::new(ProviderKind::Openai, "meta");
        info.format = PromptFormat::Chat;
        ScriptedProvider::new("meta")
            .with_info(info)
            .respond_with(|r| {
                let t = testkit::text(r);
                Ok(if t.ends_with("Correct answer: negative") {
                    "```\nQuestion: the review\nreads the review: so far negative\n\nAnswer: negative\n```"
                        .into()
                } else {
                    "reads the review: so far negative\nAnswer: positive".into()
                })
            })
    }

    /// Right on every review when the prompt asks for working (and then answers after the
    /// marker, with working that names the other label), else always "positive".
    fn executor() -> ScriptedProvider {
        testkit::text_model().respond_with(|r| {
            let negative = testkit::review(r) % 2 == 1;
            let label = if negative { "negative" } else { "positive" };
            let other = if negative { "positive" } else { "negative" };
            Ok(if testkit::text(r).contains(FORM) {
                format!("not {other}: so far {label}\nAnswer: {label}")
            } else {
                "positive".into()
            })
        })
    }

    #[tokio::test]
    async fn the_worked_form_keeps_only_working_that_reaches_its_answer_and_beats_the_best_on_dev()
    {
        let kit = Kit::with(meta(), executor(), testkit::problem(8, 4));
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        // The incumbent, as a run has it: scored on all of dev.
        let all = ctx.rung(8);
        ctx.score(seed, &all).await.unwrap();
        let idx = round(&mut ctx).await.unwrap();
        let idx = idx.unwrap_or_else(|| panic!("no worked candidate: {:?}", ctx.rejected));
        assert_ne!(idx, seed);
        let p = &ctx.pool[idx].prompt;
        assert!(p.instruction.as_deref().unwrap().ends_with(FORM));
        let run = p.run.as_ref().unwrap();
        assert_eq!(run.answer_after.as_deref(), Some(MARKER));
        assert!(run.max_tokens >= MIN_TOKENS);
        assert_eq!(
            run.stop,
            vec!["\n\n".to_string()],
            "text form: a blank line ends it"
        );
        // Only the negative demonstrations' working reached its answer; fences and blank
        // lines are gone.
        assert!(!p.demos.is_empty());
        for d in &p.demos {
            assert_eq!(
                d["label"],
                Value::from("reads the review: so far negative\nAnswer: negative")
            );
        }
        assert_eq!(ctx.pool[idx].op, "worked");
        // Scored on all of dev: right everywhere against half right.
        assert_eq!(ctx.pool[idx].mean(), Some(1.0));
        assert_eq!(ctx.pool[seed].mean(), Some(0.5));
        assert_eq!(ctx.best(), idx);
        // A prompt that already works its answers out is left alone.
        assert_eq!(round(&mut ctx).await.unwrap(), None);
    }

    #[tokio::test]
    async fn without_a_working_that_reaches_its_answer_nothing_is_proposed() {
        let meta = ScriptedProvider::new("meta")
            .with_info({
                let mut i = ModelInfo::new(ProviderKind::Openai, "meta");
                i.format = PromptFormat::Chat;
                i
            })
            .respond_with(|_| Ok("Answer: negative".into()));
        let kit = Kit::with(meta, executor(), testkit::problem(8, 4));
        let mut ctx = kit.ctx();
        kit.add(&mut ctx, "plainly");
        assert_eq!(round(&mut ctx).await.unwrap(), None);
        assert_eq!(ctx.pool.len(), 1);
    }
}
