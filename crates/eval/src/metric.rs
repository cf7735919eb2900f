//! Metrics: each turns (example, output) into a score in [0, 1] and optional text feedback,
//! which reflective optimizers read. Names follow promptfoo's assertions where the meaning is
//! the same (`equals`, `contains`, `icontains`, `regex`, `is-json`, `llm-rubric`), so a promptfoo
//! user feels at home.
//!
//! One [`MetricConfig`] table per metric in a task file; [`build`] checks the options that apply
//! to its `type` and returns the [`Metric`].

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use metaprompt_llm::{Message, Provider, Request};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::dataset::{Example, as_text};

/// A score and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

impl Score {
    pub fn pass(ok: bool, feedback: impl FnOnce() -> String) -> Self {
        Self {
            value: if ok { 1.0 } else { 0.0 },
            feedback: (!ok).then(feedback),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("metric `{metric}`: {message}")]
    Failed { metric: String, message: String },
}

#[async_trait]
pub trait Metric: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError>;
    /// The fixed answers of a classification metric: the evaluator then scores these labels
    /// by log-probability when the model can, instead of generating.
    fn labels(&self) -> Option<&[String]> {
        None
    }
}

/// The `[[metrics]]` table of a task file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    #[serde(rename = "type")]
    pub kind: MetricKind,
    /// Weight in the combined score (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Score at or above which an example passes (default 1: exact pass/fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `contains`/`icontains`: the text to look for (default: the expected output). `regex`: the
    /// pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `choice`: the allowed answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// `equals`: compare case-, space- and punctuation-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// `numeric`: allowed absolute difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// `json-schema`: the JSON Schema the output's JSON must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// `json-field`: the field of the output object to compare with the expected value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `llm-rubric`: what a good answer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rubric: Option<String>,
    /// `llm-rubric`: the judge model (default: the task's meta model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `command`: program and arguments; gets `{"example": …, "output": …}` on stdin and prints
    /// `{"score": x, "feedback": "…"}` (or a bare number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    Equals,
    Contains,
    Icontains,
    Regex,
    Choice,
    Numeric,
    F1,
    IsJson,
    JsonSchema,
    JsonField,
    LlmRubric,
    Command,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Equals => "equals",
            MetricKind::Contains => "contains",
            MetricKind::Icontains => "icontains",
            MetricKind::Regex => "regex",
            MetricKind::Choice => "choice",
            MetricKind::Numeric => "numeric",
            MetricKind::F1 => "f1",
            MetricKind::IsJson => "is-json",
            MetricKind::JsonSchema => "json-schema",
            MetricKind::JsonField => "json-field",
            MetricKind::LlmRubric => "llm-rubric",
            MetricKind::Command => "command",
        }
    }
}

impl MetricConfig {
    pub fn of(kind: MetricKind) -> Self {
        Self {
            kind,
            weight: None,
            threshold: None,
            value: None,
            labels: None,
            normalize: None,
            tolerance: None,
            schema: None,
            field: None,
            rubric: None,
            model: None,
            command: None,
        }
    }

    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }

    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(1.0)
    }

    /// Options given that this metric type does not use: a mistake worth an error.
    fn stray_options(&self) -> Vec<&'static str> {
        use MetricKind::*;
        let allowed: &[&str] = match self.kind {
            Equals => &["normalize"],
            Contains | Icontains => &["value"],
            Regex => &["value"],
            Choice => &["labels"],
            Numeric => &["tolerance"],
            F1 | IsJson => &[],
            JsonSchema => &["schema"],
            JsonField => &["field"],
            LlmRubric => &["rubric", "model"],
            Command => &["command"],
        };
        let given = [
            ("value", self.value.is_some()),
            ("labels", self.labels.is_some()),
            ("normalize", self.normalize.is_some()),
            ("tolerance", self.tolerance.is_some()),
            ("schema", self.schema.is_some()),
            ("field", self.field.is_some()),
            ("rubric", self.rubric.is_some()),
            ("model", self.model.is_some()),
            ("command", self.command.is_some()),
        ];
        given
            .iter()
            .filter(|(k, set)| *set && !allowed.contains(k))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// Build a metric from its config. `judge` is the model an `llm-rubric` metric uses when it
