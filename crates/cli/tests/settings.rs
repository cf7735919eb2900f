//! Settings that cannot be meant, given to the real binary: each is a clear error (non-zero
//! exit, the message naming the file and field or the flag) before anything is spent or
//! written — no model call reaches the mock, no results or run directory appears. And the
//! inputs that can be meant but used to fail (a byte-order mark) or to mislead (an evaluation
//! with nothing scored, a refused connection) say what happened.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Exec, metaprompt, models_dir, route_task, stderr, stdout};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer};

/// The mock execution model, and a config naming it (with `pricing` as given).
async fn setup(dir: &Path, pricing: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Exec {
            delay: Duration::ZERO,
        })
        .mount(&server)
        .await;
    write_config(dir, &server.uri(), pricing);
    server
}

fn write_config(dir: &Path, base_url: &str, pricing: &str) {
    std::fs::write(
        dir.join("metaprompt.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmax_retries = 1\nretry_base_ms = 1\n\
             [models.\"mock:exec\"]\nformat = \"text\"\npricing = {pricing}\n"
        ),
    )
    .unwrap();
}

const PRICING: &str = "{ input_per_mtok = 1.0, output_per_mtok = 2.0 }";

async fn run(dir: &Path, args: &[&str]) -> Output {
    let lib = dir.join("lib.db");
    let models = models_dir();
    metaprompt(
        dir,
        args,
        &[
            ("METAPROMPT_LIBRARY", lib.to_str().unwrap()),
            ("METAPROMPT_AUTHOR", "tester"),
            ("METAPROMPT_NO_CACHE", "1"),
            ("METAPROMPT_MODELS_DIR", &models),
        ],
    )
    .await
}

/// The command failed, saying each of `says` on stderr, and nothing was spent or written.
async fn refused(dir: &Path, mock: &MockServer, args: &[&str], says: &[&str]) -> String {
    let out = run(dir, args).await;
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    for s in says {
        assert!(err.contains(s), "{args:?}: `{s}` not in: {err}");
    }
    assert_eq!(
        mock.received_requests().await.unwrap_or_default().len(),
        0,
        "{args:?} called the model"
    );
    for written in ["results", "runs"] {
        assert!(
            !dir.join(written).exists(),
            "{args:?} wrote {written}/: {err}"
        );
    }
    err
}

