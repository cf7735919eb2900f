//! What the HTTP providers share: a request's settings checked before it is sent (a NaN
//! temperature, `max_tokens` of 0), then one POST of a JSON body, with the answer turned into
//! either the provider's typed response or a typed error (status with the server's message and
//! requested wait, timeout, transport failure with its root cause, or an undecodable body naming
//! what was expected, quoted from its start).

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::redact::Redactor;

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

/// Before a request is sent: a setting no server could mean (a NaN temperature would be sent
/// as JSON `null`) is an error naming the model, not retried.
pub(crate) fn check_request(
    info: &ModelInfo,
    request: &crate::types::Request,
) -> Result<(), LlmError> {
    match request.problem() {
        Some(problem) => Err(LlmError::Config(format!("{}: {problem}", info.name))),
        None => Ok(()),
    }
}

/// One endpoint's way of calling: its client, its model and the redactor that knows its keys.
#[derive(Clone, Copy)]
pub(crate) struct Endpoint<'a> {
    pub client: &'a reqwest::Client,
    pub info: &'a ModelInfo,
    pub redactor: &'a Redactor,
}

/// POST `body` to `url` and decode a success body as `T`. `expected` names the wire object
/// (for error messages). Returns the decoded body and the call's latency.
///
/// Every error message made from what the server sent (an error body, an undecodable body, a
/// transport failure's URL) passes through the endpoint's redactor first: servers echo
/// credentials.
pub(crate) async fn post_json<T: DeserializeOwned>(
    endpoint: Endpoint<'_>,
    url: &str,
    headers: HeaderMap,
    body: &impl Serialize,
    expected: &str,
) -> Result<(T, Duration), LlmError> {
    let Endpoint {
        client,
        info,
        redactor,
    } = endpoint;
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
                source: scrub(e, redactor),
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
    let limit = info.max_response_bytes;
    let (body, complete) = read_capped(response, limit).await.map_err(transport)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let latency = start.elapsed();
    // An error body is only quoted from its start: a cut one still says what went wrong.
    if status.is_success() && !complete {
        return Err(LlmError::ResponseTooLarge {
            model: model(),
            url: redactor.redact(&display_url(url)),
            limit,
        });
    }
    if !status.is_success() {
        // Redacted whole before it is cut, so no key is split at the cut and left half-shown.
        return Err(LlmError::Status {
            model: model(),
            status: status.as_u16(),
            message: error_message(&redactor.redact(&text)),
            retry_after,
        });
    }
    let decode = |what: String| LlmError::Decode {
        model: model(),
        what: redactor.redact(&what),
        body_start: body_start(&redactor.redact(&text)),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        decode(format!(
            "expected a JSON {expected}, but the body is not valid JSON ({e})"
        ))
    })?;
    let decoded =
        serde_json::from_value(value).map_err(|e| decode(format!("expected a {expected}: {e}")))?;
    Ok((decoded, latency))
}

