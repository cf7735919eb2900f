//! `metaprompt serve`: the prompt service, on axum, over the engine and the library.
//!
//! ```text
//! app ──GET /v1/prompts/NAME?label=production──> Resolver (1 s cache) ──> library   (ETag = hash)
//! app ──POST /v1/prompts/NAME/run──> gateway: render ──> model (hub) ──> Inference ──┐
//! app ──POST /v1/chat/completions (model = prompt:NAME@LABEL or a model spec)──┘      │
//! app ──POST /v1/feedback[:batch]──> Feedback ──────────────────────────────────────┤
//!                                       recorder: one writer, group commit ─────────┴─> library db
//! reviewer ──/v1/review, PUT …/labels/L[/split], POST …/versions/V/review──> library rules
//! editor ──POST /v1/runs──> engine (eval, optimize) ──progress──> GET /v1/runs/ID/events (SSE)
//! browser ──GET /, /prompts/NAME, /review, /runs, /production, /agent (cookie)──> console: same reads, HTML
//! ```
//!
//! - [`gateway`] — the one serving path (resolve, render, call, score online, record), used
//!   by `/run` and the OpenAI-compatible endpoint ([`openai`]). Models are called through
//!   `Provider::complete_live`: the embedded model batches concurrent requests into shared
//!   decode steps and streams tokens; answers are never taken from the response cache.
//! - [`recorder`] — group commit: a request is answered only after its inference or feedback
//!   is committed, so every acknowledged record survives `kill -9`.
//! - [`auth`] — bearer tokens (only hashes stored) with ordered roles; `--insecure-local`
//!   serves loopback without tokens.
//! - [`body`], [`error`] — every bad request is a 4xx with `{"error": {"message", "type",
//!   "param", "code"}}` naming the field; never a panic or a plain-text rejection.
//! - [`runs`] — evaluations and optimizations over HTTP through the engine's requests, with
//!   progress as SSE, cancel and resume; records on disk, so runs survive a restart.
//! - [`webhooks`] — signed POSTs on proposals, reviews, label and split moves (followed in the
//!   library's audit trail, whoever made them) and finished runs, retried with backoff, every
//!   attempt logged.
//! - [`agent`] — the prompt-engineer agent's state (`GET /v1/agent`), a pass on demand, and
//!   the `serve --agent` loop.
//! - [`console`] — the web console at `/`: server-rendered pages over the same state, signed in
//!   with a token kept in an HttpOnly cookie, CSRF-checked forms, a strict CSP.
//! - [`prompts`], [`library`], [`feedback`], [`ops`] — the routes.
//! - [`listen`] — the connection loop: HTTP/1.1 keep-alive on hyper, a header-read and an
//!   idle timeout per connection, at most `max_connections` at once, graceful stop.
//!
//! The server is a thin adapter: prompts come from [`metaprompt_registry::Store`], model calls
//! from the engine's hub (the embedded model included), records go to
//! [`metaprompt_registry::ServiceStore`].

pub mod access;
pub mod agent;
pub mod auth;
pub mod body;
pub mod config;
pub mod console;
pub mod error;
pub mod feedback;
pub mod gateway;
pub mod library;
pub mod listen;
pub mod metrics;
pub mod openai;
pub mod ops;
pub mod origin;
pub mod prompts;
pub mod recorder;
pub mod runs;
pub mod secrets;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metaprompt_engine::Engine;
use metaprompt_registry::service::LogSync;
use metaprompt_registry::{ServiceStore, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, TokenCache};
pub use crate::config::{ServerConfig, WebhookConfig};
use crate::error::ApiError;
use crate::gateway::Resolver;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};
use crate::recorder::Recorder;

/// How the server runs (from `[server]` in `metaprompt.toml` and the command line).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// Serve without tokens (every caller has every role). Loopback addresses only.
    pub insecure_local: bool,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// How long a client has to send a request's headers ([`listen`]).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request ([`listen`]).
    pub idle_timeout: Duration,
    /// Connections served at once ([`listen`]).
    pub max_connections: usize,
    /// Inferences older than this are removed (hourly); `None`: kept.
    pub retention: Option<Duration>,
    /// Output tokens of a run when the request does not say.
    pub max_tokens: u32,
    /// Where runs started over HTTP keep their records (and optimizations their run
    /// directories); `None`: `runs/` beside the library file.
    pub runs_dir: Option<std::path::PathBuf>,
    /// Where events are sent.
    pub webhooks: Vec<WebhookConfig>,
    /// `serve --agent`: a pass of the prompt-engineer agent this often; `None`: only on
    /// `POST /v1/agent/pass`.
    pub agent_interval: Option<Duration>,
    /// How durable a commit of the inference log is before its requests are answered.
    pub log_sync: LogSync,
    /// Folders of tasks that runs over HTTP may name ([`access`]).
    pub task_roots: Vec<std::path::PathBuf>,
    /// Host names besides IP addresses and `localhost` ([`origin`]).
    pub hosts: Vec<String>,
    /// HTTP callers may name embedded models by file.
    pub allow_model_paths: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            insecure_local: false,
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
            retention: None,
            max_tokens: 256,
            runs_dir: None,
            webhooks: Vec::new(),
            agent_interval: None,
            log_sync: LogSync::Full,
            task_roots: Vec::new(),
            hosts: Vec::new(),
            allow_model_paths: false,
        }
    }
}

