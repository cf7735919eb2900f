//! Runs (a running one updates live) and production health (outcomes over time per slice and
//! per version, the canary's comparison, the agent's findings and cases).

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use metaprompt_agent::stats::Rate;
use metaprompt_registry::service::{InferenceQuery, Role, ScoreBucket};
use serde::Deserialize;
use serde_json::Value;

use super::charts::{self, Axis, Series};
use super::pages::{as_seen, diff_texts, form, prompt_file, query, when};
use super::{Nav, PageError, PageResult, Session, check_form, encode, layout};
use crate::AppState;
use crate::error::{self, ApiError};
use crate::runs::{Kind, Record, RunEvent, Status};
use metaprompt_engine::{OptimizeResult, Progress, RoundStats};
use metaprompt_eval::stats::{Estimate, Paired};
use metaprompt_llm::LayerUsage;

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Running => "running",
        Status::Finished => "finished",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
        Status::Interrupted => "interrupted",
    }
}

/// The name of a run's task: the one its result names, else the `name` its task file gives,
/// else the file's folder or stem (never the literal `task` of `…/task.toml`).
fn task_name(r: &Record) -> String {
    if let Some(t) = r.result.as_ref().and_then(|v| v["task"].as_str()) {
        return t.to_string();
    }
    let q = r.request.get("request").unwrap_or(&r.request);
    let Some(task) = q["task"].as_str() else {
        return "?".into();
    };
    let path = std::path::Path::new(task);
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| t.get("name")?.as_str().map(String::from));
    if let Some(n) = named {
        return n;
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    match stem.as_deref() {
        Some("task") | None => path
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| task.to_string(), |p| p.to_string_lossy().into_owned()),
        Some(s) => s.to_string(),
    }
}

/// A finished optimization's candidates, counted as the CLI's summary counts them.
fn candidate_counts(r: &Record) -> Option<(usize, usize)> {
    if r.kind != Kind::Optimize {
        return None;
    }
    let o = optimize_result(r.result.as_ref()?).ok()?.outcome;
    Some((o.pool.len(), o.rejected.len()))
}

/// What a run is about, from its request.
fn subject(r: &Record) -> String {
    let q = r.request.get("request").unwrap_or(&r.request);
    let task = task_name(r);
    match q["algorithm"].as_str() {
        Some(a) => format!("{task} · {a}"),
        None => task,
    }
}

/// `GET /runs`
pub async fn runs(State(state): State<AppState>, session: Session) -> PageResult {
    let records = state.runs.records();
    let body = html! {
        h1 { "Runs" }
        p.note { "Evaluations and optimizations started over HTTP (" code { "POST /v1/runs" } "). Runs made from the command line are listed on their prompt's page." }
        @if records.is_empty() { p { "No runs yet." } } @else {
            div.scroll { table.runs {
                thead { tr { th scope="col" { "Run" } th scope="col" { "Kind" } th scope="col" { "Task" } th scope="col" { "Candidates" } th scope="col" { "Status" } th scope="col" { "By" } th scope="col" { "Started" } th scope="col" { "Finished" } } }
                tbody { @for r in &records { tr {
                    td { a href={ "/runs/" (encode(&r.id)) } { code { (r.id) } } }
                    td { (r.kind.as_str()) } td { (subject(r)) }
                    td.candidates { @match candidate_counts(r) { Some((n, k)) => { (charts::candidates(n, k)) } None => { span.note { "—" } } } }
                    td { span.badge.{ "s-" (status_name(r.status)) } { (status_name(r.status)) } }
                    td { (r.by) } td { (when(&r.started_at)) }
                    td { @if let Some(f) = &r.finished_at { (when(f)) } }
                } } }
            } }
        }
    };
    Ok(layout("Runs", Some(&session), Nav::Runs, body).into_response())
}

/// The rounds reported so far.
fn rounds(events: &[RunEvent]) -> Vec<&RoundStats> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Progress(Progress::Round { stats }) => Some(stats.as_ref()),
            _ => None,
        })
        .collect()
}

/// What the run is doing now: its latest step, as a line.
fn now_doing(events: &[RunEvent]) -> Option<String> {
    events.iter().rev().find_map(|e| match e {
        RunEvent::Progress(Progress::Evaluating { label, done, total }) => {
            Some(format!("evaluating {label} {done}/{total}"))
        }
        RunEvent::Progress(Progress::Step { text } | Progress::Begin { text }) => {
            Some(text.clone())
        }
        _ => None,
    })
}

