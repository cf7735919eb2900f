//! Typed errors of the provider layer. Every error says whether retrying could help.

use std::path::PathBuf;
use std::time::Duration;

/// An error from a provider, the cache or model resolution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The server answered with a non-success status.
    #[error("{model}: HTTP {status}: {message}")]
    Status {
        model: String,
        status: u16,
        /// The provider's own error message (from its error body), or the start of the body.
        message: String,
        /// What the server asked us to wait, from `Retry-After` (or provider-specific headers).
        retry_after: Option<Duration>,
    },
    /// No answer within the per-request timeout.
    #[error("{model}: no response within {after:?} (per-request timeout)")]
    Timeout { model: String, after: Duration },
    /// The connection failed or broke before a full response arrived. The message ends with
    /// the root cause (`Connection refused (os error 111)`, a DNS or TLS failure), which
    /// reqwest's own message leaves to its source chain.
    #[error("{model}: request failed: {}", with_root_cause(source))]
    Transport {
        model: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx, but not with what the wire format promises (not JSON, or a
    /// field missing). `what` names what was expected. Retryable: a proxy's HTML page or a body
    /// cut short is usually gone on the next attempt, like a 5xx.
    #[error("{model}: unexpected response body: {what} (body starts: {body_start:?})")]
    Decode {
        model: String,
        what: String,
        body_start: String,
    },
    /// The response body was larger than the model's `max_response_bytes`: a runaway or
    /// misbehaving endpoint. Not retried (the next answer would likely be as large).
    #[error(
        "{model}: the response from {url} is larger than the {limit} bytes allowed (raise `max_response_bytes` for this provider or model in metaprompt.toml if it is legitimate)"
    )]
    ResponseTooLarge {
        model: String,
        /// The request URL, without query or credentials.
        url: String,
        limit: u64,
    },
    /// An environment variable named in config as holding the API key is not set.
    #[error(
        "{model}: the API key variable {var} is not set (set it, or change `api_key_env` for provider `{provider}` in metaprompt.toml)"
    )]
    MissingApiKey {
        model: String,
        provider: String,
        var: String,
    },
    /// A retryable error that kept happening.
    #[error("{model}: gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        model: String,
        attempts: u32,
        last: Box<LlmError>,
    },
    /// The server asked us to wait longer than the configured limit.
    #[error(
        "{model}: rate limited; the server asked to wait {wait:?}, more than the {limit:?} allowed (`max_retry_after_secs`)"
    )]
    WaitTooLong {
        model: String,
        wait: Duration,
        limit: Duration,
        last: Box<LlmError>,
    },
    /// A model spec or configuration problem.
    #[error("{0}")]
    Config(String),
    /// A configuration file that cannot be read or parsed.
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    /// The response cache failed.
    #[error("response cache {path}: {what}")]
    Cache {
        path: PathBuf,
        what: String,
        #[source]
        source: Option<sqlx::Error>,
    },
    /// The model itself failed (the embedded model: loading, a context too small, decoding).
    #[error("{model}: {message}")]
    Backend { model: String, message: String },
    /// The provider does not support this kind of request.
    #[error("{model}: {what} is not supported")]
    Unsupported { model: String, what: String },
}

/// `e`'s message followed by its innermost source's (the root cause: "Connection refused"),
/// unless the message already says it. What every error summary of the workspace shows.
pub fn with_root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let (message, cause) = (e.to_string(), root.to_string());
    if message.contains(&cause) {
        message
    } else {
        format!("{message}: {cause}")
    }
}

/// What a request did wrong, when a provider refused it for something the caller can change
/// (and sending it again unchanged cannot fix): see [`LlmError::client_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The input (with the tokens asked for) does not fit the model's context window.
    ContextLength,
    /// The provider has no such model.
    UnknownModel,
    /// The provider refused the request as invalid (its HTTP status: 400 or 422).
    Invalid(u16),
    /// The model cannot do what was asked of it (a chat of a text-only model, …).
    Unsupported,
}

/// How providers say an input is longer than the context: OpenAI ("maximum context length",
/// `context_length_exceeded`), Anthropic ("prompt is too long"), vLLM and llama.cpp's server
/// ("exceeds the available context size"), the embedded model ("tokens of context").
const CONTEXT_PHRASES: &[&str] = &[
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "context size",
    "tokens of context",
    "prompt is too long",
    "too many tokens",
];