/// The address a `listen` setting names: `IP:PORT` (`127.0.0.1:8080`, `[::1]:8080`) or
/// `HOST:PORT` (`localhost:8080`), a host name resolved now. `localhost` always means a loopback
/// address (IPv4 first, as the default listen address is); another name takes the resolver's
/// first IPv4 answer, else its first. The error says what was expected (the caller names the
/// setting).
pub fn resolve_listen(s: &str) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "expected an address and port such as 127.0.0.1:8080, or a host name and port such as localhost:8080";
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(EXPECTED.to_string());
    };
    let (Ok(port), false) = (port.parse::<u16>(), host.is_empty()) else {
        return Err(EXPECTED.to_string());
    };
    let local = host.eq_ignore_ascii_case("localhost");
    let found: Vec<SocketAddr> = match std::net::ToSocketAddrs::to_socket_addrs(&(host, port)) {
        Ok(found) => found.collect(),
        // `localhost` is loopback whatever the resolver says (RFC 6761).
        Err(_) if local => Vec::new(),
        Err(e) => return Err(format!("cannot resolve `{host}`: {e} ({EXPECTED})")),
    };
    let first = |keep: &dyn Fn(&SocketAddr) -> bool| found.iter().copied().find(|a| keep(a));
    let picked = if local {
        first(&|a| a.is_ipv4() && a.ip().is_loopback())
            .or_else(|| first(&|a| a.ip().is_loopback()))
            .or(Some(SocketAddr::from(([127, 0, 0, 1], port))))
    } else {
        first(&SocketAddr::is_ipv4).or_else(|| first(&|_| true))
    };
    picked.ok_or_else(|| format!("`{host}` resolves to no address ({EXPECTED})"))
}

impl ServerOptions {
    /// The options a `[server]` table asks for; errors name the field.
    pub fn from_config(c: &ServerConfig) -> Result<Self, ServerError> {
        let d = Self::default();
        let listen = match &c.listen {
            Some(s) => resolve_listen(s)
                .map_err(|why| ServerError::Config(format!("[server] listen = \"{s}\": {why}")))?,
            None => d.listen,
        };
        Ok(Self {
            listen,
            insecure_local: false,
            max_body_bytes: match c.max_body_bytes {
                None => d.max_body_bytes,
                Some(n @ 1024..=1_073_741_824) => n as usize,
                Some(n) => {
                    return Err(ServerError::Config(format!(
                        "[server] max_body_bytes = {n}: expected 1024 to 1073741824 bytes"
                    )));
                }
            },
            request_timeout: c.request_timeout_secs.map_or(Ok(d.request_timeout), |s| {
                secs_in("request_timeout_secs", s, 86_400)
            })?,
            header_read_timeout: c
                .header_read_timeout_secs
                .map_or(Ok(d.header_read_timeout), |s| {
                    secs_in("header_read_timeout_secs", s, 3600)
                })?,
            idle_timeout: c.idle_timeout_secs.map_or(Ok(d.idle_timeout), |s| {
                secs_in("idle_timeout_secs", s, 86_400)
            })?,
            max_connections: match c.max_connections {
                None => d.max_connections,
                Some(n @ 1..=1_000_000) => n as usize,
                Some(n) => {
                    return Err(ServerError::Config(format!(
                        "[server] max_connections = {n}: expected 1 to 1000000 connections"
                    )));
                }
            },
            retention: match c.retention_days {
                None => None,
                Some(0) => {
                    return Err(ServerError::Config(
                        "[server] retention_days = 0: expected 1 or more days (leave it out to \
                         keep every inference)"
                            .into(),
                    ));
                }
                Some(days) => Some(Duration::from_secs(u64::from(days) * 86_400)),
            },
            max_tokens: match c.max_tokens {
                None => d.max_tokens,
                Some(0) => {
                    return Err(ServerError::Config(
                        "[server] max_tokens = 0: expected 1 or more tokens".into(),
                    ));
                }
                Some(n) => n,
            },
            runs_dir: c.runs_dir.clone(),
            webhooks: c.webhooks.clone(),
            agent_interval: None,
            log_sync: c.log_sync.unwrap_or(d.log_sync),
            task_roots: c.task_roots.clone(),
            hosts: c.hosts.clone(),
            allow_model_paths: c.allow_model_paths.unwrap_or(false),
        })
    }
}

