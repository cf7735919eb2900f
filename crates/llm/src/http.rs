//! What the HTTP providers share: one POST of a JSON body, with the answer turned into either the
//! provider's typed response or a typed error (status with the server's message and requested
//! wait, timeout, transport failure, or an undecodable body naming what was expected).

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ModelInfo;
use crate::error::LlmError;

/// A client with the model's per-request timeout. Fails when the model's base URL cannot be
/// one (a provider built by hand from a [`ModelInfo`]; config resolution checks it too), so a
/// bad URL is an error when the provider is built, not on every call.
pub(crate) fn client(info: &ModelInfo) -> Result<reqwest::Client, LlmError> {
    if let Some(problem) = crate::config::base_url_problem(&info.base_url) {
        return Err(LlmError::Config(format!(
            "{}: the base URL {:?} is not usable: {problem}",
            info.name, info.base_url
        )));
    }
    reqwest::Client::builder()
        .timeout(info.timeout)
        .user_agent(concat!("metaprompt/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| LlmError::Config(format!("{}: cannot build an HTTP client: {e}", info.name)))
}

/// POST `body` to `url` and decode a success body as `T`. `expected` names the wire object
/// (for error messages). Returns the decoded body and the call's latency.
pub(crate) async fn post_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    info: &ModelInfo,
    url: &str,
    headers: HeaderMap,
    body: &impl Serialize,
    expected: &str,
) -> Result<(T, Duration), LlmError> {
    let start = Instant::now();
    let model = || info.name.clone();
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout {
                model: model(),
                after: info.timeout,
            }
        } else {
            LlmError::Transport {
                model: model(),
                source: e,
            }
        }
    };
    let response = client
        .post(url)
        .headers(headers)
        .json(body)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let text = response.text().await.map_err(transport)?;
    let latency = start.elapsed();
    if !status.is_success() {
        return Err(LlmError::Status {
            model: model(),
            status: status.as_u16(),
            message: error_message(&text),
            retry_after,
        });
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| LlmError::Decode {
        model: model(),
        what: format!("expected a JSON {expected}, but the body is not valid JSON ({e})"),
        body_start: body_start(&text),
    })?;
    let decoded = serde_json::from_value(value).map_err(|e| LlmError::Decode {
        model: model(),
        what: format!("expected a {expected}: {e}"),
        body_start: body_start(&text),
    })?;
    Ok((decoded, latency))
}

/// The server's requested wait: `retry-after-ms` (OpenAI), else `Retry-After` in seconds or as
/// an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The message of an error body: `{"error": {"message": …}}` (OpenAI and Anthropic both), a bare
/// `{"message": …}` or `{"error": "…"}`, else the start of the body.
pub(crate) fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let error = &v["error"];
        let message = error["message"]
            .as_str()
            .or_else(|| error.as_str())
            .or_else(|| v["message"].as_str());
        if let Some(message) = message {
            return match error["type"].as_str().or_else(|| error["code"].as_str()) {
                Some(kind) => format!("{message} ({kind})"),
                None => message.to_string(),
            };
        }
    }
    let start = body_start(body);
    if start.is_empty() {
        "(empty body)".to_string()
    } else {
        start
    }
}

/// The first 200 characters of a body, for error messages.
pub(crate) fn body_start(body: &str) -> String {
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn parses_retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_messages_from_documented_bodies() {
        let openai = r#"{"error": {"message": "Rate limit reached for gpt-4o-mini", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}"#;
        assert_eq!(
            error_message(openai),
            "Rate limit reached for gpt-4o-mini (requests)"
        );
        let anthropic =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(error_message(anthropic), "Overloaded (overloaded_error)");
        assert_eq!(
            error_message(r#"{"error": "model not found"}"#),
            "model not found"
        );
        assert_eq!(
            error_message("<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
        assert_eq!(error_message(""), "(empty body)");
    }
}
