//! How a prompt runs: the execution settings it was evaluated with, kept in the prompt file
//! itself (its `[run]` table), so that what a server answers with a version is what the
//! evaluation measured, not the server's defaults.
//!
//! ```toml
//! [run]
//! temperature = 0.0
//! max_tokens = 4
//! stop = ["\n"]
//! labels = ["positive", "negative"]   # a choice: answered by label scoring where the model
//!                                     # can score (as the evaluation did), else generated and
//!                                     # read as the choice metric reads it (`answer`)
//! # generate = true                   # always generate and read (the metric's `generate`)
//! # answer_after = "Answer:"          # the model works it out first: the answer is what
//! #                                   # follows the last "Answer:" (see `answer_part`)
//!
//! # Or, for a generated answer that the metric read in a form (the server answers with what
//! # it reads, as `answer`):
//! # answer = { read = "number" }                         # `numeric`: the final number
//! # answer = { read = "normalized" }                     # `equals` with `normalize`, `f1`
//! # answer = { read = "json", schema = { … }, field = "label" }  # `is-json`, `json-schema`,
//! #                                                      # `json-field`
//! ```
//!
//! The model is the prompt's `target_model`. `optimize`, `generate`, `translate` and the agent
//! record the task's settings in what they keep; `eval` and `compare` run a prompt with its own
//! `[run]` (and model) where it has one; a version without `[run]` (older ones) runs with the
//! server's defaults, and the server says so.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Task;
use crate::metric::{self, MetricSpec};

/// The execution settings a prompt was evaluated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    #[serde(default)]
    pub temperature: f32,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// The answer is one of these labels, chosen by log-probability where the model can score
    /// labels (as the evaluation chose it); elsewhere generated, and the label read from the
    /// text as the `choice` metric reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Generate and read the label even where the model could score (the task's `choice`
    /// metric says `generate = true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
    /// How the answer is read from generated text, as the task's metric read it (none: the
    /// answer is the text itself, or one of `labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Reading>,
    /// The model writes its working first and its answer after this marker: the answer is
    /// [`answer_part`] of the output (a choice is then always generated and read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_after: Option<String>,
}

/// The answer in an output whose model works it out first and gives it after `marker`: the
/// rest of the line after the marker's last occurrence (the lines after it when that is
/// empty), else, without the marker, the last non-empty line. Trimmed.
///
/// `"3 + 2 = 5, so far 5\nAnswer: 5"` → `"5"`.
pub fn answer_part<'a>(output: &'a str, marker: &str) -> &'a str {
    match output.rfind(marker) {
        Some(at) => {
            let rest = &output[at + marker.len()..];
            let line = rest.lines().next().unwrap_or("").trim();
            if line.is_empty() { rest.trim() } else { line }
        }
        None => output
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or(""),
    }
}

/// The answer in `output`: [`answer_part`] after `marker` where there is one, else the whole
/// output. The one reading of a worked answer that the evaluator, [`RunSettings::read`] and
/// the server's online scoring share.
pub fn answer_in<'a>(output: &'a str, marker: Option<&str>) -> &'a str {
    match marker {
        Some(marker) => answer_part(output, marker),
        None => output,
    }
}

/// Why `marker` cannot mark answers, if it cannot: it must not be blank.
pub fn marker_problem(marker: &str) -> Option<String> {
    (marker.trim().is_empty())
        .then(|| "is empty: the answer needs a marker to follow, such as \"Answer:\"".into())
}

/// How a metric read its answer out of the generated text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "read", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reading {
    /// The final number in the text (`numeric`).
    Number {},
    /// Lowercased, punctuation, articles and extra spaces dropped (`equals` with `normalize`,
    /// `f1`).
    Normalized {},
    /// The JSON in the text (`is-json`); checked against `schema` where the metric had one
    /// (`json-schema`), and `field` taken out of it where the metric compared one
    /// (`json-field`).
    Json {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
}

