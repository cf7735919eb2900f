//! A request's numbers checked before anything is spent, the budget it resolves to, and the dev
//! examples held out of the search.

use metaprompt_eval::{Example, Task};
use metaprompt_optimize::run::Budget;

use crate::EngineError;
use crate::request::OptimizeRequest;

/// Dev examples split into the search's and the held-out confirmation's (the last `share` of
/// them, at least one each); all of them for the search without a share.
pub(super) fn held_out(
    mut dev: Vec<Example>,
    share: Option<f64>,
) -> Result<(Vec<Example>, Vec<Example>), EngineError> {
    let Some(share) = share else {
        return Ok((dev, Vec::new()));
    };
    let n = dev.len();
    let held = ((n as f64 * share).round() as usize).max(1);
    if n < 2 || held >= n {
        return Err(EngineError::Invalid {
            field: "hold_out",
            message: format!(
                "holding {share} of {n} dev examples out leaves none for the search; give the task more dev examples or a smaller share"
            ),
        });
    }
    let confirm = dev.split_off(n - held);
    Ok((dev, confirm))
}

/// The algorithms that draw from the train split: demonstrations (`fewshot`, `mipro`) or the
/// examples instructions are induced from (`ape`, `mipro`). On an empty one they could only
/// stop at once or induce from nothing.
pub(crate) const NEEDS_TRAIN: &[&str] = &["fewshot", "ape", "mipro"];

/// The numbers of a request that cannot be meant, whoever sent it (flags, an HTTP body, a
/// checkpoint): counts of 0 where a run needs at least one, temperatures that are not finite
/// numbers >= 0, dollar caps that are negative or not finite, a share outside [0, 1].
pub(crate) fn check_request(r: &OptimizeRequest) -> Result<(), EngineError> {
    let invalid =
        |field: &'static str, message: String| Err(EngineError::Invalid { field, message });
    for (field, n, what) in [
        ("rounds", r.rounds, "rounds to run"),
        (
            "patience",
            r.patience,
            "rounds without improvement before stopping",
        ),
        (
            "per_round",
            r.per_round as usize,
            "candidates proposed per round",
        ),
        (
            "minibatch",
            r.minibatch,
            "dev examples of the first racing rung",
        ),
    ] {
        if n == 0 {
            return invalid(field, format!("must be at least 1 ({what}), got 0"));
        }
    }
    if r.demos == 0 && r.algorithm == "fewshot" {
        return invalid(
            "demos",
            "must be at least 1 for `fewshot`, which searches demonstrations, got 0".into(),
        );
    }
    for (field, t) in [("explore", r.explore), ("exploit", r.exploit)] {
        if let Some(p) = metaprompt_llm::types::temperature_problem(t) {
            return invalid(field, format!("a meta temperature {p}"));
        }
    }
    for (field, usd) in [
        ("max_cost_usd", r.budget.max_cost_usd),
        ("max_meta_cost_usd", r.budget.max_meta_cost_usd),
    ] {
        if let Some(usd) = usd
            && !(usd.is_finite() && usd >= 0.0)
        {
            return invalid(
                field,
                format!("a dollar cap must be a finite number, 0 or more, got {usd}"),
            );
        }
    }
    if let Some(m) = r.max_unscored
        && !(0.0..=1.0).contains(&m)
    {
        return invalid(
            "max_unscored",
            format!("{m} is not a share between 0 and 1"),
        );
    }
    if let Some(c) = r.hold_out
        && !(c > 0.0 && c < 1.0)
    {
        return invalid(
            "hold_out",
            format!(
                "{c} is not a share of the dev examples between 0 and 1 (both excluded): the search and the confirmation each need some"
            ),
        );
    }
    if r.max_prompt_tokens == Some(0) {
        return invalid(
            "max_prompt_tokens",
            "a cap of 0 tokens admits no prompt".into(),
        );
    }
    Ok(())
}

