//! The hand-written `Deserialize` of [`MetricConfig`]: a `[[metrics]]` table read key by key,
//! so that a field the type does not take, a missing or unknown `type` and a number out of its
//! range are errors that name the type and point at the right line.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::config::{COMMON_FIELDS, quoted};
use super::{MetricConfig, MetricKind, MetricSpec};

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
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metric::{
        ChoiceOptions, CommandOptions, ContainsOptions, EqualsOptions, JsonFieldOptions,
        JsonSchemaOptions, LlmRubricOptions, NoOptions, NumericOptions, RegexOptions,
    };

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
}
