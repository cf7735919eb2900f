//! Usage accounting per layer: a [`Metered`] provider counts every call that passes through it
//! into a shared [`Meter`] (calls, cache hits, failures, tokens, cost, model time).
//!
//! The meta layer and the execution layer each get their own meter, so a run can report what
//! writing the prompt cost apart from what running it cost. Wrapping is cheap and transparent:
//! a `Metered` provider is a [`Provider`] like any other.
//!
//! A meter can also keep a [`CallLog`]: one JSON line per call (time, layer, model, kind,
//! tokens, cost, cache hit, latency, error), appended to a file as each call finishes, so a run
//! directory holds every call's usage and a crash loses none of the lines already written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::provider::Provider;
use crate::types::{LabelScores, Request, Response, ScoreRequest, Usage};

/// What one layer spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerUsage {
    /// Answered requests (cache hits included).
    pub calls: u64,
    /// Of `calls`, answered from the response cache (no tokens billed).
    pub cached: u64,
    /// Requests that failed after retries.
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when some call's price is unknown.
    pub cost_usd: Option<f64>,
    /// Sum of the calls' latencies (model time, not wall time: calls may overlap).
    #[serde(serialize_with = "secs", deserialize_with = "from_secs")]
    pub model_time: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn from_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    Ok(Duration::from_secs_f64(s.max(0.0)))
}

/// Nothing spent yet: zero calls cost $0 (not an unknown cost).
impl Default for LayerUsage {
    fn default() -> Self {
        Self {
            calls: 0,
            cached: 0,
            failed: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: Some(0.0),
            model_time: Duration::ZERO,
        }
    }
}

impl LayerUsage {
    fn add(&mut self, usage: &Usage, cost: Option<f64>, latency: Duration, cached: bool) {
        self.calls += 1;
        self.cached += u64::from(cached);
        self.input_tokens += usage.input_tokens;
        self.output_tokens += usage.output_tokens;
        self.cost_usd = self.cost_usd.zip(cost).map(|(a, b)| a + b);
        self.model_time += latency;
    }

    /// Everything in `other` added to this.
    pub fn merge(&mut self, other: &LayerUsage) {
        self.calls += other.calls;
        self.cached += other.cached;
        self.failed += other.failed;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd = self.cost_usd.zip(other.cost_usd).map(|(a, b)| a + b);
        self.model_time += other.model_time;
    }
}

/// One line of a [`CallLog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// When the call finished, in seconds since the Unix epoch.
    pub at: f64,
    /// The layer the call belongs to (`meta`, `execution`).
    pub layer: String,
    /// The canonical `provider:model` name.
    pub model: String,
    /// `complete` (a generation) or `score` (label log-likelihoods).
    pub kind: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model's price is unknown or the call failed.
    pub cost_usd: Option<f64>,
    /// Answered from the response cache.
    pub cached: bool,
    pub latency_s: f64,
    /// Why the call failed (after retries); absent for answered calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An append-only JSON-lines file of [`CallRecord`]s, shared by the meters that write to it.
///
/// Each record is written with one `write` on a file opened for appending, so lines from
/// several meters (or a resumed run appending to an earlier log) never interleave, and a killed
/// process leaves every finished line intact. A failed write is reported once (as a warning) and
/// never fails the call it describes.
#[derive(Debug, Clone)]
pub struct CallLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
    warned: Arc<AtomicBool>,
}

impl CallLog {
    /// Opens (creating if needed) `path` for appending.
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
            warned: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, record: &CallRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => return self.warn(&e.to_string()),
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line) {
            self.warn(&e.to_string());
        }
    }

    fn warn(&self, error: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot write the call log {}: {error}", self.path.display());
        }
    }

    /// Reads a log back; a line that is not a record is an error naming the file and line.
    pub fn read(path: &Path) -> Result<Vec<CallRecord>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| format!("{}:{}: not a call record: {e}", path.display(), i + 1))
            })
            .collect()
    }
}

/// A shared, cloneable counter, optionally also writing every call to a [`CallLog`].
#[derive(Debug, Clone)]
pub struct Meter {
    usage: Arc<Mutex<LayerUsage>>,
    log: Option<(CallLog, Arc<str>)>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            usage: Arc::new(Mutex::new(LayerUsage::default())),
            log: None,
        }
    }
}

impl Meter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A meter that also appends each call to `log`, marked with `layer`.
    pub fn logged(log: CallLog, layer: &str) -> Self {
        Self {
            log: Some((log, layer.into())),
            ..Self::default()
        }
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> LayerUsage {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LayerUsage> {
        // A poisoned counter still holds valid numbers.
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, model: &str, kind: &str, outcome: Result<Call<'_>, &LlmError>) {
        match outcome {
            Ok(c) => self.lock().add(c.usage, c.cost, c.latency, c.cached),
            Err(_) => self.lock().failed += 1,
        }
        let Some((log, layer)) = &self.log else {
            return;
        };
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        // A failed call: no tokens, no cost, the error.
        let mut record = CallRecord {
            at,
            layer: layer.to_string(),
            model: model.to_string(),
            kind: kind.to_string(),
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: None,
            cached: false,
            latency_s: 0.0,
            error: None,
        };
        match outcome {
            Ok(c) => {
                record.input_tokens = c.usage.input_tokens;
                record.output_tokens = c.usage.output_tokens;
                record.cost_usd = c.cost;
                record.cached = c.cached;
                record.latency_s = c.latency.as_secs_f64();
            }
            // Errors of this crate's providers are redacted where they are made; this also
            // catches credential-shaped text in errors of providers from elsewhere.
            Err(e) => record.error = Some(crate::redact::redact_tokens(&e.to_string())),
        }
        log.write(&record);
    }

    fn response(&self, model: &str, r: &Result<Response, LlmError>) {
        let call = r.as_ref().map(|r| Call {
            usage: &r.usage,
            cost: r.cost_usd,
            latency: r.latency,
            cached: r.cached,
        });
        self.record(model, "complete", call);
    }

    fn scores(&self, model: &str, r: &Result<LabelScores, LlmError>) {
        let call = r.as_ref().map(|s| Call {
            usage: &s.usage,
            cost: s.cost_usd,
            latency: s.latency,
            cached: s.cached,
        });
        self.record(model, "score", call);
    }
}

/// What an answered call reports, whatever its kind.
#[derive(Clone, Copy)]
struct Call<'a> {
    usage: &'a Usage,
    cost: Option<f64>,
    latency: Duration,
    cached: bool,
}

