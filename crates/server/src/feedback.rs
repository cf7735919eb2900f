//! Outcomes: `POST /v1/feedback` (one) and `POST /v1/feedback:batch` (many, all or nothing),
//! and reading an inference back with its feedback. A score is a number in [0, 1], a bool
//! (true = 1) or a label (kept as the label, no score); a `correction` is the output it should
//! have been, which makes the inference a labelled example.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use metaprompt_registry::service::{Feedback, FeedbackSource, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Score {
    Bool(bool),
    Number(f64),
    Label(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    pub inference_id: String,
    pub score: Option<Score>,
    pub correction: Option<String>,
    pub comment: Option<String>,
    /// `user` (default), `metric` or `human`.
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub items: Vec<FeedbackBody>,
}

fn to_feedback(b: FeedbackBody, caller: &Caller, param: &str) -> ApiResult<Feedback> {
    let field = |f: &str| format!("{param}{f}");
    let (score, label) = match b.score {
        None => (None, None),
        Some(Score::Bool(v)) => (Some(if v { 1.0 } else { 0.0 }), None),
        Some(Score::Number(n)) if (0.0..=1.0).contains(&n) => (Some(n), None),
        Some(Score::Number(n)) => {
            return Err(ApiError::invalid(
                field("score"),
                format!("{n} is outside [0, 1]; send a number in [0, 1], a bool or a label"),
            ));
        }
        Some(Score::Label(l)) if !l.trim().is_empty() && l.len() <= 256 => (None, Some(l)),
        Some(Score::Label(_)) => {
            return Err(ApiError::invalid(
                field("score"),
                "a label score is 1 to 256 characters",
            ));
        }
    };
    if score.is_none() && label.is_none() && b.correction.is_none() && b.comment.is_none() {
        return Err(ApiError::invalid(
            field("score"),
            "feedback needs a `score`, a `correction` or a `comment`",
        ));
    }
    let source = match b.source.as_deref() {
        None => FeedbackSource::User,
        Some(s) => FeedbackSource::parse(s)
            .map_err(|e| ApiError::invalid(field("source"), e.to_string()))?,
    };
    Ok(Feedback {
        inference_id: b.inference_id,
        score,
        label,
        correction: b.correction,
        comment: b.comment,
        source,
        caller: caller.name.clone(),
        created_at: Utc::now(),
    })
}

/// Refuse feedback on inferences that do not exist (404, naming the first).
async fn check_known(state: &AppState, items: &[Feedback], prefix: &str) -> ApiResult<()> {
    let ids: Vec<String> = items.iter().map(|f| f.inference_id.clone()).collect();
    let known = state
        .service
        .known(&ids)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read inferences: {e}")))?;
    if let Some((k, f)) = items
        .iter()
        .enumerate()
        .find(|(_, f)| !known.contains(&f.inference_id))
    {
        let param = if prefix.is_empty() {
            "inference_id".to_string()
        } else {
            format!("items[{k}].inference_id")
        };
        return Err(ApiError::not_found(
            param,
            format!(
                "no inference `{}` (ids come from a run's `inference_id`)",
                f.inference_id
            ),
        ));
    }
    Ok(())
}

async fn store(state: &AppState, items: Vec<Feedback>) -> ApiResult<usize> {
    let n = items.len();
    let result = state
        .recorder
        .record_counted(Vec::new(), items, &state.metrics)
        .await;
    result.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_recorded",
            format!("the feedback could not be recorded, so it is not acknowledged: {e}"),
        )
    })?;
    state.metrics.feedback.inc_by(n as u64);
    Ok(n)
}

/// `POST /v1/feedback`
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<FeedbackBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Runner)?;
    let f = to_feedback(body, &caller, "")?;
    check_known(&state, std::slice::from_ref(&f), "").await?;
    let id = f.inference_id.clone();
    store(&state, vec![f]).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"recorded": 1, "inference_id": id})),
    ))
}

/// `POST /v1/feedback:batch`: every item is checked first; one bad item refuses the batch.
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<BatchBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Runner)?;
    if body.items.is_empty() {
        return Err(ApiError::invalid("items", "the batch is empty"));
    }
    if body.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!(
                "{} items; a batch holds at most {MAX_BATCH}",
                body.items.len()
            ),
        ));
    }
    let items = body
        .items
        .into_iter()
        .enumerate()
        .map(|(k, b)| to_feedback(b, &caller, &format!("items[{k}].")))
        .collect::<ApiResult<Vec<_>>>()?;
    check_known(&state, &items, "items").await?;
    let n = store(&state, items).await?;
    Ok((StatusCode::CREATED, Json(json!({"recorded": n}))))
}

/// `GET /v1/inferences/{id}`: what ran, and every outcome reported for it.
pub async fn inference(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let i = state
        .service
        .inference(&id)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read inferences: {e}")))?
        .ok_or_else(|| ApiError::not_found("id", format!("no inference `{id}`")))?;
    let feedback = state
        .service
        .feedback(&id)
        .await
        .map_err(|e| ApiError::internal(format!("cannot read feedback: {e}")))?;
    Ok(Json(json!({"inference": i, "feedback": feedback})))
}
