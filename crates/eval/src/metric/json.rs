//! The metrics that read JSON from the output: `is-json`, `json-schema` and `json-field`; and
//! [`extract_json`], which finds the JSON in a model's answer (the judge's too).

use async_trait::async_trait;
use serde_json::Value;

use super::{Metric, MetricError, Score};
use crate::dataset::{Example, as_text};

/// The JSON in an output: the whole output, or its first `{…}` / `[…]` block (models like to
/// wrap JSON in prose or code fences).
pub fn extract_json(output: &str) -> Option<Value> {
    let trimmed = output
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    let start = output.find(['{', '['])?;
    let mut stream = serde_json::Deserializer::from_str(&output[start..]).into_iter::<Value>();
    stream.next()?.ok()
}

#[derive(Debug)]
pub(super) struct IsJson;

#[async_trait]
impl Metric for IsJson {
    fn name(&self) -> &str {
        "is-json"
    }
    async fn score(&self, _: &Example, output: &str) -> Result<Score, MetricError> {
        Ok(Score::pass(extract_json(output).is_some(), || {
            "the output holds no valid JSON".into()
        }))
    }
}

pub(super) struct JsonSchema {
    pub(super) validator: jsonschema::Validator,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonSchema")
    }
}

#[async_trait]
impl Metric for JsonSchema {
    fn name(&self) -> &str {
        "json-schema"
    }
    async fn score(&self, _: &Example, output: &str) -> Result<Score, MetricError> {
        let Some(json) = extract_json(output) else {
            return Ok(Score {
                value: 0.0,
                feedback: Some("the output holds no valid JSON".into()),
            });
        };
        let errors: Vec<String> = self
            .validator
            .iter_errors(&json)
            .take(3)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect();
        Ok(Score::pass(errors.is_empty(), || {
            format!("the JSON does not match the schema: {}", errors.join("; "))
        }))
    }
}

#[derive(Debug)]
pub(super) struct JsonField {
    pub(super) field: String,
}

#[async_trait]
impl Metric for JsonField {
    fn name(&self) -> &str {
        "json-field"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let expected = example
            .expected
            .clone()
            .ok_or_else(|| MetricError::Failed {
                metric: "json-field".into(),
                message: format!("example {} has no expected output", example.id),
            })?;
        let Some(json) = extract_json(output) else {
            return Ok(Score {
                value: 0.0,
                feedback: Some("the output holds no valid JSON".into()),
            });
        };
        let got = json.get(&self.field).cloned();
        let ok = match (&got, &expected) {
            (Some(g), e) => g == e || as_text(g).trim() == as_text(e).trim(),
            (None, _) => false,
        };
        Ok(Score::pass(ok, || match got {
            Some(g) => format!("field `{}` is {g}, expected {expected}", self.field),
            None => format!("the output has no field `{}`", self.field),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::metric::tests::{ex, metric, v};
    use crate::metric::{BuildError, MetricConfig, build};

    #[tokio::test]
    async fn json_metrics() {
        let m = metric(MetricConfig::is_json());
        assert_eq!(v(&m, "", "```json\n{\"a\": 1}\n```").await, 1.0);
        assert_eq!(v(&m, "", "Here it is: {\"a\": [1, 2]} done").await, 1.0);
        assert_eq!(v(&m, "", "{\"a\": ").await, 0.0);
        let f = metric(MetricConfig::json_field("total"));
        assert_eq!(
            v(&f, "12.50", "{\"total\": \"12.50\", \"n\": 1}").await,
            1.0
        );
        let s = f.score(&ex("12.50"), "{\"sum\": 1}").await.unwrap();
        assert_eq!(s.value, 0.0);
        assert!(s.feedback.unwrap().contains("no field `total`"));
    }

    #[tokio::test]
    async fn json_schema() {
        let m = metric(MetricConfig::json_schema(
            json!({"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}),
        ));
        assert_eq!(v(&m, "", "{\"total\": 12.5}").await, 1.0);
        let s = m.score(&ex(""), "{\"total\": \"12.5\"}").await.unwrap();
        assert_eq!(s.value, 0.0);
        assert!(
            s.feedback.unwrap().contains("/total"),
            "names where it failed"
        );
        assert_eq!(v(&m, "", "no json").await, 0.0);
        let e = build(&MetricConfig::json_schema(json!({"type": 12})), None).unwrap_err();
        assert!(matches!(e, BuildError::Schema(_)), "{e:?}");
        assert!(e.to_string().contains("invalid schema"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
