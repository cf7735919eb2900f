//! The metrics that read the output as text against the example's accepted answers: `equals`,
//! `contains` and `icontains`, `regex`, `choice`, `numeric` and `f1`; with the readers the
//! settings and the server use as well ([`normalize`], [`parse_choice`], [`final_number`]).

use async_trait::async_trait;
use regex::Regex;

use super::{Metric, MetricError, Score};
use crate::dataset::Example;

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
pub(super) struct Equals {
    pub(super) normalize: bool,
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
pub(super) struct Contains {
    pub(super) value: Option<String>,
    pub(super) ignore_case: bool,
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
pub(super) struct RegexMatch {
    pub(super) re: Regex,
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
pub(super) struct Choice {
    pub(super) labels: Vec<String>,
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
pub(super) struct Numeric {
    pub(super) tolerance: f64,
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
pub(super) struct TokenF1;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::metric::tests::{ex, metric, v};
    use crate::metric::{ContainsOptions, EqualsOptions, MetricConfig, MetricSpec, NumericOptions};

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
}