/// Caps: the request's, else the task's `[budget]`, else the defaults.
pub(super) fn budget(r: &OptimizeRequest, task: &Task) -> Budget {
    let t = &task.config.budget;
    let b = &r.budget;
    let d = Budget::default();
    let max_meta_tokens = b.max_meta_tokens.or(t.max_meta_tokens);
    Budget {
        max_metric_calls: b
            .max_metric_calls
            .or(t.max_metric_calls)
            .unwrap_or(d.max_metric_calls),
        // A token cap alone replaces the default call cap: it is the budget then.
        max_meta_calls: b.max_meta_calls.or(t.max_meta_calls).unwrap_or(
            if max_meta_tokens.is_some() {
                u64::MAX
            } else {
                d.max_meta_calls
            },
        ),
        max_meta_tokens,
        max_meta_cost_usd: b.max_meta_cost_usd.or(t.max_meta_cost_usd),
        max_cost_usd: b.max_cost_usd.or(t.max_cost_usd),
        max_wall_secs: b.max_wall_secs.or(t.max_wall_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: &OptimizeRequest) -> Option<(&'static str, String)> {
        match check_request(r) {
            Err(EngineError::Invalid { field, message }) => Some((field, message)),
            Err(e) => panic!("not an Invalid error: {e}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn numbers_that_cannot_be_meant_are_refused_by_field() {
        assert_eq!(field_of(&OptimizeRequest::new("t.toml")), None);
        type Set = fn(&mut OptimizeRequest);
        let cases: Vec<(&str, Set)> = vec![
            ("rounds", |r| r.rounds = 0),
            ("patience", |r| r.patience = 0),
            ("per_round", |r| r.per_round = 0),
            ("minibatch", |r| r.minibatch = 0),
            ("explore", |r| r.explore = f32::NAN),
            ("exploit", |r| r.exploit = -0.5),
            ("exploit", |r| r.exploit = f32::INFINITY),
            ("max_cost_usd", |r| r.budget.max_cost_usd = Some(-1.0)),
            ("max_meta_cost_usd", |r| {
                r.budget.max_meta_cost_usd = Some(f64::NAN)
            }),
            ("max_unscored", |r| r.max_unscored = Some(1.5)),
            ("max_unscored", |r| r.max_unscored = Some(f64::NAN)),
            ("max_prompt_tokens", |r| r.max_prompt_tokens = Some(0)),
            ("hold_out", |r| r.hold_out = Some(0.0)),
            ("hold_out", |r| r.hold_out = Some(1.0)),
            ("hold_out", |r| r.hold_out = Some(f64::NAN)),
            ("demos", |r| {
                r.algorithm = "fewshot".into();
                r.demos = 0;
            }),
        ];
        for (field, set) in cases {
            let mut r = OptimizeRequest::new("t.toml");
            set(&mut r);
            let (f, message) = field_of(&r).unwrap_or_else(|| panic!("{field} accepted"));
            assert_eq!(f, field, "{message}");
            assert!(!message.is_empty());
        }
        let mut r = OptimizeRequest::new("t.toml");
        r.rounds = 0;
        assert_eq!(
            EngineError::Invalid {
                field: "rounds",
                message: field_of(&r).map(|(_, m)| m).unwrap_or_default()
            }
            .to_string(),
            "rounds: must be at least 1 (rounds to run), got 0"
        );
        // Zero demonstrations is a choice for algorithms that write instructions.
        let mut r = OptimizeRequest::new("t.toml");
        r.demos = 0;
        assert_eq!(field_of(&r), None);
        // And an HTTP body with `"minibatch": 0` is the same request.
        let r: OptimizeRequest = serde_json::from_str(r#"{"task": "t.toml", "minibatch": 0}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(field_of(&r).map(|(f, _)| f), Some("minibatch"));
    }

    #[test]
    fn a_hold_out_share_takes_the_last_dev_examples_and_leaves_some_for_the_search() {
        let dev = |n: usize| -> Vec<Example> {
            (0..n)
                .map(|i| Example {
                    id: format!("e{i}"),
                    vars: Default::default(),
                    expected: None,
                })
                .collect()
        };
        let ids = |xs: &[Example]| xs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        let (search, held) = held_out(dev(10), Some(0.3)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(&search), ["e0", "e1", "e2", "e3", "e4", "e5", "e6"]);
        assert_eq!(ids(&held), ["e7", "e8", "e9"]);
        // A tiny share still holds one out; without a share nothing is held out.
        assert_eq!(
            held_out(dev(10), Some(0.01)).map(|(_, h)| h.len()).ok(),
            Some(1)
        );
        assert_eq!(
            held_out(dev(10), None)
                .map(|(d, h)| (d.len(), h.len()))
                .ok(),
            Some((10, 0))
        );
        // A share that leaves the search nothing is refused, by field.
        for (n, share) in [(1, 0.5), (10, 0.99), (0, 0.5)] {
            match held_out(dev(n), Some(share)) {
                Err(EngineError::Invalid { field, message }) => {
                    assert_eq!(field, "hold_out");
                    assert!(message.contains("leaves none for the search"), "{message}");
                }
                other => panic!(
                    "{n} × {share}: {:?}",
                    other.map(|(d, h)| (d.len(), h.len()))
                ),
            }
        }
    }
}
