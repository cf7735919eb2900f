//! The SQLite store against real database files.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use metaprompt_eval::PromptFile;
use metaprompt_registry::{
    Batch, Decision, EventKind, Evidence, LabelMove, NewVersion, Origin, RegistryError,
    ReviewState, Run, RunCandidate, SqliteStore, Store, VersionRef,
};
use serde_json::json;

fn prompt(instruction: &str, constraints: &[&str]) -> PromptFile {
    PromptFile {
        instruction: Some(instruction.into()),
        template: Some("Review: {{ text }}\nSentiment:".into()),
        constraints: constraints.iter().map(|c| c.to_string()).collect(),
        ..PromptFile::default()
    }
}

fn evidence(mean: f64, baseline: Option<&str>) -> Evidence {
    Evidence {
        task: "sst2".into(),
        split: "test".into(),
        model: "local:gemma-3-270m".into(),
        metric: "label".into(),
        n: 200,
        mean,
        low: mean - 0.05,
        high: mean + 0.05,
        baseline: baseline.map(String::from),
        diff: baseline.map(|_| 0.3),
        diff_low: baseline.map(|_| 0.2),
        diff_high: baseline.map(|_| 0.4),
        p_value: baseline.map(|_| 0.001),
        cost_per_execution_usd: Some(0.0),
        run: Some("run-1".into()),
        recorded_at: None,
    }
}

fn mv(label: &str, to: Option<&str>, actor: &str) -> LabelMove {
    LabelMove {
        prompt: "sst2".into(),
        label: label.into(),
        to: to.map(String::from),
        actor: actor.into(),
        comment: Some(format!("{actor} moves {label}")),
    }
}

fn r(s: &str) -> VersionRef {
    VersionRef::parse(s).unwrap()
}

#[tokio::test]
async fn full_flow_is_recorded_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib/library.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let constraint = ["Answer with one word."];
    let v1 = store
        .add(NewVersion::new(
            "sst2",
            prompt("Classify.", &constraint),
            Origin::Human,
            "alice",
        ))
        .await
        .unwrap();
    assert!(v1.created);
    assert_eq!(v1.version.seq, 1);
    assert_eq!(v1.version.review, ReviewState::None);
    let seed = v1.version.hash.clone();
    store
        .move_label(&mv("production", Some(&seed), "alice"))
        .await
        .unwrap();

    // An optimize run proposes v2, with evidence against v1 and the run's candidates.
    let mut winner = NewVersion::new(
        "sst2",
        prompt("Classify the sentiment of the review.", &constraint),
        Origin::Optimize,
        "alice",
    );
    winner.parents = vec![seed.clone()];
    winner.run = Some("run-1".into());
    winner.checks = Some(json!({"kept": constraint}));
    let run = Run {
        id: "run-1".into(),
        kind: Origin::Optimize,
        prompt: "sst2".into(),
        task: Some("examples/sst2/task.toml".into()),
        algorithm: Some("auto".into()),
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        dir: Some("runs/x".into()),
        author: "alice".into(),
        config: json!({"rounds": 6}),
        usage: json!({"meta": {"calls": 3}, "execution": {"calls": 1000}}),
        summary: json!({"kept_seed": false}),
        candidates: vec![RunCandidate {
            id: "c1".into(),
            hash: "h".into(),
            content: "instruction = \"x\"".into(),
            parents: vec!["seed".into()],
            op: "opro".into(),
            round: 1,
            status: "accepted".into(),
            mean: Some(0.8),
            n: 40,
            detail: json!({}),
        }],
    };
    let added = store
        .commit(Batch {
            versions: vec![(winner, vec![evidence(0.85, Some(&seed))])],
            run: Some(run.clone()),
        })
        .await
        .unwrap();
    let v2 = added[0].version.clone();
    assert_eq!((v2.seq, v2.review), (2, ReviewState::Proposed));
    assert_eq!(store.proposed().await.unwrap().len(), 1);

    // Production refuses the unreviewed machine-made version (it carries a constraint).
    let e = store
        .move_label(&mv("production", Some(&v2.hash), "bob"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("review approve sst2@v2"), "{e}");
    // Staging is not guarded.
    store
        .move_label(&mv("staging", Some(&v2.hash), "bob"))
        .await
        .unwrap();

    let approved = store
        .review(&v2, Decision::Approve, "bob", Some("checked the diff"))
        .await
        .unwrap();
    assert_eq!(approved.review, ReviewState::Approved);
    assert!(store.proposed().await.unwrap().is_empty());
    let moved = store
        .move_label(&mv("production", Some(&v2.hash), "bob"))
        .await
        .unwrap();
    assert_eq!(moved.from.unwrap().seq, 1);
    assert_eq!(store.resolve(&r("sst2@production")).await.unwrap().seq, 2);

    let back = store
        .move_label(&mv("production", None, "carol"))
        .await
        .unwrap();
    assert!(back.rollback);
    assert_eq!(back.to.seq, 1);
    // Nothing before v1: a second rollback is refused, naming why.
    let e = store
        .move_label(&mv("production", None, "carol"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to roll back to"), "{e}");
    drop(store);

    // Everything is in the file.
    let store = SqliteStore::open(&path).await.unwrap();
    let versions = store.versions("sst2").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].parents, vec![seed.clone()]);
    assert_eq!(versions[1].checks, Some(json!({"kept": constraint})));
    assert_eq!(versions[1].run.as_deref(), Some("run-1"));
    let ev = store.evidence(&versions[1]).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].baseline.as_deref(), Some(seed.as_str()));
    assert_eq!(ev[0].p_value, Some(0.001));
    let stored_run = store.run("run-1").await.unwrap();
    assert_eq!(stored_run.candidates, run.candidates);
    assert_eq!(stored_run.usage, run.usage);
    assert_eq!(store.runs("sst2").await.unwrap().len(), 1);
    let events = store.events("sst2").await.unwrap();
    let kinds: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.actor.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Add, "alice"),
            (EventKind::Label, "alice"),
            (EventKind::Add, "alice"),
            (EventKind::Label, "bob"),
            (EventKind::Review, "bob"),
            (EventKind::Label, "bob"),
            (EventKind::Rollback, "carol"),
        ]
    );
    assert_eq!(events[4].comment.as_deref(), Some("checked the diff"));
    assert_eq!(events[6].from_hash.as_deref(), Some(v2.hash.as_str()));
    let labels = store.labels("sst2").await.unwrap();
    let at: Vec<(&str, u32)> = labels.iter().map(|l| (l.label.as_str(), l.seq)).collect();
    assert_eq!(at, [("production", 1), ("staging", 2)]);
    let summary = store.prompts().await.unwrap();
    assert_eq!(summary[0].versions, 2);
}

