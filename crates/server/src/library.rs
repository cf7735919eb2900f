//! The library and review over HTTP: prompts, versions (with evidence), labels, diffs, runs, the
//! audit trail; adding versions, moving and rolling back labels, approving and rejecting. Every
//! write goes through the library's rules ([`metaprompt_registry::Store`]), so the policy is the
//! CLI's: a machine-made version reaches `production` only after approval when the prompt says
//! so, whoever asks.
//!
//! A version whose templates go over the `[templates]` render limits with its own
//! demonstrations is refused (400) before anything is stored.
//!
//! Roles: reads need `viewer`; adding versions and moving labels other than `production` need
//! `editor`; moving `production` and review decisions need `reviewer`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use metaprompt_eval::prompt::PromptFile;
use metaprompt_registry::model::{Decision, LabelMove, NewVersion, Origin, Version};
use metaprompt_registry::policy::PRODUCTION;
use metaprompt_registry::service::Role;
use metaprompt_registry::{Store, content};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::{Body, Params};
use crate::error::{self, ApiError, ApiResult};

async fn version(
    store: &dyn Store,
    name: &str,
    reference: &str,
    param: &str,
) -> ApiResult<Version> {
    let r = metaprompt_registry::model::VersionRef::parse(&format!("{name}@{reference}"))
        .map_err(|e| error::library(e, param))?;
    store
        .resolve(&r)
        .await
        .map_err(|e| error::library(e, param))
}

/// `GET /v1/prompts`
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let prompts = state
        .library
        .prompts()
        .await
        .map_err(|e| error::library(e, "prompts"))?;
    Ok(Json(json!({ "prompts": prompts })))
}

/// `GET /v1/prompts/{name}/versions`
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let versions = state
        .library
        .versions(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    if versions.is_empty() {
        // `versions` of an unknown prompt is empty; resolving it says it is unknown (a 404).
        let r = metaprompt_registry::model::VersionRef::parse(&name)
            .map_err(|e| error::library(e, "name"))?;
        state
            .library
            .resolve(&r)
            .await
            .map_err(|e| error::library(e, "name"))?;
    }
    Ok(Json(json!({ "versions": versions })))
}

/// `GET /v1/prompts/{name}/versions/{version}`: the version with its evidence.
pub async fn show_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, reference)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let v = version(state.library.as_ref(), &name, &reference, "version").await?;
    let evidence = state
        .library
        .evidence(&v)
        .await
        .map_err(|e| error::library(e, "version"))?;
    Ok(Json(json!({ "version": v, "evidence": evidence })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// The prompt file as JSON (the fields of a prompt TOML file).
    pub file: Option<Value>,
    /// Or the prompt file as TOML text.
    pub toml: Option<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    pub message: Option<String>,
}

/// `POST /v1/prompts/{name}/versions`: add a version made by a person (editor).
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<AddBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Editor)?;
    let mut file: PromptFile = match (body.file, body.toml) {
        (Some(v), None) => serde_json::from_value(v)
            .map_err(|e| ApiError::invalid("file", format!("not a prompt file: {e}")))?,
        (None, Some(t)) => toml::from_str(&t).map_err(|e| {
            ApiError::invalid(
                "toml",
                format!("not a prompt file: {}", e.to_string().trim_end()),
            )
        })?,
        _ => {
            return Err(ApiError::invalid(
                "file",
                "send the prompt as `file` (a JSON object) or `toml` (text), one of them",
            ));
        }
    };
    if file.name.is_empty() {
        file.name.clone_from(&name);
    }
    file.validate().map_err(|m| ApiError::invalid("file", m))?;
    let mut parents = Vec::new();
    for (k, p) in body.parents.iter().enumerate() {
        parents.push(
            version(state.library.as_ref(), &name, p, &format!("parents[{k}]"))
                .await?
                .hash,
        );
    }
    // The library refuses a version that goes over the render limits (`[templates]`, set
    // when the engine opened) with its own demonstrations.
    let mut new = NewVersion::new(&name, file, Origin::Human, &caller.name);
    new.parents = parents;
    new.message = body.message;
    let added = state
        .library
        .add(new)
        .await
        .map_err(|e| error::library(e, "file"))?;
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "version": added.version, "created": added.created })),
    ))
}

