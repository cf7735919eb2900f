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

impl LlmError {
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
}
