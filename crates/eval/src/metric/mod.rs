//! Metrics: each turns (example, output) into a score in [0, 1] and optional text feedback,
//! which reflective optimizers read. Names follow promptfoo's assertions where the meaning is
//! the same (`equals`, `contains`, `icontains`, `regex`, `is-json`, `llm-rubric`), so a promptfoo
//! user feels at home.
//!
//! One `[[metrics]]` table per metric in a task file: a [`MetricConfig`], that is a `type`, the
//! options of that type ([`MetricSpec`]: one variant per type, holding exactly that type's
//! fields) and the `weight` and `threshold` every metric has. A field the type does not take is
//! an error at load time that names the type's fields; so is a number out of its range
//! ([`MetricConfig::check_values`]: a `threshold` outside [0, 1] or NaN, a negative `weight`…).
//! [`build`] checks the values again and returns the [`Metric`].
//!
//! Adding a metric type: one line in the `metric_types!` list (in `config.rs`: its name, variant
//! and options struct), the options struct next to it, one arm in [`build`] and the [`Metric`]
//! implementation in the file of its family.
//!
//! The files of this folder (everything public is reachable from here, as `metric::…`):
//! - this one: the [`Metric`] trait, its [`Score`] and errors, and [`build`];
//! - `config.rs`: a `[[metrics]]` table as data ([`MetricConfig`], [`MetricKind`],
//!   [`MetricSpec`] and the options struct of each type) and the checks of its values;
//! - `de.rs`: reading a table from TOML by hand, so that errors name the type and the line;
//! - `text.rs`: `equals`, `contains`, `icontains`, `regex`, `choice`, `numeric` and `f1`;
//! - `json.rs`: `is-json`, `json-schema` and `json-field`;
//! - `rubric.rs`: `llm-rubric`, a judge model's grade;
//! - `command.rs`: `command`, any program run with a clean environment and a timeout.

mod command;
mod config;
mod de;
mod json;
mod rubric;
mod text;

use std::sync::Arc;

use async_trait::async_trait;
use metaprompt_llm::Provider;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::dataset::Example;

pub use command::CommandFailure;
use command::CustomCommand;
pub use config::{
    COMMAND_ENV, ChoiceOptions, CommandOptions, ContainsOptions, DEFAULT_COMMAND_TIMEOUT,
    EqualsOptions, JsonFieldOptions, JsonSchemaOptions, LlmRubricOptions, MetricConfig, MetricKind,
    MetricSpec, NoOptions, NumericOptions, RegexOptions, UnknownMetricType,
};
pub use json::extract_json;
use json::{IsJson, JsonField, JsonSchema};
use rubric::LlmRubric;
pub use rubric::parse_judgement;
use text::{Choice, Contains, Equals, Numeric, RegexMatch, TokenF1};
pub use text::{final_number, normalize, parse_choice};

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

/// A metric could not score an output: the output is unscored, which is not a score of 0.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("metric `{metric}`: {message}")]
    Failed { metric: String, message: String },
    /// The program of a `command` metric failed: see [`CommandFailure`].
    #[error("metric `command`: `{command}` {failure}")]
    Command {
        /// The program and its arguments, as written in the task.
        command: String,
        #[source]
        failure: CommandFailure,
    },
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

/// A metric config that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("metric `{kind}`: `{field}` must be {expected}, got {value}")]
    OutOfRange {
        kind: MetricKind,
        field: &'static str,
        expected: &'static str,
        value: f64,
    },
    #[error("metric `choice` needs `labels` with at least two answers, got {0}")]
    TooFewLabels(usize),
    #[error("metric `regex`: bad pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("metric `json-schema`: invalid schema: {0}")]
    Schema(#[source] Box<jsonschema::ValidationError<'static>>),
    #[error("metric `llm-rubric` needs a judge model (its `model`, or the task's meta model)")]
    NoJudge,
    #[error("metric `command`: `command` is empty; give the program and its arguments")]
    EmptyCommand,
    #[error("metric `command`: `env` entry {0:?} is not an environment variable name")]
    EnvName(String),
}

fn check_range(
    kind: MetricKind,
    field: &'static str,
    value: f64,
    positive: bool,
) -> Result<f64, BuildError> {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if ok {
        Ok(value)
    } else {
        Err(BuildError::OutOfRange {
            kind,
            field,
            expected: if positive {
                "a positive number"
            } else {
                "a non-negative number"
            },
            value,
        })
    }
}

