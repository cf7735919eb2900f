//! Evaluator overhead against a mock OpenAI-compatible server that answers every request in a
//! fixed 200 ms: 1,000 examples at concurrency 32. The ideal wall time is 1000 × 0.2 / 32 s.
//!
//!     cargo bench -p metaprompt-eval --bench overhead

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metaprompt_eval::metric::MetricConfig;
use metaprompt_eval::{EvalOptions, Example, PromptFile, Scorer, evaluate};
use metaprompt_llm::{Config, Hub};
use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const N: usize = 1000;
const CONCURRENCY: usize = 32;
const DELAY: Duration = Duration::from_millis(200);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(path("/v1/chat/completions"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({
                        "id": "x", "object": "chat.completion", "created": 0, "model": "mock",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}
                    }))
                    .set_delay(DELAY),
            )
            .mount(&server)
            .await;
        let config = Config::parse(&format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nconcurrency = {CONCURRENCY}\n",
            server.uri()
        ))
        .unwrap();
        let hub = Hub::new(config);
        let model = hub.model("mock:bench").unwrap();
        let examples: Vec<Example> = (0..N)
            .map(|i| Example {
                id: format!("bench:{i}"),
                vars: BTreeMap::from([("text".into(), json!(format!("review number {i}")))]),
                expected: Some(json!("positive")),
            })
            .collect();
        let scorer = Scorer::new(&[MetricConfig::equals()], None).unwrap();
        let prompt = PromptFile::from_template("bench", "Review: {{ text }}\nSentiment:");
        let options = EvalOptions { temperature: 0.0, max_tokens: 4, stop: vec![], output: "label".into(), seed: 1, answer_after: None };
        let start = Instant::now();
        let report = evaluate(&prompt, &model, &scorer, &examples, &options, &|_, _| {}).await.unwrap();
        let wall = start.elapsed();
        let ideal = DELAY.as_secs_f64() * N as f64 / CONCURRENCY as f64;
        assert_eq!(report.summary.errors, 0);
        assert_eq!(report.summary.score.mean, 1.0);
        println!("{N} examples, {} ms per answer, concurrency {CONCURRENCY}", DELAY.as_millis());
        println!("ideal wall time: {ideal:.2} s");
        println!("measured:        {:.2} s ({:+.1}% over ideal)", wall.as_secs_f64(), 100.0 * (wall.as_secs_f64() / ideal - 1.0));
    });
}
