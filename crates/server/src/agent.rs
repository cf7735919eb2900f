//! The prompt-engineer agent over HTTP: `GET /v1/agent` (viewer) is what `metaprompt agent
//! status` shows — every slice with its interval, the findings, the agent's cases with their
//! diagnosis, proposal, checks and canary; `POST /v1/agent/pass` (editor) runs one pass now.
//! `serve --agent` also runs a pass every interval (`[agent]` policy from the config).
//!
//! A pass reports its stages ([`metaprompt_agent::Progress`]) into [`AgentProgress`], kept in
//! memory: `GET /v1/agent` carries it as `pass` (running or not, since when, its last
//! [`PASS_LINES`] lines) and the console's `/agent` page shows it while it runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use metaprompt_agent::{Agent, AgentError, Progress};
use metaprompt_registry::service::Role;
use serde::{Deserialize, Serialize};
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

/// Progress lines kept of a pass (the newest).
pub const PASS_LINES: usize = 50;

/// The server's agent pass as it goes: whether one runs, since when, and its last
/// [`PASS_LINES`] progress lines (the last pass's, once it has ended). Cloned handles share it.
#[derive(Debug, Clone, Default)]
pub struct AgentProgress(Arc<Mutex<Pass>>);

/// What [`AgentProgress`] holds at one moment: `pass` in `GET /v1/agent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pass {
    pub running: bool,
    /// When the running pass (or the last one) began; `None`: no pass since the server started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last pass ended (`None` while the first runs).
    pub finished_at: Option<DateTime<Utc>>,
    /// Its progress lines, oldest first, each `[  12.3s] what` (the time since it began).
    pub lines: Vec<String>,
    /// Earlier lines of the same pass no longer kept.
    pub dropped: usize,
}

impl AgentProgress {
    /// What it holds now.
    pub fn snapshot(&self) -> Pass {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A pass begins at `now`: the lines of the last one are dropped. The pass runs until the
    /// returned guard is dropped (also when the pass fails or its task is cancelled).
    pub fn begin(&self, now: DateTime<Utc>) -> PassGuard {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Pass {
            running: true,
            started_at: Some(now),
            ..Pass::default()
        };
        let holder = self.clone();
        PassGuard {
            holder: self.clone(),
            progress: Progress::to(move |line| holder.push(line)),
        }
    }

    fn push(&self, line: &str) {
        let mut p = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        p.lines.push(line.to_string());
        if p.lines.len() > PASS_LINES {
            let over = p.lines.len() - PASS_LINES;
            p.lines.drain(..over);
            p.dropped += over;
        }
    }
}

/// A running pass of [`AgentProgress`]; dropping it ends the pass.
#[derive(Debug)]
pub struct PassGuard {
    holder: AgentProgress,
    progress: Progress,
}

impl PassGuard {
    /// The sink to give the agent ([`Agent::with_progress`]).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// A line of the server's own, timed as the agent's are.
    pub fn say(&self, what: &str) {
        self.progress.say(what);
    }
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        let mut p = self.holder.0.lock().unwrap_or_else(PoisonError::into_inner);
        p.running = false;
        p.finished_at = Some(Utc::now());
    }
}

/// `GET /v1/agent`: the agent's status and the server's pass.
#[derive(Debug, Serialize)]
struct View {
    #[serde(flatten)]
    status: metaprompt_agent::Status,
    pass: Pass,
}

fn agent_error(e: AgentError) -> ApiError {
    match e {
        AgentError::Registry(e) => crate::error::library(*e, "agent"),
        AgentError::Config { .. } | AgentError::ConfigFile(_) => {
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
    let view = View {
        status: s,
        pass: state.agent_progress.snapshot(),
    };
    Ok(Json(state.secrets.public_json(
        serde_json::to_value(view).unwrap_or_default(),
    )))
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
    let pass = state.agent_progress.begin(Utc::now());
    let report = async {
        let mut agent = agent(state)?.with_progress(pass.progress());
        // A server stopping stops the pass at its next safe point (its search keeps its
        // checkpoint and the next pass resumes it).
        if let Some(stop) = stop {
            agent = agent.with_cancel(stop.child_token());
        }
        agent.pass(Utc::now()).await.map_err(agent_error)
    }
    .await;
    match &report {
        Ok(r) => pass.say(&format!(
            "pass done: {}",
            match r.actions.len() {
                0 => "nothing to do".to_string(),
                1 => "1 action".to_string(),
                n => format!("{n} actions"),
            }
        )),
        Err(e) => pass.say(&format!("pass failed: {}", e.message)),
    }
    report
}

fn agent(state: &AppState) -> ApiResult<Agent> {
    let dir = state
        .engine
        .library_path()
        .and_then(|p| p.parent())
        .map_or_else(|| "agent".into(), |p| p.join("agent"));
    let settings = state
        .agent_settings
        .clone()
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "agent_config", e).param("agent"))?;
    Ok(Agent::new(
        state.engine.clone(),
        state.library.clone(),
        state.service.clone(),
        dir,
        settings,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_keeps_its_last_lines_and_ends_when_its_guard_drops() {
        let holder = AgentProgress::default();
        assert_eq!(holder.snapshot(), Pass::default());
        let t0 = Utc::now();
        let pass = holder.begin(t0);
        let sink = pass.progress();
        for i in 0..PASS_LINES + 10 {
            sink.say(&format!("stage {i}"));
        }
        pass.say("pass done: nothing to do");
        let s = holder.snapshot();
        assert!(s.running && s.started_at == Some(t0) && s.finished_at.is_none());
        assert_eq!((s.lines.len(), s.dropped), (PASS_LINES, 11));
        assert!(s.lines[0].ends_with("s] stage 11"), "{:?}", s.lines[0]);
        assert!(s.lines[PASS_LINES - 1].ends_with("s] pass done: nothing to do"));
        drop(pass);
        let s = holder.snapshot();
        assert!(!s.running && s.finished_at.is_some());
        assert_eq!(s.lines.len(), PASS_LINES, "the last pass's lines stay");
        // The next pass starts clean; a clone of the holder sees the same pass.
        let other = holder.clone();
        let pass = holder.begin(Utc::now());
        assert!(other.snapshot().running && other.snapshot().lines.is_empty());
        drop(pass);
        assert!(!other.snapshot().running);
    }

    #[test]
    fn get_agent_carries_the_pass_beside_the_status() {
        let holder = AgentProgress::default();
        let t0 = Utc::now();
        let pass = holder.begin(t0);
        pass.progress()
            .say("reading the inference and feedback log");
        let status = metaprompt_agent::Status {
            at: t0,
            window_secs: 3600,
            min_n: 30,
            fdr: 0.05,
            inferences: 0,
            scored: 0,
            slices: Vec::new(),
            reports: Vec::new(),
            findings: Vec::new(),
            untested: Vec::new(),
            cases: Vec::new(),
        };
        let v = serde_json::to_value(View {
            status,
            pass: holder.snapshot(),
        })
        .unwrap();
        assert_eq!(v["min_n"], 30, "the status stays at the top: {v}");
        assert!(v["cases"].is_array() && v["untested"].is_array(), "{v}");
        assert_eq!(v["pass"]["running"], true);
        assert_eq!(v["pass"]["started_at"], serde_json::to_value(t0).unwrap());
        assert!(v["pass"]["finished_at"].is_null());
        let lines = v["pass"]["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .as_str()
                .unwrap()
                .ends_with("reading the inference and feedback log")
        );
    }
}
