//! The library, a prompt, a diff, the review queue and a proposal: one file per page, with
//! what several pages show (a prompt as the model sees it, its file, evidence, events) in
//! `show`, and the pages' shared helpers here.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use metaprompt_registry::model::Version;
use metaprompt_registry::policy::label_flag;

use super::PageError;
use crate::AppState;
use crate::error::{self, ApiError};

mod diff;
mod library;
mod prompt;
mod review;
mod show;

pub use diff::{diff, diff_texts, diff_view};
pub use library::library;
pub use prompt::prompt;
pub use review::{decide, proposal, queue};
use show::events_table;
pub use show::{as_seen, evidence_table, prompt_file};

/// Prompts per page of the library.
pub const PAGE: usize = 50;

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
