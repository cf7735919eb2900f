//! `GET /agent`: the prompt-engineer agent as it works, over what `GET /v1/agent` reads.
//!
//! ```text
//! Shared::agent_progress (in memory) ──> Pass: running or idle, since when, its last lines
//! metaprompt_agent::status (library)  ──> Untested slices: too few scored outcomes, what they need
//!                                     ──> Cases: state, why each waits, spend, diagnosis,
//!                                         proposal (/review/NAME/vN), run (/prompts/NAME#run-ID)
//! console.js ──GET /agent/live every 2 s while a pass runs (15 s idle)──> the Pass part
//! ```
//!
//! - A case's row is `#case-ID`: the proposal page links to it from the diagnosis.
//! - The waiting reason is the case's own `waiting` field, word for word; where it has none
//!   the page says, greyed, what a live case waits for by its state (a reviewer, the canary).
//! - Text that may carry error output (progress lines, waiting reasons, attempts) is masked as
//!   the API masks it ([`crate::secrets::Secrets`]) and escaped by maud like everything else.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use metaprompt_agent::monitor::Shortfall;
use metaprompt_agent::{Case, State as CaseState};
use serde::Deserialize;

use super::charts::{plural, usd};
use super::pages::{known, query, when};
use super::{Nav, PageError, PageResult, Session, encode, layout};
use crate::AppState;
use crate::agent::Pass;
use crate::error::{self, ApiError};
use crate::secrets::Secrets;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    prompt: Option<String>,
}

/// `12 s`, `3 min 05 s`, `2 h 04 min`.
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The part of the page that follows a pass (also `GET /agent/live`).
fn pass_part(
    p: &Pass,
    now: DateTime<Utc>,
    every: Option<std::time::Duration>,
    secrets: &Secrets,
) -> Markup {
    let lines = |p: &Pass| {
        let text: Vec<String> = p.lines.iter().map(|l| secrets.public(l)).collect();
        html! {
            @if p.dropped > 0 { p.note { "(" (plural(p.dropped, "earlier line", "earlier lines")) " not kept)" } }
            pre.pass-lines { (text.join("\n")) }
        }
    };
    html! {
        @if p.running {
            p.state data-running="true" {
                span.badge.s-running { "running" }
                @if let Some(t) = &p.started_at { " · for " (duration((now - *t).num_seconds())) " since " (when(t)) }
            }
            (lines(p))
        } @else {
            p.state data-running="false" {
                span.badge { "idle" }
                @match (&p.started_at, &p.finished_at) {
                    (Some(s), Some(f)) => { " · the last pass began " (when(s)) " and took " (duration((*f - *s).num_seconds())) }
                    _ => { " · no pass since the server started" }
                }
                " · "
                @match every {
                    Some(d) => { "a pass runs every " (duration(d.as_secs() as i64)) " (" code { "serve --agent" } ")" }
                    None => { "passes run on " code { "POST /v1/agent/pass" } " (editor) or with " code { "serve --agent" } }
                }
            }
            @if !p.lines.is_empty() {
                details { summary { "what the last pass did (" (plural(p.lines.len(), "line", "lines")) ")" } (lines(p)) }
            }
        }
    }
}

/// The state in words.
fn state_words(c: &Case) -> String {
    match c.state {
        CaseState::Open => "no proposal yet".into(),
        CaseState::Attempted => "no proposal passed the checks".into(),
        CaseState::Proposed => "in the review queue".into(),
        CaseState::Rejected => "a reviewer rejected the proposal".into(),
        CaseState::Canary => match &c.canary {
            Some(k) => format!("serves {:.0}% of {}", k.weight, k.label),
            None => "serves a share of the label's traffic".into(),
        },
        CaseState::Promoted => format!("{} moved to the proposal", c.label),
        CaseState::RolledBack => "the canary did worse and was ended".into(),
        CaseState::Superseded => "its label or split was changed by someone else".into(),
    }
}

