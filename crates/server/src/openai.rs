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
//! `data: [DONE]`. The chunks are sent once the model has answered (the providers answer whole
//! responses); a client sees the same stream shape as from OpenAI.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metaprompt_llm::{FinishReason, Message, Prompt, Request, Role as ChatRole};
use metaprompt_registry::service::Role;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use crate::gateway::{self, RunSpec, new_id};

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
fn served(model: &str) -> Option<(String, Option<String>, Option<String>)> {
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
    let mut request = Request::new(prompt)
        .temperature(run.temperature.unwrap_or(1.0))
        .max_tokens(run.max_tokens.unwrap_or(state.options.max_tokens));
    for s in &run.stop {
        request = request.stop(s.clone());
    }
    state.metrics.in_flight.inc();
    let result = provider.complete(&request).await;
    state.metrics.in_flight.dec();
    let response = result.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "model_error",
            format!(
                "the model {} failed: {}",
                provider.info().name,
                metaprompt_llm::redact::redact_tokens(&e.to_string())
            ),
        )
        .param("model")
    })?;
    Ok(Answer {
        text: response.text,
        finish: response.finish_reason,
        input_tokens: response.usage.input_tokens,
        output_tokens: response.usage.output_tokens,
        model: spec.to_string(),
        inference: None,
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
            json!({"inference_id": id, "prompt": prompt, "version": format!("v{seq}")})
        }
        None => Value::Null,
    }
}

fn with_inference_header(mut r: Response, a: &Answer) -> Response {
    if let Some((id, _, _)) = &a.inference
        && let Ok(v) = HeaderValue::from_str(id)
    {
        r.headers_mut().insert("x-metaprompt-inference-id", v);
    }
    r
}

/// Split a text into stream pieces at word boundaries (each piece keeps its leading space).
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_whitespace() && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn sse(events: Vec<Value>) -> Response {
    let mut out: Vec<Result<Event, Infallible>> = events
        .into_iter()
        .map(|v| Ok(Event::default().data(v.to_string())))
        .collect();
    out.push(Ok(Event::default().data("[DONE]")));
    Sse::new(futures::stream::iter(out)).into_response()
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
    let answer = match served(&body.model) {
        Some((name, label, version)) => {
            let last_user = msgs
                .iter()
                .rev()
                .find(|m| m.role == ChatRole::User)
                .map(|m| (m.content.clone(), "messages"));
            run_served(
                &state,
                &caller,
                &body.model,
                name,
                label,
                version,
                body.metaprompt_inputs,
                last_user,
                body.metaprompt_split_key
                    .as_deref()
                    .or(body.user.as_deref()),
                spec,
            )
            .await?
        }
        None => run_model(&state, &caller, &body.model, Prompt::Chat(msgs), &spec).await?,
    };
    let id = format!("chatcmpl-{}", new_id("c").trim_start_matches("c_"));
    let created = Utc::now().timestamp();
    if body.stream {
        let chunk = |delta: Value, finish_reason: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": answer.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                "metaprompt": extension(&answer),
            })
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for p in pieces(&answer.text) {
            events.push(chunk(json!({"content": p}), Value::Null));
        }
        events.push(chunk(json!({}), json!(finish(&answer.finish))));
        if body.stream_options.is_some_and(|o| o.include_usage) {
            events.push(json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": answer.model, "choices": [], "usage": usage(&answer),
            }));
        }
        return Ok(with_inference_header(sse(events), &answer));
    }
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
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
    let mut answers = Vec::new();
    for text in prompts {
        answers.push(match served(&body.model) {
            Some((name, label, version)) => {
                run_served(
                    &state,
                    &caller,
                    &body.model,
                    name,
                    label,
                    version,
                    body.metaprompt_inputs.clone(),
                    Some((text, "prompt")),
                    body.metaprompt_split_key
                        .as_deref()
                        .or(body.user.as_deref()),
                    spec.clone(),
                )
                .await?
            }
            None => run_model(&state, &caller, &body.model, Prompt::Text(text), &spec).await?,
        });
    }
    let id = format!("cmpl-{}", new_id("c").trim_start_matches("c_"));
    let created = Utc::now().timestamp();
    let first = &answers[0];
    if body.stream {
        let mut events = Vec::new();
        for (k, a) in answers.iter().enumerate() {
            for p in pieces(&a.text) {
                events.push(json!({
                    "id": id, "object": "text_completion", "created": created, "model": a.model,
                    "choices": [{"index": k, "text": p, "logprobs": null, "finish_reason": null}],
                    "metaprompt": extension(a),
                }));
            }
            events.push(json!({
                "id": id, "object": "text_completion", "created": created, "model": a.model,
                "choices": [{"index": k, "text": "", "logprobs": null, "finish_reason": finish(&a.finish)}],
                "metaprompt": extension(a),
            }));
        }
        if body.stream_options.is_some_and(|o| o.include_usage) {
            events.push(json!({
                "id": id, "object": "text_completion", "created": created, "model": first.model,
                "choices": [], "usage": total_usage(&answers),
            }));
        }
        return Ok(with_inference_header(sse(events), first));
    }
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(k, a)| {
            json!({"index": k, "text": a.text, "logprobs": null, "finish_reason": finish(&a.finish)})
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": first.model,
        "choices": choices,
        "usage": total_usage(&answers),
        "metaprompt": answers.iter().map(extension).collect::<Vec<_>>(),
    });
    Ok(with_inference_header(Json(body).into_response(), first))
}

fn total_usage(answers: &[Answer]) -> Value {
    let i: u64 = answers.iter().map(|a| a.input_tokens).sum();
    let o: u64 = answers.iter().map(|a| a.output_tokens).sum();
    json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_references() {
        assert_eq!(served("local:gemma-3-270m"), None);
        assert_eq!(
            served("prompt:support"),
            Some(("support".into(), None, None))
        );
        assert_eq!(
            served("prompt:support@staging"),
            Some(("support".into(), Some("staging".into()), None))
        );
        assert_eq!(
            served("prompt:support@v3"),
            Some(("support".into(), None, Some("v3".into())))
        );
    }

    #[test]
    fn pieces_keep_the_text() {
        let t = "Hello there,  world\nbye";
        assert_eq!(pieces(t).concat(), t);
        assert_eq!(pieces(t).len(), 4);
        assert!(pieces("").is_empty());
    }
}