/// names none.
pub fn build(
    config: &MetricConfig,
    judge: Option<Arc<dyn Provider>>,
) -> Result<Arc<dyn Metric>, String> {
    let kind = config.kind.as_str();
    if let Some(stray) = config.stray_options().first() {
        return Err(format!("metric `{kind}` does not take `{stray}`"));
    }
    for (key, v) in [("weight", config.weight), ("threshold", config.threshold)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(format!(
                "metric `{kind}`: `{key}` must be a non-negative number, got {v}"
            ));
        }
    }
    let need = |v: &Option<String>, key: &str| {
        v.clone()
            .ok_or_else(|| format!("metric `{kind}` needs `{key}`"))
    };
    Ok(match config.kind {
        MetricKind::Equals => Arc::new(Equals {
            normalize: config.normalize.unwrap_or(false),
        }),
        MetricKind::Contains => Arc::new(Contains {
            value: config.value.clone(),
            ignore_case: false,
        }),
        MetricKind::Icontains => Arc::new(Contains {
            value: config.value.clone(),
            ignore_case: true,
        }),
        MetricKind::Regex => {
            let pattern = need(&config.value, "value")?;
            Arc::new(RegexMatch {
                re: Regex::new(&pattern)
                    .map_err(|e| format!("metric `regex`: bad pattern: {e}"))?,
            })
        }
        MetricKind::Choice => {
            let labels = config.labels.clone().unwrap_or_default();
            if labels.len() < 2 {
                return Err("metric `choice` needs `labels` with at least two answers".into());
            }
            Arc::new(Choice { labels })
        }
        MetricKind::Numeric => Arc::new(Numeric {
            tolerance: config.tolerance.unwrap_or(1e-6),
        }),
        MetricKind::F1 => Arc::new(TokenF1),
        MetricKind::IsJson => Arc::new(IsJson),
        MetricKind::JsonSchema => {
            let schema = config
                .schema
                .clone()
                .ok_or("metric `json-schema` needs `schema`")?;
            let validator = jsonschema::validator_for(&schema)
                .map_err(|e| format!("metric `json-schema`: invalid schema: {e}"))?;
            Arc::new(JsonSchema { validator })
        }
        MetricKind::JsonField => Arc::new(JsonField {
            field: need(&config.field, "field")?,
        }),
        MetricKind::LlmRubric => Arc::new(LlmRubric {
            rubric: need(&config.rubric, "rubric")?,
            judge: judge.ok_or(
                "metric `llm-rubric` needs a judge model (`model`, or the task's meta model)",
            )?,
        }),
        MetricKind::Command => {
            let command = config
                .command
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or("metric `command` needs `command`")?;
            Arc::new(CustomCommand { command })
        }
    })
}

fn expected_text(example: &Example, metric: &str) -> Result<String, MetricError> {
    example
        .expected
        .as_ref()
        .map(as_text)
        .ok_or_else(|| MetricError::Failed {
            metric: metric.into(),
            message: format!("example {} has no expected output", example.id),
        })
}

/// Lowercase, drop punctuation and articles, collapse spaces (SQuAD's normalization).
pub fn normalize(s: &str) -> String {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug)]
struct Equals {
    normalize: bool,
}

#[async_trait]
impl Metric for Equals {
    fn name(&self) -> &str {
        "equals"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let expected = expected_text(example, "equals")?;
        let ok = if self.normalize {
            normalize(output) == normalize(&expected)
        } else {
            output.trim() == expected.trim()
        };
        Ok(Score::pass(ok, || {
            format!("expected {expected:?}, got {:?}", output.trim())
        }))
    }
}

#[derive(Debug)]
struct Contains {
    value: Option<String>,
    ignore_case: bool,
}

#[async_trait]
impl Metric for Contains {
    fn name(&self) -> &str {
        if self.ignore_case {
            "icontains"
        } else {
            "contains"
        }
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let needle = match &self.value {
            Some(v) => v.clone(),
            None => expected_text(example, self.name())?,
        };
        let ok = if self.ignore_case {
            output.to_lowercase().contains(&needle.to_lowercase())
        } else {
            output.contains(&needle)
        };
        Ok(Score::pass(ok, || {
            format!("the output does not contain {needle:?}")
        }))
    }
}

#[derive(Debug)]
struct RegexMatch {
    re: Regex,
}

#[async_trait]
impl Metric for RegexMatch {
    fn name(&self) -> &str {
        "regex"
    }
    async fn score(&self, _: &Example, output: &str) -> Result<Score, MetricError> {
        Ok(Score::pass(self.re.is_match(output), || {
            format!("the output does not match /{}/", self.re.as_str())
        }))
    }
}

