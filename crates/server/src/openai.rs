//! The OpenAI-compatible endpoint: `POST /v1/chat/completions` and `POST /v1/completions`, so
//! any OpenAI client works unchanged. `model` is either
//!
//! - a model spec (`local:gemma-3-270m`, `openai:gpt-4o-mini`, a configured name): the messages
//!   or prompt go to that model as they are (a plain proxy, not recorded in the inference log);
//! - a served prompt, `prompt:NAME` (its `production` label), `prompt:NAME@LABEL` or
//!   `prompt:NAME@v3`: the version is rendered with inputs taken from `metaprompt_inputs`, or,
//!   when the prompt has one input variable, from the last user message (chat) or the prompt
//!   text (completions); it runs through the gateway and is recorded like `/run`. The answer
//!   carries `metaprompt.inference_id` for feedback (and the `x-metaprompt-inference-id`
//!   header). `metaprompt_tags` sets the inference's slices.
//!
//! `stream: true` answers as server-sent events in OpenAI's chunk format, ending with
//! `data: [DONE]`: each piece of text is sent as it is generated (token by token from the
//! embedded model; HTTP providers answer whole, so their text comes as one piece). Every call
//! goes through [`Provider::complete_live`](metaprompt_llm::Provider::complete_live), so the
//! embedded model batches concurrent requests into shared decode steps.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use metaprompt_llm::{FinishReason, Message, Prompt, Request, Role as ChatRole};
use metaprompt_registry::service::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::gateway::{self, RunSpec};

mod stream;
use stream::{Call, Chunks, Format, stream};

/// `content` as a string or as an array of parts (only text parts are understood).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields OpenAI defines and this endpoint does not use (`top_p`, `user`, `seed`, …) are
/// accepted and ignored, as OpenAI-compatible servers do; ones it cannot honour are refused.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub metaprompt_inputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub metaprompt_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// OpenAI's end-user id; the sticky key of a traffic split unless
    /// `metaprompt_split_key` is given.
    pub user: Option<String>,
    pub metaprompt_split_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptText {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    pub model: String,
    pub prompt: Option<PromptText>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<u32>,
    pub metaprompt_inputs: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub metaprompt_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// OpenAI's end-user id; the sticky key of a traffic split unless
    /// `metaprompt_split_key` is given.
    pub user: Option<String>,
    pub metaprompt_split_key: Option<String>,
}

/// One answer, whichever way it was produced.
struct Answer {
    text: String,
    finish: FinishReason,
    input_tokens: u64,
    output_tokens: u64,
    model: String,
    inference: Option<(String, String, u32)>,
    /// The settings a served prompt ran with (none for a plain model call).
    settings: Option<gateway::Applied>,
    /// A served version's answer (a label, number, normalized text, JSON), read as its
    /// evaluation read it; or why the output holds none.
    answer: Option<metaprompt_eval::settings::Answer>,
    answer_error: Option<String>,
    /// Time spent waiting on the model.
    model_ms: f64,
}

fn text_of(content: Option<Content>, k: usize) -> ApiResult<String> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                if p.kind != "text" {
                    return Err(ApiError::invalid(
                        format!("messages[{k}].content[{j}].type"),
                        format!("`{}` parts are not supported; send text", p.kind),
                    ));
                }
                out.push_str(&p.text.unwrap_or_default());
            }
            Ok(out)
        }
    }
}

fn messages(body: Vec<ChatMessage>) -> ApiResult<Vec<Message>> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "at least one message is needed",
        ));
    }
    body.into_iter()
        .enumerate()
        .map(|(k, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => ChatRole::System,
                "user" => ChatRole::User,
                "assistant" => ChatRole::Assistant,
                other => {
                    return Err(ApiError::invalid(
                        format!("messages[{k}].role"),
                        format!("`{other}`: expected system, developer, user or assistant"),
                    ));
                }
            };
            Ok(Message {
                role,
                content: text_of(m.content, k)?,
            })
        })
        .collect()
}

fn check_common(n: Option<u32>, temperature: Option<f32>) -> ApiResult<()> {
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is supported"));
    }
    if let Some(t) = temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            "expected a number in [0, 2]",
        ));
    }
    Ok(())
}

