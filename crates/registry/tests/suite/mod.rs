//! What every backend must do, written once against [`Store`]: each behaviour is an async
//! function taking a [`Fixture`] (a fresh, empty library), and [`store_suite!`] makes one
//! `#[tokio::test]` per behaviour for a backend:
//!
//! ```ignore
//! store_suite!(sqlite, crate::suite::sqlite::fixture);
//! ```

pub mod memory;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use metaprompt_eval::PromptFile;
use metaprompt_registry::{
    Batch, Decision, EventKind, Evidence, LabelMove, NewVersion, Origin, RegistryError,
    ReviewState, Run, RunCandidate, Store, VersionRef,
};
use serde_json::json;

/// A fresh, empty library on one backend.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A new handle on the library, with its own connections, as another process would open it.
    async fn open(&self) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per behaviour below, in a module named for the backend; `$fixture` is
/// an async function returning a [`Fixture`].
macro_rules! store_suite {
    ($backend:ident, $fixture:path) => {
        store_suite!(@each $backend, $fixture,
            full_flow_is_recorded_and_survives_reopening,
            same_content_is_one_version_and_keeps_new_evidence,
            unknown_names_say_what_exists,
            two_writers_at_once_lose_nothing,
            review_required_can_be_asked_for_by_a_later_version,
            a_failed_write_leaves_nothing,
            rollbacks_walk_back_through_the_labels_history,
            policy_and_reviews_guard_production,
            the_audit_trail_is_followed_across_prompts_and_handles,
        );
    };
    (@each $backend:ident, $fixture:path, $($behaviour:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let fixture = $fixture().await;
                    crate::suite::$behaviour(&fixture).await;
                }
            )*
        }
    };
}

pub fn prompt(instruction: &str, constraints: &[&str]) -> PromptFile {
    PromptFile {
        instruction: Some(instruction.into()),
        template: Some("Review: {{ text }}\nSentiment:".into()),
        constraints: constraints.iter().map(|c| c.to_string()).collect(),
        ..PromptFile::default()
    }
}

pub fn evidence(mean: f64, baseline: Option<&str>) -> Evidence {
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

pub fn mv(label: &str, to: Option<&str>, actor: &str) -> LabelMove {
    LabelMove {
        prompt: "sst2".into(),
        label: label.into(),
        to: to.map(String::from),
        actor: actor.into(),
        comment: Some(format!("{actor} moves {label}")),
    }
}

pub fn r(s: &str) -> VersionRef {
    VersionRef::parse(s).unwrap()
}

pub async fn full_flow_is_recorded_and_survives_reopening(f: &dyn Fixture) {
    let store = f.open().await;
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
    store.close().await;
    drop(store);

    // Everything is kept.
    let store = f.open().await;
    let versions = store.versions("sst2").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].parents, vec![seed.clone()]);
    assert_eq!(versions[1].checks, Some(json!({"kept": constraint})));
    assert_eq!(versions[1].run.as_deref(), Some("run-1"));
    let ev = store.evidence(&versions[1]).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].baseline.as_deref(), Some(seed.as_str()));
    assert_eq!(ev[0].p_value, Some(0.001));
    assert!(ev[0].recorded_at.is_some(), "the library stamps evidence");
    let stored_run = store.run("run-1").await.unwrap();
    assert_eq!(stored_run.candidates, run.candidates);
    assert_eq!(stored_run.usage, run.usage);
    assert_eq!(store.runs("sst2").await.unwrap().len(), 1);
    let e = store.run("run-2").await.unwrap_err();
    assert!(matches!(e, RegistryError::UnknownRun(_)), "{e}");
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
    assert_eq!(
        (summary[0].latest, summary[0].proposed),
        (2, 0),
        "{summary:?}"
    );
    assert_eq!(
        summary[0].labels,
        [("production".to_string(), 1), ("staging".to_string(), 2)]
    );
}