/// The answer among fixed labels: with label scoring, the output *is* the chosen label; from
/// generated text, the label that appears first (as a whole word, any case).
#[derive(Debug)]
struct Choice {
    labels: Vec<String>,
}

impl Choice {
    fn parse<'a>(&'a self, output: &str) -> Option<&'a str> {
        let lower = output.to_lowercase();
        self.labels
            .iter()
            .filter_map(|l| {
                let needle = l.trim().to_lowercase();
                let re = Regex::new(&format!(r"(^|\W){}($|\W)", regex::escape(&needle))).ok()?;
                re.find(&lower).map(|m| (m.start(), l.as_str()))
            })
            .min_by_key(|(pos, _)| *pos)
            .map(|(_, l)| l)
    }
}

#[async_trait]
impl Metric for Choice {
    fn name(&self) -> &str {
        "choice"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let expected = expected_text(example, "choice")?;
        Ok(match self.parse(output) {
            Some(label) => Score::pass(label.trim().eq_ignore_ascii_case(expected.trim()), || {
                format!("answered {label:?}, expected {expected:?}")
            }),
            None => Score {
                value: 0.0,
                feedback: Some(format!(
                    "no answer among {:?} in {:?}; expected {expected:?}",
                    self.labels,
                    output.trim()
                )),
            },
        })
    }
    fn labels(&self) -> Option<&[String]> {
        Some(&self.labels)
    }
}

/// The final number of a text: after `####` when present (GSM8K), else the last number.
pub fn final_number(text: &str) -> Option<f64> {
    let tail = text.rsplit_once("####").map_or(text, |(_, t)| t);
    let re = Regex::new(r"-?\d[\d,]*(?:\.\d+)?").ok()?;
    let source = if tail.trim().is_empty() { text } else { tail };
    let candidates: Vec<&str> = re.find_iter(source).map(|m| m.as_str()).collect();
    let pick = if source == tail && text.contains("####") {
        candidates.first()
    } else {
        candidates.last()
    };
    pick.and_then(|n| n.replace(',', "").parse().ok())
}

#[derive(Debug)]
struct Numeric {
    tolerance: f64,
}

#[async_trait]
impl Metric for Numeric {
    fn name(&self) -> &str {
        "numeric"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let expected_raw = expected_text(example, "numeric")?;
        let expected = final_number(&expected_raw).ok_or_else(|| MetricError::Failed {
            metric: "numeric".into(),
            message: format!(
                "example {}: the expected output {expected_raw:?} holds no number",
                example.id
            ),
        })?;
        Ok(match final_number(output) {
            Some(got) => Score::pass((got - expected).abs() <= self.tolerance, || {
                format!("answered {got}, expected {expected}")
            }),
            None => Score {
                value: 0.0,
                feedback: Some(format!("no number in the output; expected {expected}")),
            },
        })
    }
}

#[derive(Debug)]
struct TokenF1;

#[async_trait]
impl Metric for TokenF1 {
    fn name(&self) -> &str {
        "f1"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let expected = normalize(&expected_text(example, "f1")?);
        let got = normalize(output);
        let (e, g): (Vec<&str>, Vec<&str>) = (
            expected.split_whitespace().collect(),
            got.split_whitespace().collect(),
        );
        let mut pool = e.clone();
        let common = g
            .iter()
            .filter(|w| {
                if let Some(i) = pool.iter().position(|x| x == *w) {
                    pool.swap_remove(i);
                    true
                } else {
                    false
                }
            })
            .count() as f64;
        let value = if e.is_empty() && g.is_empty() {
            1.0
        } else if common == 0.0 {
            0.0
        } else {
            let (p, r) = (common / g.len() as f64, common / e.len() as f64);
            2.0 * p * r / (p + r)
        };
        Ok(Score {
            value,
            feedback: (value < 1.0).then(|| format!("token F1 {value:.2} against {expected:?}")),
        })
    }
}

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
struct IsJson;

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

