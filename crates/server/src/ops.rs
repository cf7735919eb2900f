//! Operations: `/healthz` (the process answers), `/readyz` (the library answers), `/metrics`
//! (Prometheus text), and token management for admins (`/v1/tokens`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::Utc;
use metaprompt_registry::service::{Role, Token, mint_token, token_hash};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.service.counts().await {
        Ok(c) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "inferences": c.inferences, "feedback": c.feedback})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": e.to_string()})),
        ),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: String,
}

/// `POST /v1/tokens` (admin): the secret is in this answer only.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<NewToken>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Admin)?;
    let role = Role::parse(&body.role).map_err(|e| ApiError::invalid("role", e.to_string()))?;
    let secret = mint_token();
    let token = Token {
        name: body.name,
        role,
        created_at: Utc::now(),
        created_by: caller.name.clone(),
        revoked_at: None,
    };
    state
        .service
        .add_token(&token, &token_hash(&secret))
        .await
        .map_err(|e| crate::error::library(e, "name"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": token.name, "role": role, "token": secret})),
    ))
}

/// `GET /v1/tokens` (admin): names and roles, never secrets.
pub async fn tokens(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let tokens = state
        .service
        .tokens()
        .await
        .map_err(|e| crate::error::library(e, "tokens"))?;
    Ok(Json(json!({"tokens": tokens})))
}

/// `DELETE /v1/tokens/{name}` (admin).
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let done = state
        .service
        .revoke_token(&name, Utc::now())
        .await
        .map_err(|e| crate::error::library(e, "name"))?;
    if !done {
        return Err(ApiError::not_found(
            "name",
            format!("no live token named `{name}`"),
        ));
    }
    Ok(Json(json!({"revoked": name})))
}

/// `GET /v1/webhooks/deliveries` (admin): the latest 200 delivery attempts, newest first.
pub async fn deliveries(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Admin)?;
    let d = state
        .service
        .deliveries(200)
        .await
        .map_err(|e| crate::error::library(e, "deliveries"))?;
    // A receiver's answer is stored as it came; what a client sees is redacted.
    Ok(Json(state.secrets.public_json(json!({"deliveries": d}))))
}
