//! Evaluations and optimizations over HTTP, through the engine's own requests:
//!
//! - `POST /v1/runs` `{"kind": "eval" | "optimize", "request": {…}}` (editor) starts one
//!   ([`metaprompt_engine::EvalRequest`], [`metaprompt_engine::OptimizeRequest`]), with no path
//!   from the client ([`crate::access`]): the task is a name in the server's task roots, the
//!   prompt a library version (`prompt:NAME@LABEL`) or a file inside the task's folder, models
//!   are checked, and `out`, `run_dir`, `meta.templates` are refused. Everything a run writes
//!   goes to `<runs dir>/<id>/` (an evaluation's `results.jsonl`, an optimization's run
//!   directory). `GET /v1/tasks` lists the tasks a request may name.
//! - `GET /v1/runs`, `GET /v1/runs/{id}`: state, and the result once finished.
//! - `GET /v1/runs/{id}/events`: progress as server-sent events (`progress`, then one `end`),
//!   every event since the start first, then live ones.
//! - `DELETE /v1/runs/{id}` cancels (an optimization stops at its next safe point, resumable);
//!   `POST /v1/runs/{id}/resume` resumes a stopped optimization from its checkpoint.
//!
//! Each run's record is a JSON file in the runs directory, written when it starts and when it
//! ends; its error is what a client may see ([`crate::secrets`]: no secrets, no quoted file
//! lines). When the server starts it reads them: an optimization that was running resumes from its
//! checkpoint (a `kill -9` costs at most the round in flight); an evaluation that was running is
//! marked `interrupted` (start it again).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use metaprompt_engine::{Engine, EngineError, EvalRequest, Handle, OptimizeRequest, Progress};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::access::LIBRARY_PREFIX;
use crate::error::{ApiError, ApiResult};
use crate::gateway::new_id;

mod routes;
pub use routes::{cancel, events, list, resume, show, start, tasks};

/// Events kept per run for late subscribers.
const KEPT_EVENTS: usize = 20_000;

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", content = "request", rename_all = "lowercase")]
pub enum RunBody {
    Eval(EvalRequest),
    Optimize(Box<OptimizeRequest>),
}

/// What a run does: the two kinds `POST /v1/runs` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Eval,
    /// Checkpointed: a stopped one resumes.
    Optimize,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Eval => "eval",
            Kind::Optimize => "optimize",
        }
    }
}

/// What a run reports, in order, as `GET /v1/runs/{id}/events` sends it (each a JSON object
/// whose `event` names it): the engine's progress, a resume, and its end.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum RunEvent {
    /// The run was resumed from its checkpoint.
    Resumed,
    /// The run ended (a later resume may continue it).
    End {
        status: Status,
        error: Option<String>,
    },
    /// The engine's progress, as it reports it.
    #[serde(untagged)]
    Progress(Progress),
}

impl RunEvent {
    fn end(r: &Record) -> Self {
        RunEvent::End {
            status: r.status,
            error: r.error.clone(),
        }
    }