/// A provider whose calls are counted into a [`Meter`].
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn Provider>,
    meter: Meter,
}

impl Metered {
    pub fn wrap(inner: Arc<dyn Provider>, meter: Meter) -> Arc<dyn Provider> {
        Arc::new(Self { inner, meter })
    }
}

#[async_trait]
impl Provider for Metered {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let r = self.inner.complete(request).await;
        self.meter.response(&self.inner.info().name, &r);
        r
    }

    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        let rs = self.inner.complete_batch(requests).await;
        rs.iter()
            .for_each(|r| self.meter.response(&self.inner.info().name, r));
        rs
    }

    async fn complete_live(
        &self,
        request: &Request,
        text: &crate::TextSink,
    ) -> Result<Response, LlmError> {
        let r = self.inner.complete_live(request, text).await;
        self.meter.response(&self.inner.info().name, &r);
        r
    }

    fn can_score(&self) -> bool {
        self.inner.can_score()
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        let rs = self.inner.score(requests).await;
        rs.iter()
            .for_each(|r| self.meter.scores(&self.inner.info().name, r));
        rs
    }

    fn can_embed(&self) -> bool {
        self.inner.can_embed()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.inner.embed(texts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ScriptedProvider;

    #[tokio::test]
    async fn counts_calls_tokens_cost_and_failures() {
        let inner = Arc::new(
            ScriptedProvider::new("m")
                .reply("one two")
                .fail(LlmError::Config("boom".into()))
                .reply("three"),
        );
        let meter = Meter::new();
        let p = Metered::wrap(inner, meter.clone());
        let r = p.complete(&Request::text("a b c")).await;
        assert!(r.is_ok());
        let batch = p
            .complete_batch(&[Request::text("x"), Request::text("y z")])
            .await;
        assert!(batch[0].is_err() && batch[1].is_ok());
        let u = meter.snapshot();
        assert_eq!(u.calls, 2);
        assert_eq!(u.failed, 1);
        assert_eq!(u.input_tokens, 3 + 2);
        assert_eq!(u.output_tokens, 2 + 1);
        // $1 / $2 per million tokens in / out.
        let expected = (5.0 * 1.0 + 3.0 * 2.0) / 1e6;
        assert!((u.cost_usd.unwrap() - expected).abs() < 1e-12);
        let mut total = LayerUsage::default();
        total.merge(&u);
        total.merge(&u);
        assert_eq!(total.calls, 4);
    }

    #[tokio::test]
    async fn call_log_has_one_line_per_call_and_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("calls.jsonl");
        let log = CallLog::append(&path).expect("open log");
        let meta = Meter::logged(log.clone(), "meta");
        let exec = Meter::logged(log, "execution");
        let m = Metered::wrap(Arc::new(ScriptedProvider::new("m").reply("one two")), meta);
        let e = Metered::wrap(
            Arc::new(
                ScriptedProvider::new("e")
                    .reply("x")
                    .fail(LlmError::Config("boom".into())),
            ),
            exec.clone(),
        );
        m.complete(&Request::text("a b c")).await.expect("answer");
        let _ = e
            .complete_batch(&[Request::text("y"), Request::text("z")])
            .await;
        let records = CallLog::read(&path).expect("read");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].layer, "meta");
        assert_eq!(records[0].model, "scripted:m");
        assert_eq!(records[0].kind, "complete");
        assert_eq!((records[0].input_tokens, records[0].output_tokens), (3, 2));
        assert!(records[0].error.is_none() && !records[0].cached);
        assert_eq!(records[1].layer, "execution");
        assert!(
            records[2]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("boom"))
        );
        // The log agrees with the meter.
        let u = exec.snapshot();
        assert_eq!(u.calls + u.failed, 2);
        // Reopening appends (a resumed run keeps the earlier lines).
        let again = Meter::logged(CallLog::append(&path).expect("reopen"), "meta");
        let m = Metered::wrap(Arc::new(ScriptedProvider::new("m").reply("w")), again);
        m.complete(&Request::text("q")).await.expect("answer");
        assert_eq!(CallLog::read(&path).expect("read").len(), 4);
        // A line that is not a record names the file and line.
        std::fs::write(&path, "{}\n").expect("write");
        let err = CallLog::read(&path).unwrap_err();
        assert!(err.contains("calls.jsonl:1"), "{err}");
    }
}
