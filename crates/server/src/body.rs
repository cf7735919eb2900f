//! The JSON body extractor: a body that is too large, not JSON, or the wrong shape is a 4xx in
//! the common error shape, with `param` naming the field (`inputs`, `items[3].score`) — never
//! axum's plain-text rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "too_large",
                    "the request body is larger than the server's limit ([server] max_body_bytes)",
                )
                .param("body")
            } else {
                ApiError::new(
                    status,
                    "unreadable_body",
                    format!("cannot read the request body: {e}"),
                )
                .param("body")
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// A JSON body must say so: `Content-Type: application/json` (or `application/…+json`). A
/// browser sends another site's request with a JSON type only after a CORS preflight, which
/// this server never grants, so this refuses the "simple" cross-site posts (`text/plain`, forms).
fn check_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let kind = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = kind
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|s| s.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the body as JSON with `Content-Type: application/json` (got {})",
                if kind.is_empty() {
                    "none".to_string()
                } else {
                    format!("{kind:?}")
                }
            ),
        )
        .param("Content-Type"))
    }
}

/// Query parameters of type `T`; an unknown or malformed one is a 400 naming the query.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| Params(q))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::invalid("query", format!("query parameters: {text}"))
            })
    }
}

/// Parse a JSON document, naming the path of the first field that does not fit.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "body",
            "the request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(
                "body",
                format!("the request body is not valid JSON: {inner}"),
            );
        }
        let param = if path == "." || path.is_empty() {
            "body".to_string()
        } else {
            path
        };
        ApiError::invalid(param.clone(), format!("{param}: {inner}"))
    })?;
    de.end().map_err(|e| {
        ApiError::invalid("body", format!("trailing characters after the JSON: {e}"))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        score: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        items: Vec<Item>,
    }

    #[test]
    fn only_json_content_types_are_bodies() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_str(v).unwrap(),
            );
            check_json(&h)
        };
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain; a=application/json",
            "application/jsonp",
            "",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
        assert!(check_json(&axum::http::HeaderMap::new()).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Batch>(br#"{"items": [{"score": 1}, {"score": "x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("items[1].score"));
        let e = parse::<Batch>(br#"{"items": [], "extra": 1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let e = parse::<Batch>(b"{\"items\": [").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse::<Batch>(b"  ").unwrap_err();
        assert!(e.message.contains("empty"));
        assert!(parse::<Batch>(br#"{"items": []} x"#).is_err());
    }
}