struct JsonSchema {
    validator: jsonschema::Validator,
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
struct JsonField {
    field: String,
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

/// A judge model grades the output against a rubric and says why.
#[derive(Debug)]
struct LlmRubric {
    rubric: String,
    judge: Arc<dyn Provider>,
}

/// Read `{"score": x, "reason": "…"}` (or `Score: x`) from a judge's answer; scores above 1 are
/// taken as out of 10 (or 100).
pub fn parse_judgement(text: &str) -> Option<(f64, String)> {
    let scale = |x: f64| {
        if x > 10.0 {
            x / 100.0
        } else if x > 1.0 {
            x / 10.0
        } else {
            x
        }
    };
    if let Some(v) = extract_json(text)
        && let Some(s) = v
            .get("score")
            .and_then(|s| s.as_f64().or_else(|| s.as_str()?.trim().parse().ok()))
    {
        let reason = v.get("reason").map(as_text).unwrap_or_default();
        return Some((scale(s).clamp(0.0, 1.0), reason));
    }
    let re = Regex::new(r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)").ok()?;
    let s: f64 = re.captures(text)?.get(1)?.as_str().parse().ok()?;
    Some((scale(s).clamp(0.0, 1.0), text.trim().to_string()))
}

#[async_trait]
impl Metric for LlmRubric {
    fn name(&self) -> &str {
        "llm-rubric"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let input = serde_json::to_string(&example.vars).unwrap_or_default();
        let expected = example
            .expected
            .as_ref()
            .map(as_text)
            .unwrap_or_else(|| "(none given)".into());
        let request = Request::chat(vec![
            Message::system(
                "You grade an AI system's output against a rubric. Answer with JSON only: {\"score\": <number from 0 to 1>, \"reason\": \"<one sentence>\"}.",
            ),
            Message::user(format!(
                "Rubric: {}\n\nInput: {input}\nReference answer: {expected}\n\nOutput to grade:\n{output}",
                self.rubric
            )),
        ])
        .max_tokens(200);
        let fail = |message: String| MetricError::Failed {
            metric: "llm-rubric".into(),
            message,
        };
        let answer = self
            .judge
            .complete(&request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (value, reason) = parse_judgement(&answer.text).ok_or_else(|| {
            fail(format!(
                "the judge's answer has no score: {:?}",
                answer.text.trim()
            ))
        })?;
        Ok(Score {
            value,
            feedback: Some(reason),
        })
    }
}

/// Any program: example and output as JSON on stdin, score (and feedback) on stdout.
#[derive(Debug)]
struct CustomCommand {
    command: Vec<String>,
}

#[async_trait]
impl Metric for CustomCommand {
    fn name(&self) -> &str {
        "command"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let input = json!({"example": {"id": example.id, "vars": example.vars, "expected": example.expected}, "output": output});
        let command = self.command.clone();
        let fail = |message: String| MetricError::Failed {
            metric: "command".into(),
            message,
        };
        let result = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(&command[0])
                .args(&command[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {:?}: {e}", command[0]))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(input.to_string().as_bytes())
                    .map_err(|e| format!("cannot write to {:?}: {e}", command[0]))?;
            }
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "{:?} exited with {}: {}",
                    command[0],
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;
        let text = result.trim();
        if let Ok(v) = text.parse::<f64>() {
            return check_range(Score {
                value: v,
                feedback: None,
            })
            .map_err(fail);
        }
        #[derive(Deserialize)]
        struct Answer {
            score: f64,
            #[serde(default)]
            feedback: Option<String>,
        }
        let answer: Answer = serde_json::from_str(text)
            .map_err(|e| fail(format!("expected {{\"score\": x, \"feedback\": \"…\"}} or a number on stdout, got {text:?} ({e})")))?;
        check_range(Score {
            value: answer.score,
            feedback: answer.feedback,
        })
        .map_err(fail)
    }
}

fn check_range(s: Score) -> Result<Score, String> {
    if (0.0..=1.0).contains(&s.value) {
        Ok(s)
    } else {
        Err(format!("score {} is outside [0, 1]", s.value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metaprompt_llm::testing::ScriptedProvider;

    use super::*;

    fn ex(expected: &str) -> Example {
        Example {
            id: "t:1".into(),
            vars: BTreeMap::from([("q".into(), json!("question"))]),
            expected: Some(json!(expected)),
        }
    }

    fn metric(kind: MetricKind, f: impl FnOnce(&mut MetricConfig)) -> Arc<dyn Metric> {
        let mut c = MetricConfig::of(kind);
        f(&mut c);
        build(&c, None).unwrap()
    }

    async fn v(m: &Arc<dyn Metric>, expected: &str, output: &str) -> f64 {
        m.score(&ex(expected), output).await.unwrap().value
    }

    #[tokio::test]
    async fn string_metrics() {
        let eq = metric(MetricKind::Equals, |_| {});
        assert_eq!(v(&eq, "Paris", " Paris\n").await, 1.0);
        assert_eq!(v(&eq, "Paris", "paris").await, 0.0);
        assert!(
            eq.score(&ex("Paris"), "Rome")
                .await
                .unwrap()
                .feedback
                .unwrap()
                .contains("expected \"Paris\"")
        );
        let norm = metric(MetricKind::Equals, |c| c.normalize = Some(true));
        assert_eq!(v(&norm, "The Eiffel Tower", "eiffel tower!").await, 1.0);
        let c = metric(MetricKind::Contains, |_| {});
        assert_eq!(
            (
                v(&c, "Paris", "It is Paris.").await,
                v(&c, "Paris", "it is paris").await
            ),
            (1.0, 0.0)
        );
        let ic = metric(MetricKind::Icontains, |c| c.value = Some("PARIS".into()));
        assert_eq!(v(&ic, "x", "it is paris").await, 1.0);
        let re = metric(MetricKind::Regex, |c| {
            c.value = Some(r"^\d{4}-\d{2}-\d{2}$".into())
        });
        assert_eq!(
            (v(&re, "", "2024-01-31").await, v(&re, "", "Jan 31").await),
            (1.0, 0.0)
        );
    }

    #[tokio::test]
    async fn choice_parses_whole_words_first_match() {
        let m = metric(MetricKind::Choice, |c| {
            c.labels = Some(vec!["positive".into(), "negative".into()])
        });
        assert_eq!(m.labels().unwrap().len(), 2);
        assert_eq!(v(&m, "negative", " Negative. Definitely.").await, 1.0);
        assert_eq!(v(&m, "negative", "positive, not negative").await, 0.0);
        assert_eq!(
            v(&m, "positive", "nonpositive").await,
            0.0,
            "whole words only"
        );
        let s = m.score(&ex("positive"), "I cannot tell").await.unwrap();
        assert_eq!(s.value, 0.0);
        assert!(s.feedback.unwrap().contains("no answer among"));
    }

    #[tokio::test]
    async fn numeric_extracts_final_numbers() {
        assert_eq!(
            final_number("She pays 3 * 4 = 12 dollars.\n#### 1,200"),
            Some(1200.0)
        );
        assert_eq!(final_number("so the answer is 42."), Some(42.0));
        assert_eq!(final_number("-3.5 degrees"), Some(-3.5));
        assert_eq!(final_number("none"), None);
        let m = metric(MetricKind::Numeric, |_| {});
        assert_eq!(
            v(
                &m,
                "Natalia sold 48/2 = 24 clips.\n#### 72",
                "48 + 24 = 72. The answer is 72"
            )
            .await,
            1.0
        );
        assert_eq!(v(&m, "#### 72", "The answer is 71").await, 0.0);
        let loose = metric(MetricKind::Numeric, |c| c.tolerance = Some(0.5));
        assert_eq!(v(&loose, "#### 72", "71.6").await, 1.0);
    }

    #[tokio::test]
    async fn token_f1() {
        let m = metric(MetricKind::F1, |_| {});
        assert_eq!(v(&m, "the Eiffel Tower", "Eiffel tower").await, 1.0);
        let f = v(&m, "Barack Obama", "Obama").await;
        assert!((f - 2.0 / 3.0).abs() < 1e-12, "{f}");
        assert_eq!(v(&m, "Paris", "London").await, 0.0);
    }

    #[tokio::test]
    async fn json_metrics() {
        let m = metric(MetricKind::IsJson, |_| {});
        assert_eq!(v(&m, "", "```json\n{\"a\": 1}\n```").await, 1.0);
        assert_eq!(v(&m, "", "Here it is: {\"a\": [1, 2]} done").await, 1.0);
        assert_eq!(v(&m, "", "{\"a\": ").await, 0.0);
        let f = metric(MetricKind::JsonField, |c| c.field = Some("total".into()));
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
        let mut c = MetricConfig::of(MetricKind::JsonSchema);
        c.schema = Some(
            json!({"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}),
        );
        let m = build(&c, None).unwrap();
        assert_eq!(v(&m, "", "{\"total\": 12.5}").await, 1.0);
        let s = m.score(&ex(""), "{\"total\": \"12.5\"}").await.unwrap();
        assert_eq!(s.value, 0.0);
        assert!(
            s.feedback.unwrap().contains("/total"),
            "names where it failed"
        );
        assert_eq!(v(&m, "", "no json").await, 0.0);
        c.schema = Some(json!({"type": 12}));
        assert!(build(&c, None).unwrap_err().contains("invalid schema"));
        assert!(
            build(&MetricConfig::of(MetricKind::JsonSchema), None)
                .unwrap_err()
                .contains("needs `schema`")
        );
    }

    #[tokio::test]
    async fn llm_rubric_with_the_scripted_judge() {
        let judge = Arc::new(
            ScriptedProvider::new("judge")
                .reply("{\"score\": 0.8, \"reason\": \"Mostly right, misses the date.\"}")
                .reply("Score: 7/10 because it is terse")
                .reply("I refuse"),
        );
        let mut c = MetricConfig::of(MetricKind::LlmRubric);
        c.rubric = Some("Mentions Paris and the year 1889.".into());
        let m = build(&c, Some(judge.clone())).unwrap();
        let s = m
            .score(&ex("Paris, 1889"), "It is in Paris.")
            .await
            .unwrap();
        assert_eq!(
            (s.value, s.feedback.as_deref()),
            (0.8, Some("Mostly right, misses the date."))
        );
        assert!((m.score(&ex("x"), "y").await.unwrap().value - 0.7).abs() < 1e-12);
        let e = m.score(&ex("x"), "y").await.unwrap_err().to_string();
        assert!(e.contains("no score") && e.contains("I refuse"), "{e}");
        let call = &judge.calls()[0];
        let metaprompt_llm::Prompt::Chat(messages) = &call.prompt else {
            panic!()
        };
        assert!(
            messages[1].content.contains("Mentions Paris")
                && messages[1].content.contains("It is in Paris.")
        );
        assert!(build(&c, None).unwrap_err().contains("judge model"));
    }

    #[tokio::test]
    async fn custom_command() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("score.py");
        std::fs::write(
            &script,
            "import json, sys\nd = json.load(sys.stdin)\nok = d['output'].strip() == d['example']['expected']\nprint(json.dumps({'score': 1.0 if ok else 0.0, 'feedback': 'checked ' + d['example']['id']}))\n",
        )
        .unwrap();
        let mut c = MetricConfig::of(MetricKind::Command);
        c.command = Some(vec!["python3".into(), script.display().to_string()]);
        let m = build(&c, None).unwrap();
        let s = m.score(&ex("yes"), " yes ").await.unwrap();
        assert_eq!((s.value, s.feedback.as_deref()), (1.0, Some("checked t:1")));
        assert_eq!(m.score(&ex("yes"), "no").await.unwrap().value, 0.0);
        let mut bad = MetricConfig::of(MetricKind::Command);
        bad.command = Some(vec!["python3".into(), "-c".into(), "print('lots')".into()]);
        let e = build(&bad, None)
            .unwrap()
            .score(&ex("x"), "y")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected {\"score\""), "{e}");
        bad.command = Some(vec!["python3".into(), "-c".into(), "print(1.5)".into()]);
        assert!(
            build(&bad, None)
                .unwrap()
                .score(&ex("x"), "y")
                .await
                .unwrap_err()
                .to_string()
                .contains("outside [0, 1]")
        );
        bad.command = Some(vec!["/nonexistent/scorer".into()]);
        assert!(
            build(&bad, None)
                .unwrap()
                .score(&ex("x"), "y")
                .await
                .unwrap_err()
                .to_string()
                .contains("cannot run")
        );
    }

    #[test]
    fn config_errors() {
        let mut c = MetricConfig::of(MetricKind::Equals);
        c.labels = Some(vec![]);
        assert_eq!(
            build(&c, None).unwrap_err(),
            "metric `equals` does not take `labels`"
        );
        assert!(
            build(&MetricConfig::of(MetricKind::Regex), None)
                .unwrap_err()
                .contains("needs `value`")
        );
        let mut c = MetricConfig::of(MetricKind::Choice);
        c.labels = Some(vec!["only".into()]);
        assert!(build(&c, None).unwrap_err().contains("at least two"));
        let mut c = MetricConfig::of(MetricKind::Regex);
        c.value = Some("(".into());
        assert!(build(&c, None).unwrap_err().contains("bad pattern"));
        let mut c = MetricConfig::of(MetricKind::F1);
        c.weight = Some(-1.0);
        assert!(build(&c, None).unwrap_err().contains("non-negative"));
    }
}