/// `route.toml` with `from` replaced by `to` (which must be there).
fn edit_task(dir: &Path, from: &str, to: &str) {
    let path = dir.join("route.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "`{from}` not in the task");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_task_files_fail_naming_the_file_line_and_field() {
    // (replace, with, what the error says)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "max_tokens = 4",
            "max_tokens = 0",
            &["line 18", "`max_tokens` must be at least 1, got 0"],
        ),
        (
            "max_tokens = 4",
            "max_tokens = 4\nexecution_temperature = nan",
            &[
                "line 19",
                "a temperature must be a finite number >= 0, got NaN",
            ],
        ),
        (
            "max_tokens = 4",
            "max_tokens = 4\nmeta_temperature = -inf",
            &[
                "line 19",
                "a temperature must be a finite number >= 0, got -inf",
            ],
        ),
        (
            "max_tokens = 4",
            "max_tokens = 4\n[budget]\nmax_cost_usd = -5",
            &[
                "line 20",
                "a dollar cap must be a finite number, 0 or more, got -5",
            ],
        ),
        (
            "labels = [",
            "threshold = 1.5\nlabels = [",
            &[
                "line 14",
                "`threshold` must be a score between 0 and 1, got 1.5",
            ],
        ),
        (
            "labels = [",
            "threshold = nan\nlabels = [",
            &["`threshold` must be a score between 0 and 1, got NaN"],
        ),
        (
            "train = \"train.jsonl\"\ndev = \"dev.jsonl\"\ntest = \"test.jsonl\"",
            "file = \"dev.jsonl\"\nsplit = { train = 0.5, dev = 0.5, test = 0.5 }",
            &[
                "line 10",
                "split ratios sum to 1.5 (dev = 0.5, test = 0.5, train = 0.5), more than the whole file",
            ],
        ),
        (
            "train = \"train.jsonl\"\ndev = \"dev.jsonl\"\ntest = \"test.jsonl\"",
            "file = \"dev.jsonl\"\nsplit = { dev = 2 }",
            &["line 10", "split ratio `dev` = 2"],
        ),
    ];
    for (from, to, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mock = setup(dir.path(), PRICING).await;
        let task = route_task(dir.path());
        edit_task(dir.path(), from, to);
        let mut says = says.to_vec();
        says.push("route.toml");
        refused(dir.path(), &mock, &["eval", &task], &says).await;
        refused(dir.path(), &mock, &["optimize", &task, "--yes"], &says).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_prices_are_refused_when_the_config_is_read() {
    for (pricing, key, shown) in [
        (
            "{ input_per_mtok = -1, output_per_mtok = 2.0 }",
            "input_per_mtok",
            "-1",
        ),
        (
            "{ input_per_mtok = 1.0, output_per_mtok = nan }",
            "output_per_mtok",
            "NaN",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mock = setup(dir.path(), pricing).await;
        let task = route_task(dir.path());
        let says = [
            "metaprompt.toml".to_string(),
            format!(
                "[models.mock:exec] pricing.{key} must be a finite number of dollars per million tokens, 0 or more, got {shown}"
            ),
        ];
        let says: Vec<&str> = says.iter().map(String::as_str).collect();
        refused(dir.path(), &mock, &["eval", &task], &says).await;
        refused(dir.path(), &mock, &["optimize", &task, "--yes"], &says).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_flags_that_cannot_be_meant_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mock = setup(dir.path(), PRICING).await;
    let task = route_task(dir.path());
    for (flag, value, says) in [
        ("--rounds", "0", "must be at least 1"),
        ("--minibatch", "0", "must be at least 1"),
        ("--patience", "0", "must be at least 1"),
        ("--per-round", "0", "0 is not in 1.."),
        ("--explore", "nan", "must be a finite number >= 0, got NaN"),
        ("--exploit", "-1", "must be a finite number >= 0, got -1"),
        (
            "--max-cost",
            "-1",
            "must be a finite number of dollars, 0 or more",
        ),
        (
            "--max-meta-cost",
            "inf",
            "must be a finite number of dollars, 0 or more",
        ),
    ] {
        let arg = format!("{flag}={value}");
        let err = refused(
            dir.path(),
            &mock,
            &["optimize", &task, "--yes", &arg],
            &[flag, says],
        )
        .await;
        let out = run(dir.path(), &["optimize", &task, "--yes", &arg]).await;
        assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
    }
    // The engine refuses what the flags cannot catch (a request from elsewhere is checked the
    // same way: crates/engine/src/optimize.rs): fewshot with no demonstrations.
    refused(
        dir.path(),
        &mock,
        &[
            "optimize", &task, "--yes", "--algo", "fewshot", "--demos", "0",
        ],
        &["demos: must be at least 1 for `fewshot`"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn algorithms_that_draw_from_train_refuse_an_empty_train_split() {
    let dir = tempfile::tempdir().unwrap();
    let mock = setup(dir.path(), PRICING).await;
    let task = route_task(dir.path());
    std::fs::write(dir.path().join("train.jsonl"), "").unwrap();
    for algo in ["fewshot", "mipro", "ape"] {
        refused(
            dir.path(),
            &mock,
            &["optimize", &task, "--yes", "--algo", algo],
            &[
                &format!(
                    "algorithm: `{algo}` draws demonstrations or examples from the train split"
                ),
                "split `train` of",
                "route.toml has no examples",
            ],
        )
        .await;
    }
    // No train split at all.
    edit_task(dir.path(), "train = \"train.jsonl\"\n", "");
    refused(
        dir.path(),
        &mock,
        &["optimize", &task, "--yes", "--algo", "fewshot"],
        &["split `train` of", "route.toml is not defined"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_naming_a_column_twice_is_refused_and_a_byte_order_mark_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mock = setup(dir.path(), PRICING).await;
    let task = route_task(dir.path());
    std::fs::write(
        dir.path().join("dev.csv"),
        "question,team,question\ninvoice 1 is wrong,billing,login fails\n",
    )
    .unwrap();
    edit_task(dir.path(), "dev = \"dev.jsonl\"", "dev = \"dev.csv\"");
    refused(
        dir.path(),
        &mock,
        &["eval", &task],
        &["dev.csv:1: the header names the column `question` twice"],
    )
    .await;

    // A JSONL file that starts with a byte-order mark (Windows editors write one) is read.
    edit_task(dir.path(), "dev = \"dev.csv\"", "dev = \"dev.jsonl\"");
    let dev = dir.path().join("dev.jsonl");
    let text = std::fs::read_to_string(&dev).unwrap();
    std::fs::write(&dev, format!("\u{feff}{text}")).unwrap();
    let out = run(dir.path(), &["eval", &task]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("24 examples"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nothing_scored_there_is_no_score_and_the_cause_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(dir.path(), &format!("http://127.0.0.1:{port}/v1"), PRICING);
    let task = route_task(dir.path());
    let out = run(dir.path(), &["eval", &task]).await;
    let (so, err) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{so}");
    assert!(
        so.contains("score     none: no example was scored (24 unscored)") && !so.contains("0.000"),
        "{so}"
    );
    assert!(
        err.contains("no example of `seed` was scored (24 of 24 unscored)"),
        "{err}"
    );
    for text in [&so, &err] {
        assert!(
            text.to_lowercase().contains("connection refused"),
            "the cause is lost: {text}"
        );
    }
    // Every example allowed to go unscored: the command passes, still with no score.
    let out = run(dir.path(), &["eval", &task, "--max-unscored", "1000"]).await;
    let so = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        so.contains("score     none: no example was scored")
            && so.to_lowercase().contains("connection refused")
            && !so.contains("0.000"),
        "{so}"
    );
    // Compare: nothing to compare, and says why.
    let prompt = dir.path().join("p.toml");
    std::fs::write(
        &prompt,
        "name = \"p\"\ntemplate = \"Q: {{ question }}\\nTeam:\"\n",
    )
    .unwrap();
    let p = prompt.to_str().unwrap();
    let out = run(dir.path(), &["compare", &task, p, p]).await;
    let (so, err) = (stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{so}");
    assert!(
        so.contains("nothing to compare") && !so.contains("0.000"),
        "{so}"
    );
    assert!(
        err.contains("no example of A (`p`) was scored")
            && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
}
