//! The prompt library through the real binary: optimize on the embedded model → proposed
//! version → review → production → rollback → export → import, then the database file read
//! back; two processes writing at once; bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{metaprompt, sst2, stderr, stdout};
use metaprompt_registry::{EventKind, Origin, ReviewState, SqliteStore, Store, VersionRef};

fn models_env() -> String {
    metaprompt_local::fetch::default_models_dir()
        .to_string_lossy()
        .into_owned()
}

/// Run as `author` against the library in `dir`.
async fn as_user(dir: &Path, author: &str, args: &[&str]) -> Output {
    let library = dir.join("library.sqlite");
    let models = models_env();
    metaprompt(
        dir,
        args,
        &[
            ("METAPROMPT_LIBRARY", library.to_str().unwrap()),
            ("METAPROMPT_AUTHOR", author),
            ("METAPROMPT_MODELS_DIR", &models),
        ],
    )
    .await
}

async fn ok(dir: &Path, author: &str, args: &[&str]) -> String {
    let out = as_user(dir, author, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Fails with a clear error: exit 1, the expected words, no panic.
async fn fails(dir: &Path, args: &[&str], expect: &[&str]) {
    let out = as_user(dir, "alice", args).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: expected `{e}` in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn optimize_on_the_embedded_model_then_review_label_rollback_export_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let task = sst2().join("task.toml");
    let run = d.join("run");
    let out = ok(
        d,
        "alice",
        &[
            "optimize",
            task.to_str().unwrap(),
            "--algo",
            "fewshot",
            "--dev-limit",
            "30",
            "--test-limit",
            "40",
            "--rounds",
            "1",
            "--minibatch",
            "10",
            "--run-dir",
            run.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.contains("stored sst2@v1"), "{out}");
    assert!(
        out.contains("stored sst2@v2") && out.contains("proposed"),
        "{out}"
    );
    assert!(out.contains("metaprompt review show sst2@v2"), "{out}");

    ok(d, "alice", &["prompts", "label", "sst2@v1", "production"]).await;
    ok(
        d,
        "alice",
        &["prompts", "policy", "sst2", "--review-required", "true"],
    )
    .await;
    // Production refuses the machine-made version until someone approves it.
    fails(
        d,
        &["prompts", "label", "sst2@v2", "production"],
        &["needs an approval", "review approve sst2@v2"],
    )
    .await;
    let pending = ok(d, "bob", &["review", "list"]).await;
    assert!(pending.contains("sst2@v2"), "{pending}");
    let shown = ok(d, "bob", &["review", "show", "sst2@v2"]).await;
    for want in [
        "diff against sst2@v1",
        "+[[demos]]",
        "evidence   sst2 · test",
        "vs v1 +",
        "checks",
        "cost       meta",
        "review approve sst2@v2",
    ] {
        assert!(
            shown.contains(want),
            "`{want}` missing from review show:\n{shown}"
        );
    }
    let approved = ok(
        d,
        "bob",
        &[
            "review",
            "approve",
            "sst2@v2",
            "--comment",
            "demos look right",
        ],
    )
    .await;
    assert!(approved.contains("approved by bob"), "{approved}");
    let moved = ok(d, "bob", &["prompts", "label", "sst2@v2", "production"]).await;
    assert!(
        moved.contains("sst2@v1") && moved.contains("sst2@v2"),
        "{moved}"
    );
    let back = ok(
        d,
        "carol",
        &[
            "prompts",
            "rollback",
            "sst2",
            "--comment",
            "regression in prod",
        ],
    )
    .await;
    assert!(
        back.contains("rolled back") && back.contains("→ sst2@v1"),
        "{back}"
    );

    // Export: plain files that work outside metaprompt, and come back in.
    let toml_path = d.join("v2.toml");
    let text_path = d.join("v2.txt");
    ok(
        d,
        "carol",
        &[
            "prompts",
            "export",
            "sst2@v2",
            "-o",
            toml_path.to_str().unwrap(),
        ],
    )
    .await;
    ok(
        d,
        "carol",
        &[
            "prompts",
            "export",
            "sst2@v2",
            "-o",
            text_path.to_str().unwrap(),
        ],
    )
    .await;
    let text = std::fs::read_to_string(&text_path).unwrap();
    assert!(
        text.contains("{{ sentence }}") && text.contains("Sentiment:"),
        "{text}"
    );
    assert!(
        !text.contains("[[demos]]"),
        "text export is plain text: {text}"
    );
    let eval = ok(
        d,
        "carol",
        &[
            "eval",
            task.to_str().unwrap(),
            "--prompt",
            toml_path.to_str().unwrap(),
            "--limit",
            "4",
        ],
    )
    .await;
    assert!(eval.contains("score"), "{eval}");
    let again = ok(
        d,
        "carol",
        &[
            "prompts",
            "import",
            toml_path.to_str().unwrap(),
            "--name",
            "sst2",
        ],
    )
    .await;
    assert!(
        again.contains("already in the library as sst2@v2"),
        "{again}"
    );
    let imported = ok(
        d,
        "carol",
        &[
            "prompts",
            "import",
            text_path.to_str().unwrap(),
            "--name",
            "sst2-plain",
        ],
    )
    .await;
    assert!(imported.contains("added sst2-plain@v1"), "{imported}");
    let log = ok(d, "carol", &["prompts", "log", "sst2"]).await;
    for want in [
        "alice        added v1 (human)",
        "alice        added v2 (optimize)",
        "policy review-required",
        "bob          review v2 approve  — demos look right",
        "label production v1 → v2",
        "carol        rollback production v2 → v1  — regression in prod",
        "run optimize",
    ] {
        assert!(log.contains(want), "`{want}` missing from log:\n{log}");
    }

    // The database file holds everything.
    let store = SqliteStore::open(&d.join("library.sqlite")).await.unwrap();
    let v2 = store
        .resolve(&VersionRef::parse("sst2@v2").unwrap())
        .await
        .unwrap();
    assert_eq!(v2.origin, Origin::Optimize);
    assert_eq!(v2.review, ReviewState::Approved);
    assert_eq!(v2.author, "alice");
    let v1 = store
        .resolve(&VersionRef::parse("sst2@production").unwrap())
        .await
        .unwrap();
    assert_eq!(v1.seq, 1);
    assert_eq!(v2.parents, vec![v1.hash.clone()]);
    let evidence = store.evidence(&v2).await.unwrap();
    let test = evidence.iter().find(|e| e.split == "test").unwrap();
    assert_eq!(test.baseline.as_deref(), Some(v1.hash.as_str()));
    assert_eq!(test.n, 40);
    assert!(test.diff.unwrap() > 0.0 && test.p_value.is_some());
    let run_id = v2.run.clone().unwrap();
    let stored = store.run(&run_id).await.unwrap();
    assert_eq!(stored.algorithm.as_deref(), Some("fewshot"));
    assert!(!stored.candidates.is_empty());
    assert!(stored.candidates.iter().any(|c| c.status == "winner"));
    assert!(stored.usage["execution"]["calls"].as_u64().unwrap() > 0);
    let events = store.events("sst2").await.unwrap();
    let reviews: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Review)
        .collect();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].actor, "bob");
    assert_eq!(store.prompts().await.unwrap().len(), 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_writing_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 12;
    for who in ["a", "b"] {
        for i in 0..n {
            std::fs::write(
                d.join(format!("{who}{i}.txt")),
                format!("Prompt {i} by {who}.\nReview: {{{{ sentence }}}}\nSentiment:"),
            )
            .unwrap();
        }
    }
    let bin = assert_cmd::cargo::cargo_bin("metaprompt");
    let library = d.join("library.sqlite");
    let spawn = |who: &str| {
        // One shell per writer: each add and each label move is its own process.
        let script = format!(
            "set -e; for i in $(seq 0 {last}); do \
               ref=$(\"$BIN\" prompts add shared {who}$i.txt -m \"{who} $i\" | sed -n 's/^added \\([^ ]*\\) .*/\\1/p'); \
               test -n \"$ref\"; \
               \"$BIN\" prompts label \"$ref\" production -c \"{who} $i\" >/dev/null; \
             done",
            last = n - 1
        );
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(d)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", d)
            .env("BIN", &bin)
            .env("METAPROMPT_LIBRARY", &library)
            .env("METAPROMPT_AUTHOR", who)
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());

    let store = SqliteStore::open(&library).await.unwrap();
    let versions = store.versions("shared").await.unwrap();
    assert_eq!(versions.len(), 2 * n, "every add is there");
    let seqs: Vec<u32> = versions.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, (1..=2 * n as u32).collect::<Vec<_>>());
    for who in ["a", "b"] {
        for i in 0..n {
            let msg = format!("{who} {i}");
            assert!(
                versions.iter().any(|v| v.message.as_deref() == Some(&msg)),
                "{msg} lost"
            );
        }
    }
    let events = store.events("shared").await.unwrap();
    let moves: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Label)
        .collect();
    assert_eq!(moves.len(), 2 * n, "every label move is recorded");
    for pair in moves.windows(2) {
        assert_eq!(
            pair[1].from_hash, pair[0].hash,
            "label history is one chain"
        );
    }
    let label = store.labels("shared").await.unwrap();
    assert_eq!(label.len(), 1);
    assert_eq!(Some(&label[0].hash), moves.last().unwrap().hash.as_ref());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.txt"), "Review: {{ sentence }}\nSentiment:").unwrap();
    ok(d, "alice", &["prompts", "add", "sst2", "p.txt"]).await;
    std::fs::write(d.join("bad.toml"), "template = \"x\"\nbogus = 1\n").unwrap();
    std::fs::write(
        d.join("bad.json"),
        "[{\"role\": \"robot\", \"content\": \"x\"}]",
    )
    .unwrap();
    let cases: [(&[&str], &[&str]); 10] = [
        (
            &["prompts", "show", "nope"],
            &["no prompt named `nope`", "known: sst2"],
        ),
        (
            &["prompts", "show", "sst2@v9"],
            &["has no version `v9`", "v1"],
        ),
        (&["prompts", "show", "sst2@prod"], &["has no label `prod`"]),
        (&["prompts", "rollback", "sst2"], &["no label `production`"]),
        (
            &["prompts", "label", "sst2@v1", "Bad Label"],
            &["invalid label"],
        ),
        (&["review", "approve", "sst2@v2"], &["has no version `v2`"]),
        (&["prompts", "diff", "sst2@v1"], &["has no parent version"]),
        (
            &["prompts", "import", "bad.toml"],
            &["bad.toml", "unknown field `bogus`"],
        ),
        (
            &["prompts", "import", "bad.json"],
            &[
                "bad.json",
                "unknown variant `robot`, expected one of `system`, `user`, `assistant`",
            ],
        ),
        (
            &["prompts", "add", "sst2", "missing.toml"],
            &["missing.toml", "cannot read"],
        ),
    ];
    for (args, expect) in cases {
        fails(d, args, expect).await;
    }

    // A corrupted library file.
    let junk = d.join("junk.sqlite");
    std::fs::write(&junk, "not a database ".repeat(300)).unwrap();
    let out = metaprompt(
        d,
        &["prompts", "list"],
        &[("METAPROMPT_LIBRARY", junk.to_str().unwrap())],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("junk.sqlite") && err.contains("not a metaprompt library"),
        "{err}"
    );

    // A read-only library: reading works, writing says why not.
    let library = d.join("library.sqlite");
    let mut perms = std::fs::metadata(&library).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&library, perms.clone()).unwrap();
    let listed = ok(d, "alice", &["prompts", "list"]).await;
    assert!(listed.contains("sst2"), "{listed}");
    fails(
        d,
        &["prompts", "label", "sst2@v1", "production"],
        &["library.sqlite is read-only"],
    )
    .await;
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&library, perms).unwrap();
}
