//! The web console's page weight and speed on a big library: 1,000 prompts × 10 versions (two
//! evidence rows each, a `production` label on every prompt, the newest version of each a
//! proposal waiting for review) and 20,000 scored inferences over the last week on 50 of them.
//! Every page is fetched signed in (a reviewer's cookie) by a client in this process, one
//! request at a time; each line gives the bytes transferred and the time to the last byte
//! (p50 and max of the repeats) beside the limits (200 KB, 300 ms), and `/healthz` beside
//! them as the floor of the same HTTP stack.
//!
//! `cargo bench -p metaprompt-server --bench console` (`-- --repeats 20` for more).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::prompt::PromptFile;
use metaprompt_llm::Config;
use metaprompt_registry::model::{Batch, Evidence, LabelMove, NewVersion, Origin};
use metaprompt_registry::service::{
    Feedback, FeedbackSource, Inference, Role, Token, mint_token, token_hash,
};
use metaprompt_server::ServerOptions;
use serde_json::json;

const PROMPTS: usize = 1000;
const VERSIONS: usize = 10;
const LIVE_PROMPTS: usize = 50;
const INFERENCES: usize = 20_000;

fn evidence(split: &str, mean: f64, baseline: Option<String>) -> Evidence {
    Evidence {
        task: "route".into(),
        split: split.into(),
        model: "mock:exec".into(),
        metric: "choice".into(),
        n: 200,
        mean,
        low: mean - 0.05,
        high: mean + 0.05,
        diff: baseline.as_ref().map(|_| 0.03),
        diff_low: baseline.as_ref().map(|_| -0.01),
        diff_high: baseline.as_ref().map(|_| 0.07),
        p_value: baseline.as_ref().map(|_| 0.12),
        baseline,
        cost_per_execution_usd: Some(0.000_02),
        run: None,
        recorded_at: None,
    }
}

fn file(p: usize, v: usize) -> PromptFile {
    let mut f =
        PromptFile::from_template(&format!("prompt-{p:04}"), "Question: {{ question }}\nTeam:");
    f.instruction = Some(format!(
        "Route the customer's question to billing, tech or other (revision {v}).\n\
         Invoices, charges and refunds are billing; logins and errors are tech.\n\
         Answer with the team's name only."
    ));
    f.demos = (0..4)
        .map(|k| {
            BTreeMap::from([
                ("question".to_string(), json!(format!("example {k} of {v}"))),
                ("team".to_string(), json!("billing")),
            ])
        })
        .collect();
    f.target_model = Some("mock:exec".into());
    f
}

