//! `metaprompt prompts add|list|show|diff|label|rollback|export|import|log|policy`.
//!
//! A version whose templates go over the `[templates]` render limits with its own
//! demonstrations is refused by the library when it is added or imported.

use std::collections::HashMap;

use anyhow::Context;
use metaprompt_registry::content::{self, Export};
use metaprompt_registry::model::short;
use metaprompt_registry::{
    EventKind, Evidence, Label, LabelMove, NewVersion, Origin, SplitChange, Store, Version, policy,
};

use crate::args::{Global, PromptsCommand};
use crate::commands::library::{self, describe};
use crate::format::{self, outln};

pub async fn run(global: &Global, cmd: PromptsCommand) -> anyhow::Result<()> {
    // Versions added here are checked against the config's `[templates]` limits.
    let config = crate::context::load_config(global)?;
    metaprompt_eval::prompt::set_limits(metaprompt_eval::prompt::TemplateLimits::from_config(
        &config.templates,
    ));
    let store = library::open(global).await?;
    let result = dispatch(global, store.as_ref(), cmd).await;
    store.close().await;
    result
}

async fn dispatch(global: &Global, store: &dyn Store, cmd: PromptsCommand) -> anyhow::Result<()> {
    let author = library::author(global);
    match cmd {
        PromptsCommand::Add {
            name,
            file,
            message,
            parent,
            review_required,
            task,
            json,
        } => {
            let mut prompt = content::import(&file, &name)?;
            if let Some(task) = task {
                let task = metaprompt_eval::Task::load(&task)?;
                if prompt.run.is_none() {
                    prompt.run = Some(metaprompt_eval::settings::RunSettings::of_task(&task));
                }
                if prompt.target_model.is_none() {
                    prompt.target_model = Some(task.config.models.execution.clone());
                }
            }
            add(
                store,
                &name,
                prompt,
                Origin::Human,
                &author,
                message,
                parent,
                review_required,
                json,
            )
            .await
        }
        PromptsCommand::Import {
            file,
            name,
            message,
            review_required,
            json,
        } => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let prompt = content::import(&file, name.as_deref().unwrap_or(&stem))?;
            let name = name.unwrap_or_else(|| prompt.name.clone());
            let message = message.or_else(|| Some(format!("imported from {}", file.display())));
            add(
                store,
                &name,
                prompt,
                Origin::Import,
                &author,
                message,
                None,
                review_required,
                json,
            )
            .await
        }
        PromptsCommand::List { json } => list(store, json).await,
        PromptsCommand::Show { reference, json } => show(store, &reference, json).await,
        PromptsCommand::Diff { a, b } => {
            let a = library::resolve(store, &a).await?;
            let (old, new) = match b {
                Some(b) => (a, library::resolve(store, &b).await?),
                None => {
                    let Some(parent) = a.parents.first() else {
                        anyhow::bail!(
                            "{} has no parent version; give two versions: metaprompt prompts diff A B",
                            a.reference()
                        );
                    };
                    (by_hash(store, &a.prompt, parent).await?, a)
                }
            };
            let d = content::diff(&describe(&old), &old.content, &describe(&new), &new.content);
            if d.is_empty() {
                outln!(
                    "{} and {} are the same prompt",
                    describe(&old),
                    describe(&new)
                );
            } else {
                outln!("{}", d.trim_end());
            }
            Ok(())
        }
        PromptsCommand::Label {
            reference,
            label,
            comment,
            weight,
            force,
        } => {
            let v = library::resolve(store, &reference).await?;
            if let Some(w) = weight.filter(|w| *w < 100.0) {
                if !(0.0..100.0).contains(&w) {
                    anyhow::bail!("--weight {w}: expected a percent from 0 to 100");
                }
                let split = store
                    .set_split(&SplitChange {
                        prompt: v.prompt.clone(),
                        label: label.clone(),
                        to: (w > 0.0).then(|| v.hash.clone()),
                        weight: w,
                        actor: author,
                        comment,
                    })
                    .await?;
                match split {
                    Some(s) => outln!(
                        "{label}: {}@v{} serves {}% as a canary (sticky per caller key); the rest stays on its version",
                        s.prompt,
                        s.seq,
                        s.weight
                    ),
                    None => outln!("{label}: split ended; it serves only its version"),
                }
                return Ok(());
            }
            let moved = store
                .move_label_with(
                    &LabelMove {
                        prompt: v.prompt.clone(),
                        label,
                        to: Some(v.hash.clone()),
                        actor: author,
                        comment,
                    },
                    force,
                )
                .await?;
            print_move(&moved);
            if let Some(flag) = policy::label_flag(&moved.to) {
                eprintln!(
                    "warning: `{}` now points at {}, which was {flag} in review (--force); it is flagged as {flag} wherever it shows",
                    moved.label,
                    moved.to.reference()
                );
            }
            let unreviewed = moved.to.origin.is_machine()
                && moved.to.review == metaprompt_registry::ReviewState::Proposed;
            if moved.label == metaprompt_registry::policy::PRODUCTION && unreviewed {
                eprintln!(
                    "note: {} was written by {} and has not been reviewed (allowed: the prompt has no protected constraints and is not review-required)",
                    moved.to.reference(),
                    moved.to.origin
                );
            }
            Ok(())
        }
        PromptsCommand::Rollback {
            name,
            label,
            comment,
        } => {
            let moved = store
                .move_label(&LabelMove {
                    prompt: name,
                    label,
                    to: None,
                    actor: author,
                    comment,
                })
                .await?;
            print_move(&moved);
            Ok(())
        }
        PromptsCommand::Export {
            reference,
            out,
            format,
        } => {
            let v = library::resolve(store, &reference).await?;
            let form = match (format.as_deref(), &out) {
                (Some("text"), _) => Export::Text,
                (Some("json"), _) => Export::Json,
                (Some(_), _) | (None, None) => Export::Toml,
                (None, Some(p)) => Export::for_path(p),
            };
            let file = v.file()?;
            // The form the version's model takes prompts in: a JSON export for a model that
            // continues text is a completions request (an unknown model: a chat request).
            let format = file
                .target_model
                .as_deref()
                .and_then(|m| {
                    metaprompt_llm::Hub::new(crate::context::load_config(global).ok()?)
                        .resolve(m)
                        .ok()
                })
                .map_or(metaprompt_llm::PromptFormat::Chat, |i| i.format);
            if form == Export::Text
                && format == metaprompt_llm::PromptFormat::Chat
                && !file.messages.is_empty()
            {
                eprintln!(
                    "note: a text export joins this chat version's messages into one text; \
                     imported back it runs as one user message. Export JSON to keep the roles."
                );
            }
            let text = content::export(&v.prompt, &file, form, format)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, &text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("exported {} to {}", describe(&v), path.display());
                }
                None => outln!("{}", text.trim_end()),
            }
            Ok(())
        }
        PromptsCommand::Log { name, json } => log(store, &name, json).await,
        PromptsCommand::Policy {
            name,
            review_required,
        } => {
            store
                .set_review_required(&name, review_required, &author)
                .await?;
            outln!(
                "{name}: {}",
                if review_required {
                    "review required before production moves to a machine-made version"
                } else {
                    "review required only for machine-made versions with protected constraints"
                }
            );
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn add(
    store: &dyn Store,
    name: &str,
    prompt: metaprompt_eval::PromptFile,
    origin: Origin,
    author: &str,
    message: Option<String>,
    parent: Option<String>,
    review_required: bool,
    json: bool,
) -> anyhow::Result<()> {
    let parents = match parent {
        Some(r) => vec![library::resolve(store, &r).await?.hash],
        // The newest version, when the prompt exists.
        None => match store.versions(name).await {
            Ok(vs) => vs.last().map(|v| vec![v.hash.clone()]).unwrap_or_default(),
            Err(metaprompt_registry::RegistryError::UnknownPrompt { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let mut new = NewVersion::new(name, prompt, origin, author);
    new.parents = parents;
    new.message = message;
    new.review_required = review_required;
    let added = store.add(new).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&added)?);
    } else if added.created {
        outln!("added {}", describe(&added.version));
    } else {
        outln!(
            "already in the library as {} (same prompt; nothing added)",
            describe(&added.version)
        );
    }
    Ok(())
}

async fn by_hash(store: &dyn Store, prompt: &str, hash: &str) -> anyhow::Result<Version> {
    library::resolve(store, &format!("{prompt}@{hash}")).await
}

fn print_move(m: &metaprompt_registry::Moved) {
    let from = m
        .from
        .as_ref()
        .map_or_else(|| "(new label)".to_string(), describe);
    if !m.rollback && m.from.as_ref().is_some_and(|f| f.hash == m.to.hash) {
        outln!(
            "{}: already at {} (nothing recorded)",
            m.label,
            describe(&m.to)
        );
        return;
    }
    let verb = if m.rollback { "rolled back" } else { "moved" };
    outln!(
        "{}: {verb} {from} → {}{}",
        m.label,
        describe(&m.to),
        flag_note(&m.to)
    );
}

/// ` (REJECTED: it points at a version rejected in review)` after a label that points at a
/// flagged version ([`policy::label_flag`]), else nothing.
pub fn flag_note(v: &Version) -> String {
    match policy::label_flag(v) {
        Some(flag) => format!(
            " ({}: it points at a version {flag} in review)",
            flag.to_uppercase()
        ),
        None => String::new(),
    }
}

/// The flags of a prompt's labels (label → flag), for labels that point at a flagged version.
pub async fn label_flags(
    store: &dyn Store,
    prompt: &str,
) -> anyhow::Result<HashMap<String, &'static str>> {
    let labels = store.labels(prompt).await?;
    if labels.is_empty() {
        return Ok(HashMap::new());
    }
    let versions = store.versions(prompt).await?;
    Ok(labels
        .into_iter()
        .filter_map(|l| {
            let v = versions.iter().find(|v| v.hash == l.hash)?;
            Some((l.label, policy::label_flag(v)?))
        })
        .collect())
}

/// A label as JSON, with its `flag` (`"rejected"`, or null).
pub fn label_json(l: &Label, flag: Option<&str>) -> serde_json::Value {
    let mut j = serde_json::to_value(l).unwrap_or_default();
    j["flag"] = serde_json::json!(flag);
    j
}

async fn list(store: &dyn Store, json: bool) -> anyhow::Result<()> {
    let prompts = store.prompts().await?;
    let mut flags = HashMap::new();
    for p in prompts.iter().filter(|p| !p.labels.is_empty()) {
        flags.insert(p.name.clone(), label_flags(store, &p.name).await?);
    }
    let flag = |p: &str, l: &str| flags.get(p).and_then(|f| f.get(l)).copied();
    if json {
        // Each prompt with `label_flags`: label → flag, for labels at a flagged version.
        let items: Vec<serde_json::Value> = prompts
            .iter()
            .map(|p| {
                let mut j = serde_json::to_value(p).unwrap_or_default();
                j["label_flags"] =
                    serde_json::json!(flags.get(&p.name).cloned().unwrap_or_default());
                j
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if prompts.is_empty() {
        outln!(
            "the library {} is empty; `metaprompt prompts add NAME FILE`, or run generate / optimize / translate",
            store.location()
        );
        return Ok(());
    }
    outln!(
        "{:<24} {:>8}  {:<32} {:>8}  policy",
        "prompt",
        "versions",
        "labels",
        "proposed"
    );
    for p in prompts {
        let labels: Vec<String> = p
            .labels
            .iter()
            .map(|(l, s)| match flag(&p.name, l) {
                Some(f) => format!("{l}=v{s}({})", f.to_uppercase()),
                None => format!("{l}=v{s}"),
            })
            .collect();
        outln!(
            "{:<24} {:>8}  {:<32} {:>8}  {}",
            p.name,
            p.versions,
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(" ")
            },
            p.proposed,
            if p.review_required {
                "review-required"
            } else {
                "-"
            }
        );
    }
    Ok(())
}

/// `test · local:gemma-3-270m · label · n=200 · 0.885 [0.840, 0.930] · vs v1 +0.325 [+0.26, +0.39] p=0.0005`
pub fn evidence_line(e: &Evidence, seqs: &HashMap<String, u32>) -> String {
    let mut s = format!(
        "{} · {} · {} · {} · n={} · {:.3} [{:.3}, {:.3}]",
        e.task, e.split, e.model, e.metric, e.n, e.mean, e.low, e.high
    );
    if let (Some(b), Some(d)) = (&e.baseline, e.diff) {
        let base = seqs
            .get(b)
            .map_or_else(|| short(b).to_string(), |n| format!("v{n}"));
        s.push_str(&format!(" · vs {base} {d:+.3}"));
        if let (Some(lo), Some(hi)) = (e.diff_low, e.diff_high) {
            s.push_str(&format!(" [{lo:+.3}, {hi:+.3}]"));
        }
        if let Some(p) = e.p_value {
            s.push_str(&format!(" p={p:.4}"));
        }
    }
    if e.cost_per_execution_usd.is_some() {
        s.push_str(&format!(
            " · {}/execution",
            format::cost(e.cost_per_execution_usd)
        ));
    }
    s
}

pub async fn seq_map(store: &dyn Store, prompt: &str) -> anyhow::Result<HashMap<String, u32>> {
    Ok(store
        .versions(prompt)
        .await?
        .into_iter()
        .map(|v| (v.hash, v.seq))
        .collect())
}

/// The metadata block shared by `prompts show` and `review show`.
pub async fn print_header(store: &dyn Store, v: &Version) -> anyhow::Result<()> {
    let seqs = seq_map(store, &v.prompt).await?;
    let labels: Vec<String> = store
        .labels(&v.prompt)
        .await?
        .into_iter()
        .filter(|l| l.hash == v.hash)
        .map(|l| l.label)
        .collect();
    let parents: Vec<String> = v
        .parents
        .iter()
        .map(|p| {
            seqs.get(p)
                .map_or_else(|| short(p).to_string(), |n| format!("v{n}"))
        })
        .collect();
    outln!("version    {}  {}", v.reference(), v.hash);
    outln!(
        "made       {} by {} at {}{}",
        v.origin,
        v.author,
        v.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        v.run
            .as_ref()
            .map_or(String::new(), |r| format!(" (run {r})"))
    );
    outln!("review     {}", v.review);
    if !parents.is_empty() {
        outln!("parents    {}", parents.join(", "));
    }
    if !labels.is_empty() {
        outln!("labels     {}{}", labels.join(", "), flag_note(v));
    }
    for split in store.splits(&v.prompt).await? {
        if split.hash == v.hash {
            outln!(
                "canary     {}% of `{}` (since {} by {})",
                split.weight,
                split.label,
                split.set_at.format("%Y-%m-%d %H:%M"),
                split.set_by
            );
        }
    }
    if let Some(t) = &v.target_model {
        outln!("target     {t}");
    }
    if let Some(m) = &v.message {
        outln!("message    {m}");
    }
    for c in &v.constraints {
        outln!("constraint {c}");
    }
    let evidence = store.evidence(v).await?;
    if evidence.is_empty() && v.origin.is_machine() {
        outln!("evidence   none: nothing was scored (an unmeasured prompt)");
    }
    for e in evidence {
        outln!("evidence   {}", evidence_line(&e, &seqs));
    }
    Ok(())
}

async fn show(store: &dyn Store, reference: &str, json: bool) -> anyhow::Result<()> {
    let v = library::resolve(store, reference).await?;
    if json {
        let evidence = store.evidence(&v).await?;
        // The labels that point at it, each with its flag.
        let labels: Vec<serde_json::Value> = store
            .labels(&v.prompt)
            .await?
            .iter()
            .filter(|l| l.hash == v.hash)
            .map(|l| label_json(l, policy::label_flag(&v)))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"version": v, "evidence": evidence, "labels": labels})
            )?
        );
        return Ok(());
    }
    print_header(store, &v).await?;
    outln!("");
    outln!("{}", v.content.trim_end());
    Ok(())
}

