//! The library, a prompt, a diff, the review queue and a proposal.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use metaprompt_eval::prompt::PromptFile;
use metaprompt_registry::model::{Decision, Event, Evidence, ReviewState, Version};
use metaprompt_registry::policy::{PRODUCTION, label_flag};
use metaprompt_registry::service::Role;
use serde::Deserialize;

use super::charts::{self, usd};
use super::{Nav, PageError, PageResult, Session, check_form, encode, layout};
use crate::AppState;
use crate::error::{self, ApiError};

/// Prompts per page of the library.
pub const PAGE: usize = 50;
/// Days of outcomes in the library's sparklines.
const SPARK_DAYS: i64 = 14;

pub fn when(t: &DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M")) } }
}

/// A form body, or a 400 page naming what was wrong with it.
pub fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    f.map(|Form(t)| t).map_err(|e| {
        PageError(ApiError::invalid(
            "form",
            format!("the form is not valid: {}", e.body_text()),
        ))
    })
}

/// A query string, or a 400 page naming the parameter.
pub fn query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, PageError> {
    q.map(|Query(t)| t).map_err(|e| {
        PageError(ApiError::invalid(
            "query",
            format!("the query string is not valid: {}", e.body_text()),
        ))
    })
}

/// A 404 page unless the library has the prompt `name`.
pub async fn known(state: &AppState, name: &str, param: &str) -> Result<(), PageError> {
    let r = metaprompt_registry::model::VersionRef::parse(name)
        .map_err(|e| error::library(e, param))?;
    state
        .library
        .resolve(&r)
        .await
        .map_err(|e| error::library(e, param))?;
    Ok(())
}

async fn resolve(
    state: &AppState,
    name: &str,
    reference: &str,
    param: &str,
) -> Result<Version, PageError> {
    let r = metaprompt_registry::model::VersionRef::parse(&format!("{name}@{reference}"))
        .map_err(|e| error::library(e, param))?;
    Ok(state
        .library
        .resolve(&r)
        .await
        .map_err(|e| error::library(e, param))?)
}

