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
//! Adding a metric type: one line in the `metric_types!` list below (its name, variant and
//! options struct), the options struct, one arm in [`build`] and the [`Metric`] implementation.

use std::cell::Cell;
use std::fmt;
use std::io::ErrorKind;
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use metaprompt_llm::{Message, Provider, Request};
use regex::Regex;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// How the program of a `command` metric failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailure {
    #[error("cannot be run: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("could not be given its input or read: {0}")]
    Io(#[source] std::io::Error),
    #[error(
        "did not finish within {0:?}, so it was killed (raise `timeout_secs` if it needs longer)"
    )]
    Timeout(Duration),
    #[error("exited with {status}: {stderr}")]
    Exit { status: ExitStatus, stderr: String },
    #[error(
        "printed {stdout:?} ({reason}); expected {{\"score\": x, \"feedback\": \"…\"}} or a number on stdout"
    )]
    Answer { stdout: String, reason: String },
    #[error("gave the score {0}, outside [0, 1]")]
    OutOfRange(f64),
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
const COMMON_FIELDS: &[&str] = &["weight", "threshold"];

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
            fn deserialize_options<'de, D: Deserializer<'de>>(
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

// Deserializing a `[[metrics]]` table by hand rather than with serde's internally tagged
// derive, which buffers the table before it knows the type: its errors then point at the first
// `[[metrics]]` header of the file whatever table is wrong, it accepts any field on a type
// without options, and its messages do not say which type was meant. Here a field is checked
// as soon as the type is known: fields after `type` at their own line, those before it (TOML
// tables reach us in key order, and most names sort before `type`) at the `type` line, with
// the type's fields listed. The values of the options are buffered as TOML values, then given
// to the options struct of the type.

impl<'de> Deserialize<'de> for MetricConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ConfigVisitor)
    }
}

struct ConfigVisitor;

impl<'de> Visitor<'de> for ConfigVisitor {
    type Value = MetricConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metric table with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetricConfig, A::Error> {
        let mut kind = None;
        let (mut weight, mut threshold) = (None, None);
        let mut options: Vec<(String, toml::Value)> = Vec::new();
        while let Some(key) = map.next_key_seed(FieldName { kind })? {
            match key.as_str() {
                "type" if kind.is_some() => return Err(de::Error::duplicate_field("type")),
                "type" => kind = Some(map.next_value_seed(TypeName { given: &options })?),
                "weight" if weight.is_some() => return Err(de::Error::duplicate_field("weight")),
                "weight" => weight = Some(map.next_value::<Checked<false>>()?.0),
                "threshold" if threshold.is_some() => {
                    return Err(de::Error::duplicate_field("threshold"));
                }
                "threshold" => threshold = Some(map.next_value::<Checked<true>>()?.0),
                _ if options.iter().any(|(k, _)| *k == key) => {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                _ => {
                    let value = map.next_value()?;
                    options.push((key, value));
                }
            }
        }
        let kind = kind.ok_or_else(|| {
            de::Error::custom(format_args!(
                "missing field `type`: a metric needs a type, one of {}",
                quoted(MetricKind::ALL.iter().map(|k| k.as_str()))
            ))
        })?;
        let spec = MetricSpec::deserialize_options(
            kind,
            de::value::MapAccessDeserializer::new(Buffered {
                entries: options.into_iter(),
                value: None,
            }),
        )
        .map_err(|e| de::Error::custom(format_args!("metric `{kind}`: {}", e.message())))?;
        let config = MetricConfig {
            spec,
            weight,
            threshold,
        };
        config.check_values().map_err(de::Error::custom)?;
        Ok(config)
    }
}

/// A `threshold` (`true`) or `weight` (`false`) checked as it is read, so that its error points
/// at its own line; the same ranges as [`MetricConfig::check_values`].
struct Checked<const THRESHOLD: bool>(f64);

impl<'de, const THRESHOLD: bool> Deserialize<'de> for Checked<THRESHOLD> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        let (ok, field, expected) = if THRESHOLD {
            (
                v.is_finite() && (0.0..=1.0).contains(&v),
                "threshold",
                "a score between 0 and 1",
            )
        } else {
            (v.is_finite() && v >= 0.0, "weight", "a non-negative number")
        };
        if ok {
            Ok(Checked(v))
        } else {
            Err(de::Error::custom(format_args!(
                "`{field}` must be {expected}, got {v}"
            )))
        }
    }
}

