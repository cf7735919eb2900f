//! Several processes opening one fresh response cache at the same moment (two `metaprompt`
//! commands sharing the default cache): every one of them must open it, write and read back,
//! and no one's setup may wipe another's entries.
//!
//! Real processes, not threads: the test re-executes its own binary, filtered to the child test
//! below, with an environment variable naming the cache file.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metaprompt_llm::config::ProviderKind;
use metaprompt_llm::{FinishReason, ModelInfo, Request, Response, ResponseCache, Usage};

/// Set in a child: the cache file to open.
const CHILD_PATH: &str = "METAPROMPT_TEST_CACHE_CHILD_PATH";
/// Set in a child: which writer it is.
const CHILD_ID: &str = "METAPROMPT_TEST_CACHE_CHILD_ID";

const PROCESSES: usize = 8;
const ROUNDS: usize = 10;

fn info() -> ModelInfo {
    ModelInfo::new(ProviderKind::Openai, "gpt-4o-mini")
}

fn response(text: &str) -> Response {
    Response {
        text: text.into(),
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        model: "gpt-4o-mini".into(),
        latency: Duration::from_millis(1),
        cost_usd: None,
        cached: false,
    }
}

/// The child's work; a no-op when run as an ordinary test.
#[tokio::test]
async fn child_opens_writes_and_reads() {
    let (Ok(path), Ok(id)) = (std::env::var(CHILD_PATH), std::env::var(CHILD_ID)) else {
        return;
    };
    let cache = ResponseCache::open(path.as_ref()).await.unwrap();
    let request = Request::text(format!("request of writer {id}"));
    let key = ResponseCache::key(&info(), &request);
    let answer = response(&format!("answer of writer {id}"));
    cache.put(&key, &info(), &request, &answer).await.unwrap();
    let back: Response = cache.get(&key).await.unwrap().expect("own entry is there");
    assert_eq!(back.text, answer.text);
    cache.close().await;
}

#[tokio::test]
async fn processes_opening_one_fresh_cache_at_once_all_succeed() {
    if std::env::var_os(CHILD_PATH).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("responses.sqlite");
        let children: Vec<_> = (0..PROCESSES)
            .map(|id| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "child_opens_writes_and_reads",
                        "--test-threads=1",
                    ])
                    .env(CHILD_PATH, &path)
                    .env(CHILD_ID, id.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (id, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push(format!(
                    "round {round}, writer {id}: {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| l.contains("panicked")
                            || l.contains("Error")
                            || l.contains("error"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        // Every writer's entry survived everyone else's setup.
        let cache = ResponseCache::open(&path).await.unwrap();
        let entries = cache.stats().await.unwrap().entries;
        if failures.is_empty() {
            assert_eq!(entries, PROCESSES as u64, "round {round}: entries lost");
        }
        cache.close().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} processes failed:\n{}",
        failures.len(),
        PROCESSES * ROUNDS,
        failures.join("\n")
    );
    eprintln!(
        "{} processes in {ROUNDS} rounds: {:?}",
        PROCESSES * ROUNDS,
        start.elapsed()
    );
}
