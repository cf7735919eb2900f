//! A `[[metrics]]` table as data: [`MetricConfig`] (a type's options, `weight` and
//! `threshold`), the metric types declared once by `metric_types!` ([`MetricKind`], the names;
//! [`MetricSpec`], the options of each), the options struct of every type, the constructors
//! used from Rust and [`MetricConfig::check_values`]. Reading a table from TOML is `de.rs`.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{BuildError, check_range};

/// One `[[metrics]]` table of a task file: what to check ([`MetricSpec`], tagged by `type`)
/// and how much it counts.
///
/// In Rust, start from a constructor and adjust:
/// `MetricConfig::choice(["negative", "positive"]).with_weight(2.0)`, or
/// `MetricConfig::new(MetricSpec::Equals(EqualsOptions { normalize: true }))`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricConfig {
    #[serde(flatten)]
    pub spec: MetricSpec,
    /// Weight in the combined score (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Score at or above which an example passes (default 1: exact pass/fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// The fields every metric type takes besides its own options.
pub(super) const COMMON_FIELDS: &[&str] = &["weight", "threshold"];

/// Declares the metric types once: [`MetricKind`] (the names), [`MetricSpec`] (the options of
/// each) and the glue between them, so the two enums cannot drift apart.
macro_rules! metric_types {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($options:ty),)+) => {
        /// A metric type: what `type = "…"` names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum MetricKind {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl MetricKind {
            /// Every metric type.
            pub const ALL: &'static [MetricKind] = &[$(MetricKind::$variant),+];

            /// The name in a task file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(MetricKind::$variant => $name,)+
                }
            }

            /// The options of this type, besides `type`, `weight` and `threshold`: the fields
            /// of its options struct.
            pub fn options(self) -> &'static [&'static str] {
                match self {
                    $(MetricKind::$variant => struct_fields::<$options>(),)+
                }
            }
        }

        /// What a metric checks: one variant per metric type, with exactly that type's options.
        /// Serialized internally tagged by `type`, as in a task file.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum MetricSpec {
            $($(#[$doc])* #[serde(rename = $name)] $variant($options),)+
        }

        impl MetricSpec {
            pub fn kind(&self) -> MetricKind {
                match self {
                    $(MetricSpec::$variant(_) => MetricKind::$variant,)+
                }
            }

            /// The options of a table of type `kind` (all its fields but `type`, `weight` and
            /// `threshold`).
            pub(super) fn deserialize_options<'de, D: Deserializer<'de>>(
                kind: MetricKind,
                options: D,
            ) -> Result<Self, D::Error> {
                Ok(match kind {
                    $(MetricKind::$variant => MetricSpec::$variant(<$options>::deserialize(options)?),)+
                })
            }
        }
    };
}

metric_types! {
    /// The output equals the expected output (trimmed).
    "equals" => Equals(EqualsOptions),
    /// The output contains a text (by default the expected output).
    "contains" => Contains(ContainsOptions),
    /// `contains`, ignoring case.
    "icontains" => Icontains(ContainsOptions),
    /// The output matches a regular expression.
    "regex" => Regex(RegexOptions),
    /// The answer among fixed labels (scored by log-probability on models that can).
    "choice" => Choice(ChoiceOptions),
    /// The final number of the output equals the expected one.
    "numeric" => Numeric(NumericOptions),
    /// Token F1 against the expected output.
    "f1" => F1(NoOptions),
    /// The output holds valid JSON.
    "is-json" => IsJson(NoOptions),
    /// The output's JSON satisfies a JSON Schema.
    "json-schema" => JsonSchema(JsonSchemaOptions),
    /// A field of the output's JSON equals the expected value.
    "json-field" => JsonField(JsonFieldOptions),
    /// A judge model grades the output against a rubric.
    "llm-rubric" => LlmRubric(LlmRubricOptions),
    /// Any program scores the output.
    "command" => Command(CommandOptions),
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `type` that names no metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric type `{0}`, expected one of {types}", types = quoted(MetricKind::ALL.iter().map(|k| k.as_str())))]
pub struct UnknownMetricType(pub String);

impl FromStr for MetricKind {
    type Err = UnknownMetricType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MetricKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownMetricType(s.to_string()))
    }
}

/// For types that take nothing but `weight` and `threshold` (`f1`, `is-json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// `equals`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EqualsOptions {
    /// Compare case-, space- and punctuation-insensitively (SQuAD's normalization).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalize: bool,
}

/// `contains` and `icontains`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainsOptions {
    /// The text to look for (default: the expected output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `regex`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexOptions {
    /// The pattern (Rust `regex` syntax), matched anywhere in the output unless anchored.
    pub value: String,
}

/// `choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceOptions {
    /// The allowed answers (at least two).
    pub labels: Vec<String>,
    /// Generate the answer and read the label from it, as the prompt runs when it is served,
    /// instead of scoring each label by log-probability on models that can (the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
}

/// `numeric`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericOptions {
    /// Allowed absolute difference (default 1e-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

/// `json-schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaOptions {
    /// The JSON Schema the output's JSON must satisfy.
    pub schema: Value,
}

/// `json-field`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFieldOptions {
    /// The field of the output object to compare with the expected value.
    pub field: String,
}

/// `llm-rubric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmRubricOptions {
    /// What a good answer is.
    pub rubric: String,
    /// The judge model (default: the task's meta model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The environment variables the program of a `command` metric gets from ours; nothing else
/// (an API key, say) reaches it unless the task names it in `env`.
pub const COMMAND_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ"];