/// "unknown field `labels` for metric type `equals`, expected one of `normalize`, `weight`,
/// `threshold` (`labels` belongs to `choice`)".
fn unknown_field(kind: MetricKind, key: &str) -> String {
    let fields = quoted(kind.options().iter().chain(COMMON_FIELDS).copied());
    let owners: Vec<&str> = MetricKind::ALL
        .iter()
        .filter(|k| k.options().contains(&key))
        .map(|k| k.as_str())
        .collect();
    let hint = if owners.is_empty() {
        String::new()
    } else {
        format!(" (`{key}` belongs to {})", quoted(owners))
    };
    format!("unknown field `{key}` for metric type `{kind}`, expected one of {fields}{hint}")
}

fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key of a metric table, refused on the spot (so the error points at it) when the type is
/// already known and does not take it.
struct FieldName {
    kind: Option<MetricKind>,
}

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let key = String::deserialize(deserializer)?;
        match self.kind {
            Some(kind)
                if !(key == "type"
                    || COMMON_FIELDS.contains(&key.as_str())
                    || kind.options().contains(&key.as_str())) =>
            {
                Err(de::Error::custom(unknown_field(kind, &key)))
            }
            _ => Ok(key),
        }
    }
}

/// The value of `type`, which also refuses the fields already given that the type does not
/// take (so the error points at the `type` line of the right table).
struct TypeName<'a> {
    given: &'a [(String, toml::Value)],
}

impl<'de> DeserializeSeed<'de> for TypeName<'_> {
    type Value = MetricKind;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MetricKind, D::Error> {
        let name = String::deserialize(deserializer)?;
        let kind: MetricKind = name.parse().map_err(de::Error::custom)?;
        match self
            .given
            .iter()
            .find(|(key, _)| !kind.options().contains(&key.as_str()))
        {
            Some((key, _)) => Err(de::Error::custom(unknown_field(kind, key))),
            None => Ok(kind),
        }
    }
}

/// The options of a metric table, buffered until its type was known.
struct Buffered {
    entries: std::vec::IntoIter<(String, toml::Value)>,
    value: Option<(String, toml::Value)>,
}

impl<'de> MapAccess<'de> for Buffered {
    type Error = toml::de::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name = seed.deserialize(key.as_str().into_deserializer())?;
        self.value = Some((key, value));
        Ok(Some(name))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(value)
            .map_err(|e| de::Error::custom(format_args!("`{key}`: {}", e.message())))
    }
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

/// The accepted answers of an example (a list in the data: any of them passes), at least one.
fn expected_answers(example: &Example, metric: &str) -> Result<Vec<String>, MetricError> {
    let answers = example
        .expected
        .as_ref()
        .map(crate::dataset::accepted)
        .ok_or_else(|| MetricError::Failed {
            metric: metric.into(),
            message: format!("example {} has no expected output", example.id),
        })?;
    if answers.is_empty() {
        return Err(MetricError::Failed {
            metric: metric.into(),
            message: format!(
                "example {}: the expected output is an empty list (a list holds the accepted answers; give at least one)",
                example.id
            ),
        });
    }
    Ok(answers)
}