/// A prompt's labels that point at a flagged version ([`label_flag`]), with the flag.
async fn label_flags(
    state: &AppState,
    name: &str,
) -> Result<Vec<(String, &'static str)>, PageError> {
    let labels = state
        .library
        .labels(name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let versions = state
        .library
        .versions(name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    Ok(labels
        .into_iter()
        .filter_map(|l| {
            let v = versions.iter().find(|v| v.hash == l.hash)?;
            Some((l.label, label_flag(v)?))
        })
        .collect())
}

/// The mark of a flagged label: it points at a version rejected in review.
fn flag_badge(flag: &str) -> Markup {
    html! {
        span.badge.{ "r-" (flag) } .label-flag title={ "this label points at a version " (flag) " in review" } {
            (flag.to_uppercase())
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    filter: String,
    page: Option<usize>,
}

const FILTERS: [(&str, &str); 5] = [
    ("", "every prompt"),
    ("proposed", "with proposals to review"),
    ("production", "labelled production"),
    ("split", "with a canary"),
    ("unlabelled", "without labels"),
];

/// Per prompt: the outcome rate per day over the last [`SPARK_DAYS`] days (oldest first), and
/// the last 7 days' mean and count.
type Outcomes = (Vec<Option<f64>>, Option<(f64, u64)>);

async fn outcome_days(
    state: &AppState,
    prompts: &[String],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Outcomes>, PageError> {
    let today = now.date_naive();
    let first = today - chrono::Days::new(SPARK_DAYS as u64 - 1);
    let since = first.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let rows = state
        .service
        .daily_scores(prompts, since)
        .await
        .map_err(|e| PageError(ApiError::internal(format!("cannot read outcomes: {e}"))))?;
    // Per prompt: (Σ score, n) per day, and over the last 7 days.
    type Sums = (Vec<(f64, u64)>, (f64, u64));
    let mut out: HashMap<String, Sums> = HashMap::new();
    for r in rows {
        let Ok(day) = chrono::NaiveDate::parse_from_str(&r.day, "%Y-%m-%d") else {
            continue;
        };
        let k = (day - first).num_days();
        if !(0..SPARK_DAYS).contains(&k) {
            continue;
        }
        let e = out
            .entry(r.prompt)
            .or_insert_with(|| (vec![(0.0, 0); SPARK_DAYS as usize], (0.0, 0)));
        e.0[k as usize].0 += r.sum;
        e.0[k as usize].1 += r.n;
        if k >= SPARK_DAYS - 7 {
            e.1.0 += r.sum;
            e.1.1 += r.n;
        }
    }
    Ok(out
        .into_iter()
        .map(|(p, (days, week))| {
            let days = days
                .iter()
                .map(|&(s, n)| (n > 0).then(|| s / n as f64))
                .collect();
            (
                p,
                (days, (week.1 > 0).then(|| (week.0 / week.1 as f64, week.1))),
            )
        })
        .collect())
}

/// `GET /`: every prompt with its labels, split, newest version, review state and outcomes.
pub async fn library(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<LibraryQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    if !FILTERS.iter().any(|(f, _)| *f == q.filter) {
        return Err(PageError(ApiError::invalid(
            "filter",
            format!(
                "`{}`: expected one of proposed, production, split, unlabelled",
                q.filter
            ),
        )));
    }
    let prompts = state
        .library
        .prompts()
        .await
        .map_err(|e| error::library(e, "prompts"))?;
    let total = prompts.len();
    let needle = q.q.trim().to_lowercase();
    let mut shown = Vec::new();
    for p in prompts {
        if !needle.is_empty() && !p.name.to_lowercase().contains(&needle) {
            continue;
        }
        let keep = match q.filter.as_str() {
            "proposed" => p.proposed > 0,
            "production" => p.labels.iter().any(|(l, _)| l == PRODUCTION),
            "unlabelled" => p.labels.is_empty(),
            _ => true,
        };
        if keep {
            shown.push(p);
        }
    }
    // Splits are read per prompt; only the split filter needs them for every prompt.
    let mut splits = HashMap::new();
    if q.filter == "split" {
        let mut with = Vec::new();
        for p in shown {
            let s = state
                .library
                .splits(&p.name)
                .await
                .map_err(|e| error::library(e, "prompts"))?;
            if !s.is_empty() {
                splits.insert(p.name.clone(), s);
                with.push(p);
            }
        }
        shown = with;
    }
    let matched = shown.len();
    let pages = matched.div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let rows: Vec<_> = shown
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    for p in &rows {
        if !splits.contains_key(&p.name) {
            let s = state
                .library
                .splits(&p.name)
                .await
                .map_err(|e| error::library(e, "prompts"))?;
            splits.insert(p.name.clone(), s);
        }
    }
    // Labels that point at a version rejected in review, per prompt shown.
    let mut flags: HashMap<String, Vec<(String, &'static str)>> = HashMap::new();
    for p in rows.iter().filter(|p| !p.labels.is_empty()) {
        flags.insert(p.name.clone(), label_flags(&state, &p.name).await?);
    }
    let flag_of = |p: &str, l: &str| {
        flags
            .get(p)
            .and_then(|f| f.iter().find(|(x, _)| x == l))
            .map(|(_, f)| *f)
    };
    let names: Vec<String> = rows.iter().map(|p| p.name.clone()).collect();
    let outcomes = outcome_days(&state, &names, Utc::now()).await?;
    let none: Outcomes = (vec![None; SPARK_DAYS as usize], None);
    let live: Vec<&Outcomes> = names
        .iter()
        .map(|n| outcomes.get(n).unwrap_or(&none))
        .collect();
    let page_link =
        |n: usize| format!("/?q={}&filter={}&page={n}", encode(&q.q), encode(&q.filter));
    let body = html! {
        h1 { "Library" }
        form.filters method="get" action="/" role="search" {
            label for="q" { "Search" }
            input #q type="search" name="q" value=(q.q) placeholder="prompt name";
            label for="filter" { "Show" }
            select #filter name="filter" {
                @for (f, name) in FILTERS {
                    option value=(f) selected[f == q.filter] { (name) }
                }
            }
            button type="submit" { "Filter" }
        }
        p.note { (matched) " of " (total) " prompts" @if pages > 1 { " · page " (page) " of " (pages) } }
        div.scroll {
            table.library {
                thead { tr { th scope="col" { "Prompt" } th scope="col" { "Labels" } th scope="col" { "Newest" }
                    th scope="col" { "Review" } th scope="col" { "Outcomes (7 days)" } th scope="col" { "Last 14 days" } } }
                tbody {
                    @for (p, (days, week)) in rows.iter().zip(live.iter().copied()) {
                        tr {
                            td { a href={ "/prompts/" (encode(&p.name)) } { (p.name) } }
                            td {
                                @for (l, seq) in &p.labels {
                                    span.label { (l) " → v" (seq)
                                        @for s in splits.get(&p.name).into_iter().flatten().filter(|s| &s.label == l) {
                                            " (" (format!("{:.0}", 100.0 - s.weight)) "%) · v" (s.seq) " " (format!("{:.0}", s.weight)) "%"
                                        }
                                        @if let Some(f) = flag_of(&p.name, l) { " " (flag_badge(f)) }
                                    }
                                    " "
                                }
                            }
                            td { "v" (p.latest) " of " (p.versions) }
                            td {
                                @if p.proposed > 0 { a.badge.proposed href="/review" { (p.proposed) " proposed" } }
                                @else if p.review_required { span.badge { "review required" } }
                                @else { span.note { "—" } }
                            }
                            td { @if let Some((m, n)) = week { (format!("{m:.2}")) " " span.note { "n " (n) } } @else { span.note { "no outcomes" } } }
                            td { (charts::spark(days)) }
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            nav.pages aria-label="pages" {
                @if page > 1 { a href=(page_link(page - 1)) rel="prev" { "← previous" } }
                @if page < pages { a href=(page_link(page + 1)) rel="next" { "next →" } }
            }
        }
    };
    Ok(layout("Library", Some(&session), Nav::Library, body).into_response())
}

/// The variable that names the expected output: a key every demonstration has that no template
/// reads.
fn output_var(file: &PromptFile) -> Option<String> {
    let vars = file.variables();
    file.demo_entries()
        .first()?
        .keys()
        .find(|k| !vars.contains(k))
        .cloned()
}

/// The prompt as the model sees it: every demonstration written out, the example's own
/// variables left as `{{ name }}`.
pub fn as_seen(file: &PromptFile) -> Markup {
    use metaprompt_llm::{Prompt, PromptFormat};
    let vars = file
        .variables()
        .into_iter()
        .map(|v| {
            (
                v.clone(),
                serde_json::Value::String(format!("{{{{ {v} }}}}")),
            )
        })
        .collect();
    let output = output_var(file);
    let mut forms = Vec::new();
    if file.template.is_some() {
        forms.push(("text form", PromptFormat::Text));
    }
    if !file.messages.is_empty() {
        forms.push(("chat form", PromptFormat::Chat));
    }
    html! {
        @for (name, format) in forms {
            @match file.longest().render(&vars, format, output.as_deref()) {
                Ok(Prompt::Text(t)) => { h4 { (name) } pre.prompt { (t) } }
                Ok(Prompt::Chat(messages)) => {
                    h4 { (name) }
                    ol.chat { @for m in &messages { li { span.role { (format!("{:?}", m.role).to_lowercase()) } pre.prompt { (m.content) } } } }
                }
                Err(e) => { p.error { (name) ": cannot render: " (e.to_string()) } }
            }
        }
    }
}

/// A prompt file, field by field.
pub fn prompt_file(file: &PromptFile) -> Markup {
    html! {
        dl.file {
            @if let Some(d) = &file.description { dt { "description" } dd { (d) } }
            @if let Some(t) = &file.target_model { dt { "target model" } dd { code { (t) } } }
            dt { "runs with" }
            dd.run-settings {
                @match &file.run {
                    Some(r) => {
                        "temperature " (r.temperature) " · max_tokens " (r.max_tokens)
                        @if !r.stop.is_empty() { " · stop " code { (format!("{:?}", r.stop)) } }
                        @if let Some(l) = &r.labels {
                            " · a choice among " (l.join(", "))
                            (if r.generate { ", generated and read" } else { ", scored where the model can" })
                        }
                        @if let Some(a) = &r.answer {
                            " · the answer read as "
                            (match a {
                                metaprompt_eval::settings::Reading::Number {} => "its final number",
                                metaprompt_eval::settings::Reading::Normalized {} => "normalized text",
                                metaprompt_eval::settings::Reading::Json { schema: Some(_), .. } => "JSON checked against a schema",
                                metaprompt_eval::settings::Reading::Json { .. } => "JSON",
                            })
                            @if let metaprompt_eval::settings::Reading::Json { field: Some(f), .. } = a { " (field " code { (f) } ")" }
                        }
                        " (what its evaluation used)"
                    }
                    None => { "the server's defaults (no [run]: its evaluation's settings were not recorded with it)" }
                }
            }
            @if let Some(i) = &file.instruction { dt { "instruction" } dd { pre.prompt { (i) } } }
            @if let Some(t) = &file.template { dt { "template" } dd { pre.prompt { (t) } } }
            @if let Some(t) = &file.demo_template { dt { "demo template" } dd { pre.prompt { (t) } } }
            @for (k, m) in file.messages.iter().enumerate() {
                dt { "message " (k + 1) " (" (format!("{:?}", m.role).to_lowercase()) ")" } dd { pre.prompt { (m.content) } }
            }
            @if !file.constraints.is_empty() {
                dt { "protected constraints" }
                dd { ul { @for c in &file.constraints { li { q { (c) } } } } }
            }
            @if let Some(r) = &file.rationale { dt { "rationale" } dd { p { (r) } } }
            @if let Some(s) = &file.selector {
                dt { "demonstrations" }
                dd { "the " (s.k) " nearest of " (file.pool.len()) " pool entries per input, by "
                    (if s.embed == metaprompt_eval::select::Embedding::Words { "words" } else { "the model's embeddings" })
                    " (the preview shows the longest " (s.k) ")" }
            }
        }
        @let entries = file.demo_entries();
        @if !entries.is_empty() {
            details.demos {
                summary { (entries.len()) (if file.selector.is_some() { " pool entries" } else { " demonstrations" }) }
                div.scroll { table {
                    @let keys: Vec<&String> = entries[0].keys().collect();
                    thead { tr { @for k in &keys { th scope="col" { (k) } } } }
                    tbody { @for d in entries { tr { @for k in &keys {
                        td { (d.get(*k).map(metaprompt_eval::dataset::as_text).unwrap_or_default()) }
                    } } } }
                } }
            }
        }
    }
}

/// Evidence rows once each: the same measurement recorded again (a run stored twice, a version
/// found already there) is one row, the first recorded.
fn distinct(ev: &[Evidence]) -> Vec<&Evidence> {
    let mut seen = std::collections::HashSet::new();
    ev.iter()
        .filter(|e| {
            seen.insert((
                e.task.clone(),
                e.split.clone(),
                e.model.clone(),
                e.metric.clone(),
                e.n,
                e.mean.to_bits(),
                e.low.to_bits(),
                e.high.to_bits(),
                e.baseline.clone(),
                e.diff.map(f64::to_bits),
            ))
        })
        .collect()
}

/// Evidence rows with their intervals (`seqs`: hash → version number, for baselines).
pub fn evidence_table(ev: &[Evidence], seqs: &HashMap<String, u32>) -> Markup {
    if ev.is_empty() {
        return html! { p.note { "No evidence recorded." } };
    }
    let ev = distinct(ev);
    html! {
        div.scroll { table.evidence {
            thead { tr {
                th scope="col" { "split / slice" } th scope="col" { "task · model · metric" } th scope="col" { "n" }
                th scope="col" { "score [95% CI]" } th scope="col" { "" }
                th scope="col" { "vs baseline" } th scope="col" { "cost / execution" }
            } }
            tbody { @for e in &ev { tr {
                td { (e.split) } td { (e.task) " · " code { (e.model) } " · " (e.metric) } td.num { (e.n) }
                td.num { (format!("{:.3}", e.mean)) " [" (format!("{:.3}", e.low)) ", " (format!("{:.3}", e.high)) "]" }
                td { (charts::interval(e.mean, e.low, e.high, (0.0, 1.0))) }
                td {
                    @if let (Some(d), Some(lo), Some(hi)) = (e.diff, e.diff_low, e.diff_high) {
                        @if let Some(b) = &e.baseline { "v" (seqs.get(b).map_or("?".into(), u32::to_string)) ": " }
                        (format!("{d:+.3}")) " [" (format!("{lo:+.3}")) ", " (format!("{hi:+.3}")) "]"
                        @if let Some(p) = e.p_value { " p = " (format!("{p:.4}")) }
                        (charts::interval(d, lo, hi, (-1.0, 1.0)))
                    } @else { span.note { "—" } }
                }
                td.num { (charts::cost(e.cost_per_execution_usd, None)) }
            } } }
        } }
    }
}

fn events_table(events: &[Event], seqs: &HashMap<String, u32>) -> Markup {
    let v = |h: &Option<String>| {
        h.as_ref().map(|h| {
            seqs.get(h).map_or_else(
                || metaprompt_registry::model::short(h).to_string(),
                |s| format!("v{s}"),
            )
        })
    };
    html! {
        @if events.is_empty() { p.note { "No events." } } @else {
            div.scroll { table.events {
                thead { tr { th scope="col" { "when" } th scope="col" { "who" } th scope="col" { "what" } th scope="col" { "version" } th scope="col" { "comment" } } }
                tbody { @for e in events.iter().rev() { tr.event data-kind=(e.kind.as_str()) {
                    td { (when(&e.at)) } td { (e.actor) }
                    td { (e.kind.as_str()) @if let Some(l) = &e.label { " " code { (l) } } @if let Some(d) = &e.decision { " " strong { (d) } } }
                    td { @if let Some(f) = v(&e.from_hash) { (f) " → " } (v(&e.hash).unwrap_or_default()) }
                    td { (e.comment.clone().unwrap_or_default()) }
                } } }
            } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptQuery {
    #[serde(default)]
    all: bool,
}

/// Versions shown in full on a prompt's page unless `?all=true`.
const SHOWN_VERSIONS: usize = 20;

/// `GET /prompts/{name}`
pub async fn prompt(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    q: Result<Query<PromptQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    known(&state, &name, "name").await?;
    let lib = &state.library;
    let labels = lib
        .labels(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let versions = lib
        .versions(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let splits = lib
        .splits(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let events = lib
        .events(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let mut runs = lib
        .runs(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    // The list comes without candidates: each run's are read to count them.
    for r in &mut runs {
        if r.candidates.is_empty() {
            r.candidates = lib
                .run(&r.id)
                .await
                .map_err(|e| error::library(e, "name"))?
                .candidates;
        }
    }
    let seqs: HashMap<String, u32> = versions.iter().map(|v| (v.hash.clone(), v.seq)).collect();
    // Where each library run's id leads: its page when it ran over HTTP (the same run folder),
    // else its row below.
    let http = state.runs.records();
    let run_href = |id: &str| -> String {
        let dir = runs
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.dir.as_deref());
        let page = dir.and_then(|d| {
            http.iter().find(|h| {
                h.run_dir
                    .as_ref()
                    .is_some_and(|rd| std::path::Path::new(d).starts_with(rd))
            })
        });
        match page {
            Some(h) => format!("/runs/{}", encode(&h.id)),
            None => format!("#run-{id}"),
        }
    };
    let shown: Vec<&Version> = versions
        .iter()
        .rev()
        .take(if q.all { usize::MAX } else { SHOWN_VERSIONS })
        .collect();
    let mut evidence = Vec::new();
    for v in &shown {
        evidence.push(
            lib.evidence(v)
                .await
                .map_err(|e| error::library(e, "name"))?,
        );
    }
    let label_events: Vec<Event> = events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "label" | "rollback" | "split"))
        .cloned()
        .collect();
    let body = html! {
        h1 { (name) }
        p.actions {
            a href={ "/prompts/" (encode(&name)) "/diff" } { "Diff versions" } " · "
            a href={ "/production?prompt=" (encode(&name)) } { "Production" }
        }
        section aria-labelledby="labels-h" {
            h2 #labels-h { "Labels" }
            @if labels.is_empty() { p.note { "No labels." } }
            ul.labels { @for l in &labels { li {
                code { (l.label) } " → " a href={ "#v" (l.seq) } { "v" (l.seq) }
                @if let Some(f) = versions.iter().find(|v| v.hash == l.hash).and_then(label_flag) {
                    " " (flag_badge(f)) " " span.error { "it points at a version " (f) " in review" }
                }
                " · moved by " (l.moved_by) " " (when(&l.moved_at))
                @for s in splits.iter().filter(|s| s.label == l.label) {
                    " · canary " a href={ "#v" (s.seq) } { "v" (s.seq) } " serves " (format!("{:.0}", s.weight)) "%"
                }
            } } }
        }
        section aria-labelledby="lineage-h" {
            h2 #lineage-h { "Lineage" }
            (charts::lineage(&versions))
        }
        section aria-labelledby="versions-h" {
            h2 #versions-h { "Versions" }
            @if shown.len() < versions.len() {
                p.note { "The newest " (shown.len()) " of " (versions.len()) ". " a href={ "/prompts/" (encode(&name)) "?all=true" } { "Show all" } }
            }
            @for (v, ev) in shown.iter().zip(&evidence) {
                article.version #{ "v" (v.seq) } {
                    h3 { "v" (v.seq) " " span.badge.{ "o-" (charts::origin_name(v)) } { (charts::origin_name(v)) } @if v.review != ReviewState::None { " " span.badge.{ "r-" (v.review.as_str()) } { (v.review.as_str()) } } }
                    p.meta {
                        "by " (v.author) " " (when(&v.created_at)) " · " code title=(v.hash) { (v.short()) }
                        @for p in &v.parents { " · parent " a href={ "#v" (seqs.get(p).copied().unwrap_or(0)) } { "v" (seqs.get(p).copied().unwrap_or(0)) } }
                        @if let Some(r) = &v.run { " · run " a.run href=(run_href(r)) { code { (r) } } }
                        @if let Some(p) = v.parents.first() {
                            " · " a href={ "/prompts/" (encode(&name)) "/diff?from=v" (seqs.get(p).copied().unwrap_or(0)) "&to=v" (v.seq) } { "diff against parent" }
                        }
                        @if v.review == ReviewState::Proposed { " · " a href={ "/review/" (encode(&name)) "/v" (v.seq) } { "review" } }
                    }
                    @if let Some(m) = &v.message { p { (m) } }
                    @match v.file() {
                        Ok(f) => { (prompt_file(&f)) }
                        Err(e) => { p.error { "cannot read this version: " (e.to_string()) } }
                    }
                    h4 { "Evidence" }
                    (evidence_table(ev, &seqs))
                }
            }
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "Label history" }
            (events_table(&label_events, &seqs))
        }
        section aria-labelledby="runs-h" {
            h2 #runs-h { "Runs that made its versions" }
            @if runs.is_empty() { p.note { "None." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "run" } th scope="col" { "kind" } th scope="col" { "algorithm" } th scope="col" { "started" } th scope="col" { "candidates" } } }
                    tbody { @for r in &runs {
                        @let rejected = r.candidates.iter().filter(|c| c.status == "rejected").count();
                        @let href = run_href(&r.id);
                        tr #{ "run-" (r.id) } {
                            td { @if href.starts_with('#') { code { (r.id) } } @else { a href=(href) { code { (r.id) } } } }
                            td { (r.kind.as_str()) } td { (r.algorithm.clone().unwrap_or_default()) }
                            td { (when(&r.started_at)) }
                            td.candidates { (charts::candidates(r.candidates.len() - rejected, rejected)) }
                        }
                    } }
                } }
            }
        }
    };
    Ok(layout(&name, Some(&session), Nav::Library, body).into_response())
}

/// One row of a side-by-side diff.
enum Row<'a> {
    Same(&'a str),
    Changed(Option<&'a str>, Option<&'a str>),
}

fn rows<'a>(old: &'a str, new: &'a str) -> Vec<Row<'a>> {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let mut out = Vec::new();
    let (mut del, mut ins): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    let flush = |out: &mut Vec<Row<'a>>, del: &mut Vec<&'a str>, ins: &mut Vec<&'a str>| {
        for k in 0..del.len().max(ins.len()) {
            out.push(Row::Changed(del.get(k).copied(), ins.get(k).copied()));
        }
        del.clear();
        ins.clear();
    };
    for op in diff.ops() {
        for c in diff.iter_changes(op) {
            let line = c.value();
            match c.tag() {
                ChangeTag::Equal => {
                    flush(&mut out, &mut del, &mut ins);
                    out.push(Row::Same(line));
                }
                ChangeTag::Delete => del.push(line),
                ChangeTag::Insert => ins.push(line),
            }
        }
    }
    flush(&mut out, &mut del, &mut ins);
    out
}

/// `a` → `b` as a unified or side-by-side table.
pub fn diff_view(a: &Version, b: &Version, split: bool) -> Markup {
    diff_texts(
        (&format!("v{}", a.seq), &a.content),
        (&format!("v{}", b.seq), &b.content),
        split,
    )
}

/// Two named texts as a unified or side-by-side diff.
pub fn diff_texts(a: (&str, &str), b: (&str, &str), split: bool) -> Markup {
    if a.1 == b.1 {
        return html! { p.note { (a.0) " and " (b.0) " have the same content." } };
    }
    let rows = rows(a.1, b.1);
    let t = |s: &str| s.trim_end_matches('\n').to_string();
    html! {
        div.scroll { @if split {
            table.diff.split {
                thead { tr { th scope="col" { (a.0) } th scope="col" { (b.0) } } }
                tbody { @for r in &rows { @match r {
                    Row::Same(l) => { tr { td.ctx { (t(l)) } td.ctx { (t(l)) } } }
                    Row::Changed(o, n) => { tr {
                        @match o { Some(o) => { td.del { (t(o)) } } None => { td.gap {} } }
                        @match n { Some(n) => { td.add { (t(n)) } } None => { td.gap {} } }
                    } }
                } } }
            }
        } @else {
            table.diff.unified {
                caption { (a.0) " → " (b.0) }
                tbody { @for r in &rows { @match r {
                    Row::Same(l) => { tr { td.mark { " " } td.ctx { (t(l)) } } }
                    Row::Changed(o, n) => {
                        @if let Some(o) = o { tr { td.mark { "−" } td.del { (t(o)) } } }
                        @if let Some(n) = n { tr { td.mark { "+" } td.add { (t(n)) } } }
                    }
                } } }
            }
        } }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
    #[serde(default)]
    view: String,
}

/// `GET /prompts/{name}/diff?from=v1&to=v3&view=split|unified`
pub async fn diff(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    q: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    if !matches!(q.view.as_str(), "" | "split" | "unified") {
        return Err(PageError(ApiError::invalid(
            "view",
            format!("`{}`: expected split or unified", q.view),
        )));
    }
    let versions = state
        .library
        .versions(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let Some(latest) = versions.last() else {
        known(&state, &name, "name").await?;
        return Err(PageError(ApiError::not_found(
            "name",
            format!("prompt `{name}` has no versions"),
        )));
    };
    let b = match &q.to {
        Some(r) => resolve(&state, &name, r, "to").await?,
        None => latest.clone(),
    };
    let a = match &q.from {
        Some(r) => resolve(&state, &name, r, "from").await?,
        None => b
            .parents
            .first()
            .and_then(|p| versions.iter().find(|v| &v.hash == p))
            .or_else(|| versions.iter().rev().find(|v| v.seq < b.seq))
            .unwrap_or(&b)
            .clone(),
    };
    let split = q.view != "unified";
    let seqs: HashMap<String, u32> = versions.iter().map(|v| (v.hash.clone(), v.seq)).collect();
    let ea = state
        .library
        .evidence(&a)
        .await
        .map_err(|e| error::library(e, "from"))?;
    let eb = state
        .library
        .evidence(&b)
        .await
        .map_err(|e| error::library(e, "to"))?;
    let select = |id: &str, label: &str, current: u32| {
        html! {
            label for=(id) { (label) }
            select #(id) name=(id) { @for v in versions.iter().rev() {
                option value={ "v" (v.seq) } selected[v.seq == current] { "v" (v.seq) " · " (charts::origin_name(v)) " · " (v.review.as_str()) }
            } }
        }
    };
    let body = html! {
        h1 { a href={ "/prompts/" (encode(&name)) } { (name) } ": v" (a.seq) " → v" (b.seq) }
        form.filters method="get" {
            (select("from", "From", a.seq)) (select("to", "To", b.seq))
            label for="view" { "View" }
            select #view name="view" {
                option value="split" selected[split] { "side by side" }
                option value="unified" selected[!split] { "unified" }
            }
            button type="submit" { "Compare" }
        }
        (diff_view(&a, &b, split))
        div.pair {
            section { h2 { "Evidence of v" (a.seq) } (evidence_table(&ea, &seqs)) }
            section { h2 { "Evidence of v" (b.seq) } (evidence_table(&eb, &seqs)) }
        }
    };
    Ok(layout(&format!("{name} diff"), Some(&session), Nav::Library, body).into_response())
}

/// The headline of a version's evidence: its first comparison against a baseline.
fn headline(ev: &[Evidence]) -> Markup {
    match ev.iter().find(|e| e.diff.is_some()).or(ev.first()) {
        Some(e) => html! {
            (e.split) " " (format!("{:.3}", e.mean))
            @if let (Some(d), Some(p)) = (e.diff, e.p_value) { " (" (format!("{d:+.3}")) ", p = " (format!("{p:.3}")) ")" }
        },
        None => html! { span.note { "no evidence" } },
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    page: Option<usize>,
}

/// `GET /review`: every proposal waiting for a decision, newest first, [`PAGE`] a page.
pub async fn queue(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<QueueQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let mut proposed = state
        .library
        .proposed()
        .await
        .map_err(|e| error::library(e, "review"))?;
    proposed.sort_by_key(|v| std::cmp::Reverse(v.created_at));
    let total = proposed.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Version> = proposed
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    let mut ev = Vec::new();
    for v in &shown {
        ev.push(
            state
                .library
                .evidence(v)
                .await
                .map_err(|e| error::library(e, "review"))?,
        );
    }
    let body = html! {
        h1 { "Review queue" }
        @if shown.is_empty() { p { "Nothing waits for review." } } @else {
            p.note { (total) " proposals" @if pages > 1 { " · page " (page) " of " (pages) } }
            div.scroll { table.queue {
                thead { tr { th scope="col" { "Proposal" } th scope="col" { "Made by" } th scope="col" { "When" } th scope="col" { "Evidence" } th scope="col" { "Message" } } }
                tbody { @for (v, e) in shown.iter().zip(&ev) { tr {
                    td { a href={ "/review/" (encode(&v.prompt)) "/v" (v.seq) } { (v.prompt) "@v" (v.seq) } }
                    td { (charts::origin_name(v)) " · " (v.author) }
                    td { (when(&v.created_at)) }
                    td { (headline(e)) }
                    td { (v.message.clone().unwrap_or_default()) }
                } } }
            } }
            @if pages > 1 {
                nav.pages aria-label="pages" {
                    @if page > 1 { a href={ "/review?page=" (page - 1) } rel="prev" { "← previous" } }
                    @if page < pages { a href={ "/review?page=" (page + 1) } rel="next" { "next →" } }
                }
            }
        }
    };
    Ok(layout("Review", Some(&session), Nav::Review, body).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalQuery {
    decided: Option<String>,
}

/// The agent's case that filed `v`, if one did.
async fn case_of(state: &AppState, v: &Version) -> Option<metaprompt_agent::Case> {
    let rows = state.service.cases(Some(&v.prompt)).await.ok()?;
    rows.into_iter()
        .filter_map(|r| serde_json::from_value::<metaprompt_agent::Case>(r.body).ok())
        .find(|c| {
            c.proposal
                .as_ref()
                .is_some_and(|p| p.version.hash == v.hash)
        })
}

/// `GET /review/{name}/{version}`: the proposal beside what it would replace.
pub async fn proposal(
    State(state): State<AppState>,
    session: Session,
    Path((name, reference)): Path<(String, String)>,
    q: Result<Query<ProposalQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    let v = resolve(&state, &name, &reference, "version").await?;
    let lib = &state.library;
    let versions = lib
        .versions(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let seqs: HashMap<String, u32> = versions.iter().map(|v| (v.hash.clone(), v.seq)).collect();
    let labels = lib
        .labels(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let production = labels
        .iter()
        .find(|l| l.label == PRODUCTION && l.hash != v.hash);
    let replaced = production
        .and_then(|l| versions.iter().find(|x| x.hash == l.hash))
        .or_else(|| {
            v.parents
                .first()
                .and_then(|p| versions.iter().find(|x| &x.hash == p))
        })
        .cloned();
    let ev = lib
        .evidence(&v)
        .await
        .map_err(|e| error::library(e, "version"))?;
    let old_ev = match &replaced {
        Some(r) => lib
            .evidence(r)
            .await
            .map_err(|e| error::library(e, "version"))?,
        None => Vec::new(),
    };
    let events: Vec<Event> = lib
        .events(&name)
        .await
        .map_err(|e| error::library(e, "name"))?
        .into_iter()
        .filter(|e| e.hash.as_deref() == Some(v.hash.as_str()))
        .collect();
    let case = case_of(&state, &v).await;
    let file = v.file().map_err(|e| error::library(e, "version"))?;
    // The constraints of what it replaces, and whether this version keeps each word for word.
    let kept: Vec<(String, bool)> = replaced
        .as_ref()
        .and_then(|r| r.file().ok())
        .map(|f| f.constraints)
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let keeps = file.fields().iter().any(|(_, t)| t.contains(c.as_str()));
            (c, keeps)
        })
        .collect();
    let cost = |e: &[Evidence]| e.iter().find_map(|e| e.cost_per_execution_usd);
    let gain = ev.iter().find_map(|e| e.diff);
    let (new_cost, old_cost) = (cost(&ev), cost(&old_ev));
    let can_review = session.can(Role::Reviewer);
    let body = html! {
        h1 { "Review " a href={ "/prompts/" (encode(&name)) "#v" (v.seq) } { (name) "@v" (v.seq) } }
        @if let Some(d) = &q.decided { p.flash role="status" { "Recorded: " strong { (d) } ". The audit log below shows it." } }
        p.meta {
            span.badge.{ "r-" (v.review.as_str()) } { (v.review.as_str()) } " "
            (charts::origin_name(&v)) " · by " (v.author) " " (when(&v.created_at))
            @if let Some(r) = &replaced { " · would replace " a href={ "/prompts/" (encode(&name)) "#v" (r.seq) } { "v" (r.seq) }
                @if production.is_some() { " (production)" } }
        }
        @if let Some(m) = &v.message { p { (m) } }
        @if let Some(c) = &case {
            section.diagnosis aria-labelledby="diag-h" {
                h2 #diag-h { "The agent's diagnosis" }
                p.note { "Case " a.case href={ "/agent#case-" (c.id) } { code { (c.id) } } " on the agent's page: its state, spend and run." }
                p { "Slice " code { (c.slice.to_string()) } ": " (format!("{:.3}", c.finding.mean)) " (n " (c.finding.n) ") against "
                    (format!("{:.3}", c.finding.reference_mean)) " (n " (c.finding.reference_n) "), q = " (format!("{:.2e}", c.finding.q)) }
                @if let Some(d) = &c.diagnosis {
                    p { (d.summary) }
                    blockquote { (d.hypothesis) } p.note { "hypothesis written by " code { (d.model) } }
                }
                @if let Some(p) = &c.proposal {
                    h3 { "Held-out check, as served" }
                    div.scroll { table {
                        thead { tr { th scope="col" { "slice" } th scope="col" { "n" } th scope="col" { "before" } th scope="col" { "after" } th scope="col" { "difference [95% CI]" } th scope="col" { "p" } } }
                        tbody { @for s in &p.checks { tr {
                            td { (s.slice) } td.num { (s.n) } td.num { (format!("{:.3}", s.before)) } td.num { (format!("{:.3}", s.after)) }
                            td { (format!("{:+.3}", s.diff)) " [" (format!("{:+.3}", s.low)) ", " (format!("{:+.3}", s.high)) "] " (charts::interval(s.diff, s.low, s.high, (-1.0, 1.0))) }
                            td.num { (format!("{:.4}", s.p)) }
                        } } }
                    } }
                }
            }
        }
        section aria-labelledby="diff-h" {
            h2 #diff-h { "What changes" }
            @match &replaced {
                Some(r) => { (diff_view(r, &v, true)) }
                None => { p.note { "The first version: nothing to compare with." } (prompt_file(&file)) }
            }
        }
        section aria-labelledby="ev-h" {
            h2 #ev-h { "Evidence" }
            (evidence_table(&ev, &seqs))
            @if let Some(r) = &replaced { h3 { "Evidence of v" (r.seq) } (evidence_table(&old_ev, &seqs)) }
        }
        section aria-labelledby="checks-h" {
            h2 #checks-h { "Constraint checks" }
            @if kept.is_empty() && v.checks.is_none() { p.note { "No protected constraints." } }
            ul.checks { @for (c, ok) in &kept { li.{ @if *ok { "ok" } @else { "fail" } } {
                @if *ok { "kept: " } @else { "MISSING: " } q { (c) }
            } } }
            @if let Some(c) = &v.checks { details { summary { "checks recorded when it was made" } pre { (serde_json::to_string_pretty(c).unwrap_or_default()) } } }
        }
        section aria-labelledby="cost-h" {
            h2 #cost-h { "Cost and what it pays back" }
            p {
                @match (new_cost, old_cost) {
                    (Some(n), Some(o)) => {
                        "Per execution " (usd(n)) " against " (usd(o)) " (" (if n >= o { "+" } else { "−" }) (usd((n - o).abs())) ")."
                        @if let Some(g) = gain {
                            @if n > o && g > 0.0 { " Each point of score costs " (usd((n - o) / (g * 100.0))) " more per execution." }
                            @else if n <= o && g >= 0.0 { " Better or as good, for no more money." }
                            @else { " Score " (format!("{g:+.3}")) "." }
                        }
                    }
                    (Some(n), None) => { "Per execution " (usd(n)) "; the version it replaces has no cost on record." }
                    _ => { "No cost on record: the model is unpriced." }
                }
            }
        }
        section aria-labelledby="decide-h" {
            h2 #decide-h { "Decision" }
            @if v.review != ReviewState::Proposed {
                p { "This version is " strong { (v.review.as_str()) } "." }
                @if let Some(f) = label_flag(&v) {
                    @let at: Vec<&str> = labels.iter().filter(|l| l.hash == v.hash).map(|l| l.label.as_str()).collect();
                    @if !at.is_empty() { p.error { "Labels pointing at it, flagged " (f) ": " (at.join(", ")) } }
                }
            } @else if can_review {
                @if ev.is_empty() {
                    p.error.no-evidence role="note" {
                        strong { "This version has no evidence: nothing was scored." }
                        " Approving it ships an unmeasured prompt; evaluate it on a task first."
                    }
                }
                form.decide method="post" action={ "/review/" (encode(&name)) "/v" (v.seq) } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="comment" { "Comment (a rejection needs one)" }
                    textarea #comment name="comment" rows="3" {}
                    div.buttons {
                        button #approve type="submit" name="decision" value="approve" { "Approve" }
                        button #reject type="submit" name="decision" value="reject" { "Reject" }
                    }
                }
            } @else {
                p.note { "Signed in as " (session.caller.name) " (" (session.caller.role.to_string()) "): deciding needs the reviewer role." }
            }
        }
        section aria-labelledby="audit-h" {
            h2 #audit-h { "Audit log" }
            (events_table(&events, &seqs))
        }
    };
    Ok(layout(
        &format!("Review {name}@v{}", v.seq),
        Some(&session),
        Nav::Review,
        body,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    comment: String,
}

/// `POST /review/{name}/{version}`: approve or reject (reviewer), then back to the page.
pub async fn decide(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path((name, reference)): Path<(String, String)>,
    f: Result<Form<DecideForm>, FormRejection>,
) -> PageResult {
    let f = form(f)?;
    check_form(&session, &headers, &f.csrf)?;
    session.caller.require(Role::Reviewer)?;
    let decision = match f.decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        other => {
            return Err(PageError(ApiError::invalid(
                "decision",
                format!("`{other}`: expected approve or reject"),
            )));
        }
    };
    let comment = Some(f.comment.trim().to_string()).filter(|c| !c.is_empty());
    let v = resolve(&state, &name, &reference, "version").await?;
    let v = crate::library::decide(&state, &session.caller, v, decision, comment).await?;
    Ok(Redirect::to(&format!(
        "/review/{}/v{}?decided={}",
        encode(&name),
        v.seq,
        decision.as_str()
    ))
    .into_response())
}