/// `prompt:NAME[@REF]` → (name, label, version).
pub(crate) fn served(model: &str) -> Option<(String, Option<String>, Option<String>)> {
    let rest = model.strip_prefix("prompt:")?;
    let (name, sel) = match rest.split_once('@') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let is_version = |s: &str| {
        let d = s.strip_prefix('v').unwrap_or(s);
        !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
    };
    Some(match sel {
        None => (name.into(), None, None),
        Some(s) if is_version(s) => (name.into(), None, Some(s.into())),
        Some(s) => (name.into(), Some(s.into()), None),
    })
}

/// Run a served prompt with inputs given explicitly or taken from `fallback` (the last user
/// message or the prompt text).
#[allow(clippy::too_many_arguments)]
async fn run_served(
    state: &AppState,
    caller: &Caller,
    model: &str,
    name: String,
    label: Option<String>,
    version: Option<String>,
    inputs: Option<BTreeMap<String, Value>>,
    fallback: Option<(String, &'static str)>,
    split_key: Option<&str>,
    mut spec: RunSpec,
) -> ApiResult<Answer> {
    caller.require(Role::Runner)?;
    let t = state
        .resolver
        .resolve(
            &name,
            label.as_deref(),
            version.as_deref(),
            "model",
            split_key,
        )
        .await?;
    spec.inputs = match inputs {
        Some(i) => {
            spec.inputs_param = "metaprompt_inputs";
            i
        }
        None => {
            let (text, param) = fallback.unwrap_or_default();
            spec.inputs_param = if param.is_empty() { "messages" } else { param };
            match t.variables.as_slice() {
                [] => BTreeMap::new(),
                [one] => BTreeMap::from([(one.clone(), Value::String(text))]),
                many => match serde_json::from_str::<BTreeMap<String, Value>>(&text) {
                    Ok(m) => m,
                    Err(_) => {
                        return Err(ApiError::invalid(
                            "metaprompt_inputs",
                            format!(
                                "{model} takes {} inputs ({}); send them in `metaprompt_inputs` (or as a JSON object in the last user message)",
                                many.len(),
                                many.join(", ")
                            ),
                        ));
                    }
                },
            }
        }
    };
    let ran = gateway::run(state, caller, &t, &spec).await?;
    let i = ran.inference;
    Ok(Answer {
        text: ran.response.text,
        finish: ran.response.finish_reason,
        input_tokens: i.input_tokens,
        output_tokens: i.output_tokens,
        model: model.to_string(),
        inference: Some((i.id, i.prompt, i.seq)),
        settings: Some(ran.settings),
        answer: ran.answer,
        answer_error: ran.answer_error,
        model_ms: i.latency_ms,
    })
}

async fn run_model(
    state: &AppState,
    caller: &Caller,
    spec: &str,
    prompt: Prompt,
    run: &RunSpec,
) -> ApiResult<Answer> {
    caller.require(Role::Runner)?;
    let provider = gateway::open_model(state, spec)?;
    let input_param = match &prompt {
        Prompt::Chat(_) => "messages",
        Prompt::Text(_) => "prompt",
    };
    let mut request = Request::new(prompt)
        .temperature(run.temperature.unwrap_or(1.0))
        .max_tokens(run.max_tokens.unwrap_or(state.options.max_tokens));
    for s in &run.stop {
        request = request.stop(s.clone());
    }
    state.metrics.in_flight.inc();
    let started = std::time::Instant::now();
    let result = gateway::call_live(provider.as_ref(), &request, run).await;
    let model_ms = started.elapsed().as_secs_f64() * 1000.0;
    state.metrics.in_flight.dec();
    let response = result.map_err(|e| {
        let said = format!(
            "the model {} failed: {}",
            provider.info().name,
            metaprompt_llm::redact::redact_tokens(&e.to_string())
        );
        gateway::model_error(&e, input_param, said)
    })?;
    Ok(Answer {
        text: response.text,
        finish: response.finish_reason,
        input_tokens: response.usage.input_tokens,
        output_tokens: response.usage.output_tokens,
        model: spec.to_string(),
        inference: None,
        settings: None,
        answer: None,
        answer_error: None,
        model_ms,
    })
}

fn finish(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        _ => "stop",
    }
}

fn usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
    })
}

fn extension(a: &Answer) -> Value {
    match &a.inference {
        Some((id, prompt, seq)) => {
            json!({"inference_id": id, "prompt": prompt, "version": format!("v{seq}"),
                   "settings": a.settings, "answer": a.answer,
                   "answer_error": a.answer_error})
        }
        None => Value::Null,
    }
}

