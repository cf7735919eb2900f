//! Streaming answers as server-sent events: one call per choice, their chunks interleaved as they come, usage at the end when asked for.

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::gateway::{RunSpec, new_id};
use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metaprompt_llm::Prompt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;

use super::*;

/// One choice to answer: a served prompt (through the gateway) or a plain model call.
pub(super) struct Call {
    pub(super) state: AppState,
    pub(super) caller: Caller,
    /// The request's `model`.
    pub(super) model: String,
    pub(super) served: Option<(String, Option<String>, Option<String>)>,
    pub(super) inputs: Option<BTreeMap<String, Value>>,
    /// The inputs' fallback: the last user message or the prompt text, and its request part.
    pub(super) fallback: Option<(String, &'static str)>,
    pub(super) split_key: Option<String>,
    /// What a plain model call sends.
    pub(super) prompt: Prompt,
    pub(super) spec: RunSpec,
}

impl Call {
    pub(super) fn new(
        state: &AppState,
        caller: &Caller,
        model: &str,
        prompt: Prompt,
        spec: RunSpec,
    ) -> Self {
        let served = served(model);
        let mut spec = spec;
        // A served prompt's inference id is known before its answer: a stream's header has it.
        if served.is_some() {
            spec.inference_id = Some(new_id("inf"));
        }
        Self {
            state: state.clone(),
            caller: caller.clone(),
            model: model.to_string(),
            served,
            inputs: None,
            fallback: None,
            split_key: None,
            prompt,
            spec,
        }
    }

    pub(super) async fn answer(self) -> ApiResult<Answer> {
        match self.served {
            Some((name, label, version)) => {
                run_served(
                    &self.state,
                    &self.caller,
                    &self.model,
                    name,
                    label,
                    version,
                    self.inputs,
                    self.fallback,
                    self.split_key.as_deref(),
                    self.spec,
                )
                .await
            }
            None => {
                run_model(
                    &self.state,
                    &self.caller,
                    &self.model,
                    self.prompt,
                    &self.spec,
                )
                .await
            }
        }
    }
}

/// The two chunk formats of OpenAI's streams.
#[derive(Debug, Clone, Copy)]
pub(super) enum Format {
    Chat,
    Completion,
}

/// What every chunk of one response shares.
#[derive(Debug, Clone)]
pub(super) struct Chunks {
    pub(super) format: Format,
    pub(super) id: String,
    pub(super) created: i64,
    pub(super) model: String,
}

impl Chunks {
    pub(super) fn new(format: Format, model: &str) -> Self {
        let prefix = match format {
            Format::Chat => "chatcmpl",
            Format::Completion => "cmpl",
        };
        Self {
            format,
            id: format!("{prefix}-{}", new_id("c").trim_start_matches("c_")),
            created: Utc::now().timestamp(),
            model: model.to_string(),
        }
    }

    pub(super) fn object(&self) -> &'static str {
        match self.format {
            Format::Chat => "chat.completion.chunk",
            Format::Completion => "text_completion",
        }
    }

    pub(super) fn chunk(&self, k: usize, text: Option<&str>, finish: Value, ext: Value) -> Value {
        let choice = match self.format {
            Format::Chat => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!({"index": k, "delta": delta, "finish_reason": finish})
            }
            Format::Completion => json!({
                "index": k, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
        };
        json!({
            "id": self.id, "object": self.object(), "created": self.created, "model": self.model,
            "choices": [choice], "metaprompt": ext,
        })
    }

    /// The chunk that opens choice `k` (chat streams open with the assistant's role).
    pub(super) fn opening(&self, k: usize, ext: Value) -> Option<Value> {
        match self.format {
            Format::Chat => {
                let mut c = self.chunk(k, Some(""), Value::Null, ext);
                c["choices"][0]["delta"]["role"] = json!("assistant");
                Some(c)
            }
            Format::Completion => None,
        }
    }

    pub(super) fn usage(&self, answers: &[Answer]) -> Value {
        json!({
            "id": self.id, "object": self.object(), "created": self.created, "model": self.model,
            "choices": [], "usage": total_usage(answers),
        })
    }
}

/// Answer `calls` as server-sent events in OpenAI's chunk format, each piece of text sent as
/// the model generates it, ending with `data: [DONE]`.
///
/// A call that fails before anything was sent answers with its JSON error and status, like a
/// plain request; one that fails mid-stream ends the stream with an `error` event (what
/// OpenAI's clients raise on). A client that disconnects cancels the generation (the embedded
/// model frees its slot); such an unfinished inference is not recorded.
pub(super) async fn stream(
    chunks: Chunks,
    calls: Vec<Call>,
    include_usage: bool,
) -> ApiResult<Response> {
    let header_id = calls.first().and_then(|c| c.spec.inference_id.clone());
    let (events, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<Option<ApiError>>();
    tokio::spawn(async move {
        let mut started_tx = Some(started_tx);
        let send = |v: Value| events.send(Event::default().data(v.to_string())).is_ok();
        let mut answers = Vec::new();
        for (k, mut call) in calls.into_iter().enumerate() {
            let ext = match &call.spec.inference_id {
                Some(id) => json!({"inference_id": id}),
                None => Value::Null,
            };
            let (text, mut pieces) = tokio::sync::mpsc::unbounded_channel();
            call.spec.text = Some(text);
            let run = call.answer();
            tokio::pin!(run);
            let mut opened = false;
            let mut open = |started_tx: &mut Option<_>| {
                if let Some(tx) = started_tx.take() {
                    let _ = tokio::sync::oneshot::Sender::send(tx, None);
                }
                if std::mem::replace(&mut opened, true) {
                    return true;
                }
                chunks.opening(k, ext.clone()).is_none_or(&send)
            };
            let result = loop {
                tokio::select! {
                    Some(piece) = pieces.recv() => {
                        if !open(&mut started_tx) || !send(chunks.chunk(k, Some(&piece), Value::Null, ext.clone())) {
                            return; // the client has gone: dropping `run` cancels the call
                        }
                    }
                    result = &mut run => break result,
                }
            };
            while let Ok(piece) = pieces.try_recv() {
                if !open(&mut started_tx)
                    || !send(chunks.chunk(k, Some(&piece), Value::Null, ext.clone()))
                {
                    return;
                }
            }
            match result {
                Ok(answer) => {
                    if !open(&mut started_tx)
                        || !send(chunks.chunk(
                            k,
                            None,
                            json!(finish(&answer.finish)),
                            extension(&answer),
                        ))
                    {
                        return;
                    }
                    answers.push(answer);
                }
                Err(e) => {
                    match started_tx.take() {
                        Some(tx) => {
                            let _ = tx.send(Some(e));
                        }
                        None => {
                            send(e.body());
                        }
                    }
                    return;
                }
            }
        }
        if include_usage {
            send(chunks.usage(&answers));
        }
        let _ = events.send(Event::default().data("[DONE]"));
    });
    if let Ok(Some(e)) = started.await {
        return Err(e);
    }
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let mut response = Sse::new(events).into_response();
    if let Some(id) = header_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        response
            .headers_mut()
            .insert("x-metaprompt-inference-id", v);
    }
    Ok(response)
}
