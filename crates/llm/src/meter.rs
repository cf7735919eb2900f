//! Usage accounting per layer: a [`Metered`] provider counts every call that passes through it
//! into a shared [`Meter`] (calls, cache hits, failures, tokens, cost, model time).
//!
//! The meta layer and the execution layer each get their own meter, so a run can report what
//! writing the prompt cost apart from what running it cost. Wrapping is cheap and transparent:
//! a `Metered` provider is a [`Provider`] like any other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A shared, cloneable counter.
#[derive(Debug, Clone)]
pub struct Meter(Arc<Mutex<LayerUsage>>);

impl Default for Meter {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(LayerUsage::default())))
    }
}

impl Meter {
    pub fn new() -> Self {
        Self::default()
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> LayerUsage {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LayerUsage> {
        // A poisoned counter still holds valid numbers.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn response(&self, r: &Result<Response, LlmError>) {
        match r {
            Ok(r) => self.lock().add(&r.usage, r.cost_usd, r.latency, r.cached),
            Err(_) => self.lock().failed += 1,
        }
    }

    fn scores(&self, r: &Result<LabelScores, LlmError>) {
        match r {
            Ok(s) => self.lock().add(&s.usage, s.cost_usd, s.latency, s.cached),
            Err(_) => self.lock().failed += 1,
        }
    }
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
        self.meter.response(&r);
        r
    }

    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        let rs = self.inner.complete_batch(requests).await;
        rs.iter().for_each(|r| self.meter.response(r));
        rs
    }

    fn can_score(&self) -> bool {
        self.inner.can_score()
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        let rs = self.inner.score(requests).await;
        rs.iter().for_each(|r| self.meter.scores(r));
        rs
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
}
