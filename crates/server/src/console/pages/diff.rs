//! `GET /prompts/{name}/diff`: two versions side by side or inline.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use maud::{Markup, html};
use metaprompt_registry::model::Version;
use serde::Deserialize;

use crate::AppState;
use crate::console::charts::{self};
use crate::console::{Nav, PageError, PageResult, Session, encode, layout};
use crate::error::{self, ApiError};

use super::*;

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