    fn is_end(&self) -> bool {
        matches!(self, RunEvent::End { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Finished,
    Failed,
    Cancelled,
    /// The server stopped while it ran (evaluations; optimizations resume instead).
    Interrupted,
}

/// A run's record, as kept in `<runs dir>/<id>.json` and answered by `GET /v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    pub status: Status,
    pub by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub run_dir: Option<PathBuf>,
    /// The request as given (for evaluations: to start it again).
    pub request: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// How many times it was resumed.
    #[serde(default)]
    pub resumed: u32,
}

#[derive(Debug)]
struct Job {
    record: Mutex<Record>,
    events: Mutex<Vec<RunEvent>>,
    live: broadcast::Sender<RunEvent>,
    cancel: Mutex<Option<CancellationToken>>,
}

impl Job {
    fn new(record: Record) -> Arc<Self> {
        Arc::new(Self {
            record: Mutex::new(record),
            events: Mutex::new(Vec::new()),
            live: broadcast::channel(1024).0,
            cancel: Mutex::new(None),
        })
    }

    fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn push(&self, event: RunEvent) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() < KEPT_EVENTS {
            events.push(event.clone());
        }
        // Sent under the lock: a subscriber copying the backlog sees each event once.
        let _ = self.live.send(event);
    }
}

/// Every run this server knows, in memory and in the runs directory.
#[derive(Debug)]
pub struct Runs {
    dir: PathBuf,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    webhooks: crate::webhooks::Webhooks,
    secrets: crate::secrets::Secrets,
}

impl Runs {
    /// Read the runs directory; resume optimizations that were running, mark evaluations that
    /// were running as interrupted.
    pub async fn open(
        dir: PathBuf,
        engine: &Engine,
        webhooks: crate::webhooks::Webhooks,
        secrets: crate::secrets::Secrets,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let dir = std::fs::canonicalize(&dir)?;
        let runs = Arc::new(Self {
            dir,
            jobs: Mutex::new(HashMap::new()),
            webhooks,
            secrets,
        });
        let mut pending = Vec::new();
        for entry in std::fs::read_dir(&runs.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(mut record) = serde_json::from_str::<Record>(&text) else {
                tracing::warn!(file = %path.display(), "not a run record; ignored");
                continue;
            };
            if record.status == Status::Running {
                record.status = Status::Interrupted;
                if record.kind == Kind::Optimize {
                    pending.push(record.id.clone());
                } else {
                    record.error = Some("the server stopped while it ran; start it again".into());
                    record.finished_at = Some(Utc::now());
                }
            }
            let job = Job::new(record);
            runs.save(&job);
            runs.jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.record().id, job);
        }
        for id in pending {
            if let Err(e) = runs.resume(engine, &id).await {
                tracing::warn!(run = %id, error = %e, "cannot resume the run");
            }
        }
        Ok(runs)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Write a job's record atomically (temp file, then rename).
    fn save(&self, job: &Job) {
        let record = job.record();
        let path = self.path(&record.id);
        let tmp = path.with_extension("json.tmp");
        let text = match serde_json::to_vec_pretty(&record) {
            Ok(text) => text,
            Err(e) => {
                // Never an empty file in its place: the record on disk stays as it was.
                tracing::error!(file = %path.display(), error = %e, "cannot serialize the run record");
                return;
            }
        };
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::error!(file = %path.display(), error = %e, "cannot write the run record");
        }
    }