/// The part of a run's page that changes while it runs (also `GET /runs/{id}/live`).
fn live_part(r: &Record, events: &[RunEvent]) -> Markup {
    let rounds = rounds(events);
    let evaluated = events.iter().filter_map(|e| match e {
        RunEvent::Progress(Progress::Evaluated { label, summary }) => Some((label, summary)),
        _ => None,
    });
    html! {
        p.state data-status=(status_name(r.status)) {
            span.badge.{ "s-" (status_name(r.status)) } { (status_name(r.status)) } " · "
            span #events { (events.len()) } (if events.len() == 1 { " event · " } else { " events · " })
            span #rounds { (rounds.len()) } (if rounds.len() == 1 { " round" } else { " rounds" })
            @if r.status == Status::Running { @if let Some(now) = now_doing(events) {
                " · now: " (now)
            } }
        }
        @if let Some(e) = &r.error { p.error role="alert" { (e) } }
        @if !rounds.is_empty() {
            div.scroll { table.rounds {
                thead { tr { th scope="col" { "round" } th scope="col" { "best" } th scope="col" { "mean" } th scope="col" { "proposed" } th scope="col" { "rejected" }
                    th scope="col" { "metric calls" } th scope="col" { "meta calls" } th scope="col" { "meta $" } th scope="col" { "execution $" } th scope="col" { "wall" } } }
                tbody { @for s in &rounds { tr {
                    td.num { (s.round) } td.num { (format!("{:.3}", s.best)) " " span.note { (s.best_id) } }
                    td.num { @if let Some(m) = s.mean { (format!("{m:.3}")) } }
                    td.num { (s.proposed) } td.num { (s.rejected) } td.num { (s.metric_calls) } td.num { (s.meta_calls) }
                    td.num { (charts::cost(s.meta_cost_usd, Some(s.meta_calls))) }
                    td.num { (charts::cost(s.execution_cost_usd, Some(s.metric_calls))) }
                    td.num { (format!("{:.1} s", s.wall_secs)) }
                } } }
            } }
            (charts::rounds(&rounds))
        }
        @for (label, s) in evaluated {
            p { "Evaluated " strong { (label) } ": " (format!("{:.3}", s.score.mean))
                " [" (format!("{:.3}", s.score.low)) ", " (format!("{:.3}", s.score.high)) "] on " (s.score.n) " examples"
                " · " (charts::plural(s.errors, "error", "errors")) " · " (charts::cost(s.cost_usd, None)) }
        }
        @if let Some(result) = &r.result { @if r.kind == Kind::Optimize { (finished(result)) } }
    }
}

fn estimate(e: Option<&Estimate>) -> Markup {
    match e {
        None => html! { span.note { "—" } },
        Some(e) => {
            html! { (format!("{:.3}", e.mean)) " [" (format!("{:.3}", e.low)) ", " (format!("{:.3}", e.high)) "] n " (e.n) }
        }
    }
}

fn paired(p: Option<&Paired>) -> Markup {
    match p {
        None => html! { span.note { "—" } },
        Some(p) => {
            html! { (format!("{:+.3}", p.diff)) " [" (format!("{:+.3}", p.low)) ", " (format!("{:+.3}", p.high)) "], p = " (format!("{:.4}", p.p_value)) }
        }
    }
}

/// A finished optimization's result as the engine returned it, read back from the run's
/// record (`None`, with the reason, when the record does not hold one).
fn optimize_result(result: &Value) -> Result<OptimizeResult, String> {
    serde_json::from_value(result.clone()).map_err(|e| e.to_string())
}