/// An answer read from an output as its version's [`RunSettings`] say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    /// A number (`read = "number"`).
    Number(f64),
    /// A label, or normalized text.
    Text(String),
    /// JSON (`read = "json"`), or a field of it.
    Json(Value),
}

impl RunSettings {
    /// The settings a task evaluates with: its `[models]` temperature, `max_tokens` and `stop`,
    /// and the labels of its `choice` metric unless that metric generates.
    pub fn of_task(task: &Task) -> Self {
        let m = &task.config.models;
        let choice = task.config.metrics.iter().find_map(|c| match &c.spec {
            MetricSpec::Choice(o) => Some(o),
            _ => None,
        });
        Self {
            temperature: m.execution_temperature,
            max_tokens: m.max_tokens,
            stop: m.stop.clone(),
            labels: choice.map(|o| o.labels.clone()),
            generate: choice.is_some_and(|o| o.generate),
            answer: if choice.is_some() {
                None
            } else {
                Reading::of_metrics(task.config.metrics.iter().map(|m| &m.spec))
            },
            answer_after: m.answer_after.clone(),
        }
    }

    /// The settings a prompt was scored with on `task`: its own `[run]` over the task's (a
    /// version a search wrote with its own form, such as working the answer out first), else
    /// the task's.
    pub fn scored(task: &Task, own: Option<&RunSettings>) -> Self {
        let of_task = Self::of_task(task);
        match own {
            Some(own) => own.over(&of_task),
            None => of_task,
        }
    }

    /// These settings over the `task`'s (what [`RunSettings::of_task`] gave for it), as the
    /// version a search wrote keeps them: the labels and reading stay the task's (its metrics
    /// score), the rest is this version's own; a choice after worked-out text is generated.
    pub fn over(&self, task: &RunSettings) -> RunSettings {
        RunSettings {
            labels: task.labels.clone(),
            answer: task.answer.clone(),
            generate: task.generate || (task.labels.is_some() && self.answer_after.is_some()),
            ..self.clone()
        }
    }

    /// The evaluation options of a prompt with these settings, from a task's `base`.
    pub fn options(&self, base: &crate::evaluator::EvalOptions) -> crate::evaluator::EvalOptions {
        crate::evaluator::EvalOptions {
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            answer_after: self.answer_after.clone(),
            ..base.clone()
        }
    }

    /// The answer in `output`, read as this version's evaluation read it: the label for a
    /// choice, else what `answer` reads, from the text after `answer_after` where the version
    /// works its answer out first (that text itself when there is nothing more to read).
    /// `Ok(None)`: the version's answer is its whole text;
    /// `Err`: the output holds no answer of that form (why, in words).
    pub fn read(&self, output: &str) -> Result<Option<Answer>, String> {
        let output = answer_in(output, self.answer_after.as_deref());
        if let Some(labels) = &self.labels {
            return metric::parse_choice(labels, output)
                .map(|l| Some(Answer::Text(l.to_string())))
                .ok_or_else(|| format!("no answer among {labels:?} in the output"));
        }
        match (&self.answer, &self.answer_after) {
            (Some(reading), _) => reading.read(output).map(Some),
            // Worked out first: the answer is what follows the marker, never the working.
            (None, Some(_)) => Ok(Some(Answer::Text(output.to_string()))),
            (None, None) => Ok(None),
        }
    }