/// `"x"`, or `one of ["x", "y"]`, for feedback.
fn show_answers(answers: &[String]) -> String {
    match answers {
        [one] => format!("{one:?}"),
        many => format!("one of {many:?}"),
    }
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
        let answers = expected_answers(example, "equals")?;
        let ok = answers.iter().any(|expected| {
            if self.normalize {
                normalize(output) == normalize(expected)
            } else {
                output.trim() == expected.trim()
            }
        });
        Ok(Score::pass(ok, || {
            format!(
                "expected {}, got {:?}",
                show_answers(&answers),
                output.trim()
            )
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
        let needles = match &self.value {
            Some(v) => vec![v.clone()],
            None => expected_answers(example, self.name())?,
        };
        let ok = needles.iter().any(|needle| {
            if self.ignore_case {
                output.to_lowercase().contains(&needle.to_lowercase())
            } else {
                output.contains(needle.as_str())
            }
        });
        Ok(Score::pass(ok, || {
            format!("the output does not contain {}", show_answers(&needles))
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
        parse_choice(&self.labels, output)
    }
}

/// The label a generated answer gives, as the `choice` metric reads it: the label (a whole word,
/// any case) that appears first in the text; `None` when none does. The server reads a served
/// choice's answer the same way.
pub fn parse_choice<'a>(labels: &'a [String], output: &str) -> Option<&'a str> {
    let lower = output.to_lowercase();
    labels
        .iter()
        .filter_map(|l| {
            let needle = l.trim().to_lowercase();
            let re = Regex::new(&format!(r"(^|\W){}($|\W)", regex::escape(&needle))).ok()?;
            re.find(&lower).map(|m| (m.start(), l.as_str()))
        })
        .min_by_key(|(pos, _)| *pos)
        .map(|(_, l)| l)
}

#[async_trait]
impl Metric for Choice {
    fn name(&self) -> &str {
        "choice"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let answers = expected_answers(example, "choice")?;
        let expected = show_answers(&answers);
        Ok(match self.parse(output) {
            Some(label) => Score::pass(
                answers
                    .iter()
                    .any(|a| label.trim().eq_ignore_ascii_case(a.trim())),
                || format!("answered {label:?}, expected {expected}"),
            ),
            None => Score {
                value: 0.0,
                feedback: Some(format!(
                    "no answer among {:?} in {:?}; expected {expected}",
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
        let mut expected = Vec::new();
        for raw in expected_answers(example, "numeric")? {
            expected.push(final_number(&raw).ok_or_else(|| MetricError::Failed {
                metric: "numeric".into(),
                message: format!(
                    "example {}: the expected output {raw:?} holds no number",
                    example.id
                ),
            })?);
        }
        let shown = show_answers(&expected.iter().map(f64::to_string).collect::<Vec<_>>());
        Ok(match final_number(output) {
            Some(got) => Score::pass(
                expected.iter().any(|e| (got - e).abs() <= self.tolerance),
                || format!("answered {got}, expected {shown}"),
            ),
            None => Score {
                value: 0.0,
                feedback: Some(format!("no number in the output; expected {shown}")),
            },
        })
    }
}

/// Token F1 of two normalized texts.
fn token_f1(expected: &str, got: &str) -> f64 {
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
    if e.is_empty() && g.is_empty() {
        1.0
    } else if common == 0.0 {
        0.0
    } else {
        let (p, r) = (common / g.len() as f64, common / e.len() as f64);
        2.0 * p * r / (p + r)
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
        // Against several accepted answers, the best match counts (SQuAD's convention).
        let got = normalize(output);
        let (value, expected) = expected_answers(example, "f1")?
            .iter()
            .map(|a| {
                let a = normalize(a);
                (token_f1(&a, &got), a)
            })
            .fold((f64::NEG_INFINITY, String::new()), |best, x| {
                if x.0 > best.0 { x } else { best }
            });
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

/// Any program: example and output as JSON on stdin, score (and feedback) on stdout. It runs
/// with a clean environment ([`COMMAND_ENV`] plus the task's `env`) and is killed when it takes
/// longer than its timeout. Each failure is an error, never a score of 0.
#[derive(Debug)]
struct CustomCommand {
    command: Vec<String>,
    timeout: Duration,
    /// The variables passed on, when set here.
    env: Vec<String>,
}

impl CustomCommand {
    fn new(options: &CommandOptions) -> Result<Self, BuildError> {
        if options.command.is_empty() {
            return Err(BuildError::EmptyCommand);
        }
        let timeout = match options.timeout_secs {
            Some(secs) => {
                let secs = check_range(MetricKind::Command, "timeout_secs", secs, true)?;
                Duration::try_from_secs_f64(secs).map_err(|_| BuildError::OutOfRange {
                    kind: MetricKind::Command,
                    field: "timeout_secs",
                    expected: "a number of seconds that fits a duration",
                    value: secs,
                })?
            }
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        if let Some(bad) = options
            .env
            .iter()
            .find(|n| n.is_empty() || n.contains(['=', '\0']))
        {
            return Err(BuildError::EnvName(bad.clone()));
        }
        let mut env: Vec<String> = COMMAND_ENV.iter().map(|n| n.to_string()).collect();
        for name in &options.env {
            if !env.contains(name) {
                env.push(name.clone());
            }
        }
        Ok(Self {
            command: options.command.clone(),
            timeout,
            env,
        })
    }

    fn fail(&self, failure: CommandFailure) -> MetricError {
        MetricError::Command {
            command: shell_words(&self.command),
            failure,
        }
    }

    /// Runs the program once on `input`; its stdout.
    async fn run(&self, input: Vec<u8>) -> Result<String, CommandFailure> {
        let mut command = tokio::process::Command::new(&self.command[0]);
        command
            .args(&self.command[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Also when this future is dropped (a cancelled evaluation).
            .kill_on_drop(true);
        for name in &self.env {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let mut child = command.spawn().map_err(CommandFailure::Spawn)?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let exchange = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    match stdin.write_all(&input).await {
                        // A program may score without reading all of its input.
                        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            };
            let (_, out, err) = tokio::try_join!(write, read_all(stdout), read_all(stderr))?;
            Ok::<_, std::io::Error>((child.wait().await?, out, err))
        };
        let outcome = tokio::time::timeout(self.timeout, exchange).await;
        let (status, out, err) = match outcome {
            Ok(done) => done.map_err(CommandFailure::Io)?,
            Err(_) => {
                // Killed and reaped; an error here means it has just exited by itself.
                let _ = child.kill().await;
                return Err(CommandFailure::Timeout(self.timeout));
            }
        };
        if !status.success() {
            return Err(CommandFailure::Exit {
                status,
                stderr: tail(String::from_utf8_lossy(&err).trim(), 2000),
            });
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> String {
    let skip = text.chars().count().saturating_sub(max);
    match skip {
        0 => text.to_string(),
        _ => format!("…{}", text.chars().skip(skip).collect::<String>()),
    }
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A command as one would type it: `python3 score.py 'two words'`.
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_alphanumeric() || "-_./:=@%+,".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The program's answer: `{"score": x, "feedback": "…"}` or a bare number, in [0, 1].
fn parse_answer(stdout: &str) -> Result<Score, CommandFailure> {
    #[derive(Deserialize)]
    struct Answer {
        score: f64,
        #[serde(default)]
        feedback: Option<String>,
    }
    let text = stdout.trim();
    let score = match text.parse::<f64>() {
        Ok(value) => Score {
            value,
            feedback: None,
        },
        Err(_) => {
            let answer: Answer =
                serde_json::from_str(text).map_err(|e| CommandFailure::Answer {
                    stdout: clip(text, 500),
                    reason: e.to_string(),
                })?;
            Score {
                value: answer.score,
                feedback: answer.feedback,
            }
        }
    };
    if (0.0..=1.0).contains(&score.value) {
        Ok(score)
    } else {
        Err(CommandFailure::OutOfRange(score.value))
    }
}

#[async_trait]
impl Metric for CustomCommand {
    fn name(&self) -> &str {
        "command"
    }
    async fn score(&self, example: &Example, output: &str) -> Result<Score, MetricError> {
        let input = json!({"example": {"id": example.id, "vars": example.vars, "expected": example.expected}, "output": output});
        let stdout = self
            .run(input.to_string().into_bytes())
            .await
            .map_err(|f| self.fail(f))?;
        parse_answer(&stdout).map_err(|f| self.fail(f))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use metaprompt_llm::testing::ScriptedProvider;

    use super::*;

    fn ex(expected: &str) -> Example {
        Example {
            id: "t:1".into(),
            vars: BTreeMap::from([("q".into(), json!("question"))]),
            expected: Some(json!(expected)),
        }
    }

    fn metric(config: MetricConfig) -> Arc<dyn Metric> {
        build(&config, None).unwrap()
    }

    async fn v(m: &Arc<dyn Metric>, expected: &str, output: &str) -> f64 {
        m.score(&ex(expected), output).await.unwrap().value
    }

    #[tokio::test]
    async fn string_metrics() {
        let eq = metric(MetricConfig::equals());
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
        let norm = metric(MetricSpec::Equals(EqualsOptions { normalize: true }).into());
        assert_eq!(v(&norm, "The Eiffel Tower", "eiffel tower!").await, 1.0);
        let c = metric(MetricConfig::contains());
        assert_eq!(
            (
                v(&c, "Paris", "It is Paris.").await,
                v(&c, "Paris", "it is paris").await
            ),
            (1.0, 0.0)
        );
        let ic = metric(
            MetricSpec::Icontains(ContainsOptions {
                value: Some("PARIS".into()),
            })
            .into(),
        );
        assert_eq!(v(&ic, "x", "it is paris").await, 1.0);
        let re = metric(MetricConfig::regex(r"^\d{4}-\d{2}-\d{2}$"));
        assert_eq!(
            (v(&re, "", "2024-01-31").await, v(&re, "", "Jan 31").await),
            (1.0, 0.0)
        );
    }

    #[tokio::test]
    async fn a_list_of_accepted_answers_passes_on_any_of_them() {
        let many = |answers: Value| Example {
            id: "t:2".into(),
            vars: BTreeMap::new(),
            expected: Some(answers),
        };
        let score = |m: Arc<dyn Metric>, e: Example, out: &'static str| async move {
            m.score(&e, out).await.unwrap()
        };
        let answers = json!(["New York City", "NYC", "New York"]);
        let eq = metric(MetricSpec::Equals(EqualsOptions { normalize: true }).into());
        assert_eq!(
            score(eq.clone(), many(answers.clone()), "nyc").await.value,
            1.0
        );
        let miss = score(eq, many(answers.clone()), "Boston").await;
        assert_eq!(miss.value, 0.0);
        assert!(miss.feedback.unwrap().contains("one of [\"New York City\""));
        let c = metric(MetricConfig::icontains());
        assert_eq!(
            score(c, many(answers.clone()), "It is NYC.").await.value,
            1.0
        );
        // F1 takes the best-matching answer.
        let f1 = metric(MetricConfig::f1());
        let best = score(f1, many(answers.clone()), "new york").await.value;
        assert!((best - 1.0).abs() < 1e-9, "{best}");
        let n = metric(MetricConfig::numeric());
        assert_eq!(
            score(n, many(json!(["12", "12.0", "twelve (12)"])), "= 12")
                .await
                .value,
            1.0
        );
        let choice = metric(MetricConfig::choice(["yes", "no", "unknown"]));
        assert_eq!(
            score(choice, many(json!(["no", "unknown"])), "Unknown.")
                .await
                .value,
            1.0
        );
        // An empty list is the data's fault, named.
        let err = metric(MetricConfig::equals())
            .score(&many(json!([])), "x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("t:2") && err.contains("empty list"), "{err}");
        // Demonstrations show the first accepted answer.
        assert_eq!(
            crate::dataset::first_answer(&answers),
            json!("New York City")
        );
    }

    #[tokio::test]
    async fn choice_parses_whole_words_first_match() {
        let m = metric(MetricConfig::choice(["positive", "negative"]));
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
        let m = metric(MetricConfig::numeric());
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
        let loose = metric(
            MetricSpec::Numeric(NumericOptions {
                tolerance: Some(0.5),
            })
            .into(),
        );
        assert_eq!(v(&loose, "#### 72", "71.6").await, 1.0);
    }

    #[tokio::test]
    async fn token_f1() {
        let m = metric(MetricConfig::f1());
        assert_eq!(v(&m, "the Eiffel Tower", "Eiffel tower").await, 1.0);
        let f = v(&m, "Barack Obama", "Obama").await;
        assert!((f - 2.0 / 3.0).abs() < 1e-12, "{f}");
        assert_eq!(v(&m, "Paris", "London").await, 0.0);
    }

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

    #[tokio::test]
    async fn llm_rubric_with_the_scripted_judge() {
        let judge = Arc::new(
            ScriptedProvider::new("judge")
                .reply("{\"score\": 0.8, \"reason\": \"Mostly right, misses the date.\"}")
                .reply("Score: 7/10 because it is terse")
                .reply("I refuse"),
        );
        let c = MetricConfig::llm_rubric("Mentions Paris and the year 1889.");
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
        assert!(matches!(build(&c, None), Err(BuildError::NoJudge)));
        assert!(
            build(&c, None)
                .unwrap_err()
                .to_string()
                .contains("judge model")
        );
    }

    fn command(words: &[&str]) -> CommandOptions {
        CommandOptions::new(words.iter().copied())
    }

    async fn command_error(options: CommandOptions) -> String {
        let m = metric(MetricSpec::Command(options).into());
        let e = m.score(&ex("x"), "y").await.unwrap_err();
        assert!(matches!(e, MetricError::Command { .. }), "{e:?}");
        e.to_string()
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
        let m = metric(MetricConfig::command([
            "python3".to_string(),
            script.display().to_string(),
        ]));
        let s = m.score(&ex("yes"), " yes ").await.unwrap();
        assert_eq!((s.value, s.feedback.as_deref()), (1.0, Some("checked t:1")));
        assert_eq!(m.score(&ex("yes"), "no").await.unwrap().value, 0.0);
        let bare = metric(MetricConfig::command(["sh", "-c", "echo 0.25"]));
        assert_eq!(v(&bare, "x", "y").await, 0.25);
    }

    /// Whatever goes wrong with the program is an error (the output is then unscored), not a
    /// score of 0.
    #[tokio::test]
    async fn command_failures_are_errors() {
        let e = command_error(command(&["python3", "-c", "print('lots')"])).await;
        assert!(
            e.contains("expected {\"score\"") && e.contains("\"lots\""),
            "{e}"
        );
        let e = command_error(command(&["python3", "-c", "print(1.5)"])).await;
        assert!(e.contains("outside [0, 1]"), "{e}");
        let e = command_error(command(&["python3", "-c", "print('nan')"])).await;
        assert!(e.contains("outside [0, 1]"), "{e}");
        let e = command_error(command(&["sh", "-c", "echo broken >&2; exit 3"])).await;
        assert!(
            e.contains("`sh -c 'echo broken >&2; exit 3'` exited with")
                && e.contains("3")
                && e.contains("broken"),
            "{e}"
        );
        let e = command_error(command(&["/nonexistent/scorer"])).await;
        assert!(e.contains("`/nonexistent/scorer` cannot be run"), "{e}");
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut options = command(&["sh", "-c", "echo $$ > \"$0\"; exec sleep 30"]);
        options.command.push(pid_file.display().to_string());
        options.timeout_secs = Some(1.0);
        let start = std::time::Instant::now();
        let e = command_error(options).await;
        let took = start.elapsed();
        assert!(
            e.contains("`sh -c") && e.contains("did not finish within 1s") && e.contains("killed"),
            "{e}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{took:?}"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        #[cfg(target_os = "linux")]
        assert!(
            !Path::new(&format!("/proc/{}", pid.trim())).exists(),
            "the program (pid {pid}) still runs"
        );
        let _ = pid;
    }

    /// The program sees our PATH, HOME, locale… and what the task lists in `env`, nothing else
    /// (an API key in our environment does not reach it).
    #[tokio::test]
    async fn a_command_gets_a_clean_environment() {
        // Cargo sets CARGO_* in the environment of the tests: they stand for the secrets, so no
        // test has to change the environment of a process that runs tests in threads. (The
        // program may be a wrapper that adds variables of its own, like pyenv's shim.)
        let ours: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("CARGO"))
            .collect();
        let [shared, ..] = ours.as_slice() else {
            panic!("the test process needs CARGO_* variables (run it with cargo)")
        };
        let mut options = command(&[
            "python3",
            "-c",
            "import json, os; print(json.dumps({'score': 1, 'feedback': json.dumps(sorted(os.environ))}))",
        ]);
        options.env = vec![shared.clone()];
        let m = metric(MetricSpec::Command(options).into());
        let feedback = m.score(&ex("x"), "y").await.unwrap().feedback.unwrap();
        let seen: Vec<String> = serde_json::from_str(&feedback).unwrap();
        assert!(seen.contains(shared), "{shared} not passed: {seen:?}");
        for name in &ours[1..] {
            assert!(!seen.contains(name), "{name} leaked: {seen:?}");
        }
        assert_eq!(
            seen.contains(&"PATH".to_string()),
            std::env::var_os("PATH").is_some(),
            "{seen:?}"
        );
        assert!(ours.len() > 1, "no variable was left out: {ours:?}");
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

    fn parse(table: &str) -> Result<MetricConfig, String> {
        toml::from_str(table).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_out_of_range_are_errors_when_read() {
        for (table, shown) in [
            (
                "type = \"f1\"\nthreshold = 1.5",
                "`threshold` must be a score between 0 and 1, got 1.5",
            ),
            (
                "type = \"f1\"\nthreshold = -0.5",
                "`threshold` must be a score between 0 and 1, got -0.5",
            ),
            (
                "type = \"f1\"\nthreshold = nan",
                "`threshold` must be a score between 0 and 1, got NaN",
            ),
            (
                "type = \"f1\"\nweight = -1",
                "`weight` must be a non-negative number, got -1",
            ),
            (
                "type = \"f1\"\nweight = inf",
                "`weight` must be a non-negative number, got inf",
            ),
            (
                "type = \"numeric\"\ntolerance = -0.1",
                "`tolerance` must be a non-negative number",
            ),
            (
                "type = \"command\"\ncommand = [\"x\"]\ntimeout_secs = 0",
                "`timeout_secs` must be a positive number",
            ),
        ] {
            let e = parse(table).unwrap_err();
            assert!(e.contains(shown), "{table}: {e}");
        }
        assert_eq!(
            parse("type = \"f1\"\nthreshold = 0.5").unwrap().threshold(),
            0.5
        );
    }

    /// Every type: a valid table, the same table with a field of another type, and one with a
    /// typo.
    #[test]
    fn each_type_parses_exactly_its_fields() {
        let valid = [
            (
                "type = \"equals\"\nnormalize = true",
                MetricSpec::Equals(EqualsOptions { normalize: true }),
            ),
            (
                "type = \"contains\"\nvalue = \"Paris\"",
                MetricSpec::Contains(ContainsOptions {
                    value: Some("Paris".into()),
                }),
            ),
            (
                "type = \"icontains\"",
                MetricSpec::Icontains(ContainsOptions { value: None }),
            ),
            (
                "type = \"regex\"\nvalue = \"^a\"",
                MetricSpec::Regex(RegexOptions { value: "^a".into() }),
            ),
            (
                "type = \"choice\"\nlabels = [\"a\", \"b\"]",
                MetricSpec::Choice(ChoiceOptions {
                    labels: vec!["a".into(), "b".into()],
                    generate: false,
                }),
            ),
            (
                "type = \"numeric\"\ntolerance = 1",
                MetricSpec::Numeric(NumericOptions {
                    tolerance: Some(1.0),
                }),
            ),
            ("type = \"f1\"", MetricSpec::F1(NoOptions {})),
            ("type = \"is-json\"", MetricSpec::IsJson(NoOptions {})),
            (
                "type = \"json-schema\"\nschema = { type = \"object\", required = [\"total\"] }",
                MetricSpec::JsonSchema(JsonSchemaOptions {
                    schema: json!({"type": "object", "required": ["total"]}),
                }),
            ),
            (
                "type = \"json-field\"\nfield = \"total\"",
                MetricSpec::JsonField(JsonFieldOptions {
                    field: "total".into(),
                }),
            ),
            (
                "type = \"llm-rubric\"\nrubric = \"Polite.\"\nmodel = \"openai:gpt-4o-mini\"",
                MetricSpec::LlmRubric(LlmRubricOptions {
                    rubric: "Polite.".into(),
                    model: Some("openai:gpt-4o-mini".into()),
                }),
            ),
            (
                "type = \"command\"\ncommand = [\"python3\", \"s.py\"]\ntimeout_secs = 5\nenv = [\"PYTHONPATH\"]",
                MetricSpec::Command(CommandOptions {
                    command: vec!["python3".into(), "s.py".into()],
                    timeout_secs: Some(5.0),
                    env: vec!["PYTHONPATH".into()],
                }),
            ),
        ];
        assert_eq!(valid.len(), MetricKind::ALL.len(), "one case per type");
        for (table, spec) in valid {
            let kind = spec.kind();
            let config = parse(&format!("{table}\nweight = 2\nthreshold = 0.5")).unwrap();
            assert_eq!(
                config,
                MetricConfig::new(spec).with_weight(2.0).with_threshold(0.5),
                "{table}"
            );
            // Written back, it reads the same.
            let written = toml::to_string(&config).unwrap();
            assert_eq!(parse(&written).unwrap(), config, "{written}");
            assert!(
                written.starts_with(&format!("type = \"{kind}\"")),
                "{written}"
            );

            let other = if kind == MetricKind::Choice {
                "rubric = \"x\""
            } else {
                "labels = [\"a\", \"b\"]"
            };
            let e = parse(&format!("{table}\n{other}")).unwrap_err();
            let field = other.split(' ').next().unwrap();
            assert!(
                e.contains(&format!("unknown field `{field}` for metric type `{kind}`"))
                    && e.contains("`weight`, `threshold`")
                    && e.contains("belongs to"),
                "{e}"
            );
            for option in kind.options() {
                assert!(e.contains(&format!("`{option}`")), "{e} lists {option}");
            }
            let e = parse(&format!("{table}\nwieght = 2")).unwrap_err();
            assert!(
                e.contains(&format!("unknown field `wieght` for metric type `{kind}`")),
                "{e}"
            );
        }
    }

    #[test]
    fn metric_table_errors() {
        let e = parse("type = \"chioce\"\nlabels = [\"a\", \"b\"]").unwrap_err();
        assert!(
            e.contains("line 1")
                && e.contains("unknown metric type `chioce`, expected one of `equals`, `contains`"),
            "{e}"
        );
        let e = parse("labels = [\"a\", \"b\"]").unwrap_err();
        assert!(e.contains("missing field `type`"), "{e}");
        let e = parse("type = \"choice\"").unwrap_err();
        assert!(e.contains("metric `choice`: missing field `labels`"), "{e}");
        let e = parse("type = \"choice\"\nlabels = \"a, b\"").unwrap_err();
        assert!(
            e.contains("metric `choice`: `labels`: invalid type: string"),
            "{e}"
        );
        let e =
            parse("type = \"choice\"\nlabels = [\"a\", \"b\"]\nweight = \"heavy\"").unwrap_err();
        assert!(e.contains("line 3") && e.contains("invalid type"), "{e}");
        // TOML tables come in key order: a field after `type` is refused at its own line, one
        // before it at the `type` line.
        let e = parse("type = \"f1\"\nvalue = \"x\"").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("unknown field `value` for metric type `f1`"),
            "{e}"
        );
        let e = parse("a = 1\ntype = \"f1\"").unwrap_err();
        assert!(
            e.contains("line 2")
                && e.contains(
                    "unknown field `a` for metric type `f1`, expected one of `weight`, `threshold`"
                ),
            "{e}"
        );
        assert!(!e.contains("belongs to"), "{e}");
    }

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
