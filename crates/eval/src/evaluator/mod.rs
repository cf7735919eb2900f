//! Runs a prompt over examples and scores it.
//!
//! Examples go to the model in batches (`Provider::complete_batch`: concurrent for HTTP
//! providers under their limiter, shared-prefix for the embedded model, generated several at
//! once with `[local] lanes`; the cache sits in
//! front either way). A task with a `choice` metric on a model that scores labels skips
//! generation: the labels are scored by log-probability and the most likely one is the output.
//!
//! **A failure is not a zero.** An example whose model call failed, or whose metric failed, is
//! *unscored*: its result has `score: None` and says why in `error`. Every aggregate (the
//! summary's estimate and pass rate, [`Report::scores`], [`compare`]) leaves unscored examples
//! out and counts them (`Summary::errors`, `Comparison::unpaired`), so a flaky endpoint makes
//! an estimate less certain instead of making a prompt look worse. With no example scored there
//! is no estimate at all (`Summary::scored` is 0, `Summary::first_error` says why): callers
//! report that, not a score of 0.
//!
//! Why an example is unscored is the error's message with its root cause ([`error_text`]);
//! [`shorten`] cuts such a message for a summary line between words, keeping the cause.
//!
//! What an evaluation produces (results, the summary, the report) is in `report.rs`; the length
//! checks against a model's context in `context.rs`; the paired comparison of two reports in
//! `compare.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metaprompt_llm::{Prompt, Provider, Request, ScoreRequest, Usage};
use serde_json::Value;

use crate::dataset::Example;
use crate::metric::{Metric, MetricConfig, Score};
use crate::prompt::PromptFile;
use crate::stats::{self};

mod compare;
mod context;
mod report;

pub use compare::{Comparison, compare};
pub use context::{BYTES_PER_TOKEN, TooLong, check_context, estimate_tokens, own_tokens};
pub use report::{ExampleResult, Report, Summary, error_text, shorten};

/// How many examples go to the model per batch call (progress is reported between batches).
pub const BATCH: usize = 64;

/// The metrics of a task, built.
#[derive(Debug, Clone)]
pub struct Scorer {
    pub metrics: Vec<(MetricConfig, Arc<dyn Metric>)>,
}

