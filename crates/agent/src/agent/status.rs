//! What `agent status` and `GET /v1/agent` show: each slice's outcomes, the cases, the day's
//! spend.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use metaprompt_registry::service::{Feedback, Inference, InferenceQuery, ServiceStore};
use serde::Serialize;

use crate::case::Case;
use crate::monitor::{Finding, Shortfall, Slice, SliceReport, detect, report, shortfalls};

use super::*;

/// One slice as `agent status` and `GET /v1/agent` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SliceStatus {
    pub prompt: String,
    pub slice: Slice,
    pub n: u64,
    pub mean: Option<f64>,
    /// 95% interval of the mean.
    pub low: f64,
    pub high: f64,
    pub baseline_n: u64,
    pub baseline_mean: Option<f64>,
    pub rest_mean: Option<f64>,
    /// Every call in the current window, scored or not.
    pub calls: u64,
    /// Calls that failed (no output).
    pub error_rate: f64,
    pub mean_latency_ms: f64,
    /// `None` when some call's cost is unknown (an unpriced model).
    pub cost_per_call_usd: Option<f64>,
}

/// Calls, failures, latency and cost of one slice over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Ops {
    calls: u64,
    errors: u64,
    latency_ms: f64,
    cost: Option<f64>,
}

/// [`Ops`] per prompt and slice of the inferences in `[since, until)`.
fn ops(
    inferences: &[Inference],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> BTreeMap<(String, Slice), Ops> {
    let mut m: BTreeMap<(String, Slice), Ops> = BTreeMap::new();
    for i in inferences
        .iter()
        .filter(|i| (since..until).contains(&i.created_at))
    {
        let slices = std::iter::once(Slice::All).chain(i.tags.iter().map(|(k, v)| Slice::Tag {
            key: k.clone(),
            value: v.clone(),
        }));
        for s in slices {
            let o = m.entry((i.prompt.clone(), s)).or_insert(Ops {
                cost: Some(0.0),
                ..Ops::default()
            });
            o.calls += 1;
            o.errors += u64::from(i.error.is_some());
            o.latency_ms += i.latency_ms;
            o.cost = o.cost.zip(i.cost_usd).map(|(a, b)| a + b);
        }
    }
    m
}

/// What the agent sees now, without acting: every slice with its interval, the findings, and
/// the stored cases.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub window_secs: i64,
    pub min_n: u64,
    pub fdr: f64,
    pub inferences: usize,
    pub scored: usize,
    pub slices: Vec<SliceStatus>,
    #[serde(skip)]
    pub reports: Vec<SliceReport>,
    pub findings: Vec<Finding>,
    /// The slices no test could look at, with their counts and what they need.
    pub untested: Vec<Shortfall>,
    pub cases: Vec<Case>,
}

/// Read-only: the current windows' slices and findings, and the cases (of `prompt`, or all).
pub async fn status(
    service: &dyn ServiceStore,
    settings: &Settings,
    prompt: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Status, AgentError> {
    let query = InferenceQuery {
        prompt: None,
        since: Some(status_since(settings, now)),
        until: Some(now),
        limit: None,
    };
    let inferences = service.inferences(&query).await?;
    let feedback = service.feedback_for(&query).await?;
    status_of(service, settings, prompt, now, &inferences, &feedback).await
}

/// Where [`status`] reads its records: every prompt's, over the two windows ending at `now`.
pub fn status_since(settings: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
    now - settings.policy.window - settings.policy.window
}

/// [`status`] over records the caller already read (of every prompt, from
/// [`status_since`] or earlier; what lies outside the two windows is left out).
pub async fn status_of(
    service: &dyn ServiceStore,
    settings: &Settings,
    prompt: Option<&str>,
    now: DateTime<Utc>,
    inferences: &[Inference],
    feedback: &[Feedback],
) -> Result<Status, AgentError> {
    let policy = settings.policy;
    let start = status_since(settings, now);
    let inferences: Vec<Inference> = inferences
        .iter()
        .filter(|i| i.created_at >= start && i.created_at < now)
        .cloned()
        .collect();
    let outcomes = outcomes(&inferences, feedback);
    let reports: Vec<SliceReport> = report(&outcomes, now, &policy);
    let untested = shortfalls(&reports, &policy)
        .into_iter()
        .filter(|s| prompt.is_none_or(|p| p == s.prompt))
        .collect();
    let findings = detect(&reports, &policy)
        .into_iter()
        .filter(|f| prompt.is_none_or(|p| p == f.prompt))
        .collect();
    let reports: Vec<SliceReport> = reports
        .into_iter()
        .filter(|r| prompt.is_none_or(|p| p == r.prompt))
        .collect();
    let ops = ops(&inferences, now - policy.window, now);
    let slices = reports
        .iter()
        .map(|r| {
            let (low, high) = r.current.interval();
            let o = ops
                .get(&(r.prompt.clone(), r.slice.clone()))
                .copied()
                .unwrap_or_default();
            let per = |x: f64| x / o.calls.max(1) as f64;
            SliceStatus {
                calls: o.calls,
                error_rate: per(o.errors as f64),
                mean_latency_ms: per(o.latency_ms),
                cost_per_call_usd: o.cost.map(per),
                prompt: r.prompt.clone(),
                slice: r.slice.clone(),
                n: r.current.n,
                mean: r.current.mean(),
                low,
                high,
                baseline_n: r.baseline.n,
                baseline_mean: r.baseline.mean(),
                rest_mean: r.rest.mean(),
            }
        })
        .collect();
    let cases = service
        .cases(prompt)
        .await?
        .iter()
        .map(|r| Case::from_row(r).map_err(AgentError::Data))
        .collect::<Result<_, _>>()?;
    Ok(Status {
        at: now,
        window_secs: policy.window.num_seconds(),
        min_n: policy.min_n,
        fdr: policy.fdr,
        inferences: inferences.len(),
        scored: outcomes.len(),
        slices,
        reports,
        findings,
        untested,
        cases,
    })
}