/// The answer's inference id as a header, and its model time for the overhead metric.
fn with_inference_header(mut r: Response, a: &Answer) -> Response {
    r.extensions_mut()
        .insert(gateway::ModelTime::of_ms(a.model_ms));
    if let Some((id, _, _)) = &a.inference
        && let Ok(v) = HeaderValue::from_str(id)
    {
        r.headers_mut().insert("x-metaprompt-inference-id", v);
    }
    r
}

/// `POST /v1/chat/completions`
pub async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<ChatBody>,
) -> ApiResult<Response> {
    check_common(body.n, body.temperature)?;
    crate::prompts::check_tags(&body.metaprompt_tags)?;
    let msgs = messages(body.messages)?;
    let spec = RunSpec {
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        stop: body.stop.map(Stop::into_vec).unwrap_or_default(),
        tags: body.metaprompt_tags,
        metadata: body.metadata.unwrap_or_default(),
        ..RunSpec::default()
    };
    let last_user = msgs
        .iter()
        .rev()
        .find(|m| m.role == ChatRole::User)
        .map(|m| (m.content.clone(), "messages"));
    let mut call = Call::new(&state, &caller, &body.model, Prompt::Chat(msgs), spec);
    call.inputs = body.metaprompt_inputs;
    call.fallback = last_user;
    call.split_key = body.metaprompt_split_key.or(body.user);
    let chunks = Chunks::new(Format::Chat, &body.model);
    if body.stream {
        let usage = body.stream_options.is_some_and(|o| o.include_usage);
        return stream(chunks, vec![call], usage).await;
    }
    let answer = call.answer().await?;
    let body = json!({
        "id": chunks.id,
        "object": "chat.completion",
        "created": chunks.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "finish_reason": finish(&answer.finish),
            "logprobs": null,
        }],
        "usage": usage(&answer),
        "metaprompt": extension(&answer),
    });
    Ok(with_inference_header(Json(body).into_response(), &answer))
}

/// `POST /v1/completions`
pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<CompletionBody>,
) -> ApiResult<Response> {
    check_common(body.n, body.temperature)?;
    crate::prompts::check_tags(&body.metaprompt_tags)?;
    let prompts = match body.prompt {
        Some(PromptText::One(p)) => vec![p],
        Some(PromptText::Many(ps)) if !ps.is_empty() => ps,
        Some(PromptText::Many(_)) => {
            return Err(ApiError::invalid("prompt", "the prompt array is empty"));
        }
        None if body.metaprompt_inputs.is_some() => vec![String::new()],
        None => return Err(ApiError::invalid("prompt", "a `prompt` is needed")),
    };
    let spec = RunSpec {
        max_tokens: body.max_tokens,
        temperature: body.temperature,
        stop: body.stop.map(Stop::into_vec).unwrap_or_default(),
        tags: body.metaprompt_tags,
        metadata: body.metadata.unwrap_or_default(),
        ..RunSpec::default()
    };
    let split_key = body.metaprompt_split_key.or(body.user);
    let calls: Vec<Call> = prompts
        .into_iter()
        .map(|text| {
            let mut call = Call::new(
                &state,
                &caller,
                &body.model,
                Prompt::Text(text.clone()),
                spec.clone(),
            );
            call.inputs = body.metaprompt_inputs.clone();
            call.fallback = Some((text, "prompt"));
            call.split_key = split_key.clone();
            call
        })
        .collect();
    let chunks = Chunks::new(Format::Completion, &body.model);
    if body.stream {
        let usage = body.stream_options.is_some_and(|o| o.include_usage);
        return stream(chunks, calls, usage).await;
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.answer().await?);
    }
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(k, a)| {
            json!({"index": k, "text": a.text, "logprobs": null, "finish_reason": finish(&a.finish)})
        })
        .collect();
    let first = &answers[0];
    let body = json!({
        "id": chunks.id,
        "object": "text_completion",
        "created": chunks.created,
        "model": first.model,
        "choices": choices,
        "usage": total_usage(&answers),
        "metaprompt": answers.iter().map(extension).collect::<Vec<_>>(),
    });
    let mut response = with_inference_header(Json(body).into_response(), first);
    // The prompts ran one after another: the model time is all of theirs.
    response.extensions_mut().insert(gateway::ModelTime::of_ms(
        answers.iter().map(|a| a.model_ms).sum(),
    ));
    Ok(response)
}

fn total_usage(answers: &[Answer]) -> Value {
    let i: u64 = answers.iter().map(|a| a.input_tokens).sum();
    let o: u64 = answers.iter().map(|a| a.output_tokens).sum();
    json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o})
}

#[cfg(test)]
mod tests;