/// `[server] FIELD = secs`, from 1 to `max` seconds.
fn secs_in(field: &str, secs: u64, max: u64) -> Result<Duration, ServerError> {
    if (1..=max).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(ServerError::Config(format!(
            "[server] {field} = {secs}: expected 1 to {max} seconds"
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Library(Box<metaprompt_registry::RegistryError>),
    #[error(transparent)]
    Engine(Box<metaprompt_engine::EngineError>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
}

impl From<metaprompt_registry::RegistryError> for ServerError {
    fn from(e: metaprompt_registry::RegistryError) -> Self {
        ServerError::Library(Box::new(e))
    }
}

impl From<metaprompt_engine::EngineError> for ServerError {
    fn from(e: metaprompt_engine::EngineError) -> Self {
        ServerError::Engine(Box::new(e))
    }
}

/// What every handler sees (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
pub struct Shared {
    pub engine: Engine,
    pub library: Arc<dyn Store>,
    pub service: Arc<dyn ServiceStore>,
    pub resolver: Resolver,
    pub recorder: Recorder,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub runs: Arc<runs::Runs>,
    pub webhooks: webhooks::Webhooks,
    pub options: ServerOptions,
    /// The `[agent]` policy, or why it is not valid.
    pub agent_settings: Result<metaprompt_agent::Settings, String>,
    /// Held by the agent's pass: one at a time.
    pub agent_turn: tokio::sync::Mutex<()>,
    /// The running (or last) agent pass's progress, for `GET /v1/agent` and the console.
    pub agent_progress: agent::AgentProgress,
    /// The tasks and models a client may name.
    pub access: access::Access,
    /// The names a request may address the server by.
    pub hosts: origin::Hosts,
    /// What is masked in every error a client sees or a run record keeps.
    pub secrets: secrets::Secrets,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// Every route.
pub fn router(state: AppState) -> Router {
    let limit = state.options.max_body_bytes;
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/prompts", get(library::list))
        .route("/v1/prompts/{name}", get(prompts::get))
        .route("/v1/prompts/{name}/render", post(prompts::render))
        .route("/v1/prompts/{name}/run", post(prompts::run))
        .route(
            "/v1/prompts/{name}/versions",
            get(library::versions).post(library::add),
        )
        .route(
            "/v1/prompts/{name}/versions/{version}",
            get(library::show_version),
        )
        .route(
            "/v1/prompts/{name}/versions/{version}/review",
            post(library::review),
        )
        .route("/v1/prompts/{name}/labels", get(library::labels))
        .route(
            "/v1/prompts/{name}/labels/{label}",
            put(library::move_label),
        )
        .route(
            "/v1/prompts/{name}/labels/{label}/rollback",
            post(library::rollback),
        )
        .route(
            "/v1/prompts/{name}/labels/{label}/split",
            put(library::set_split).delete(library::end_split),
        )
        .route("/v1/prompts/{name}/diff", get(library::diff))
        .route("/v1/prompts/{name}/events", get(library::events))
        .route("/v1/prompts/{name}/runs", get(library::runs))
        .route("/v1/library/runs/{id}", get(library::run))
        .route("/v1/review", get(library::queue))
        .route("/v1/feedback", post(feedback::one))
        .route("/v1/feedback:batch", post(feedback::batch))
        .route("/v1/inferences/{id}", get(feedback::inference))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/runs", get(runs::list).post(runs::start))
        .route("/v1/runs/{id}", get(runs::show).delete(runs::cancel))
        .route("/v1/runs/{id}/events", get(runs::events))
        .route("/v1/runs/{id}/resume", post(runs::resume))
        .route("/v1/webhooks/deliveries", get(ops::deliveries))
        .route("/v1/agent", get(agent::show))
        .route("/v1/agent/pass", post(agent::pass))
        .route("/v1/tokens", get(ops::tokens).post(ops::create_token))
        .route(
            "/v1/tokens/{name}",
            axum::routing::delete(ops::revoke_token),
        )
        .route("/v1/tasks", get(runs::tasks))
        .merge(console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            secrets::scrub,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), origin::guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "path",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Count and time every request, and bound how long it may take.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response =
        match tokio::time::timeout(state.options.request_timeout, next.run(request)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {} s ([server] request_timeout_secs)",
                    state.options.request_timeout.as_secs()
                ),
            )
            .into_response(),
        };
    let took = started.elapsed();
    let labels = RouteLabels {
        route: route.clone(),
    };
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if let Some(gateway::ModelTime(model)) = response.extensions().get::<gateway::ModelTime>() {
        state
            .metrics
            .overhead
            .get_or_create(&labels)
            .observe(took.saturating_sub(*model).as_secs_f64());
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Ask it to stop: it stops accepting, finishes in-flight requests, flushes the log.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until it has stopped (after [`Running::shutdown`], or on a fatal error).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Config(format!("the server task failed: {e}"))),
        }
    }
}

/// Open the library the engine is configured with, bind, and serve until shut down.
pub async fn start(engine: Engine, options: ServerOptions) -> Result<Running, ServerError> {
    if options.insecure_local && !options.listen.ip().is_loopback() {
        return Err(ServerError::Config(format!(
            "--insecure-local serves without tokens, so only on a loopback address; {} is not one",
            options.listen
        )));
    }
    let path = engine
        .library_path()
        .ok_or_else(|| ServerError::Config("the server needs a library (not --no-library)".into()))?
        .to_path_buf();
    let library = engine
        .library()
        .await?
        .ok_or_else(|| ServerError::Config("the server needs a library".into()))?;
    let service = metaprompt_registry::open_service_with(&path, options.log_sync).await?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let runs_dir = options
        .runs_dir
        .clone()
        .unwrap_or_else(|| runs::default_dir(&path));
    let access = access::Access::new(&options.task_roots, options.allow_model_paths)
        .map_err(|e| ServerError::Config(format!("[server] task_roots: {e}")))?;
    let secrets = secrets::Secrets::from_env(engine.config(), &options.webhooks, std::env::vars());
    let webhooks =
        webhooks::Webhooks::start(&options.webhooks, library.clone(), service.clone(), |var| {
            std::env::var(var).ok()
        })
        .map_err(ServerError::Config)?;
    let runs = runs::Runs::open(runs_dir.clone(), &engine, webhooks.clone(), secrets.clone())
        .await
        .map_err(|e| ServerError::Config(format!("runs directory {}: {e}", runs_dir.display())))?;
    let metrics = Metrics::new();
    let (recorder, writer) = Recorder::start(service.clone(), metrics.clone());
    let auth = if options.insecure_local {
        Auth::Open
    } else {
        Auth::Tokens(TokenCache::new(service.clone()))
    };
    let agent_settings =
        metaprompt_agent::Settings::load(engine.config()).map_err(|e| e.to_string());
    if let (Some(_), Err(e)) = (options.agent_interval, &agent_settings) {
        return Err(ServerError::Config(e.clone()));
    }
    let state = AppState {
        inner: Arc::new(Shared {
            agent_settings,
            agent_turn: tokio::sync::Mutex::new(()),
            agent_progress: agent::AgentProgress::default(),
            engine,
            resolver: Resolver::new(library.clone()),
            library,
            service: service.clone(),
            recorder,
            auth,
            metrics,
            runs,
            webhooks,
            access,
            hosts: origin::Hosts::new(&options.hosts),
            secrets,
            options: options.clone(),
        }),
    };
    let shutdown = CancellationToken::new();
    let retention = options.retention.map(|keep| {
        let service = service.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { prune_loop(service, keep, stop).await })
    });
    let agent = options.agent_interval.map(|every| {
        let state = state.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { agent::run_loop(state, every, stop).await })
    });
    let app = router(state);
    let stop = shutdown.clone();
    let limits = listen::Limits {
        header_read_timeout: options.header_read_timeout,
        idle_timeout: options.idle_timeout,
        max_connections: options.max_connections,
    };
    let task = tokio::spawn(async move {
        // TCP_NODELAY, timeouts, the connection cap and the graceful stop: see `listen`.
        listen::serve(listener, app, limits, async move { stop.cancelled().await }).await;
        // Every handler (and its recorder clone) is gone once serve returns: the writer drains
        // what is queued and stops.
        let _ = writer.await;
        if let Some(r) = retention {
            r.abort();
        }
        if let Some(a) = agent {
            a.abort();
        }
        service.close().await;
        Ok(())
    });
    tracing::info!(%addr, "serving");
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

async fn prune_loop(service: Arc<dyn ServiceStore>, keep: Duration, stop: CancellationToken) {
    loop {
        let cut = chrono::Utc::now()
            - chrono::Duration::from_std(keep).unwrap_or_else(|_| chrono::Duration::days(36500));
        match service.prune(cut).await {
            Ok(p) if p.inferences + p.feedback > 0 => {
                tracing::info!(
                    inferences = p.inferences,
                    feedback = p.feedback,
                    "retention: pruned"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention: cannot prune"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
