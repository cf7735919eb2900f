//! Webhooks: when a version is proposed, a review is decided, a label or a split moves, or a
//! run ends, every configured URL that wants the event gets a POST:
//!
//! ```text
//! POST <url>
//! content-type: application/json
//! x-metaprompt-event: review.decided
//! x-metaprompt-delivery: evt_…            (the same on every retry: deduplicate on it)
//! x-metaprompt-signature: sha256=<hex HMAC-SHA256 of the body with the hook's secret>
//!
//! {"id": "evt_…", "type": WebhookEvent::ReviewDecided, "at": "…", "data": {…}}
//! ```
//!
//! The library's events come from its audit trail, not from the request handlers: a follower
//! reads every event after the last one it handled ([`Store::events_after`], every [`POLL`]),
//! so what the CLI, the agent or another server wrote is delivered like what this server did.
//! How far it got is kept in the service database ([`WebhookLog::webhook_cursor`](metaprompt_registry::service::WebhookLog::webhook_cursor)): it moves
//! past an event only once every delivery of it is done, so a restart (even after kill -9)
//! resends what was in flight, with the same delivery id, and delivers what was written while
//! no server ran. A server started with hooks for the first time begins at the newest event
//! (history is not replayed). `run.finished` is this server's own (runs over HTTP) and is sent
//! from memory.
//!
//! A delivery that fails (a connection error, a timeout, a non-2xx answer) is retried with
//! exponential backoff (0.5 s, 1 s, 2 s, … up to [`ATTEMPTS`] attempts); every attempt is
//! logged in the library database (`GET /v1/webhooks/deliveries`). Deliveries run on their own
//! tasks: a slow receiver never slows a request or another delivery.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use metaprompt_registry::service::Delivery;
use metaprompt_registry::{Event, EventKind, Origin, ServiceStore, Store, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::WebhookConfig;
use crate::gateway::new_id;

/// Attempts per delivery, the first included.
pub const ATTEMPTS: u32 = 6;

/// How often the follower looks for new library events.
pub const POLL: Duration = Duration::from_millis(250);

/// Library events read at a time.
const PAGE: usize = 200;

/// An event type a hook may ask for (`events = [...]` of a `[[server.webhooks]]` entry), as
/// the `type` of a delivery and its `x-metaprompt-event` header spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A machine (an optimizer, the agent) added a version, waiting for review.
    #[serde(rename = "version.proposed")]
    VersionProposed,
    #[serde(rename = "review.decided")]
    ReviewDecided,
    /// A label moved (a rollback too).
    #[serde(rename = "label.moved")]
    LabelMoved,
    /// A traffic split was set or cleared.
    #[serde(rename = "split.changed")]
    SplitChanged,
    /// A run started over HTTP ended (this server's own event).
    #[serde(rename = "run.finished")]
    RunFinished,
}

impl WebhookEvent {
    /// Every event type: what a hook with no `events` gets.
    pub const ALL: [Self; 5] = [
        Self::VersionProposed,
        Self::ReviewDecided,
        Self::LabelMoved,
        Self::SplitChanged,
        Self::RunFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionProposed => "version.proposed",
            Self::ReviewDecided => "review.decided",
            Self::LabelMoved => "label.moved",
            Self::SplitChanged => "split.changed",
            Self::RunFinished => "run.finished",
        }
    }
}

/// A configured hook with its secret read.
#[derive(Debug, Clone)]
struct Hook {
    url: String,
    secret: Vec<u8>,
    events: Vec<WebhookEvent>,
}

/// Sends events to the configured hooks (cheap to clone; does nothing without hooks).
#[derive(Debug, Clone)]
pub struct Webhooks {
    queue: Option<mpsc::UnboundedSender<(WebhookEvent, Value)>>,
}

impl Webhooks {
    /// Check the hooks (their secrets come from environment variables), start following the
    /// library's events and the sender of this server's own.
    pub fn start(
        configs: &[WebhookConfig],
        library: Arc<dyn Store>,
        service: Arc<dyn ServiceStore>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut hooks = Vec::new();
        for (k, c) in configs.iter().enumerate() {
            let at = format!("[[server.webhooks]] #{}", k + 1);
            let url = reqwest::Url::parse(&c.url)
                .map_err(|e| format!("{at}: url = \"{}\": {e}", c.url))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{at}: url must be http or https"));
            }
            let secret = env(&c.secret_env)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{at}: the environment variable {} (secret_env) holds no secret",
                        c.secret_env
                    )
                })?;
            let events = if c.events.is_empty() {
                WebhookEvent::ALL.to_vec()
            } else {
                c.events.clone()
            };
            hooks.push(Hook {
                url: c.url.clone(),
                secret: secret.into_bytes(),
                events,
            });
        }
        if hooks.is_empty() {
            return Ok(Self { queue: None });
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))?;
        let sender = Sender {
            hooks: Arc::new(hooks),
            client,
            service,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_own(sender.clone(), rx));
        tokio::spawn(follow(sender, library));
        Ok(Self { queue: Some(tx) })
    }

    /// Queue one of this server's own events (`run.finished`) for every hook that wants it.
    /// Library changes need no call: the follower sees them in the audit trail.
    pub fn emit(&self, kind: WebhookEvent, data: Value) {
        if let Some(q) = &self.queue {
            let _ = q.send((kind, data));
        }
    }
}

