//! Tests of `runs`.

use super::*;

/// The wire form of a run's events is the engine's progress as it is, with `resumed` and
/// `end` beside it under the same `event` key: what SSE clients and the CLI tests read.
#[test]
fn run_events_are_written_as_one_tagged_family() {
    let json = |e: &RunEvent| serde_json::to_value(e).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json(&RunEvent::Resumed), json!({"event": "resumed"}));
    let end = RunEvent::End {
        status: Status::Cancelled,
        error: Some("cancelled".into()),
    };
    assert!(end.is_end());
    assert_eq!(
        json(&end),
        json!({"event": "end", "status": "cancelled", "error": "cancelled"})
    );
    let step = RunEvent::Progress(Progress::Step {
        text: "round 1".into(),
    });
    assert!(!step.is_end());
    assert_eq!(json(&step), json!({"event": "step", "text": "round 1"}));
    let evaluating = RunEvent::Progress(Progress::Evaluating {
        label: "p1".into(),
        done: 3,
        total: 8,
    });
    assert_eq!(
        json(&evaluating),
        json!({"event": "evaluating", "label": "p1", "done": 3, "total": 8})
    );
}