fn says_context(message: &str) -> bool {
    let m = message.to_lowercase();
    CONTEXT_PHRASES.iter().any(|p| m.contains(p))
}

impl LlmError {
    /// The caller's part in this failure: `Some` when the request itself is at fault (an input
    /// too long for the model's context, a model the provider does not have, a request it
    /// refuses as invalid), which a service answers with a 4xx; `None` when the provider, the
    /// network or the server's own configuration failed (a 5xx, a timeout, a 401 for the
    /// server's key), which a service answers 502/503/504.
    pub fn client_fault(&self) -> Option<ClientFault> {
        match self {
            LlmError::Status {
                status, message, ..
            } => match *status {
                413 => Some(ClientFault::ContextLength),
                400 | 422 if says_context(message) => Some(ClientFault::ContextLength),
                400 | 422 => Some(ClientFault::Invalid(*status)),
                // A 404 that is not about a model is a wrong base URL: the server's own doing.
                404 if message.to_lowercase().contains("model") => Some(ClientFault::UnknownModel),
                _ => None,
            },
            LlmError::Backend { message, .. } if says_context(message) => {
                Some(ClientFault::ContextLength)
            }
            LlmError::Unsupported { .. } => Some(ClientFault::Unsupported),
            _ => None,
        }
    }

    /// Whether the same request could succeed if sent again (after a pause).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => {
                matches!(*status, 408 | 409 | 425 | 429 | 500..=599)
            }
            LlmError::Timeout { .. } | LlmError::Transport { .. } | LlmError::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether the server said we are sending too much (HTTP 429, or Anthropic's 529
    /// "overloaded"): the signal the adaptive limiter lowers concurrency on.
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            LlmError::Status {
                status: 429 | 529,
                ..
            }
        )
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> LlmError {
        LlmError::Status {
            model: "m".into(),
            status: code,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn retryable_statuses() {
        for code in [408, 429, 500, 502, 503, 529] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 422] {
            assert!(!status(code).is_retryable(), "{code}");
        }
        assert!(status(429).is_rate_limit());
        assert!(!status(500).is_rate_limit());
        let decode = LlmError::Decode {
            model: "m".into(),
            what: "x".into(),
            body_start: String::new(),
        };
        assert!(
            decode.is_retryable(),
            "a malformed success body is retried like a 5xx"
        );
    }

    #[test]
    fn client_faults_are_told_from_provider_failures() {
        let said = |code: u16, message: &str| LlmError::Status {
            model: "m".into(),
            status: code,
            message: message.into(),
            retry_after: None,
        };
        let openai_context = "This model's maximum context length is 4097 tokens. However, your \
                              messages resulted in 5000 tokens. (invalid_request_error)";
        assert_eq!(
            said(400, openai_context).client_fault(),
            Some(ClientFault::ContextLength)
        );
        assert_eq!(
            said(400, "prompt is too long: 200001 tokens > 200000 maximum").client_fault(),
            Some(ClientFault::ContextLength)
        );
        assert_eq!(
            said(413, "").client_fault(),
            Some(ClientFault::ContextLength)
        );
        let embedded = LlmError::Backend {
            model: "local:gemma-3-270m".into(),
            message: "the request needs 5000 tokens of context but the local context holds 4096"
                .into(),
        };
        assert_eq!(embedded.client_fault(), Some(ClientFault::ContextLength));
        assert_eq!(
            said(404, "The model `gpt-9` does not exist (model_not_found)").client_fault(),
            Some(ClientFault::UnknownModel)
        );
        assert_eq!(
            said(422, "temperature: must be at most 2").client_fault(),
            Some(ClientFault::Invalid(422))
        );
        // The provider's, the network's or the server's own failures are not the caller's.
        for code in [401, 403, 429, 500, 502, 503, 529] {
            assert_eq!(said(code, "context length").client_fault(), None, "{code}");
        }
        assert_eq!(
            said(404, "Not Found").client_fault(),
            None,
            "a wrong base URL"
        );
        let broken = LlmError::Backend {
            model: "m".into(),
            message: "the model thread has stopped".into(),
        };
        assert_eq!(broken.client_fault(), None);
    }
}
