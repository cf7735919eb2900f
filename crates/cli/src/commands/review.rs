//! `metaprompt review list|show|approve|reject`: a person's decision on machine-made versions.

use metaprompt_registry::model::short;
use metaprompt_registry::policy::PRODUCTION;
use metaprompt_registry::{Decision, ReviewState, Store, Version, content};

use crate::args::{Global, ReviewCommand};
use crate::commands::library::{self, describe};
use crate::commands::prompts;
use crate::format::{self, outln};

pub async fn run(global: &Global, cmd: ReviewCommand) -> anyhow::Result<()> {
    let store = library::open(global).await?;
    let result = dispatch(global, store.as_ref(), cmd).await;
    store.close().await;
    result
}

async fn dispatch(global: &Global, store: &dyn Store, cmd: ReviewCommand) -> anyhow::Result<()> {
    match cmd {
        ReviewCommand::List { json } => {
            let pending = store.proposed().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&pending)?);
            } else if pending.is_empty() {
                outln!("nothing waiting for review");
            } else {
                for v in &pending {
                    let evidence = store.evidence(v).await?;
                    let best = evidence
                        .iter()
                        .rev()
                        .find(|e| e.diff.is_some())
                        .map(|e| {
                            format!(
                                "{} {:.3} ({:+.3} vs its baseline)",
                                e.split,
                                e.mean,
                                e.diff.unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| "no evidence".into());
                    outln!(
                        "{:<20} {}  {:<9} {}  {}",
                        v.reference(),
                        short(&v.hash),
                        v.origin,
                        v.created_at.format("%Y-%m-%d %H:%M"),
                        best
                    );
                }
                outln!("next       metaprompt review show NAME@vN");
            }
            Ok(())
        }
        ReviewCommand::Show { reference, json } => show(store, &reference, json).await,
        ReviewCommand::Approve { reference, comment } => {
            decide(global, store, &reference, Decision::Approve, comment).await
        }
        ReviewCommand::Reject { reference, comment } => {
            if comment.trim().is_empty() {
                anyhow::bail!("a rejection needs a reason: --comment \"…\"");
            }
            decide(global, store, &reference, Decision::Reject, Some(comment)).await
        }
    }
}

/// The version a reviewed one would replace: what `production` points at now, else its parent.
async fn replaces(store: &dyn Store, v: &Version) -> anyhow::Result<Option<Version>> {
    let labels = store.labels(&v.prompt).await?;
    let hash = labels
        .iter()
        .find(|l| l.label == PRODUCTION && l.hash != v.hash)
        .map(|l| l.hash.clone())
        .or_else(|| v.parents.first().cloned());
    Ok(match hash {
        Some(h) => Some(library::resolve(store, &format!("{}@{h}", v.prompt)).await?),
        None => None,
    })
}

async fn show(store: &dyn Store, reference: &str, json: bool) -> anyhow::Result<()> {
    let v = library::resolve(store, reference).await?;
    let old = replaces(store, &v).await?;
    let run = match &v.run {
        Some(id) => store.run(id).await.ok(),
        None => None,
    };
    let diff = old
        .as_ref()
        .map(|o| content::diff(&describe(o), &o.content, &describe(&v), &v.content));
    if json {
        let evidence = store.evidence(&v).await?;
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": v,
                "replaces": old,
                "diff": diff,
                "evidence": evidence,
                "run": run.as_ref().map(|r| serde_json::json!({
                    "id": r.id, "kind": r.kind, "algorithm": r.algorithm, "usage": r.usage,
                    "summary": r.summary, "dir": r.dir,
                })),
            }))?
        );
        return Ok(());
    }
    prompts::print_header(store, &v).await?;
    match &v.checks {
        Some(c) => outln!("checks     {}", c),
        None if v.constraints.is_empty() => outln!("checks     no protected constraints"),
        None => outln!("checks     none recorded"),
    }
    if let Some(r) = &run {
        let layer = |name: &str| {
            let u = &r.usage[name];
            format!(
                "{name} {} calls, {} in / {} out tokens, {}",
                u["calls"].as_u64().unwrap_or(0),
                u["input_tokens"].as_u64().unwrap_or(0),
                u["output_tokens"].as_u64().unwrap_or(0),
                format::cost(u["cost_usd"].as_f64())
            )
        };
        outln!("cost       {} · {}", layer("meta"), layer("execution"));
        if let Some(d) = &r.dir {
            outln!("run        {} ({})", r.id, d);
        }
    }
    outln!("");
    match (&old, &diff) {
        (Some(o), Some(d)) if d.is_empty() => {
            outln!("same prompt as {}, which it would replace", describe(o))
        }
        (Some(o), Some(d)) => {
            outln!("diff against {}, which it would replace:", describe(o));
            outln!("{}", d.trim_end());
        }
        _ => {
            outln!("nothing to replace (first version); the prompt:");
            outln!("{}", v.content.trim_end());
        }
    }
    outln!("");
    if v.review == ReviewState::Proposed {
        outln!(
            "next       metaprompt review approve {r} --comment \"…\"  |  metaprompt review reject {r} --comment \"…\"",
            r = v.reference()
        );
    }
    Ok(())
}

async fn decide(
    global: &Global,
    store: &dyn Store,
    reference: &str,
    decision: Decision,
    comment: Option<String>,
) -> anyhow::Result<()> {
    let v = library::resolve(store, reference).await?;
    let author = library::author(global);
    if decision == Decision::Approve && store.evidence(&v).await?.is_empty() {
        eprintln!(
            "warning: {} has no evidence: nothing was scored. Approving it ships an unmeasured prompt (score it first: metaprompt eval TASK --prompt FILE)",
            v.reference()
        );
    }
    let done = store
        .review(&v, decision, &author, comment.as_deref())
        .await?;
    outln!("{}: {} by {author}", describe(&done), done.review);
    if decision == Decision::Approve {
        outln!(
            "next       metaprompt prompts label {} production",
            done.reference()
        );
    }
    Ok(())
}