/// `GET /v1/prompts/{name}/labels`: each label and canary with its `flag`: `"rejected"` when it
/// points at a version rejected in review ([`metaprompt_registry::policy::label_flag`]), else
/// null.
pub async fn labels(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let labels = state
        .library
        .labels(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let splits = state
        .library
        .splits(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    let versions = if labels.is_empty() {
        Vec::new()
    } else {
        state
            .library
            .versions(&name)
            .await
            .map_err(|e| error::library(e, "name"))?
    };
    let flagged = |hash: &str, item: Value| {
        let flag = versions
            .iter()
            .find(|v| v.hash == hash)
            .and_then(metaprompt_registry::policy::label_flag);
        let mut item = item;
        item["flag"] = json!(flag);
        item
    };
    let labels: Vec<Value> = labels.iter().map(|l| flagged(&l.hash, json!(l))).collect();
    let splits: Vec<Value> = splits.iter().map(|s| flagged(&s.hash, json!(s))).collect();
    Ok(Json(json!({ "labels": labels, "splits": splits })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelBody {
    /// `v4`, a hash prefix, or another label.
    pub version: String,
    pub comment: Option<String>,
    /// Point the label at a version rejected in review anyway (never `production`); the label
    /// is then flagged `rejected` wherever it shows.
    #[serde(default)]
    pub force: bool,
}

fn label_role(label: &str) -> Role {
    if label == PRODUCTION {
        Role::Reviewer
    } else {
        Role::Editor
    }
}

/// `PUT /v1/prompts/{name}/labels/{label}`: point a label at a version.
pub async fn move_label(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, label)): Path<(String, String)>,
    Body(body): Body<LabelBody>,
) -> ApiResult<Json<Value>> {
    caller.require(label_role(&label))?;
    let to = version(state.library.as_ref(), &name, &body.version, "version").await?;
    let moved = state
        .library
        .move_label_with(
            &LabelMove {
                prompt: name.clone(),
                label,
                to: Some(to.hash),
                actor: caller.name.clone(),
                comment: body.comment,
            },
            body.force,
        )
        .await
        .map_err(|e| error::library(e, "label"))?;
    state.resolver.forget(&name);
    let flag = metaprompt_registry::policy::label_flag(&moved.to);
    Ok(Json(json!({ "moved": moved, "flag": flag })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub comment: Option<String>,
}

/// `POST /v1/prompts/{name}/labels/{label}/rollback`: back to where the label pointed before.
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, label)): Path<(String, String)>,
    Body(body): Body<RollbackBody>,
) -> ApiResult<Json<Value>> {
    caller.require(label_role(&label))?;
    let moved = state
        .library
        .move_label(&LabelMove {
            prompt: name.clone(),
            label,
            to: None,
            actor: caller.name.clone(),
            comment: body.comment,
        })
        .await
        .map_err(|e| error::library(e, "label"))?;
    state.resolver.forget(&name);
    Ok(Json(json!({ "moved": moved })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    /// The canary: `v4`, a hash prefix.
    pub version: String,
    /// Percent of the label's requests it serves, in (0, 100).
    pub weight: f64,
    pub comment: Option<String>,
}

/// `PUT /v1/prompts/{name}/labels/{label}/split`: canary a version on a label.
pub async fn set_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, label)): Path<(String, String)>,
    Body(body): Body<SplitBody>,
) -> ApiResult<Json<Value>> {
    caller.require(label_role(&label))?;
    if !(body.weight > 0.0 && body.weight < 100.0) {
        return Err(ApiError::invalid(
            "weight",
            format!(
                "{}: expected a percent between 0 and 100 (exclusive); move the label to give a version all traffic, DELETE the split to end it",
                body.weight
            ),
        ));
    }
    let to = version(state.library.as_ref(), &name, &body.version, "version").await?;
    let split = state
        .library
        .set_split(&metaprompt_registry::SplitChange {
            prompt: name.clone(),
            label,
            to: Some(to.hash),
            weight: body.weight,
            actor: caller.name.clone(),
            comment: body.comment,
        })
        .await
        .map_err(|e| error::library(e, "label"))?;
    state.resolver.forget(&name);
    Ok(Json(json!({ "split": split })))
}

/// `DELETE /v1/prompts/{name}/labels/{label}/split`: the label serves only its version again.
pub async fn end_split(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, label)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require(label_role(&label))?;
    state
        .library
        .set_split(&metaprompt_registry::SplitChange {
            prompt: name.clone(),
            label: label.clone(),
            to: None,
            weight: 0.0,
            actor: caller.name.clone(),
            comment: None,
        })
        .await
        .map_err(|e| error::library(e, "label"))?;
    state.resolver.forget(&name);
    Ok(Json(json!({ "split": null })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    pub from: String,
    pub to: String,
}

/// `GET /v1/prompts/{name}/diff?from=v1&to=v2`: a unified diff of the two files.
pub async fn diff(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Params(q): Params<DiffQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let a = version(state.library.as_ref(), &name, &q.from, "from").await?;
    let b = version(state.library.as_ref(), &name, &q.to, "to").await?;
    let text = content::diff(&a.reference(), &a.content, &b.reference(), &b.content);
    Ok(Json(json!({
        "from": a.reference(), "to": b.reference(), "same": text.is_empty(), "diff": text,
    })))
}

/// `GET /v1/prompts/{name}/events`: the audit trail.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let events = state
        .library
        .events(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    Ok(Json(json!({ "events": events })))
}

/// `GET /v1/prompts/{name}/runs`: the runs that made its versions.
pub async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let runs = state
        .library
        .runs(&name)
        .await
        .map_err(|e| error::library(e, "name"))?;
    Ok(Json(json!({ "runs": runs })))
}

/// `GET /v1/library/runs/{id}`: one stored run with its candidates.
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let run = state
        .library
        .run(&id)
        .await
        .map_err(|e| error::library(e, "id"))?;
    Ok(Json(json!({ "run": run })))
}

