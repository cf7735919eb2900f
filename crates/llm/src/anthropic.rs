//! Anthropic Messages provider: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version` headers.
//!
//! System messages go to the top-level `system` field (joined by blank lines when there are
//! several). The Messages API has no raw text completion, so a text prompt is sent as one user
//! message. Usage: Anthropic's `input_tokens` excludes prompt-cache reads and writes, so the
//! reported input is their sum, and cache reads are the cached part.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::http;
use crate::provider::{ApiKey, Provider};
use crate::redact::Redactor;
use crate::types::{FinishReason, Prompt, Request, Response, Role, Usage};

/// The API version this wire format follows.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct Anthropic {
    info: ModelInfo,
    client: reqwest::Client,
    api_key: Option<ApiKey>,
    /// Masks the key (and anything shaped like one) in error text from the server.
    redactor: Redactor,
}

impl Anthropic {
    pub fn new(info: ModelInfo, api_key: Option<ApiKey>) -> Result<Self, LlmError> {
        Ok(Self {
            client: http::client(&info)?,
            redactor: Redactor::new(api_key.iter().map(ApiKey::expose)),
            info,
            api_key,
        })
    }

    fn endpoint(&self) -> http::Endpoint<'_> {
        http::Endpoint {
            client: &self.client,
            info: &self.info,
            redactor: &self.redactor,
        }
    }
}

#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage<'a>>,
    temperature: f32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Debug, Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    model: Option<String>,
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("end_turn" | "stop_sequence") | None => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
    }
}

fn to_wire(prompt: &Prompt) -> (Option<String>, Vec<WireMessage<'_>>) {
    match prompt {
        Prompt::Text(text) => (
            None,
            vec![WireMessage {
                role: "user",
                content: text,
            }],
        ),
        Prompt::Chat(messages) => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == Role::System)
                .map(|m| m.content.as_str())
                .collect();
            let turns = messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| WireMessage {
                    role: m.role.as_str(),
                    content: &m.content,
                })
                .collect();
            ((!system.is_empty()).then(|| system.join("\n\n")), turns)
        }
    }
}

#[async_trait]
impl Provider for Anthropic {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        http::check_request(&self.info, request)?;
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if let Some(key) = &self.api_key {
            let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                LlmError::Config(format!(
                    "{}: the API key contains characters not allowed in a header",
                    self.info.name
                ))
            })?;
            value.set_sensitive(true);
            headers.insert("x-api-key", value);
        }
        let (system, messages) = to_wire(&request.prompt);
        if messages.is_empty() {
            return Err(LlmError::Unsupported {
                model: self.info.name.clone(),
                what: "a request with only system messages (the Messages API needs a user turn)"
                    .into(),
            });
        }
        let body = MessagesRequest {
            model: &self.info.model,
            max_tokens: request.max_tokens,
            system,
            messages,
            temperature: request.temperature,
            stop_sequences: &request.stop,
        };
        let url = format!("{}/v1/messages", self.info.base_url);
        let (wire, latency): (MessagesResponse, _) = http::post_json(
            self.endpoint(),
            &url,
            headers,
            &body,
            "Messages API message",
        )
        .await?;
        let text: String = wire
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        let u = wire.usage;
        let cache_read = u.cache_read_input_tokens.unwrap_or(0);
        let usage = Usage {
            input_tokens: u.input_tokens + cache_read + u.cache_creation_input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cache_read_input_tokens,
        };
        Ok(Response {
            text,
            finish_reason: finish_reason(wire.stop_reason.as_deref()),
            usage,
            model: wire.model.unwrap_or_else(|| self.info.model.clone()),
            latency,
            cost_usd: self.info.pricing.map(|p| p.cost(&usage)),
            cached: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn system_messages_move_to_the_system_field() {
        let prompt = Prompt::Chat(vec![
            Message::system("Rule one."),
            Message::user("Q"),
            Message::assistant("A"),
            Message::system("Rule two."),
            Message::user("Q2"),
        ]);
        let (system, turns) = to_wire(&prompt);
        assert_eq!(system.as_deref(), Some("Rule one.\n\nRule two."));
        let roles: Vec<_> = turns.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        let text = Prompt::Text("Continue: ".into());
        let (system, turns) = to_wire(&text);
        assert_eq!((system, turns.len(), turns[0].role), (None, 1, "user"));
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_reason(Some("end_turn")), FinishReason::Stop);
        assert_eq!(finish_reason(Some("max_tokens")), FinishReason::Length);
        assert_eq!(
            finish_reason(Some("pause_turn")),
            FinishReason::Other("pause_turn".into())
        );
    }
}
