//! After a proposal is filed: follow its review, start its canary, watch it, and promote or
//! roll it back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use metaprompt_registry::model::{
    Decision, EventKind, LabelMove, ReviewState, SplitChange, VersionRef,
};
use metaprompt_registry::service::InferenceQuery;

use crate::case::{Canary, Case, State};
use crate::stats::{Rate, sequential};

use super::*;

impl Agent {
    pub(super) async fn review_step(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        let Some(p) = case.proposal.clone() else {
            return Ok(());
        };
        let version = self
            .library
            .resolve(&VersionRef::parse(&p.version.hash)?)
            .await?;
        match version.review {
            ReviewState::Approved => self.start_canary(case, now, "approved").await,
            ReviewState::Rejected => {
                let comment = self
                    .library
                    .events(&case.prompt)
                    .await?
                    .into_iter()
                    .rev()
                    .find(|e| {
                        e.kind == EventKind::Review
                            && e.hash.as_deref() == Some(&version.hash)
                            && e.decision.as_deref() == Some(Decision::Reject.as_str())
                    })
                    .and_then(|e| e.comment);
                case.review_comment.clone_from(&comment);
                case.state = State::Rejected;
                case.note(
                    now,
                    format!(
                        "rejected by review: {}",
                        comment.as_deref().unwrap_or("(no comment)")
                    ),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn start_canary(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), AgentError> {
        let Some(p) = case.proposal.clone() else {
            return Ok(());
        };
        // The guardrail again, on what is about to be served: whatever filed it.
        let incumbent = self
            .library
            .resolve(&VersionRef::parse(&case.incumbent.hash)?)
            .await?;
        let proposal = self
            .library
            .resolve(&VersionRef::parse(&p.version.hash)?)
            .await?;
        if let Err(why) = guardrail(&incumbent.constraints, &proposal.file()?) {
            return self.attempted(case, now, format!("not served: {why}"), Vec::new());
        }
        let weight = self.settings.canary_weight;
        self.library
            .set_split(&SplitChange {
                prompt: case.prompt.clone(),
                label: case.label.clone(),
                to: Some(p.version.hash.clone()),
                weight,
                actor: ACTOR.into(),
                comment: Some(format!("canary of agent case {} ({why})", case.id)),
            })
            .await?;
        case.canary = Some(Canary {
            label: case.label.clone(),
            weight,
            started_at: now,
            incumbent_n: 0,
            incumbent_mean: None,
            canary_n: 0,
            canary_mean: None,
            last: None,
        });
        case.state = State::Canary;
        case.note(
            now,
            format!(
                "canary started ({why}): v{} serves {weight}% of {}",
                p.version.seq, case.label
            ),
        );
        Ok(())
    }

    /// Compare the canary with the incumbent on the label's live outcomes since the split
    /// began; promote, roll back, or wait.
    pub(super) async fn watch_canary(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        let (Some(p), Some(mut canary)) = (case.proposal.clone(), case.canary.clone()) else {
            return Ok(());
        };
        let splits = self.library.splits(&case.prompt).await?;
        let live = splits
            .iter()
            .any(|s| s.label == canary.label && s.hash == p.version.hash);
        if !live {
            case.state = State::Superseded;
            case.note(
                now,
                "the split was ended or changed by someone else; the case is closed",
            );
            return Ok(());
        }
        let (inferences, feedback) = self
            .read(&InferenceQuery {
                prompt: Some(case.prompt.clone()),
                since: Some(canary.started_at),
                until: None,
                limit: None,
            })
            .await?;
        let mut scores: HashMap<&str, Vec<f64>> = HashMap::new();
        for f in &feedback {
            if let Some(s) = f.score {
                scores.entry(f.inference_id.as_str()).or_default().push(s);
            }
        }
        let (mut inc, mut can) = (Rate::default(), Rate::default());
        let (mut inc_err, mut can_err) = (Rate::default(), Rate::default());
        for i in inferences
            .iter()
            .filter(|i| i.label.as_deref() == Some(canary.label.as_str()))
        {
            let (rate, err) = if i.seq == p.version.seq {
                (&mut can, &mut can_err)
            } else if i.seq == case.incumbent.seq {
                (&mut inc, &mut inc_err)
            } else {
                continue;
            };
            err.add(if i.error.is_some() { 0.0 } else { 1.0 });
            if let Some(s) = scores.get(i.id.as_str()) {
                rate.add(s.iter().sum::<f64>() / s.len() as f64);
            }
        }
        let alpha = self.settings.canary_alpha;
        let s = sequential(&inc, &can, alpha, 0.1);
        let errors = sequential(&inc_err, &can_err, alpha, 0.1);
        canary.incumbent_n = inc.n;
        canary.incumbent_mean = inc.mean();
        canary.canary_n = can.n;
        canary.canary_mean = can.mean();
        canary.last = Some(s);
        case.canary = Some(canary.clone());
        let enough = inc.n >= self.settings.canary_min_n && can.n >= self.settings.canary_min_n;
        let seen = format!(
            "canary {:.3} (n {}) vs incumbent {:.3} (n {}): difference {:+.3}, always-valid \
             95% interval [{:+.3}, {:+.3}]",
            can.mean().unwrap_or(0.0),
            can.n,
            inc.mean().unwrap_or(0.0),
            inc.n,
            s.diff,
            s.low,
            s.high
        );
        let worse = (inc.n >= 10 && can.n >= 10 && s.high < 0.0)
            || (inc_err.n >= 10 && can_err.n >= 10 && errors.high < 0.0);
        if worse {
            self.library
                .set_split(&SplitChange {
                    prompt: case.prompt.clone(),
                    label: canary.label.clone(),
                    to: None,
                    weight: 0.0,
                    actor: ACTOR.into(),
                    comment: Some(format!("rollback of agent case {}: {seen}", case.id)),
                })
                .await?;
            case.state = State::RolledBack;
            case.note(now, format!("rolled back: {seen}"));
        } else if enough && s.low > -self.settings.canary_margin {
            self.library
                .move_label(&LabelMove {
                    prompt: case.prompt.clone(),
                    label: canary.label.clone(),
                    to: Some(p.version.hash.clone()),
                    actor: ACTOR.into(),
                    comment: Some(format!("promotion of agent case {}: {seen}", case.id)),
                })
                .await?;
            case.state = State::Promoted;
            case.note(
                now,
                format!("promoted v{} to {}: {seen}", p.version.seq, canary.label),
            );
        }
        Ok(())
    }
}
