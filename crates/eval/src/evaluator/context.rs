//! Whether a prompt fits a model's context: the token estimate of a rendered prompt, the tokens
//! a prompt spends on itself, and the check run before any call.

use std::collections::BTreeMap;

use metaprompt_llm::{Prompt, PromptFormat};
use serde_json::Value;

use crate::dataset::Example;
use crate::prompt::PromptFile;

use super::*;

/// Bytes per token of the length estimate: the usual rule of thumb for English text and code
/// (tokenizers average 3.5 to 4.5); the embedded model still checks exactly.
pub const BYTES_PER_TOKEN: usize = 4;

/// A prompt, rendered for an example, that does not fit the model's context window.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{example}: prompt `{prompt}` rendered for this example is about {estimated} tokens ({bytes} bytes at {BYTES_PER_TOKEN} a token), more than the {allowed} that fit {model} ({window} tokens of context, {output} kept for the output){more}; shorten the example, or raise the model's context ({hint})",
    more = if *others > 0 { format!("; {others} more examples are too long") } else { String::new() },
)]
pub struct TooLong {
    /// `file:line` of the example.
    pub example: String,
    pub prompt: String,
    pub model: String,
    pub bytes: usize,
    pub estimated: u64,
    pub allowed: u64,
    pub window: u32,
    pub output: u32,
    /// Further examples that are too long as well.
    pub others: usize,
    /// Where the window comes from.
    pub hint: String,
}

/// The tokens a prompt spends on itself, estimated as [`check_context`] estimates them: the
/// prompt (its longest form) rendered in `format` with every input empty, so the instruction,
/// the demonstrations and the template's own words count, and no example does. `None` when it
/// does not render that way.
pub fn own_tokens(prompt: &PromptFile, format: PromptFormat, output: &str) -> Option<u64> {
    let prompt = prompt.longest();
    let vars: BTreeMap<String, Value> = prompt
        .variables()
        .into_iter()
        .filter(|v| v != output)
        .map(|v| (v, Value::String(String::new())))
        .collect();
    let rendered = prompt.render(&vars, format, Some(output)).ok()?;
    Some(estimate_tokens(&rendered).1)
}

/// The estimated tokens of a rendered prompt: its bytes at [`BYTES_PER_TOKEN`], plus a few per
/// chat message for the roles and separators.
pub fn estimate_tokens(prompt: &Prompt) -> (usize, u64) {
    match prompt {
        Prompt::Text(t) => (t.len(), t.len().div_ceil(BYTES_PER_TOKEN) as u64),
        Prompt::Chat(messages) => {
            let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
            (
                bytes,
                bytes.div_ceil(BYTES_PER_TOKEN) as u64 + 4 * messages.len() as u64,
            )
        }
    }
}

/// Check, before any call, that `prompt` rendered for each of `examples` fits `model`'s context
/// window with room for `options.max_tokens` of output. Nothing is checked when the window is
/// unknown; an example that does not render is left to the evaluation to report.
pub fn check_context(
    prompt: &PromptFile,
    model: &metaprompt_llm::ModelInfo,
    examples: &[Example],
    options: &EvalOptions,
) -> Result<(), Box<TooLong>> {
    let Some(window) = model.context_tokens else {
        return Ok(());
    };
    let allowed = u64::from(window.saturating_sub(options.max_tokens));
    let mut first: Option<Box<TooLong>> = None;
    // A selector's prompt is checked with its longest demonstrations.
    let prompt = prompt.longest();
    for e in examples {
        let mut vars = e.vars.clone();
        vars.remove(&options.output);
        let Ok(rendered) = prompt.render(&vars, model.format, Some(&options.output)) else {
            continue;
        };
        let (bytes, estimated) = estimate_tokens(&rendered);
        if estimated <= allowed {
            continue;
        }
        match &mut first {
            Some(f) => f.others += 1,
            None => {
                first = Some(Box::new(TooLong {
                    example: e.id.clone(),
                    prompt: prompt.name.clone(),
                    model: model.name.clone(),
                    bytes,
                    estimated,
                    allowed,
                    window,
                    output: options.max_tokens,
                    others: 0,
                    hint: if model.kind == metaprompt_llm::ProviderKind::Local {
                        "[local] context_size in metaprompt.toml".into()
                    } else {
                        format!(
                            "context_tokens of [models.\"{}\"] in metaprompt.toml",
                            model.name
                        )
                    },
                }));
            }
        }
    }
    first.map_or(Ok(()), Err)
}