    /// The task as this prompt runs on it: the task's `[models]` temperature, `max_tokens`
    /// and `stop`, and its `choice` metric's `generate`, replaced by these settings; with what
    /// differs from the task, in words (the task's metrics still score: a `[run]` whose labels
    /// or reading differ from them is named, not obeyed).
    pub fn apply(&self, task: &Task) -> (Task, Vec<String>) {
        let ours = Self::of_task(task);
        let mut notes = Vec::new();
        let mut t = task.clone();
        let m = &mut t.config.models;
        if self.temperature != ours.temperature {
            notes.push(format!(
                "temperature {} (the task's: {})",
                self.temperature, ours.temperature
            ));
            m.execution_temperature = self.temperature;
        }
        if self.max_tokens != ours.max_tokens {
            notes.push(format!(
                "max_tokens {} (the task's: {})",
                self.max_tokens, ours.max_tokens
            ));
            m.max_tokens = self.max_tokens;
        }
        if self.stop != ours.stop {
            notes.push(format!(
                "stop {:?} (the task's: {:?})",
                self.stop, ours.stop
            ));
            m.stop.clone_from(&self.stop);
        }
        if self.generate != ours.generate && ours.labels.is_some() {
            notes.push(if self.generate {
                "the answer is generated and read (the task scores the labels)".into()
            } else {
                "the labels are scored (the task generates and reads them)".into()
            });
            for c in &mut t.config.metrics {
                if let MetricSpec::Choice(o) = &mut c.spec {
                    o.generate = self.generate;
                }
            }
        }
        if self.answer_after != ours.answer_after {
            notes.push(match &self.answer_after {
                Some(m) => format!("the answer is read after {m:?}, after the model's working"),
                None => "the answer is the whole output (the task reads it after a marker)".into(),
            });
            m.answer_after.clone_from(&self.answer_after);
        }
        if self.labels != ours.labels {
            notes.push(format!(
                "its [run] labels {:?} are not the task's {:?}; the task's metric scores",
                self.labels, ours.labels
            ));
        }
        if self.answer != ours.answer {
            notes.push(format!(
                "its [run] reads the answer as {}, the task's metrics as {}; the task's metrics \
                 score",
                Reading::describe(self.answer.as_ref()),
                Reading::describe(ours.answer.as_ref())
            ));
        }
        (t, notes)
    }

    /// Why these settings cannot be used, if they cannot (checked when a prompt file is read).
    pub fn problem(&self) -> Option<String> {
        if let Some(p) = metaprompt_llm::types::temperature_problem(self.temperature) {
            return Some(format!("[run] temperature {p}"));
        }
        if let Some(p) = metaprompt_llm::types::max_tokens_problem(self.max_tokens) {
            return Some(format!("[run] max_tokens {p}"));
        }
        if let Some(p) = self.answer_after.as_deref().and_then(marker_problem) {
            return Some(format!("[run] answer_after {p}"));
        }
        if self.labels.as_ref().is_some_and(|l| l.len() < 2) {
            return Some("[run] labels: a choice needs at least two labels".into());
        }
        if self.labels.is_some() && self.answer.is_some() {
            return Some(
                "[run] has both `labels` and `answer`: a choice's answer is its label".into(),
            );
        }
        if let Some(Reading::Json {
            schema: Some(schema),
            ..
        }) = &self.answer
            && let Err(e) = jsonschema::validator_for(schema)
        {
            return Some(format!("[run] answer.schema is not a JSON Schema: {e}"));
        }
        None
    }
}

