//! `metaprompt agent`: the prompt-engineer agent over the library's live log (see
//! `metaprompt_agent`). `--once` is one pass, `--watch` a pass every `--interval`,
//! `--report-only` the monitor alone (nothing written, nothing spent), `agent status` the
//! slices and the agent's cases without acting.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use metaprompt_agent::config::AgentConfig;
use metaprompt_agent::monitor::{Against, Finding, Policy, Shortfall, Slice, SliceReport};
use metaprompt_agent::{Agent, Case, Settings};
use metaprompt_registry::service::ServiceStore;
use serde_json::json;

use crate::args::{AgentArgs, AgentCommand, Global};
use crate::commands::library;
use crate::context;
use crate::format::outln;

pub async fn run(global: &Global, args: AgentArgs) -> anyhow::Result<()> {
    let config = context::load_config(global)?;
    let mut table = AgentConfig::read(&config)?;
    if let Some(fdr) = args.fdr {
        if !(fdr > 0.0 && fdr < 1.0) {
            anyhow::bail!("--fdr {fdr}: expected a rate between 0 and 1, such as 0.05");
        }
        table.fdr = Some(fdr);
    }
    if let Some(w) = args.window {
        if w.as_secs() == 0 {
            anyhow::bail!("--window {w:?}: expected a duration of a second or more, such as 1h");
        }
        table.window_secs = Some(w.as_secs());
    }
    if let Some(n) = args.min_n {
        table.min_n = Some(n);
    }
    let settings = Settings::from_config(&table)?;
    let path = library::path(global)?;
    let service = metaprompt_registry::open_service(&path).await?;
    let result = match &args.command {
        Some(AgentCommand::Status { prompt, json }) => {
            status(&service, &settings, prompt.as_deref(), *json).await
        }
        None if args.report_only => {
            monitor_only(&service, &settings, args.prompt.as_deref(), args.json).await
        }
        None if args.once || args.watch => {
            let engine = context::engine_with(global, config).await?;
            let store = library::open(global).await?;
            let dir = path
                .parent()
                .map_or_else(|| "agent".into(), |p| p.join("agent"));
            // What each pass is doing, as it does it, on stderr (stdout keeps the report).
            let agent = Agent::new(
                engine.clone(),
                store.clone(),
                service.clone(),
                dir,
                settings,
            )
            .with_progress(metaprompt_agent::Progress::to(|s| eprintln!("agent {s}")));
            let r = watch(&agent, &args).await;
            store.close().await;
            engine.close().await;
            r
        }
        None => Err(anyhow::anyhow!(
            "say what to do: --once (one pass), --watch (a pass every --interval), \
             --report-only (the monitor alone), or `metaprompt agent status`"
        )),
    };
    service.close().await;
    result
}

async fn watch(agent: &Agent, args: &AgentArgs) -> anyhow::Result<()> {
    // Ctrl-C stops the pass at its next safe point: a search in flight keeps its checkpoint,
    // and its case records the spend and the run, which the next pass resumes.
    let stop = agent.canceller();
    let on_ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping: the pass ends at its next safe point");
                stop.cancel();
            }
        })
    };
    let r = passes(agent, args).await;
    on_ctrl_c.abort();
    r
}

async fn passes(agent: &Agent, args: &AgentArgs) -> anyhow::Result<()> {
    let stop = agent.canceller();
    loop {
        let pass = agent.pass(Utc::now()).await?;
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&pass)?);
        } else {
            outln!(
                "pass at {} · {} inferences, {} scored · {} of {} calls spent today",
                pass.at.format("%Y-%m-%d %H:%M:%S UTC"),
                pass.inferences,
                pass.scored,
                pass.calls_today,
                pass.max_calls_per_day
            );
            print_slices(&pass.slices, &pass.findings, args.prompt.as_deref());
            print_untested(&pass.untested, args.prompt.as_deref());
            for a in pass
                .actions
                .iter()
                .filter(|a| args.prompt.as_ref().is_none_or(|p| *p == a.prompt))
            {
                outln!("CASE {} ({} {}): {}", a.case, a.prompt, a.slice, a.what);
            }
        }
        if args.once || stop.is_cancelled() {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

async fn monitor_only(
    service: &Arc<dyn ServiceStore>,
    settings: &Settings,
    prompt: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let s = metaprompt_agent::status(service.as_ref(), settings, prompt, Utc::now()).await?;
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "policy": policy_json(&settings.policy),
                "inferences": s.inferences, "scored": s.scored,
                "slices": s.slices, "findings": s.findings, "untested": s.untested,
            }))?
        );
        return Ok(());
    }
    let window = std::time::Duration::from_secs(s.window_secs.max(0) as u64 * 2);
    outln!(
        "{} inferences in the last {}, {} scored; findings at a false-discovery rate of {}",
        s.inferences,
        humantime::format_duration(window),
        s.scored,
        s.fdr
    );
    print_slices(&s.reports, &s.findings, prompt);
    print_untested(&s.untested, prompt);
    Ok(())
}

