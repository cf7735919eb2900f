//! `GET /`: the library, every prompt with its labels, evidence and recent outcomes.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::html;
use metaprompt_registry::policy::PRODUCTION;
use serde::Deserialize;

use crate::AppState;
use crate::console::charts::{self};
use crate::console::{Nav, PageError, PageResult, Session, encode, layout};
use crate::error::{self, ApiError};

use super::*;

/// Days of outcomes in the library's sparklines.
const SPARK_DAYS: i64 = 14;

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