impl Reading {
    /// The form the task's metrics read answers in: the first metric that reads one (a
    /// `json-schema` and a `json-field` metric together make one JSON reading).
    pub fn of_metrics<'a>(specs: impl IntoIterator<Item = &'a MetricSpec>) -> Option<Self> {
        let mut found: Option<Reading> = None;
        for spec in specs {
            let this = match spec {
                MetricSpec::Numeric(_) => Reading::Number {},
                MetricSpec::Equals(o) if o.normalize => Reading::Normalized {},
                MetricSpec::F1(_) => Reading::Normalized {},
                MetricSpec::IsJson(_) => Reading::Json {
                    schema: None,
                    field: None,
                },
                MetricSpec::JsonSchema(o) => Reading::Json {
                    schema: Some(o.schema.clone()),
                    field: None,
                },
                MetricSpec::JsonField(o) => Reading::Json {
                    schema: None,
                    field: Some(o.field.clone()),
                },
                _ => continue,
            };
            found = match (found, this) {
                (None, this) => Some(this),
                (
                    Some(Reading::Json { schema, field }),
                    Reading::Json {
                        schema: s2,
                        field: f2,
                    },
                ) => Some(Reading::Json {
                    schema: schema.or(s2),
                    field: field.or(f2),
                }),
                (Some(first), _) => Some(first),
            };
        }
        found
    }

    /// The answer in `output`, or why there is none.
    pub fn read(&self, output: &str) -> Result<Answer, String> {
        match self {
            Reading::Number {} => metric::final_number(output)
                .map(Answer::Number)
                .ok_or_else(|| "no number in the output".into()),
            Reading::Normalized {} => Ok(Answer::Text(metric::normalize(output))),
            Reading::Json { schema, field } => {
                let json = metric::extract_json(output)
                    .ok_or_else(|| "the output holds no valid JSON".to_string())?;
                if let Some(schema) = schema {
                    let validator = jsonschema::validator_for(schema)
                        .map_err(|e| format!("the schema does not compile: {e}"))?;
                    let errors: Vec<String> = validator
                        .iter_errors(&json)
                        .take(3)
                        .map(|e| format!("{e} at `{}`", e.instance_path()))
                        .collect();
                    if !errors.is_empty() {
                        return Err(format!(
                            "the JSON does not match the schema: {}",
                            errors.join("; ")
                        ));
                    }
                }
                match field {
                    Some(f) => json
                        .get(f)
                        .cloned()
                        .map(Answer::Json)
                        .ok_or_else(|| format!("the output's JSON has no field `{f}`")),
                    None => Ok(Answer::Json(json)),
                }
            }
        }
    }

    fn describe(r: Option<&Reading>) -> &'static str {
        match r {
            None => "its whole text",
            Some(Reading::Number {}) => "a number",
            Some(Reading::Normalized {}) => "normalized text",
            Some(Reading::Json { .. }) => "JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<RunSettings, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_reading_round_trips_through_toml_and_reads_as_its_metric_did() {
        let r = parse(
            "max_tokens = 32\n[answer]\nread = \"json\"\nfield = \"label\"\n\
             schema = { type = \"object\", required = [\"label\"] }\n",
        )
        .unwrap();
        assert_eq!(r.problem(), None);
        let back: RunSettings = toml::from_str(&toml::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            r.read("Sure: {\"label\": \"spam\"}").unwrap(),
            Some(Answer::Json(Value::from("spam")))
        );
        assert!(r.read("{\"other\": 1}").unwrap_err().contains("schema"));
        assert!(
            r.read("no json here")
                .unwrap_err()
                .contains("no valid JSON")
        );

        let n = parse("max_tokens = 8\nanswer = { read = \"number\" }").unwrap();
        assert_eq!(n.read("so 3 + 4 = 7.").unwrap(), Some(Answer::Number(7.0)));
        assert!(n.read("seven").is_err());
        let t = parse("max_tokens = 8\nanswer = { read = \"normalized\" }").unwrap();
        assert_eq!(
            t.read("The Eiffel Tower!").unwrap(),
            Some(Answer::Text("eiffel tower".into()))
        );
        let plain = parse("max_tokens = 8").unwrap();
        assert_eq!(plain.read("anything").unwrap(), None);
    }

    #[test]
    fn a_reading_that_cannot_be_used_is_refused_when_read() {
        assert!(parse("max_tokens = 8\nanswer = { read = \"yaml\" }").is_err());
        assert!(parse("max_tokens = 8\nanswer = { read = \"number\", field = \"x\" }").is_err());
        let both = parse("max_tokens = 8\nlabels = [\"a\", \"b\"]\nanswer = { read = \"number\" }")
            .unwrap();
        assert!(both.problem().unwrap().contains("both"));
        let bad =
            parse("max_tokens = 8\nanswer = { read = \"json\", schema = { type = 3 } }").unwrap();
        assert!(bad.problem().unwrap().contains("not a JSON Schema"));
    }

    #[test]
    fn the_reading_follows_the_tasks_metrics() {
        use crate::metric::{EqualsOptions, JsonFieldOptions, JsonSchemaOptions, NumericOptions};
        let schema = serde_json::json!({"type": "object"});
        let specs = [
            MetricSpec::JsonSchema(JsonSchemaOptions {
                schema: schema.clone(),
            }),
            MetricSpec::JsonField(JsonFieldOptions {
                field: "label".into(),
            }),
        ];
        assert_eq!(
            Reading::of_metrics(&specs),
            Some(Reading::Json {
                schema: Some(schema),
                field: Some("label".into())
            })
        );
        assert_eq!(
            Reading::of_metrics(&[MetricSpec::Numeric(NumericOptions::default())]),
            Some(Reading::Number {})
        );
        assert_eq!(
            Reading::of_metrics(&[MetricSpec::Equals(EqualsOptions { normalize: false })]),
            None
        );
    }

    #[test]
    fn a_worked_answer_is_the_text_after_the_last_marker() {
        let working = "apple: so far 1\nbananas: 1 + 3 = 4, so far 4\nAnswer: 4";
        assert_eq!(answer_part(working, "Answer:"), "4");
        // The last marker counts; the rest of its line is the answer.
        assert_eq!(
            answer_part("Answer: maybe\nso far 5\nAnswer: 5\nthanks", "Answer:"),
            "5"
        );
        // A marker at a line's end: the answer is on the lines after it.
        assert_eq!(answer_part("so far 5\nAnswer:\n 5 ", "Answer:"), "5");
        // Without the marker: the last non-empty line.
        assert_eq!(answer_part("so far 5\n5\n\n", "Answer:"), "5");
        assert_eq!(answer_part("", "Answer:"), "");

        let r =
            parse("max_tokens = 300\nanswer_after = \"Answer:\"\nanswer = { read = \"number\" }")
                .unwrap();
        assert_eq!(r.problem(), None);
        // The final number of the whole text would be 3; the marker's line says 14.
        assert_eq!(
            r.read("so far 14\nAnswer: 14\nchecked 3 times").unwrap(),
            Some(Answer::Number(14.0))
        );
        let back: RunSettings = toml::from_str(&toml::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let choice =
            parse("max_tokens = 300\nanswer_after = \"Answer:\"\nlabels = [\"True\", \"False\"]")
                .unwrap();
        assert_eq!(
            choice
                .read("not True: so far False\nAnswer: False")
                .unwrap(),
            Some(Answer::Text("False".into()))
        );
        let text = parse("max_tokens = 300\nanswer_after = \"Answer:\"").unwrap();
        assert_eq!(
            text.read("Paris is in France: so far Paris\nAnswer: Paris")
                .unwrap(),
            Some(Answer::Text("Paris".into()))
        );
        let empty = parse("max_tokens = 300\nanswer_after = \" \"").unwrap();
        assert!(empty.problem().unwrap().contains("answer_after"));
    }

    #[test]
    fn a_versions_own_form_is_kept_over_the_tasks_settings() {
        let own = parse("max_tokens = 300\nanswer_after = \"Answer:\"").unwrap();
        let task = parse("max_tokens = 4\nstop = [\"\\n\"]\nlabels = [\"yes\", \"no\"]").unwrap();
        let kept = own.over(&task);
        assert_eq!(kept.max_tokens, 300);
        assert!(kept.stop.is_empty());
        assert_eq!(kept.labels, task.labels, "the task's metric scores");
        assert!(kept.generate, "labels after working are generated and read");
        assert_eq!(kept.answer_after.as_deref(), Some("Answer:"));
    }
}