impl Scorer {
    pub fn new(configs: &[MetricConfig], judge: Option<Arc<dyn Provider>>) -> Result<Self, String> {
        let metrics = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                crate::metric::build(c, judge.clone())
                    .map(|m| (c.clone(), m))
                    .map_err(|e| format!("[[metrics]] #{}: {e}", i + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { metrics })
    }

    /// The labels of the task's `choice` metric, if any.
    pub fn labels(&self) -> Option<Vec<String>> {
        self.metrics
            .iter()
            .find_map(|(_, m)| m.labels().map(<[String]>::to_vec))
    }

    /// The labels to score by log-probability instead of generating: the `choice` metric's,
    /// unless it says `generate = true`.
    pub fn scored_labels(&self) -> Option<Vec<String>> {
        let generate = self
            .metrics
            .iter()
            .any(|(c, _)| matches!(&c.spec, crate::metric::MetricSpec::Choice(o) if o.generate));
        self.labels().filter(|_| !generate)
    }

    /// The weighted score of one output produced elsewhere (a served prompt's answer), as an
    /// evaluation would score it; `Err` (why) when a metric failed.
    pub async fn value(&self, example: &Example, output: &str) -> Result<f64, String> {
        self.score(example, output).await.map(|s| s.value)
    }

    /// Weighted score, whether every metric passed its threshold, and the feedback; `Err`
    /// (why) when a metric failed: the example is then unscored, not scored 0.
    async fn score(&self, example: &Example, output: &str) -> Result<Scored, String> {
        let mut total = 0.0;
        let mut weights = 0.0;
        let mut passed = true;
        let mut scores = BTreeMap::new();
        let mut notes = Vec::new();
        for (config, metric) in &self.metrics {
            let s = metric
                .score(example, output)
                .await
                .map_err(|e| format!("the metric failed: {}", error_text(&e)))?;
            total += config.weight() * s.value;
            weights += config.weight();
            passed &= s.value >= config.threshold();
            if let Some(f) = &s.feedback {
                notes.push(f.clone());
            }
            scores.insert(metric.name().to_string(), s);
        }
        let value = if weights > 0.0 { total / weights } else { 0.0 };
        Ok(Scored {
            value,
            passed,
            scores,
            feedback: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }
}

/// What the metrics made of one output.
struct Scored {
    value: f64,
    passed: bool,
    scores: BTreeMap<String, Score>,
    feedback: Option<String>,
}

/// Settings of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub temperature: f32,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    /// The expected-output variable (demos show it).
    pub output: String,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// The model works the answer out first and gives it after this marker: the metrics score
    /// [`crate::settings::answer_part`] of each output (the results keep the whole output),
    /// and labels are generated and read, never scored.
    pub answer_after: Option<String>,
}

/// The continuation to score for a label: with a leading space after a word or a colon
/// (`Sentiment:` + ` positive`), as written after whitespace or an opening bracket (`(` + `A)`).
pub fn continuation(prompt: &Prompt, label: &str) -> String {
    let needs_space = match prompt {
        Prompt::Text(t) => t
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || ":.?!,;".contains(c)),
        Prompt::Chat(_) => false,
    };
    if needs_space && !label.starts_with(char::is_whitespace) {
        format!(" {label}")
    } else {
        label.to_string()
    }
}

/// Evaluate `prompt` on `examples` with `model`. `progress` is called with (done, total).
///
/// A prompt with its own `[run]` runs with it: its temperature, `max_tokens`, `stop` and
/// `answer_after` replace those of `options` (what was evaluated is what is served).
pub async fn evaluate(
    prompt: &PromptFile,
    model: &Arc<dyn Provider>,
    scorer: &Scorer,
    examples: &[Example],
    options: &EvalOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, crate::prompt::PromptError> {
    let own;
    let options = match &prompt.run {
        Some(run) => {
            own = run.options(options);
            &own
        }
        None => options,
    };
    let start = Instant::now();
    let format = model.info().format;
    // The example's own template never sees its expected output (demonstrations do).
    let inputs = |e: &Example| {
        let mut vars = e.vars.clone();
        vars.remove(&options.output);
        vars
    };
    let all: Vec<BTreeMap<String, Value>> = examples.iter().map(inputs).collect();
    let prompts: Vec<Prompt> =
        crate::select::render_all(prompt, model.as_ref(), &all, format, Some(&options.output))
            .await?;
    let labels = scorer
        .scored_labels()
        .filter(|_| model.can_score() && options.answer_after.is_none());
    let mut results = Vec::with_capacity(examples.len());
    for (chunk_index, chunk) in prompts.chunks(BATCH).enumerate() {
        let offset = chunk_index * BATCH;
        // (output, usage, cost, latency, cached, label probabilities) or an error, per example.
        type Answer = Result<
            (
                String,
                Usage,
                Option<f64>,
                Duration,
                bool,
                Option<BTreeMap<String, f64>>,
            ),
            String,
        >;
        let answers: Vec<Answer> = match &labels {
            Some(labels) => {
                let requests: Vec<ScoreRequest> = chunk
                    .iter()
                    .map(|p| ScoreRequest {
                        prompt: p.clone(),
                        labels: labels.iter().map(|l| continuation(p, l)).collect(),
                    })
                    .collect();
                model
                    .score(&requests)
                    .await
                    .into_iter()
                    .map(|r| {
                        r.map(|s| {
                            let probs = labels
                                .iter()
                                .cloned()
                                .zip(s.probs.iter().copied())
                                .collect();
                            (
                                labels[s.best()].clone(),
                                s.usage,
                                s.cost_usd,
                                s.latency,
                                s.cached,
                                Some(probs),
                            )
                        })
                        .map_err(|e| error_text(&e))
                    })
                    .collect()
            }
            None => {
                let requests: Vec<Request> = chunk
                    .iter()
                    .map(|p| {
                        let mut r = Request::new(p.clone())
                            .temperature(options.temperature)
                            .max_tokens(options.max_tokens);
                        r.stop.clone_from(&options.stop);
                        r
                    })
                    .collect();
                model
                    .complete_batch(&requests)
                    .await
                    .into_iter()
                    .map(|r| {
                        r.map(|r| (r.text, r.usage, r.cost_usd, r.latency, r.cached, None))
                            .map_err(|e| error_text(&e))
                    })
                    .collect()
            }
        };
        for (k, answer) in answers.into_iter().enumerate() {
            let example = &examples[offset + k];
            let result = match answer {
                Ok((output, usage, cost, latency, cached, label_probs)) => {
                    let answer =
                        crate::settings::answer_in(&output, options.answer_after.as_deref());
                    let scored = scorer.score(example, answer).await;
                    let mut r = ExampleResult {
                        id: example.id.clone(),
                        input: inputs(example),
                        output,
                        expected: example.expected.clone(),
                        score: None,
                        passed: None,
                        scores: BTreeMap::new(),
                        feedback: None,
                        label_probs,
                        input_tokens: usage.input_tokens,
                        output_tokens: usage.output_tokens,
                        cost_usd: cost,
                        latency_ms: latency.as_millis() as u64,
                        cached,
                        error: None,
                    };
                    match scored {
                        Ok(s) => {
                            r.score = Some(s.value);
                            r.passed = Some(s.passed);
                            r.scores = s.scores;
                            r.feedback = s.feedback;
                        }
                        // The call was made (and paid); only the score is missing.
                        Err(why) => r.error = Some(why),
                    }
                    r
                }
                Err(e) => ExampleResult::unscored(
                    example,
                    inputs(example),
                    format!("the model call failed: {e}"),
                ),
            };
            results.push(result);
        }
        progress(results.len(), examples.len());
    }
    let scores: Vec<f64> = results.iter().filter_map(|r| r.score).collect();
    let mut usage = Usage::default();
    for r in &results {
        usage += Usage {
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: None,
        };
    }
    let cost = results.iter().map(|r| r.cost_usd).sum::<Option<f64>>();
    let summary = Summary {
        prompt: prompt.name.clone(),
        model: model.info().name.clone(),
        examples: results.len(),
        score: stats::bootstrap(&scores, options.seed),
        pass_rate: stats::mean(
            &results
                .iter()
                .filter_map(|r| r.passed)
                .map(|p| f64::from(u8::from(p)))
                .collect::<Vec<_>>(),
        ),
        errors: results.iter().filter(|r| !r.is_scored()).count(),
        first_error: results.iter().find_map(|r| r.error.clone()),
        cached: results.iter().filter(|r| r.cached).count(),
        usage,
        cost_usd: cost,
        wall: start.elapsed(),
        mode: if labels.is_some() {
            "label scoring"
        } else {
            "generation"
        },
    };
    Ok(Report { summary, results })
}

#[cfg(test)]
mod tests;