#[tokio::test]
async fn same_content_is_one_version_and_keeps_new_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("l.sqlite"))
        .await
        .unwrap();
    let a = store
        .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
        .await
        .unwrap();
    let mut same = prompt("A.", &[]);
    same.rationale = Some("metadata only".into());
    let b = store
        .commit(Batch {
            versions: vec![(
                NewVersion::new("p", same, Origin::Optimize, "x"),
                vec![evidence(0.5, None)],
            )],
            run: None,
        })
        .await
        .unwrap();
    assert!(!b[0].created);
    assert_eq!(b[0].version.hash, a.version.hash);
    assert_eq!(b[0].version.origin, Origin::Human, "the first record stays");
    assert_eq!(store.evidence(&a.version).await.unwrap().len(), 1);
    assert_eq!(store.versions("p").await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_names_say_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("l.sqlite"))
        .await
        .unwrap();
    let mut hashes = Vec::new();
    for i in 0..40 {
        let v = store
            .add(NewVersion::new(
                "p",
                prompt(&format!("I{i}."), &[]),
                Origin::Human,
                "x",
            ))
            .await
            .unwrap();
        hashes.push(v.version.hash);
    }
    let cases = [
        ("q", "no prompt named `q`", "known: p"),
        ("p@v99", "has no version `v99`", "v1"),
        ("p@prod", "has no label `prod`", "label"),
        ("p@abcdef12", "has no version `abcdef12`", "v40"),
    ];
    for (reference, expect, known) in cases {
        let e = store.resolve(&r(reference)).await.unwrap_err().to_string();
        assert!(e.contains(expect) && e.contains(known), "{reference}: {e}");
    }
    // Hash prefixes resolve, inside a prompt and across the library.
    let h = &hashes[7];
    assert_eq!(
        store
            .resolve(&r(&format!("p@{}", &h[..10])))
            .await
            .unwrap()
            .seq,
        8
    );
    assert_eq!(store.resolve(&r(&h[..10])).await.unwrap().seq, 8);
    let e = store
        .move_label(&mv("v2", Some(h), "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid label `v2`"), "{e}");
    let e = store
        .add(NewVersion::new(
            "bad name",
            prompt("A.", &[]),
            Origin::Human,
            "x",
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid prompt name `bad name`"), "{e}");
    let mut orphan = NewVersion::new("p", prompt("Z.", &[]), Origin::Human, "x");
    orphan.parents = vec!["00".repeat(32)];
    let e = store.add(orphan).await.unwrap_err().to_string();
    assert!(e.contains("invalid parent"), "{e}");
    assert_eq!(
        store.versions("p").await.unwrap().len(),
        40,
        "a failed write adds nothing"
    );
}

#[tokio::test]
async fn two_writers_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    SqliteStore::open(&path).await.unwrap();
    let writer = |who: &'static str| {
        let path = path.clone();
        tokio::spawn(async move {
            // Each writer has its own store (its own connections), like another process.
            let store = SqliteStore::open(&path).await.unwrap();
            for i in 0..25 {
                let v = store
                    .add(NewVersion::new(
                        "p",
                        prompt(&format!("{who} {i}."), &[]),
                        Origin::Human,
                        who,
                    ))
                    .await
                    .unwrap();
                store
                    .move_label(&LabelMove {
                        prompt: "p".into(),
                        label: "production".into(),
                        to: Some(v.version.hash),
                        actor: who.into(),
                        comment: None,
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let (a, b) = (writer("a"), writer("b"));
    a.await.unwrap();
    b.await.unwrap();
    check_consistent(&path, 50).await;
}

/// Every version present with distinct numbers 1..=n, and the label history a chain.
pub async fn check_consistent(path: &Path, n: usize) {
    let store = SqliteStore::open(path).await.unwrap();
    let versions = store.versions("p").await.unwrap();
    assert_eq!(versions.len(), n);
    let seqs: Vec<u32> = versions.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, (1..=n as u32).collect::<Vec<_>>());
    let events = store.events("p").await.unwrap();
    let moves: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Label)
        .collect();
    assert_eq!(moves.len(), n);
    for pair in moves.windows(2) {
        assert_eq!(
            pair[1].from_hash, pair[0].hash,
            "each move starts where the last ended"
        );
    }
    let label = &store.labels("p").await.unwrap()[0];
    assert_eq!(Some(&label.hash), moves.last().unwrap().hash.as_ref());
}

#[tokio::test]
async fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Not a database at all.
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(
        &junk,
        "this is not sqlite, just some text that is long enough ".repeat(40),
    )
    .unwrap();
    let e = SqliteStore::open(&junk).await.unwrap_err().to_string();
    assert!(
        e.contains("junk.sqlite") && e.contains("not a metaprompt library"),
        "{e}"
    );

    // A real library whose pages were overwritten in the middle.
    let broken = dir.path().join("broken.sqlite");
    {
        let store = SqliteStore::open(&broken).await.unwrap();
        for i in 0..30 {
            store
                .add(NewVersion::new(
                    "p",
                    prompt(&format!("{i} {}", "x".repeat(500)), &[]),
                    Origin::Human,
                    "x",
                ))
                .await
                .unwrap();
        }
        store.close().await;
    }
    let mut bytes = std::fs::read(&broken).unwrap();
    // The header stays (it is still "a SQLite file"); the schema page behind it is garbage.
    for b in &mut bytes[100..4096] {
        *b = 0xAB;
    }
    std::fs::write(&broken, &bytes).unwrap();
    let _ = std::fs::remove_file(broken.with_extension("sqlite-wal"));
    let _ = std::fs::remove_file(broken.with_extension("sqlite-shm"));
    let outcome = async {
        let store = SqliteStore::open(&broken).await?;
        store.versions("p").await
    }
    .await;
    let Err(e) = outcome else {
        panic!("a corrupted library opened and read");
    };
    let e = e.to_string();
    assert!(
        e.contains("broken.sqlite") && e.contains("not a metaprompt library"),
        "{e}"
    );

    // Another program's SQLite database.
    let foreign = dir.path().join("foreign.sqlite");
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&foreign)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE customers (id INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let e = SqliteStore::open(&foreign).await.unwrap_err().to_string();
    assert!(
        e.contains("foreign.sqlite") && e.contains("customers"),
        "{e}"
    );

    // A directory where the file should be.
    let e = SqliteStore::open(dir.path()).await.unwrap_err().to_string();
    assert!(e.contains("is a directory"), "{e}");

    // A library from a newer metaprompt.
    let newer = dir.path().join("newer.sqlite");
    {
        let store = SqliteStore::open(&newer).await.unwrap();
        drop(store);
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&newer);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let e = SqliteStore::open(&newer).await.unwrap_err().to_string();
    assert!(e.contains("newer metaprompt") && e.contains("99"), "{e}");
}

#[tokio::test]
async fn a_read_only_library_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.sqlite");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
            .await
            .unwrap();
        store.close().await;
    }
    set_read_only(&path, true);
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.is_read_only());
    assert_eq!(store.versions("p").await.unwrap().len(), 1);
    let e = store
        .add(NewVersion::new("p", prompt("B.", &[]), Origin::Human, "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("ro.sqlite"), "{e}");
    set_read_only(&path, false);
}

fn set_read_only(path: &Path, on: bool) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, if on { 0o444 } else { 0o644 });
    std::fs::set_permissions(path, p).unwrap();
}

#[tokio::test]
async fn review_required_can_be_asked_for_by_a_later_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("l.sqlite"))
        .await
        .unwrap();
    store
        .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
        .await
        .unwrap();
    assert!(!store.prompts().await.unwrap()[0].review_required);
    let mut b = NewVersion::new("p", prompt("B.", &[]), Origin::Human, "y");
    b.review_required = true;
    store.add(b).await.unwrap();
    assert!(store.prompts().await.unwrap()[0].review_required);
    let policy: Vec<_> = store
        .events("p")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Policy)
        .collect();
    assert_eq!(policy.len(), 1);
    assert_eq!(policy[0].actor, "y");
    // Asking again records nothing new.
    let mut c = NewVersion::new("p", prompt("C.", &[]), Origin::Human, "z");
    c.review_required = true;
    store.add(c).await.unwrap();
    let n = store
        .events("p")
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::Policy)
        .count();
    assert_eq!(n, 1);
}
