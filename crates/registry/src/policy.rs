//! The library's rules that need no storage: names, who may move a label where, and what a
//! rollback returns to. [`crate::Library`] calls these inside its write transactions, on data
//! read in the same transaction, so a rule is never checked against a state that has since
//! changed.

use crate::RegistryError;
use crate::model::{Event, EventKind, ReviewState, Version};

/// The label that says which version is in use, and that review guards.
pub const PRODUCTION: &str = "production";

/// Prompt names: the one name rule ([`metaprompt_eval::name`]): a letter or digit, then
/// letters, digits, `-`, `_`, `.` (at most 100).
pub fn check_prompt_name(name: &str) -> Result<(), RegistryError> {
    if metaprompt_eval::name::is_valid(name) {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            what: "prompt name",
            value: name.into(),
            expected: metaprompt_eval::name::EXPECTED.into(),
        })
    }
}

/// Label names: a lowercase letter, then lowercase letters, digits, `-`, `_`; not `vN` (that
/// names a version).
pub fn check_label(label: &str) -> Result<(), RegistryError> {
    let looks_like_seq = label
        .strip_prefix('v')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let ok = !looks_like_seq
        && label.len() <= 64
        && label.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            what: "label",
            value: label.into(),
            expected: "lowercase letters, digits, `-`, `_`, starting with a letter, not vN".into(),
        })
    }
}

/// What flags a label that points at `version`, wherever the label shows: `rejected` when the
/// version was rejected in review (the label was moved there with `--force`, or the version was
/// rejected after the label moved). `None` when nothing is wrong.
pub fn label_flag(version: &Version) -> Option<&'static str> {
    (version.review == ReviewState::Rejected).then_some("rejected")
}

/// May `label` point at `version`? No label points at a version rejected in review unless the
/// person moving it says so (`force`: `--force`, `"force": true` over HTTP), and `production`
/// never does; `production` points at a machine-made one only once it is approved when the
/// prompt has protected constraints or is marked review-required.
pub fn may_label(
    label: &str,
    version: &Version,
    review_required: bool,
    force: bool,
) -> Result<(), String> {
    if version.review == ReviewState::Rejected {
        if label == PRODUCTION {
            return Err("it was rejected in review; a new review must approve it first".into());
        }
        if !force {
            return Err(format!(
                "it was rejected in review; to point `{label}` at it anyway, say so: metaprompt prompts label {} {label} --force (over HTTP: \"force\": true); the label is then flagged as rejected wherever it shows",
                version.reference()
            ));
        }
        return Ok(());
    }
    if label != PRODUCTION {
        return Ok(());
    }
    let guarded = !version.constraints.is_empty() || review_required;
    if version.origin.is_machine() && guarded && version.review != ReviewState::Approved {
        let why = if version.constraints.is_empty() {
            "the prompt is marked review-required".to_string()
        } else {
            format!(
                "the prompt has {} protected constraint(s)",
                version.constraints.len()
            )
        };
        return Err(format!(
            "it was written by {} and {why}, so it needs an approval first: metaprompt review approve {} --comment \"…\"",
            version.origin,
            version.reference()
        ));
    }
    Ok(())
}

