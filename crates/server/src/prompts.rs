//! Prompts by reference: fetch (with an ETag, so clients revalidate for a 304), render, run.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metaprompt_eval::metric::{EqualsOptions, MetricConfig, MetricKind, MetricSpec};
use metaprompt_registry::service::Role;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::body::{Body, Params};
use crate::error::{ApiError, ApiResult};
use crate::gateway::{self, Online, RunSpec, Target};

/// `?label=` or `?version=` (default: `label=production`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefQuery {
    pub label: Option<String>,
    pub version: Option<String>,
    /// Who is asking (a user or session id): with a traffic split, the same key always gets
    /// the same version.
    pub split_key: Option<String>,
}

/// What a client needs to use a version.
#[derive(Debug, Serialize)]
pub struct PromptView<'a> {
    pub name: &'a str,
    pub version: String,
    pub seq: u32,
    pub hash: &'a str,
    pub label: Option<&'a str>,
    pub origin: String,
    pub review: &'static str,
    pub author: &'a str,
    pub created_at: String,
    pub target_model: Option<&'a str>,
    pub constraints: &'a [String],
    pub variables: &'a [String],
    pub instruction: Option<&'a str>,
    pub template: Option<&'a str>,
    pub demo_template: Option<&'a str>,
    pub messages: Vec<Value>,
    pub demos: &'a [BTreeMap<String, Value>],
    /// How each input's demonstrations are picked from `pool` (absent: `demos` are fixed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<&'a metaprompt_eval::select::Selector>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub pool: &'a [BTreeMap<String, Value>],
    pub rationale: Option<&'a str>,
}

pub fn view(t: &Target) -> PromptView<'_> {
    let v = &t.version;
    PromptView {
        name: &v.prompt,
        version: format!("v{}", v.seq),
        seq: v.seq,
        hash: &v.hash,
        label: t.label.as_deref(),
        origin: v.origin.to_string(),
        review: v.review.as_str(),
        author: &v.author,
        created_at: v.created_at.to_rfc3339(),
        target_model: v.target_model.as_deref(),
        constraints: &v.constraints,
        variables: &t.variables,
        instruction: t.file.instruction.as_deref(),
        template: t.file.template.as_deref(),
        demo_template: t.file.demo_template.as_deref(),
        messages: t
            .file
            .messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect(),
        demos: &t.file.demos,
        selector: t.file.selector.as_ref(),
        pool: &t.file.pool,
        rationale: t.file.rationale.as_deref(),
    }
}

/// The request part a reference came from: `version` when one was given, else `label`.
fn ref_param(version: &Option<String>) -> &'static str {
    if version.is_some() {
        "version"
    } else {
        "label"
    }
}

fn etag(hash: &str) -> String {
    format!("\"{hash}\"")
}

/// Whether `If-None-Match` already names this version.
fn fresh(headers: &HeaderMap, hash: &str) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == hash
    })
}

