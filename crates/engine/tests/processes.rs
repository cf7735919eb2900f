//! Several processes opening the engine at the same moment on one fresh response cache and one
//! fresh prompt library (parallel `metaprompt` commands, CI jobs): every one opens both, writes
//! to both and reads its writes back, and nobody's setup loses anybody's entries. Two processes
//! on one cache failed in 8 of 18 pairs with `database is locked` before the cache's setup was
//! made safe; here 6 processes in each of 10 rounds, 60 openings of each file.
//!
//! Real processes, not threads: the test re-executes its own binary, filtered to the child test
//! below, with environment variables naming the files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::PromptFile;
use metaprompt_llm::{FinishReason, Request, Response, ResponseCache, Usage};
use metaprompt_registry::{NewVersion, Origin, SqliteStore, Store};

/// Set in a child: the cache file, the library file, and which writer it is.
const CHILD_CACHE: &str = "METAPROMPT_TEST_PROCESSES_CACHE";
const CHILD_LIBRARY: &str = "METAPROMPT_TEST_PROCESSES_LIBRARY";
const CHILD_ID: &str = "METAPROMPT_TEST_PROCESSES_ID";

const PROCESSES: usize = 6;
const ROUNDS: usize = 10;

fn info() -> metaprompt_llm::ModelInfo {
    metaprompt_llm::ModelInfo::new(metaprompt_llm::ProviderKind::Openai, "gpt-4o-mini")
}

/// The child's work; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread")]
async fn child_opens_the_cache_and_the_library_and_writes_both() {
    let (Ok(cache), Ok(library), Ok(id)) = (
        std::env::var(CHILD_CACHE),
        std::env::var(CHILD_LIBRARY),
        std::env::var(CHILD_ID),
    ) else {
        return;
    };
    // Both files at the same moment: the engine opens the cache while the library opens.
    let engine = Engine::open(EngineOptions {
        cache: Some(cache.into()),
        library: Some(library.clone().into()),
        author: format!("writer {id}"),
        ..EngineOptions::default()
    });
    let (engine, store) = tokio::join!(engine, async {
        SqliteStore::open(std::path::Path::new(&library)).await
    });
    let engine = engine.expect("the cache opens");
    let store = store.expect("the library opens");
    let same = engine
        .library()
        .await
        .expect("the library opens again")
        .expect("a library is configured");
    let cache = engine.hub().cache().expect("a cache is configured");
    let request = Request::text(format!("request of writer {id}"));
    let key = ResponseCache::key(&info(), &request);
    let answer = Response {
        text: format!("answer of writer {id}"),
        finish_reason: FinishReason::Stop,
        usage: Usage::default(),
        model: "gpt-4o-mini".into(),
        latency: Duration::from_millis(1),
        cost_usd: None,
        cached: false,
    };
    cache
        .put(&key, &info(), &request, &answer)
        .await
        .expect("the cache takes a write");
    let file = PromptFile::from_template("shared", &format!("Writer {id}: {{{{ text }}}}"));
    store
        .add(NewVersion::new(
            "shared",
            file,
            Origin::Human,
            &format!("writer {id}"),
        ))
        .await
        .expect("the library takes a write");
    let back: Response = cache.get(&key).await.unwrap().expect("own entry is there");
    assert_eq!(back.text, answer.text);
    let mine = same.versions("shared").await.expect("the library reads");
    assert!(mine.iter().any(|v| v.author == format!("writer {id}")));
    store.close().await;
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_opening_one_fresh_cache_and_library_at_once_all_succeed() {
    if std::env::var_os(CHILD_CACHE).is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("responses.sqlite");
        let library = dir.path().join("library.sqlite");
        let children: Vec<_> = (0..PROCESSES)
            .map(|id| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "child_opens_the_cache_and_the_library_and_writes_both",
                        "--test-threads=1",
                    ])
                    .env(CHILD_CACHE, &cache)
                    .env(CHILD_LIBRARY, &library)
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
                        .filter(|l| l.contains("panicked") || l.contains("rror"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        if failures.is_empty() {
            // Every writer's entries survived everyone else's setup.
            let c = ResponseCache::open(&cache).await.unwrap();
            assert_eq!(
                c.stats().await.unwrap().entries,
                PROCESSES as u64,
                "round {round}: cache entries lost"
            );
            c.close().await;
            let store = SqliteStore::open(&library).await.unwrap();
            let versions = store.versions("shared").await.unwrap();
            assert_eq!(
                versions.len(),
                PROCESSES,
                "round {round}: library versions lost"
            );
            store.close().await;
        }
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