/// `GET /v1/review`: every version waiting for a decision, with its evidence.
pub async fn queue(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let proposed = state
        .library
        .proposed()
        .await
        .map_err(|e| error::library(e, "review"))?;
    let mut items = Vec::new();
    for v in proposed {
        let evidence = state
            .library
            .evidence(&v)
            .await
            .map_err(|e| error::library(e, "review"))?;
        items.push(json!({ "version": v, "evidence": evidence }));
    }
    Ok(Json(json!({ "proposed": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// `approve` or `reject`.
    pub decision: String,
    /// Why; required for a rejection.
    pub comment: Option<String>,
}

/// `POST /v1/prompts/{name}/versions/{version}/review`: approve or reject (reviewer).
pub async fn review(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, reference)): Path<(String, String)>,
    Body(body): Body<ReviewBody>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Reviewer)?;
    let decision = match body.decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        other => {
            return Err(ApiError::invalid(
                "decision",
                format!("`{other}`: expected `approve` or `reject`"),
            ));
        }
    };
    let comment = body.comment.filter(|c| !c.trim().is_empty());
    if decision == Decision::Reject && comment.is_none() {
        return Err(ApiError::invalid(
            "comment",
            "a rejection needs a reason in `comment`",
        ));
    }
    let v = version(state.library.as_ref(), &name, &reference, "version").await?;
    let v = decide(&state, &caller, v, decision, comment).await?;
    Ok(Json(json!({ "version": v })))
}

/// Record a review decision by `caller` (whose role the caller checked) and tell the webhooks:
/// the one path of the API and the console.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    v: Version,
    decision: Decision,
    comment: Option<String>,
) -> ApiResult<Version> {
    if decision == Decision::Reject && comment.is_none() {
        return Err(ApiError::invalid(
            "comment",
            "a rejection needs a reason in `comment`",
        ));
    }
    let v = state
        .library
        .review(&v, decision, &caller.name, comment.as_deref())
        .await
        .map_err(|e| error::library(e, "version"))?;
    state.resolver.forget(&v.prompt);
    Ok(v)
}