async fn log(store: &dyn Store, name: &str, json: bool) -> anyhow::Result<()> {
    let events = store.events(name).await?;
    let runs = store.runs(name).await?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"events": events, "runs": runs}))?
        );
        return Ok(());
    }
    let seqs = seq_map(store, name).await?;
    let v = |h: &Option<String>| {
        h.as_ref().map_or_else(String::new, |h| {
            seqs.get(h)
                .map_or_else(|| short(h).to_string(), |n| format!("v{n}"))
        })
    };
    for e in &events {
        let what = match e.kind {
            EventKind::Add => format!(
                "added {} ({})",
                v(&e.hash),
                e.decision.as_deref().unwrap_or("?")
            ),
            EventKind::Review => format!(
                "review {} {}",
                v(&e.hash),
                e.decision.as_deref().unwrap_or("?")
            ),
            EventKind::Label => format!(
                "label {} {} → {}",
                e.label.as_deref().unwrap_or("?"),
                if e.from_hash.is_some() {
                    v(&e.from_hash)
                } else {
                    "(new)".into()
                },
                v(&e.hash)
            ),
            EventKind::Rollback => format!(
                "rollback {} {} → {}",
                e.label.as_deref().unwrap_or("?"),
                v(&e.from_hash),
                v(&e.hash)
            ),
            EventKind::Policy => format!("policy {}", e.decision.as_deref().unwrap_or("?")),
            EventKind::Split if e.hash.is_none() => {
                format!("split {} ended", e.label.as_deref().unwrap_or("?"))
            }
            EventKind::Split => format!(
                "split {} {} → {} at {}%",
                e.label.as_deref().unwrap_or("?"),
                v(&e.from_hash),
                v(&e.hash),
                e.decision.as_deref().unwrap_or("?")
            ),
        };
        outln!(
            "{}  {:<12} {}{}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.actor,
            what,
            e.comment
                .as_ref()
                .map_or(String::new(), |c| format!("  — {c}"))
        );
    }
    for r in &runs {
        outln!(
            "{}  run {} {}{} ({}){}",
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.kind,
            r.id,
            r.algorithm
                .as_ref()
                .map_or(String::new(), |a| format!(" · {a}")),
            candidate_counts(&r.summary),
            r.dir.as_ref().map_or(String::new(), |d| format!(" · {d}"))
        );
    }
    Ok(())
}

/// A run's candidates as `optimize` and the console count them: evaluated, and rejected before
/// evaluation (older runs recorded only the total).
fn candidate_counts(summary: &serde_json::Value) -> String {
    let n = |k: &str| summary.get(k).and_then(serde_json::Value::as_u64);
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    match (n("evaluated"), n("rejected")) {
        (Some(e), Some(r)) => format!("{}, {r} rejected", plural(e, "candidate", "candidates")),
        _ => format!(
            "{} considered",
            plural(n("candidates").unwrap_or(0), "candidate", "candidates")
        ),
    }
}