async fn status(
    service: &Arc<dyn ServiceStore>,
    settings: &Settings,
    prompt: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let s = metaprompt_agent::status(service.as_ref(), settings, prompt, Utc::now())
        .await
        .context("reading the agent's state")?;
    if as_json {
        outln!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print_slices(&s.reports, &s.findings, prompt);
    print_untested(&s.untested, prompt);
    if !s.slices.is_empty() {
        outln!(
            "\n  {:<20} {:<32} {:>6} {:>7} {:>11} {:>11}",
            "prompt",
            "slice",
            "calls",
            "errors",
            "latency ms",
            "$ per call"
        );
    }
    for sl in &s.slices {
        let name = match &sl.slice {
            Slice::All => "(all)".to_string(),
            x => x.to_string(),
        };
        outln!(
            "  {:<20} {:<32} {:>6} {:>6.1}% {:>11.1} {:>11}",
            sl.prompt,
            name,
            sl.calls,
            100.0 * sl.error_rate,
            sl.mean_latency_ms,
            sl.cost_per_call_usd
                .map_or_else(|| "unpriced".to_string(), |c| format!("{c:.6}"))
        );
    }
    let cases: &[Case] = &s.cases;
    if cases.is_empty() {
        outln!("\nno agent cases yet");
    }
    for c in cases {
        outln!(
            "\n{} · {} {} · {} · since {}",
            c.id,
            c.prompt,
            c.slice,
            c.state.as_str(),
            c.opened_at.format("%Y-%m-%d %H:%M")
        );
        if let Some(w) = &c.waiting {
            outln!("  {w}");
        }
        if let Some(r) = &c.search {
            match r.stopped_at {
                Some(at) => outln!(
                    "  search: {} ({}), stopped {}; the next pass resumes it",
                    r.run_dir,
                    r.algorithm,
                    at.format("%Y-%m-%d %H:%M")
                ),
                None => outln!(
                    "  search: {} ({}), since {}",
                    r.run_dir,
                    r.algorithm,
                    r.started_at.format("%Y-%m-%d %H:%M")
                ),
            }
        }
        if let Some(d) = &c.diagnosis {
            outln!("  diagnosis: {}", d.summary);
            outln!("  hypothesis ({}): {}", d.model, d.hypothesis);
        }
        if let Some(p) = &c.proposal {
            outln!(
                "  proposal: {}@v{} ({})",
                c.prompt,
                p.version.seq,
                p.algorithm
            );
            for s in &p.checks {
                outln!(
                    "    {:<28} {:.3} → {:.3}  {:+.3} [{:+.3}, {:+.3}]  p = {:.3}  n {}",
                    s.slice,
                    s.before,
                    s.after,
                    s.diff,
                    s.low,
                    s.high,
                    s.p,
                    s.n
                );
            }
        }
        if let Some(k) = &c.canary
            && let Some(s) = &k.last
        {
            outln!(
                "  canary on {} ({}%): {:+.3} [{:+.3}, {:+.3}] after {} / {} outcomes",
                k.label,
                k.weight,
                s.diff,
                s.low,
                s.high,
                k.canary_n,
                k.incumbent_n
            );
        }
        if let Some(e) = c.log.last() {
            outln!("  last: {}", e.what);
        }
    }
    Ok(())
}

fn policy_json(p: &Policy) -> serde_json::Value {
    json!({"window_secs": p.window.num_seconds(), "min_n": p.min_n, "fdr": p.fdr,
           "min_drop": p.min_drop})
}

/// The slices no test could look at, each with its counts and what it needs.
fn print_untested(untested: &[Shortfall], only: Option<&str>) {
    let short: Vec<&Shortfall> = untested
        .iter()
        .filter(|s| only.is_none_or(|p| p == s.prompt))
        .collect();
    if short.is_empty() {
        return;
    }
    outln!("not tested, too few scored outcomes:");
    for s in short {
        outln!("  {} {}", s.prompt, s.why);
    }
}

fn print_slices(reports: &[SliceReport], findings: &[Finding], only: Option<&str>) {
    let reports: Vec<&SliceReport> = reports
        .iter()
        .filter(|r| only.is_none_or(|p| p == r.prompt))
        .collect();
    if reports.is_empty() {
        outln!("nothing scored to watch: send feedback (POST /v1/feedback) or run with `expected`");
        return;
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
                "  {:<32} {:>6} {:>7} {:>15}  {:>8} {:>7}  {:>7}",
                "slice",
                "n now",
                "mean",
                "95% interval",
                "n before",
                "mean",
                "rest"
            );
        }
        let name = match &r.slice {
            Slice::All => "(all)".to_string(),
            s => s.to_string(),
        };
        let (low, high) = r.current.interval();
        outln!(
            "  {:<32} {:>6} {:>7} {:>15}  {:>8} {:>7}  {:>7}",
            name,
            r.current.n,
            mean(&r.current),
            format!("[{low:.2}, {high:.2}]"),
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
    let findings: Vec<&Finding> = findings
        .iter()
        .filter(|f| only.is_none_or(|p| p == f.prompt))
        .collect();
    if findings.is_empty() {
        outln!("no slice is significantly worse than its baseline or the rest of its traffic");
    }
    for f in findings {
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
}