/// Where a rollback of `label` goes: the version it pointed at before its current one, where
/// earlier rollbacks count as undoing the move they rolled back (so rolling back twice goes two
/// steps back, not back and forth). `events` are the prompt's, oldest first.
pub fn rollback_target(label: &str, events: &[Event]) -> Option<String> {
    let mut stack: Vec<&str> = Vec::new();
    for e in events.iter().filter(|e| e.label.as_deref() == Some(label)) {
        match (e.kind, e.hash.as_deref()) {
            (EventKind::Label, Some(h)) => stack.push(h),
            (EventKind::Rollback, Some(h)) => {
                stack.pop();
                // The target is now on top; keep it consistent if history was odd.
                if stack.last() != Some(&h) {
                    stack.push(h);
                }
            }
            _ => {}
        }
    }
    stack.pop()?;
    stack.last().map(|h| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    fn version(origin: Origin, review: ReviewState, constraints: usize) -> Version {
        Version {
            prompt: "p".into(),
            hash: "ab".repeat(32),
            seq: 2,
            content: String::new(),
            parents: vec![],
            origin,
            run: None,
            author: "a".into(),
            created_at: chrono::Utc::now(),
            target_model: None,
            constraints: vec!["Be kind.".into(); constraints],
            checks: None,
            message: None,
            review,
        }
    }

    #[test]
    fn production_needs_approval_for_guarded_machine_versions() {
        let proposed = version(Origin::Optimize, ReviewState::Proposed, 1);
        let e = may_label(PRODUCTION, &proposed, false, false).unwrap_err();
        assert!(
            e.contains("review approve p@v2") && e.contains("1 protected"),
            "{e}"
        );
        assert!(may_label("staging", &proposed, false, false).is_ok());
        let unguarded = version(Origin::Optimize, ReviewState::Proposed, 0);
        assert!(may_label(PRODUCTION, &unguarded, false, false).is_ok());
        let e = may_label(PRODUCTION, &unguarded, true, false).unwrap_err();
        assert!(e.contains("review-required"), "{e}");
        assert!(
            may_label(
                PRODUCTION,
                &version(Origin::Optimize, ReviewState::Approved, 1),
                true,
                false
            )
            .is_ok()
        );
        assert!(
            may_label(
                PRODUCTION,
                &version(Origin::Human, ReviewState::None, 1),
                true,
                false
            )
            .is_ok()
        );
        let e = may_label(
            PRODUCTION,
            &version(Origin::Human, ReviewState::Rejected, 0),
            false,
            false,
        )
        .unwrap_err();
        assert!(e.contains("rejected"), "{e}");
    }

    #[test]
    fn no_label_points_at_a_rejected_version_unless_forced_and_production_never() {
        let rejected = version(Origin::Generate, ReviewState::Rejected, 0);
        let e = may_label("staging", &rejected, false, false).unwrap_err();
        assert!(
            e.contains("rejected in review") && e.contains("prompts label p@v2 staging --force"),
            "{e}"
        );
        assert!(may_label("staging", &rejected, false, true).is_ok());
        let e = may_label(PRODUCTION, &rejected, false, true).unwrap_err();
        assert!(
            e.contains("rejected in review") && !e.contains("--force"),
            "{e}"
        );
        // Human versions rejected in review count too; others are unaffected by `force`.
        let human = version(Origin::Human, ReviewState::Rejected, 0);
        assert!(may_label("staging", &human, false, false).is_err());
        let ok = version(Origin::Generate, ReviewState::Proposed, 0);
        assert!(may_label("staging", &ok, true, false).is_ok());
        assert!(may_label("staging", &ok, true, true).is_ok());
        assert_eq!(label_flag(&rejected), Some("rejected"));
        assert_eq!(label_flag(&ok), None);
        assert_eq!(
            label_flag(&version(Origin::Optimize, ReviewState::Approved, 1)),
            None
        );
    }

    fn ev(kind: EventKind, hash: &str) -> Event {
        Event {
            id: 0,
            prompt: "p".into(),
            at: chrono::Utc::now(),
            actor: "a".into(),
            kind,
            hash: Some(hash.into()),
            label: Some(PRODUCTION.into()),
            from_hash: None,
            decision: None,
            comment: None,
        }
    }

    #[test]
    fn rollbacks_walk_back_through_history() {
        use EventKind::*;
        let mut events = vec![ev(Label, "a"), ev(Label, "b"), ev(Label, "c")];
        assert_eq!(rollback_target(PRODUCTION, &events).as_deref(), Some("b"));
        events.push(ev(Rollback, "b"));
        assert_eq!(rollback_target(PRODUCTION, &events).as_deref(), Some("a"));
        events.push(ev(Rollback, "a"));
        assert_eq!(rollback_target(PRODUCTION, &events), None);
        assert_eq!(rollback_target("staging", &events), None);
    }

    #[test]
    fn names_and_labels_are_checked() {
        assert!(check_prompt_name("sst2-auto.v1").is_ok());
        assert!(check_prompt_name("bad name").is_err());
        assert!(check_prompt_name("").is_err());
        assert!(check_label("production").is_ok());
        for bad in ["v3", "Prod", "", "a b", "1x"] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }
}
