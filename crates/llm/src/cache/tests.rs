//! Tests of `cache`.

use super::*;
use crate::config::ProviderKind;
use crate::types::{FinishReason, Usage};

fn info() -> ModelInfo {
    ModelInfo::new(ProviderKind::Openai, "gpt-4o-mini")
}

fn response(text: &str) -> Response {
    Response {
        text: text.into(),
        finish_reason: FinishReason::Stop,
        usage: Usage {
            input_tokens: 5,
            output_tokens: 2,
            cached_input_tokens: None,
        },
        model: "gpt-4o-mini".into(),
        latency: Duration::from_millis(120),
        cost_usd: Some(0.001),
        cached: false,
    }
}

#[test]
fn schema_version_statement_agrees() {
    assert_eq!(
        SET_SCHEMA_VERSION,
        format!("PRAGMA user_version = {SCHEMA_VERSION}")
    );
}

#[test]
fn key_is_stable_and_sensitive_to_what_changes_the_answer() {
    let r = Request::text("Hello").max_tokens(8);
    let k = ResponseCache::key(&info(), &r);
    assert_eq!(k, ResponseCache::key(&info(), &r.clone()));
    assert_eq!(k.len(), 64);
    for changed in [
        r.clone().temperature(0.7),
        r.clone().max_tokens(9),
        r.clone().stop("\n"),
        r.clone().seed(1),
        r.clone().sample(1),
        Request::text("Hello!").max_tokens(8),
    ] {
        assert_ne!(k, ResponseCache::key(&info(), &changed), "{changed:?}");
    }
    let mut other = info();
    other.base_url = "http://localhost:11434/v1".into();
    assert_ne!(
        k,
        ResponseCache::key(&other, &r),
        "endpoint is part of the key"
    );
    // Settings that do not change the answer do not change the key.
    let mut same = info();
    same.api_key_env = Some("SOME_KEY".into());
    same.concurrency = 99;
    same.pricing = None;
    assert_eq!(k, ResponseCache::key(&same, &r));
}

#[tokio::test]
async fn put_get_stats_clear_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/cache.sqlite");
    let cache = ResponseCache::open(&path).await.unwrap();
    let req = Request::text("a");
    let key = ResponseCache::key(&info(), &req);
    assert!(cache.get::<Response>(&key).await.unwrap().is_none());
    cache
        .put(&key, &info(), &req, &response("A"))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<Response>(&key).await.unwrap().unwrap().text,
        "A"
    );
    cache.close().await;

    let cache = ResponseCache::open(&path).await.unwrap();
    assert_eq!(
        cache.get::<Response>(&key).await.unwrap().unwrap(),
        response("A"),
        "persisted across opens"
    );
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.entries, stats.hits), (1, 2));
    assert_eq!(stats.models[0].model, "openai:gpt-4o-mini");
    assert!(stats.bytes > 0);
    assert_eq!(cache.clear(Some("openai:other")).await.unwrap(), 0);
    assert_eq!(cache.clear(None).await.unwrap(), 1);
    assert_eq!(cache.stats().await.unwrap().entries, 0);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let e = ResponseCache::open(&path).await.unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("file is not a database")
            && e.contains("--no-cache"),
        "{e}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_an_older_one_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite");
    let cache = ResponseCache::open(&path).await.unwrap();
    sqlx::query("PRAGMA user_version = 99")
        .execute(&cache.pool)
        .await
        .unwrap();
    cache.close().await;
    let e = ResponseCache::open(&path).await.unwrap_err().to_string();
    assert!(e.contains("newer metaprompt"), "{e}");

    let cache = {
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        sqlx::query("PRAGMA user_version = 0")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        ResponseCache::open(&path).await.unwrap()
    };
    assert_eq!(cache.stats().await.unwrap().entries, 0);
}
