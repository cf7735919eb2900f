//! The review queue, a proposal's page, and the reviewer's decision.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use metaprompt_registry::model::{Decision, Event, Evidence, ReviewState, Version};
use metaprompt_registry::policy::{PRODUCTION, label_flag};
use metaprompt_registry::service::Role;
use serde::Deserialize;

use crate::AppState;
use crate::console::charts::{self, usd};
use crate::console::{Nav, PageError, PageResult, Session, check_form, encode, layout};
use crate::error::{self, ApiError};

use super::*;

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
