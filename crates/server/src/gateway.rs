//! The serving path, shared by `/v1/prompts/{name}/run` and the OpenAI-compatible endpoint:
//! reference → version (cached briefly) → render with the caller's inputs → the execution model
//! → an [`Inference`] committed to the log → the answer.
//!
//! ```text
//! NAME + label/version ──resolve──> Target (version, parsed prompt, variables)
//! Target + inputs ──render──> Prompt ──model──> Response ──> Inference ──recorder──> log ──> reply
//! ```
//!
//! Rendering runs on a blocking thread under the `[templates]` limits and deadline, so a
//! stored template that does too much work on some input is a 422, never a stalled server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use metaprompt_eval::dataset::Example;
use metaprompt_eval::metric::{Metric, Score};
use metaprompt_eval::prompt::{PromptError, TemplateLimits};
use metaprompt_llm::{LlmError, Prompt, Provider, Request, Response, TextSink};
use metaprompt_registry::service::{Feedback, FeedbackSource, Inference};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

mod resolve;
pub use resolve::{RESOLVE_TTL, Resolver, Target};

/// The label a reference without one means.
pub const DEFAULT_LABEL: &str = "production";

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub inputs: BTreeMap<String, Value>,
    /// A model spec overriding the version's target model.
    pub model: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub metadata: Value,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub stop: Vec<String>,
    /// The request part the inputs came from, for errors (`inputs`, `metaprompt_inputs`).
    pub inputs_param: &'static str,
    /// Where the answer's text goes as it is generated (a streaming response); none: the
    /// answer is only wanted whole.
    pub text: Option<TextSink>,
    /// The inference id to record under, when the caller needed it before the answer (a
    /// stream's headers); otherwise a new one.
    pub inference_id: Option<String>,
    /// Score the output as it happens (the caller sent the expected output).
    pub online: Option<Online>,
}

/// A metric scoring a run's output against the expected output the caller sent; the score is
/// recorded as `metric` feedback in the same commit as the inference.
#[derive(Debug, Clone)]
pub struct Online {
    pub metric: Arc<dyn Metric>,
    pub expected: Value,
}

/// Call the model the way the service calls models: live (the embedded model batches
/// concurrent live requests into shared decode steps), never from the response cache, with
/// the text going to the spec's sink as it is generated.
pub async fn call_live(
    provider: &dyn Provider,
    request: &Request,
    spec: &RunSpec,
) -> Result<Response, LlmError> {
    match &spec.text {
        Some(text) => provider.complete_live(request, text).await,
        None => {
            // Nobody reads the pieces, but the receiver lives as long as the call: a closed one
            // tells the provider the caller has gone.
            let (text, _unread) = tokio::sync::mpsc::unbounded_channel();
            provider.complete_live(request, &text).await
        }
    }
}

/// Answer a choice as an evaluation does: score each label's continuation by log-probability
/// and answer the most likely (its text also goes to the spec's sink, for a stream).
async fn choose(
    provider: &dyn Provider,
    prompt: metaprompt_llm::Prompt,
    labels: &[String],
    spec: &RunSpec,
) -> Result<Response, LlmError> {
    let request = metaprompt_llm::ScoreRequest {
        labels: labels
            .iter()
            .map(|l| metaprompt_eval::evaluator::continuation(&prompt, l))
            .collect(),
        prompt,
    };
    let scores = provider
        .score(std::slice::from_ref(&request))
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            Err(LlmError::Unsupported {
                model: provider.info().name.clone(),
                what: "label scoring".into(),
            })
        })?;
    let text = labels.get(scores.best()).cloned().unwrap_or_default();
    if let Some(sink) = &spec.text {
        let _ = sink.send(text.clone());
    }
    Ok(Response {
        text,
        finish_reason: metaprompt_llm::FinishReason::Stop,
        usage: scores.usage,
        model: provider.info().name.clone(),
        latency: scores.latency,
        cost_usd: scores.cost_usd,
        cached: scores.cached,
    })
}

/// How long a request waited on its model. A handler that called one puts it in its response's
/// extensions; the middleware records the rest of the request's time as the gateway's own
/// overhead (`metaprompt_gateway_overhead_seconds`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelTime(pub Duration);