pub async fn same_content_is_one_version_and_keeps_new_evidence(f: &dyn Fixture) {
    let store = f.open().await;
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

pub async fn unknown_names_say_what_exists(f: &dyn Fixture) {
    let store = f.open().await;
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

pub async fn two_writers_at_once_lose_nothing(f: &dyn Fixture) {
    let writer = |who: &'static str, store: Arc<dyn Store>| {
        tokio::spawn(async move {
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
    // Each writer has its own handle (its own connections), like another process.
    let (a, b) = (writer("a", f.open().await), writer("b", f.open().await));
    a.await.unwrap();
    b.await.unwrap();
    check_consistent(&*f.open().await, 50).await;
}

/// Every version present with distinct numbers 1..=n, and the label history a chain.
pub async fn check_consistent(store: &dyn Store, n: usize) {
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

pub async fn review_required_can_be_asked_for_by_a_later_version(f: &dyn Fixture) {
    let store = f.open().await;
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

pub async fn a_failed_write_leaves_nothing(f: &dyn Fixture) {
    let store = f.open().await;
    // A batch whose second version is refused stores neither, nor the prompt, nor the run.
    let good = NewVersion::new("q", prompt("Good.", &[]), Origin::Optimize, "x");
    let mut orphan = NewVersion::new("q", prompt("Orphan.", &[]), Origin::Optimize, "x");
    orphan.parents = vec!["ab".repeat(32)];
    let run = Run {
        id: "run-q".into(),
        kind: Origin::Optimize,
        prompt: "q".into(),
        task: None,
        algorithm: None,
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
        dir: None,
        author: "x".into(),
        config: json!({}),
        usage: json!({}),
        summary: json!({}),
        candidates: vec![],
    };
    let e = store
        .commit(Batch {
            versions: vec![
                (good, vec![evidence(0.5, None)]),
                (orphan, vec![evidence(0.6, None)]),
            ],
            run: Some(run),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Invalid { what: "parent", .. }),
        "{e}"
    );
    assert!(store.prompts().await.unwrap().is_empty());
    assert!(store.proposed().await.unwrap().is_empty());
    let e = store.events("q").await.unwrap_err();
    assert!(matches!(e, RegistryError::UnknownPrompt { .. }), "{e}");
    assert!(store.run("run-q").await.is_err());

    // A refused label move changes nothing either.
    let v = store
        .add(NewVersion::new(
            "q",
            prompt("Made.", &["Be brief."]),
            Origin::Generate,
            "x",
        ))
        .await
        .unwrap();
    let before = store.events("q").await.unwrap();
    assert!(
        store
            .move_label(&LabelMove {
                prompt: "q".into(),
                label: "production".into(),
                to: Some(v.version.hash.clone()),
                actor: "x".into(),
                comment: None,
            })
            .await
            .is_err()
    );
    assert!(store.labels("q").await.unwrap().is_empty());
    assert_eq!(store.events("q").await.unwrap(), before);
}

pub async fn rollbacks_walk_back_through_the_labels_history(f: &dyn Fixture) {
    let store = f.open().await;
    let mut hashes = Vec::new();
    for i in 1..=3 {
        let v = store
            .add(NewVersion::new(
                "sst2",
                prompt(&format!("V{i}."), &[]),
                Origin::Human,
                "x",
            ))
            .await
            .unwrap();
        store
            .move_label(&mv("production", Some(&v.version.hash), "x"))
            .await
            .unwrap();
        hashes.push(v.version.hash);
    }
    // Moving a label where it already points records nothing.
    let same = store
        .move_label(&mv("production", Some(&hashes[2]), "x"))
        .await
        .unwrap();
    assert_eq!(same.from.as_ref().map(|v| v.seq), Some(3));
    let moves = store.events("sst2").await.unwrap().len();
    assert_eq!(moves, 6);

    for expected in [2, 1] {
        let back = store
            .move_label(&mv("production", None, "carol"))
            .await
            .unwrap();
        assert!(back.rollback);
        assert_eq!(back.to.seq, expected);
    }
    let e = store
        .move_label(&mv("production", None, "carol"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to roll back to"), "{e}");
    let e = store
        .move_label(&mv("staging", None, "carol"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::UnknownLabel { .. }), "{e}");
    assert!(e.to_string().contains("known: production"), "{e}");
    let e = store
        .move_label(&LabelMove {
            prompt: "nope".into(),
            ..mv("production", Some(&hashes[0]), "x")
        })
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::UnknownPrompt { .. }), "{e}");
}

pub async fn policy_and_reviews_guard_production(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
        .await
        .unwrap();
    let made = store
        .add(NewVersion::new(
            "p",
            prompt("B.", &[]),
            Origin::Translate,
            "x",
        ))
        .await
        .unwrap()
        .version;
    assert_eq!(made.review, ReviewState::Proposed);
    let to_production = LabelMove {
        prompt: "p".into(),
        ..mv("production", Some(&made.hash), "x")
    };

    // Without constraints or the mark, a machine-made version may go to production; with the
    // mark it needs an approval.
    store.move_label(&to_production).await.unwrap();
    store.set_review_required("p", true, "lead").await.unwrap();
    let e = store.move_label(&to_production).await.unwrap_err();
    assert!(e.to_string().contains("review-required"), "{e}");
    let rejected = store
        .review(&made, Decision::Reject, "lead", Some("too long"))
        .await
        .unwrap();
    assert_eq!(rejected.review, ReviewState::Rejected);
    store.set_review_required("p", false, "lead").await.unwrap();
    let e = store.move_label(&to_production).await.unwrap_err();
    assert!(e.to_string().contains("rejected in review"), "{e}");
    store
        .review(&made, Decision::Approve, "lead", None)
        .await
        .unwrap();
    store.move_label(&to_production).await.unwrap();

    let e = store
        .set_review_required("nope", true, "lead")
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::UnknownPrompt { .. }), "{e}");
    let mut missing = made.clone();
    missing.hash = "cd".repeat(32);
    let e = store
        .review(&missing, Decision::Approve, "lead", None)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::UnknownVersion { .. }), "{e}");

    let trail: Vec<(EventKind, Option<String>)> = store
        .events("p")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "lead")
        .map(|e| (e.kind, e.decision))
        .collect();
    let d = |s: &str| Some(s.to_string());
    assert_eq!(
        trail,
        [
            (EventKind::Policy, d("review-required")),
            (EventKind::Review, d("reject")),
            (EventKind::Policy, d("review-optional")),
            (EventKind::Review, d("approve")),
        ]
    );
    assert!(!store.prompts().await.unwrap()[0].review_required);
}

/// A follower (the server's webhooks) reads every prompt's events after the last id it saw,
/// including those another handle (another process: the CLI) wrote since.
pub async fn the_audit_trail_is_followed_across_prompts_and_handles(f: &dyn Fixture) {
    let (follower, writer) = (f.open().await, f.open().await);
    assert_eq!(follower.last_event_id().await.unwrap(), 0);
    assert!(follower.events_after(0, 10).await.unwrap().is_empty());
    let a = writer
        .add(NewVersion::new("p", prompt("A.", &[]), Origin::Human, "x"))
        .await
        .unwrap();
    let seen = follower.last_event_id().await.unwrap();
    assert!(seen > 0);
    writer
        .add(NewVersion::new(
            "q",
            prompt("B.", &[]),
            Origin::Optimize,
            "y",
        ))
        .await
        .unwrap();
    writer
        .move_label(&LabelMove {
            prompt: "p".into(),
            label: "production".into(),
            to: Some(a.version.hash),
            actor: "z".into(),
            comment: None,
        })
        .await
        .unwrap();
    let new = follower.events_after(seen, 10).await.unwrap();
    let got: Vec<(&str, EventKind)> = new.iter().map(|e| (e.prompt.as_str(), e.kind)).collect();
    assert_eq!(got, [("q", EventKind::Add), ("p", EventKind::Label)]);
    assert!(new[0].id > seen && new[1].id > new[0].id);
    assert_eq!(follower.last_event_id().await.unwrap(), new[1].id);
    // A limit pages through them in order.
    let first = follower.events_after(seen, 1).await.unwrap();
    assert_eq!(first, new[..1]);
    assert_eq!(
        follower.events_after(first[0].id, 10).await.unwrap(),
        new[1..]
    );
    assert!(
        follower
            .events_after(new[1].id, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