    /// Every run, newest first.
    pub fn records(&self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|j| j.record())
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        records
    }

    pub fn record(&self, id: &str) -> ApiResult<Record> {
        Ok(self.get(id)?.record())
    }

    /// The events a run has reported so far (the first [`KEPT_EVENTS`]).
    pub fn backlog(&self, id: &str) -> ApiResult<Vec<RunEvent>> {
        Ok(self
            .get(id)?
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }

    /// Ask a running run to stop (it keeps its checkpoint).
    pub fn cancel(&self, id: &str) -> ApiResult<()> {
        let job = self.get(id)?;
        if job.record().status != Status::Running {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_running",
                format!("run `{id}` is not running"),
            ));
        }
        if let Some(c) = job
            .cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            c.cancel();
        }
        Ok(())
    }

    /// Server-sent events: every event so far, then live ones, ending with `end`.
    pub fn stream(&self, id: &str) -> ApiResult<Response> {
        let job = self.get(id)?;
        // Subscribe and copy the backlog under the events lock (which `push` holds while it
        // sends), so every event arrives exactly once.
        let (backlog, mut live) = {
            let events = job.events.lock().unwrap_or_else(|p| p.into_inner());
            (events.clone(), job.live.subscribe())
        };
        let running = job.record().status == Status::Running;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(256);
        tokio::spawn(async move {
            // An `end` inside the backlog was a stop that a resume continued: not the end.
            for v in &backlog {
                if tx.send(sse_event(v)).await.is_err() {
                    return;
                }
            }
            if !running {
                if backlog.last().is_none_or(|v| !v.is_end()) {
                    let _ = tx.send(sse_event(&RunEvent::end(&job.record()))).await;
                }
                return;
            }
            loop {
                match live.recv().await {
                    Ok(v) => {
                        let end = v.is_end();
                        if tx.send(sse_event(&v)).await.is_err() || end {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response())
    }

    fn get(&self, id: &str) -> ApiResult<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found("id", format!("no run `{id}`")))
    }

    fn insert(&self, job: Arc<Job>) {
        self.save(&job);
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.record().id, job);
    }

    async fn start(
        self: &Arc<Self>,
        state: &AppState,
        body: RunBody,
        by: &str,
    ) -> ApiResult<Record> {
        let engine = &state.engine;
        let id = new_id("run");
        let now = Utc::now();
        let body = self.confine(state, &id, body).await?;
        match body {
            RunBody::Eval(request) => {
                let record = Record {
                    id: id.clone(),
                    kind: Kind::Eval,
                    status: Status::Running,
                    by: by.into(),
                    started_at: now,
                    finished_at: None,
                    run_dir: None,
                    request: serde_json::to_value(&request).unwrap_or_default(),
                    result: None,
                    error: None,
                    resumed: 0,
                };
                let job = Job::new(record);
                let handle = engine.eval(request);
                self.attach(job.clone(), handle);
                self.insert(job.clone());
                Ok(job.record())
            }
            RunBody::Optimize(request) => {
                let prepared = engine
                    .optimize(*request)
                    .await
                    .map_err(|e| self.engine_error(e))?;
                let record = Record {
                    id: id.clone(),
                    kind: Kind::Optimize,
                    status: Status::Running,
                    by: by.into(),
                    started_at: now,
                    finished_at: None,
                    run_dir: Some(prepared.run_dir().to_path_buf()),
                    request: json!({
                        "projection": prepared.projection(),
                        "request": prepared.request(),
                    }),
                    result: None,
                    error: None,
                    resumed: 0,
                };
                let job = Job::new(record);
                let handle = prepared.start();
                self.attach(job.clone(), handle);
                self.insert(job.clone());
                Ok(job.record())
            }
        }
    }

    /// The engine's request for a client's: every path the server's own ([`crate::access`]).
    async fn confine(&self, state: &AppState, id: &str, body: RunBody) -> ApiResult<RunBody> {
        let folder = self.dir.join(id);
        let refuse = |field: &str| {
            ApiError::invalid(
                format!("request.{field}"),
                format!(
                    "request.{field}: the server chooses where a run reads and writes \
                     (<runs dir>/<run id>/); leave it out"
                ),
            )
        };
        let model = |spec: &Option<String>, field: &str| -> ApiResult<()> {
            match spec {
                Some(s) => crate::access::check_model(state, s, &format!("request.{field}")),
                None => Ok(()),
            }
        };
        match body {
            RunBody::Eval(mut r) => {
                if r.out.is_some() {
                    return Err(refuse("out"));
                }
                let task = state
                    .access
                    .task(&r.scope.task.to_string_lossy(), "request.scope.task")?;
                // An evaluation starts at once: a task that does not load is refused here.
                metaprompt_eval::Task::load(&task).map_err(|e| {
                    ApiError::invalid("request.scope.task", self.secrets.public(&e.to_string()))
                })?;
                model(&r.scope.model, "scope.model")?;
                r.prompt = match r.prompt.take() {
                    Some(p) => Some(self.prompt(state, &task, &folder, &p).await?),
                    None => None,
                };
                r.scope.task = task;
                create(&folder)?;
                r.out = Some(folder.join("results.jsonl"));
                Ok(RunBody::Eval(r))
            }
            RunBody::Optimize(mut r) => {
                if r.run_dir.is_some() {
                    return Err(refuse("run_dir"));
                }
                if r.meta.templates.is_some() {
                    return Err(refuse("meta.templates"));
                }
                let task = state
                    .access
                    .task(&r.task.to_string_lossy(), "request.task")?;
                model(&r.model, "model")?;
                model(&r.meta.meta, "meta.meta")?;
                model(&r.meta.judge, "meta.judge")?;
                r.prompt = match r.prompt.take() {
                    Some(p) => Some(self.prompt(state, &task, &folder, &p).await?),
                    None => None,
                };
                r.task = task;
                r.run_dir = Some(folder);
                Ok(RunBody::Optimize(r))
            }
        }
    }

    /// A request's `prompt`: `prompt:NAME[@LABEL|@vN]` (the library's version, written into the
    /// run's folder) or a file inside the task's folder.
    async fn prompt(
        &self,
        state: &AppState,
        task: &Path,
        folder: &Path,
        p: &Path,
    ) -> ApiResult<PathBuf> {
        let param = "request.prompt";
        let text = p.to_string_lossy();
        let Some((name, label, version)) = crate::openai::served(&text) else {
            return state.access.file_in_task(task, p, param);
        };
        if !metaprompt_eval::name::is_valid(&name) {
            return Err(ApiError::invalid(
                param,
                format!("{param}: `{LIBRARY_PREFIX}NAME@LABEL` needs a prompt name"),
            ));
        }
        let target = state
            .resolver
            .resolve(&name, label.as_deref(), version.as_deref(), param, None)
            .await?;
        create(folder)?;
        let path = folder.join("prompt.toml");
        let toml = metaprompt_registry::content::to_stored(&name, &target.file)
            .map_err(|e| crate::error::library(e, "prompt"))?;
        std::fs::write(&path, toml)
            .map_err(|e| ApiError::internal(format!("cannot write the run's prompt: {e}")))?;
        Ok(path)
    }

    /// How an engine refusal reads over HTTP: the request's fault is a 400; its text is what a
    /// client may see.
    fn engine_error(&self, e: EngineError) -> ApiError {
        let mut a = engine_error(e);
        a.message = self.secrets.public(&a.message);
        a
    }

    /// Resume a stopped optimization from its checkpoint.
    async fn resume(self: &Arc<Self>, engine: &Engine, id: &str) -> ApiResult<Record> {
        let job = self.get(id)?;
        let record = job.record();
        let Some(dir) = record
            .run_dir
            .clone()
            .filter(|_| record.kind == Kind::Optimize)
        else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_resumable",
                format!("run `{id}` is an evaluation; start it again instead"),
            ));
        };
        if matches!(record.status, Status::Running | Status::Finished) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_resumable",
                format!("run `{id}` is {:?}", record.status).to_lowercase(),
            ));
        }
        let prepared = engine
            .resume(&dir)
            .await
            .map_err(|e| self.engine_error(e))?;
        {
            let mut r = job.record.lock().unwrap_or_else(|p| p.into_inner());
            r.status = Status::Running;
            r.error = None;
            r.finished_at = None;
            r.resumed += 1;
        }
        job.push(RunEvent::Resumed);
        let handle = prepared.start();
        self.attach(job.clone(), handle);
        self.save(&job);
        Ok(job.record())
    }

    /// Pump a handle's events into the job, then record how it ended.
    fn attach<T: Serialize + Send + 'static>(
        self: &Arc<Self>,
        job: Arc<Job>,
        mut handle: Handle<T>,
    ) {
        *job.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.canceller());
        let runs = self.clone();
        tokio::spawn(async move {
            while let Some(p) = handle.next().await {
                job.push(RunEvent::Progress(p));
            }
            let result = handle.wait().await;
            {
                let mut r = job.record.lock().unwrap_or_else(|p| p.into_inner());
                r.finished_at = Some(Utc::now());
                match result {
                    Ok(v) => {
                        r.status = Status::Finished;
                        r.result = Some(
                            runs.secrets
                                .public_json(serde_json::to_value(&v).unwrap_or_default()),
                        );
                    }
                    Err(EngineError::Cancelled { .. }) => {
                        r.status = Status::Cancelled;
                        r.error = Some(if r.kind == Kind::Optimize {
                            "cancelled; POST /v1/runs/{id}/resume continues from the checkpoint"
                                .replace("{id}", &r.id)
                        } else {
                            "cancelled".into()
                        });
                    }
                    Err(e) => {
                        r.status = Status::Failed;
                        r.error = Some(runs.secrets.public(&e.to_string()));
                    }
                }
            }
            runs.save(&job);
            let r = job.record();
            job.push(RunEvent::end(&r));
            runs.webhooks.emit(
                crate::webhooks::WebhookEvent::RunFinished,
                json!({"id": r.id, "kind": r.kind, "status": r.status, "error": r.error,
                       "run_dir": r.run_dir}),
            );
        });
    }
}