/// A finished optimization: the verdict, per-layer usage, the kept prompt as the model sees
/// it and its diff against the seed.
fn finished(result: &Value) -> Markup {
    let r = match optimize_result(result) {
        Ok(r) => r,
        Err(e) => {
            return html! { section.result { h2 { "Result" } p.error { "This run's result cannot be read: " (e) } } };
        }
    };
    let o = &r.outcome;
    let entry = |id: &str| o.entry(id).map(|e| e.prompt.clone());
    let winner_id = o.winner.as_str();
    let winner = entry(winner_id);
    let seed = entry("p0");
    let kept_seed = o.kept_seed;
    // Where the verdict was taken: on dev examples held out of the search, when there were.
    let on = if o.confirm.is_some() {
        "on the dev examples held out of the search"
    } else {
        "on dev"
    };
    let layer = |name: &str, u: &LayerUsage| {
        html! { tr {
            th scope="row" { (name) } td.num { (u.calls) } td.num { (u.cached) } td.num { (u.failed) }
            td.num { (u.input_tokens) } td.num { (u.output_tokens) }
            td.num { (charts::cost(u.cost_usd, Some(u.calls))) }
        } }
    };
    html! {
        section.result aria-labelledby="result-h" {
            h2 #result-h { "Result" }
            p.verdict {
                @if kept_seed && o.best == "p0" { "No candidate scored above the seed on dev: the seed is kept." }
                @else if kept_seed { "The best candidate (" (o.best) ") is not significantly better than the seed " (on) ": the seed is kept." }
                @else { "Kept " strong { (winner_id) } ", significantly better than the seed " (on) "." }
            }
            div.scroll { table {
                tbody {
                    tr { th scope="row" { "seed on dev" } td { (estimate(Some(&o.seed_dev))) } }
                    tr { th scope="row" { "best on dev" } td { (estimate(Some(&o.best_dev))) } }
                    @if o.best != "p0" { tr { th scope="row" { "best − seed on dev" } td { (paired(Some(&o.dev_test))) } } }
                    @if let Some(c) = &o.confirm {
                        tr { th scope="row" { "seed on held-out dev" } td { (estimate(Some(&c.seed))) } }
                        tr { th scope="row" { "best on held-out dev" } td { (estimate(Some(&c.best))) } }
                        tr { th scope="row" { "best − seed on held-out dev" } td { (paired(Some(&c.paired))) } }
                    }
                    tr { th scope="row" { "seed on test" } td { (estimate(o.seed_test.as_ref())) } }
                    tr { th scope="row" { "kept on test" } td { (estimate(o.winner_test.as_ref())) } }
                    @if !kept_seed { tr { th scope="row" { "kept − seed on test" } td { (paired(o.test_paired.as_ref())) } } }
                    tr { th scope="row" { "stopped" } td.stop { (o.stop.describe()) } }
                }
            } }
            h3 { "Calls and cost per layer" }
            div.scroll { table.usage {
                thead { tr { th scope="col" { "layer" } th scope="col" { "calls" } th scope="col" { "cached" } th scope="col" { "failed" } th scope="col" { "tokens in" } th scope="col" { "tokens out" } th scope="col" { "cost" } } }
                tbody { (layer("meta", &o.meta_usage)) (layer("execution", &o.execution_usage)) }
            } }
            h3 { "Candidates" }
            p.counts { (charts::candidates(o.pool.len(), o.rejected.len())) }
            div.scroll { table.candidates {
                thead { tr { th scope="col" { "candidate" } th scope="col" { "made by" } th scope="col" { "round" } th scope="col" { "parents" } th scope="col" { "dev examples scored" } th scope="col" { "mean" } } }
                tbody { @for e in &o.pool {
                    tr.{ @if e.id == winner_id { "kept" } } {
                        td { code { (e.id) } @if e.id == winner_id { " (kept)" } }
                        td { (e.op) } td.num { (e.round) }
                        td { (e.parents.join(", ")) }
                        td.num { (e.scores.len()) }
                        td.num { @if let Some(m) = e.mean() { (format!("{m:.3}")) } }
                    }
                } }
            } }
            @if !o.rejected.is_empty() {
                details { summary { (charts::plural(o.rejected.len(), "candidate", "candidates")) " rejected before evaluation" }
                    ul { @for r in &o.rejected {
                        li { code { (r.id) } " (" (r.op) ", round " (r.round) "): " (r.why.join("; ")) }
                    } }
                }
            }
            @if let Some(w) = &winner {
                h3 { "The kept prompt as the model sees it" }
                p.note { "Every demonstration written out; the example's own inputs shown as " code { "{{ name }}" } "." }
                (as_seen(w))
                details { summary { "its fields" } (prompt_file(w)) }
                @if let Some(s) = &seed {
                    h3 { "Against the seed" }
                    (diff_texts(("seed", &s.to_toml().unwrap_or_else(|e| e.to_string())), (winner_id, &w.to_toml().unwrap_or_else(|e| e.to_string())), true))
                }
            }
        }
    }
}

