//! `llm-rubric`: a judge model grades the output against a rubric and says why;
//! [`parse_judgement`] reads the score and the reason from the judge's answer.

use std::sync::Arc;

use async_trait::async_trait;
use metaprompt_llm::{Message, Provider, Request};
use regex::Regex;

use super::json::extract_json;
use super::{Metric, MetricError, Score};
use crate::dataset::{Example, as_text};

/// A judge model grades the output against a rubric and says why.
#[derive(Debug)]
pub(super) struct LlmRubric {
    pub(super) rubric: String,
    pub(super) judge: Arc<dyn Provider>,
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

#[cfg(test)]
mod tests {
    use metaprompt_llm::testing::ScriptedProvider;

    use super::*;
    use crate::metric::tests::ex;
    use crate::metric::{BuildError, MetricConfig, build};

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
}