/// `GET /v1/prompts/{name}`: the version a label (default `production`) or `version` names.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Params(q): Params<RefQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require(Role::Viewer)?;
    let t = state
        .resolver
        .resolve(
            &name,
            q.label.as_deref(),
            q.version.as_deref(),
            ref_param(&q.version),
            q.split_key.as_deref(),
        )
        .await?;
    let tag = etag(&t.version.hash);
    let tag_header = HeaderValue::from_str(&tag).map_err(|e| ApiError::internal(e.to_string()))?;
    if fresh(&headers, &t.version.hash) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag_header)]).into_response());
    }
    Ok((
        [
            (header::ETAG, tag_header),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Json(view(&t)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderBody {
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    pub label: Option<String>,
    pub version: Option<String>,
    /// Render for this model's prompt form (default: the version's target model).
    pub model: Option<String>,
    pub split_key: Option<String>,
}

/// `POST /v1/prompts/{name}/render`: the prompt as the model would see it.
pub async fn render(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<RenderBody>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Viewer)?;
    let t = state
        .resolver
        .resolve(
            &name,
            body.label.as_deref(),
            body.version.as_deref(),
            ref_param(&body.version),
            body.split_key.as_deref(),
        )
        .await?;
    let spec = RunSpec {
        inputs: body.inputs,
        model: body.model,
        inputs_param: "inputs",
        ..RunSpec::default()
    };
    let provider = gateway::model_for(&state, &t, &spec)?;
    let prompt = gateway::render(&state, &t, &spec, provider.as_ref()).await?;
    Ok(Json(json!({
        "name": t.version.prompt,
        "version": format!("v{}", t.version.seq),
        "hash": t.version.hash,
        "label": t.label,
        "model": provider.info().name,
        "format": provider.info().format,
        "prompt": prompt,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    #[serde(default)]
    pub inputs: BTreeMap<String, Value>,
    pub label: Option<String>,
    pub version: Option<String>,
    /// A model spec overriding the version's target model.
    pub model: Option<String>,
    /// Free key/values naming the slices this input belongs to (`{"topic": "billing"}`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Anything to keep with the inference.
    #[serde(default)]
    pub metadata: Value,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// With a traffic split on the label, the same key always gets the same version.
    pub split_key: Option<String>,
    /// The output it should give: the output is scored as it happens, and the score is
    /// recorded as `metric` feedback with the inference.
    pub expected: Option<Value>,
    /// How to score against `expected`, as a task's `[[metrics]]` table (default: `equals`
    /// with `normalize = true`).
    pub metric: Option<MetricConfig>,
}

/// The metric a run is scored with online, from the request's `expected` and `metric`.
fn online(expected: Option<Value>, metric: Option<MetricConfig>) -> ApiResult<Option<Online>> {
    let Some(expected) = expected else {
        if metric.is_some() {
            return Err(ApiError::invalid(
                "metric",
                "a metric scores against `expected`; send the expected output too",
            ));
        }
        return Ok(None);
    };
    let config = metric.unwrap_or_else(|| {
        MetricConfig::new(MetricSpec::Equals(EqualsOptions { normalize: true }))
    });
    if matches!(config.kind(), MetricKind::Command | MetricKind::LlmRubric) {
        return Err(ApiError::invalid(
            "metric.type",
            format!(
                "`{}` cannot score online (it runs a program or calls a judge model); score with it in an evaluation, or send its score as feedback",
                config.kind().as_str()
            ),
        ));
    }
    let metric = metaprompt_eval::metric::build(&config, None)
        .map_err(|e| ApiError::invalid("metric", e.to_string()))?;
    Ok(Some(Online { metric, expected }))
}

/// `POST /v1/prompts/{name}/run`: render, call the execution model, record, answer.
pub async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body<RunBody>,
) -> ApiResult<Response> {
    caller.require(Role::Runner)?;
    if let Some(t) = body.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            "expected a number in [0, 2]",
        ));
    }
    check_tags(&body.tags)?;
    let t = state
        .resolver
        .resolve(
            &name,
            body.label.as_deref(),
            body.version.as_deref(),
            ref_param(&body.version),
            body.split_key.as_deref(),
        )
        .await?;
    let spec = RunSpec {
        inputs: body.inputs,
        model: body.model,
        tags: body.tags,
        metadata: body.metadata,
        max_tokens: body.max_tokens,
        temperature: body.temperature,
        stop: body.stop,
        inputs_param: "inputs",
        online: online(body.expected, body.metric)?,
        ..RunSpec::default()
    };
    let ran = gateway::run(&state, &caller, &t, &spec).await?;
    let i = &ran.inference;
    let mut response = Json(json!({
        "inference_id": i.id,
        "output": ran.response.text,
        "finish_reason": ran.response.finish_reason.to_string(),
        "prompt": i.prompt,
        "version": format!("v{}", i.seq),
        "hash": i.hash,
        "label": i.label,
        "model": i.model,
        "usage": {"input_tokens": i.input_tokens, "output_tokens": i.output_tokens},
        "cost_usd": i.cost_usd,
        "latency_ms": i.latency_ms,
        "settings": ran.settings,
        "answer": ran.answer,
        "answer_error": ran.answer_error,
        "score": match &ran.score {
            Some(Ok(s)) => json!({"value": s.value, "feedback": s.feedback}),
            Some(Err(e)) => json!({"value": null, "error": e}),
            None => Value::Null,
        },
    }))
    .into_response();
    response
        .extensions_mut()
        .insert(gateway::ModelTime::of_ms(i.latency_ms));
    Ok(response)
}

/// Tags are slices: short keys and values, not documents.
pub fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 32 {
        return Err(ApiError::invalid("tags", "at most 32 tags"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 64 {
            return Err(ApiError::invalid(
                format!("tags.{k}"),
                "a tag key is 1 to 64 characters",
            ));
        }
        if v.len() > 256 {
            return Err(ApiError::invalid(
                format!("tags.{k}"),
                "a tag value is at most 256 characters",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        assert!(!fresh(&h, "abc"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(fresh(&h, "abc"));
        assert!(!fresh(&h, "abd"));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"x\", \"abc\""),
        );
        assert!(fresh(&h, "abc"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(fresh(&h, "anything"));
    }
}
