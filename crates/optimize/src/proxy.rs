//! The likelihood proxy: how likely the execution model finds the expected outputs after a
//! candidate prompt, as a cheap first ranking of many candidates before a few are raced on the
//! real metric (APE's log-probability score, Zhou et al., 2022).
//!
//! For each proxy example, the candidate is rendered for the example's inputs (as the
//! evaluator renders it), and the model scores the expected output as the continuation
//! (`log P(output | prompt)`, summed over its tokens; the first accepted answer when there are
//! several). One scoring pass reads the prompt and the answer once, with no decoding, so it
//! costs a fraction of a generation. The proxy of a candidate is the mean over the examples.
//!
//! Only models that score continuations have a proxy (the embedded model does; HTTP providers
//! do not, and then every candidate is raced as before).

use std::sync::Arc;

use metaprompt_eval::dataset::first_answer;
use metaprompt_eval::evaluator::continuation;
use metaprompt_eval::{Example, PromptFile};
use metaprompt_llm::{Provider, ScoreRequest};

/// Examples a proxy is computed on.
pub const PROXY_EXAMPLES: usize = 8;

/// The mean log-likelihood of the expected outputs of `examples` after `prompt`, on `model`;
/// `Err` with the reason when the prompt does not render or the model cannot score them.
/// Examples without an expected output are skipped.
pub async fn likelihood(
    model: &Arc<dyn Provider>,
    prompt: &PromptFile,
    examples: &[Example],
    output: &str,
) -> Result<f64, String> {
    let format = model.info().format;
    let mut answers = Vec::new();
    let mut inputs = Vec::new();
    for e in examples {
        let Some(expected) = e.expected.as_ref().or_else(|| e.vars.get(output)) else {
            continue;
        };
        answers.push(match first_answer(expected) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        });
        let mut vars = e.vars.clone();
        vars.remove(output);
        inputs.push(vars);
    }
    let rendered =
        metaprompt_eval::select::render_all(prompt, model.as_ref(), &inputs, format, Some(output))
            .await
            .map_err(|e| e.to_string())?;
    let requests: Vec<ScoreRequest> = rendered
        .into_iter()
        .zip(&answers)
        .map(|(rendered, answer)| ScoreRequest {
            labels: vec![continuation(&rendered, answer)],
            prompt: rendered,
        })
        .collect();
    if requests.is_empty() {
        return Err("no proxy example has an expected output".into());
    }
    let scored = model.score(&requests).await;
    let mut total = 0.0;
    for s in scored {
        let s = s.map_err(|e| e.to_string())?;
        total += s.logprobs.first().copied().unwrap_or(f64::NEG_INFINITY);
    }
    Ok(total / requests.len() as f64)
}

/// Spearman's rank correlation of two equally long samples (ties get their mean rank); `None`
/// for fewer than three pairs or a constant sample.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 3 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n + 1.0) / 2.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        num += (x - mean) * (y - mean);
        da += (x - mean).powi(2);
        db += (y - mean).powi(2);
    }
    (da > 0.0 && db > 0.0).then(|| num / (da * db).sqrt())
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut k = 0;
    while k < order.len() {
        let mut end = k;
        while end + 1 < order.len() && v[order[end + 1]] == v[order[k]] {
            end += 1;
        }
        let rank = (k + end) as f64 / 2.0 + 1.0;
        for &i in &order[k..=end] {
            r[i] = rank;
        }
        k = end + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use metaprompt_llm::testing::ScriptedProvider;
    use metaprompt_llm::{LabelScores, ModelInfo, Prompt, PromptFormat, ProviderKind, Usage};
    use serde_json::json;

    #[test]
    fn spearman_ranks_with_ties() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        let r = spearman(&[1.0, 2.0, 2.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.9487).abs() < 1e-3, "{r}");
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[tokio::test]
    async fn the_proxy_scores_the_expected_output_after_the_rendered_prompt() {
        let mut info = ModelInfo::new(ProviderKind::Local, "exec");
        info.format = PromptFormat::Text;
        // log P = -1 per label character, -0.5 when the prompt says "carefully".
        let model = Arc::new(
            ScriptedProvider::new("exec")
                .with_info(info)
                .score_with(|r| {
                    let Prompt::Text(t) = &r.prompt else {
                        unreachable!()
                    };
                    let per = if t.contains("carefully") { 0.5 } else { 1.0 };
                    let lp: Vec<f64> = r.labels.iter().map(|l| -per * l.len() as f64).collect();
                    Ok(LabelScores {
                        probs: vec![1.0; lp.len()],
                        label_tokens: vec![1; lp.len()],
                        logprobs: lp,
                        usage: Usage::default(),
                        latency: std::time::Duration::ZERO,
                        cost_usd: Some(0.0),
                        cached: false,
                    })
                }),
        );
        let examples: Vec<Example> = ["yes", "no"]
            .iter()
            .map(|a| Example {
                id: (*a).into(),
                vars: [("q".to_string(), json!("x")), ("a".to_string(), json!(a))].into(),
                expected: Some(json!([a, "other"])),
            })
            .collect();
        let mut plain = PromptFile::from_template("p", "Q: {{ q }}\nA:");
        let provider: Arc<dyn Provider> = model.clone();
        let l = likelihood(&provider, &plain, &examples, "a").await.unwrap();
        // " yes" and " no": 4 and 3 characters.
        assert_eq!(l, -3.5);
        let calls = model.score_calls();
        assert_eq!(calls[0].labels, [" yes"]);
        assert_eq!(calls[0].prompt, Prompt::Text("Q: x\nA:".into()));
        plain.instruction = Some("Answer carefully.".into());
        let careful = likelihood(&provider, &plain, &examples, "a").await.unwrap();
        assert!(careful > l);
    }
}
