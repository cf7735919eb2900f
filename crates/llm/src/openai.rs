//! OpenAI-compatible provider: `POST {base_url}/chat/completions` for chat prompts and
//! `POST {base_url}/completions` for text prompts (base models). The base URL makes it serve
//! OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio, OpenRouter and the like.
//!
//! The wire types below follow OpenAI's public API reference; fields we do not use are ignored,
//! fields we need are required, so a body without them is a decode error naming the field.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::http;
use crate::provider::{ApiKey, Provider};
use crate::redact::Redactor;
use crate::types::{FinishReason, Message, Prompt, Request, Response, Usage};

#[derive(Debug)]
pub struct OpenAi {
    info: ModelInfo,
    client: reqwest::Client,
    api_key: Option<ApiKey>,
    /// Masks the key (and anything shaped like one) in error text from the server.
    redactor: Redactor,
}

impl OpenAi {
    pub fn new(info: ModelInfo, api_key: Option<ApiKey>) -> Result<Self, LlmError> {
        Ok(Self {
            client: http::client(&info)?,
            redactor: Redactor::new(api_key.iter().map(ApiKey::expose)),
            info,
            api_key,
        })
    }

    fn headers(&self) -> Result<HeaderMap, LlmError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    LlmError::Config(format!(
                        "{}: the API key contains characters not allowed in a header",
                        self.info.name
                    ))
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
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
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Debug, Serialize)]
struct CompletionRequest<'a> {
    model: &'a str,
    prompt: &'a str,
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<ChatChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    message: ChatMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    /// Null when the model refused or called a tool.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CompletionResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct CompletionChoice {
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
    }
}

impl OpenAi {
    fn response(
        &self,
        text: String,
        finish: Option<&str>,
        model: Option<String>,
        usage: Option<WireUsage>,
        latency: std::time::Duration,
    ) -> Response {
        let reported = usage.is_some();
        let usage = usage.map_or_else(Usage::default, |u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
        });
        Response {
            text,
            finish_reason: finish_reason(finish),
            usage,
            model: model.unwrap_or_else(|| self.info.model.clone()),
            latency,
            // Without reported usage the cost is unknown, not zero.
            cost_usd: if reported {
                self.info.pricing.map(|p| p.cost(&usage))
            } else {
                None
            },
            cached: false,
        }
    }

    fn no_choice(&self, expected: &str) -> LlmError {
        LlmError::Decode {
            model: self.info.name.clone(),
            what: format!("expected a {expected} with at least one entry in `choices`, got none"),
            body_start: String::new(),
        }
    }
}

#[async_trait]
impl Provider for OpenAi {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        http::check_request(&self.info, request)?;
        let headers = self.headers()?;
        let base = &self.info.base_url;
        match &request.prompt {
            Prompt::Chat(messages) => {
                let body = ChatRequest {
                    model: &self.info.model,
                    messages,
                    temperature: request.temperature,
                    max_tokens: request.max_tokens,
                    stop: &request.stop,
                    seed: request.effective_seed(),
                };
                let expected = "chat completion";
                let url = format!("{base}/chat/completions");
                let (wire, latency): (ChatResponse, _) =
                    http::post_json(self.endpoint(), &url, headers, &body, expected).await?;
                let choice = wire
                    .choices
                    .into_iter()
                    .next()
                    .ok_or_else(|| self.no_choice(expected))?;
                let text = choice
                    .message
                    .content
                    .or(choice.message.refusal)
                    .unwrap_or_default();
                Ok(self.response(
                    text,
                    choice.finish_reason.as_deref(),
                    wire.model,
                    wire.usage,
                    latency,
                ))
            }
            Prompt::Text(prompt) => {
                let body = CompletionRequest {
                    model: &self.info.model,
                    prompt,
                    temperature: request.temperature,
                    max_tokens: request.max_tokens,
                    stop: &request.stop,
                    seed: request.effective_seed(),
                };
                let expected = "text completion";
                let url = format!("{base}/completions");
                let (wire, latency): (CompletionResponse, _) =
                    http::post_json(self.endpoint(), &url, headers, &body, expected).await?;
                let choice = wire
                    .choices
                    .into_iter()
                    .next()
                    .ok_or_else(|| self.no_choice(expected))?;
                Ok(self.response(
                    choice.text,
                    choice.finish_reason.as_deref(),
                    wire.model,
                    wire.usage,
                    latency,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_wire_shape() {
        let messages = [Message::system("Be brief."), Message::user("Hi")];
        let stop = ["\n".to_string()];
        let body = ChatRequest {
            model: "gpt-4o-mini",
            messages: &messages,
            temperature: 0.0,
            max_tokens: 16,
            stop: &stop,
            seed: Some(3),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "temperature": 0.0, "max_tokens": 16, "stop": ["\n"], "seed": 3
            })
        );
        let body = CompletionRequest {
            model: "m",
            prompt: "p",
            temperature: 0.5,
            max_tokens: 1,
            stop: &[],
            seed: None,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"model": "m", "prompt": "p", "temperature": 0.5, "max_tokens": 1})
        );
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("length")), FinishReason::Length);
        assert_eq!(
            finish_reason(Some("tool_calls")),
            FinishReason::Other("tool_calls".into())
        );
    }
}