/// The signature header's value for a body.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What every delivery needs.
#[derive(Debug, Clone)]
struct Sender {
    hooks: Arc<Vec<Hook>>,
    client: reqwest::Client,
    service: Arc<dyn ServiceStore>,
}

impl Sender {
    /// Start one delivery per hook that wants `kind`; each calls `done` when it is over
    /// (delivered or given up). Returns how many started.
    fn send(
        &self,
        id: &str,
        kind: WebhookEvent,
        at: chrono::DateTime<Utc>,
        data: Value,
        done: impl Fn() + Clone + Send + 'static,
    ) -> usize {
        let body = json!({"id": id, "type": kind.as_str(), "at": at, "data": data}).to_string();
        let mut started = 0;
        for hook in self.hooks.iter().filter(|h| h.events.contains(&kind)) {
            let (me, hook, id, body) = (self.clone(), hook.clone(), id.to_string(), body.clone());
            let done = done.clone();
            tokio::spawn(async move {
                me.deliver(&hook, &id, kind, &body).await;
                done();
            });
            started += 1;
        }
        started
    }

    async fn deliver(&self, hook: &Hook, id: &str, kind: WebhookEvent, body: &str) {
        let sig = signature(&hook.secret, body.as_bytes());
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-metaprompt-event", kind.as_str())
                .header("x-metaprompt-delivery", id)
                .header("x-metaprompt-signature", &sig)
                .body(body.to_string())
                .send()
                .await;
            let (status, error) = match sent {
                Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                Ok(r) => (
                    Some(r.status().as_u16()),
                    Some(format!("answered {}", r.status())),
                ),
                Err(e) => (
                    None,
                    Some(metaprompt_llm::redact::redact_tokens(&e.to_string())),
                ),
            };
            let ok = error.is_none();
            let logged = self
                .service
                .record_delivery(&Delivery {
                    event_id: id.to_string(),
                    event: kind.as_str().to_string(),
                    url: hook.url.clone(),
                    attempt,
                    status,
                    error: error.clone(),
                    at: Utc::now(),
                })
                .await;
            if let Err(e) = logged {
                tracing::warn!(error = %e, "webhooks: cannot log a delivery");
            }
            if ok {
                return;
            }
            tracing::warn!(url = %hook.url, event = kind.as_str(), attempt, error = ?error, "webhook delivery failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn send_own(sender: Sender, mut rx: mpsc::UnboundedReceiver<(WebhookEvent, Value)>) {
    while let Some((kind, data)) = rx.recv().await {
        sender.send(&new_id("evt"), kind, Utc::now(), data, || {});
    }
}

/// Where the follower stands: the last event read, and the events whose deliveries are still
/// running (with how many are left of each).
#[derive(Debug, Default)]
struct Progress {
    read: i64,
    open: std::collections::BTreeMap<i64, usize>,
}

impl Progress {
    /// The event up to which everything is done.
    fn done_up_to(&self) -> i64 {
        self.open.keys().next().map_or(self.read, |first| first - 1)
    }
}

/// Follow the library's audit trail and deliver what the hooks want, forever.
async fn follow(sender: Sender, library: Arc<dyn Store>) {
    let start = loop {
        match start_at(&*sender.service, &*library).await {
            Ok(at) => break at,
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot read where to start"),
        }
        tokio::time::sleep(POLL * 4).await;
    };
    let progress = Arc::new(std::sync::Mutex::new(Progress {
        read: start,
        ..Progress::default()
    }));
    let mut saved = start;
    loop {
        let read = progress.lock().map(|p| p.read).unwrap_or(start);
        match library.events_after(read, PAGE).await {
            Ok(events) => {
                let mut versions = VersionCache::default();
                for e in &events {
                    if let Some((kind, data)) = describe(e, &*library, &mut versions).await {
                        let id = format!("evt_{}_{}", e.id, e.at.timestamp_millis());
                        let (p, event) = (progress.clone(), e.id);
                        let done = move || {
                            if let Ok(mut p) = p.lock()
                                && let Some(left) = p.open.get_mut(&event)
                            {
                                *left -= 1;
                                if *left == 0 {
                                    p.open.remove(&event);
                                }
                            }
                        };
                        // Counted before any delivery can finish.
                        let wanted = sender
                            .hooks
                            .iter()
                            .filter(|h| h.events.contains(&kind))
                            .count();
                        if wanted > 0
                            && let Ok(mut p) = progress.lock()
                        {
                            p.open.insert(e.id, wanted);
                        }
                        sender.send(&id, kind, e.at, data, done);
                    }
                    if let Ok(mut p) = progress.lock() {
                        p.read = e.id;
                    }
                }
                if events.len() == PAGE {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot read the library's events"),
        }
        let done = progress.lock().map(|p| p.done_up_to()).unwrap_or(saved);
        if done != saved {
            match sender.service.set_webhook_cursor(done).await {
                Ok(()) => saved = done,
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot store the cursor"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The stored cursor, or (first start) the newest event, stored.
async fn start_at(service: &dyn ServiceStore, library: &dyn Store) -> Result<i64, String> {
    if let Some(at) = service.webhook_cursor().await.map_err(|e| e.to_string())? {
        return Ok(at);
    }
    let at = library.last_event_id().await.map_err(|e| e.to_string())?;
    service
        .set_webhook_cursor(at)
        .await
        .map_err(|e| e.to_string())?;
    Ok(at)
}

/// Versions by prompt and hash, read once per page of events.
#[derive(Debug, Default)]
struct VersionCache(std::collections::HashMap<String, Vec<Version>>);

impl VersionCache {
    /// The version as JSON, or its bare hash when it cannot be read.
    async fn get(&mut self, library: &dyn Store, prompt: &str, hash: Option<&str>) -> Value {
        let Some(hash) = hash else {
            return Value::Null;
        };
        if !self.0.contains_key(prompt) {
            match library.versions(prompt).await {
                Ok(v) => {
                    self.0.insert(prompt.to_string(), v);
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot read versions"),
            }
        }
        self.0
            .get(prompt)
            .and_then(|vs| vs.iter().find(|v| v.hash == hash))
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or_else(|| json!({"prompt": prompt, "hash": hash}))
    }
}

/// The webhook event a library event is, if any: its type and `data`.
async fn describe(
    e: &Event,
    library: &dyn Store,
    versions: &mut VersionCache,
) -> Option<(WebhookEvent, Value)> {
    let mut version = async |hash: Option<&str>| versions.get(library, &e.prompt, hash).await;
    let common = |mut data: Value| {
        data["prompt"] = json!(e.prompt);
        data["by"] = json!(e.actor);
        data["comment"] = json!(e.comment);
        data
    };
    Some(match e.kind {
        EventKind::Add => {
            // Machine-made versions start proposed (see the library's rules).
            let origin = Origin::parse(e.decision.as_deref().unwrap_or_default()).ok()?;
            if !origin.is_machine() {
                return None;
            }
            let v = version(e.hash.as_deref()).await;
            (
                WebhookEvent::VersionProposed,
                common(json!({ "version": v })),
            )
        }
        EventKind::Review => {
            let v = version(e.hash.as_deref()).await;
            (
                WebhookEvent::ReviewDecided,
                common(json!({"version": v, "decision": e.decision})),
            )
        }
        EventKind::Label | EventKind::Rollback => {
            let from = version(e.from_hash.as_deref()).await;
            let to = version(e.hash.as_deref()).await;
            let rollback = e.kind == EventKind::Rollback;
            (
                WebhookEvent::LabelMoved,
                common(json!({"label": e.label, "from": from, "to": to, "rollback": rollback})),
            )
        }
        EventKind::Split => {
            let split = match e.hash.as_deref() {
                None => Value::Null,
                Some(hash) => {
                    let weight: Option<f64> = e.decision.as_deref().and_then(|w| w.parse().ok());
                    json!({
                        "canary": version(Some(hash)).await,
                        "weight": weight,
                        "serving": version(e.from_hash.as_deref()).await,
                    })
                }
            };
            (
                WebhookEvent::SplitChanged,
                common(json!({"label": e.label, "split": split})),
            )
        }
        EventKind::Policy => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_spelled_alike_in_config_and_on_the_wire() {
        for e in WebhookEvent::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), json!(e.as_str()));
        }
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
