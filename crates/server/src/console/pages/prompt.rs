//! `GET /prompts/{name}`: a prompt's versions, labels, evidence and events.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use maud::html;
use metaprompt_registry::model::{Event, ReviewState, Version};
use metaprompt_registry::policy::label_flag;
use serde::Deserialize;

use crate::AppState;
use crate::console::charts::{self};
use crate::console::{Nav, PageResult, Session, encode, layout};
use crate::error::{self};

use super::*;

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