/// Read at most `limit` bytes of the body: the bytes, and whether that was all of it. A body
/// announced as larger is not read at all.
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Ok((Vec::new(), false));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > limit - body.len() {
            body.extend_from_slice(&chunk[..limit - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A transport error whose URL (shown in its message) has no credentials, query or fragment,
/// or no URL at all if a key still shows in it.
fn scrub(mut e: reqwest::Error, redactor: &Redactor) -> reqwest::Error {
    let Some(url) = e.url_mut() else { return e };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    if redactor.redact(url.as_str()) != url.as_str() {
        return e.without_url();
    }
    e
}

/// A URL for messages: without credentials, query or fragment (where keys sometimes travel).
pub(crate) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(an unparseable URL)".to_string(),
    }
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

/// The start of a body, for error messages: about 200 characters, cut between words (with `…`
/// where cut), so no word is left half-shown.
pub(crate) fn body_start(body: &str) -> String {
    const MAX: usize = 200;
    let Some((end, _)) = body.char_indices().nth(MAX) else {
        return body.to_string();
    };
    // Back to the last whitespace, unless that loses more than a quarter of the text (one long
    // token, such as minified JSON, is cut where it must be).
    let cut = body[..end]
        .rfind(char::is_whitespace)
        .filter(|&i| i >= end * 3 / 4)
        .unwrap_or(end);
    format!("{}…", body[..cut].trim_end())
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

    /// A server on loopback that answers every connection with `head` then `body` in pieces of
    /// 1000 bytes (framed as chunks when `chunked`; `head` must then say so).
    async fn raw_server(head: &'static str, body: Vec<u8>, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket.write_all(head.as_bytes()).await;
                    for piece in body.chunks(1000) {
                        if chunked {
                            let size = format!("{:x}\r\n", piece.len());
                            let _ = socket.write_all(size.as_bytes()).await;
                            let _ = socket.write_all(piece).await;
                            let _ = socket.write_all(b"\r\n").await;
                        } else {
                            let _ = socket.write_all(piece).await;
                        }
                    }
                    if chunked {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        format!("http://{addr}/v1/chat?key=secret")
    }

    fn info(limit: u64) -> ModelInfo {
        let mut info = ModelInfo::new(crate::config::ProviderKind::Openai, "m");
        info.base_url = "http://127.0.0.1".into();
        info.max_response_bytes = limit;
        info
    }

    async fn post(url: &str, limit: u64) -> Result<serde_json::Value, LlmError> {
        let info = info(limit);
        let client = client(&info).unwrap();
        let body = serde_json::json!({});
        let endpoint = Endpoint {
            client: &client,
            info: &info,
            redactor: &Redactor::default(),
        };
        let r: Result<(serde_json::Value, _), _> =
            post_json(endpoint, url, HeaderMap::new(), &body, "object").await;
        r.map(|(v, _)| v)
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_cut_off_with_a_clear_error() {
        let mut json = br#"{"text": ""#.to_vec();
        json.extend(std::iter::repeat_n(b'a', 10_000));
        json.extend(br#""}"#);
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let url = raw_server(head, json.clone(), true).await;
        let e = post(&url, 4096).await.unwrap_err();
        assert!(
            matches!(e, LlmError::ResponseTooLarge { limit: 4096, .. }),
            "{e:?}"
        );
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("4096 bytes")
                && text.contains("/v1/chat")
                && text.contains("max_response_bytes"),
            "{text}"
        );
        assert!(
            !text.contains("secret"),
            "no query string in messages: {text}"
        );
        // The same body under a limit it fits is read whole.
        assert_eq!(
            post(&url, 10_012).await.unwrap()["text"]
                .as_str()
                .unwrap()
                .len(),
            10_000
        );
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_and_an_error_body_only_cut() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n";
        let url = raw_server(head, vec![b' '; 5000], false).await;
        let e = post(&url, 4999).await.unwrap_err();
        assert!(matches!(e, LlmError::ResponseTooLarge { .. }), "{e:?}");
        // A large error page keeps its status (and so its retryability), quoted from the start.
        let head = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let mut page = b"<html>overloaded".to_vec();
        page.extend(vec![b' '; 10_000]);
        let url = raw_server(head, page, true).await;
        let e = post(&url, 2048).await.unwrap_err();
        assert!(matches!(e, LlmError::Status { status: 503, .. }), "{e:?}");
        assert!(e.to_string().contains("<html>overloaded"), "{e}");
    }

    #[tokio::test]
    async fn a_transport_error_shows_no_key_from_its_url() {
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = "k3yInTheUrl0123";
        let info = info(1024);
        let client = client(&info).unwrap();
        let redactor = Redactor::new([key]);
        let endpoint = Endpoint {
            client: &client,
            info: &info,
            redactor: &redactor,
        };
        for url in [
            format!("http://127.0.0.1:{port}/v1/chat?api-key={key}"),
            format!("http://user:{key}@127.0.0.1:{port}/v1/chat"),
            format!("http://127.0.0.1:{port}/{key}/v1/chat"),
        ] {
            let r: Result<(serde_json::Value, _), _> = post_json(
                endpoint,
                &url,
                HeaderMap::new(),
                &serde_json::json!({}),
                "x",
            )
            .await;
            let e = r.unwrap_err();
            assert!(matches!(e, LlmError::Transport { .. }), "{e:?}");
            let mut shown = format!("{e} {e:?}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                shown.push_str(&s.to_string());
                source = s.source();
            }
            assert!(!shown.contains(key), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = post(
            &format!("http://127.0.0.1:{port}/v1/chat/completions"),
            1024,
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("/v1/chat/completions") && text.to_lowercase().contains("refused"),
            "{text}"
        );
        // Retried and given up on, it still says why.
        let last = LlmError::RetriesExhausted {
            model: "m".into(),
            attempts: 3,
            last: Box::new(e),
        };
        assert!(
            last.to_string().to_lowercase().contains("refused"),
            "{last}"
        );
    }

    #[test]
    fn a_long_body_is_quoted_from_its_start_cut_between_words() {
        let body = "word ".repeat(100);
        let start = body_start(&body);
        assert!(
            start.ends_with("word…") && start.chars().count() <= 201,
            "{start}"
        );
        let token = "x".repeat(300);
        assert_eq!(body_start(&token).chars().count(), 201);
        assert_eq!(body_start("short body"), "short body");
    }

    #[test]
    fn urls_in_messages_lose_credentials_and_query() {
        assert_eq!(
            display_url("https://user:pw@h.example/v1/chat?api-key=k#f"),
            "https://h.example/v1/chat"
        );
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