async fn seed(library: &std::path::Path) -> String {
    let started = Instant::now();
    let store = metaprompt_registry::open(library).await.unwrap();
    for p in 0..PROMPTS {
        let name = format!("prompt-{p:04}");
        let mut batch = Batch::default();
        let mut parent: Option<String> = None;
        for v in 1..=VERSIONS {
            let f = file(p, v);
            let hash = metaprompt_registry::content::hash(&f);
            let origin = if v == VERSIONS {
                Origin::Optimize
            } else {
                Origin::Human
            };
            let mut nv = NewVersion::new(&name, f, origin, "bench");
            nv.parents = parent.iter().cloned().collect();
            nv.message = Some(format!("revision {v}"));
            let ev = vec![
                evidence("dev", 0.7 + v as f64 * 0.01, parent.clone()),
                evidence("test", 0.69 + v as f64 * 0.01, parent.clone()),
            ];
            batch.versions.push((nv, ev));
            parent = Some(hash);
        }
        let added = store.commit(batch).await.unwrap();
        store
            .move_label(&LabelMove {
                prompt: name,
                label: "production".into(),
                to: Some(added[VERSIONS - 2].version.hash.clone()),
                actor: "bench".into(),
                comment: None,
            })
            .await
            .unwrap();
    }
    let versions = store.versions("prompt-0001").await.unwrap();
    store.close().await;
    let service = metaprompt_registry::open_service(library).await.unwrap();
    let now = Utc::now();
    let production = &versions[VERSIONS - 2];
    for chunk in 0..INFERENCES / 1000 {
        let mut inf = Vec::new();
        let mut fb = Vec::new();
        for k in 0..1000 {
            let i = chunk * 1000 + k;
            let at = now - chrono::Duration::seconds((i as i64 * 7 * 86_400) / INFERENCES as i64);
            let id = format!("inf_{i:08}");
            let topic = ["billing", "tech", "other"][i % 3];
            inf.push(Inference {
                id: id.clone(),
                prompt: format!("prompt-{:04}", i % LIVE_PROMPTS),
                hash: production.hash.clone(),
                seq: production.seq,
                label: Some("production".into()),
                model: "mock:exec".into(),
                inputs: json!({"question": format!("question {i}")}),
                rendered_hash: "0".repeat(64),
                output: Some("billing".into()),
                error: None,
                tags: BTreeMap::from([("topic".to_string(), topic.to_string())]),
                metadata: json!({}),
                input_tokens: 40,
                output_tokens: 1,
                cost_usd: Some(0.000_02),
                latency_ms: 120.0,
                caller: "bench".into(),
                created_at: at,
            });
            fb.push(Feedback {
                inference_id: id,
                score: Some(if topic == "billing" || i % 5 == 0 {
                    0.0
                } else {
                    1.0
                }),
                label: None,
                correction: None,
                comment: None,
                source: FeedbackSource::User,
                caller: "bench".into(),
                created_at: at,
            });
        }
        service.record(&inf, &fb).await.unwrap();
    }
    let secret = mint_token();
    service
        .add_token(
            &Token {
                name: "bench".into(),
                role: Role::Reviewer,
                created_at: now,
                created_by: "bench".into(),
                revoked_at: None,
            },
            &token_hash(&secret),
        )
        .await
        .unwrap();
    service.close().await;
    println!(
        "seeded {PROMPTS} prompts × {VERSIONS} versions, {INFERENCES} scored inferences in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    secret
}

#[tokio::main]
async fn main() {
    let repeats: usize = std::env::args()
        .skip_while(|a| a != "--repeats")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("lib.db");
    let secret = seed(&library).await;
    let config = Config::parse("[models.\"mock:exec\"]\nformat = \"text\"\n").unwrap();
    let engine = Engine::open(EngineOptions {
        config,
        cache: None,
        library: Some(library.clone()),
        author: "bench".into(),
    })
    .await
    .unwrap();
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerOptions::default()
    };
    let running = metaprompt_server::start(engine, options).await.unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!("metaprompt_token={secret}");
    let pages = [
        "/healthz",
        "/",
        "/?q=prompt-09&filter=proposed",
        "/?page=20",
        "/prompts/prompt-0001",
        "/prompts/prompt-0001/diff?from=v1&to=v10",
        "/prompts/prompt-0001/diff?from=v9&to=v10&view=unified",
        "/review",
        "/review/prompt-0001/v10",
        "/runs",
        "/production",
        "/production?prompt=prompt-0001",
        "/assets/console.css",
        "/assets/console.js",
    ];
    println!(
        "metaprompt web console · {} cores · {repeats} fetches per page, one at a time · limits 200 KB, 300 ms",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<58} {:>9} {:>9} {:>9}  verdict",
        "page", "bytes", "p50 ms", "max ms"
    );
    let mut over = 0;
    for page in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..repeats {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{page}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.bytes().await.unwrap();
            times.push(t.elapsed());
            assert!(status.is_success(), "{page}: {status}");
            bytes = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (p50, max) = (ms(times[times.len() / 2]), ms(times[times.len() - 1]));
        let ok = bytes < 200_000 && max < 300.0;
        over += usize::from(!ok);
        println!(
            "{page:<58} {bytes:>9} {p50:>9.1} {max:>9.1}  {}",
            if ok { "ok" } else { "OVER" }
        );
    }
    println!(
        "{}",
        if over == 0 {
            "every page under 200 KB and 300 ms".to_string()
        } else {
            format!("{over} pages over a limit")
        }
    );
    running.shutdown();
    running.wait().await.unwrap();
}