/// How long the program of a `command` metric may take per output, unless `timeout_secs` says.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// `command`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandOptions {
    /// Program and arguments; gets `{"example": …, "output": …}` on stdin and prints
    /// `{"score": x, "feedback": "…"}` (or a bare number).
    pub command: Vec<String>,
    /// Most seconds one call may take before the program is killed (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
    /// Environment variables passed on to the program besides [`COMMAND_ENV`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

impl CommandOptions {
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        Self {
            command: command.into_iter().map(Into::into).collect(),
            timeout_secs: None,
            env: Vec::new(),
        }
    }
}

impl MetricConfig {
    pub fn new(spec: MetricSpec) -> Self {
        Self {
            spec,
            weight: None,
            threshold: None,
        }
    }

    /// `equals` (exact, trimmed).
    pub fn equals() -> Self {
        Self::new(MetricSpec::Equals(EqualsOptions::default()))
    }

    /// `contains` the expected output.
    pub fn contains() -> Self {
        Self::new(MetricSpec::Contains(ContainsOptions::default()))
    }

    /// `icontains` the expected output.
    pub fn icontains() -> Self {
        Self::new(MetricSpec::Icontains(ContainsOptions::default()))
    }

    pub fn regex(pattern: impl Into<String>) -> Self {
        Self::new(MetricSpec::Regex(RegexOptions {
            value: pattern.into(),
        }))
    }

    pub fn choice<S: Into<String>>(labels: impl IntoIterator<Item = S>) -> Self {
        Self::new(MetricSpec::Choice(ChoiceOptions {
            labels: labels.into_iter().map(Into::into).collect(),
            generate: false,
        }))
    }

    pub fn numeric() -> Self {
        Self::new(MetricSpec::Numeric(NumericOptions::default()))
    }

    pub fn f1() -> Self {
        Self::new(MetricSpec::F1(NoOptions {}))
    }

    pub fn is_json() -> Self {
        Self::new(MetricSpec::IsJson(NoOptions {}))
    }

    pub fn json_schema(schema: Value) -> Self {
        Self::new(MetricSpec::JsonSchema(JsonSchemaOptions { schema }))
    }

    pub fn json_field(field: impl Into<String>) -> Self {
        Self::new(MetricSpec::JsonField(JsonFieldOptions {
            field: field.into(),
        }))
    }

    /// `llm-rubric`, judged by the task's meta model.
    pub fn llm_rubric(rubric: impl Into<String>) -> Self {
        Self::new(MetricSpec::LlmRubric(LlmRubricOptions {
            rubric: rubric.into(),
            model: None,
        }))
    }

    /// `command`, with the default timeout and environment.
    pub fn command<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        Self::new(MetricSpec::Command(CommandOptions::new(command)))
    }

    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = Some(weight);
        self
    }

    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = Some(threshold);
        self
    }

    pub fn kind(&self) -> MetricKind {
        self.spec.kind()
    }

    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }

    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or(1.0)
    }

    /// The numbers of the table in their ranges: `weight` finite and not negative, `threshold`
    /// in [0, 1] (scores are: above 1 no example could pass, below 0 every one would),
    /// `tolerance` finite and not negative, `timeout_secs` positive.
    pub fn check_values(&self) -> Result<(), BuildError> {
        let kind = self.kind();
        if let Some(weight) = self.weight {
            check_range(kind, "weight", weight, false)?;
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && (0.0..=1.0).contains(&t))
        {
            return Err(BuildError::OutOfRange {
                kind,
                field: "threshold",
                expected: "a score between 0 and 1",
                value: t,
            });
        }
        match &self.spec {
            MetricSpec::Numeric(NumericOptions { tolerance: Some(t) }) => {
                check_range(kind, "tolerance", *t, false)?;
            }
            MetricSpec::Command(CommandOptions {
                timeout_secs: Some(t),
                ..
            }) => {
                check_range(kind, "timeout_secs", *t, true)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The labels of a `choice` metric.
    pub fn labels(&self) -> Option<&[String]> {
        match &self.spec {
            MetricSpec::Choice(o) => Some(&o.labels),
            _ => None,
        }
    }

    /// The judge model an `llm-rubric` metric names, if it names one.
    pub fn judge_model(&self) -> Option<&str> {
        match &self.spec {
            MetricSpec::LlmRubric(o) => o.model.as_deref(),
            _ => None,
        }
    }
}

impl From<MetricSpec> for MetricConfig {
    fn from(spec: MetricSpec) -> Self {
        Self::new(spec)
    }
}

pub(super) fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The field names of a struct with a derived `Deserialize`, as the derive hands them to
/// `deserialize_struct`: the options a metric type takes are written once, in its struct.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(de::Error::custom("only the field names were wanted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let fields = Cell::new(&[][..]);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_and_accessors() {
        for kind in MetricKind::ALL {
            assert_eq!(kind.as_str().parse::<MetricKind>().unwrap(), *kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
        assert_eq!(
            MetricKind::Command.options(),
            ["command", "timeout_secs", "env"]
        );
        assert!(MetricKind::F1.options().is_empty());
        let c = MetricConfig::choice(["a", "b"]);
        assert_eq!(
            (c.kind(), c.labels(), c.weight(), c.threshold()),
            (
                MetricKind::Choice,
                Some(&["a".to_string(), "b".to_string()][..]),
                1.0,
                1.0
            )
        );
        assert_eq!(MetricConfig::equals().labels(), None);
        let r = MetricSpec::LlmRubric(LlmRubricOptions {
            rubric: "r".into(),
            model: Some("m".into()),
        });
        assert_eq!(MetricConfig::from(r).judge_model(), Some("m"));
        assert_eq!(MetricConfig::llm_rubric("r").judge_model(), None);
    }
}