/// How an engine refusal reads over HTTP: the request's fault is a 400.
fn engine_error(e: EngineError) -> ApiError {
    match &e {
        EngineError::Invalid { field, .. } => {
            ApiError::invalid(format!("request.{field}"), e.to_string())
        }
        EngineError::Task(_)
        | EngineError::Dataset(_)
        | EngineError::Prompt(_)
        | EngineError::Metrics { .. }
        | EngineError::Run(_)
        | EngineError::Llm(_)
        | EngineError::Io { .. } => ApiError::invalid("request", e.to_string()),
        EngineError::Finished { .. } => {
            ApiError::new(StatusCode::CONFLICT, "finished", e.to_string())
        }
        _ => ApiError::internal(e.to_string()),
    }
}

fn create(folder: &Path) -> ApiResult<()> {
    std::fs::create_dir_all(folder)
        .map_err(|e| ApiError::internal(format!("cannot create the run's folder: {e}")))
}

/// The runs directory when none is configured: `runs/` beside the library file.
pub fn default_dir(library: &Path) -> PathBuf {
    library
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("runs")
}

fn sse_event(v: &RunEvent) -> Result<Event, Infallible> {
    let name = if v.is_end() { "end" } else { "progress" };
    // A run's events are plain data; one that would not serialize is sent as an error event
    // rather than as an empty line.
    Ok(match serde_json::to_string(v) {
        Ok(data) => Event::default().event(name).data(data),
        Err(e) => Event::default()
            .event("error")
            .data(format!("an event could not be written: {e}")),
    })
}

#[cfg(test)]
mod tests;
