//! The prompt-engineer agent over HTTP: `GET /v1/agent` (viewer) is what `metaprompt agent
//! status` shows — every slice with its interval, the findings, the agent's cases with their
//! diagnosis, proposal, checks and canary; `POST /v1/agent/pass` (editor) runs one pass now.
//! `serve --agent` also runs a pass every interval (`[agent]` policy from the config).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use metaprompt_agent::{Agent, AgentError};
use metaprompt_registry::service::Role;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::Caller;
use crate::body::Params;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    pub prompt: Option<String>,
}

fn agent_error(e: AgentError) -> ApiError {
    match e {
        AgentError::Registry(e) => crate::error::library(*e, "agent"),
        AgentError::Config { .. } => {
            ApiError::new(StatusCode::CONFLICT, "agent_config", e.to_string())
        }
        e => ApiError::internal(format!("the agent failed: {e}")),
    }
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AgentQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let settings = state.agent_settings.as_ref().map_err(|e| {
        ApiError::new(StatusCode::CONFLICT, "agent_config", e.clone()).param("agent")
    })?;
    let s = metaprompt_agent::status(
        state.service.as_ref(),
        settings,
        q.prompt.as_deref(),
        chrono::Utc::now(),
    )
    .await
    .map_err(agent_error)?;
    Ok(Json(
        state
            .secrets
            .public_json(serde_json::to_value(s).unwrap_or_default()),
    ))
}

pub async fn pass(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Editor)?;
    let report = run_pass(&state, None).await?;
    Ok(Json(json!({
        "at": report.at, "actions": report.actions, "findings": report.findings,
        "calls_today": report.calls_today,
    })))
}

/// One pass, never two at once (the loop and a `POST` take turns).
async fn run_pass(
    state: &AppState,
    stop: Option<&CancellationToken>,
) -> ApiResult<metaprompt_agent::PassReport> {
    let _turn = state.agent_turn.lock().await;
    let mut agent = agent(state)?;
    // A server stopping stops the pass at its next safe point (its search keeps its
    // checkpoint and the next pass resumes it).
    if let Some(stop) = stop {
        agent = agent.with_cancel(stop.child_token());
    }
    agent.pass(chrono::Utc::now()).await.map_err(agent_error)
}

fn agent(state: &AppState) -> ApiResult<Agent> {
    let dir = state
        .engine
        .library_path()
        .and_then(|p| p.parent())
        .map_or_else(|| "agent".into(), |p| p.join("agent"));
    Agent::new(
        state.engine.clone(),
        state.library.clone(),
        state.service.clone(),
        dir,
    )
    .map_err(agent_error)
}

/// `serve --agent`: a pass every `interval` until the server stops.
pub async fn run_loop(state: AppState, interval: Duration, stop: CancellationToken) {
    loop {
        match run_pass(&state, Some(&stop)).await {
            Ok(r) => {
                for a in &r.actions {
                    tracing::info!(case = %a.case, prompt = %a.prompt, slice = %a.slice, what = %a.what, "agent");
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "agent pass failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