/// Build a metric from its config. `judge` is the model an `llm-rubric` metric uses (its own
/// `model`, or the task's meta model: the caller opens it).
pub fn build(
    config: &MetricConfig,
    judge: Option<Arc<dyn Provider>>,
) -> Result<Arc<dyn Metric>, BuildError> {
    let kind = config.kind();
    config.check_values()?;
    Ok(match &config.spec {
        MetricSpec::Equals(o) => Arc::new(Equals {
            normalize: o.normalize,
        }),
        MetricSpec::Contains(o) => Arc::new(Contains {
            value: o.value.clone(),
            ignore_case: false,
        }),
        MetricSpec::Icontains(o) => Arc::new(Contains {
            value: o.value.clone(),
            ignore_case: true,
        }),
        MetricSpec::Regex(o) => Arc::new(RegexMatch {
            re: Regex::new(&o.value).map_err(|source| BuildError::Pattern {
                pattern: o.value.clone(),
                source,
            })?,
        }),
        MetricSpec::Choice(o) => {
            if o.labels.len() < 2 {
                return Err(BuildError::TooFewLabels(o.labels.len()));
            }
            Arc::new(Choice {
                labels: o.labels.clone(),
            })
        }
        MetricSpec::Numeric(o) => Arc::new(Numeric {
            tolerance: check_range(kind, "tolerance", o.tolerance.unwrap_or(1e-6), false)?,
        }),
        MetricSpec::F1(_) => Arc::new(TokenF1),
        MetricSpec::IsJson(_) => Arc::new(IsJson),
        MetricSpec::JsonSchema(o) => Arc::new(JsonSchema {
            validator: jsonschema::validator_for(&o.schema)
                .map_err(|e| BuildError::Schema(Box::new(e)))?,
        }),
        MetricSpec::JsonField(o) => Arc::new(JsonField {
            field: o.field.clone(),
        }),
        MetricSpec::LlmRubric(o) => Arc::new(LlmRubric {
            rubric: o.rubric.clone(),
            judge: judge.ok_or(BuildError::NoJudge)?,
        }),
        MetricSpec::Command(o) => Arc::new(CustomCommand::new(o)?),
    })
}

#[cfg(test)]
mod tests {
    //! The fixtures the tests of the metric families share, and the tests of [`build`].

    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    pub(super) fn ex(expected: &str) -> Example {
        Example {
            id: "t:1".into(),
            vars: BTreeMap::from([("q".into(), json!("question"))]),
            expected: Some(json!(expected)),
        }
    }

    pub(super) fn metric(config: MetricConfig) -> Arc<dyn Metric> {
        build(&config, None).unwrap()
    }

    pub(super) async fn v(m: &Arc<dyn Metric>, expected: &str, output: &str) -> f64 {
        m.score(&ex(expected), output).await.unwrap().value
    }

    pub(super) fn command(words: &[&str]) -> CommandOptions {
        CommandOptions::new(words.iter().copied())
    }

    #[test]
    fn build_errors() {
        assert!(matches!(
            build(&MetricConfig::choice(["only"]), None),
            Err(BuildError::TooFewLabels(1))
        ));
        let e = build(&MetricConfig::regex("("), None).unwrap_err();
        assert!(e.to_string().contains("bad pattern \"(\""), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        let e = build(&MetricConfig::f1().with_weight(-1.0), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metric `f1`: `weight` must be a non-negative number, got -1"
        );
        assert!(build(&MetricConfig::f1().with_threshold(f64::NAN), None).is_err());
        for t in [1.5, -0.1, f64::INFINITY] {
            let e = build(&MetricConfig::f1().with_threshold(t), None).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("metric `f1`: `threshold` must be a score between 0 and 1, got {t}")
            );
        }
        for t in [0.0, 0.5, 1.0] {
            build(&MetricConfig::f1().with_threshold(t), None).unwrap();
        }
        let e = build(
            &MetricSpec::Numeric(NumericOptions {
                tolerance: Some(-0.1),
            })
            .into(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("`tolerance`"), "{e}");
        assert!(matches!(
            build(&MetricConfig::command(Vec::<String>::new()), None),
            Err(BuildError::EmptyCommand)
        ));
        let mut options = command(&["true"]);
        options.timeout_secs = Some(0.0);
        let e = build(&MetricSpec::Command(options.clone()).into(), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("`timeout_secs` must be a positive number"),
            "{e}"
        );
        options.timeout_secs = Some(1e300);
        assert!(build(&MetricSpec::Command(options.clone()).into(), None).is_err());
        options.timeout_secs = None;
        options.env = vec!["A=B".into()];
        assert!(matches!(
            build(&MetricSpec::Command(options).into(), None),
            Err(BuildError::EnvName(n)) if n == "A=B"
        ));
    }
}
