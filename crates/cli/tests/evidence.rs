//! Nothing unevaluated looks approved: `generate` without data keeps no candidate as "best"
//! and says its proposal has no evidence; the console warns before approving such a proposal;
//! a label pointing at a rejected version needs `--force` (`"force": true` over HTTP) and is
//! flagged wherever it shows (CLI, JSON API, console).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, cli, metaprompt, mock_model, route_task, setup, stderr, stdout};
use serde_json::{Value, json};

/// Run the binary like [`cli`] but return its output whatever the exit status.
async fn try_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let lib = dir.join("lib.db");
    let models = common::models_dir();
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

/// `generate` from a description alone (no task: nothing to score on), on the mock model.
async fn generate_without_task(dir: &Path, name: &str) -> String {
    cli(
        dir,
        &[
            "generate",
            "Route the customer's question to the team that handles it",
            "--meta",
            "mock:exec",
            "--model",
            "mock:exec",
            "-n",
            "2",
            "--name",
            name,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_without_a_task_keeps_no_best_and_stores_its_proposal_as_unscored() {
    let mock = mock_model(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &mock).await;

    let out = generate_without_task(d, "router").await;
    // No score header, no candidate marked as the best.
    assert!(!out.contains("score on"), "{out}");
    assert!(!out.contains("95% CI"), "{out}");
    assert!(!out.to_lowercase().contains("best"), "{out}");
    assert!(
        !out.lines().any(|l| l.starts_with("* ")),
        "no candidate is starred: {out}"
    );
    assert!(out.contains("candidates (unscored: no data)"), "{out}");
    assert!(
        out.contains("unscored   no data (no --task): candidates are unscored; c1 kept as written")
            && out.contains("stored without evidence"),
        "{out}"
    );
    assert!(
        out.contains("library    stored router@v1")
            && out.contains("generate · proposed · no evidence (nothing was scored)"),
        "{out}"
    );
    // The written prompt's rationale says it was not scored.
    let file = std::fs::read_to_string(d.join("router.toml")).unwrap();
    assert!(file.contains("Not scored: there was no data"), "{file}");

    // The proposal says so where a reviewer reads it.
    let show = cli(d, &["review", "show", "router@v1"]).await;
    assert!(
        show.contains("evidence   none: nothing was scored"),
        "{show}"
    );
    assert!(
        show.contains("no evidence: nothing was scored (no data); kept as written"),
        "{show}"
    );
    let approve = try_cli(d, &["review", "approve", "router@v1", "-c", "ok"]).await;
    assert!(approve.status.success(), "{}", stderr(&approve));
    assert!(
        stderr(&approve).contains("router@v1 has no evidence: nothing was scored"),
        "{}",
        stderr(&approve)
    );

    // --json: the report says the candidates were not scored; the note goes to stderr.
    let json = try_cli(
        d,
        &[
            "generate",
            "Route the customer's question",
            "--meta",
            "mock:exec",
            "--model",
            "mock:exec",
            "-n",
            "1",
            "--name",
            "router-json",
            "--json",
        ],
    )
    .await;
    assert!(json.status.success(), "{}", stderr(&json));
    let g: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(g["scored"], false, "{g:#}");
    assert!(g.get("split").is_none(), "{g:#}");
    assert!(
        stderr(&json).contains("candidates are unscored"),
        "{}",
        stderr(&json)
    );

    // With a task, it is scored as before: the header, the star, evidence, no "unscored".
    let task = route_task(d);
    let scored = cli(
        d,
        &[
            "generate",
            "--task",
            &task,
            "--meta",
            "mock:exec",
            "-n",
            "2",
        ],
    )
    .await;
    assert!(
        scored.contains("candidates (score on dev, 95% CI)"),
        "{scored}"
    );
    assert!(scored.lines().any(|l| l.starts_with("* ")), "{scored}");
    assert!(!scored.contains("unscored"), "{scored}");
    assert!(!scored.contains("no evidence"), "{scored}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_needs_force_to_point_at_a_rejected_version_and_is_flagged_everywhere() {
    let mock = mock_model(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &mock).await;
    generate_without_task(d, "router").await;
    cli(
        d,
        &["review", "reject", "router@v1", "-c", "never measured"],
    )
    .await;

    // Refused without --force, with the way to say it on purpose.
    let refused = try_cli(d, &["prompts", "label", "router@v1", "staging"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err = stderr(&refused);
    assert!(
        err.contains("rejected in review") && err.contains("--force"),
        "{err}"
    );
    // production never, even with --force.
    let prod = try_cli(
        d,
        &["prompts", "label", "router@v1", "production", "--force"],
    )
    .await;
    assert_eq!(prod.status.code(), Some(1), "{}", stderr(&prod));
    assert!(
        stderr(&prod).contains("rejected in review"),
        "{}",
        stderr(&prod)
    );
    // With --force: moved, said loudly.
    let moved = try_cli(d, &["prompts", "label", "router@v1", "staging", "--force"]).await;
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert!(
        stdout(&moved).contains("staging: moved (new label) → router@v1")
            && stdout(&moved).contains("REJECTED"),
        "{}",
        stdout(&moved)
    );
    assert!(
        stderr(&moved).contains("warning: `staging` now points at router@v1, which was rejected"),
        "{}",
        stderr(&moved)
    );

    // `prompts show`, `prompts list` and their JSON flag it.
    let show = cli(d, &["prompts", "show", "router@staging"]).await;
    assert!(
        show.contains("labels     staging (REJECTED: it points at a version rejected in review)"),
        "{show}"
    );
    let show: Value =
        serde_json::from_str(&cli(d, &["prompts", "show", "router@v1", "--json"]).await).unwrap();
    assert_eq!(show["labels"][0]["label"], "staging");
    assert_eq!(show["labels"][0]["flag"], "rejected");
    let list = cli(d, &["prompts", "list"]).await;
    let row = list.lines().find(|l| l.starts_with("router")).unwrap();
    assert!(row.contains("staging=v1(REJECTED)"), "{list}");
    let support = list.lines().find(|l| l.starts_with("support")).unwrap();
    assert!(!support.contains("REJECTED"), "{list}");
    let list: Value = serde_json::from_str(&cli(d, &["prompts", "list", "--json"]).await).unwrap();
    let by_name = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_name("router")["label_flags"],
        json!({"staging": "rejected"})
    );
    assert_eq!(by_name("support")["label_flags"], json!({}));

    // Over HTTP: the labels carry their flag; a move needs "force": true.
    let server = Server::start(d, &["--insecure-local"]);
    let http = reqwest::Client::new();
    let labels: Value = http
        .get(server.url("/v1/prompts/router/labels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(labels["labels"][0]["label"], "staging");
    assert_eq!(labels["labels"][0]["flag"], "rejected", "{labels:#}");
    let support: Value = http
        .get(server.url("/v1/prompts/support/labels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(support["labels"][0]["label"], "production");
    assert_eq!(support["labels"][0]["flag"], Value::Null, "{support:#}");
    let put = |body: Value| {
        http.put(server.url("/v1/prompts/router/labels/canary"))
            .json(&body)
            .send()
    };
    let r = put(json!({"version": "v1"})).await.unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(
        e.to_string().contains("rejected in review") && e.to_string().contains("force"),
        "{e}"
    );
    let r = put(json!({"version": "v1", "force": true})).await.unwrap();
    assert_eq!(r.status(), 200);
    let moved: Value = r.json().await.unwrap();
    assert_eq!(moved["flag"], "rejected", "{moved:#}");
    let r = http
        .put(server.url("/v1/prompts/router/labels/production"))
        .json(&json!({"version": "v1", "force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);

    // The console's pages that list labels flag them.
    let page = |path: &str| {
        let url = server.url(path);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let prompt = page("/prompts/router").await;
    assert!(
        prompt.contains("REJECTED") && prompt.contains("it points at a version rejected in review"),
        "{prompt}"
    );
    let library = page("/").await;
    assert!(library.contains("REJECTED"), "{library}");
    let supports = page("/prompts/support").await;
    assert!(!supports.contains("REJECTED"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_warns_before_approving_a_proposal_without_evidence() {
    let mock = mock_model(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &mock).await;
    // Unscored: no task.
    generate_without_task(d, "router").await;
    // Scored: on the routing task, so the proposal has evidence.
    let task = route_task(d);
    cli(
        d,
        &[
            "generate",
            "--task",
            &task,
            "--meta",
            "mock:exec",
            "-n",
            "2",
        ],
    )
    .await;
    let shown = cli(d, &["prompts", "show", "route@v2"]).await;
    assert!(shown.contains("evidence   route · dev"), "{shown}");

    let server = Server::start(d, &["--insecure-local"]);
    let http = reqwest::Client::new();
    let page = |path: &str| {
        let url = server.url(path);
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    const WARNING: &str = "This version has no evidence: nothing was scored.";
    let unscored = page("/review/router/v1").await;
    assert!(unscored.contains(WARNING), "{unscored}");
    assert!(
        unscored.contains("Approving it ships an unmeasured prompt"),
        "{unscored}"
    );
    // The warning comes before the Approve button, and no inline script carries it.
    let warn_at = unscored.find(WARNING).unwrap();
    let approve_at = unscored.find("id=\"approve\"").unwrap();
    assert!(warn_at < approve_at);
    assert!(!unscored.contains("<script>"));
    let scored = page("/review/route/v2").await;
    assert!(scored.contains("id=\"approve\""), "{scored}");
    assert!(!scored.contains(WARNING), "{scored}");
}