/// Why the case is not being worked on: its own reason, else what its state waits for
/// (`running`: a pass runs now).
fn waiting(c: &Case, running: bool) -> Markup {
    if let Some(w) = &c.waiting {
        return html! { span.waiting { (w) } };
    }
    let implied = match c.state {
        CaseState::Open => match &c.search {
            Some(s) if s.stopped_at.is_none() && running => {
                "nothing: its search may be running now"
            }
            Some(_) => "its search, which the next pass resumes",
            None => "the next pass",
        },
        CaseState::Proposed => "a reviewer's decision",
        CaseState::Canary => "the canary's live outcomes",
        _ => "nothing: the case is closed",
    };
    html! { span.note { (implied) } }
}

fn spend(c: &Case, today: DateTime<Utc>) -> Markup {
    let calls: u64 = c.spent.iter().map(|s| s.calls).sum();
    let dollars: f64 = c.spent.iter().map(|s| s.usd).sum();
    let now = c.calls_since(today);
    html! {
        @if calls == 0 { span.note { "no calls" } } @else {
            (plural(calls as usize, "call", "calls"))
            @if now > 0 && now < calls { " (" (now) " today)" }
            " · " @if dollars > 0.0 { (usd(dollars)) } @else { span.note { "no price on record" } }
        }
    }
}

/// The run a case's search recorded (in progress or stopped), else its proposal's or last
/// attempt's; with the library's run of the same folder where there is one.
fn run(c: &Case, runs: &[(String, String)]) -> Markup {
    let dir = c
        .search
        .as_ref()
        .map(|s| s.run_dir.as_str())
        .or(c.proposal.as_ref().map(|p| p.run_dir.as_str()))
        .or(c.attempts.iter().rev().find_map(|a| a.run_dir.as_deref()));
    let Some(dir) = dir else {
        return html! { span.note { "none yet" } };
    };
    let trim = |d: &str| d.trim_end_matches('/').to_string();
    let library = runs.iter().find(|(_, d)| {
        let (a, b) = (std::path::Path::new(d), std::path::Path::new(dir));
        trim(d) == trim(dir) || a.starts_with(b) || b.starts_with(a)
    });
    html! {
        @if let Some(s) = &c.search {
            (s.algorithm) " search since " (when(&s.started_at))
            @if let Some(t) = &s.stopped_at { ", stopped " (when(t)) " (the next pass resumes it)" }
            br;
        }
        @if let Some((id, _)) = library { a.run href={ "/prompts/" (encode(&c.prompt)) "#run-" (id) } { "run " code { (id) } } br; }
        code.dir { (dir) }
    }
}

fn case_row(c: &Case, runs: &[(String, String)], today: DateTime<Utc>, running: bool) -> Markup {
    let review = c
        .proposal
        .as_ref()
        .map(|p| format!("/review/{}/v{}", encode(&c.prompt), p.version.seq));
    html! {
        tr #{ "case-" (c.id) } {
            td.case { code { (c.id) } br; span.note { "opened " (when(&c.opened_at)) } }
            td { a href={ "/prompts/" (encode(&c.prompt)) } { (c.prompt) } }
            td.slice { code { (c.slice.to_string()) } br; span.note { (format!("{:.3}", c.finding.mean)) " against " (format!("{:.3}", c.finding.reference_mean)) } }
            td.state { span.badge.{ "c-" (c.state.as_str()) } { (c.state.as_str().replace('_', " ")) } br; (state_words(c)) }
            td.waiting { (waiting(c, running)) }
            td.spend { (spend(c, today)) }
            td.diagnosis {
                @if let Some(d) = &c.diagnosis {
                    details { summary { "hypothesis" } blockquote { (d.hypothesis) } p.note { (d.summary) " · written by " code { (d.model) } } }
                    @if let Some(r) = &review { a.diagnosis href={ (r) "#diag-h" } { "the diagnosis" } }
                } @else { span.note { "none yet" } }
            }
            td.proposal {
                @if let (Some(p), Some(r)) = (&c.proposal, &review) {
                    a.proposal href=(r) { (c.prompt) "@v" (p.version.seq) } " · " (p.algorithm)
                    @if let Some(k) = p.checks.first() { br; span.note { (format!("{:+.3}", k.diff)) " on " (k.slice) } }
                } @else if c.attempts.is_empty() { span.note { "none yet" } } @else {
                    details {
                        summary { (plural(c.attempts.len(), "search", "searches")) " filed nothing" }
                        ul { @for a in &c.attempts { li { (when(&a.at)) ": " (a.why) } } }
                    }
                }
            }
            td.run { (run(c, runs)) }
        }
    }
}

