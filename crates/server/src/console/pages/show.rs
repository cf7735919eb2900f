//! What several pages show: a prompt as the model sees it, its file, evidence and events.

use std::collections::HashMap;

use maud::{Markup, html};
use metaprompt_eval::prompt::PromptFile;
use metaprompt_registry::model::{Event, Evidence};

use crate::console::charts::{self};

use super::*;

/// The variable that names the expected output: a key every demonstration has that no template
/// reads.
fn output_var(file: &PromptFile) -> Option<String> {
    let vars = file.variables();
    file.demo_entries()
        .first()?
        .keys()
        .find(|k| !vars.contains(k))
        .cloned()
}

/// The prompt as the model sees it: every demonstration written out, the example's own
/// variables left as `{{ name }}`.
pub fn as_seen(file: &PromptFile) -> Markup {
    use metaprompt_llm::{Prompt, PromptFormat};
    let vars = file
        .variables()
        .into_iter()
        .map(|v| {
            (
                v.clone(),
                serde_json::Value::String(format!("{{{{ {v} }}}}")),
            )
        })
        .collect();
    let output = output_var(file);
    let mut forms = Vec::new();
    if file.template.is_some() {
        forms.push(("text form", PromptFormat::Text));
    }
    if !file.messages.is_empty() {
        forms.push(("chat form", PromptFormat::Chat));
    }
    html! {
        @for (name, format) in forms {
            @match file.longest().render(&vars, format, output.as_deref()) {
                Ok(Prompt::Text(t)) => { h4 { (name) } pre.prompt { (t) } }
                Ok(Prompt::Chat(messages)) => {
                    h4 { (name) }
                    ol.chat { @for m in &messages { li { span.role { (format!("{:?}", m.role).to_lowercase()) } pre.prompt { (m.content) } } } }
                }
                Err(e) => { p.error { (name) ": cannot render: " (e.to_string()) } }
            }
        }
    }
}

/// A prompt file, field by field.
pub fn prompt_file(file: &PromptFile) -> Markup {
    html! {
        dl.file {
            @if let Some(d) = &file.description { dt { "description" } dd { (d) } }
            @if let Some(t) = &file.target_model { dt { "target model" } dd { code { (t) } } }
            dt { "runs with" }
            dd.run-settings {
                @match &file.run {
                    Some(r) => {
                        "temperature " (r.temperature) " · max_tokens " (r.max_tokens)
                        @if !r.stop.is_empty() { " · stop " code { (format!("{:?}", r.stop)) } }
                        @if let Some(l) = &r.labels {
                            " · a choice among " (l.join(", "))
                            (if r.generate { ", generated and read" } else { ", scored where the model can" })
                        }
                        @if let Some(a) = &r.answer {
                            " · the answer read as "
                            (match a {
                                metaprompt_eval::settings::Reading::Number {} => "its final number",
                                metaprompt_eval::settings::Reading::Normalized {} => "normalized text",
                                metaprompt_eval::settings::Reading::Json { schema: Some(_), .. } => "JSON checked against a schema",
                                metaprompt_eval::settings::Reading::Json { .. } => "JSON",
                            })
                            @if let metaprompt_eval::settings::Reading::Json { field: Some(f), .. } = a { " (field " code { (f) } ")" }
                        }
                        " (what its evaluation used)"
                    }
                    None => { "the server's defaults (no [run]: its evaluation's settings were not recorded with it)" }
                }
            }
            @if let Some(i) = &file.instruction { dt { "instruction" } dd { pre.prompt { (i) } } }
            @if let Some(t) = &file.template { dt { "template" } dd { pre.prompt { (t) } } }
            @if let Some(t) = &file.demo_template { dt { "demo template" } dd { pre.prompt { (t) } } }
            @for (k, m) in file.messages.iter().enumerate() {
                dt { "message " (k + 1) " (" (format!("{:?}", m.role).to_lowercase()) ")" } dd { pre.prompt { (m.content) } }
            }
            @if !file.constraints.is_empty() {
                dt { "protected constraints" }
                dd { ul { @for c in &file.constraints { li { q { (c) } } } } }
            }
            @if let Some(r) = &file.rationale { dt { "rationale" } dd { p { (r) } } }
            @if let Some(s) = &file.selector {
                dt { "demonstrations" }
                dd { "the " (s.k) " nearest of " (file.pool.len()) " pool entries per input, by "
                    (if s.embed == metaprompt_eval::select::Embedding::Words { "words" } else { "the model's embeddings" })
                    " (the preview shows the longest " (s.k) ")" }
            }
        }
        @let entries = file.demo_entries();
        @if !entries.is_empty() {
            details.demos {
                summary { (entries.len()) (if file.selector.is_some() { " pool entries" } else { " demonstrations" }) }
                div.scroll { table {
                    @let keys: Vec<&String> = entries[0].keys().collect();
                    thead { tr { @for k in &keys { th scope="col" { (k) } } } }
                    tbody { @for d in entries { tr { @for k in &keys {
                        td { (d.get(*k).map(metaprompt_eval::dataset::as_text).unwrap_or_default()) }
                    } } } }
                } }
            }
        }
    }
}

