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
//! {"id": "evt_…", "type": "review.decided", "at": "…", "data": {…}}
//! ```
//!
//! A delivery that fails (a connection error, a timeout, a non-2xx answer) is retried with
//! exponential backoff (0.5 s, 1 s, 2 s, … up to [`ATTEMPTS`] attempts); every attempt is
//! logged in the library database (`GET /v1/webhooks/deliveries`). Deliveries run on their own
//! task: a slow receiver never slows a request.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use metaprompt_llm::config::WebhookConfig;
use metaprompt_registry::ServiceStore;
use metaprompt_registry::service::Delivery;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::gateway::new_id;

/// Attempts per delivery, the first included.
pub const ATTEMPTS: u32 = 6;

/// Every event type a hook may ask for.
pub const EVENTS: [&str; 5] = [
    "version.proposed",
    "review.decided",
    "label.moved",
    "split.changed",
    "run.finished",
];

/// A configured hook with its secret read.
#[derive(Debug, Clone)]
struct Hook {
    url: String,
    secret: Vec<u8>,
    events: Vec<String>,
}

/// Sends events to the configured hooks (cheap to clone; does nothing without hooks).
#[derive(Debug, Clone)]
pub struct Webhooks {
    queue: Option<mpsc::UnboundedSender<(String, Value)>>,
}

impl Webhooks {
    /// Check the hooks (their secrets come from environment variables) and start the sender.
    pub fn start(
        configs: &[WebhookConfig],
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
                EVENTS.iter().map(|e| e.to_string()).collect()
            } else {
                for e in &c.events {
                    if !EVENTS.contains(&e.as_str()) {
                        return Err(format!(
                            "{at}: unknown event `{e}` (known: {})",
                            EVENTS.join(", ")
                        ));
                    }
                }
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
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_all(hooks, service, rx));
        Ok(Self { queue: Some(tx) })
    }

    /// Queue an event for every hook that wants it.
    pub fn emit(&self, kind: &str, data: Value) {
        if let Some(q) = &self.queue {
            let _ = q.send((kind.to_string(), data));
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

async fn send_all(
    hooks: Vec<Hook>,
    service: Arc<dyn ServiceStore>,
    mut rx: mpsc::UnboundedReceiver<(String, Value)>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot build the HTTP client");
            return;
        }
    };
    while let Some((kind, data)) = rx.recv().await {
        let id = new_id("evt");
        let body = json!({"id": id, "type": kind, "at": Utc::now(), "data": data}).to_string();
        for hook in hooks.iter().filter(|h| h.events.contains(&kind)) {
            // Each delivery retries on its own, so one dead receiver delays no other.
            tokio::spawn(deliver(
                client.clone(),
                hook.clone(),
                service.clone(),
                id.clone(),
                kind.clone(),
                body.clone(),
            ));
        }
    }
}

async fn deliver(
    client: reqwest::Client,
    hook: Hook,
    service: Arc<dyn ServiceStore>,
    id: String,
    kind: String,
    body: String,
) {
    let sig = signature(&hook.secret, body.as_bytes());
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-metaprompt-event", &kind)
            .header("x-metaprompt-delivery", &id)
            .header("x-metaprompt-signature", &sig)
            .body(body.clone())
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
        let logged = service
            .record_delivery(&Delivery {
                event_id: id.clone(),
                event: kind.clone(),
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
        tracing::warn!(url = %hook.url, event = %kind, attempt, error = ?error, "webhook delivery failed");
        if attempt < ATTEMPTS {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