fn untested_table(rows: &[Shortfall], secrets: &Secrets) -> Markup {
    html! {
        div.scroll { table.untested {
            thead { tr { th scope="col" { "prompt" } th scope="col" { "slice" } th scope="col" { "scored now" }
                th scope="col" { "window before" } th scope="col" { "rest of traffic" } th scope="col" { "what it needs" } } }
            tbody { @for s in rows { tr {
                td { a href={ "/prompts/" (encode(&s.prompt)) } { (s.prompt) } }
                td.slice { code { (secrets.public(&s.slice.to_string())) } }
                td.num { (s.n) } td.num { (s.baseline_n) } td.num { (s.rest_n) }
                td { (secrets.public(&s.why)) }
            } } }
        } }
    }
}

/// `GET /agent[?prompt=NAME]`
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    q: Result<Query<AgentQuery>, QueryRejection>,
) -> PageResult {
    let q = query(q)?;
    if let Some(p) = &q.prompt {
        known(&state, p, "prompt").await?;
    }
    let now = Utc::now();
    let prompt = q.prompt.as_deref();
    // Without a valid policy nothing is tested, but the stored cases still show.
    let (untested, cases, policy_error) = match &state.agent_settings {
        Ok(settings) => {
            let s = metaprompt_agent::status(state.service.as_ref(), settings, prompt, now)
                .await
                .map_err(|e| PageError(ApiError::internal(format!("the agent's state: {e}"))))?;
            (Some((s.untested, s.min_n)), s.cases, None)
        }
        Err(e) => {
            let rows =
                state.service.cases(prompt).await.map_err(|e| {
                    PageError(ApiError::internal(format!("the agent's cases: {e}")))
                })?;
            let cases = rows
                .iter()
                .map(Case::from_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PageError(ApiError::internal(e)))?;
            (None, cases, Some(e.clone()))
        }
    };
    // As the API shows them: secrets masked in every string a case carries (masking keeps
    // the shape, so each still reads back as a case).
    let mut cases: Vec<Case> = cases
        .into_iter()
        .filter_map(|c| {
            let v = state
                .secrets
                .public_json(serde_json::to_value(&c).unwrap_or_default());
            serde_json::from_value(v).ok()
        })
        .collect();
    cases.sort_by(|a, b| {
        b.state
            .is_live()
            .cmp(&a.state.is_live())
            .then(b.updated_at.cmp(&a.updated_at))
    });
    let mut runs: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for c in &cases {
        if !runs.contains_key(&c.prompt) {
            let r = state
                .library
                .runs(&c.prompt)
                .await
                .map_err(|e| error::library(e, "prompt"))?;
            let dirs = r.into_iter().filter_map(|r| Some((r.id, r.dir?))).collect();
            runs.insert(c.prompt.clone(), dirs);
        }
    }
    let today = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| d.and_utc());
    let live = cases.iter().filter(|c| c.state.is_live()).count();
    let pass = state.agent_progress.snapshot();
    let every = state.options.agent_interval;
    let body = html! {
        h1 { "Agent" @if let Some(p) = &q.prompt { ": " (p) } }
        p.note { "The prompt-engineer agent: what its pass is doing, the slices it cannot test yet, and its cases (what "
            code { "GET /v1/agent" } " returns)." }
        @if let Some(e) = &policy_error {
            p.error role="alert" { "The agent's policy (" code { "[agent]" } ") is not valid, so nothing is tested: " (e) }
        }
        section aria-labelledby="pass-h" {
            h2 #pass-h { "Pass" }
            div #agent-pass data-running=(pass.running) aria-live="polite" { (pass_part(&pass, now, every, &state.secrets)) }
        }
        section aria-labelledby="untested-h" {
            h2 #untested-h { "Untested slices" }
            @match &untested {
                None => { p.note { "Not computed without a valid policy." } }
                Some((rows, _)) if rows.is_empty() => { p.note { "Every slice with traffic has enough scored outcomes to test." } }
                Some((rows, min_n)) => {
                    p.note { (plural(rows.len(), "slice", "slices")) " with too few scored outcomes to test (each side of a test needs "
                        (min_n) "): no finding can come from them yet." }
                    (untested_table(rows, &state.secrets))
                }
            }
        }
        section aria-labelledby="cases-h" {
            h2 #cases-h { "Cases" }
            @if cases.is_empty() { p.note { "No cases: no slice has been found worse." } } @else {
                p.note { (plural(cases.len(), "case", "cases")) ", " (live) " live" }
                div.scroll { table.agent-cases {
                    thead { tr { th scope="col" { "case" } th scope="col" { "prompt" } th scope="col" { "slice" } th scope="col" { "state" }
                        th scope="col" { "why it waits" } th scope="col" { "calls · spend" } th scope="col" { "diagnosis" }
                        th scope="col" { "proposal" } th scope="col" { "run" } } }
                    tbody { @for c in &cases { (case_row(c, runs.get(&c.prompt).map_or(&[][..], Vec::as_slice), today, pass.running)) } }
                } }
            }
        }
    };
    Ok(layout("Agent", Some(&session), Nav::Agent, body).into_response())
}