/// Evidence rows once each: the same measurement recorded again (a run stored twice, a version
/// found already there) is one row, the first recorded.
fn distinct(ev: &[Evidence]) -> Vec<&Evidence> {
    let mut seen = std::collections::HashSet::new();
    ev.iter()
        .filter(|e| {
            seen.insert((
                e.task.clone(),
                e.split.clone(),
                e.model.clone(),
                e.metric.clone(),
                e.n,
                e.mean.to_bits(),
                e.low.to_bits(),
                e.high.to_bits(),
                e.baseline.clone(),
                e.diff.map(f64::to_bits),
            ))
        })
        .collect()
}

/// Evidence rows with their intervals (`seqs`: hash → version number, for baselines).
pub fn evidence_table(ev: &[Evidence], seqs: &HashMap<String, u32>) -> Markup {
    if ev.is_empty() {
        return html! { p.note { "No evidence recorded." } };
    }
    let ev = distinct(ev);
    html! {
        div.scroll { table.evidence {
            thead { tr {
                th scope="col" { "split / slice" } th scope="col" { "task · model · metric" } th scope="col" { "n" }
                th scope="col" { "score [95% CI]" } th scope="col" { "" }
                th scope="col" { "vs baseline" } th scope="col" { "cost / execution" }
            } }
            tbody { @for e in &ev { tr {
                td { (e.split) } td { (e.task) " · " code { (e.model) } " · " (e.metric) } td.num { (e.n) }
                td.num { (format!("{:.3}", e.mean)) " [" (format!("{:.3}", e.low)) ", " (format!("{:.3}", e.high)) "]" }
                td { (charts::interval(e.mean, e.low, e.high, (0.0, 1.0))) }
                td {
                    @if let (Some(d), Some(lo), Some(hi)) = (e.diff, e.diff_low, e.diff_high) {
                        @if let Some(b) = &e.baseline { "v" (seqs.get(b).map_or("?".into(), u32::to_string)) ": " }
                        (format!("{d:+.3}")) " [" (format!("{lo:+.3}")) ", " (format!("{hi:+.3}")) "]"
                        @if let Some(p) = e.p_value { " p = " (format!("{p:.4}")) }
                        (charts::interval(d, lo, hi, (-1.0, 1.0)))
                    } @else { span.note { "—" } }
                }
                td.num { (charts::cost(e.cost_per_execution_usd, None)) }
            } } }
        } }
    }
}

pub(super) fn events_table(events: &[Event], seqs: &HashMap<String, u32>) -> Markup {
    let v = |h: &Option<String>| {
        h.as_ref().map(|h| {
            seqs.get(h).map_or_else(
                || metaprompt_registry::model::short(h).to_string(),
                |s| format!("v{s}"),
            )
        })
    };
    html! {
        @if events.is_empty() { p.note { "No events." } } @else {
            div.scroll { table.events {
                thead { tr { th scope="col" { "when" } th scope="col" { "who" } th scope="col" { "what" } th scope="col" { "version" } th scope="col" { "comment" } } }
                tbody { @for e in events.iter().rev() { tr.event data-kind=(e.kind.as_str()) {
                    td { (when(&e.at)) } td { (e.actor) }
                    td { (e.kind.as_str()) @if let Some(l) = &e.label { " " code { (l) } } @if let Some(d) = &e.decision { " " strong { (d) } } }
                    td { @if let Some(f) = v(&e.from_hash) { (f) " → " } (v(&e.hash).unwrap_or_default()) }
                    td { (e.comment.clone().unwrap_or_default()) }
                } } }
            } }
        }
    }
}
