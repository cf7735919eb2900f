//! The HTTP routes of runs: start, list, show, cancel, resume, and the events stream (`GET /v1/runs/{id}/events`).

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use metaprompt_registry::service::Role;
use serde_json::{Value, json};

use super::*;

/// `POST /v1/runs`
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<RunBody>,
) -> ApiResult<(StatusCode, Json<Record>)> {
    caller.require(Role::Editor)?;
    let record = state.runs.start(&state, body, &caller.name).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// `GET /v1/tasks`: the tasks a run may name (the server's task roots).
pub async fn tasks(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    Ok(Json(json!({ "tasks": state.access.tasks() })))
}

/// `GET /v1/runs`: every run, newest first, without results.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let runs: Vec<Value> = state
        .runs
        .records()
        .into_iter()
        .map(|r| {
            json!({"id": r.id, "kind": r.kind, "status": r.status, "by": r.by,
                   "started_at": r.started_at, "finished_at": r.finished_at, "run_dir": r.run_dir})
        })
        .collect();
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /v1/runs/{id}`
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Record>> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.runs.record(&id)?))
}

/// `DELETE /v1/runs/{id}`: cancel.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Editor)?;
    state.runs.cancel(&id)?;
    Ok(Json(json!({"id": id, "cancelling": true})))
}

/// `POST /v1/runs/{id}/resume`
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<Record>)> {
    caller.require(Role::Editor)?;
    let record = state.runs.resume(&state.engine, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// `GET /v1/runs/{id}/events`: every event so far, then live ones, ending with `end`.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    state.runs.stream(&id)
}