/// `GET /agent/live`: the pass part alone, for `console.js`.
pub async fn live(State(state): State<AppState>, _session: Session) -> PageResult {
    let pass = state.agent_progress.snapshot();
    let part = pass_part(
        &pass,
        Utc::now(),
        state.options.agent_interval,
        &state.secrets,
    );
    Ok(Html(part.into_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_env(&metaprompt_llm::Config::default(), &[], [])
    }

    #[test]
    fn a_running_pass_shows_its_lines_escaped_with_the_time_since_it_began() {
        let now = Utc::now();
        let pass = Pass {
            running: true,
            started_at: Some(now - chrono::Duration::seconds(75)),
            finished_at: None,
            lines: vec![
                "[   0.0s] reading the inference and feedback log".into(),
                "[   1.5s] case c1 (<b>x</b> all traffic): collecting".into(),
            ],
            dropped: 1,
        };
        let html = pass_part(&pass, now, None, &secrets()).into_string();
        assert!(html.contains("data-running=\"true\""), "{html}");
        assert!(html.contains("for 1 min 15 s since"), "{html}");
        assert!(
            html.contains("reading the inference and feedback log\n[   1.5s]"),
            "{html}"
        );
        assert!(
            html.contains("&lt;b&gt;x&lt;/b&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("1 earlier line not kept"), "{html}");
        let idle = Pass {
            running: false,
            finished_at: Some(now),
            ..pass
        };
        let html = pass_part(
            &idle,
            now,
            Some(std::time::Duration::from_secs(600)),
            &secrets(),
        )
        .into_string();
        assert!(
            html.contains("data-running=\"false\"") && html.contains("took 1 min 15 s"),
            "{html}"
        );
        assert!(
            html.contains("every 10 min 00 s") && html.contains("2 lines"),
            "{html}"
        );
        let never = pass_part(&Pass::default(), now, None, &secrets()).into_string();
        assert!(
            never.contains("no pass since the server started"),
            "{never}"
        );
    }

    #[test]
    fn durations_read_as_words() {
        assert_eq!(duration(-3), "0 s");
        assert_eq!(duration(59), "59 s");
        assert_eq!(duration(65), "1 min 05 s");
        assert_eq!(duration(3 * 3600 + 120), "3 h 02 min");
    }
}