impl ModelTime {
    pub fn of_ms(ms: f64) -> Self {
        Self(Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}

/// A finished run, recorded.
#[derive(Debug)]
pub struct Ran {
    pub inference: Inference,
    pub response: Response,
    /// The settings it ran with, and where they came from.
    pub settings: Applied,
    /// For a version whose `[run]` reads an answer (one of its labels, a number, normalized
    /// text, JSON): the answer, read from the output as its evaluation's metric read it.
    pub answer: Option<metaprompt_eval::settings::Answer>,
    /// Why the output holds no such answer (no label, no number, JSON off its schema).
    pub answer_error: Option<String>,
    /// The online score, when the spec asked for one: the metric's score, or why it could
    /// not score the output.
    pub score: Option<Result<Score, String>>,
}

/// The settings a run uses: the version's `[run]` (what its evaluation used), else the
/// server's defaults (an older version without them), with what the request sets explicitly
/// on top. A choice among labels is answered by label scoring, as the evaluation answered it,
/// when the model can score and the request set neither `max_tokens` nor `stop`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub temperature: f32,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The labels scored (the answer is the most likely one); absent: generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// `version`: the version's own settings; `server`: the server's defaults (the version
    /// has none); `+request` when the request set some.
    pub source: String,
}

impl Applied {
    pub fn resolve(
        settings: Option<&metaprompt_eval::settings::RunSettings>,
        defaults_max_tokens: u32,
        spec: &RunSpec,
        can_score: bool,
    ) -> Self {
        let mut a = match settings {
            Some(r) => Applied {
                temperature: r.temperature,
                max_tokens: r.max_tokens,
                stop: r.stop.clone(),
                labels: r.labels.clone(),
                source: "version".into(),
            },
            None => Applied {
                temperature: 0.0,
                max_tokens: defaults_max_tokens,
                stop: Vec::new(),
                labels: None,
                source: "server".into(),
            },
        };
        let generation = spec.max_tokens.is_some() || !spec.stop.is_empty();
        if let Some(t) = spec.temperature {
            a.temperature = t;
        }
        if let Some(n) = spec.max_tokens {
            a.max_tokens = n;
        }
        if !spec.stop.is_empty() {
            a.stop.clone_from(&spec.stop);
        }
        // A version that works its answer out first is generated and read (labels cannot be
        // scored after free text).
        if generation
            || !can_score
            || settings.is_some_and(|r| r.generate || r.answer_after.is_some())
        {
            a.labels = None;
        }
        if generation || spec.temperature.is_some() {
            a.source.push_str("+request");
        }
        a
    }
}

/// The model a run uses: the request's, else the version's target model.
pub fn model_for(
    state: &AppState,
    target: &Target,
    spec: &RunSpec,
) -> ApiResult<Arc<dyn Provider>> {
    let name = spec
        .model
        .clone()
        .or_else(|| target.version.target_model.clone())
        .ok_or_else(|| {
            ApiError::invalid(
                "model",
                format!(
                    "{} has no target model; send `model` (a model spec such as local:gemma-3-270m)",
                    target.version.reference()
                ),
            )
        })?;
    open_model(state, &name)
}

/// A model by spec, with errors a caller can act on.
pub fn open_model(state: &AppState, spec: &str) -> ApiResult<Arc<dyn Provider>> {
    crate::access::check_model(state, spec, "model")?;
    state.engine.hub().model(spec).map_err(|e| match e {
        LlmError::MissingApiKey { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            e.to_string(),
        )
        .param("model"),
        e => ApiError::invalid("model", e.to_string()),
    })
}

/// How a failed model call reads to the caller. What the request got wrong is a 4xx naming the
/// part to change: an input too long for the model's context is a 400
/// `context_length_exceeded` on `input_param` (the inputs, `messages` or `prompt`), a model the
/// provider does not have a 404 `model_not_found` on `model`, another request the provider
/// refuses its own 400/422 on `model`. What failed elsewhere (the provider's 5xx, a provider
/// unreachable or rate limiting past the retries, the server's key refused) is a 502, a
/// timeout a 504. `message` is the whole text to answer with.
pub fn model_error(e: &LlmError, input_param: &str, message: String) -> ApiError {
    use metaprompt_llm::error::ClientFault;
    match e.client_fault() {
        Some(ClientFault::ContextLength) => {
            ApiError::new(StatusCode::BAD_REQUEST, "context_length_exceeded", message)
                .param(input_param)
        }
        Some(ClientFault::UnknownModel) => {
            ApiError::new(StatusCode::NOT_FOUND, "model_not_found", message).param("model")
        }
        Some(ClientFault::Invalid(status)) => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            "invalid_request",
            message,
        )
        .param("model"),
        Some(ClientFault::Unsupported) => ApiError::invalid("model", message),
        None => {
            let status = if matches!(e, LlmError::Timeout { .. }) {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            ApiError::new(status, "model_error", message).param("model")
        }
    }
}

/// Check the inputs against the prompt's variables and render it for `provider`.
/// A prompt with a selector picks its demonstrations for these inputs here (with the model's
/// embeddings when it compares by them), exactly as an evaluation does.
///
/// The render runs off the async threads (`spawn_blocking`) under the `[templates]` limits and
/// deadline of the engine's config: a template that goes over either is a 422 naming the
/// prompt, and the server keeps answering meanwhile.
pub async fn render(
    state: &AppState,
    target: &Target,
    spec: &RunSpec,
    provider: &dyn Provider,
) -> ApiResult<Prompt> {
    let param = spec.inputs_param;
    let missing: Vec<&String> = target
        .variables
        .iter()
        .filter(|v| !spec.inputs.contains_key(*v))
        .collect();
    if let Some(first) = missing.first() {
        return Err(ApiError::invalid(
            format!("{param}.{first}"),
            format!(
                "missing input{} {} ({} uses: {})",
                if missing.len() > 1 { "s" } else { "" },
                missing
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                target.version.reference(),
                target.variables.join(", ")
            ),
        ));
    }
    let output = target.output_field();
    let limits = TemplateLimits::from_config(&state.engine.config().templates);
    let prompt_error = |e: PromptError| match e {
        PromptError::Render { .. } => ApiError::invalid(param, e.to_string()),
        // Over a render limit: the stored template does too much work for these inputs.
        PromptError::Limit { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_limit",
            e.to_string(),
        )
        .param(param),
        // The prompt needs embeddings this model cannot give: the request's `model` (or the
        // prompt's target) is the part to change.
        PromptError::Select { .. } => ApiError::invalid("model", e.to_string()),
        e => ApiError::internal(e.to_string()),
    };
    // A selector picks the demonstrations first (by the model's embeddings: async).
    let picked = match &target.file.selector {
        Some(selector) => Some(
            selector
                .pick(&target.file, provider, std::slice::from_ref(&spec.inputs))
                .await
                .map_err(prompt_error)?
                .into_iter()
                .next()
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let file = target.file.clone();
    let inputs = spec.inputs.clone();
    let format = provider.info().format;
    let work = tokio::task::spawn_blocking(move || {
        let demos: Vec<&BTreeMap<String, Value>> = match &picked {
            Some(picked) => picked.iter().filter_map(|&i| file.pool.get(i)).collect(),
            None => file.demos.iter().collect(),
        };
        file.render_demos_with(&inputs, format, output.as_deref(), &demos, &limits)
    });
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(Ok(rendered)) => rendered.map_err(prompt_error),
        Ok(Err(e)) => Err(ApiError::internal(format!(
            "rendering `{}` failed: {e}",
            target.version.reference()
        ))),
        // The blocking render goes on until a limit stops it; the caller is answered now.
        Err(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_limit",
            format!(
                "prompt `{}`: rendering {} took longer than `[templates] timeout_secs` = {} s",
                target.version.prompt,
                target.version.reference(),
                limits.timeout.as_secs_f64()
            ),
        )
        .param(param)),
    }
}

/// Run a target: render, call, record. A model failure is recorded too, then answered as
/// [`model_error`] says (a 4xx when the request is at fault, else 502/504).
pub async fn run(
    state: &AppState,
    caller: &Caller,
    target: &Target,
    spec: &RunSpec,
) -> ApiResult<Ran> {
    let provider = model_for(state, target, spec)?;
    let prompt = render(state, target, spec, provider.as_ref()).await?;
    let rendered = serde_json::to_vec(&prompt)
        .map_err(|e| ApiError::internal(format!("cannot hash the rendered prompt: {e}")))?;
    let rendered_hash = hex::encode(Sha256::digest(rendered));
    let settings = Applied::resolve(
        target.file.run.as_ref(),
        state.options.max_tokens,
        spec,
        provider.can_score(),
    );
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let result = match &settings.labels {
        Some(labels) => choose(provider.as_ref(), prompt, labels, spec).await,
        None => {
            let mut request = Request::new(prompt)
                .temperature(settings.temperature)
                .max_tokens(settings.max_tokens);
            request.stop.clone_from(&settings.stop);
            call_live(provider.as_ref(), &request, spec).await
        }
    };
    state.metrics.in_flight.dec();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let v = &target.version;
    let mut inference = Inference {
        id: spec.inference_id.clone().unwrap_or_else(|| new_id("inf")),
        prompt: v.prompt.clone(),
        hash: v.hash.clone(),
        seq: v.seq,
        label: target.label.clone(),
        model: provider.info().name.clone(),
        inputs: serde_json::to_value(&spec.inputs).unwrap_or_default(),
        rendered_hash,
        output: None,
        error: None,
        tags: spec.tags.clone(),
        metadata: spec.metadata.clone(),
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        latency_ms,
        caller: caller.name.clone(),
        created_at: Utc::now(),
    };
    match result {
        Ok(response) => {
            inference.output = Some(response.text.clone());
            inference.input_tokens = response.usage.input_tokens;
            inference.output_tokens = response.usage.output_tokens;
            inference.cost_usd = response.cost_usd;
            inference.latency_ms = latency_ms;
            let score = match &spec.online {
                Some(online) => {
                    let example = Example {
                        id: inference.id.clone(),
                        vars: spec.inputs.clone(),
                        expected: Some(online.expected.clone()),
                    };
                    // Scored as the evaluation scored it: after the marker where the version
                    // works its answer out first.
                    let answer = metaprompt_eval::settings::answer_in(
                        &response.text,
                        target
                            .file
                            .run
                            .as_ref()
                            .and_then(|r| r.answer_after.as_deref()),
                    );
                    Some(
                        online
                            .metric
                            .score(&example, answer)
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
                None => None,
            };
            let feedback: Vec<Feedback> = match &score {
                Some(Ok(s)) => vec![Feedback {
                    inference_id: inference.id.clone(),
                    score: Some(s.value),
                    label: None,
                    correction: None,
                    comment: s.feedback.clone(),
                    source: FeedbackSource::Metric,
                    caller: caller.name.clone(),
                    created_at: Utc::now(),
                }],
                _ => Vec::new(),
            };
            record(state, &inference, feedback).await?;
            let (answer, answer_error) =
                match target.file.run.as_ref().map(|r| r.read(&response.text)) {
                    None | Some(Ok(None)) => (None, None),
                    Some(Ok(Some(a))) => (Some(a), None),
                    Some(Err(why)) => (None, Some(why)),
                };
            Ok(Ran {
                inference,
                response,
                settings,
                answer,
                answer_error,
                score,
            })
        }
        Err(e) => {
            let message = metaprompt_llm::redact::redact_tokens(&e.to_string());
            inference.error = Some(message.clone());
            record(state, &inference, Vec::new()).await?;
            let said = format!(
                "the model {} failed (inference {} recorded): {message}",
                inference.model, inference.id
            );
            Err(model_error(&e, spec.inputs_param, said))
        }
    }
}

async fn record(state: &AppState, inference: &Inference, feedback: Vec<Feedback>) -> ApiResult<()> {
    let scored = feedback.len() as u64;
    let result = state
        .recorder
        .record_counted(vec![inference.clone()], feedback, &state.metrics)
        .await;
    if result.is_ok() {
        state.metrics.feedback.inc_by(scored);
    }
    let outcome = if inference.error.is_some() {
        "error"
    } else {
        "ok"
    };
    state
        .metrics
        .inferences
        .get_or_create(&crate::metrics::PromptLabels {
            prompt: inference.prompt.clone(),
            outcome: outcome.into(),
        })
        .inc();
    result.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            format!("the inference could not be recorded, so it is not acknowledged: {e}"),
        )
    })
}

/// A new id: the prefix, the time in milliseconds (so ids sort by time) and 64 random bits.
pub fn new_id(prefix: &str) -> String {
    let ms = Utc::now().timestamp_millis().max(0) as u64;
    let r: u64 = rand::random();
    format!("{prefix}_{ms:012x}{r:016x}")
}

#[cfg(test)]
mod tests;
