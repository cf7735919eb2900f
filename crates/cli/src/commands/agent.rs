//! `metaprompt agent --once`: one pass of the agent's monitor over the library's inference and
//! feedback log — every served prompt's outcome rate, as a whole and per tag slice, in the
//! current window beside the one before, and the slices found worse (see `metaprompt_agent`).

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::Utc;
use metaprompt_agent::monitor::{Against, Outcome, Policy, Slice, detect, report};
use metaprompt_registry::service::{Feedback, InferenceQuery};
use serde_json::json;

use crate::args::{AgentArgs, Global};
use crate::commands::library;
use crate::format::outln;

pub async fn run(global: &Global, args: AgentArgs) -> anyhow::Result<()> {
    if !(args.fdr > 0.0 && args.fdr < 1.0) {
        anyhow::bail!(
            "--fdr {}: expected a rate between 0 and 1, such as 0.05",
            args.fdr
        );
    }
    let window = chrono::Duration::from_std(args.window)
        .ok()
        .filter(|w| *w > chrono::Duration::zero())
        .with_context(|| {
            format!(
                "--window {:?}: expected a positive duration such as 1h",
                args.window
            )
        })?;
    let policy = Policy {
        window,
        min_n: args.min_n.max(1),
        fdr: args.fdr,
        ..Policy::default()
    };
    let service = metaprompt_registry::open_service(library::path(global)?).await?;
    let now = Utc::now();
    let collected = async {
        let query = InferenceQuery {
            prompt: args.prompt.clone(),
            since: Some(now - window - window),
            until: Some(now),
            limit: None,
        };
        let inferences = service.inferences(&query).await?;
        let mut feedback: HashMap<String, Vec<Feedback>> = HashMap::new();
        for f in service.feedback_for(&query).await? {
            feedback.entry(f.inference_id.clone()).or_default().push(f);
        }
        let outcomes: Vec<Outcome> = inferences
            .iter()
            .filter_map(|i| {
                Outcome::from_records(i, feedback.get(&i.id).map_or(&[], Vec::as_slice))
            })
            .collect();
        Ok::<_, anyhow::Error>((inferences.len(), outcomes))
    }
    .await;
    service.close().await;
    let (seen, outcomes) = collected?;
    let reports = report(&outcomes, now, &policy);
    let findings = detect(&reports, &policy);
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "at": now, "policy": {"window_secs": window.num_seconds(), "min_n": policy.min_n,
                                      "fdr": policy.fdr, "min_drop": policy.min_drop},
                "inferences": seen, "scored": outcomes.len(),
                "slices": reports, "findings": findings,
            }))?
        );
        return Ok(());
    }
    outln!(
        "{} inferences in the last {}, {} scored; findings at a false-discovery rate of {}",
        seen,
        humantime::format_duration(args.window * 2),
        outcomes.len(),
        policy.fdr
    );
    if reports.is_empty() {
        outln!("nothing scored to watch: send feedback (POST /v1/feedback) or run with `expected`");
        return Ok(());
    }
    let mean = |r: &metaprompt_agent::stats::Rate| {
        r.mean()
            .map_or_else(|| "—".to_string(), |m| format!("{m:.3}"))
    };
    let mut prompt = "";
    for r in &reports {
        if r.prompt != prompt {
            prompt = &r.prompt;
            outln!("\n{prompt}");
            outln!(
                "  {:<32} {:>6} {:>7}  {:>8} {:>7}  {:>7}",
                "slice",
                "n now",
                "mean",
                "n before",
                "mean",
                "rest"
            );
        }
        let name = match &r.slice {
            Slice::All => "(all)".to_string(),
            s => s.to_string(),
        };
        outln!(
            "  {:<32} {:>6} {:>7}  {:>8} {:>7}  {:>7}",
            name,
            r.current.n,
            mean(&r.current),
            r.baseline.n,
            mean(&r.baseline),
            if r.slice == Slice::All {
                String::new()
            } else {
                mean(&r.rest)
            }
        );
    }
    outln!("");
    if findings.is_empty() {
        outln!("no slice is significantly worse than its baseline or the rest of its traffic");
    }
    for f in &findings {
        let against = match f.against {
            Against::Baseline => "its previous window",
            Against::Rest => "the rest of the traffic",
        };
        outln!(
            "FOUND {} {}: {:.3} (n {}) against {} {:.3} (n {}), p = {:.2e}, q = {:.2e}",
            f.prompt,
            f.slice,
            f.mean,
            f.n,
            against,
            f.reference_mean,
            f.reference_n,
            f.p,
            f.q
        );
    }
    Ok(())
}
