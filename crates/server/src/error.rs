//! One error shape for every endpoint, the one OpenAI clients already parse:
//! `{"error": {"message", "type", "param", "code"}}` — `param` names the request part at fault
//! (`inputs.question`, `label`, `body.tags`), `code` is a stable word for programs.
//!
//! Library, prompt and model errors map to 4xx when the caller can fix them; only failures of
//! the server itself are 5xx, and their message still says what failed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metaprompt_registry::RegistryError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about one request part.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).param(param)
    }

    pub fn not_found(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message).param(param)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The error type OpenAI clients switch on.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::CONFLICT => "conflict_error",
            StatusCode::PAYLOAD_TOO_LARGE => "invalid_request_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ApiError {
    /// The JSON body every error answers with (also the `error` event of a stream that fails
    /// after it started).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, Json(body)).into_response()
    }
}

/// How a library error reads to an HTTP caller; `param` names the part of the request that
/// carried the reference.
pub fn library(e: RegistryError, param: &str) -> ApiError {
    use RegistryError as E;
    match &e {
        E::UnknownPrompt { .. } => ApiError::not_found(param, e.to_string()),
        E::UnknownVersion { .. } | E::UnknownLabel { .. } | E::UnknownHash(_) => {
            ApiError::not_found(param, e.to_string())
        }
        E::UnknownRun(_) => ApiError::not_found(param, e.to_string()),
        E::AmbiguousHash { .. } | E::Invalid { .. } => ApiError::invalid(param, e.to_string()),
        E::Refused { .. } => {
            ApiError::new(StatusCode::CONFLICT, "refused", e.to_string()).param(param)
        }
        E::ReadOnly { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", e.to_string())
        }
        _ => ApiError::internal(e.to_string()),
    }
}