/// `GET /runs/{id}`
pub async fn run(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> PageResult {
    let r = state.runs.record(&id)?;
    let events = state.runs.backlog(&id)?;
    let body = html! {
        h1 { "Run " code { (r.id) } }
        p.meta { (r.kind.as_str()) " · " (subject(&r)) " · by " (r.by) " · started " (when(&r.started_at))
            @if let Some(f) = &r.finished_at { " · finished " (when(f)) }
            @if r.resumed > 0 { " · resumed " (r.resumed) "×" } }
        @if r.status == Status::Running && session.can(Role::Editor) {
            form.inline method="post" action={ "/runs/" (encode(&r.id)) "/cancel" } {
                input type="hidden" name="csrf" value=(session.csrf);
                button type="submit" { "Cancel" }
            }
        }
        div #live data-run=(r.id) data-status=(status_name(r.status)) aria-live="polite" { (live_part(&r, &events)) }
    };
    Ok(layout(&format!("Run {id}"), Some(&session), Nav::Runs, body).into_response())
}

/// `GET /runs/{id}/live`: the changing part alone, for `console.js`.
pub async fn run_fragment(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<String>,
) -> PageResult {
    let r = state.runs.record(&id)?;
    let events = state.runs.backlog(&id)?;
    Ok(axum::response::Html(live_part(&r, &events).into_string()).into_response())
}

/// `GET /runs/{id}/events`: the run's server-sent events, for a signed-in page.
pub async fn run_events(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    Ok(state.runs.stream(&id)?)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /runs/{id}/cancel` (editor).
pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    check_form(&session, &headers, &f.csrf)?;
    session.caller.require(Role::Editor)?;
    state.runs.cancel(&id)?;
    Ok(Redirect::to(&format!("/runs/{}", encode(&id))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductionQuery {
    prompt: Option<String>,
    days: Option<u32>,
}

/// Slices drawn per prompt (the most-seen first).
const SLICES: usize = 6;
/// Points per series.
const BUCKETS: i64 = 24;
/// Prompts shown when none is chosen.
const PROMPTS: usize = 8;

/// A group's name, how many outcomes it has, and its (time, mean) points.
type Group = (String, usize, Vec<(f64, f64)>);

/// Mean outcome per time bucket for each group (`key` gives a bucket row's groups).
fn over_time(
    rows: &[&ScoreBucket],
    since: DateTime<Utc>,
    width: i64,
    key: impl Fn(&ScoreBucket) -> Vec<String>,
) -> Vec<Group> {
    // Per group: outcomes, and per bucket (outcomes, Σ outcome).
    type Sums = (usize, BTreeMap<i64, (u64, f64)>);
    let mut groups: BTreeMap<String, Sums> = BTreeMap::new();
    for r in rows {
        let bucket = r.bucket.clamp(0, BUCKETS - 1);
        for k in key(r) {
            let g = groups.entry(k).or_default();
            g.0 += r.n as usize;
            let b = g.1.entry(bucket).or_default();
            b.0 += r.n;
            b.1 += r.sum;
        }
    }
    groups
        .into_iter()
        .filter(|(_, (n, _))| *n > 0)
        .map(|(k, (n, buckets))| {
            let points = buckets
                .into_iter()
                .filter(|(_, (n, _))| *n > 0)
                .map(|(b, (n, sum))| {
                    (
                        (since.timestamp() + b * width + width / 2) as f64,
                        sum / n as f64,
                    )
                })
                .collect();
            (k, n, points)
        })
        .collect()
}

/// Outcomes of a split's incumbent and canary since the split was set.
async fn canary_rates_of(
    state: &AppState,
    split: &metaprompt_registry::Split,
) -> Result<(Rate, Rate), PageError> {
    let q = InferenceQuery {
        prompt: Some(split.prompt.clone()),
        since: Some(split.set_at),
        until: None,
        limit: None,
    };
    let read = |e| {
        PageError(ApiError::internal(format!(
            "cannot read the inference log: {e}"
        )))
    };
    let mut inferences = state.service.inferences(&q).await.map_err(read)?;
    inferences.retain(|i| i.label.as_deref() == Some(split.label.as_str()));
    let feedback = state.service.feedback_for(&q).await.map_err(read)?;
    let (mut incumbent, mut canary) = (Rate::default(), Rate::default());
    for o in metaprompt_agent::agent::outcomes(&inferences, &feedback) {
        if o.seq == split.seq {
            canary.add(o.score);
        } else {
            incumbent.add(o.score);
        }
    }
    Ok((incumbent, canary))
}

/// `GET /production[?prompt=NAME][&days=7]`
pub async fn production(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<ProductionQuery>, QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let days = q.days.unwrap_or(7);
    if !(1..=90).contains(&days) {
        return Err(PageError(ApiError::invalid(
            "days",
            format!("{days}: expected 1 to 90"),
        )));
    }
    let now = Utc::now();
    let window_start = now - chrono::Duration::days(i64::from(days));
    let read = |e| {
        PageError(ApiError::internal(format!(
            "cannot read the inference log: {e}"
        )))
    };
    // The plots span the window's traffic: from its first inference (or the window's start)
    // to now, in BUCKETS steps, summed by the database.
    let since = state
        .service
        .first_inference(q.prompt.as_deref(), window_start)
        .await
        .map_err(read)?
        .unwrap_or(window_start)
        .max(window_start);
    let width = ((now - since).num_seconds() / BUCKETS).max(1);
    let x_range = Some((since.timestamp() as f64, now.timestamp() as f64));
    let buckets = state
        .service
        .score_buckets(q.prompt.as_deref(), since, width)
        .await
        .map_err(read)?;
    let mut calls: HashMap<&str, (u64, u64)> = HashMap::new();
    for b in &buckets {
        let c = calls.entry(b.prompt.as_str()).or_default();
        c.0 += b.calls;
        c.1 += b.n;
    }
    let mut prompts: Vec<(&str, (u64, u64))> = calls.into_iter().collect();
    prompts.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    if let Some(p) = &q.prompt
        && prompts.is_empty()
    {
        // An unknown prompt is a 404; a known one without traffic is an empty page.
        super::pages::known(&state, p, "prompt").await?;
    }
    let agent = match &state.agent_settings {
        Ok(settings) => Some(
            metaprompt_agent::status(state.service.as_ref(), settings, q.prompt.as_deref(), now)
                .await
                .map_err(|e| PageError(ApiError::internal(format!("the agent's state: {e}")))),
        ),
        Err(_) => None,
    };
    let agent = agent.transpose()?;
    let mut sections = Vec::new();
    for (name, (n_calls, n_scored)) in
        prompts
            .iter()
            .take(if q.prompt.is_some() { 1 } else { PROMPTS })
    {
        let mine: Vec<&ScoreBucket> = buckets.iter().filter(|b| b.prompt == *name).collect();
        let versions = over_time(&mine, since, width, |b| vec![format!("v{}", b.seq)]);
        let mut slices = over_time(&mine, since, width, |b| {
            let mut k: Vec<String> = b.tags.iter().map(|(a, v)| format!("{a}={v}")).collect();
            k.push("all".into());
            k
        });
        slices.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        slices.truncate(SLICES);
        let to_series = |g: &[Group]| -> Vec<Series> {
            g.iter()
                .map(|(k, n, p)| Series::new(format!("{k} (n {n})"), p.clone()))
                .collect()
        };
        let splits = state
            .library
            .splits(name)
            .await
            .map_err(|e| error::library(e, "prompt"))?;
        let mut canary_rates: HashMap<String, (Rate, Rate)> = HashMap::new();
        for s in &splits {
            canary_rates.insert(s.label.clone(), canary_rates_of(&state, s).await?);
        }
        let cases: Vec<&metaprompt_agent::Case> = agent
            .iter()
            .flat_map(|a| a.cases.iter())
            .filter(|c| c.prompt == *name)
            .collect();
        let findings: Vec<&metaprompt_agent::monitor::Finding> = agent
            .iter()
            .flat_map(|a| a.findings.iter())
            .filter(|f| f.prompt == *name)
            .collect();
        sections.push(html! {
            section.prompt-health aria-labelledby={ "h-" (name) } {
                h2 #{ "h-" (name) } { a href={ "/prompts/" (encode(name)) } { (name) } }
                p.note { (n_calls) " calls, " (n_scored) " with outcomes in the last " (days) " days" }
                div.charts {
                    (charts::line_over("Outcome rate per version", x_range, (Axis::Time, "time (UTC)"), (Axis::Score, "mean outcome"), &to_series(&versions)))
                    (charts::line_over("Outcome rate per slice", x_range, (Axis::Time, "time (UTC)"), (Axis::Score, "mean outcome"), &to_series(&slices)))
                }
                @for s in &splits {
                    @let case = cases.iter().find(|c| c.canary.is_some() && c.proposal.as_ref().is_some_and(|p| p.version.hash == s.hash));
                    div.canary {
                        h3 { "Canary on " code { (s.label) } ": v" (s.seq) " serves " (format!("{:.0}", s.weight)) "% since " (when(&s.set_at)) }
                        @match case.and_then(|c| c.canary.as_ref()) {
                            Some(c) => {
                                p { "canary " (c.canary_mean.map_or("—".into(), |m| format!("{m:.3}"))) " (n " (c.canary_n) ") against the incumbent "
                                    (c.incumbent_mean.map_or("—".into(), |m| format!("{m:.3}"))) " (n " (c.incumbent_n) ")" }
                                @if let Some(d) = &c.last {
                                    p { "difference " (format!("{:+.3}", d.diff)) ", always-valid 95% interval [" (format!("{:+.3}", d.low)) ", " (format!("{:+.3}", d.high)) "] "
                                        (charts::interval(d.diff, d.low, d.high, (-1.0, 1.0))) }
                                }
                            }
                            None => {
                                @let (incumbent, canary) = canary_rates.get(&s.label).copied().unwrap_or_default();
                                p { "canary " (canary.mean().map_or("—".into(), |m| format!("{m:.3}"))) " (n " (canary.n) ") against the incumbent "
                                    (incumbent.mean().map_or("—".into(), |m| format!("{m:.3}"))) " (n " (incumbent.n) ") since the split" }
                                @if canary.n > 0 && incumbent.n > 0 {
                                    @let d = metaprompt_agent::stats::sequential(&incumbent, &canary, 0.05, 0.1);
                                    p { "difference " (format!("{:+.3}", d.diff)) ", always-valid 95% interval [" (format!("{:+.3}", d.low)) ", " (format!("{:+.3}", d.high)) "] "
                                        (charts::interval(d.diff, d.low, d.high, (-1.0, 1.0))) }
                                }
                            }
                        }
                    }
                }
                h3 { "Agent findings" }
                @if agent.is_none() { p.note { "The agent's policy (" code { "[agent]" } ") is not valid, so findings are not computed." } }
                @else if findings.is_empty() { p.note { "No slice is significantly worse." } }
                @else {
                    ul.findings { @for f in &findings { li {
                        code { (f.slice.to_string()) } ": " (format!("{:.3}", f.mean)) " (n " (f.n) ") against " (format!("{:.3}", f.reference_mean)) " (n " (f.reference_n) "), q = " (format!("{:.2e}", f.q))
                    } } }
                }
                @if !cases.is_empty() {
                    div.scroll { table.cases {
                        thead { tr { th scope="col" { "case" } th scope="col" { "slice" } th scope="col" { "state" } th scope="col" { "opened" } th scope="col" { "updated" } th scope="col" { "proposal" } } }
                        tbody { @for c in &cases { tr {
                            td { code { (c.id) } } td { code { (c.slice.to_string()) } }
                            td { span.badge { (serde_json::to_value(c.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()) } }
                            td { (when(&c.opened_at)) } td { (when(&c.updated_at)) }
                            td { @if let Some(p) = &c.proposal { a href={ "/review/" (encode(name)) "/v" (p.version.seq) } { "v" (p.version.seq) } } }
                        } } }
                    } }
                }
            }
        });
    }
    let body = html! {
        h1 { "Production" @if let Some(p) = &q.prompt { ": " (p) } }
        form.filters method="get" action="/production" {
            label for="prompt" { "Prompt" }
            input #prompt type="text" name="prompt" value=(q.prompt.clone().unwrap_or_default()) placeholder="every prompt with traffic";
            label for="days" { "Days" }
            input #days type="number" name="days" min="1" max="90" value=(days);
            button type="submit" { "Show" }
        }
        @if sections.is_empty() { p { "No inferences in the last " (days) " days." } }
        @for s in &sections { (s) }
        @if q.prompt.is_none() && prompts.len() > PROMPTS { p.note { "The " (PROMPTS) " busiest of " (prompts.len()) " prompts; choose one above for another." } }
    };
    Ok(layout("Production", Some(&session), Nav::Production, body).into_response())
}
